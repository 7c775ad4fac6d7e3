"""Import memory benchmark: `ikv import` of one Parquet file of N documents (the import
benchmark's shape: a 10-byte key and three 50-byte fields, 160 bytes a document), then a fresh
reader applying the import (`ikv get` on an empty mount) and the snapshot pass folding it,
for several builds of the CLI in one run. Each step runs in a child process; its peak RSS is
GNU time's maximum resident set size of it.

``python bench_import_memory.py DOCS --tree NAME=PATH/TO/ikv[,--memory-budget=1GiB] ...``

A tree's text after a comma is extra `ikv import` arguments (the previous tree has no
--memory-budget). The Parquet file is generated once under $IKV_BENCH_DIR (default
/tmp/ikv-bench-import). Prints Markdown rows for BENCHMARKS.md.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from import_data import PARTITIONS, parquet_file  # noqa: E402


def run_measured(cmd: list, env: dict) -> tuple:
    """Runs `cmd` and returns (seconds, peak RSS MB, stdout). The peak is GNU time's %M, not
    this process's `ru_maxrss` of the child: a child exec'd straight from Python inherits
    the high-water mark of the Python process's memory (a running reader's mapped image
    counts), which would be reported as the child's. Output goes to files, so that a chatty
    child never blocks on a full pipe while it is waited for."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as peak:
        started = time.monotonic()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak.name, *cmd], env=env, stdout=out, stderr=err)
        took = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err.read().decode()[-2000:]}")
        kb = int(pathlib.Path(peak.name).read_text().split()[-1])
        return took, kb / 1024, out.read().decode()


def measure(name: str, ikv: str, extra: list, source: pathlib.Path, docs: int) -> dict:
    work = pathlib.Path(tempfile.mkdtemp(prefix=f"ikv-import-mem-{name}-"))
    try:
        url = f"file://{work / 'bucket'}"
        (work / "bucket").mkdir()
        env = dict(os.environ, IKV_STORAGE_URL=url, RUST_LOG="warn")
        run_measured(
            [ikv, "create-store", "--store", "bench", "--primary-key", "id", "--partitions", str(PARTITIONS)],
            env,
        )
        took, rss, out = run_measured([ikv, "import", "--store", "bench", "--parquet", str(source), *extra], env)
        receipt = json.loads(out.strip().splitlines()[-1])
        bytes_in = docs * 160
        result = {
            "import_s": took,
            "import_rss": rss,
            "runs": receipt.get("runs", 0),
            "docs_per_s": docs / took,
            "rss_per_data": rss * 1024 * 1024 / bytes_in,
        }
        key = "k000000007"
        took, rss, out = run_measured(
            [ikv, "get", "--store", "bench", "--key", key, "--mount", str(work / "fresh")], env
        )
        assert "f1" in out, out
        result["fresh_s"], result["fresh_rss"] = took, rss
        took, rss, _ = run_measured([ikv, "snapshot", "--store", "bench", "--force"], env)
        result["pass_s"], result["pass_rss"] = took, rss
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("docs", type=int)
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH[,extra import args]")
    args = parser.parse_args()
    source = parquet_file(args.docs)
    print(f"source: {source} ({source.stat().st_size / 1e6:.0f} MB), {args.docs:,} documents", flush=True)
    results = {}
    for spec in args.tree:
        name, rest = spec.split("=", 1)
        ikv, *extra = rest.split(",")
        print(f"== {name}: {ikv} {' '.join(extra)}", flush=True)
        results[name] = measure(name, ikv, extra, source, args.docs)
        print(results[name], flush=True)
    print()
    print("| tree | import time | docs/s | peak RSS | RSS / data | run files | fresh reader applies it (time, peak RSS) | pass folding it (time, peak RSS) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['import_s']:.1f} s | {r['docs_per_s'] / 1e6:.2f} M | {r['import_rss']:,.0f} MB | "
            f"{r['rss_per_data']:.2f}× | {r['runs']} | {r['fresh_s']:.1f} s, {r['fresh_rss']:,.0f} MB | "
            f"{r['pass_s']:.1f} s, {r['pass_rss']:,.0f} MB |"
        )


if __name__ == "__main__":
    main()

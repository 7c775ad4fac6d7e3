"""Scale benchmark: one store of N documents (default 20,000,000: a 10-byte key and three 50-byte
fields, 160 bytes of keys and values a document, 3.2 GB at 20M) taken end to end on this
machine, each step's time, rate and peak memory measured, beside py-lmdb where it applies:

1. `ikv import` of one Parquet file (4 partitions) within a memory budget (1 GiB);
2. the snapshot pass folding the import;
3. a fresh reader's bootstrap from the snapshot, and its mount on disk (allocated and apparent);
   and a scan of every document's three fields into pyarrow record batches;
4. 8 reader processes on that mount: PSS they add, get p50 / p99, 100-key batches (the
   multi-process benchmark's worker), beside 8 py-lmdb processes on the same values;
5. 1% of the documents changed through the writer (`upsert_fields_batch`), a running reader
   catching up, and the pass after it (a layer), beside the full pass; a fresh reader's
   bootstrap from the stack it left; the same change again under `--max-layers 0` (every
   snapshot full: the previous design, in the same run).

``python bench_scale.py [DOCS] [--skip-lmdb]`` with a release wheel installed, py-lmdb
(``python/requirements-bench.txt``) and $IKV_BIN pointing at a release `ikv` binary. The
Parquet file is kept under $IKV_BENCH_DIR (default /tmp/ikv-bench-import); the store under
$IKV_SCALE_DIR (default a fresh temporary directory, removed at the end). Prints Markdown rows
for BENCHMARKS.md; the sizing table in docs/OPERATIONS.md takes its rates from them.
"""

import argparse
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import bench_processes  # noqa: E402
import lmdb  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from import_data import PARTITIONS, parquet_file  # noqa: E402
from bench_import_memory import run_measured  # noqa: E402

from ikvpy.document import IKVDocumentBuilder  # noqa: E402
from ikvpy.factory import create_new_reader, create_new_writer  # noqa: E402

DOC_BYTES = 160


def du(path: pathlib.Path) -> tuple:
    """(allocated, apparent) bytes of the files under `path`."""
    allocated = apparent = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            allocated += st.st_blocks * 512
            apparent += st.st_size
    return allocated, apparent


def load_lmdb(source: pathlib.Path, path: str) -> float:
    """The same values in an LMDB file, one entry per field (key NUL field), as the
    multi-process benchmark lays them out; returns seconds."""
    t = time.perf_counter()
    env = lmdb.open(path, map_size=64 << 30, writemap=True, sync=False)
    parquet = pq.ParquetFile(source)
    for batch in parquet.iter_batches(batch_size=200_000):
        ids = batch.column("id").to_pylist()
        cols = [batch.column(f).to_pylist() for f in ("f1", "f2", "f3")]
        items = []
        for i, k in enumerate(ids):
            for f, col in zip(("f1", "f2", "f3"), cols):
                items.append((f"{k}\0{f}".encode(), col[i].encode()))
        items.sort()
        with env.begin(write=True) as txn:
            txn.cursor().putmulti(items, append=True)
    env.sync(True)
    env.close()
    return time.perf_counter() - t


def change_one_percent(root: str, docs: int, as_string: bool = False) -> tuple:
    """Rewrites field f1 of every 100th document (as bytes, or as the string the import wrote
    when `as_string`); returns (documents, seconds)."""
    changed = 0
    t = time.perf_counter()
    with create_new_writer(bench_processes.options(root)) as writer:
        batch = []
        for i in range(0, docs, 100):
            b = IKVDocumentBuilder().put_string_field("id", bench_processes.key(i))
            b = b.put_string_field("f1", "changed") if as_string else b.put_bytes_field("f1", b"changed")
            batch.append(b.build())
            if len(batch) == 20_000:
                writer.upsert_fields_batch(batch)
                changed += len(batch)
                batch = []
        if batch:
            writer.upsert_fields_batch(batch)
            changed += len(batch)
    return changed, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("docs", type=int, nargs="?", default=20_000_000)
    parser.add_argument("--skip-lmdb", action="store_true")
    parser.add_argument("--processes", type=int, default=8)
    args = parser.parse_args()
    docs = args.docs
    ikv = os.environ.get("IKV_BIN", "ikv")
    data = docs * DOC_BYTES
    source = parquet_file(docs)
    root = os.environ.get("IKV_SCALE_DIR") or tempfile.mkdtemp(prefix="ikv-scale-")
    pathlib.Path(root, "bucket").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, IKV_STORAGE_URL=f"file://{root}/bucket", RUST_LOG="warn")
    rows = []

    def row(step: str, took: float, rate: str, memory: str = "") -> None:
        rows.append(f"| {step} | {took:.1f} s | {rate} | {memory} |")
        print(rows[-1], flush=True)

    try:
        run_measured([ikv, "create-store", "--store", "bench", "--primary-key", "id", "--partitions", str(PARTITIONS)], env)
        took, rss, _ = run_measured(
            [ikv, "import", "--store", "bench", "--parquet", str(source), "--memory-budget", "1GiB"], env
        )
        row("import (Parquet → committed, 1 GiB budget)", took, f"{docs / took / 1e6:.2f} M docs/s", f"peak RSS {rss:,.0f} MB")
        took, rss, _ = run_measured([ikv, "snapshot", "--store", "bench", "--force"], env)
        full_pass = took
        row("snapshot pass folding the import", took, f"{docs * 3 / took / 1e6:.2f} M values/s", f"peak RSS {rss:,.0f} MB")
        bucket_alloc, _ = du(pathlib.Path(root, "bucket"))

        t = time.perf_counter()
        reader = create_new_reader(bench_processes.options(root))
        reader.startup()
        boot = time.perf_counter() - t
        scanned = None
        if hasattr(reader, "scan"):  # the previous tree has no scans
            t = time.perf_counter()
            rows_seen = sum(b.num_rows for b in reader.scan(["f1", "f2", "f3"]))
            scanned = (time.perf_counter() - t, rows_seen)
        reader.shutdown()
        alloc, apparent = du(pathlib.Path(root, "mount"))
        row(
            "fresh reader bootstrap (snapshot → served)",
            boot,
            f"{docs * 3 / boot / 1e6:.2f} M values/s",
            f"mount {alloc / 1e9:.2f} GB allocated ({alloc / data:.2f}× keys and values), {apparent / 1e9:.2f} GB apparent",
        )
        print(f"| bucket after the pass | | | {bucket_alloc / 1e9:.2f} GB ({bucket_alloc / data:.2f}×) |", flush=True)
        if scanned:
            took, rows_seen = scanned
            assert rows_seen == docs, f"the scan yielded {rows_seen} documents of {docs}"
            row("`reader.scan` of 3 fields, every document, into pyarrow batches", took, f"{rows_seen * 3 / took / 1e6:.2f} M values/s")

        sides = ["ikv"]
        if not args.skip_lmdb:
            took = load_lmdb(source, f"{root}/lmdb")
            lmdb_alloc, _ = du(pathlib.Path(root, "lmdb"))
            row("py-lmdb load (peer, not a like-for-like write path)", took, f"{docs * 3 / took / 1e6:.2f} M values/s",
                f"file {lmdb_alloc / 1e9:.2f} GB ({lmdb_alloc / data:.2f}×)")
            sides.append("lmdb")
        n = args.processes
        for side in sides if n > 0 else []:
            reports, pss = bench_processes.run_side(side, root, docs, n)
            p50 = statistics.median(r[2] for r in reports)
            p99 = statistics.median(r[3] for r in reports)
            small = statistics.median(r[4] for r in reports) / 1e6
            name = "ikvpy, one mount" if side == "ikv" else "py-lmdb, one file"
            rows.append(
                f"| {n} reader processes, {name}: PSS added {pss / 1e9:.2f} GB ({pss / data:.2f}×), "
                f"get p50 / p99 {p50:.2f} / {p99:.2f} µs, 100 keys × 1 field {small:.2f} M values/s | | | |"
            )
            print(rows[-1], flush=True)

        running = create_new_reader(bench_processes.options(root))
        running.startup()
        changed, took = change_one_percent(root, docs)
        row(f"1% changed: {changed:,} documents through upsert_fields_batch", took, f"{changed / took / 1e3:.0f} k docs/s")
        t = time.perf_counter()
        last = bench_processes.key((changed - 1) * 100)
        while running.get_bytes_value(last, "f1") != b"changed":
            time.sleep(0.01)
        row("a running reader catching up on them (after the writes ended)", time.perf_counter() - t, "")
        running.shutdown()
        took, rss, _ = run_measured([ikv, "snapshot", "--store", "bench", "--force"], env)
        row("snapshot pass after 1% changed (a layer, where the tree writes them)", took,
            f"{took / full_pass:.2f}× the full pass", f"peak RSS {rss:,.0f} MB")
        # A fresh reader bootstraps from what that pass left (a full snapshot and a layer).
        shutil.rmtree(pathlib.Path(root, "mount"), ignore_errors=True)
        t = time.perf_counter()
        reader = create_new_reader(bench_processes.options(root))
        reader.startup()
        stacked_boot = time.perf_counter() - t
        reader.shutdown()
        row("fresh reader bootstrap after it", stacked_boot, f"{stacked_boot / boot:.2f}× the first bootstrap")
        # The same change again, with every snapshot full (the previous design, same run).
        changed, took = change_one_percent(root, docs)
        took, rss, _ = run_measured([ikv, "snapshot", "--store", "bench", "--force", "--max-layers", "0"], env)
        row("snapshot pass after 1% changed again, --max-layers 0 (full rewrite; folds the layer)", took,
            f"{took / full_pass:.2f}× the full pass", f"peak RSS {rss:,.0f} MB")
    finally:
        if not os.environ.get("IKV_SCALE_DIR"):
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(f"# {platform.machine()}, {os.cpu_count()} cores; {docs:,} documents ({data / 1e9:.1f} GB of keys and values), {PARTITIONS} partitions")
    print("| step | time | rate | memory / disk |")
    print("|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()

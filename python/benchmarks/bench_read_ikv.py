"""read_ikv from a local-directory bucket: N documents (a 10-byte key, three 50-byte strings;
4 partitions) imported, snapshotted, then 1% changed (deltas after the snapshot), read into a
Ray Dataset on a 2-CPU local cluster; beside pyarrow reading the same snapshot's Parquet files
(the floor: no merge, no deltas).

``python bench_read_ikv.py [DOCS]`` with the release wheel, Ray and pyarrow installed and
$IKV_BIN a release `ikv`. Prints Markdown rows for BENCHMARKS.md.
"""

import glob
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq
import ray

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from bench_scale import change_one_percent  # noqa: E402
from import_data import PARTITIONS, parquet_file  # noqa: E402

from ikvpy.ray import read_ikv  # noqa: E402


def main() -> None:
    docs = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    ikv = os.environ.get("IKV_BIN", "ikv")
    root = tempfile.mkdtemp(prefix="ikv-read-")
    url = f"file://{root}/bucket"
    pathlib.Path(root, "bucket").mkdir()
    env = dict(os.environ, IKV_STORAGE_URL=url, RUST_LOG="warn")
    run = lambda *a: subprocess.run([ikv, *a], env=env, check=True, capture_output=True)  # noqa: E731
    run("create-store", "--store", "bench", "--primary-key", "id", "--partitions", str(PARTITIONS))
    run("import", "--store", "bench", "--parquet", str(parquet_file(docs)))
    run("snapshot", "--store", "bench", "--force")
    changed, _ = change_one_percent(root, docs, as_string=True)
    values = docs * 3

    files = sorted(glob.glob(f"{root}/bucket/bench/p*/snapshots/*/*/*.parquet"))
    t = time.perf_counter()
    rows = sum(pq.read_table(f, columns=["_ikv_key", "f1", "f2", "f3"]).num_rows for f in files)
    floor = time.perf_counter() - t
    assert rows == docs, rows

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        t = time.perf_counter()
        ds = read_ikv("bench", ["f1", "f2", "f3"], storage_url=url)
        seen = 0
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            seen += batch.num_rows
        took = time.perf_counter() - t
    finally:
        ray.shutdown()
    assert seen == docs, seen
    print(f"# {os.cpu_count()} cores; {docs:,} documents, {PARTITIONS} partitions, {changed:,} changed after the snapshot")
    print("| read | time | field values/s |")
    print("|---|---|---|")
    print(f"| pyarrow reading the snapshot's Parquet files (one process, no merge, no deltas) | {floor:.1f} s | {values / floor / 1e6:.2f} M |")
    print(f"| `read_ikv` into a Ray Dataset (4 read tasks on 2 CPUs; snapshot + {changed:,} changed documents' deltas) | {took:.1f} s | {values / took / 1e6:.2f} M |")


if __name__ == "__main__":
    main()

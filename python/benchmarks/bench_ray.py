"""Ray Data datasink benchmark: N documents (a 10-byte key and three 50-byte fields) read from
Parquet by Ray Data on a local cluster of 2 CPUs and written through IKVDatasink (each task
writes runs, the driver commits once per partition); beside `bulk.import_parquet` of the same
file in one process, in the same run.

``python python/benchmarks/bench_ray.py [DOCS]`` (default 2,000,000; the Parquet file is
bench_import.py's).
"""

import os
import pathlib
import shutil
import sys
import tempfile
import time

import ray

from ikvpy import admin, bulk
from ikvpy.ray import IKVDatasink

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from bench_import import PARTITIONS, parquet_file  # noqa: E402


def main() -> None:
    docs = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    path = parquet_file(docs)
    work = pathlib.Path(tempfile.mkdtemp(prefix="ikv-ray-", dir=os.environ.get("IKV_BENCH_DIR", "/tmp")))
    rows = []
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        url = f"file://{work}/ray"
        admin.create_store("bench", "id", num_partitions=PARTITIONS, storage_url=url)
        t = time.perf_counter()
        ds = ray.data.read_parquet(str(path), override_num_blocks=8)
        sink = IKVDatasink("bench", storage_url=url)
        ds.write_datasink(sink)
        elapsed = time.perf_counter() - t
        assert sink.receipt is not None and sink.receipt.documents == docs
        rows.append(("Ray Data, 2 CPUs: read_parquet → IKVDatasink (8 blocks)", elapsed))
        ray.shutdown()
        url = f"file://{work}/single"
        admin.create_store("bench", "id", num_partitions=PARTITIONS, storage_url=url)
        t = time.perf_counter()
        bulk.import_parquet(path, "bench", storage_url=url)
        rows.append(("one process: bulk.import_parquet", time.perf_counter() - t))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"| import of {docs:,} documents ({PARTITIONS} partitions), file → committed | time | rate |")
    print("|---|---|---|")
    for name, elapsed in rows:
        print(f"| {name} | {elapsed:.1f} s | {docs / elapsed / 1e6:.2f} M docs/s |")


if __name__ == "__main__":
    main()

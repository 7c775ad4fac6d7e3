"""Bulk import benchmark: N documents (a 10-byte key and three 50-byte fields) from one Parquet
file into a store with a running reader, until the reader serves them; beside the same rows
through ``upsert_fields_batch`` followed by a snapshot pass, in the same run. Then a fresh
reader's bootstrap after the import (applying the import from its runs), and after the
compactor folded it (from the snapshot).

``python python/benchmarks/bench_import.py [DOCS] [--skip-peer]`` (default 10,000,000). The
Parquet file is generated once under $IKV_BENCH_DIR (default /tmp/ikv-bench-import).
Prints Markdown rows for BENCHMARKS.md.
"""

import os
import pathlib
import resource
import shutil
import sys
import tempfile
import time

import pyarrow.parquet as pq

from import_data import PARTITIONS, parquet_file
from ikvpy import admin, bulk
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.factory import create_new_reader, create_new_writer

def options(url: str, mount: str):
    return (
        ClientOptionsBuilder()
        .with_account_id("bench")
        .with_account_passkey("bench")
        .with_store_name("bench")
        .with_storage_url(url)
        .with_mount_directory(mount)
        .with_poll_interval(0.01)
        .build()
    )


def wait_applied(reader, wanted) -> None:
    while not all(s["applied_sequence"] >= wanted.get(s["partition"], 0) for s in reader.status()):
        time.sleep(0.005)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    docs = int(args[0]) if args else 10_000_000
    skip_peer = "--skip-peer" in sys.argv
    t = time.perf_counter()
    path = parquet_file(docs)
    print(f"# data: {path} ({path.stat().st_size / 1e6:.0f} MB, made or found in {time.perf_counter() - t:.1f} s)", flush=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="ikv-import-", dir=os.environ.get("IKV_BENCH_DIR", "/tmp")))
    rows = []
    try:
        # Import, with a reader running since before it.
        url = f"file://{work}/bucket"
        admin.create_store("bench", "id", num_partitions=PARTITIONS, storage_url=url)
        reader = create_new_reader(options(url, str(work / "mount")))
        reader.startup()
        t0 = time.perf_counter()
        receipt = bulk.import_parquet(path, "bench", storage_url=url)
        t1 = time.perf_counter()
        wait_applied(reader, {c.partition: c.sequence for c in receipt.commits})
        t2 = time.perf_counter()
        assert reader.get_value("k000000007", "f2") == "2" + "7".rjust(49, "0")
        reader.shutdown()
        shutil.rmtree(work / "mount", ignore_errors=True)  # disk: each copy holds every document
        rows.append(("import: Parquet → committed (read, sort, write runs, commit)", f"{t1 - t0:.1f} s", f"{docs / (t1 - t0) / 1e6:.2f} M docs/s"))
        rows.append(("import: committed → served by the running reader", f"{t2 - t1:.1f} s", f"{3 * docs / (t2 - t1) / 1e6:.2f} M values/s"))
        rows.append(("import: end to end (file → running reader serves it)", f"{t2 - t0:.1f} s", f"peak RSS of the process {rss_mb():.0f} MB"))
        # A fresh reader: no snapshot yet, so it applies the import from its runs.
        t = time.perf_counter()
        fresh = create_new_reader(options(url, str(work / "fresh")))
        fresh.startup()
        elapsed = time.perf_counter() - t
        fresh.shutdown()
        shutil.rmtree(work / "fresh", ignore_errors=True)
        rows.append(("fresh reader after the import (applies the runs)", f"{elapsed:.1f} s", f"{3 * docs / elapsed / 1e6:.2f} M values/s"))
        t = time.perf_counter()
        admin.run_snapshot("bench", storage_url=url)
        snap = time.perf_counter() - t
        rows.append(("snapshot pass folding the import", f"{snap:.1f} s", f"{3 * docs / snap / 1e6:.2f} M values/s"))
        t = time.perf_counter()
        fresh = create_new_reader(options(url, str(work / "fresh-2")))
        fresh.startup()
        elapsed = time.perf_counter() - t
        fresh.shutdown()
        rows.append(("fresh reader after the snapshot (bootstrap)", f"{elapsed:.1f} s", f"{3 * docs / elapsed / 1e6:.2f} M values/s"))
        shutil.rmtree(work / "bucket", ignore_errors=True)
        shutil.rmtree(work / "mount", ignore_errors=True)
        shutil.rmtree(work / "fresh", ignore_errors=True)
        shutil.rmtree(work / "fresh-2", ignore_errors=True)

        if not skip_peer:
            # The peer: the same rows through upsert_fields_batch, then a snapshot pass.
            url = f"file://{work}/peer"
            admin.create_store("bench", "id", num_partitions=PARTITIONS, storage_url=url)
            t0 = time.perf_counter()
            with create_new_writer(options(url, str(work / "peer-mount"))) as writer:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=20_000):
                    cols = batch.to_pydict()
                    docs_batch = []
                    for i in range(batch.num_rows):
                        b = IKVDocumentBuilder().put_string_field("id", cols["id"][i])
                        b.put_string_field("f1", cols["f1"][i]).put_string_field("f2", cols["f2"][i]).put_string_field("f3", cols["f3"][i])
                        docs_batch.append(b.build())
                    writer.upsert_fields_batch(docs_batch)
            t1 = time.perf_counter()
            admin.run_snapshot("bench", storage_url=url)
            t2 = time.perf_counter()
            rows.append(("peer: upsert_fields_batch (20,000 per call)", f"{t1 - t0:.1f} s", f"{docs / (t1 - t0) / 1e6:.2f} M docs/s"))
            rows.append(("peer: then the snapshot pass", f"{t2 - t1:.1f} s", f"{3 * docs / (t2 - t1) / 1e6:.2f} M values/s"))
            rows.append(("peer: end to end", f"{t2 - t0:.1f} s", ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"| step ({docs:,} documents, {PARTITIONS} partitions) | time | rate |")
    print("|---|---|---|")
    for name, time_, rate in rows:
        print(f"| {name} | {time_} | {rate} |")


if __name__ == "__main__":
    main()

"""Snapshot pass over a store written as many small deltas: N documents (a 10-byte key and
three 50-byte fields) written by 32 threads through one direct-mode writer, 50 documents per
call (group commit coalesces concurrent calls), into a 1-partition store with no snapshot;
then one snapshot pass, timed. Prints a Markdown row for BENCHMARKS.md.

``python python/benchmarks/bench_snapshot_small_deltas.py [DOCS]`` (default 1,000,000).
"""

import os
import pathlib
import shutil
import sys
import tempfile
import threading
import time

from ikvpy import admin
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.factory import create_new_writer

THREADS = 32
PER_CALL = 50


def main() -> None:
    docs = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    work = pathlib.Path(tempfile.mkdtemp(prefix="ikv-small-", dir=os.environ.get("IKV_BENCH_DIR", "/tmp")))
    try:
        url = f"file://{work}/bucket"
        admin.create_store("bench", "id", storage_url=url)
        options = ClientOptionsBuilder().with_store_name("bench").with_storage_url(url).with_mount_directory(str(work / "m")).build()
        writer = create_new_writer(options)
        writer.startup()

        def run(thread: int) -> None:
            for start in range(thread * PER_CALL, docs, THREADS * PER_CALL):
                batch = []
                for i in range(start, min(start + PER_CALL, docs)):
                    b = IKVDocumentBuilder().put_string_field("id", f"k{i:09d}")
                    for f in range(3):
                        b.put_string_field(f"f{f}", f"{f}{i:049d}")
                    batch.append(b.build())
                writer.upsert_fields_batch(batch)

        t = time.perf_counter()
        threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        written = time.perf_counter() - t
        writer.shutdown()
        deltas = len(list((work / "bucket" / "bench" / "p0000" / "deltas").iterdir()))
        t = time.perf_counter()
        admin.run_snapshot("bench", storage_url=url)
        snap = time.perf_counter() - t
        print("| documents | deltas | write (32 threads) | snapshot pass | field values/s of the pass |")
        print("|---|---|---|---|---|")
        print(f"| {docs:,} | {deltas:,} | {written:.1f} s | {snap:.1f} s | {4 * docs / snap / 1e6:.2f} M |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

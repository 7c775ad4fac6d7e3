"""A point-in-time reader's open beside a live reader's, same store, same run.

A 4-partition store on a local directory: 1,000,000 documents (3 fields, about 70 bytes of keys
and values), a snapshot pass, 20,000 more writes, a checkpoint; then 100,000 more writes and a
second pass (the live tip moves on, the checkpoint keeps its older snapshot and deltas). Timed,
alternating, three times each on fresh mounts: a live reader's open (bootstrap from the newest
snapshots, then the deltas after them) and a reader pinned to the checkpoint (bootstrap from the
checkpoint's snapshots, then its 20,000 writes' deltas, and no polling after). Also: the pinned
reader's storage requests over the 10 s after it opened (it must make none).

``python python/benchmarks/bench_pinned.py``
"""

import shutil
import statistics
import tempfile
import time
import uuid

from ikvpy import admin
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.factory import create_new_reader, create_new_writer

DOCS = 1_000_000
BEFORE_CHECKPOINT = 20_000
AFTER = 100_000


def doc(i: int, v: int):
    return (
        IKVDocumentBuilder()
        .put_string_field("id", f"key-{i:08}")
        .put_string_field("city", f"city-{i % 997}")
        .put_int64_field("v", v)
        .build()
    )


def write(writer, keys, v: int) -> None:
    for start in range(0, len(keys), 5000):
        writer.upsert_fields_batch([doc(i, v) for i in keys[start : start + 5000]])


def requests(reader) -> float:
    m = reader.metrics().get("ikv_storage_requests_total")
    return sum(s["value"] for s in m["samples"]) if m else 0.0


def main() -> None:
    root = tempfile.mkdtemp(prefix="ikv-pinned-bench-")
    url = f"file://{root}/bucket"
    admin.create_store("pit", "id", num_partitions=4, storage_url=url)

    def builder():
        return ClientOptionsBuilder().with_store_name("pit").with_storage_url(url).with_mount_directory(f"{root}/m-{uuid.uuid4()}")

    try:
        with create_new_writer(builder().build()) as w:
            write(w, range(DOCS), 0)
            admin.run_snapshot("pit", storage_url=url)
            write(w, range(0, DOCS, DOCS // BEFORE_CHECKPOINT), 1)
            admin.create_checkpoint("pit", "bench", storage_url=url)
            write(w, range(1, DOCS, DOCS // AFTER), 2)
            admin.run_snapshot("pit", storage_url=url)
        times = {"live": [], "pinned": []}
        quiet = []
        for _ in range(3):
            for kind in ("live", "pinned"):
                b = builder()
                if kind == "pinned":
                    b = b.with_checkpoint("bench")
                reader = create_new_reader(b.build())
                t = time.perf_counter()
                reader.startup()
                times[kind].append(time.perf_counter() - t)
                # key 1: untouched before the checkpoint, rewritten after it.
                want = 0 if kind == "pinned" else 2
                assert reader.get_int64_value("key-00000001", "v") == want, kind
                if kind == "pinned":
                    before = requests(reader)
                    time.sleep(10)
                    quiet.append(requests(reader) - before)
                reader.shutdown()
        print("| reader | open (median of 3, range) | requests in 10 s after open |")
        print("|---|---|---|")
        for kind, ts in times.items():
            extra = f"{statistics.median(quiet):.0f}" if kind == "pinned" else "(polls)"
            print(f"| {kind} | {statistics.median(ts):.2f} s ({min(ts):.2f}-{max(ts):.2f}) | {extra} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Commit latency and bootstrap rate on each storage ikv's tests run against, in one run: a
local directory, LocalStack's S3, moto's S3 and Azurite's Azure Blob Storage (all on
127.0.0.1, started by scripts/test.sh or localstack/localstack.sh, emulators/moto.sh and
emulators/azurite.sh). Emulators are not the
clouds: the table compares the code paths (request counts and shapes), not the services.

Per storage: a 4-partition store; 300 single-document upserts, one at a time (commit p50/p99);
then 100,000 documents of 3 fields in batches of 5,000, a snapshot pass, and a fresh reader's
open on an empty mount (bootstrap from the snapshots: documents/s). Two rounds, the storages
taking turns; the median of the rounds' p50 and rates reported.

``python python/benchmarks/bench_clouds.py``
"""

import shutil
import statistics
import tempfile
import time
import urllib.error
import urllib.request
import uuid

from ikvpy import admin
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.factory import create_new_reader, create_new_writer

S3 = {
    "aws_endpoint": "http://127.0.0.1:4566",
    "aws_region": "us-east-1",
    "aws_access_key_id": "test",
    "aws_secret_access_key": "test",
}
MOTO = dict(S3, aws_endpoint="http://127.0.0.1:5001")
AZURITE = {"azure_storage_use_emulator": "true"}
COMMITS = 300
DOCS = 100_000
ROUNDS = 2


def options(url, opts, mount):
    b = ClientOptionsBuilder().with_store_name("bench").with_storage_url(url).with_mount_directory(mount)
    for k, v in opts.items():
        b = b.with_storage_option(k, v)
    return b.build()


def doc(i: int):
    return (
        IKVDocumentBuilder()
        .put_string_field("id", f"key-{i:08}")
        .put_string_field("city", f"city-{i % 997}")
        .put_int64_field("n", i)
        .put_bytes_field("blob", bytes(40))
        .build()
    )


def one(url: str, opts: dict, root: str):
    admin.create_store("bench", "id", num_partitions=4, storage_url=url, storage_options=opts or None)
    o = options(url, opts, f"{root}/mount-{uuid.uuid4()}")
    times = []
    with create_new_writer(o) as w:
        for i in range(COMMITS):
            t = time.perf_counter_ns()
            w.upsert_fields(doc(i))
            times.append(time.perf_counter_ns() - t)
        for start in range(0, DOCS, 5000):
            w.upsert_fields_batch([doc(i) for i in range(start, start + 5000)])
    admin.run_snapshot("bench", storage_url=url, storage_options=opts or None)
    reader = create_new_reader(o)
    t = time.perf_counter()
    reader.startup()
    secs = time.perf_counter() - t
    assert reader.get_int64_value("key-00000042", "n") == 42
    reader.shutdown()
    q = statistics.quantiles(times, n=100)
    return statistics.median(times) / 1e6, q[98] / 1e6, DOCS / secs


def main() -> None:
    root = tempfile.mkdtemp(prefix="ikv-clouds-bench-")
    # An emulator may start empty: the bucket (a PUT, idempotent on both; they check no signature).
    for endpoint in (S3["aws_endpoint"], MOTO["aws_endpoint"]):
        try:
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/ikv-test", method="PUT"), timeout=10).read()
        except urllib.error.HTTPError as e:
            if e.code != 409:  # already owned by us
                raise
    storages = {
        "local directory (file://)": lambda: (f"file://{root}/bucket-{uuid.uuid4()}", {}),
        "LocalStack S3 (s3://)": lambda: (f"s3://ikv-test/bench-{uuid.uuid4()}", S3),
        "moto S3 (s3://)": lambda: (f"s3://ikv-test/bench-{uuid.uuid4()}", MOTO),
        "Azurite (az://)": lambda: (f"az://ikv-test/bench-{uuid.uuid4()}", AZURITE),
    }
    results = {name: [] for name in storages}
    try:
        for _ in range(ROUNDS):
            for name, make in storages.items():
                url, opts = make()
                results[name].append(one(url, opts, root))
                print(f"# {name}: {results[name][-1]}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("| storage | commit p50 | commit p99 | bootstrap (documents/s) |")
    print("|---|---|---|---|")
    for name, rounds in results.items():
        p50 = statistics.median(r[0] for r in rounds)
        p99 = statistics.median(r[1] for r in rounds)
        rate = statistics.median(r[2] for r in rounds)
        print(f"| {name} | {p50:.2f} ms | {p99:.2f} ms | {rate / 1e6:.2f} M |")


if __name__ == "__main__":
    main()

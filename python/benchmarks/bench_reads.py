"""Python read benchmark: ikvpy beside py-lmdb, SQLite and Redis, same data, one run.

1M documents (10-byte keys, 3 fields x 50 bytes), written through ikvpy's writer (direct
mode, local directory), snapshotted, then read by an ikvpy reader after bootstrap. The peers
hold the same field values. Prints a Markdown table for BENCHMARKS.md.

Run with scripts/bench-python.sh (installs the peers, starts redis-server on 127.0.0.1).
"""

import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time

import lmdb
import redis

from ikvpy import admin
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.factory import create_new_reader, create_new_writer

DOCS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
FIELDS = ["f1", "f2", "f3"]
SAMPLES = 200_000
REDIS_PORT = int(os.environ.get("IKV_BENCH_REDIS_PORT", "6390"))


def key(i: int) -> str:
    return f"k{i:09d}"


def value(i: int, f: int) -> bytes:
    return f"{f}{i:049d}".encode()


def pct(lat, p):
    lat = sorted(lat)
    return lat[int(round((len(lat) - 1) * p))] / 1000.0


def timed(fn, picks):
    lat = []
    clock = time.perf_counter_ns
    for k, f in picks:
        t = clock()
        fn(k, f)
        lat.append(clock() - t)
    return lat


def main() -> None:
    root = tempfile.mkdtemp(prefix="ikv-pybench-")
    url = f"file://{root}/bucket"
    admin.create_store("bench", "id", storage_url=url)
    options = (
        ClientOptionsBuilder().with_store_name("bench").with_storage_url(url)
        .with_mount_directory(f"{root}/mount").with_poll_interval(1.0).build()
    )
    t = time.time()
    writer = create_new_writer(options)
    writer.startup()
    batch = 20_000
    for start in range(0, DOCS, batch):
        documents = []
        for i in range(start, min(start + batch, DOCS)):
            b = IKVDocumentBuilder().put_string_field("id", key(i))
            for n, f in enumerate(FIELDS):
                b.put_bytes_field(f, value(i, n))
            documents.append(b.build())
        writer.upsert_fields_batch(documents)
    write_s = time.time() - t
    admin.run_snapshot("bench", storage_url=url)
    reader = create_new_reader(options)
    t = time.time()
    reader.startup()
    boot_s = time.time() - t

    env = lmdb.open(f"{root}/lmdb", map_size=8 << 30, writemap=True)
    with env.begin(write=True) as txn:
        for i in range(DOCS):
            for n, f in enumerate(FIELDS):
                txn.put(f"{key(i)}\0{f}".encode(), value(i, n))
    db = sqlite3.connect(f"{root}/sqlite.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID")
    db.executemany("INSERT INTO kv VALUES (?, ?)", ((f"{key(i)}\0{f}", value(i, n)) for i in range(DOCS) for n, f in enumerate(FIELDS)))
    db.commit()
    r = redis.Redis(host="127.0.0.1", port=REDIS_PORT)
    r.flushall()
    pipe = r.pipeline(transaction=False)
    for i in range(DOCS):
        pipe.hset(key(i), mapping={f: value(i, n) for n, f in enumerate(FIELDS)})
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()

    rnd = random.Random(1)
    picks = [(key(rnd.randrange(DOCS)), FIELDS[rnd.randrange(3)]) for _ in range(SAMPLES)]
    get = reader.get_bytes_value
    for k, f in picks[:50_000]:
        get(k, f)
    ikv_lat = timed(get, picks)
    txn = env.begin()
    lmdb_lat = timed(lambda k, f: txn.get(f"{k}\0{f}".encode()), picks)
    cur = db.cursor()
    sql = "SELECT v FROM kv WHERE k = ?"
    sqlite_lat = timed(lambda k, f: cur.execute(sql, (f"{k}\0{f}",)).fetchone(), picks)
    redis_lat = timed(lambda k, f: r.hget(k, f), picks[:50_000])

    batches = [[key(rnd.randrange(DOCS)) for _ in range(100)] for _ in range(2000)]
    t = time.perf_counter()
    n = 0
    for ks in batches:
        n += sum(1 for v in reader.multiget_bytes_values(str_primary_keys=ks, field_names=FIELDS) if v is not None)
    ikv_multi = n / (time.perf_counter() - t)
    assert n == 2000 * 300
    t = time.perf_counter()
    for ks in batches:
        for k in ks:
            for f in FIELDS:
                txn.get(f"{k}\0{f}".encode())
    lmdb_multi = 2000 * 300 / (time.perf_counter() - t)
    t = time.perf_counter()
    for ks in batches[:200]:
        pipe = r.pipeline(transaction=False)
        for k in ks:
            pipe.hmget(k, FIELDS)
        pipe.execute()
    redis_multi = 200 * 300 / (time.perf_counter() - t)
    t = time.perf_counter()
    rows = 0
    for ks in batches[:500]:
        rows += reader.multiget_table(ks, FIELDS).num_rows
    table_rate = rows * 3 / (time.perf_counter() - t)

    print(f"| measure ({DOCS:,} documents, 10-byte keys, 3 x 50-byte fields), Python {sys.version.split()[0]} | ikvpy | py-lmdb | SQLite | Redis (127.0.0.1, redis-py) |")
    print("|---|---|---|---|---|")
    print(f"| get p50 | {pct(ikv_lat, .5):.2f} µs | {pct(lmdb_lat, .5):.2f} µs | {pct(sqlite_lat, .5):.2f} µs | {pct(redis_lat, .5):.2f} µs |")
    print(f"| get p99 | {pct(ikv_lat, .99):.2f} µs | {pct(lmdb_lat, .99):.2f} µs | {pct(sqlite_lat, .99):.2f} µs | {pct(redis_lat, .99):.2f} µs |")
    print(f"| get mean | {statistics.fmean(ikv_lat)/1000:.2f} µs | {statistics.fmean(lmdb_lat)/1000:.2f} µs | {statistics.fmean(sqlite_lat)/1000:.2f} µs | {statistics.fmean(redis_lat)/1000:.2f} µs |")
    print(f"| multiget 100 keys x 3 fields | {ikv_multi/1e6:.2f}M values/s | {lmdb_multi/1e6:.2f}M values/s (loop) | | {redis_multi/1e6:.2f}M values/s (pipelined HMGET) |")
    print(f"| columnar multiget_table 100 keys x 3 fields | {table_rate/1e6:.2f}M values/s | | | |")
    print(f"| load | write {write_s:.1f} s + bootstrap {boot_s:.1f} s | | | |")
    reader.shutdown()


if __name__ == "__main__":
    main()

"""Python read benchmark: ikvpy beside py-lmdb, SQLite and Redis, same data, one run.

1M documents (10-byte keys, 3 fields x 50 bytes), written through ikvpy's writer (direct
mode, local directory), snapshotted, then read by two ikvpy readers of one mount after
bootstrap: the mount's owner and a reader attached to it. The peers hold the same field values. Fair by construction: every side's
keys are built before timing, every side gets the same warm-up pass and the same number of
gets and multiget batches, sides run in alternating order, and each figure is the median of
three runs with the range. Prints a Markdown table for BENCHMARKS.md.

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
SAMPLES = 100_000
WARM = 50_000
BATCHES = 2_000
RUNS = 3
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
    # Reader memory is measured by the Rust reader benchmark, in a fresh process: here the
    # writer's freed memory would be reused and hide it.
    readers = {}
    boot_s = {}
    for owner in (True, False):  # the owner bootstraps; the second reader attaches
        opts = (
            ClientOptionsBuilder().with_store_name("bench").with_storage_url(url)
            .with_mount_directory(f"{root}/mount").with_poll_interval(1.0).build()
        )
        reader = create_new_reader(opts)
        t = time.time()
        reader.startup()
        boot_s[owner] = time.time() - t
        readers[owner] = reader

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

    # Every side's keys are built here, outside the timed regions, in the form it takes.
    rnd = random.Random(1)
    picks = [(key(rnd.randrange(DOCS)), FIELDS[rnd.randrange(3)]) for _ in range(SAMPLES)]
    joined = [f"{k}\0{f}" for k, f in picks]
    lmdb_picks = [(j.encode(), None) for j in joined]
    sqlite_picks = [((j,), None) for j in joined]
    batches = [[key(rnd.randrange(DOCS)) for _ in range(100)] for _ in range(BATCHES)]
    lmdb_batches = [[f"{k}\0{f}".encode() for k in ks for f in FIELDS] for ks in batches]
    txn = env.begin()
    cur = db.cursor()
    sql = "SELECT v FROM kv WHERE k = ?"

    def ikv_multi(reader):
        def run():
            n = 0
            for ks in batches:
                n += sum(1 for v in reader.multiget_bytes_values(str_primary_keys=ks, field_names=FIELDS) if v is not None)
            assert n == BATCHES * 300
        return run

    def lmdb_multi():
        for ks in lmdb_batches:
            for k in ks:
                txn.get(k)

    def redis_multi():
        for ks in batches:
            pipe = r.pipeline(transaction=False)
            for k in ks:
                pipe.hmget(k, FIELDS)
            pipe.execute()

    sides = {
        "ikvpy": (readers[True].get_bytes_value, picks, ikv_multi(readers[True])),
        "ikvpy, attached reader": (readers[False].get_bytes_value, picks, ikv_multi(readers[False])),
        "py-lmdb": (lambda k, _: txn.get(k), lmdb_picks, lmdb_multi),
        "SQLite": (lambda k, _: cur.execute(sql, k).fetchone(), sqlite_picks, None),
        "Redis (127.0.0.1, redis-py)": (r.hget, picks, redis_multi),
    }
    results = {name: {"p50": [], "p99": [], "multi": []} for name in sides}
    for run in range(RUNS):
        order = list(sides) if run % 2 == 0 else list(reversed(sides))
        for name in order:
            get, side_picks, multi = sides[name]
            for k, f in side_picks[:WARM]:  # the same warm-up pass for every side
                get(k, f)
            lat = timed(get, side_picks)
            results[name]["p50"].append(pct(lat, .5))
            results[name]["p99"].append(pct(lat, .99))
            if multi is not None:
                t = time.perf_counter()
                multi()
                results[name]["multi"].append(BATCHES * 300 / (time.perf_counter() - t) / 1e6)
    t = time.perf_counter()
    rows = 0
    for ks in batches:
        rows += readers[True].multiget_table(ks, FIELDS).num_rows
    table_rate = rows * 3 / (time.perf_counter() - t)

    names = list(sides)
    print(f"| measure ({DOCS:,} documents, 10-byte keys, 3 x 50-byte fields), Python {sys.version.split()[0]}; median of {RUNS} runs [min-max] | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for measure, label, unit in (("p50", "get p50", "µs"), ("p99", "get p99", "µs"), ("multi", f"multiget 100 keys x 3 fields ({BATCHES} batches each)", "M values/s")):
        print(f"| {label} | " + " | ".join(median_range(results[n][measure], unit) for n in names) + " |")
    print(f"| columnar multiget_table 100 keys x 3 fields | {table_rate/1e6:.2f}M values/s | | | | |")
    print(f"| load | write {write_s:.1f} s; bootstrap {boot_s[True]:.1f} s ({DOCS*3/boot_s[True]/1e6:.2f}M field values/s) | attach {boot_s[False]*1000:.0f} ms | | | |")
    for reader in readers.values():
        reader.shutdown()


def median_range(runs, unit: str) -> str:
    if not runs:
        return ""
    runs = sorted(runs)
    return f"{runs[len(runs)//2]:.2f} {unit} [{runs[0]:.2f}-{runs[-1]:.2f}]"



if __name__ == "__main__":
    main()

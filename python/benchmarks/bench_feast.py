"""Feast online reads: ikv's online store beside Feast's SQLite and Redis online stores, same
repository, same data, same run.

10,000 entities, one feature view of 10 features (4 float, 3 int, 3 string), a local Parquet
offline store, materialized into each online store. Then `get_online_features` for 1 entity
and for 100 entities x 10 features: p50 / p99 over many calls after a warm-up, the stores
taking turns (three rounds, the median round reported). Beside them, ``ikvpy.feast.read_features``
on the ikv repository (serving code's direct path to the same features), checked equal to
``get_online_features(...).to_arrow()`` value for value before it is timed. Redis runs as redis-server on
127.0.0.1 (started here). Prints a Markdown table for BENCHMARKS.md.

``python python/benchmarks/bench_feast.py``
"""

import os
import random
import shutil
import statistics
import subprocess
import tempfile
import textwrap
import time
from datetime import datetime, timedelta, timezone

import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource
from feast.types import Float32, Int64, String

ENTITIES = 10_000
ROUNDS = 3
CALLS = {1: 3000, 100: 300}
REDIS_PORT = int(os.environ.get("IKV_BENCH_REDIS_PORT", "6391"))
START = datetime(2026, 11, 1, tzinfo=timezone.utc)


def data(path: str) -> None:
    rng = random.Random(7)
    frame = pd.DataFrame({"driver_id": list(range(ENTITIES))})
    for i in range(4):
        frame[f"f{i}"] = [rng.random() for _ in range(ENTITIES)]
    for i in range(4, 7):
        frame[f"f{i}"] = [rng.randrange(1_000_000) for _ in range(ENTITIES)]
    for i in range(7, 10):
        frame[f"f{i}"] = [f"value-{rng.randrange(1_000_000)}" for _ in range(ENTITIES)]
    frame["event_timestamp"] = START + timedelta(hours=1)
    frame.to_parquet(path)


def repo(root: str, name: str, online: str, parquet: str) -> FeatureStore:
    path = os.path.join(root, name)
    os.makedirs(path)
    with open(os.path.join(path, "feature_store.yaml"), "w") as f:
        f.write(
            textwrap.dedent(
                f"""\
                project: bench_{name}
                registry: {path}/registry.db
                provider: local
                entity_key_serialization_version: 3
                offline_store:
                  type: file
                online_store:
                """
            )
            + textwrap.indent(online, "  ")
        )
    store = FeatureStore(repo_path=path)
    driver = Entity(name="driver", join_keys=["driver_id"])
    schema = [Field(name=f"f{i}", dtype=Float32) for i in range(4)]
    schema += [Field(name=f"f{i}", dtype=Int64) for i in range(4, 7)]
    schema += [Field(name=f"f{i}", dtype=String) for i in range(7, 10)]
    view = FeatureView(
        name="stats",
        entities=[driver],
        ttl=timedelta(days=30),
        schema=schema,
        source=FileSource(path=parquet, timestamp_field="event_timestamp"),
    )
    store.apply([driver, view])
    t = time.perf_counter()
    store.materialize(START, START + timedelta(days=1))
    print(f"# {name}: materialized {ENTITIES} rows in {time.perf_counter() - t:.1f} s", flush=True)
    return store


REFS = [f"stats:f{i}" for i in range(10)]


def measure(read, entities: int, calls: int, rng: random.Random) -> list:
    rows = [[{"driver_id": rng.randrange(ENTITIES)} for _ in range(entities)] for _ in range(calls)]
    for r in rows[: calls // 5]:  # warm-up
        read(r)
    times = []
    for r in rows:
        t = time.perf_counter_ns()
        read(r)
        times.append(time.perf_counter_ns() - t)
    return times


def online(store: FeatureStore):
    return lambda rows: store.get_online_features(features=REFS, entity_rows=rows)


def direct(store: FeatureStore):
    from ikvpy.feast import read_features

    rng = random.Random(5)
    for n in (1, 100):  # equal to Feast's answer first (Feast orders columns by a set)
        rows = [{"driver_id": rng.randrange(ENTITIES + 50)} for _ in range(n)]
        want = store.get_online_features(features=REFS, entity_rows=rows).to_arrow()
        got = read_features(store, REFS, rows)
        assert got.select(want.column_names).equals(want), (got, want)
    return lambda rows: read_features(store, REFS, rows)


def main() -> None:
    root = tempfile.mkdtemp(prefix="ikv-feast-bench-")
    redis_proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        parquet = os.path.join(root, "stats.parquet")
        data(parquet)
        ikv = repo(
            root,
            "ikv",
            f"type: ikvpy.feast.IKVOnlineStore\nstorage_url: file://{root}/bucket\nmount_directory: {root}/mount\n",
            parquet,
        )
        stores = {
            "ikv (ikvpy.feast), get_online_features": online(ikv),
            "ikv, ikvpy.feast.read_features": direct(ikv),
            "SQLite, get_online_features": online(repo(root, "sqlite", f"type: sqlite\npath: {root}/online.db\n", parquet)),
            "Redis, get_online_features": online(
                repo(root, "redis", f"type: redis\nconnection_string: 127.0.0.1:{REDIS_PORT}\n", parquet)
            ),
        }
        results = {(name, n): [] for name in stores for n in CALLS}
        rng = random.Random(11)
        for _ in range(ROUNDS):
            for name, read in stores.items():
                for n, calls in CALLS.items():
                    times = measure(read, n, calls, rng)
                    q = statistics.quantiles(times, n=100)
                    results[(name, n)].append((statistics.median(times), q[98]))
        print("| online store, call | entities x features | p50 | p99 |")
        print("|---|---|---|---|")
        for (name, n), rounds in results.items():
            p50s = sorted(r[0] for r in rounds)
            p99s = sorted(r[1] for r in rounds)
            print(
                f"| {name} | {n} x 10 | {p50s[len(p50s) // 2] / 1e6:.3f} ms ({p50s[0] / 1e6:.3f}-{p50s[-1] / 1e6:.3f}) | {p99s[len(p99s) // 2] / 1e6:.3f} ms |"
            )
    finally:
        redis_proc.terminate()
        redis_proc.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""What times to live and event times cost a read: the same documents in two stores, one
without either and one whose every value has an expiry (a store default of ten years, so
nothing expires during the run) and an event time, written, snapshotted and read by one
reader each, in one process.

Fair by construction: the same keys, values and picks for both, the same warm-up, sides
alternating within each round, each figure the median of the rounds with the range. Measures
get p50 / p99 (random keys and fields), a multiget of 100 keys x 3 fields, and a scan of every
document. Prints a Markdown table for BENCHMARKS.md.

usage: bench_ttl.py [DOCS]   (a release wheel of ikvpy installed)
"""

import random
import statistics
import sys
import tempfile
import time

from ikvpy import admin
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.factory import create_new_reader, create_new_writer

DOCS = int(sys.argv[1]) if len(sys.argv) > 1 else 500_000
FIELDS = ["f1", "f2", "f3"]
SAMPLES = 100_000
BATCHES = 2_000
ROUNDS = 5
TEN_YEARS = 10 * 365 * 24 * 3600


def key(i: int) -> str:
    return f"k{i:09d}"


def value(i: int, f: int) -> bytes:
    return f"{f}{i:049d}".encode()


def pct(lat, p):
    lat = sorted(lat)
    return lat[int(round((len(lat) - 1) * p))] / 1000.0


def load(root: str, store: str, ttl, event_times: bool):
    url = f"file://{root}/bucket"
    admin.create_store(store, "id", num_partitions=1, storage_url=url, ttl_seconds=ttl)
    builder = ClientOptionsBuilder().with_store_name(store).with_storage_url(url).with_mount_directory(f"{root}/mount-{store}")
    with create_new_writer(builder.build()) as writer:
        batch = []
        for i in range(DOCS):
            b = IKVDocumentBuilder().put_string_field("id", key(i))
            for f, name in enumerate(FIELDS):
                b.put_bytes_field(name, value(i, f))
            batch.append(b.build())
            if len(batch) == 10_000:
                writer.upsert_fields_batch(batch, event_time=i if event_times else None)
                batch = []
        if batch:
            writer.upsert_fields_batch(batch, event_time=DOCS if event_times else None)
    admin.run_snapshot(store, storage_url=url)
    reader = create_new_reader(builder.build())
    reader.startup()
    return reader


def main() -> None:
    root = tempfile.mkdtemp(prefix="ikv-bench-ttl-")
    readers = {
        "without TTLs or event times": load(root, "plain", None, False),
        "every value with an expiry and an event time": load(root, "timed", TEN_YEARS, True),
    }
    rng = random.Random(7)
    picks = [(key(rng.randrange(DOCS)).encode(), FIELDS[rng.randrange(3)]) for _ in range(SAMPLES)]
    batches = [[key(rng.randrange(DOCS)).encode() for _ in range(100)] for _ in range(BATCHES)]
    for r in readers.values():
        assert r.get_bytes_value(picks[0][0], picks[0][1]) is not None
        for k, f in picks[: SAMPLES // 2]:
            r.get_bytes_value(k, f)
    results = {name: {"p50": [], "p99": [], "multiget": [], "scan": []} for name in readers}
    clock = time.perf_counter_ns
    for round_ in range(ROUNDS):
        order = list(readers.items()) if round_ % 2 == 0 else list(reversed(readers.items()))
        for name, r in order:
            get = r.get_bytes_value
            lat = []
            for k, f in picks:
                t = clock()
                get(k, f)
                lat.append(clock() - t)
            results[name]["p50"].append(pct(lat, 0.5))
            results[name]["p99"].append(pct(lat, 0.99))
            t = time.perf_counter()
            for keys in batches:
                r.multiget_bytes_values(keys, FIELDS)
            results[name]["multiget"].append(BATCHES * 100 * 3 / (time.perf_counter() - t) / 1e6)
            t = time.perf_counter()
            rows = sum(b.num_rows for b in r.scan(FIELDS))
            assert rows == DOCS, rows
            results[name]["scan"].append(DOCS * 3 / (time.perf_counter() - t) / 1e6)
    print(f"{DOCS:,} documents x 3 fields of 50 bytes, one partition; {ROUNDS} rounds, sides alternating; median (range)")
    print()
    print("| store | get p50 (µs) | get p99 (µs) | multiget 100 x 3 (M values/s) | scan (M values/s) |")
    print("|---|---|---|---|---|")
    med = {}
    for name, r in results.items():
        cells = []
        for m in ["p50", "p99", "multiget", "scan"]:
            v = r[m]
            cells.append(f"{statistics.median(v):.2f} ({min(v):.2f}–{max(v):.2f})")
        med[name] = {m: statistics.median(v) for m, v in r.items()}
        print(f"| {name} | " + " | ".join(cells) + " |")
    a, b = med["every value with an expiry and an event time"], med["without TTLs or event times"]
    print()
    print(
        f"ratios, with ÷ without: get p50 {a['p50'] / b['p50']:.3f}x, p99 {a['p99'] / b['p99']:.3f}x, "
        f"multiget {b['multiget'] / a['multiget']:.3f}x (time), scan {b['scan'] / a['scan']:.3f}x (time)"
    )
    for r in readers.values():
        r.shutdown()


if __name__ == "__main__":
    main()

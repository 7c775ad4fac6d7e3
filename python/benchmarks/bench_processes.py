"""Many reader processes on one host: ikvpy (one shared local copy per mount) beside py-lmdb
(one shared memory-mapped file), same data, same run.

N documents (10-byte keys, 3 fields x 50 bytes) are written through ikvpy's writer (direct
mode, local directory) and snapshotted; the same field values go into an LMDB file. Then, for
1, 4 and 8 spawned reader processes on each side: the time to open, each process's get
p50 / p99 (random keys and fields, after a warm-up pass), a pass over every key (so every
page of the data is mapped by every process), the small batch ML serving makes (100 keys x 1
field: one ikvpy multiget against a Python loop of 100 py-lmdb gets), and the sum of the
processes' PSS (``/proc/<pid>/smaps_rollup``: shared pages are divided among the processes
mapping them, so the sum is what the host holds for them). Also the bootstrap rate and how
fast a write reaches an attached process. Prints Markdown for BENCHMARKS.md.

Run: ``.venv/bin/python python/benchmarks/bench_processes.py [DOCS [PROCESS-COUNTS]]``
(counts as ``1,4,8``, the default) with a release wheel
installed and py-lmdb (``pip install -r python/requirements-bench.txt``).
"""

import multiprocessing
import os
import platform
import random
import statistics
import sys
import tempfile
import time

import lmdb

import dataset
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.factory import create_new_reader, create_new_writer

FIELDS = dataset.FIELDS
key = dataset.key
SAMPLES = 100_000
WARM = 20_000
SMALL_BATCHES = 2_000




def pct(lat, p):
    lat = sorted(lat)
    return lat[int(round((len(lat) - 1) * p))] / 1000.0


def pss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def options(root: str, poll: float = 0.01):
    return (
        ClientOptionsBuilder().with_store_name("bench").with_storage_url(f"file://{root}/bucket")
        .with_mount_directory(f"{root}/mount").with_poll_interval(poll).build()
    )


def worker(side: str, root: str, docs: int, seed: int, out, done) -> None:
    """One reader process: opens, measures, reports, then holds its mapping until `done`.
    Its PSS before the open (the interpreter and the benchmark's own key lists) is reported
    too, so that the table counts what the readers add."""
    rnd = random.Random(seed)
    if side == "ikv":
        picks = [(key(rnd.randrange(docs)), FIELDS[rnd.randrange(3)]) for _ in range(SAMPLES)]
        batches = [[key(rnd.randrange(docs)) for _ in range(100)] for _ in range(SMALL_BATCHES)]
    else:
        picks = [(f"{key(rnd.randrange(docs))}\0{FIELDS[rnd.randrange(3)]}".encode(), None) for _ in range(SAMPLES)]
        batches = [[f"{key(rnd.randrange(docs))}\0f1".encode() for _ in range(100)] for _ in range(SMALL_BATCHES)]
    before = pss_bytes(os.getpid())
    t = time.perf_counter()
    if side == "ikv":
        reader = create_new_reader(options(root))
        reader.startup()
        get = reader.get_bytes_value

        def small(ks):
            return reader.multiget_bytes_values(str_primary_keys=ks, field_names=["f1"])

        def scan(ks):
            return reader.multiget_bytes_values(str_primary_keys=ks, field_names=FIELDS)
    else:
        env = lmdb.open(f"{root}/lmdb", readonly=True, lock=False, max_readers=64)
        txn = env.begin()

        def get(k, _f):
            return txn.get(k)

        def small(ks):
            return [txn.get(k) for k in ks]

        def scan(ks):
            return [txn.get(k) for k in ks]
    open_s = time.perf_counter() - t
    for s in range(0, docs, 1000):  # every page of the data, in every process
        if side == "ikv":
            scan([key(i) for i in range(s, min(s + 1000, docs))])
        else:
            scan([f"{key(i)}\0{f}".encode() for i in range(s, min(s + 1000, docs)) for f in FIELDS])
    for k, f in picks[:WARM]:
        get(k, f)
    clock = time.perf_counter_ns
    lat = []
    for k, f in picks:
        t0 = clock()
        get(k, f)
        lat.append(clock() - t0)
    t = time.perf_counter()
    found = 0
    for ks in batches:
        found += sum(1 for v in small(ks) if v is not None)
    small_rate = found / (time.perf_counter() - t)
    assert found == SMALL_BATCHES * 100, found
    out.put((os.getpid(), open_s, pct(lat, 0.5), pct(lat, 0.99), small_rate, before))
    done.wait(600)


def run_side(side: str, root: str, docs: int, n: int):
    ctx = multiprocessing.get_context("spawn")
    out, done = ctx.Queue(), ctx.Event()
    procs = []
    reports = []
    for i in range(n):
        p = ctx.Process(target=worker, args=(side, root, docs, i, out, done))
        p.start()
        procs.append(p)
        if i == 0:
            reports.append(out.get(timeout=1800))  # the first is the mount's owner
    while len(reports) < n:
        reports.append(out.get(timeout=1800))
    pss = sum(pss_bytes(r[0]) - r[5] for r in reports)
    done.set()
    for p in procs:
        p.join(60)
    return reports, pss


def freshness(root: str, samples: int = 20):
    """Write acknowledged in this process → visible in an attached reader process."""
    ctx = multiprocessing.get_context("spawn")
    owner = create_new_reader(options(root))
    owner.startup()
    out = ctx.Queue()
    p = ctx.Process(target=watch, args=(root, samples, out))
    p.start()
    assert out.get(timeout=120) == "attached"
    acks = []
    with create_new_writer(options(root)) as writer:
        for i in range(samples):
            b = IKVDocumentBuilder().put_string_field("id", f"fresh{i}").put_bytes_field("f1", b"x")
            writer.upsert_fields(b.build())
            acks.append(time.time())
            time.sleep(0.1)
    seen = out.get(timeout=120)
    p.join(60)
    owner.shutdown()
    return sorted((s - a) * 1000 for s, a in zip(seen, acks))


def watch(root: str, samples: int, out) -> None:
    reader = create_new_reader(options(root))
    reader.startup()
    out.put("attached")
    seen = []
    for i in range(samples):
        while reader.get_bytes_value(f"fresh{i}", "f1") is None:
            pass
        seen.append(time.time())
    out.put(seen)


def main() -> None:
    docs = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    counts = [int(n) for n in sys.argv[2].split(",")] if len(sys.argv) > 2 else [1, 4, 8]
    root = tempfile.mkdtemp(prefix="ikv-procbench-")
    dataset.build(root, docs, options(root))
    data_bytes = docs * (10 + 3 * 50)
    reader = create_new_reader(options(root))
    t = time.perf_counter()
    reader.startup()
    boot_s = time.perf_counter() - t
    reader.shutdown()

    rows = []
    for n in counts:
        for side in ("ikv", "lmdb"):
            reports, pss = run_side(side, root, docs, n)
            attach = [r[1] for r in reports[1:]] or [reports[0][1]]
            rows.append((side, n, pss, reports, attach))
    fresh = freshness(root)

    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; {docs:,} documents "
          f"(10-byte keys, 3 x 50-byte fields: {data_bytes/1e6:.0f} MB of keys and values); every process scans all keys first")
    print("| side | processes | sum of PSS the readers add (MB) | PSS / keys and values | get p50 / p99 per process (µs, median of processes) | 100 keys x 1 field (M values/s, median) | open (ms, median) |")
    print("|---|---|---|---|---|---|---|")
    for side, n, pss, reports, attach in rows:
        name = "ikvpy (one mount)" if side == "ikv" else "py-lmdb (one file)"
        p50 = statistics.median(r[2] for r in reports)
        p99 = statistics.median(r[3] for r in reports)
        small = statistics.median(r[4] for r in reports) / 1e6
        open_ms = statistics.median(attach) * 1000
        print(f"| {name} | {n} | {pss/1e6:.0f} | {pss/data_bytes:.2f}x | {p50:.2f} / {p99:.2f} | {small:.2f} | {open_ms:.0f} |")
    print(f"| bootstrap (owner, local-directory snapshot) | {docs*3/boot_s/1e6:.2f}M field values/s ({boot_s:.1f} s) |")
    print(f"| freshness, write ack -> visible in an attached process (poll 10 ms), p50 / max of {len(fresh)} | {fresh[len(fresh)//2]:.1f} ms / {fresh[-1]:.1f} ms |")


if __name__ == "__main__":
    main()

"""Do deltas arriving stall reads or the interpreter? (issue: ikvpy under threads and fork)

One reader process; a separate (niced) writer process commits a batch of BATCH documents every
second (as a feature pipeline would). In the reader process one thread loops single gets and
records the slowest; a pure-Python thread loops a tiny computation and records the longest
gap between its iterations (a stall of the whole interpreter shows up there). The same loops
run with no writer, alternating, in the same run: the difference is what applying deltas
costs readers.

Usage: python bench_stalls.py [--docs N] [--batch N] [--seconds S] [--rounds R]
"""

import argparse
import os
import pathlib
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from ikvpy import admin
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.factory import create_new_reader, create_new_writer

WRITER = """
import sys, time
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.factory import create_new_writer
store, url, docs, batch, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
opts = ClientOptionsBuilder().with_store_name(store).with_storage_url(url).build()
value = "w" * 50
with create_new_writer(opts) as w:
    start = time.time(); n = 0
    while time.time() - start < seconds:
        tick = time.time()
        w.upsert_fields_batch([
            IKVDocumentBuilder().put_string_field("id", f"k{(n * batch + i) % docs}")
            .put_string_field("f0", value).put_string_field("f1", value).put_string_field("f2", value).build()
            for i in range(batch)])
        n += 1
        time.sleep(max(0.0, 1.0 - (time.time() - tick)))
print(n)
"""


def seed(store: str, url: str, docs: int) -> None:
    opts = ClientOptionsBuilder().with_store_name(store).with_storage_url(url).build()
    value = "s" * 50
    with create_new_writer(opts) as w:
        for start in range(0, docs, 50_000):
            w.upsert_fields_batch([
                IKVDocumentBuilder().put_string_field("id", f"k{i}").put_string_field("f0", value)
                .put_string_field("f1", value).put_string_field("f2", value).build()
                for i in range(start, min(docs, start + 50_000))
            ])
    admin.run_snapshot(store, storage_url=url)


def get_loop(reader, keys, seconds: float):
    """Latencies (ns) of single gets for `seconds`."""
    latencies = []
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        k = keys[i % len(keys)]
        t0 = time.perf_counter_ns()
        reader.get_string_value(k, "f1")
        latencies.append(time.perf_counter_ns() - t0)
        i += 1
    return latencies


def measure(reader, docs: int, seconds: float):
    """(slowest get in µs, p99 get in µs, gets, longest pure-Python stall in ms, voluntary and
    involuntary context switches of the get loop).

    The get latencies come from the get loop running alone (with a second Python thread, a
    get would also count the time it waits for that thread to hand over the GIL, which is
    the interpreter's scheduling, not ikv); the stall from the get loop and a pure-Python
    thread running together (a get holding the GIL while it waits would stall that thread)."""
    keys = [f"k{random.randrange(docs)}" for _ in range(100_000)]
    # Context switches of the get thread: a read that waits (a lock, the GIL) switches
    # voluntarily; a thread the OS preempts for another runnable thread, involuntarily.
    before = resource.getrusage(resource.RUSAGE_THREAD)
    latencies = get_loop(reader, keys, seconds / 2)
    after = resource.getrusage(resource.RUSAGE_THREAD)
    voluntary = after.ru_nvcsw - before.ru_nvcsw
    involuntary = after.ru_nivcsw - before.ru_nivcsw
    stop = threading.Event()
    longest_stall = [0.0]

    def pure_python():
        last = time.perf_counter()
        x = 0
        while not stop.is_set():
            for i in range(100):
                x += i
            now = time.perf_counter()
            longest_stall[0] = max(longest_stall[0], now - last)
            last = now

    t = threading.Thread(target=pure_python)
    t.start()
    get_loop(reader, keys, seconds / 2)
    stop.set()
    t.join()
    latencies.sort()
    return (latencies[-1] / 1000, latencies[int(len(latencies) * 0.99)] / 1000, len(latencies),
            longest_stall[0] * 1000, voluntary, involuntary)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=500_000)
    ap.add_argument("--batch", type=int, default=50_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    root = pathlib.Path(tempfile.mkdtemp(prefix="ikv-stalls-"))
    url = f"file://{root}/bucket"
    store = f"stalls-{uuid.uuid4().hex[:6]}"
    admin.create_store(store, "id", num_partitions=4, storage_url=url)
    seed(store, url, args.docs)
    opts = (
        ClientOptionsBuilder().with_store_name(store).with_storage_url(url)
        .with_mount_directory(str(root / "mount")).with_poll_interval(0.05).build()
    )
    results = {"quiet": [], "writes": []}
    with create_new_reader(opts) as reader:
        measure(reader, args.docs, 1.0)  # warm-up
        for r in range(args.rounds):
            order = ["quiet", "writes"] if r % 2 == 0 else ["writes", "quiet"]
            for phase in order:
                writer = None
                if phase == "writes":
                    # Niced: in production writes come from other machines; here the writer
                    # process must not take the reader process's CPU on a 2-core host.
                    writer = subprocess.Popen(
                        ["nice", "-n", "19", sys.executable, "-c", WRITER, store, url, str(args.docs), str(args.batch), str(args.seconds + 1)],
                        stdout=subprocess.PIPE, text=True,
                    )
                    time.sleep(1.0)  # the first batch is on its way
                results[phase].append(measure(reader, args.docs, args.seconds))
                if writer is not None:
                    batches = writer.communicate()[0].strip()
                    results[phase][-1] += (int(batches or 0),)
        applied = sum(s["applied_sequence"] for s in reader.status())
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{args.docs} docs, batches of {args.batch}/s from another process, "
          f"{args.rounds} rounds of {args.seconds:.0f} s, deltas applied in all: {applied}")
    print("| phase | worst get (µs) | p99 get (µs) | gets/round | longest pure-Python stall (ms) | get loop: voluntary / involuntary context switches | batches/round |")
    print("|---|---|---|---|---|---|---|")
    for phase, rows in results.items():
        def med(i, fmt="{:.0f}"):
            vals = [row[i] for row in rows]
            return f"{fmt.format(statistics.median(vals))} ({fmt.format(min(vals))}–{fmt.format(max(vals))})"
        batches = med(6) if phase == "writes" else "0"
        print(f"| {phase} | {med(0)} | {med(1, '{:.1f}')} | {med(2)} | {med(3, '{:.1f}')} | {med(4)} / {med(5)} | {batches} |")


if __name__ == "__main__":
    main()

"""Random reads from a store twice the memory a reader process is given: ikvpy beside py-lmdb.

N documents (10-byte keys, 3 fields x 50 bytes) are written through ikvpy's writer and
snapshotted; this process opens the mount (the owner: it bootstraps the read image); the same
values go into an LMDB file. For each side, the file's pages are then dropped from the page
cache (``posix_fadvise(DONTNEED)``) and a reader process runs in a memory cgroup (v1 or v2; run
as root) limited to half the size of that side's file; it times 100,000 random gets, one call
at a time, from cold. Reported: p50 / p99 / p99.9, the cgroup's peak, and whether anything was
OOM-killed. Prints Markdown for BENCHMARKS.md.

Run: ``python python/benchmarks/bench_memory_limit.py [DOCS]`` (as root) with a release wheel
and py-lmdb installed.
"""

import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import uuid

import dataset
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.factory import create_new_reader


READER = r"""
import random, sys, time
side, root, docs = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(5)
if side == "ikv":
    from ikvpy.clientoptions import ClientOptionsBuilder
    from ikvpy.factory import create_new_reader
    reader = create_new_reader(ClientOptionsBuilder().with_store_name("bench")
        .with_storage_url(f"file://{root}/bucket").with_mount_directory(f"{root}/mount").build())
    reader.startup()
    picks = [(f"k{rnd.randrange(docs):09d}", ("f1", "f2", "f3")[rnd.randrange(3)]) for _ in range(100_000)]
    get = reader.get_bytes_value
else:
    import lmdb
    # py-lmdb's readahead=False is its setting for stores larger than memory.
    txn = lmdb.open(f"{root}/lmdb", readonly=True, lock=False, readahead=side == "lmdb").begin()
    picks = [(f"k{rnd.randrange(docs):09d}\0{('f1', 'f2', 'f3')[rnd.randrange(3)]}".encode(), None) for _ in range(100_000)]
    def get(k, _f):
        return txn.get(k)
clock = time.perf_counter_ns
lat = []
for k, f in picks:
    t = clock()
    v = get(k, f)
    lat.append(clock() - t)
    assert v is not None
lat.sort()
print(" ".join(str(lat[int((len(lat) - 1) * p)]) for p in (0.5, 0.99, 0.999)), flush=True)
"""




def cgroup_parent() -> pathlib.Path:
    for line in pathlib.Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "memory":
            return pathlib.Path("/sys/fs/cgroup/memory") / path.lstrip("/")
        if controllers == "":
            return pathlib.Path("/sys/fs/cgroup") / path.lstrip("/")
    raise SystemExit("no memory cgroup")


def evict(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run_limited(side: str, root: str, docs: int, limit: int):
    group = cgroup_parent() / f"ikv-bench-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        v1 = (group / "memory.limit_in_bytes").exists()
        (group / ("memory.limit_in_bytes" if v1 else "memory.max")).write_text(str(limit))
        done = subprocess.run(
            ["sh", "-c", f"echo $$ > {group}/cgroup.procs && exec \"$@\"", "sh",
             sys.executable, "-c", READER, side, root, str(docs)],
            capture_output=True, text=True, timeout=1800,
        )
        peak_file = group / ("memory.max_usage_in_bytes" if v1 else "memory.peak")
        peak = int(peak_file.read_text()) if peak_file.exists() else 0
    finally:
        group.rmdir()
    if done.returncode != 0:
        return None, peak, done.returncode, done.stderr[-500:]
    p50, p99, p999 = (int(x) / 1000 for x in done.stdout.split())
    return (p50, p99, p999), peak, 0, ""


def main() -> None:
    docs = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    root = tempfile.mkdtemp(prefix="ikv-limitbench-")
    options = (
        ClientOptionsBuilder().with_store_name("bench").with_storage_url(f"file://{root}/bucket")
        .with_mount_directory(f"{root}/mount").build()
    )
    dataset.build(root, docs, options)
    owner = create_new_reader(options)
    owner.startup()
    image = next(pathlib.Path(root, "mount", "bench").glob("image-*"))
    lmdb_file = pathlib.Path(root, "lmdb", "data.mdb")
    rows = []
    for side, path in (("ikv", image), ("lmdb", lmdb_file), ("lmdb-random", lmdb_file)):
        # Bytes on disk (LMDB's file is sparse up to its map size).
        size = min(path.stat().st_size, path.stat().st_blocks * 512)
        limit = size // 2
        evict(path)
        rows.append((side, size, limit) + run_limited(side, root, docs, limit))
    owner.shutdown()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; {docs:,} documents; "
          "each reader process in a memory cgroup limited to half its store file, from a cold page cache")
    print("| side | store file | cgroup limit | get p50 / p99 / p99.9 (µs) | cgroup peak | exit |")
    print("|---|---|---|---|---|---|")
    for side, size, limit, lat, peak, code, err in rows:
        name = {
            "ikv": "ikvpy (attached reader, read image)",
            "lmdb": "py-lmdb (default: readahead on)",
            "lmdb-random": "py-lmdb, readahead=False",
        }[side]
        figures = " / ".join(f"{x:.1f}" for x in lat) if lat else f"failed: {err!r}"
        print(f"| {name} | {size/1e6:.0f} MB | {limit/1e6:.0f} MB | {figures} | {peak/1e6:.0f} MB | {code} |")


if __name__ == "__main__":
    main()

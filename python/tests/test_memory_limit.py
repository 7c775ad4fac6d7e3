"""A store larger than the memory a reader process is given, as an ML worker meets it: this
process owns the mount (it bootstraps it), then the host's page cache of the read image is
dropped, and a reader process in a memory cgroup (v1 or v2) limited to less than half the
image's size attaches and reads every document in random order. Reads stay correct, nothing
is OOM-killed, and the cgroup's limit was really reached (pages of the shared copy were
reclaimed and read back from disk)."""

import os
import pathlib
import subprocess
import sys
import textwrap
import uuid

import pytest

from ikvpy import admin
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.factory import create_new_reader, create_new_writer

DOCS = 250_000
VALUE = 256  # 64 MB of values; the read image is about 70 MB
LIMIT = 32 << 20


def memory_cgroup_parent() -> pathlib.Path:
    """This process's memory cgroup directory (v1 controller or v2 unified)."""
    for line in pathlib.Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "memory":
            return pathlib.Path("/sys/fs/cgroup/memory") / path.lstrip("/")
        if controllers == "" and pathlib.Path("/sys/fs/cgroup/cgroup.controllers").exists():
            return pathlib.Path("/sys/fs/cgroup") / path.lstrip("/")
    pytest.fail("no memory cgroup found for this process")


READER = """
import random, sys
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.factory import create_new_reader
store, url, mount, docs, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
options = (ClientOptionsBuilder().with_store_name(store).with_storage_url(url)
           .with_mount_directory(mount).build())
with create_new_reader(options) as reader:
    assert reader.status()[0]["owns_mount"] is False
    order = list(range(docs))
    random.Random(7).shuffle(order)
    for i in order:
        v = reader.get_bytes_value(f"k{i:06d}", "v")
        assert v == bytes([i % 251]) * size, f"document {i} read wrong"
print("READ-ALL-OK", flush=True)
"""


def test_a_store_twice_the_memory_limit_reads_correctly_without_oom(local_storage, tmp_path):
    if os.geteuid() != 0:
        pytest.fail("this test needs root to make a memory cgroup (CI runs as root)")
    name = f"big-{uuid.uuid4().hex[:6]}"
    admin.create_store(name, "id", storage_url=local_storage.url)
    options = ClientOptionsBuilder().with_store_name(name).with_storage_url(local_storage.url).build()
    with create_new_writer(options) as writer:
        for start in range(0, DOCS, 1000):
            writer.upsert_fields_batch([
                IKVDocumentBuilder().put_string_field("id", f"k{i:06d}").put_bytes_field("v", bytes([i % 251]) * VALUE).build()
                for i in range(start, start + 1000)
            ])
    admin.run_snapshot(name, storage_url=local_storage.url)
    mount = tmp_path / "mount"
    owner = create_new_reader(
        ClientOptionsBuilder().with_store_name(name).with_storage_url(local_storage.url)
        .with_mount_directory(str(mount)).build()
    )
    owner.startup()
    images = list((mount / name).glob("image-*"))
    assert len(images) == 1 and images[0].stat().st_size > 2 * LIMIT, images
    # Evict the image from the page cache (its pages are clean: the image is synced), so the
    # reader below reads it from disk under its own limit.
    fd = os.open(images[0], os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)

    group = memory_cgroup_parent() / f"ikv-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        v1 = (group / "memory.limit_in_bytes").exists()
        (group / ("memory.limit_in_bytes" if v1 else "memory.max")).write_text(str(LIMIT))
        if v1 and (group / "memory.memsw.limit_in_bytes").exists():
            (group / "memory.memsw.limit_in_bytes").write_text(str(LIMIT))
        script = f"echo $$ > {group}/cgroup.procs && exec \"$@\""
        done = subprocess.run(
            ["sh", "-c", script, "sh", sys.executable, "-c", textwrap.dedent(READER),
             name, local_storage.url, str(mount), str(DOCS), str(VALUE)],
            capture_output=True, text=True, timeout=600,
        )
        assert done.returncode == 0 and "READ-ALL-OK" in done.stdout, (
            f"exit {done.returncode} (-9: OOM-killed)\nstdout: {done.stdout}\nstderr: {done.stderr[-4000:]}"
        )
        if v1:
            hit = int((group / "memory.failcnt").read_text())
        else:
            events = dict(line.split() for line in (group / "memory.events").read_text().splitlines())
            hit = int(events.get("max", "0")) + int(events.get("high", "0"))
        peak_file = group / ("memory.max_usage_in_bytes" if v1 else "memory.peak")
        peak = int(peak_file.read_text()) if peak_file.exists() else 0
        # Held at its limit (the kernel reclaimed pages of the image to stay under it).
        assert hit > 0 or peak >= LIMIT - (1 << 20), (
            f"the limit was never reached (peak {peak} bytes): the test did not exercise a store "
            "larger than memory"
        )
    finally:
        group.rmdir()
        owner.shutdown()

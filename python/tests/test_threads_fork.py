"""Threads and fork: no call hangs, races with startup/shutdown fail at once with
IKVRuntimeError, a forked child exits, shuts down, writes and starts new writers.

Each scenario runs in its own interpreter with a deadline, so a deadlock fails the test
instead of hanging the run."""

import os
import pathlib
import subprocess
import sys
import textwrap
import uuid

import pytest

from ikvpy import admin

DEADLINE_S = 120

PRELUDE = """
import os, sys, threading, time
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.errors import IKVRuntimeError
from ikvpy.factory import create_new_reader, create_new_writer

STORE, URL, MOUNT = sys.argv[1], sys.argv[2], sys.argv[3]
STORAGE_OPTIONS = dict(a.split("=", 1) for a in sys.argv[4:])

def options(mount=MOUNT, poll=0.01):
    b = (ClientOptionsBuilder().with_store_name(STORE).with_storage_url(URL)
         .with_mount_directory(mount).with_poll_interval(poll))
    for k, v in STORAGE_OPTIONS.items():
        b = b.with_storage_option(k, v)
    return b.build()

def doc(key, **fields):
    b = IKVDocumentBuilder().put_string_field("id", key)
    for name, value in fields.items():
        b.put_string_field(name, value)
    return b.build()

def wait_for(predicate, timeout=30.0):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "condition not reached in time"
        time.sleep(0.005)

def wait_child(pid, timeout=60.0):
    # The child's exit status, or a failure (and the child killed) when it hangs.
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child hung")
"""


def run_scenario(body: str, store: str, url: str, mount: pathlib.Path, storage_options=None) -> str:
    script = PRELUDE + textwrap.dedent(body) + "\nprint('SCENARIO-OK', flush=True)\n"
    args = [sys.executable, "-c", script, store, url, str(mount)]
    args += [f"{k}={v}" for k, v in (storage_options or {}).items()]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=DEADLINE_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the scenario hung (deadlock?) for {DEADLINE_S} s; output so far: {e.stdout!r} {e.stderr!r}")
    assert done.returncode == 0 and "SCENARIO-OK" in done.stdout, (
        f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    )
    return done.stdout


@pytest.fixture
def store(local_storage, tmp_path: pathlib.Path):
    name = f"t-{uuid.uuid4().hex[:8]}"
    admin.create_store(name, "id", num_partitions=2, storage_url=local_storage.url)
    return name, local_storage.url, tmp_path / "mount"


SEED = """
with create_new_writer(options()) as w:
    w.upsert_fields_batch([doc(f"k{i}", f="v" * 20) for i in range(5000)])
"""


def test_shutdown_while_another_thread_reads_returns_and_the_reads_fail_cleanly(store):
    run_scenario(
        SEED
        + """
reader = create_new_reader(options())
reader.startup()
keys = [f"k{i}" for i in range(5000)]
outcomes = []

def read_forever():
    while True:
        try:
            values = list(reader.multiget_string_values(str_primary_keys=keys, field_names=["f"]))
            assert values[0] == "v" * 20
            reader.get_string_value("k1", "f")
        except IKVRuntimeError as e:
            outcomes.append(str(e))
            return

threads = [threading.Thread(target=read_forever) for _ in range(3)]
for t in threads:
    t.start()
time.sleep(0.3)
reader.shutdown()
for t in threads:
    t.join(30)
    assert not t.is_alive(), "a reading thread hung after shutdown"
assert len(outcomes) == 3 and all("shut down" in m for m in outcomes), outcomes

# Start again, leave through a with block while threads read: same.
outcomes.clear()
with create_new_reader(options()) as reader:
    threads = [threading.Thread(target=read_forever) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    reader.startup()  # a second startup while running: nothing to do, no wait
for t in threads:
    t.join(30)
    assert not t.is_alive()
assert len(outcomes) == 2
""",
        *store,
    )


def test_reads_and_status_during_startup_fail_at_once_and_startup_finishes(store):
    run_scenario(
        SEED
        + """
reader = create_new_reader(options())
seen = {"errors": 0, "values": 0}
stop = threading.Event()

def health_check():
    while not stop.is_set():
        try:
            reader.status()
            if reader.get_string_value("k7", "f") is not None:
                seen["values"] += 1
        except IKVRuntimeError as e:
            assert "not started" in str(e) or "starting" in str(e), e
            seen["errors"] += 1

t = threading.Thread(target=health_check)
t.start()
time.sleep(0.05)
reader.startup()
wait_for(lambda: seen["values"] > 0)
stop.set()
t.join(30)
assert not t.is_alive()
assert seen["errors"] > 0, "the health check never ran before startup finished"

# A second startup racing the first from another thread fails at once, never waits.
reader.shutdown()
results = []
def start():
    try:
        reader.startup()
        results.append("started")
    except IKVRuntimeError as e:
        results.append(str(e))
threads = [threading.Thread(target=start) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join(60)
assert results.count("started") >= 1, results
assert all(r == "started" or "starting in another thread" in r for r in results), results
assert reader.get_string_value("k7", "f") == "v" * 20
reader.shutdown()
""",
        *store,
    )


FORK_CHILD_CASES = {
    "exits": "sys.exit(0)",
    "shuts_down": "reader.shutdown(); sys.exit(0)",
    "deletes": "del reader; import gc; gc.collect(); sys.exit(0)",
    "reads_and_sees_new_writes": """
assert reader.get_string_value("k1", "f") == "v" * 20
# Reopened in the child, attached to the parent's copy (the parent keeps polling).
statuses = reader.status()
assert all(s["owns_mount"] is False for s in statuses), statuses
with create_new_writer(options()) as w2:
    w2.upsert_fields(doc("written-after-fork", f="w"))
wait_for(lambda: reader.get_string_value("written-after-fork", "f") == "w")
reader.startup()  # already running here: nothing to do
sys.exit(0)
""",
    "writes_with_the_parents_writer": """
writer.upsert_fields(doc("from-child", f="c"))
sys.exit(0)
""",
    "starts_a_new_writer": """
with create_new_writer(options()) as w2:
    w2.upsert_fields(doc("from-new-child-writer", f="n"))
sys.exit(0)
""",
    "opens_its_own_reader": """
with create_new_reader(options(mount=MOUNT + "-child")) as own:
    assert own.get_string_value("k1", "f") == "v" * 20
sys.exit(0)
""",
}


@pytest.mark.parametrize("case", sorted(FORK_CHILD_CASES))
def test_a_forked_child_never_hangs(store, case):
    body = (
        f"CASE = {case!r}\n"
        + SEED
        + """
reader = create_new_reader(options())
reader.startup()
writer = create_new_writer(options())
writer.startup()
writer.upsert_fields(doc("before-fork", f="p"))
PARENT = os.getpid()
pid = os.fork()
if pid == 0:
    try:
"""
        + textwrap.indent(textwrap.dedent(FORK_CHILD_CASES[case]).strip(), " " * 8)
        + """
    except SystemExit:
        raise
    except BaseException:
        import traceback; traceback.print_exc()
        os._exit(2)
code = wait_child(pid)
assert code == 0, f"child exited with {code}"
# The parent still works, and sees what the child wrote.
writer.upsert_fields(doc("after-fork", f="a"))
wait_for(lambda: reader.get_string_value("after-fork", "f") == "a")
if "writer" in CASE:
    key = "from-child" if CASE == "writes_with_the_parents_writer" else "from-new-child-writer"
    wait_for(lambda: reader.get_string_value(key, "f") is not None)
reader.shutdown()
"""
    )
    run_scenario(body, *store)


def test_a_forked_child_writes_through_s3_with_the_parents_writer(s3_storage, tmp_path):
    name = f"t-{uuid.uuid4().hex[:8]}"
    admin.create_store(name, "id", storage_url=s3_storage.url, storage_options=s3_storage.options)
    run_scenario(
        """
with create_new_writer(options()) as writer:
    writer.upsert_fields(doc("parent", f="p"))
    pid = os.fork()
    if pid == 0:
        writer.upsert_fields(doc("child", f="c"))
        os._exit(0)
    assert wait_child(pid) == 0
    writer.upsert_fields(doc("parent-again", f="p"))
with create_new_reader(options()) as reader:
    for key in ("parent", "child", "parent-again"):
        assert reader.get_string_value(key, "f") is not None, key
""",
        name,
        s3_storage.url,
        tmp_path / "mount",
        s3_storage.options,
    )

"""Many reader processes on one mount: spawned and forked workers share one local copy, see
every write, survive the owner being killed (another process takes over), and readers and
options travel by pickle."""

import multiprocessing
import os
import pathlib
import pickle
import signal
import sys
import time
import uuid

import pytest

import mount_workers
from ikvpy import admin
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.errors import IKVRuntimeError
from ikvpy.factory import create_new_reader, create_new_writer
from test_threads_fork import run_scenario


@pytest.fixture
def store(local_storage, tmp_path: pathlib.Path):
    name = f"m-{uuid.uuid4().hex[:8]}"
    admin.create_store(name, "id", num_partitions=2, storage_url=local_storage.url)

    def options(mount: str = "mount", poll: float = 0.01):
        return (
            ClientOptionsBuilder().with_store_name(name).with_storage_url(local_storage.url)
            .with_mount_directory(str(tmp_path / mount)).with_poll_interval(poll).build()
        )

    return name, local_storage, tmp_path, options


def doc(key: str, value: str):
    return IKVDocumentBuilder().put_string_field("id", key).put_string_field("v", value).build()


def test_options_and_readers_pickle_to_their_configuration(store):
    _, _, _, options = store
    o = options()
    back = pickle.loads(pickle.dumps(o))
    assert vars(back) == vars(o)
    with create_new_writer(o) as writer:
        writer.upsert_fields(doc("a", "1"))
    idle = create_new_reader(o)
    with pytest.raises(IKVRuntimeError, match="not started"):
        pickle.loads(pickle.dumps(idle)).get_string_value("a", "v")
    with create_new_reader(o) as started:
        copy = pickle.loads(pickle.dumps(started))
        # Started in the sender: starts on first use here (attached to the same mount).
        assert copy.get_string_value("a", "v") == "1"
        assert copy.status()[0]["owns_mount"] is False
        copy.shutdown()


def test_eight_spawned_processes_share_a_mount_and_one_takes_over_from_a_killed_owner(store):
    _, _, _, options = store
    spawn = multiprocessing.get_context("spawn")
    with create_new_writer(options()) as writer:
        expected = {f"k{i:03d}": "0" for i in range(200)}
        writer.upsert_fields_batch([doc(k, v) for k, v in expected.items()])
        ready, stop = spawn.Event(), spawn.Event()
        owner = spawn.Process(target=mount_workers.hold_mount, args=(options(), ready, stop))
        owner.start()
        assert ready.wait(60), "the owner process did not open the mount"
        reader = create_new_reader(options())
        reader.startup()
        assert reader.status()[0]["owns_mount"] is False
        with spawn.Pool(8) as pool:
            for round_ in range(1, 11):
                for i in range(0, 200, 7):
                    expected[f"k{i:03d}"] = str(round_)
                writer.upsert_fields_batch([doc(f"k{i:03d}", str(round_)) for i in range(0, 200, 7)])
                if round_ == 3:
                    # Workers attach mid-stream (their reader arrives pickled, starts on use).
                    warm = [pool.apply_async(mount_workers.follow_until, (reader, {}, "v")) for _ in range(8)]
                    assert all(p.get(timeout=120)[0] == [] for p in warm)
                if round_ == 5:
                    os.kill(owner.pid, signal.SIGKILL)
                    owner.join(30)
            final = dict(expected)
            pending = [pool.apply_async(mount_workers.follow_until, (reader, final, "v")) for _ in range(8)]
            results = [p.get(timeout=120) for p in pending]
        keys = sorted(final)
        for got, _ in results:
            assert got == [final[k] for k in keys]
        mine = mount_workers.follow_until(reader, final, "v")
        assert mine[0] == [final[k] for k in keys]
        # The killed owner's lock went with it and the workers have exited: this process is
        # the last reader of the mount and takes it over.
        deadline = time.time() + 60
        while not reader.status()[0]["owns_mount"]:
            assert time.time() < deadline, "no process took the mount over"
            time.sleep(0.01)
        writer.upsert_fields(doc("last", "x"))
        deadline = time.time() + 60
        while reader.get_string_value("last", "v") != "x":
            assert time.time() < deadline, "the new owner does not poll"
            time.sleep(0.01)
        reader.shutdown()


FORKED_WORKERS = """
reader = create_new_reader(options())
reader.startup()
writer = create_new_writer(options())
writer.startup()
writer.upsert_fields_batch([doc(f"k{i}", v="0") for i in range(50)])
wait_for(lambda: reader.get_string_value("k49", "v") == "0")
children = {}
for n in range(8):
    pid = os.fork()
    if pid == 0:
        try:
            # Each child waits for a write made after the fork (it reopens attached to the
            # parent's copy), then exits, shuts its reader down, or writes.
            wait_for(lambda: reader.get_string_value("after", "v") == "1")
            assert reader.status()[0]["owns_mount"] is False
            # Everything else as written (the model of this scenario).
            keys = [f"k{i}" for i in range(50)]
            assert list(reader.multiget_string_values(str_primary_keys=keys, field_names=["v"])) == ["0"] * 50
            if n % 3 == 1:
                reader.shutdown()
            elif n % 3 == 2:
                with create_new_writer(options()) as w:
                    w.upsert_fields(doc(f"child{n}", v=str(n)))
            os._exit(0)
        except BaseException:
            import traceback; traceback.print_exc()
            os._exit(2)
    children[pid] = n
writer.upsert_fields(doc("after", v="1"))
for pid in children:
    assert wait_child(pid) == 0
for n in range(2, 8, 3):
    wait_for(lambda: reader.get_string_value(f"child{n}", "v") == str(n))
reader.shutdown()
"""


def test_eight_forked_workers_keep_seeing_new_writes(store):
    name, local_storage, tmp_path, _ = store
    run_scenario(FORKED_WORKERS, name, local_storage.url, tmp_path / "mount")

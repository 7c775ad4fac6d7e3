"""Point-in-time readers from Python: a reader built with ``with_checkpoint`` or ``with_as_of``
serves exactly that state beside a live reader on the same mount directory, after more writes,
deletes and snapshot passes; the builder refuses what names no point."""

import datetime
import pathlib
import time
from typing import Dict, Optional

import pytest

from ikvpy import admin
from ikvpy.client import IKVReader
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.errors import IKVTypeError, IKVValueError, StoreNotFoundError
from ikvpy.factory import create_new_reader, create_new_writer


def _doc(key: str, age: Optional[int] = None):
    b = IKVDocumentBuilder().put_string_field("id", key)
    if age is not None:
        b.put_int64_field("age", age)
    return b.build()


def _ages(reader: IKVReader, keys) -> Dict[str, int]:
    got = {}
    for k in keys:
        age = reader.get_int64_value(k, "age")
        if age is not None:
            got[k] = age
    return got


def _started(options) -> IKVReader:
    reader = create_new_reader(options)
    reader.startup()
    return reader


def _builder(url: str, mount: pathlib.Path) -> ClientOptionsBuilder:
    return ClientOptionsBuilder().with_store_name("pit").with_storage_url(url).with_mount_directory(str(mount))


def test_pinned_readers_serve_their_point_beside_the_live_one(local_storage, tmp_path: pathlib.Path) -> None:
    url = local_storage.url
    admin.create_store("pit", "id", num_partitions=2, storage_url=url)
    mount = tmp_path / "mount"
    keys = [f"k{i:03}" for i in range(200)] + ["late"]
    now: Dict[str, int] = {}
    with create_new_writer(_builder(url, mount).build()) as writer:
        writer.upsert_fields_batch([_doc(k, age=i) for i, k in enumerate(keys[:200])])
        now.update({k: i for i, k in enumerate(keys[:200])})
        admin.run_snapshot("pit", storage_url=url)
        for k in keys[:200:3]:
            writer.upsert_fields(_doc(k, age=-1))
            now[k] = -1
        admin.create_checkpoint("pit", "eval-1", storage_url=url)
        at_checkpoint = dict(now)
        time.sleep(0.05)
        as_of = datetime.datetime.now(datetime.timezone.utc)
        time.sleep(0.05)
        for k in keys[:200:4]:
            writer.delete_document(_doc(k))
            now.pop(k)
        writer.upsert_fields(_doc("late", age=7))
        now["late"] = 7
        admin.run_snapshot("pit", storage_url=url)

    live = _started(_builder(url, mount).build())
    by_name = _started(_builder(url, mount).with_checkpoint("eval-1").build())
    by_time = _started(_builder(url, mount).with_as_of(as_of).build())
    try:
        assert _ages(live, keys) == now
        assert _ages(by_name, keys) == at_checkpoint
        assert _ages(by_time, keys) == at_checkpoint
        # The live reader follows a new write; the pinned ones stay where they are.
        with create_new_writer(_builder(url, mount).build()) as writer:
            writer.upsert_fields(_doc("k001", age=1001))
        deadline = time.monotonic() + 30
        while live.get_int64_value("k001", "age") != 1001:
            assert time.monotonic() < deadline, "the live reader never saw the write"
            time.sleep(0.02)
        assert _ages(by_name, keys) == at_checkpoint
        assert _ages(by_time, keys) == at_checkpoint
    finally:
        for r in (live, by_name, by_time):
            r.shutdown()
    # The live copy beside one copy per point (the checkpoint and the time name the same one).
    names = sorted(p.name for p in mount.iterdir())
    assert names[0] == "pit" and len(names) == 2 and names[1].startswith("pit@"), names

    with pytest.raises(StoreNotFoundError, match="no checkpoint \"nope\""):
        _started(_builder(url, mount).with_checkpoint("nope").build())


def test_the_builder_refuses_what_names_no_point(tmp_path: pathlib.Path) -> None:
    b = _builder("file:///nowhere", tmp_path)
    with pytest.raises(IKVValueError, match="not both"):
        b.with_checkpoint("a").with_as_of(datetime.datetime.now(datetime.timezone.utc))
    with pytest.raises(IKVValueError, match="not both"):
        _builder("file:///nowhere", tmp_path).with_as_of(datetime.datetime.now(datetime.timezone.utc)).with_checkpoint("a")
    with pytest.raises(IKVValueError, match="timezone-aware"):
        _builder("file:///nowhere", tmp_path).with_as_of(datetime.datetime.now())
    with pytest.raises(IKVTypeError, match="datetime"):
        _builder("file:///nowhere", tmp_path).with_as_of(1700000000)  # type: ignore[arg-type]
    with pytest.raises(IKVValueError, match="before 1970"):
        _builder("file:///nowhere", tmp_path).with_as_of(datetime.datetime(1969, 1, 1, tzinfo=datetime.timezone.utc))
    with pytest.raises(IKVValueError, match="checkpoint name"):
        _builder("file:///nowhere", tmp_path).with_checkpoint("  ")
    options = _builder("file:///nowhere", tmp_path).with_checkpoint("cp").build()
    assert options.checkpoint == "cp" and options.as_of_ms is None
    assert "checkpoint='cp'" in repr(options)

"""Times to live from Python: a store default and per-write TTLs (0: never) decide what every
reader serves — judged here by point-in-time readers placed before and after each expiry, so
no test waits for a clock — before and after a snapshot pass; bad TTLs are refused by name."""

import datetime
import pathlib
from typing import Dict, Optional

import pytest

from ikvpy import admin
from ikvpy.client import IKVReader
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.errors import IKVTypeError, IKVValueError
from ikvpy.factory import create_new_reader, create_new_writer


def _doc(key: str, v: int):
    return IKVDocumentBuilder().put_string_field("id", key).put_int64_field("v", v).build()


def _builder(url: str, mount: pathlib.Path) -> ClientOptionsBuilder:
    return ClientOptionsBuilder().with_store_name("ttl").with_storage_url(url).with_mount_directory(str(mount))


def _served(url: str, mount: pathlib.Path, at: Optional[datetime.datetime], keys_outlive: bool = False) -> Dict[str, Optional[int]]:
    """What a reader (pinned to ``at``, if given) serves of ``v``; its scan must agree, and
    unless ``keys_outlive`` (imported keys never expire) a document whose values all expired
    is not scanned at all."""
    builder = _builder(url, mount)
    if at is not None:
        builder = builder.with_as_of(at)
    reader: IKVReader = create_new_reader(builder.build())
    reader.startup()
    try:
        got = {k: reader.get_int64_value(k, "v") for k in ["default", "short", "never", "long", "b1", "b2"]}
        scanned = {bytes(b["_ikv_key"][i].as_py()).decode(): b["v"][i].as_py() for b in reader.scan(["v"]) for i in range(b.num_rows)}
        if keys_outlive:
            scanned = {k: v for k, v in scanned.items() if v is not None}
        assert scanned == {k: v for k, v in got.items() if v is not None}, "a scan serves what gets serve"
        return got
    finally:
        reader.shutdown()


def test_values_expire_by_the_store_default_and_their_own_ttl(local_storage, tmp_path: pathlib.Path) -> None:
    url = local_storage.url
    admin.create_store("ttl", "id", num_partitions=2, storage_url=url, ttl_seconds=3600)
    mount = tmp_path / "mount"
    written = datetime.datetime.now(datetime.timezone.utc)
    with create_new_writer(_builder(url, mount).build()) as writer:
        writer.upsert_fields(_doc("default", 1))
        writer.upsert_fields(_doc("short", 2), ttl_seconds=60)
        writer.upsert_fields(_doc("never", 3), ttl_seconds=0)
        writer.upsert_fields(_doc("long", 4), ttl_seconds=7200)
        writer.upsert_fields_batch([_doc("b1", 5), _doc("b2", 6)], ttl_seconds=60)
    everything = {"default": 1, "short": 2, "never": 3, "long": 4, "b1": 5, "b2": 6}
    after = lambda s: written + datetime.timedelta(seconds=s)  # noqa: E731
    expected = [
        (None, everything),
        (after(120), {**everything, "short": None, "b1": None, "b2": None}),
        (after(3700), {"default": None, "short": None, "never": 3, "long": 4, "b1": None, "b2": None}),
        (after(7300), {"default": None, "short": None, "never": 3, "long": None, "b1": None, "b2": None}),
    ]
    for at, want in expected:
        assert _served(url, mount, at) == want, f"at {at}"
    # From a snapshot (the expiries travel in it) the same, and read straight from the bucket
    # (what read_ikv's tasks do) judged at the same times.
    admin.run_snapshot("ttl", storage_url=url)
    for at, want in expected:
        assert _served(url, tmp_path / "fresh", at) == want, f"at {at}, from the snapshot"
        assert _read_from_bucket(url, at) == {k: v for k, v in want.items() if v is not None}, f"at {at}, from the bucket"


def _read_from_bucket(url: str, at: Optional[datetime.datetime]) -> Dict[str, int]:
    import pyarrow as pa

    from ikvpy import _internal

    at_ms = int((at or datetime.datetime.now(datetime.timezone.utc)).timestamp() * 1000)
    tips = _internal.store_tips("ttl", url, None)
    got: Dict[str, int] = {}
    for partition, tip in enumerate(tips):
        read = _internal.NativePartitionRead("ttl", partition, tip, ["v"], url, None, 1024, None, at_ms)
        while (batch := read.next_batch()) is not None:
            b = pa.record_batch(batch)
            got.update({bytes(k.as_py()).decode(): v.as_py() for k, v in zip(b["_ikv_key"], b["v"])})
    return got


def test_bad_ttls_are_refused_by_name(local_storage, tmp_path: pathlib.Path) -> None:
    url = local_storage.url
    for bad, error in [(0, IKVValueError), (-1, IKVValueError), (True, IKVTypeError), (1.5, IKVTypeError), (10**12, IKVValueError)]:
        with pytest.raises(error, match="ttl_seconds"):
            admin.create_store("ttl", "id", storage_url=url, ttl_seconds=bad)
    admin.create_store("ttl", "id", storage_url=url)
    with create_new_writer(_builder(url, tmp_path / "m").build()) as writer:
        for bad, error in [(-1, IKVValueError), (True, IKVTypeError), ("60", IKVTypeError), (10**12, IKVValueError)]:
            with pytest.raises(error, match="ttl_seconds"):
                writer.upsert_fields(_doc("a", 1), ttl_seconds=bad)
            with pytest.raises(error, match="ttl_seconds"):
                writer.upsert_fields_batch([_doc("a", 1)], ttl_seconds=bad)
        writer.upsert_fields(_doc("a", 1), ttl_seconds=0)
    reader = create_new_reader(_builder(url, tmp_path / "m").with_as_of(datetime.datetime(2200, 1, 1, tzinfo=datetime.timezone.utc)).build())
    reader.startup()
    try:
        assert reader.get_int64_value("a", "v") == 1, "ttl_seconds=0: never expires, nothing refused was written"
        assert reader.get_int64_value("b", "v") is None
    finally:
        reader.shutdown()


def test_event_times_order_writes_whatever_the_commit_order(local_storage, tmp_path: pathlib.Path) -> None:
    url = local_storage.url
    admin.create_store("ttl", "id", num_partitions=2, storage_url=url)
    t = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.timezone.utc)
    us = lambda d: (d - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)) // datetime.timedelta(microseconds=1)  # noqa: E731
    hour = datetime.timedelta(hours=1)
    with create_new_writer(_builder(url, tmp_path / "m").build()) as writer:
        writer.upsert_fields(_doc("default", 2), event_time=t)
        writer.upsert_fields(_doc("default", 1), event_time=t - hour)  # a backfill: older, ignored
        writer.upsert_fields(_doc("default", 0))  # no event time: commit order, as always
        writer.upsert_fields(_doc("default", 7), event_time=t - 100 * hour)  # over a value without one
        writer.upsert_fields(_doc("short", 1), event_time=us(t))
        writer.upsert_fields(_doc("short", 5), event_time=t)  # the same instant: commit order
        writer.upsert_fields(_doc("never", 1))
        writer.upsert_fields(_doc("never", 3), event_time=t - 100 * hour)  # any event time beats none
        writer.upsert_fields_batch([_doc("long", 4), _doc("b1", 9)], event_time=t + hour)
        writer.upsert_fields_batch([_doc("long", 8), _doc("b1", 7)], event_time=t)  # older: ignored
        writer.upsert_fields(_doc("b2", 6), event_time=-1)  # before 1970 is a time too
        for bad, error in [("noon", IKVTypeError), (True, IKVTypeError), (1.5, IKVTypeError), (2**63, IKVValueError)]:
            with pytest.raises(error, match="event_time"):
                writer.upsert_fields(_doc("x", 1), event_time=bad)
        with pytest.raises(IKVValueError, match="timezone-aware"):
            writer.upsert_fields(_doc("x", 1), event_time=datetime.datetime(2026, 1, 1))
    want = {"default": 7, "short": 5, "never": 3, "long": 4, "b1": 9, "b2": 6}
    assert _served(url, tmp_path / "m", None) == want
    admin.run_snapshot("ttl", storage_url=url)
    assert _served(url, tmp_path / "fresh", None) == want, "from the snapshot"
    # Later writes are still weighed against what the snapshot holds.
    with create_new_writer(_builder(url, tmp_path / "m").build()) as writer:
        writer.upsert_fields(_doc("default", 1), event_time=t - 101 * hour)  # older than 7's
        writer.upsert_fields(_doc("long", 10), event_time=t + 2 * hour)
    assert _served(url, tmp_path / "fresh2", None) == {**want, "long": 10}


def test_imported_rows_carry_their_times(local_storage, tmp_path: pathlib.Path) -> None:
    import pyarrow as pa

    from ikvpy import bulk

    url = local_storage.url
    admin.create_store("ttl", "id", num_partitions=2, storage_url=url, ttl_seconds=3600)
    written = datetime.datetime.now(datetime.timezone.utc)
    table = pa.table(
        {
            "id": ["default", "short", "never", "long", "b1", "b2"],
            "v": pa.array([1, 2, 3, 4, 5, 6], pa.int64()),
            "_ikv_ttl_seconds": pa.array([None, 60, 0, 7200, 60, 60], pa.int32()),
            "_ikv_event_time_us": pa.array([None, None, None, None, 100, None], pa.int64()),
        }
    )
    receipt = bulk.import_arrow(table, "ttl", storage_url=url)
    assert receipt.documents == 6
    after = lambda s: written + datetime.timedelta(seconds=s)  # noqa: E731
    everything = {"default": 1, "short": 2, "never": 3, "long": 4, "b1": 5, "b2": 6}
    assert _served(url, tmp_path / "m", None, True) == everything
    assert _served(url, tmp_path / "m", after(120), True) == {**everything, "short": None, "b1": None, "b2": None}
    assert _served(url, tmp_path / "m", after(3700), True) == {
        k: (3 if k == "never" else 4 if k == "long" else None) for k in everything
    }
    # The imported event time weighs later writes: an older one is ignored; a value imported
    # without one is replaced by any.
    with create_new_writer(_builder(url, tmp_path / "m").build()) as writer:
        writer.upsert_fields(_doc("b1", 50), event_time=99, ttl_seconds=0)
        writer.upsert_fields(_doc("b2", 60), event_time=1, ttl_seconds=0)
    assert _served(url, tmp_path / "later", None, True) == {**everything, "b2": 60}
    admin.run_snapshot("ttl", storage_url=url)
    assert _served(url, tmp_path / "fresh", None, True) == {**everything, "b2": 60}, "from the snapshot"
    with pytest.raises(Exception, match="_ikv_ttl_seconds"):
        bulk.import_arrow(pa.table({"id": ["x"], "_ikv_ttl_seconds": ["soon"]}), "ttl", storage_url=url)

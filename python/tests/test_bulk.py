"""Bulk imports from Python: pyarrow tables, pandas frames and Parquet files (local and on
the S3 emulator), both modes, a running reader switching to the import in one step, bad
input refused before anything is written, retries, and snapshots of imported data read by
pandas and DuckDB."""

import pathlib
import time
import uuid
from typing import Any, Callable

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import ikvpy.client as ikv_client
import ikvpy.document as ikv_document
import ikvpy.factory as ikv_factory
from ikvpy import admin, bulk
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.errors import IKVTypeError, IKVValueError


def open_reader(storage, store: str, mount: pathlib.Path) -> ikv_client.IKVReader:
    b = (
        ClientOptionsBuilder()
        .with_account_id("acct")
        .with_account_passkey("pass")
        .with_store_name(store)
        .with_mount_directory(str(mount))
        .with_storage_url(storage.url)
        .with_poll_interval(0.01)
    )
    for k, v in storage.options.items():
        b = b.with_storage_option(k, v)
    reader = ikv_factory.create_new_reader(b.build())
    reader.startup()
    return reader


def open_writer(storage, store: str) -> ikv_client.IKVWriter:
    b = ClientOptionsBuilder().with_account_id("acct").with_account_passkey("pass").with_store_name(store).with_storage_url(storage.url)
    for k, v in storage.options.items():
        b = b.with_storage_option(k, v)
    writer = ikv_factory.create_new_writer(b.build())
    writer.startup()
    return writer


def eventually(what: str, check: Callable[[], Any]) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def wait_for(reader: ikv_client.IKVReader, receipt: bulk.ImportReceipt) -> None:
    """Until the reader has applied every partition's import delta."""
    wanted = {c.partition: c.sequence for c in receipt.commits}
    eventually(
        "the import is applied",
        lambda: all(s["applied_sequence"] >= wanted.get(s["partition"], 0) for s in reader.status()),
    )


def people() -> pa.Table:
    return pa.table(
        {
            "id": ["alice", "bob", "carol", "alice"],
            "age": pa.array([30, 41, None, None], type=pa.int32()),
            "score": pa.array([0.5, None, 2.25, 1.5], type=pa.float32()),
            "city": ["Oslo", None, "Pune", "Lima"],
            "photo": pa.array([b"\x00\xff", None, b"c", None], type=pa.binary()),
            "active": [True, False, None, None],
        }
    )


def test_import_arrow_upsert_then_replace_seen_by_a_running_reader(local_storage, tmp_path: pathlib.Path) -> None:
    admin.create_store("people", "id", num_partitions=3, storage_url=local_storage.url)
    writer = open_writer(local_storage, "people")
    writer.upsert_fields(ikv_document.IKVDocumentBuilder().put_string_field("id", "dave").put_string_field("keep", "yes").build())
    writer.upsert_fields(ikv_document.IKVDocumentBuilder().put_string_field("id", "alice").put_string_field("nick", "al").build())
    reader = open_reader(local_storage, "people", tmp_path / "mount")
    try:
        receipt = bulk.import_arrow(people(), "people", storage_url=local_storage.url)
        assert receipt.rows == 4 and receipt.documents == 3
        assert all(not c.earlier for c in receipt.commits)
        wait_for(reader, receipt)
        # Upsert: union with what was there; per column the last non-null value wins.
        assert reader.get_value("alice", "nick") == "al"
        assert reader.get_value("alice", "age") == 30
        assert reader.get_value("alice", "city") == "Lima"
        assert reader.get_value("alice", "score") == 1.5
        assert reader.get_value("alice", "photo") == b"\x00\xff"
        assert reader.get_value("bob", "age") == 41 and reader.get_value("bob", "score") is None
        assert reader.get_value("bob", "active") is False
        assert reader.get_value("dave", "keep") == "yes"

        # Replace, from pandas: the documents become exactly the imported ones.
        frame = pd.DataFrame({"id": ["erin", "bob"], "age": [25, 42]})
        replaced = bulk.import_arrow(frame, "people", mode="replace", storage_url=local_storage.url)
        assert sorted(c.partition for c in replaced.commits) == [0, 1, 2], "replace commits every partition"
        wait_for(reader, replaced)
        assert reader.get_value("erin", "age") == 25
        assert reader.get_value("bob", "age") == 42
        assert reader.get_value("bob", "city") is None, "replace keeps no old field"
        for gone in ("alice", "carol", "dave"):
            assert reader.get_value(gone, "id") is None, gone
        # Writes after the import apply on top of it.
        writer.upsert_fields(ikv_document.IKVDocumentBuilder().put_string_field("id", "erin").put_string_field("city", "Rome").build())
        eventually("a later write is visible", lambda: reader.get_value("erin", "city") == "Rome")
        assert reader.get_value("erin", "age") == 25
    finally:
        reader.shutdown()
        writer.shutdown()


def test_write_runs_in_parts_then_commit_once_and_retry(local_storage, tmp_path: pathlib.Path) -> None:
    admin.create_store("parts", "id", num_partitions=2, storage_url=local_storage.url)
    import_id = bulk.new_import_id()
    first = bulk.write_runs(pa.table({"id": ["a", "b"], "v": [1, 2]}), "parts", import_id=import_id, storage_url=local_storage.url)
    second = bulk.write_runs(pa.table({"id": ["b", "c"], "v": [20, 30]}), "parts", import_id=import_id, storage_url=local_storage.url)
    receipt = bulk.commit_runs([first, second], "parts", storage_url=local_storage.url)
    assert receipt.import_id == import_id and receipt.rows == 4
    again = bulk.commit_runs([first, second], "parts", storage_url=local_storage.url)
    assert all(c.earlier for c in again.commits)
    assert [(c.partition, c.sequence) for c in again.commits] == [(c.partition, c.sequence) for c in receipt.commits]
    reader = open_reader(local_storage, "parts", tmp_path / "mount")
    try:
        assert [reader.get_value(k, "v") for k in ("a", "b", "c")] == [1, 20, 30], "the later part wins"
    finally:
        reader.shutdown()
    with pytest.raises(IKVValueError, match="cannot join"):
        other = bulk.write_runs(pa.table({"id": ["z"]}), "parts", import_id="other", storage_url=local_storage.url)
        bulk.commit_runs([first, other], "parts", storage_url=local_storage.url)


def test_an_import_over_its_memory_budget_lands_as_several_runs_equal_to_one(local_storage, tmp_path: pathlib.Path) -> None:
    admin.create_store("budget", "id", num_partitions=2, storage_url=local_storage.url)
    n = 30_000
    # Every key twice, the second half's rows later: the later value must win across runs.
    table = pa.table(
        {
            "id": [f"k{i % (n // 2):06d}" for i in range(n)],
            "v": list(range(n)),
            "pad": ["x" * 40] * n,
        }
    )
    receipt = bulk.import_arrow(pa.Table.from_batches(table.to_batches(max_chunksize=1000)), "budget", memory_budget="1MiB", storage_url=local_storage.url)
    assert receipt.rows == n
    assert receipt.runs >= 4, f"a 1 MiB budget writes several runs per partition: {receipt.runs}"
    reader = open_reader(local_storage, "budget", tmp_path / "mount")
    try:
        wait_for(reader, receipt)
        for i in (0, 1, 7_777, n // 2 - 1):
            assert reader.get_value(f"k{i:06d}", "v") == i + n // 2, i
    finally:
        reader.shutdown()


def test_bad_input_is_refused_and_writes_nothing(local_storage, tmp_path: pathlib.Path) -> None:
    admin.create_store("strict", "id", storage_url=local_storage.url)
    bucket = pathlib.Path(local_storage.url[len("file://"):]) / "strict"
    cases = [
        (pa.table({"user": ["x"]}), IKVValueError, 'no column "id"'),
        (pa.table({"id": ["x", None]}), IKVValueError, "row 1: the key column \"id\" is null"),
        (pa.table({"id": ["x"], "when": pa.array([1], type=pa.timestamp("ms"))}), IKVValueError, "cannot store; cast it"),
        (pa.table({"id": ["x"], "tags": [["a", "b"]]}), IKVValueError, "cannot store"),
        (pa.table({"id": ["x"], "_ikv_x": [1]}), IKVValueError, "reserved"),
        ({"id": ["x"]}, IKVTypeError, "cannot import a dict"),
    ]
    for data, error, words in cases:
        with pytest.raises(error, match=words):
            bulk.import_arrow(data, "strict", storage_url=local_storage.url)
    with pytest.raises(IKVValueError, match="mode must be"):
        bulk.import_arrow(pa.table({"id": ["x"]}), "strict", mode="merge", storage_url=local_storage.url)
    with pytest.raises(IKVValueError, match="import id"):
        bulk.import_arrow(pa.table({"id": ["x"]}), "strict", import_id="../x", storage_url=local_storage.url)
    with pytest.raises(IKVValueError, match='memory budget "lots"'):
        bulk.import_arrow(pa.table({"id": ["x"]}), "strict", memory_budget="lots", storage_url=local_storage.url)
    with pytest.raises(IKVValueError, match="below the smallest"):
        bulk.import_parquet(tmp_path, "strict", memory_budget=1000, storage_url=local_storage.url)
    with pytest.raises(IKVTypeError, match="memory_budget must be"):
        bulk.import_arrow(pa.table({"id": ["x"]}), "strict", memory_budget=1.5, storage_url=local_storage.url)
    with pytest.raises(IKVValueError, match="no .parquet files"):
        (tmp_path / "empty").mkdir()
        bulk.import_parquet(tmp_path / "empty", "strict", storage_url=local_storage.url)
    assert sorted(p.name for p in bucket.iterdir()) == ["store.json"], "nothing written but the store"


def test_parquet_from_a_directory_and_from_s3_then_snapshots_read_by_pandas_and_duckdb(s3_storage, tmp_path: pathlib.Path) -> None:
    store = f"feat-{uuid.uuid4().hex[:6]}"
    admin.create_store(store, "id", num_partitions=2, storage_url=s3_storage.url, storage_options=s3_storage.options)
    local = tmp_path / "input"
    local.mkdir()
    pq.write_table(pa.table({"id": [f"u{i}" for i in range(0, 500)], "x": list(range(0, 500))}), local / "part-0.parquet")
    pq.write_table(pa.table({"id": [f"u{i}" for i in range(500, 1000)], "x": list(range(500, 1000))}), local / "part-1.parquet")
    receipt = bulk.import_parquet(local, store, storage_url=s3_storage.url, storage_options=s3_storage.options)
    assert receipt.rows == 1000 and receipt.documents == 1000
    # The same shape from the bucket itself, replacing: x becomes 2x.
    opts = s3_storage.options
    fs = pafs.S3FileSystem(
        endpoint_override=opts["aws_endpoint"], access_key=opts["aws_access_key_id"], secret_key=opts["aws_secret_access_key"], region=opts["aws_region"], scheme="http"
    )
    prefix = s3_storage.url[len("s3://"):] + "/input"
    pq.write_table(pa.table({"id": [f"u{i}" for i in range(1000)], "x": [2 * i for i in range(1000)]}), f"{prefix}/all.parquet", filesystem=fs)
    bulk.import_parquet(
        f"s3://{prefix}/", store, mode="replace", storage_url=s3_storage.url, storage_options=s3_storage.options, source_options=s3_storage.options
    )
    reader = open_reader(s3_storage, store, tmp_path / "mount")
    try:
        assert reader.get_value("u7", "x") == 14
        assert reader.get_value("u999", "x") == 1998
    finally:
        reader.shutdown()
    admin.run_snapshot(store, storage_url=s3_storage.url, storage_options=s3_storage.options)
    files = [
        info.path
        for info in fs.get_file_info(pafs.FileSelector(s3_storage.url[len("s3://"):] + f"/{store}", recursive=True))
        if info.path.endswith(".parquet") and "/snapshots/" in info.path
    ]
    # Each partition's newest snapshot: .../p<part>/snapshots/<seq>/<run>/part-N.parquet
    newest: dict = {}
    for path in files:
        part, seq = path.split("/snapshots/")[0], int(path.split("/snapshots/")[1].split("/")[0])
        newest.setdefault(part, (seq, []))
        if seq > newest[part][0]:
            newest[part] = (seq, [])
        if seq == newest[part][0]:
            newest[part][1].append(path)
    snapshots = [p for _, paths in newest.values() for p in paths]
    assert len(newest) == 2, files
    frame = pd.concat([pq.read_table(p, filesystem=fs).to_pandas() for p in snapshots])
    assert len(frame) == 1000 and set(frame.columns) >= {"_ikv_key", "id", "x"}
    assert dict(zip(frame["id"], frame["x"]))["u21"] == 42
    tables = {f"t{i}": pq.read_table(p, filesystem=fs) for i, p in enumerate(snapshots)}
    con = duckdb.connect()
    for name, table in tables.items():
        con.register(name, table)
    union = " UNION ALL ".join(f"SELECT id, x FROM {name}" for name in tables)
    total, count = con.execute(f"SELECT sum(x), count(*) FROM ({union})").fetchone()
    assert (total, count) == (2 * sum(range(1000)), 1000)


def test_partition_of_matches_the_pinned_vectors() -> None:
    assert bulk.partition_of("", 4) == 1 and bulk.partition_of("", 16) == 5
    assert bulk.partition_of("Alice", 4) == 3 and bulk.partition_of(b"Alice", 16) == 7
    assert bulk.partition_of("Bob", 4) == 0 and bulk.partition_of("Bob", 16) == 4
    with pytest.raises(IKVValueError):
        bulk.partition_of("x", 0)
    with pytest.raises(IKVTypeError):
        bulk.partition_of(3, 4)  # type: ignore[arg-type]

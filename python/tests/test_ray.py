"""Ray Data on a local cluster: a Dataset written through IKVDatasink (tasks write runs, the
driver commits once per partition) and features read inside map_batches, one reader per
actor, exactly as ikvpy/ray.py's docstring shows; a store read straight from the bucket with
read_ikv (snapshots, layers and deltas after them), pinned at the call."""

import pathlib
from typing import Iterator

import pyarrow as pa
import pytest

ray = pytest.importorskip("ray")  # installed by scripts/python-env.sh; skipped only by hand

from ikvpy import admin  # noqa: E402
from ikvpy.clientoptions import ClientOptionsBuilder  # noqa: E402
from ikvpy.document import IKVDocumentBuilder  # noqa: E402
from ikvpy.factory import create_new_writer  # noqa: E402
from ikvpy.ray import IKVDatasink, IKVFeatureLookup, read_ikv  # noqa: E402


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_a_dataset_imports_through_the_datasink_and_is_read_in_map_batches(cluster, local_storage, tmp_path: pathlib.Path) -> None:
    admin.create_store("users", "userid", num_partitions=4, storage_url=local_storage.url)
    rows = 4000
    ids = [f"u{i:05}" for i in range(rows)]
    ages = [i % 90 for i in range(rows)]
    cities = [["Oslo", "Lima"][i % 2] for i in range(rows)]
    # Two keys written twice in one block: the later row wins, column by column.
    ids[10:10] = ["u00001", "u00002"]
    ages[10:10] = [101, 102]
    cities[10:10] = [None, None]
    ds = ray.data.from_arrow(pa.table({"userid": ids, "age": ages, "city": cities})).repartition(4)
    sink = IKVDatasink("users", storage_url=local_storage.url)
    ds.write_datasink(sink)
    assert sink.receipt is not None and sink.receipt.rows == rows + 2
    assert sink.receipt.documents >= rows
    assert sorted(c.partition for c in sink.receipt.commits) == [0, 1, 2, 3]

    queries = ray.data.from_arrow(pa.table({"userid": ["u00001", "u00002", "u00003", "nobody"]}))
    enriched = queries.map_batches(
        IKVFeatureLookup,
        fn_constructor_kwargs={
            "store_name": "users",
            "fields": ["age", "city"],
            "mount_directory": str(tmp_path / "mount"),
            "key_column": "userid",
            "storage_url": local_storage.url,
        },
        batch_format="pyarrow",
        concurrency=2,
    )
    got = {r["userid"]: (r["age"], r["city"]) for r in enriched.take_all()}
    assert got == {
        "u00001": (101, "Lima"),
        "u00002": (102, "Oslo"),
        "u00003": (3, "Lima"),
        "nobody": (None, None),
    }


def _doc(key: str, **fields):
    b = IKVDocumentBuilder().put_string_field("id", key)
    for name, value in fields.items():
        if isinstance(value, int):
            b.put_int64_field(name, value)
        else:
            b.put_string_field(name, value)
    return b.build()


def test_read_ikv_reads_the_bucket_pinned_at_the_call(cluster, local_storage, tmp_path: pathlib.Path) -> None:
    admin.create_store("feats", "id", num_partitions=3, storage_url=local_storage.url)
    options = (
        ClientOptionsBuilder().with_store_name("feats").with_storage_url(local_storage.url)
        .with_mount_directory(str(tmp_path / "unused")).build()
    )
    expected = {}
    with create_new_writer(options) as writer:
        batch = []
        for i in range(3000):
            batch.append(_doc(f"k{i:05}", age=i, city=["Oslo", "Lima"][i % 2]))
            expected[f"k{i:05}"] = (i, ["Oslo", "Lima"][i % 2])
        writer.upsert_fields_batch(batch)
        admin.run_snapshot("feats", storage_url=local_storage.url)  # full snapshots
        for i in range(0, 3000, 40):  # a small change: the next pass writes layers
            writer.upsert_fields(_doc(f"k{i:05}", age=-i))
            expected[f"k{i:05}"] = (-i, expected[f"k{i:05}"][1])
        admin.run_snapshot("feats", storage_url=local_storage.url)
        # Deltas after the newest snapshots: deletes, field deletes, new documents.
        for i in range(1, 3000, 97):
            writer.delete_document(_doc(f"k{i:05}"))
            expected.pop(f"k{i:05}")
        for i in range(2, 3000, 89):
            writer.delete_fields(_doc(f"k{i:05}"), ["city"])
            expected[f"k{i:05}"] = (expected[f"k{i:05}"][0], None)
        writer.upsert_fields(_doc("new", city="Rome"))
        expected["new"] = (None, "Rome")
        ds = read_ikv("feats", ["age", "city"], storage_url=local_storage.url)
        # Written after the call: not in the Dataset, however late its tasks run.
        writer.upsert_fields(_doc("late", age=1))
        writer.upsert_fields(_doc("k00000", age=12345))
    rows = ds.take_all()
    got = {bytes(r["_ikv_key"]).decode(): (r["age"], r["city"]) for r in rows}
    assert len(rows) == len(got), "each document once"
    assert got == expected
    assert ds.schema().names == ["_ikv_key", "age", "city"]


def test_read_ikv_refuses_bad_arguments_and_an_uncompacted_import(cluster, local_storage) -> None:
    from ikvpy.errors import StoreNotFoundError

    with pytest.raises(StoreNotFoundError):
        read_ikv("nope", ["a"], storage_url=local_storage.url)
    admin.create_store("imp", "id", num_partitions=2, storage_url=local_storage.url)
    with pytest.raises(ValueError):
        read_ikv("imp", ["a"], storage_url=local_storage.url, batch_size=0)
    with pytest.raises(ValueError):
        read_ikv("imp", [" "], storage_url=local_storage.url)
    ds = ray.data.from_arrow(pa.table({"id": ["a", "b", "c"], "v": [1, 2, 3]}))
    ds.write_datasink(IKVDatasink("imp", storage_url=local_storage.url))
    with pytest.raises(Exception, match="run a snapshot pass first"):
        read_ikv("imp", ["v"], storage_url=local_storage.url).take_all()
    admin.run_snapshot("imp", storage_url=local_storage.url)
    got = {bytes(r["_ikv_key"]).decode(): r["v"] for r in read_ikv("imp", ["v"], storage_url=local_storage.url).take_all()}
    assert got == {"a": 1, "b": 2, "c": 3}


def test_read_ikv_at_a_checkpoint_after_more_writes_and_passes(cluster, local_storage, tmp_path: pathlib.Path) -> None:
    from ikvpy.errors import IKVValueError, StoreExistsError, StoreNotFoundError

    url = local_storage.url
    admin.create_store("ck", "id", num_partitions=2, storage_url=url)
    options = (
        ClientOptionsBuilder().with_store_name("ck").with_storage_url(url)
        .with_mount_directory(str(tmp_path / "unused")).build()
    )
    now = {}
    with create_new_writer(options) as writer:
        writer.upsert_fields_batch([_doc(f"k{i:04}", age=i) for i in range(600)])
        now.update({f"k{i:04}": i for i in range(600)})
        admin.run_snapshot("ck", storage_url=url)
        for i in range(0, 600, 7):
            writer.upsert_fields(_doc(f"k{i:04}", age=-i))
            now[f"k{i:04}"] = -i
        checkpoint = admin.create_checkpoint("ck", "train-v1", storage_url=url)
        pinned = dict(now)
        for i in range(0, 600, 5):
            writer.delete_document(_doc(f"k{i:04}"))
            now.pop(f"k{i:04}")
        writer.upsert_fields(_doc("k9999", age=9999))
        now["k9999"] = 9999
        admin.run_snapshot("ck", storage_url=url)
        writer.upsert_fields(_doc("k0001", age=111))
        now["k0001"] = 111
        admin.run_snapshot("ck", storage_url=url)
    assert checkpoint.name == "train-v1" and len(checkpoint.partitions) == 2
    assert admin.list_checkpoints("ck", storage_url=url) == [checkpoint]
    assert admin.get_checkpoint("ck", "train-v1", storage_url=url) == checkpoint

    def read(**kwargs):
        rows = read_ikv("ck", ["age"], storage_url=url, **kwargs).take_all()
        return {bytes(r["_ikv_key"]).decode(): r["age"] for r in rows}

    assert read(checkpoint="train-v1") == pinned
    assert read() == now
    with pytest.raises(StoreExistsError, match="train-v1"):
        admin.create_checkpoint("ck", "train-v1", storage_url=url)
    with pytest.raises(IKVValueError, match="checkpoint name"):
        admin.create_checkpoint("ck", "a/b", storage_url=url)
    with pytest.raises(StoreNotFoundError, match="no checkpoint"):
        read_ikv("ck", ["age"], storage_url=url, checkpoint="nope")
    admin.delete_checkpoint("ck", "train-v1", storage_url=url)
    assert admin.list_checkpoints("ck", storage_url=url) == []
    with pytest.raises(StoreNotFoundError):
        admin.delete_checkpoint("ck", "train-v1", storage_url=url)


def test_read_ikv_as_of_a_time_reads_what_was_committed_by_then(cluster, local_storage, tmp_path: pathlib.Path) -> None:
    import datetime
    import time

    url = local_storage.url
    admin.create_store("asof", "id", num_partitions=2, storage_url=url)
    options = (
        ClientOptionsBuilder().with_store_name("asof").with_storage_url(url)
        .with_mount_directory(str(tmp_path / "unused")).build()
    )
    with create_new_writer(options) as writer:
        for i in range(40):
            writer.upsert_fields(_doc(f"k{i:02}", age=i))
        admin.run_snapshot("asof", storage_url=url)
        writer.upsert_fields(_doc("k00", age=100))
        time.sleep(0.05)
        then = datetime.datetime.now(datetime.timezone.utc)
        time.sleep(0.05)
        writer.upsert_fields(_doc("k01", age=101))
        writer.delete_document(_doc("k02"))
    expected = {f"k{i:02}": i for i in range(40)}
    expected["k00"] = 100

    def read(**kwargs):
        rows = read_ikv("asof", ["age"], storage_url=url, **kwargs).take_all()
        return {bytes(r["_ikv_key"]).decode(): r["age"] for r in rows}

    assert read(as_of=then) == expected
    assert read(as_of=datetime.datetime(1971, 1, 1, tzinfo=datetime.timezone.utc)) == {}
    now = read()
    assert now["k01"] == 101 and "k02" not in now
    with pytest.raises(TypeError, match="timezone-aware"):
        read_ikv("asof", ["age"], storage_url=url, as_of=datetime.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="not both"):
        read_ikv("asof", ["age"], storage_url=url, as_of=then, checkpoint="x")


def test_read_ikv_of_a_million_documents_equals_the_readers_scan(cluster, local_storage, tmp_path: pathlib.Path) -> None:
    """A store of 1M documents (an import, a full pass, then deltas: changes, deletions, field
    deletions, new documents) read two ways: from the bucket by read_ikv, and by an embedded
    reader's scan of its local copy. The two equal row for row."""
    from ikvpy import bulk
    from ikvpy.factory import create_new_reader

    n = 1_000_000
    admin.create_store("million", "id", num_partitions=4, storage_url=local_storage.url)
    keys = [f"k{i:07}" for i in range(n)]
    bulk.import_arrow(
        pa.table({"id": keys, "n": pa.array(range(n), type=pa.int64()), "s": [f"v{i % 977}" for i in range(n)]}),
        "million",
        storage_url=local_storage.url,
    )
    admin.run_snapshot("million", storage_url=local_storage.url)
    options = (
        ClientOptionsBuilder().with_store_name("million").with_storage_url(local_storage.url)
        .with_mount_directory(str(tmp_path / "mount")).build()
    )
    with create_new_writer(options) as writer:
        writer.upsert_fields_batch([_doc(f"k{i:07}", n=-i) for i in range(0, n, 1001)])
        for i in range(7, n, 99_991):
            writer.delete_document(_doc(f"k{i:07}"))
        for i in range(3, n, 50_021):
            writer.delete_fields(_doc(f"k{i:07}"), ["s"])
        writer.upsert_fields_batch([_doc(f"new{i}", s="fresh") for i in range(50)])
    from_bucket = read_ikv("million", ["n", "s"], storage_url=local_storage.url)
    got = pa.concat_tables(ray.get(from_bucket.to_arrow_refs()), promote_options="default")
    reader = create_new_reader(options)
    reader.startup()
    try:
        scanned = pa.Table.from_batches(list(reader.scan(["n", "s"])))
    finally:
        reader.shutdown()

    def rows(table: pa.Table):
        table = table.sort_by("_ikv_key")
        return [table.column(c).to_pylist() for c in ("_ikv_key", "n", "s")]

    expected_rows = n - len(range(7, n, 99_991)) + 50
    assert got.num_rows == scanned.num_rows == expected_rows
    assert rows(got) == rows(scanned)

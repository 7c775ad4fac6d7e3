"""Every operation and type; the original's TypeError / ValueError cases; context manager;
threads reading while deltas arrive; one mount per reader; a writer shared by threads; the
columnar multiget; status; error classes."""

import pathlib
import threading
import time
import uuid

import pytest

import ikvpy
from ikvpy import admin
from ikvpy.client import IKVReader, IKVWriter
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.factory import create_new_reader, create_new_writer


@pytest.fixture
def store(local_storage, tmp_path: pathlib.Path):
    name = f"s-{uuid.uuid4().hex[:8]}"
    admin.create_store(name, "id", num_partitions=3, storage_url=local_storage.url)

    def options(mount: str = "mount", poll: float = 0.01):
        return (
            ClientOptionsBuilder()
            .with_store_name(name)
            .with_storage_url(local_storage.url)
            .with_mount_directory(str(tmp_path / mount))
            .with_poll_interval(poll)
            .build()
        )

    return name, local_storage, options


def doc(key, **fields):
    b = IKVDocumentBuilder().put_string_field("id", key)
    for name, value in fields.items():
        if isinstance(value, bool):
            b.put_bool_field(name, value)
        elif isinstance(value, int):
            b.put_int64_field(name, value)
        elif isinstance(value, float):
            b.put_float64_field(name, value)
        elif isinstance(value, bytes):
            b.put_bytes_field(name, value)
        else:
            b.put_string_field(name, value)
    return b.build()


def wait_for(predicate, timeout=10.0):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_every_operation_and_type(store):
    name, _, options = store
    with create_new_writer(options()) as writer:
        writer.upsert_fields(doc("a", s="x", b=b"\x00\xff", i=-(2**63), f=1.5, t=True, tmp_1="p", tmp_2="q", city="SF"))
        writer.upsert_fields(doc("b", s="y", city="LA"))
        writer.upsert_fields(doc("c", s="z"))
        writer.delete_fields(doc("a"), ["s"])
        writer.delete_document(doc("c"))
        writer.drop_fields_by_name(["city", "id"])  # dropping the primary key is ignored
        writer.drop_fields_by_name_prefix(["tmp_"])
        with create_new_reader(options()) as reader:
            assert reader.get_string_value("a", "s") is None
            assert reader.get_bytes_value("a", "b") == b"\x00\xff"
            assert reader.get_int64_value("a", "i") == -(2**63)
            assert reader.get_float64_value("a", "f") == 1.5
            assert reader.get_bool_value("a", "t") is True
            assert reader.get_value("a", "i") == -(2**63)
            assert reader.get_string_value("a", "tmp_1") is None
            assert reader.get_string_value("b", "city") is None
            assert reader.get_string_value("b", "id") == "b"
            assert reader.get_string_value(b"b", "s") == "y", "a str key equals its UTF-8 bytes"
            assert reader.get_string_value("c", "s") is None
            values = list(reader.multiget_bytes_values(bytes_primary_keys=[b"b"], str_primary_keys=["a", "c"], field_names=["id", "s"]))
            assert values == [b"b", b"y", b"a", None, None, None], "flat, key-major, bytes keys first"
        writer.drop_all_fields()
        with create_new_reader(options("mount2")) as reader:
            assert reader.get_string_value("b", "id") is None
            assert reader.get_bytes_value("a", "b") is None


def test_original_type_and_value_errors(store):
    name, local_storage, options = store
    with pytest.raises(TypeError):
        ClientOptionsBuilder().with_store_name(42)
    with pytest.raises(ValueError):
        ClientOptionsBuilder().with_store_name("  ")
    with pytest.raises(TypeError):
        ClientOptionsBuilder().with_account_id(None)
    with pytest.raises(ValueError):
        ClientOptionsBuilder().with_account_passkey("")
    with pytest.raises(ValueError):
        ClientOptionsBuilder().with_console_logging("loud")
    ClientOptionsBuilder().with_console_logging("WARN").with_file_logging("Info", "/tmp/ikvpy-test.log")
    with pytest.raises(ValueError, match="store_name is required"):
        ClientOptionsBuilder().build()
    with pytest.raises(TypeError):
        IKVDocumentBuilder().put_string_field("name", b"bytes")
    with pytest.raises(TypeError):
        IKVDocumentBuilder().put_bytes_field("name", "str")
    with pytest.raises(TypeError):
        IKVDocumentBuilder().put_int64_field("n", True)
    with pytest.raises(ValueError):
        IKVDocumentBuilder().put_int64_field("n", 2**63)
    with pytest.raises(TypeError):
        IKVDocumentBuilder().put_string_field(7, "x")
    with pytest.raises(ValueError):
        IKVDocumentBuilder().put_string_field("", "x")
    with create_new_writer(options()) as writer:
        with pytest.raises(ValueError, match='lacks its primary key field "id"'):
            writer.upsert_fields(IKVDocumentBuilder().put_string_field("other", "x").build())
        with pytest.raises(TypeError):
            writer.upsert_fields({"id": "x"})
        with pytest.raises(ValueError, match="at least one field name"):
            writer.drop_fields_by_name([])
        with pytest.raises(TypeError):
            writer.drop_fields_by_name("city")
    with create_new_reader(options()) as reader:
        writer2 = create_new_writer(options())
        writer2.startup()
        writer2.upsert_fields(doc("k", n=5, raw=b"\xff"))
        wait_for(lambda: reader.get_int64_value("k", "n") == 5)
        with pytest.raises(TypeError, match="holds a int64 value"):
            reader.get_string_value("k", "n")
        with pytest.raises(TypeError, match="not valid UTF-8"):
            reader.get_string_value("k", "raw")
        with pytest.raises(TypeError):
            reader.get_string_value(5, "n")
    # Errors subclass both ikvpy's base and the built-in type.
    with pytest.raises(ikvpy.StoreNotFoundError) as e:
        r = IKVReader(ClientOptionsBuilder().with_store_name("missing").with_storage_url(local_storage.url).with_mount_directory("/tmp/ikv-missing").build())
        r.startup()
    assert isinstance(e.value, RuntimeError) and isinstance(e.value, ikvpy.IKVError)
    with pytest.raises(ikvpy.StoreExistsError):
        admin.create_store(name, "id", storage_url=local_storage.url)
    with pytest.raises(ValueError):
        admin.create_store("bad/name", "id", storage_url=local_storage.url)
    with pytest.raises(ValueError, match="needs a mount directory"):
        IKVReader(ClientOptionsBuilder().with_store_name(name).with_storage_url(local_storage.url).build())
    with pytest.raises(RuntimeError, match="not started"):
        IKVWriter(options()).upsert_fields(doc("x"))


def test_two_readers_of_one_mount_share_it_and_hand_it_over(store):
    name, local_storage, options = store
    with create_new_writer(options()) as writer:
        writer.upsert_fields(doc("a", n=7, s="x"))
        first = create_new_reader(options())
        first.startup()
        second = create_new_reader(options())
        second.startup()
        assert [s["owns_mount"] for s in first.status()] == [True] * 3
        assert [s["owns_mount"] for s in second.status()] == [False] * 3
        assert second.get_int64_value("a", "n") == 7
        assert list(second.multiget_string_values(str_primary_keys=["a", "b"], field_names=["s"])) == ["x", None]
        writer.upsert_fields(doc("b", s="y"))
        wait_for(lambda: second.get_string_value("b", "s") == "y")
        first.shutdown()
        wait_for(lambda: second.status()[0]["owns_mount"])
        writer.upsert_fields(doc("c", s="z"))
        wait_for(lambda: second.get_string_value("c", "s") == "z")
        second.shutdown()


def test_reader_context_manager_and_status(store):
    _, _, options = store
    with create_new_writer(options()) as writer:
        writer.upsert_fields(doc("a", n=1))
    with create_new_reader(options()) as reader:
        assert reader.get_int64_value("a", "n") == 1
        status = reader.status()
        assert [s["partition"] for s in status] == [0, 1, 2]
        assert all(s["caught_up_at"] is not None and s["last_error"] is None for s in status)
        assert sum(s["applied_sequence"] for s in status) == 1
    with pytest.raises(RuntimeError, match="shut down"):
        reader.get_int64_value("a", "n")


def test_threads_read_while_deltas_arrive(store):
    _, _, options = store
    writer = create_new_writer(options())
    writer.startup()
    writer.upsert_fields(doc("counter", n=0))
    with create_new_reader(options()) as reader:
        errors = []
        stop = threading.Event()

        def read():
            last = 0
            while not stop.is_set():
                try:
                    n = reader.get_int64_value("counter", "n")
                    assert n is not None and n >= last, (n, last)
                    last = n
                except Exception as e:  # noqa: BLE001
                    errors.append(e)
                    return

        threads = [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        for n in range(1, 101):
            writer.upsert_fields(doc("counter", n=n))
        wait_for(lambda: reader.get_int64_value("counter", "n") == 100)
        stop.set()
        for t in threads:
            t.join()
        assert errors == []


def test_a_reader_asking_a_mount_for_other_partitions_fails_clearly(store):
    name, local_storage, options = store
    with create_new_reader(options("shared")):
        other = (
            ClientOptionsBuilder().with_store_name(name).with_storage_url(local_storage.url)
            .with_mount_directory(options("shared").mount_directory).with_partitions([1]).build()
        )
        second = create_new_reader(other)
        with pytest.raises(ikvpy.MountInUseError, match=r"serves partitions \[0, 1, 2\], not partitions \[1\]"):
            second.startup()


def test_batch_upserts_are_validated_whole(store):
    _, _, options = store
    with create_new_writer(options()) as writer:
        with pytest.raises(ValueError, match="operation 1"):
            writer.upsert_fields_batch([doc("ok1"), IKVDocumentBuilder().put_string_field("x", "y").build()])
        writer.upsert_fields_batch([doc(f"b{i}", n=i) for i in range(100)])
    with create_new_reader(options()) as reader:
        assert reader.get_string_value("ok1", "id") is None, "nothing of a refused batch landed"
        assert [reader.get_int64_value(f"b{i}", "n") for i in range(100)] == list(range(100))


def test_a_writer_shared_by_threads(store):
    _, _, options = store
    writer = create_new_writer(options())
    writer.startup()

    def write(t: int) -> None:
        for i in range(50):
            writer.upsert_fields(doc(f"t{t}-{i}", n=i))

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with create_new_reader(options()) as reader:
        keys = [f"t{t}-{i}" for t in range(8) for i in range(50)]
        values = list(reader.multiget_string_values(str_primary_keys=keys, field_names=["id"]))
        assert values == keys


def test_columnar_multiget_returns_a_pyarrow_table(store):
    pa = pytest.importorskip("pyarrow")
    _, _, options = store
    with create_new_writer(options()) as writer:
        for i in range(10):
            writer.upsert_fields(doc(f"k{i}", n=i, f=i / 2, s=f"v{i}"))
    with create_new_reader(options()) as reader:
        table = reader.multiget_table([f"k{i}" for i in range(12)], ["n", "f", "s", "nothing"])
        assert isinstance(table, pa.Table)
        assert table.num_rows == 12
        assert table.column("n").type == pa.int64()
        assert table.column("n").to_pylist() == list(range(10)) + [None, None]
        assert table.column("f").to_pylist()[3] == 1.5
        assert table.column("s").to_pylist()[9] == "v9"
        assert table.column("_ikv_key").to_pylist()[0] == b"k0"
        assert table.column("nothing").null_count == 12


def test_a_scan_yields_every_live_document_once_in_batches_of_one_view(store):
    pa = pytest.importorskip("pyarrow")
    _, _, options = store
    with create_new_writer(options()) as writer:
        writer.upsert_fields_batch(
            [doc(f"k{i:03}", n=i, **({"s": f"v{i}"} if i % 2 == 0 else {})) for i in range(250)]
        )
        writer.delete_document(doc("k000"))
        with create_new_reader(options()) as reader:
            scan = reader.scan(["n", "s", "nothing"], batch_size=100)
            first = next(scan)
            # Written after the scan started: not seen by it.
            writer.upsert_fields(doc("k001", n=-1))
            writer.upsert_fields(doc("late", n=1000))
            batches = [first] + list(scan)
            assert all(isinstance(b, pa.RecordBatch) for b in batches)
            assert [b.num_rows for b in batches] == [100, 100, 49]
            table = pa.Table.from_batches(batches)
            assert table.column_names == ["_ikv_key", "n", "s", "nothing"]
            assert table.column("n").type == pa.int64()
            assert table.column("nothing").null_count == 249
            rows = sorted(zip(*(table.column(c).to_pylist() for c in ["_ikv_key", "n", "s"])))
            assert rows == [(f"k{i:03}".encode(), i, f"v{i}" if i % 2 == 0 else None) for i in range(1, 250)]
            # A scan started now sees the later writes; no field asked for gives keys only.
            deadline = time.monotonic() + 10
            while reader.get_int64_value("late", "n") is None:
                assert time.monotonic() < deadline, "the write never became visible"
                time.sleep(0.01)
            keys = pa.Table.from_batches(list(reader.scan([]))).column("_ikv_key").to_pylist()
            assert sorted(keys) == sorted([f"k{i:03}".encode() for i in range(1, 250)] + [b"late"])
            # Bad arguments say what is wrong, before anything is read.
            with pytest.raises(ikvpy.IKVValueError, match="batch_size"):
                reader.scan(["n"], batch_size=0)
            with pytest.raises(ikvpy.IKVTypeError, match="field_names"):
                reader.scan("n")
            # A field holding values of two types cannot be one column: the scan says which.
            writer.upsert_fields(doc("k002", s=b"\x00bytes"))
            while reader.get_bytes_value("k002", "s") != b"\x00bytes":
                time.sleep(0.01)
            with pytest.raises(ikvpy.IKVTypeError, match='field "s" holds both'):
                list(reader.scan(["s"]))


def test_reserved_field_names_are_refused_and_nothing_is_written(store):
    _, _, options = store
    with create_new_writer(options()) as writer:
        with pytest.raises(ikvpy.IKVError, match="reserved"):
            writer.upsert_fields(doc("k", _ikv_key="x"))
        with pytest.raises(ValueError, match="reserved"):
            writer.drop_fields_by_name(["_ikv_key"])
    with create_new_reader(options()) as reader:
        assert reader.get_string_value("k", "id") is None


def test_a_str_is_not_a_list_of_keys_and_bad_arguments_raise_ikvpy_classes(store):
    _, _, options = store
    with create_new_writer(options()) as writer:
        writer.upsert_fields(doc("a", city="Paris"))
        writer.upsert_fields(doc("b", city="Rome"))
        with pytest.raises(ikvpy.IKVTypeError, match="documents must be a list"):
            writer.upsert_fields_batch(None)
    with create_new_reader(options()) as reader:
        # "ab" would otherwise be read as the keys "a" and "b".
        with pytest.raises(ikvpy.IKVTypeError, match="str_primary_keys must be a list"):
            reader.multiget_string_values(str_primary_keys="ab", field_names=["city"])
        with pytest.raises(ikvpy.IKVTypeError, match="bytes_primary_keys must be a list"):
            reader.multiget_bytes_values(bytes_primary_keys=b"ab", field_names=["city"])
        with pytest.raises(ikvpy.IKVTypeError, match="must be a list"):
            reader.multiget_string_values(str_primary_keys=None, field_names=["city"])
        with pytest.raises(ikvpy.IKVTypeError, match="bytes_primary_keys must hold bytes, not str"):
            reader.multiget_bytes_values(bytes_primary_keys=[b"a", "b"], field_names=["city"])
        with pytest.raises(ikvpy.IKVTypeError, match="str_primary_keys must hold str, not bytes"):
            reader.multiget_string_values(str_primary_keys=("a", b"b"), field_names=["city"])
        with pytest.raises(ikvpy.IKVValueError, match="lone surrogate|not valid Unicode"):
            reader.multiget_string_values(str_primary_keys=["\ud800"], field_names=["city"])
        # Large batches (read with the GIL released) and small ones (held) answer alike.
        big = ["a", "b", "zz"] * 700
        assert list(reader.multiget_string_values(str_primary_keys=big, field_names=["city"])) == ["Paris", "Rome", None] * 700
        assert list(reader.multiget_string_values(str_primary_keys=big[:3], field_names=["city"])) == ["Paris", "Rome", None]
        with pytest.raises(ikvpy.IKVTypeError, match="primary_keys must be a list"):
            reader.multiget_table("ab", ["city"])
        with pytest.raises(ikvpy.IKVTypeError, match="field_name must be a str"):
            reader.get_value("a", None)
        with pytest.raises(TypeError):  # and still the built-in class the original raised
            reader.get_string_value("a", 5)
        # A name checked once is not checked again; a bad one is refused every time, and a
        # bad key is refused by the native side with the same class and words.
        assert reader.get_string_value("a", "city") == "Paris"
        for _ in range(2):
            with pytest.raises(ikvpy.IKVValueError, match="field_name must not be blank"):
                reader.get_string_value("a", "  ")
            with pytest.raises(ikvpy.IKVValueError, match="lone surrogate"):
                reader.get_bytes_value("a", "ci\udc80ty")
        with pytest.raises(ikvpy.IKVTypeError, match="a primary key must be str or bytes, not int"):
            reader.get_string_value(7, "city")
        with pytest.raises(ikvpy.IKVValueError, match="lone surrogate|not valid Unicode"):
            reader.get_int64_value("\ud800", "city")
        assert list(reader.multiget_string_values(str_primary_keys=["a", "b"], field_names=["city"])) == ["Paris", "Rome"]


def test_surrogates_big_ints_and_bad_storage_options_raise_ikvpy_classes_and_write_nothing(store, tmp_path):
    name, storage, options = store
    lone = "\udc80"
    with create_new_writer(options()) as writer:
        writer.upsert_fields(doc("a", city="Paris"))
        refusals = [
            (ikvpy.IKVValueError, UnicodeError, lambda: IKVDocumentBuilder().put_string_field("id", "k" + lone)),
            (ikvpy.IKVValueError, UnicodeError, lambda: IKVDocumentBuilder().put_string_field("f" + lone, "v")),
            (ikvpy.IKVValueError, OverflowError, lambda: IKVDocumentBuilder().put_float64_field("f", 10**400)),
            (ikvpy.IKVValueError, OverflowError, lambda: IKVDocumentBuilder().put_int64_field("f", 2**70)),
            (ikvpy.IKVValueError, OverflowError, lambda: ClientOptionsBuilder().with_partitions([2**40])),
            (ikvpy.IKVValueError, None, lambda: ClientOptionsBuilder().with_storage_option("k", lone)),
            (ikvpy.IKVValueError, None, lambda: ClientOptionsBuilder().with_idle_poll_interval(0)),
            (ikvpy.IKVValueError, None, lambda: ClientOptionsBuilder().with_idle_poll_interval(7200)),
            (ikvpy.IKVTypeError, None, lambda: ClientOptionsBuilder().with_idle_poll_interval("3")),
            (ikvpy.IKVValueError, None, lambda: ClientOptionsBuilder().with_wake_topic("  ")),
            (ikvpy.IKVValueError, OverflowError,
             lambda: admin.create_store("big", "id", num_partitions=2**40, storage_url=storage.url)),
            (ikvpy.IKVValueError, None,
             lambda: admin.create_store("big", "id", num_partitions=4097, storage_url=storage.url)),
            (ikvpy.IKVTypeError, None,
             lambda: admin.create_store("big", "id", storage_url=storage.url, storage_options={"k": 5})),
            (ikvpy.IKVTypeError, None,
             lambda: admin.create_store("big", "id", storage_url=storage.url, storage_options=["k"])),
            (ikvpy.IKVTypeError, None, lambda: admin.run_snapshot(name, storage_url=storage.url, storage_options={5: "v"})),
            (ikvpy.IKVValueError, None,
             lambda: writer.delete_fields(doc("a"), ["city" + lone])),
            (ikvpy.IKVValueError, None, lambda: writer.drop_fields_by_name(["x" + lone])),
        ]
        for ikv_class, builtin, call in refusals:
            with pytest.raises(ikv_class) as caught:
                call()
            # ikvpy's class, which is also the matching built-in (ValueError / TypeError), and
            # never the built-in that escaped before (UnicodeEncodeError, OverflowError).
            assert isinstance(caught.value, ikvpy.IKVError)
            if builtin is not None:
                assert not isinstance(caught.value, builtin), caught.value
    assert not (pathlib.Path(storage.url[len("file://"):]) / "big").exists(), "a refused create_store wrote"
    with create_new_reader(options()) as reader:
        with pytest.raises(ikvpy.IKVValueError, match="lone surrogate"):
            reader.get_string_value("a" + lone, "city")
        with pytest.raises(ikvpy.IKVValueError, match="lone surrogate"):
            list(reader.multiget_string_values(str_primary_keys=["a", lone], field_names=["city"]))
        with pytest.raises(ikvpy.IKVValueError, match="lone surrogate"):
            reader.get_string_value("a", "city" + lone)
        assert reader.get_string_value("a", "city") == "Paris"
        assert sum(s["applied_sequence"] for s in reader.status()) == 1, "only the one good write was committed"


def test_logging_is_set_once_per_process_and_a_different_request_warns(tmp_path):
    import subprocess
    import sys

    first, second = tmp_path / "first.log", tmp_path / "second.log"
    script = f"""
import warnings
from ikvpy import IKVWarning
from ikvpy.client import _setup_logging
from ikvpy.clientoptions import ClientOptionsBuilder
a = ClientOptionsBuilder().with_store_name("s").with_file_logging("info", {str(first)!r}).build()
b = ClientOptionsBuilder().with_store_name("s").with_file_logging("debug", {str(second)!r}).build()
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    _setup_logging(a)
    _setup_logging(a)
    assert not seen, [str(w.message) for w in seen]
    _setup_logging(b)
    assert len(seen) == 1 and issubclass(seen[0].category, IKVWarning), seen
    assert "first.log" in str(seen[0].message) and "ignored" in str(seen[0].message)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr
    assert first.exists() and not second.exists(), "the ignored configuration created its log file"


def test_a_damaged_snapshot_file_raises_corrupt_data_error_naming_it(store):
    name, storage, options = store
    with create_new_writer(options()) as writer:
        writer.upsert_fields_batch([doc(f"k{i}", city="Paris" * 10) for i in range(300)])
    admin.run_snapshot(name, storage_url=storage.url)
    root = pathlib.Path(storage.url[len("file://"):]) / name
    parquet = sorted(root.rglob("*.parquet"))
    assert parquet, "the snapshot wrote Parquet files"
    data = bytearray(parquet[0].read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0x5A for b in data[middle:middle + 16])
    parquet[0].write_bytes(bytes(data))
    with pytest.raises(ikvpy.CorruptDataError, match=parquet[0].name) as caught:
        create_new_reader(options("fresh-mount")).startup()
    assert "checksum" in str(caught.value)
    assert isinstance(caught.value, RuntimeError)

"""ikvpy against a reference model written here, in Python, independent of the Rust code:
seeded random calls of all six operations through the writer, with keys that hold zero bytes,
non-ASCII text and raw bytes; every key and field read back through get_value, the typed
getters and multiget equals the model. And: the GIL is released while ikvpy blocks."""

import pathlib
import random

import pytest
import threading
import time
import uuid
from typing import Any, Dict, List, Union

from ikvpy import admin
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.errors import IKVTypeError
from ikvpy.factory import create_new_reader, create_new_writer

FIELDS = ["a", "b", "city", "tmp_x", "tmp_y", "n", "id"]
Key = Union[str, bytes]


def key_of(i: int) -> Key:
    return [f"k{i:04}", f"k\0{i}\0", f"ключ-{i}-é", bytes([0, 0xFF, i % 256, 0, 0xFE])][i % 4]


def key_bytes(key: Key) -> bytes:
    return key.encode() if isinstance(key, str) else key


class Model:
    """Documents by primary-key bytes; each call applied in the order it was made (one
    sequential writer commits in call order)."""

    def __init__(self, primary_key: str) -> None:
        self.pk = primary_key
        self.docs: Dict[bytes, Dict[str, Any]] = {}

    def upsert(self, key: Key, fields: Dict[str, Any]) -> None:
        doc = self.docs.setdefault(key_bytes(key), {})
        doc[self.pk] = key
        doc.update(fields)

    def delete_fields(self, key: Key, names: List[str]) -> None:
        doc = self.docs.get(key_bytes(key))
        if doc is not None:
            for name in names:
                if name != self.pk:
                    doc.pop(name, None)

    def delete_document(self, key: Key) -> None:
        self.docs.pop(key_bytes(key), None)

    def drop_names(self, names: List[str]) -> None:
        for doc in self.docs.values():
            for name in names:
                if name != self.pk:
                    doc.pop(name, None)

    def drop_prefixes(self, prefixes: List[str]) -> None:
        for doc in self.docs.values():
            for name in list(doc):
                if name != self.pk and any(name.startswith(p) for p in prefixes):
                    del doc[name]

    def drop_all(self) -> None:
        self.docs.clear()


def build(key: Key, fields: Dict[str, Any]):
    b = IKVDocumentBuilder()
    b = b.put_string_field("id", key) if isinstance(key, str) else b.put_bytes_field("id", key)
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


def random_value(rng: random.Random) -> Any:
    return [
        lambda: f"s{rng.randrange(1000)}",
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(6))),
        lambda: rng.randrange(-1000, 1000),
        lambda: rng.uniform(-1, 1),
        lambda: rng.random() < 0.5,
    ][rng.randrange(5)]()


def typed_get(reader, key: Key, field: str, value: Any) -> Any:
    if isinstance(value, bool):
        return reader.get_bool_value(key, field)
    if isinstance(value, int):
        return reader.get_int64_value(key, field)
    if isinstance(value, float):
        return reader.get_float64_value(key, field)
    if isinstance(value, bytes):
        return reader.get_bytes_value(key, field)
    return reader.get_string_value(key, field)


def test_random_calls_read_back_as_the_model_says(local_storage, tmp_path: pathlib.Path) -> None:
    name = f"m-{uuid.uuid4().hex[:8]}"
    admin.create_store(name, "id", num_partitions=3, storage_url=local_storage.url)
    options = (
        ClientOptionsBuilder()
        .with_store_name(name)
        .with_storage_url(local_storage.url)
        .with_mount_directory(str(tmp_path / "mount"))
        .build()
    )
    rng = random.Random(7)
    model = Model("id")
    keys = [key_of(i) for i in range(60)]
    with create_new_writer(options) as writer:
        for _ in range(400):
            roll = rng.randrange(1000)
            key = rng.choice(keys)
            if roll < 650:
                fields = {rng.choice(FIELDS[:-1]): random_value(rng) for _ in range(rng.randrange(1, 4))}
                writer.upsert_fields(build(key, fields))
                model.upsert(key, fields)
            elif roll < 800:
                names = [rng.choice(FIELDS) for _ in range(rng.randrange(1, 3))]
                writer.delete_fields(build(key, {}), names)
                model.delete_fields(key, names)
            elif roll < 930:
                writer.delete_document(build(key, {}))
                model.delete_document(key)
            elif roll < 965:
                names = [rng.choice(FIELDS)]
                writer.drop_fields_by_name(names)
                model.drop_names(names)
            elif roll < 995:
                prefixes = [rng.choice(["tmp_", "c", "a", "i"])]
                writer.drop_fields_by_name_prefix(prefixes)
                model.drop_prefixes(prefixes)
            else:
                writer.drop_all_fields()
                model.drop_all()
    assert model.docs, "a model with no documents checks nothing"
    with create_new_reader(options) as reader:
        for key in keys:
            doc = model.docs.get(key_bytes(key), {})
            for field in FIELDS:
                expected = doc.get(field)
                if field == "id" and expected is not None:
                    expected = key  # the key is read back with the type it was written with
                assert reader.get_value(key, field) == expected, (key, field)
                if expected is not None:
                    assert typed_get(reader, key, field, expected) == expected, (key, field)
        # multiget_string_values refuses non-text values: take the field with the most text
        # values and the keys where it is text or absent, string and bytes keys alike.
        field = max(FIELDS[:-1], key=lambda f: sum(isinstance(d.get(f), str) for d in model.docs.values()))
        texty = [k for k in keys if isinstance(model.docs.get(key_bytes(k), {}).get(field), (str, type(None)))]
        str_keys = [k for k in texty if isinstance(k, str)]
        bytes_keys = [k for k in texty if isinstance(k, bytes)]
        got = list(reader.multiget_string_values(bytes_primary_keys=bytes_keys, str_primary_keys=str_keys, field_names=[field]))
        want = [model.docs.get(key_bytes(k), {}).get(field) for k in bytes_keys + str_keys]
        assert any(w is not None for w in want), "the multiget checks at least one value"
        assert got == want
        # A scan yields every live document once; a field whose values share one type comes
        # back as one column with the model's values, one with several types is refused by
        # name (the model's random values mostly mix types: test_sdk checks typed columns).
        pa = pytest.importorskip("pyarrow")
        table = pa.Table.from_batches(list(reader.scan([], batch_size=7)))
        assert sorted(table.column("_ikv_key").to_pylist()) == sorted(model.docs)
        for field in FIELDS[:-1]:
            types = {type(d[field]) for d in model.docs.values() if field in d}
            if len(types) > 1:
                with pytest.raises(IKVTypeError, match=f'field "{field}" holds both'):
                    list(reader.scan([field], batch_size=1000))
                continue
            table = pa.Table.from_batches(list(reader.scan([field])))
            got = dict(zip(table.column("_ikv_key").to_pylist(), table.column(field).to_pylist()))
            assert got == {k: d.get(field) for k, d in model.docs.items()}, field

def test_another_thread_runs_while_ikvpy_blocks(local_storage, tmp_path: pathlib.Path) -> None:
    """A pure-Python counter thread keeps counting during a large batch write and during a
    reader's bootstrap: the GIL is released around both. Counts, not times: a call that held
    the GIL would let the counter run for at most a switch interval or two (5 ms each) at its
    edges, so each call must let it count at least what it counts in 40 ms of sleep."""
    name = f"g-{uuid.uuid4().hex[:8]}"
    admin.create_store(name, "id", num_partitions=2, storage_url=local_storage.url)
    options = (
        ClientOptionsBuilder()
        .with_store_name(name)
        .with_storage_url(local_storage.url)
        .with_mount_directory(str(tmp_path / "mount"))
        .build()
    )
    ticks = [0]
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            ticks[0] += 1

    counter = threading.Thread(target=count)
    counter.start()
    try:
        before = ticks[0]
        time.sleep(0.04)
        in_40ms = ticks[0] - before
        docs = [build(f"doc{i:06}", {"a": "x" * 40, "n": i}) for i in range(100_000)]
        with create_new_writer(options) as writer:
            before = ticks[0]
            writer.upsert_fields_batch(docs)
            during_write = ticks[0] - before
        admin.run_snapshot(name, storage_url=local_storage.url, force=True)
        reader = create_new_reader(options)
        before = ticks[0]
        reader.startup()
        during_bootstrap = ticks[0] - before
        assert reader.get_int64_value("doc000007", "n") == 7
        reader.shutdown()
    finally:
        stop.set()
        counter.join()
    assert in_40ms > 0
    assert during_write > in_40ms, f"the counter advanced {during_write} times during the write, {in_40ms} in 40 ms"
    assert during_bootstrap > in_40ms, f"the counter advanced {during_bootstrap} times during the bootstrap, {in_40ms} in 40 ms"

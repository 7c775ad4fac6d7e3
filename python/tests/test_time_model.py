"""Times to live and event times from Python against a reference model written here, in
Python, independent of the Rust code: seeded random calls through the writer, upserts with a
time to live (the store's default, their own, or never) and an event time (most of them, out
of order, ties included), deletes and drops; every key and field read back by a live reader,
by readers pinned to a time past some expiries, and by both again after a snapshot pass,
equals the model.

Expiries are judged by readers pinned to a time ``J`` seconds after the last write: the
writes take seconds, so a value written with a time to live ``t`` is expired there exactly
when ``t < J`` (the times to live drawn are far from ``J``)."""

import datetime
import pathlib
import random
import uuid
from typing import Any, Dict, Optional, Tuple

from ikvpy import admin
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.factory import create_new_reader, create_new_writer

from test_model import FIELDS, Key, build, key_bytes, key_of, random_value

DEFAULT_TTL = 3600
#: Seconds after the last write at which the pinned readers judge: between the TTLs drawn.
LATER = 5400


class TimedModel:
    """Per document, per field: (value, time to live in seconds or None for never, event time
    or None). The key field keeps the longest time to live written on it (None, never, wins)
    and no event time; any other field takes a write without an event time (as writes always
    did), and one with an event time unless it holds a newer one."""

    def __init__(self) -> None:
        self.docs: Dict[bytes, Dict[str, Tuple[Any, Optional[int], Optional[int]]]] = {}

    def upsert(self, key: Key, fields: Dict[str, Any], ttl: Optional[int], event: Optional[int]) -> None:
        t = DEFAULT_TTL if ttl is None else (None if ttl == 0 else ttl)
        doc = self.docs.setdefault(key_bytes(key), {})
        old = doc.get("id")
        key_ttl = t if old is None else (None if old[1] is None or t is None else max(old[1], t))
        doc["id"] = (key, key_ttl, None)
        for name, value in fields.items():
            stored = doc.get(name)
            if stored is None or stored[2] is None or event is None or event >= stored[2]:
                doc[name] = (value, t, event)

    def delete_fields(self, key: Key, names) -> None:
        doc = self.docs.get(key_bytes(key))
        for name in names:
            if doc is not None and name != "id":
                doc.pop(name, None)

    def delete_document(self, key: Key) -> None:
        self.docs.pop(key_bytes(key), None)

    def drop(self, keep) -> None:
        for doc in self.docs.values():
            for name in [n for n in doc if n != "id" and not keep(n)]:
                del doc[name]

    def served(self, after: int) -> Dict[bytes, Dict[str, Any]]:
        """The documents a reader judging ``after`` seconds past the writes serves."""
        live = lambda ttl: ttl is None or ttl > after  # noqa: E731
        return {
            k: {n: v for n, (v, ttl, _) in d.items() if live(ttl)}
            for k, d in self.docs.items()
            if live(d["id"][1])
        }


def check(reader, keys, expected: Dict[bytes, Dict[str, Any]], what: str) -> None:
    for key in keys:
        doc = expected.get(key_bytes(key), {})
        for field in FIELDS:
            assert reader.get_value(key, field) == doc.get(field), (what, key, field)
    scanned = sorted(b for batch in reader.scan([]) for b in batch.column("_ikv_key").to_pylist())
    assert scanned == sorted(expected), what


def test_times_to_live_and_event_times_read_back_as_the_model_says(local_storage, tmp_path: pathlib.Path) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    url = local_storage.url
    admin.create_store(name, "id", num_partitions=3, storage_url=url, ttl_seconds=DEFAULT_TTL)

    def options(mount: str, at: Optional[datetime.datetime] = None):
        b = ClientOptionsBuilder().with_store_name(name).with_storage_url(url).with_mount_directory(str(tmp_path / mount))
        return (b.with_as_of(at) if at is not None else b).build()

    rng = random.Random(11)
    model = TimedModel()
    keys = [key_of(i) for i in range(60)]
    clock = 1_000_000
    lost = 0
    with create_new_writer(options("w")) as writer:
        for _ in range(500):
            roll = rng.randrange(1000)
            key = rng.choice(keys)
            if roll < 700:
                fields = {rng.choice(FIELDS[:-1]): random_value(rng) for _ in range(rng.randrange(1, 4))}
                ttl = rng.choice([None, 0, 3600, 7200])
                event = None
                if rng.random() < 0.8:
                    clock += rng.randrange(3)
                    event = clock - (rng.randrange(400) if rng.random() < 0.2 else rng.randrange(6))
                before = {n: model.docs.get(key_bytes(key), {}).get(n) for n in fields}
                writer.upsert_fields(build(key, fields), ttl_seconds=ttl, event_time=event)
                model.upsert(key, fields, ttl, event)
                lost += sum(model.docs[key_bytes(key)].get(n) == before[n] for n in fields)
            elif roll < 850:
                names = [rng.choice(FIELDS) for _ in range(rng.randrange(1, 3))]
                writer.delete_fields(build(key, {}), names)
                model.delete_fields(key, names)
            elif roll < 950:
                writer.delete_document(build(key, {}))
                model.delete_document(key)
            elif roll < 975:
                names = [rng.choice(FIELDS)]
                writer.drop_fields_by_name(names)
                model.drop(lambda n, names=names: n not in names)
            else:
                prefixes = [rng.choice(["tmp_", "c", "a"])]
                writer.drop_fields_by_name_prefix(prefixes)
                model.drop(lambda n, prefixes=prefixes: not any(n.startswith(p) for p in prefixes))
    assert lost > 0, "some writes lost to newer event times"
    now = datetime.datetime.now(datetime.timezone.utc)
    later = now + datetime.timedelta(seconds=LATER)
    live, after = model.served(0), model.served(LATER)
    assert live and after and after != live, "expiries between the two judgements"
    for step in ["", "-after-a-pass"]:
        with create_new_reader(options(f"live{step}")) as reader:
            check(reader, keys, live, f"live{step}")
        with create_new_reader(options(f"later{step}", later)) as reader:
            check(reader, keys, after, f"later{step}")
        admin.run_snapshot(name, storage_url=url)

"""A Feast online store on ikv (``pip install "ikvpy[feast]"``).

In ``feature_store.yaml``::

    online_store:
      type: ikvpy.feast.IKVOnlineStore
      storage_url: s3://bucket/ikv          # or file:///dir
      mount_directory: /mnt/ikv             # the embedded reader's local copy
      # optional: store_name (default feast-<project>), num_partitions (default 4),
      # storage_options {aws_endpoint: ...}, writer_url + account_id + account_passkey
      # (write through the writer service instead of directly), poll_interval_seconds

Layout: one ikv store per Feast project. A document per serialized entity key (Feast's own
``serialize_entity_key``, the document's primary key ``feast_entity_key``); for each feature
view, a field ``<view>:<feature>`` holding the feature's serialized ``ValueProto`` and a
field ``<view>:@event_ts`` holding the row's event timestamp (microseconds since the epoch,
8 bytes little-endian). So every Feast type round-trips unchanged, and one view's features
are one embedded multiget per ``online_read`` call.

Writes (``materialize``, ``write_to_online_store``) go through ikv's writer in batches, each
row with its event timestamp as the write's ikv event time: ikv itself keeps, for every
field, the value of the newest event time whatever the order writes are committed in (equal
timestamps by commit order; docs/FORMAT.md "Event times"), so a backfill never overwrites
newer features, whichever process materializes it and however processes interleave. Of
several rows of one entity in a batch only the newest is sent. (A store materialized before
ikv had event times holds rows without them, which any row with one replaces: materialize
the newest window again after upgrading.) Reads honour the feature view's ``ttl``: a row whose event timestamp is older than
``now - ttl`` is not served (``ttl`` of zero or none: served forever). Reads in the process
that wrote wait until its own reader has applied those writes, so ``get_online_features``
after ``materialize`` in one process sees what was materialized; other processes see it
within their poll interval.
"""

import struct
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple

from feast import Entity
from feast.feature_view import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.online_store import OnlineStore
from feast.infra.supported_async_methods import SupportedAsyncMethods
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from pydantic import StrictStr

from ikvpy import admin
from ikvpy.client import IKVReader, IKVWriter
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.document import IKVDocumentBuilder
from ikvpy.errors import IKVTypeError, IKVValueError, StoreExistsError

__all__ = ["IKVOnlineStore", "IKVOnlineStoreConfig", "read_features"]

#: The primary-key field of the documents this store writes.
ENTITY_KEY_FIELD = "feast_entity_key"
_TS = "@event_ts"
_MICROS = struct.Struct("<q")
#: Seconds a read waits for this process's own writes to reach its reader.
_OWN_WRITES_TIMEOUT = 60.0


class IKVOnlineStoreConfig(FeastConfigBaseModel):
    """Configuration of :class:`IKVOnlineStore`."""

    type: Literal["ikvpy.feast.IKVOnlineStore"] = "ikvpy.feast.IKVOnlineStore"
    storage_url: StrictStr
    mount_directory: StrictStr
    store_name: Optional[StrictStr] = None
    num_partitions: int = 4
    storage_options: Dict[str, str] = {}
    writer_url: Optional[StrictStr] = None
    account_id: Optional[StrictStr] = None
    account_passkey: Optional[StrictStr] = None
    poll_interval_seconds: float = 0.05
    write_batch_size: int = 10_000


def _store_name(config: RepoConfig) -> str:
    online: IKVOnlineStoreConfig = config.online_store
    return online.store_name or f"feast-{config.project}"


def _options(config: RepoConfig, *, writer: bool) -> Any:
    online: IKVOnlineStoreConfig = config.online_store
    b = (
        ClientOptionsBuilder()
        .with_account_id(online.account_id or "feast")
        .with_account_passkey(online.account_passkey or "feast")
        .with_store_name(_store_name(config))
        .with_storage_url(online.storage_url)
        .with_mount_directory(online.mount_directory)
        .with_poll_interval(online.poll_interval_seconds)
    )
    if writer and online.writer_url:
        b = b.with_writer_url(online.writer_url)
    for k, v in online.storage_options.items():
        b = b.with_storage_option(k, v)
    return b.build()


def _micros(ts: datetime) -> int:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return int(ts.timestamp() * 1_000_000)


class IKVOnlineStore(OnlineStore):
    """Feast online store on an embedded ikv reader and ikv's writer."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._reader: Optional[IKVReader] = None
        self._writer: Optional[IKVWriter] = None
        # Partition -> sequence of this process's latest write, until its reader has it.
        self._own_writes: Dict[int, int] = {}

    # -- clients ---------------------------------------------------------------------------

    def _get_reader(self, config: RepoConfig) -> IKVReader:
        reader = self._reader
        if reader is None:
            with self._lock:
                if self._reader is None:
                    reader = IKVReader(_options(config, writer=False))
                    reader.startup()
                    self._reader = reader
                reader = self._reader
        return reader

    def _get_writer(self, config: RepoConfig) -> IKVWriter:
        with self._lock:
            if self._writer is None:
                writer = IKVWriter(_options(config, writer=True))
                writer.startup()
                self._writer = writer
            return self._writer

    def _await_own_writes(self, reader: IKVReader) -> None:
        if not self._own_writes:
            return
        deadline = time.monotonic() + _OWN_WRITES_TIMEOUT
        while True:
            applied = {s["partition"]: s["applied_sequence"] for s in reader.status()}
            with self._lock:
                self._own_writes = {p: s for p, s in self._own_writes.items() if applied.get(p, 0) < s}
                if not self._own_writes:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the reader did not apply this process's writes within {_OWN_WRITES_TIMEOUT:.0f} s: {reader.status()}"
                )
            time.sleep(0.002)

    # -- OnlineStore -----------------------------------------------------------------------

    @property
    def async_supported(self) -> SupportedAsyncMethods:
        return SupportedAsyncMethods(read=True, write=True)

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        online: IKVOnlineStoreConfig = config.online_store
        try:
            admin.create_store(
                _store_name(config),
                ENTITY_KEY_FIELD,
                num_partitions=online.num_partitions,
                storage_url=online.storage_url,
                storage_options=dict(online.storage_options) or None,
            )
        except StoreExistsError:
            pass
        if tables_to_delete:
            self._drop_views(config, tables_to_delete)

    def teardown(self, config: RepoConfig, tables: Sequence[FeatureView], entities: Sequence[Entity]) -> None:
        if tables:
            self._drop_views(config, tables)
        with self._lock:
            reader, self._reader = self._reader, None
            writer, self._writer = self._writer, None
        if reader is not None:
            reader.shutdown()
        if writer is not None:
            writer.shutdown()

    def _drop_views(self, config: RepoConfig, tables: Sequence[FeatureView]) -> None:
        writer = self._get_writer(config)
        writer.drop_fields_by_name_prefix([f"{t.name}:" for t in tables])

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: List[Tuple[EntityKeyProto, Dict[str, ValueProto], datetime, Optional[datetime]]],
        progress: Optional[Callable[[int], Any]],
    ) -> None:
        online: IKVOnlineStoreConfig = config.online_store
        writer = self._get_writer(config)
        version = config.entity_key_serialization_version
        ts_field = f"{table.name}:{_TS}"
        batch: List[Any] = []
        rows = self._newest_rows(data, version)
        if progress and len(rows) < len(data):
            progress(len(data) - len(rows))  # rows older than a later row of their entity

        def flush() -> None:
            if not batch:
                return
            commits = writer._write([("upsert_fields", d.as_fields(), None, micros) for micros, d in batch])
            with self._lock:
                for partition, sequence in commits:
                    if sequence > self._own_writes.get(partition, 0):
                        self._own_writes[partition] = sequence
            if progress:
                progress(len(batch))
            batch.clear()

        for key, (micros, values) in rows.items():
            b = IKVDocumentBuilder().put_bytes_field(ENTITY_KEY_FIELD, key)
            for name, value in values.items():
                b.put_bytes_field(f"{table.name}:{name}", value.SerializeToString())
            b.put_bytes_field(ts_field, _MICROS.pack(micros))
            batch.append((micros, b.build()))
            if len(batch) >= online.write_batch_size:
                flush()
        flush()

    @staticmethod
    def _newest_rows(
        data: List[Tuple[EntityKeyProto, Dict[str, ValueProto], datetime, Optional[datetime]]],
        version: int,
    ) -> Dict[bytes, Tuple[int, Dict[str, ValueProto]]]:
        """The rows to write, by serialized entity key: each entity's newest row of ``data``
        (later rows win ties). Whether a row is newer than what the store holds is ikv's to
        decide, by the event time the row is written with."""
        rows: Dict[bytes, Tuple[int, Dict[str, ValueProto]]] = {}
        for entity_key, values, event_ts, _created_ts in data:
            key = serialize_entity_key(entity_key, version)
            micros = _micros(event_ts)
            held = rows.get(key)
            if held is None or micros >= held[0]:
                rows[key] = (micros, values)
        return rows

    async def online_write_batch_async(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: List[Tuple[EntityKeyProto, Dict[str, ValueProto], datetime, Optional[datetime]]],
        progress: Optional[Callable[[int], Any]],
    ) -> None:
        import asyncio

        # The write blocks until durable (the GIL is released meanwhile): off the event loop.
        await asyncio.to_thread(self.online_write_batch, config, table, data, progress)

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: List[EntityKeyProto],
        requested_features: Optional[List[str]] = None,
    ) -> List[Tuple[Optional[datetime], Optional[Dict[str, ValueProto]]]]:
        reader = self._get_reader(config)
        self._await_own_writes(reader)
        version = config.entity_key_serialization_version
        names = list(requested_features) if requested_features is not None else [f.name for f in table.features]
        fields = [f"{table.name}:{n}" for n in names]
        fields.append(f"{table.name}:{_TS}")
        keys = [serialize_entity_key(k, version) for k in entity_keys]
        values = reader.multiget_bytes_values(bytes_primary_keys=keys, field_names=fields)
        ttl = table.ttl.total_seconds() if table.ttl else 0.0
        # Rows older than this (microseconds since the epoch) have expired.
        expired_before = int((time.time() - ttl) * 1_000_000) if ttl > 0 else None
        width = len(fields)
        flat = list(values)
        out: List[Tuple[Optional[datetime], Optional[Dict[str, ValueProto]]]] = []
        parse = ValueProto.FromString
        for i in range(len(keys)):
            row = flat[i * width : (i + 1) * width]
            ts = row[-1]
            micros = None if ts is None else _MICROS.unpack(ts)[0]
            if micros is None or (expired_before is not None and micros < expired_before):
                out.append((None, None))
                continue
            features = {name: parse(v) for name, v in zip(names, row) if v is not None}
            when = datetime.fromtimestamp(micros / 1_000_000, tz=timezone.utc)
            out.append((when, features))
        return out

    async def online_read_async(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: List[EntityKeyProto],
        requested_features: Optional[List[str]] = None,
    ) -> List[Tuple[Optional[datetime], Optional[Dict[str, ValueProto]]]]:
        # An embedded read takes microseconds: running it inline beats a thread hop.
        return self.online_read(config, table, entity_keys, requested_features)


# -- read_features: serving code's direct path -------------------------------------------------

#: Column kinds `NativeReader.feast_read` decodes natively, by Feast ValueType name (the rest,
#: lists, sets, maps, JSON, UUIDs..., is decoded by Feast's own code from the stored bytes).
_NATIVE_KINDS = {
    "BYTES": 1,
    "STRING": 2,
    "INT32": 3,
    "INT64": 4,
    "DOUBLE": 5,
    "FLOAT": 6,
    "BOOL": 7,
    "UNIX_TIMESTAMP": 8,
}
#: Seconds a plan (views, types, ttls read from the registry) is reused before it is built again.
_PLAN_SECONDS = 10.0


class _ViewPlan:
    """How one feature view's requested features are read: join keys (sorted, as Feast
    serializes them), their prefix bytes, the stored field names and column kinds."""

    def __init__(self, view: FeatureView, features: List[str], full_names: bool, version: int) -> None:
        from feast.value_type import ValueType

        self.name = view.name
        by_name = {f.name: f for f in view.features}
        missing = [f for f in features if f not in by_name]
        if missing:
            raise IKVValueError(f"feature view {view.name!r} has no feature {', '.join(map(repr, missing))}")
        self.features = features
        self.fields = [f"{view.name}:{f}" for f in features]
        self.columns = [f"{view.name}__{f}" if full_names else f for f in features]
        self.value_types = [by_name[f].dtype.to_value_type() for f in features]
        self.kinds = [_NATIVE_KINDS.get(t.name, 0) for t in self.value_types]
        self.raw = [j for j, k in enumerate(self.kinds) if k == 0]
        self.ts_field = f"{view.name}:{_TS}"
        self.ttl = view.ttl.total_seconds() if view.ttl else 0.0
        join = sorted((c.name, c.dtype.to_value_type()) for c in view.entity_columns)
        if not join:
            raise IKVValueError(f"feature view {view.name!r} has no entity: read it with get_online_features")
        self.join_keys = [k for k, _ in join]
        self.join_types: List[Any] = [t for _, t in join]
        head: List[bytes] = []
        if version > 2:
            head.append(struct.pack("<I", len(join)))
        for k in self.join_keys:
            encoded = k.encode("utf8")
            head.append(struct.pack("<I", ValueType.STRING.value))
            if version > 2:
                head.append(struct.pack("<I", len(encoded)))
            head.append(encoded)
        self.prefix = b"".join(head)
        self.version = version
        # One int64 join key (the common case): the native reader builds the keys from the
        # prefix and the values, and the join key's column.
        self.int_head: Optional[bytes] = None
        if len(join) == 1 and self.join_types[0] == ValueType.INT64 and version > 1:
            self.int_head = self.prefix + struct.pack("<II", ValueType.INT64.value, 8)

    def keys(self, columns: Dict[str, Sequence[Any]], rows: int) -> List[bytes]:
        """The serialized entity keys of ``rows`` rows, as Feast's ``serialize_entity_key``."""
        single = len(self.join_keys) == 1
        parts = []
        for name, value_type in zip(self.join_keys, self.join_types):
            values = columns.get(name)
            if values is None:
                raise IKVValueError(f"entity_rows lack the join key {name!r} of feature view {self.name!r}")
            # One join key: its encoding carries the prefix (one pack a row, no concatenation).
            parts.append(_encode_entity_values(values, value_type, self.version, name, self.prefix if single else b""))
        if single:
            return parts[0]
        prefix = self.prefix
        return [prefix + b"".join(row) for row in zip(*parts)]


def _encode_entity_values(
    values: Sequence[Any], value_type: Any, version: int, name: str, prefix: bytes = b""
) -> List[bytes]:
    """Each value's type, length and bytes, as ``serialize_entity_key`` writes them, after
    ``prefix``."""
    from feast.value_type import ValueType

    def fixed(fmt: str, code: int) -> List[bytes]:
        packer = struct.Struct(f"<{len(prefix)}sII{fmt}")
        size = struct.calcsize(f"<{fmt}")
        try:
            return [packer.pack(prefix, code, size, v) for v in values]
        except struct.error as e:
            raise IKVValueError(f"join key {name!r} needs integers of its type ({value_type.name}): {e}") from None

    if value_type == ValueType.INT64:
        return fixed("l" if 0 <= version <= 1 else "q", ValueType.INT64.value)
    if value_type == ValueType.INT32:
        return fixed("i", ValueType.INT32.value)
    if value_type == ValueType.UNIX_TIMESTAMP:
        return fixed("q", ValueType.UNIX_TIMESTAMP.value)
    if value_type == ValueType.STRING:
        out = []
        for v in values:
            if not isinstance(v, str):
                raise IKVValueError(f"join key {name!r} is a string key, not {type(v).__name__}: {v!r}")
            b = v.encode("utf8")
            out.append(prefix + struct.pack("<II", ValueType.STRING.value, len(b)) + b)
        return out
    if value_type == ValueType.BYTES:
        out = []
        for v in values:
            if not isinstance(v, bytes):
                raise IKVValueError(f"join key {name!r} is a bytes key, not {type(v).__name__}: {v!r}")
            out.append(prefix + struct.pack("<II", ValueType.BYTES.value, len(v)) + v)
        return out
    raise IKVValueError(f"join key {name!r} of type {value_type.name} is not supported by Feast's entity keys")


class _Plan:
    def __init__(self, views: List[_ViewPlan], made: float) -> None:
        self.views = views
        self.made = made


_plans: Dict[Tuple[int, Tuple[str, ...], bool], Tuple[Any, _Plan]] = {}
_stores: Dict[int, Tuple[Any, Any]] = {}
_plans_lock = threading.Lock()


def _feature_store(store: Any) -> Any:
    from feast import FeatureStore

    if isinstance(store, FeatureStore):
        return store
    if isinstance(store, RepoConfig):
        with _plans_lock:
            held = _stores.get(id(store))
            if held is None or held[0] is not store:
                held = (store, FeatureStore(config=store))
                _stores[id(store)] = held
            return held[1]
    raise IKVTypeError(f"read_features needs a feast.FeatureStore or RepoConfig, not {type(store).__name__}")


def _plan(fs: Any, refs: Tuple[str, ...], full_names: bool) -> _Plan:
    key = (id(fs), refs, full_names)
    now = time.monotonic()
    with _plans_lock:
        held = _plans.get(key)
    if held is not None and held[0] is fs and now - held[1].made < _PLAN_SECONDS:
        return held[1]
    grouped: Dict[str, List[str]] = {}
    for ref in refs:
        if not isinstance(ref, str) or ref.count(":") != 1:
            raise IKVValueError(f"a feature reference is 'view:feature', not {ref!r}")
        view, feature = ref.split(":")
        grouped.setdefault(view, []).append(feature)
    version = fs.config.entity_key_serialization_version
    views = [_ViewPlan(fs.get_feature_view(name), features, full_names, version) for name, features in grouped.items()]
    columns = [c for v in views for c in v.columns]
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise IKVValueError(f"features named {', '.join(map(repr, twice))} come from several views: pass full_feature_names=True")
    plan = _Plan(views, now)
    with _plans_lock:
        _plans[key] = (fs, plan)
    return plan


def _entity_columns(entity_rows: Any) -> Tuple[Dict[str, List[Any]], int]:
    if isinstance(entity_rows, dict):
        columns = {k: list(v) for k, v in entity_rows.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise IKVValueError(f"entity_rows columns differ in length: {sorted(lengths)}")
        return columns, lengths.pop() if lengths else 0
    if isinstance(entity_rows, (str, bytes)) or not hasattr(entity_rows, "__iter__"):
        raise IKVTypeError(f"entity_rows must be a list of dicts or a dict of lists, not {type(entity_rows).__name__}")
    rows = entity_rows if isinstance(entity_rows, list) else list(entity_rows)
    if not rows:
        return {}, 0
    first = rows[0]
    if not isinstance(first, dict):
        raise IKVTypeError(f"entity row 0 must be a dict, not {type(first).__name__}")
    names = list(first)
    width = len(names)
    try:
        columns = {n: [r[n] for r in rows] for n in names}
        same = all(len(r) == width for r in rows)
    except (KeyError, TypeError):
        same = False
    if not same:
        bad = next(i for i, r in enumerate(rows) if not isinstance(r, dict) or sorted(r) != sorted(names))
        raise IKVValueError(f"entity row {bad} has other keys than the first ({names}): {rows[bad]!r}")
    return columns, len(rows)


def read_features(
    store: Any,
    feature_refs: Sequence[str],
    entity_rows: Any,
    *,
    full_feature_names: bool = False,
) -> Any:
    """The features ``IKVOnlineStore`` materialized, read at embedded speed for serving code:
    a ``pyarrow.Table`` equal, column for column and value for value, to
    ``store.get_online_features(features=feature_refs, entity_rows=entity_rows,
    full_feature_names=...).to_arrow()`` (the join keys as given, then the features; views'
    ``ttl`` honoured; missing or expired values null), without Feast's per-call work.

    ``store`` is a ``feast.FeatureStore`` (or its ``RepoConfig``) whose online store is
    ``IKVOnlineStore``; ``entity_rows`` a list of dicts (as ``get_online_features`` takes) or
    a dict of equal-length lists. Feature views only (on-demand views go through Feast). The
    registry is read once per ten seconds per set of references (a ``feast apply`` is seen
    within that time)."""
    import pyarrow as pa

    if isinstance(feature_refs, str):
        raise IKVTypeError("feature_refs must be a list of 'view:feature' strings, not one string")
    fs = _feature_store(store)
    online = fs._get_provider().online_store
    if not isinstance(online, IKVOnlineStore):
        raise IKVValueError(f"read_features reads IKVOnlineStore; this repository's online store is {type(online).__name__}")
    plan = _plan(fs, tuple(feature_refs), bool(full_feature_names))
    columns, rows = _entity_columns(entity_rows)
    reader = online._get_reader(fs.config)
    online._await_own_writes(reader)
    now = time.time()
    if len(plan.views) == 1 and not plan.views[0].raw and plan.views[0].int_head is not None and len(columns) == 1:
        view = plan.views[0]
        name = view.join_keys[0]
        values = columns.get(name)
        if values is None:
            raise IKVValueError(f"entity_rows lack the join key {name!r} of feature view {view.name!r}")
        expired_before = int((now - view.ttl) * 1_000_000) if view.ttl > 0 else None
        try:
            native = reader._native.feast_read(
                [], view.fields, view.kinds, view.ts_field, expired_before, view.columns, (name, view.int_head, values)
            )
        except (TypeError, OverflowError) as e:
            raise IKVValueError(f"join key {name!r} needs integers of its type (INT64): {e}") from None
        return pa.Table.from_batches([pa.record_batch(native)])
    batches = []
    for view in plan.views:
        keys = view.keys(columns, rows)
        expired_before = int((now - view.ttl) * 1_000_000) if view.ttl > 0 else None
        native = reader._native.feast_read(keys, view.fields, view.kinds, view.ts_field, expired_before, view.columns)
        batches.append(pa.record_batch(native))
    if len(plan.views) == 1 and not plan.views[0].raw:
        # The common case in one piece: the view's batch as a table, the join keys put first.
        table = pa.Table.from_batches(batches)
        for i, (name, values) in enumerate(columns.items()):
            table = table.add_column(i, name, pa.array(values))
        return table
    names: List[str] = list(columns)
    arrays: List[Any] = [pa.array(values) for values in columns.values()]
    for view, batch in zip(plan.views, batches):
        got = batch.columns
        for j in view.raw:
            got[j] = _decode_raw(got[j], view.value_types[j])
        names.extend(view.columns)
        arrays.extend(got)
    return pa.Table.from_arrays(arrays, names=names)


def _decode_raw(array: Any, value_type: Any) -> Any:
    """A column of stored ``ValueProto``s of a type decoded by Feast's own code."""
    import pyarrow as pa
    from feast.type_map import feast_value_type_to_python_type

    parse = ValueProto.FromString
    values = [None if b is None else feast_value_type_to_python_type(parse(b), value_type) for b in array.to_pylist()]
    if all(v is None for v in values):
        return pa.nulls(len(values))  # as Feast's to_arrow() types a column of None only
    return pa.array(values)

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

Writes (``materialize``, ``write_to_online_store``) go through ikv's writer in batches, in
event-time order per feature view: a row whose event timestamp is older than the one stored
for its entity is skipped (a backfill never overwrites newer features), equal timestamps by
write order, and of several rows of one entity in a batch the newest wins. The stored
timestamps are read through this process's embedded reader just before the batch is written,
as Feast's Redis store reads them: two processes materializing the same view at once may
interleave. Reads honour the feature view's ``ttl``: a row whose event timestamp is older than
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
from ikvpy.errors import StoreExistsError

__all__ = ["IKVOnlineStore", "IKVOnlineStoreConfig"]

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
        rows = self._newest_rows(config, ts_field, data, version)
        if progress and len(rows) < len(data):
            progress(len(data) - len(rows))  # rows older than what is stored, or than a later row

        def flush() -> None:
            if not batch:
                return
            commits = writer._write([("upsert_fields", d.as_fields()) for d in batch])
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
            batch.append(b.build())
            if len(batch) >= online.write_batch_size:
                flush()
        flush()

    def _newest_rows(
        self,
        config: RepoConfig,
        ts_field: str,
        data: List[Tuple[EntityKeyProto, Dict[str, ValueProto], datetime, Optional[datetime]]],
        version: int,
    ) -> Dict[bytes, Tuple[int, Dict[str, ValueProto]]]:
        """The rows to write, by serialized entity key: each entity's newest row of ``data``
        (later rows win ties), unless the store holds a newer row of it (an equal one is
        rewritten: equal event times are ordered by write)."""
        rows: Dict[bytes, Tuple[int, Dict[str, ValueProto]]] = {}
        for entity_key, values, event_ts, _created_ts in data:
            key = serialize_entity_key(entity_key, version)
            micros = _micros(event_ts)
            held = rows.get(key)
            if held is None or micros >= held[0]:
                rows[key] = (micros, values)
        if not rows:
            return rows
        reader = self._get_reader(config)
        self._await_own_writes(reader)
        keys = list(rows)
        stored = reader.multiget_bytes_values(bytes_primary_keys=keys, field_names=[ts_field])
        for key, ts in zip(keys, stored):
            if ts is not None and _MICROS.unpack(ts)[0] > rows[key][0]:
                del rows[key]
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

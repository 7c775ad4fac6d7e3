"""Ray Data integration (``pip install "ray[data]"``).

:class:`IKVDatasink` loads a Dataset into a store: each write task sorts its blocks' rows and
writes runs for the partitions they touch (:func:`ikvpy.bulk.write_runs`); when every task is
done, the driver commits them once per partition (:func:`ikvpy.bulk.commit_runs`). Nothing is
visible before that commit; a failed job commits nothing::

    ds = ray.data.read_parquet("s3://features/day=2026-11-27/")
    ds.write_datasink(IKVDatasink("users", storage_url="s3://bucket/ikv"))

:class:`IKVFeatureLookup` reads features inside ``map_batches``, one embedded reader per Ray
actor (readers of one host share the mount's local copy, so N actors cost one copy)::

    enriched = ds.map_batches(
        IKVFeatureLookup,
        fn_constructor_kwargs={"store_name": "users", "fields": ["age", "city"],
                               "mount_directory": "/mnt/ikv", "key_column": "userid",
                               "storage_url": "s3://bucket/ikv"},
        batch_format="pyarrow", concurrency=2,
    )

Rows whose key the store lacks get nulls.

:func:`read_ikv` reads a store's documents straight from the bucket (each partition's newest
snapshot plus the deltas after it; no mount), one read task per partition, consistent at each
partition's tip when it is called::

    ds = read_ikv("users", ["age", "city"], storage_url="s3://bucket/ikv")
"""

import datetime
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import pyarrow as pa
import ray.data
from ray.data.block import Block, BlockAccessor, BlockMetadata
from ray.data.datasource import Datasource, ReadTask
from ray.data.datasource.datasink import Datasink, WriteResult

from ikvpy import _internal, bulk
from ikvpy._validate import non_blank_str, storage_options as _storage_options
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.factory import create_new_reader

__all__ = ["IKVDatasink", "IKVFeatureLookup", "IKVDatasource", "read_ikv"]


class IKVDatasink(Datasink):
    """Writes a Dataset into ``store_name`` as one import (``mode`` ``"upsert"`` or
    ``"replace"``). Where rows of one write task share a key, the later row wins column by
    column. Across write tasks, runs commit in task-index order, which Ray does not tie to the
    Dataset's order (a ``union`` can come first): deduplicate keys that several blocks hold
    if which value wins matters. ``import_id`` names the import: running the same job again
    with it commits no partition twice."""

    def __init__(
        self,
        store_name: str,
        mode: str = "upsert",
        *,
        storage_url: Optional[str] = None,
        storage_options: Optional[Dict[str, str]] = None,
        import_id: Optional[str] = None,
        memory_budget: Union[int, str, None] = None,
    ) -> None:
        if mode not in ("upsert", "replace"):
            raise ValueError(f"mode must be 'upsert' or 'replace', not {mode!r}")
        self.store_name = store_name
        self.mode = mode
        self.storage_url = storage_url
        self.storage_options = storage_options
        self.import_id = import_id or bulk.new_import_id()
        #: Each write task's memory budget for sorting its rows (see :func:`ikvpy.bulk.write_runs`).
        self.memory_budget = memory_budget
        #: The receipt of the commit, once the write completed.
        self.receipt: Optional[bulk.ImportReceipt] = None

    def get_name(self) -> str:
        return f"IKV({self.store_name})"

    def write(self, blocks: Iterable[Block], ctx: Any) -> Optional[Tuple[int, str]]:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows > 0]
        if not tables:
            return None
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        written = bulk.write_runs(
            table,
            self.store_name,
            import_id=self.import_id,
            storage_url=self.storage_url,
            storage_options=self.storage_options,
            memory_budget=self.memory_budget,
        )
        # The task's place in the Dataset orders its runs, so later rows win at commit.
        return (int(getattr(ctx, "task_idx", 0)), written)

    def on_write_complete(self, write_result: WriteResult) -> None:
        parts = sorted(r for r in write_result.write_returns if r is not None)
        if not parts and self.mode == "upsert":
            return
        if not parts:
            # Replacing with nothing: every partition ends empty.
            nothing = pa.RecordBatchReader.from_batches(pa.schema([]), [])
            written = bulk.write_runs(
                nothing,
                self.store_name,
                import_id=self.import_id,
                storage_url=self.storage_url,
                storage_options=self.storage_options,
            )
            parts = [(0, written)]
        self.receipt = bulk.commit_runs(
            [written for _, written in parts],
            self.store_name,
            self.mode,
            storage_url=self.storage_url,
            storage_options=self.storage_options,
        )


class IKVFeatureLookup:
    """A ``map_batches`` callable class: adds ``fields`` read from ``store_name`` for each
    row's ``key_column`` (str or binary keys). One reader per actor, opened in the
    constructor and shared by its batches."""

    def __init__(
        self,
        store_name: str,
        fields: Sequence[str],
        mount_directory: str,
        key_column: str,
        *,
        storage_url: Optional[str] = None,
        storage_options: Optional[Dict[str, str]] = None,
    ) -> None:
        b = (
            ClientOptionsBuilder()
            .with_account_id("ray")
            .with_account_passkey("ray")
            .with_store_name(store_name)
            .with_mount_directory(mount_directory)
        )
        if storage_url is not None:
            b = b.with_storage_url(storage_url)
        for k, v in (storage_options or {}).items():
            b = b.with_storage_option(k, v)
        self.reader = create_new_reader(b.build())
        self.reader.startup()
        self.fields: List[str] = list(fields)
        self.key_column = key_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        keys = batch.column(self.key_column).to_pylist()
        found = self.reader.multiget_table(keys, self.fields)
        for name in self.fields:
            batch = batch.append_column(name, found.column(name))
        return batch


def _read_partition(
    store_name: str,
    partition: int,
    point: Tuple[int, Optional[int]],
    fields: List[str],
    storage_url: str,
    storage_options: Optional[Dict[str, str]],
    batch_size: int,
    served_at_ms: int,
) -> Iterable[pa.Table]:
    upto, snapshot = point
    read = _internal.NativePartitionRead(
        store_name, partition, upto, fields, storage_url, storage_options, batch_size, snapshot, served_at_ms
    )
    while True:
        batch = read.next_batch()
        if batch is None:
            return
        yield pa.Table.from_batches([pa.record_batch(batch)])


class IKVDatasource(Datasource):
    """A store's documents as committed at ``points`` (per partition, a sequence and the
    snapshot to start from, ``None`` for the newest at or below it), read from the bucket: the
    ``_ikv_key`` column, then one column per field in ``field_names`` (typed by its values; a
    field absent from a whole batch is a null column). One read task per partition. Values
    with a time to live are judged at ``served_at_ms`` (ms since the epoch; default: when the
    datasource is made)."""

    def __init__(
        self,
        store_name: str,
        field_names: Sequence[str],
        points: Sequence[Tuple[int, Optional[int]]],
        storage_url: str,
        storage_options: Optional[Dict[str, str]] = None,
        batch_size: int = 65536,
        served_at_ms: Optional[int] = None,
    ) -> None:
        self.served_at_ms = served_at_ms if served_at_ms is not None else int(time.time() * 1000)
        self.store_name = store_name
        self.field_names = list(field_names)
        self.points = list(points)
        self.storage_url = storage_url
        self.storage_options = storage_options
        self.batch_size = batch_size

    def get_name(self) -> str:
        return f"IKV({self.store_name})"

    def estimate_inmemory_data_size(self) -> Optional[int]:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: Optional[int] = None, data_context: Any = None) -> List[ReadTask]:
        tasks = []
        for partition, point in enumerate(self.points):
            args = (
                self.store_name,
                partition,
                point,
                self.field_names,
                self.storage_url,
                self.storage_options,
                self.batch_size,
                self.served_at_ms,
            )
            metadata = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
            tasks.append(ReadTask(lambda args=args: _read_partition(*args), metadata))
        return tasks


def read_ikv(
    store_name: str,
    field_names: Sequence[str],
    *,
    storage_url: Optional[str] = None,
    storage_options: Optional[Dict[str, str]] = None,
    batch_size: int = 65536,
    checkpoint: Optional[str] = None,
    as_of: Optional[datetime.datetime] = None,
) -> "ray.data.Dataset":
    """Every live document of ``store_name`` as a Ray Dataset, read straight from the bucket
    (no mount): consistent at each partition's tip when this is called (later writes are not
    in it, however late the tasks run), or at ``checkpoint`` (made by
    :func:`ikvpy.admin.create_checkpoint`) whatever was written and compacted since.
    ``field_names`` are the columns after ``_ikv_key``. A partition with an import committed
    after the snapshot its read starts from is refused by name: run a snapshot pass first (a
    checkpoint made after that pass then reads it)."""
    store_name = non_blank_str(store_name, "store_name")
    fields = [non_blank_str(f, "field name") for f in field_names]
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    url = bulk._url(storage_url)
    options = _storage_options(storage_options)
    if checkpoint is not None and as_of is not None:
        raise ValueError("read_ikv takes a checkpoint or as_of, not both")
    # Values with a time to live are judged at the point read: a checkpoint's creation, the
    # time asked for, or now.
    served_at_ms = int(time.time() * 1000)
    if as_of is not None:
        if not isinstance(as_of, datetime.datetime) or as_of.tzinfo is None:
            raise TypeError(f"as_of must be a timezone-aware datetime, not {as_of!r}")
        millis = int(as_of.timestamp() * 1000)
        if millis < 0:
            raise ValueError(f"as_of {as_of} is before 1970")
        points: List[Tuple[int, Optional[int]]] = list(_internal.points_as_of(store_name, millis, url, options))
        served_at_ms = millis
    elif checkpoint is None:
        points = [(t, None) for t in _internal.store_tips(store_name, url, options)]
    else:
        name = non_blank_str(checkpoint, "checkpoint")
        (_, created_at_ms, pins), = _internal.list_checkpoints(store_name, url, options, name)
        points = [(sequence, snapshot) for sequence, snapshot in pins]
        served_at_ms = created_at_ms
    return ray.data.read_datasource(
        IKVDatasource(store_name, fields, points, url, options, batch_size, served_at_ms),
        override_num_blocks=len(points),
    )

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
"""

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import pyarrow as pa
from ray.data.block import Block, BlockAccessor
from ray.data.datasource.datasink import Datasink, WriteResult

from ikvpy import bulk
from ikvpy.clientoptions import ClientOptionsBuilder
from ikvpy.factory import create_new_reader

__all__ = ["IKVDatasink", "IKVFeatureLookup"]


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

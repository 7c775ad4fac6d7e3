"""Bulk imports: load Arrow data or Parquet files into a store in one step per partition.

The rows are sorted per partition and written to the bucket as files in the snapshot format,
then committed through the store's log as one small delta per partition that names them
(docs/FORMAT.md, "Imports"). So an import is ordered with concurrent writes, atomic per
partition, seen by running readers in one step, and folded by the compactor. Nothing is
visible before the commit.

Modes: ``"upsert"`` unions each imported document's fields into the stored document (as
``upsert_fields``); ``"replace"`` makes the store's documents exactly the imported ones.
Several rows of one key combine as consecutive ``upsert_fields`` calls would: for each
column, the last non-null value in input order wins. A null value leaves the field unset.

Column types: strings, binary, integers (stored as int64), floats (float64) and booleans;
anything else (timestamps, lists, dictionaries) is refused by name: cast it first.

Two steps for distributed jobs (``ikvpy.ray.IKVDatasink`` uses them): :func:`write_runs`
in each worker, :func:`commit_runs` once with every worker's result.
"""

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

from ikvpy import _internal
from ikvpy._validate import non_blank_str, storage_options as _storage_options
from ikvpy.errors import IKVTypeError, IKVValueError

__all__ = [
    "ImportCommit",
    "ImportReceipt",
    "commit_runs",
    "import_arrow",
    "import_parquet",
    "new_import_id",
    "partition_of",
    "write_runs",
]

_MODES = ("upsert", "replace")


@dataclass(frozen=True)
class ImportCommit:
    """Where an import landed in one partition."""

    partition: int
    #: Sequence number of the delta that committed it.
    sequence: int
    #: Committed by an earlier attempt of the same import id (nothing was committed again).
    earlier: bool


@dataclass(frozen=True)
class ImportReceipt:
    """What an import committed."""

    import_id: str
    #: Input rows, and documents after combining rows of one key.
    rows: int
    documents: int
    commits: List[ImportCommit]
    #: Run files this attempt uploaded and their bytes (0 when an earlier attempt had).
    runs: int = 0
    bytes: int = 0


def _receipt(raw: str) -> ImportReceipt:
    data = json.loads(raw)
    return ImportReceipt(
        import_id=data["import_id"],
        rows=data["rows"],
        documents=data["documents"],
        commits=[ImportCommit(c["partition"], c["sequence"], c["earlier"]) for c in data["commits"]],
        runs=data.get("runs", 0),
        bytes=data.get("bytes", 0),
    )


def _url(storage_url: Optional[str]) -> str:
    url = storage_url if storage_url is not None else os.environ.get("IKV_STORAGE_URL")
    if url is None:
        raise IKVValueError("no storage URL: pass storage_url or set IKV_STORAGE_URL")
    return non_blank_str(url, "storage_url")


def _mode(mode: Any) -> str:
    if mode not in _MODES:
        raise IKVValueError(f"mode must be 'upsert' or 'replace', not {mode!r}")
    return str(mode)


def _import_id(import_id: Any) -> Optional[str]:
    if import_id is None:
        return None
    return non_blank_str(import_id, "import_id")


def _memory_budget(budget: Any) -> Optional[str]:
    """``None``, bytes as an int, or a string with a binary unit (``"512MiB"``, ``"4GiB"``)."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (int, str)):
        raise IKVTypeError(
            f"memory_budget must be a number of bytes or a string such as '512MiB', not {type(budget).__name__}"
        )
    return str(budget)


def _arrow_stream(data: Any) -> Any:
    """Something with ``__arrow_c_stream__``: pyarrow Tables and readers have it; a
    RecordBatch or a pandas DataFrame is converted through pyarrow."""
    if hasattr(data, "__arrow_c_stream__"):
        return data
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - depends on the environment
        raise IKVTypeError(
            f"cannot import a {type(data).__name__} without pyarrow; pass an object with __arrow_c_stream__"
        ) from None
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if type(data).__name__ == "DataFrame" and hasattr(data, "to_dict"):
        return pa.Table.from_pandas(data, preserve_index=False)
    raise IKVTypeError(
        f"cannot import a {type(data).__name__}: pass a pyarrow Table, RecordBatch or "
        "RecordBatchReader, a pandas DataFrame, or any object with __arrow_c_stream__"
    )


def new_import_id() -> str:
    """A fresh import id (what an import without one uses)."""
    import time
    import uuid

    return f"{int(time.time() * 1000)}-{uuid.uuid4().hex[:12]}"


def write_runs(
    data: Any,
    store_name: str,
    *,
    import_id: str,
    storage_url: Optional[str] = None,
    storage_options: Optional[Dict[str, str]] = None,
    memory_budget: Union[int, str, None] = None,
) -> str:
    """Writes ``data``'s rows as sorted runs for ``store_name`` and returns a description of
    them (a JSON string) for :func:`commit_runs`. Nothing is visible until that commit.
    ``memory_budget`` (bytes, or ``"512MiB"``; 1 GiB by default) bounds the memory used: rows
    are written as a run per partition each time they fill half of it."""
    non_blank_str(store_name, "store_name")
    budget = _memory_budget(memory_budget)
    stream = _arrow_stream(data)
    return str(
        _internal.write_runs(
            stream,
            store_name,
            _url(storage_url),
            _storage_options(storage_options),
            _import_id(import_id),
            budget,
        )
    )


def commit_runs(
    written: Sequence[str],
    store_name: str,
    mode: str = "upsert",
    *,
    storage_url: Optional[str] = None,
    storage_options: Optional[Dict[str, str]] = None,
) -> ImportReceipt:
    """Commits the runs :func:`write_runs` wrote (for one import id; where several parts hold
    a key, a later part in ``written`` wins). Committing an import again changes nothing."""
    non_blank_str(store_name, "store_name")
    if isinstance(written, (str, bytes)) or not all(isinstance(w, str) for w in written):
        raise IKVTypeError("written must be a list of the strings write_runs returned")
    if not written:
        raise IKVValueError("written is empty: nothing to commit")
    return _receipt(
        _internal.commit_runs(
            list(written), store_name, _mode(mode), _url(storage_url), _storage_options(storage_options)
        )
    )


def import_arrow(
    data: Any,
    store_name: str,
    mode: str = "upsert",
    *,
    import_id: Optional[str] = None,
    storage_url: Optional[str] = None,
    storage_options: Optional[Dict[str, str]] = None,
    memory_budget: Union[int, str, None] = None,
) -> ImportReceipt:
    """Imports Arrow data (pyarrow Table, RecordBatch, RecordBatchReader, pandas DataFrame, or
    anything with ``__arrow_c_stream__``). A retry with the same ``import_id`` commits no
    partition twice. ``memory_budget`` as in :func:`write_runs`."""
    _mode(mode)
    written = write_runs(
        data,
        store_name,
        import_id=_import_id(import_id) or new_import_id(),
        storage_url=storage_url,
        storage_options=storage_options,
        memory_budget=memory_budget,
    )
    return commit_runs([written], store_name, mode, storage_url=storage_url, storage_options=storage_options)


def import_parquet(
    location: Union[str, "os.PathLike[str]"],
    store_name: str,
    mode: str = "upsert",
    *,
    import_id: Optional[str] = None,
    storage_url: Optional[str] = None,
    storage_options: Optional[Dict[str, str]] = None,
    source_options: Optional[Dict[str, str]] = None,
    memory_budget: Union[int, str, None] = None,
) -> ImportReceipt:
    """Imports Parquet data: a local file or directory, or a URL (``s3://bucket/prefix``,
    ``file:///dir``) of one object or a prefix of ``.parquet`` objects (read natively; pyarrow
    is not needed). ``source_options`` are storage options for the source URL;
    ``memory_budget`` as in :func:`write_runs`."""
    non_blank_str(store_name, "store_name")
    budget = _memory_budget(memory_budget)
    location = os.fspath(location)
    non_blank_str(location, "location")
    return _receipt(
        _internal.import_parquet(
            location,
            store_name,
            _mode(mode),
            _url(storage_url),
            _storage_options(storage_options),
            _import_id(import_id),
            _storage_options(source_options),
            budget,
        )
    )


def partition_of(key: Union[str, bytes], num_partitions: int) -> int:
    """The partition of a key: ``fnv1a_64(key bytes) mod num_partitions`` (docs/FORMAT.md)."""
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, int):
        raise IKVTypeError(f"num_partitions must be an int, not {type(num_partitions).__name__}")
    if not 1 <= num_partitions <= 4096:
        raise IKVValueError(f"num_partitions must be between 1 and 4096, got {num_partitions}")
    return int(_internal.partition_of(key, num_partitions))

"""Store administration: create a store, run a snapshot pass."""

import os
from typing import Dict, List, Optional

from ikvpy import _internal
from ikvpy._validate import int_in, non_blank_str, storage_options as _storage_options
from ikvpy.errors import IKVTypeError, IKVValueError


# The most partitions a store may have (`MAX_PARTITIONS` in docs/FORMAT.md).
MAX_PARTITIONS = 4096


def _url(storage_url: Optional[str]) -> str:
    url = storage_url if storage_url is not None else os.environ.get("IKV_STORAGE_URL")
    if url is None:
        raise IKVValueError("no storage URL: pass storage_url or set IKV_STORAGE_URL")
    return non_blank_str(url, "storage_url")


def create_store(
    store_name: str,
    primary_key_field: str,
    partitioning_key_field: Optional[str] = None,
    num_partitions: int = 1,
    storage_url: Optional[str] = None,
    storage_options: Optional[Dict[str, str]] = None,
) -> None:
    """Creates a store. An existing store of that name raises StoreExistsError and is never
    overwritten."""
    non_blank_str(store_name, "store_name")
    non_blank_str(primary_key_field, "primary_key_field")
    if partitioning_key_field is not None:
        non_blank_str(partitioning_key_field, "partitioning_key_field")
    int_in(num_partitions, "num_partitions", 1, MAX_PARTITIONS)
    options = _storage_options(storage_options)
    _internal.create_store(
        store_name, primary_key_field, partitioning_key_field, num_partitions, _url(storage_url), options
    )


def run_snapshot(
    store_name: str,
    storage_url: Optional[str] = None,
    storage_options: Optional[Dict[str, str]] = None,
    force: bool = True,
) -> List[str]:
    """Runs one compaction pass over the store (all partitions) and retention; returns one
    line per partition saying what it did."""
    non_blank_str(store_name, "store_name")
    if not isinstance(force, bool):
        raise IKVTypeError(f"force must be a bool, not {type(force).__name__}")
    options = _storage_options(storage_options)
    return list(_internal.run_snapshot(store_name, _url(storage_url), options, force))

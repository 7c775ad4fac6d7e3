"""Store administration: create a store, run a snapshot pass."""

import os
from typing import Dict, List, Optional

from ikvpy import _internal
from ikvpy._validate import non_blank_str
from ikvpy.errors import IKVTypeError, IKVValueError


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
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, int):
        raise IKVTypeError(f"num_partitions must be an int, not {type(num_partitions).__name__}")
    if num_partitions < 1:
        raise IKVValueError(f"num_partitions must be at least 1, got {num_partitions}")
    _internal.create_store(
        store_name, primary_key_field, partitioning_key_field, num_partitions, _url(storage_url), storage_options
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
    return list(_internal.run_snapshot(store_name, _url(storage_url), storage_options, force))

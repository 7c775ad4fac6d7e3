"""Store administration: create a store, run a snapshot pass, pin checkpoints."""

import datetime
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ikvpy import _internal
from ikvpy._validate import int_in, non_blank_str, storage_options as _storage_options, ttl_seconds as _ttl
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
    ttl_seconds: Optional[int] = None,
) -> None:
    """Creates a store. An existing store of that name raises StoreExistsError and is never
    overwritten. ``ttl_seconds``: the time to live of every write that gives none (values
    stop being served that long after they are written); ``None``: values never expire."""
    non_blank_str(store_name, "store_name")
    non_blank_str(primary_key_field, "primary_key_field")
    if partitioning_key_field is not None:
        non_blank_str(partitioning_key_field, "partitioning_key_field")
    int_in(num_partitions, "num_partitions", 1, MAX_PARTITIONS)
    ttl = _ttl(ttl_seconds, low=1)
    options = _storage_options(storage_options)
    _internal.create_store(
        store_name, primary_key_field, partitioning_key_field, num_partitions, _url(storage_url), options, ttl
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


@dataclass(frozen=True)
class Checkpoint:
    """A store pinned as committed at one moment: per partition, the sequence it was at and
    the snapshot that state builds on. Retention keeps what it needs until it is deleted."""

    name: str
    created_at: datetime.datetime
    #: Per partition (in order): (sequence, snapshot it builds on; 0 for none).
    partitions: Tuple[Tuple[int, int], ...]


def _checkpoint(raw: Tuple[str, int, List[Tuple[int, int]]]) -> Checkpoint:
    name, created_ms, pins = raw
    created = datetime.datetime.fromtimestamp(created_ms / 1000, tz=datetime.timezone.utc)
    return Checkpoint(name, created, tuple((int(s), int(b)) for s, b in pins))


def create_checkpoint(
    store_name: str,
    name: str,
    storage_url: Optional[str] = None,
    storage_options: Optional[Dict[str, str]] = None,
) -> Checkpoint:
    """Pins ``store_name`` as committed now under ``name`` (1 to 128 of ``A-Z a-z 0-9 . _ -``).
    An existing checkpoint of that name raises StoreExistsError and is not touched. Read it with
    :func:`ikvpy.ray.read_ikv` (``checkpoint=name``)."""
    non_blank_str(store_name, "store_name")
    non_blank_str(name, "name")
    return _checkpoint(_internal.create_checkpoint(store_name, name, _url(storage_url), _storage_options(storage_options)))


def list_checkpoints(
    store_name: str,
    storage_url: Optional[str] = None,
    storage_options: Optional[Dict[str, str]] = None,
) -> List[Checkpoint]:
    """The store's checkpoints, by name."""
    non_blank_str(store_name, "store_name")
    raw = _internal.list_checkpoints(store_name, _url(storage_url), _storage_options(storage_options))
    return [_checkpoint(c) for c in raw]


def get_checkpoint(
    store_name: str,
    name: str,
    storage_url: Optional[str] = None,
    storage_options: Optional[Dict[str, str]] = None,
) -> Checkpoint:
    """Checkpoint ``name``; StoreNotFoundError (naming the checkpoint) when there is none."""
    non_blank_str(store_name, "store_name")
    non_blank_str(name, "name")
    raw = _internal.list_checkpoints(store_name, _url(storage_url), _storage_options(storage_options), name)
    return _checkpoint(raw[0])


def delete_checkpoint(
    store_name: str,
    name: str,
    storage_url: Optional[str] = None,
    storage_options: Optional[Dict[str, str]] = None,
) -> None:
    """Deletes checkpoint ``name``: what only it kept becomes retention's to reclaim."""
    non_blank_str(store_name, "store_name")
    non_blank_str(name, "name")
    _internal.delete_checkpoint(store_name, name, _url(storage_url), _storage_options(storage_options))

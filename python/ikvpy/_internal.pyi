"""Type stubs of the native module (implemented in Rust, python/src/)."""

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

Key = Union[str, bytes]

class NativeWriter:
    def __init__(
        self,
        store_name: str,
        storage_url: Optional[str] = ...,
        storage_options: Optional[Dict[str, str]] = ...,
        writer_url: Optional[str] = ...,
        account_id: Optional[str] = ...,
        account_passkey: Optional[str] = ...,
    ) -> None: ...
    def write(self, ops: List[Tuple[Any, ...]]) -> List[Tuple[int, int]]: ...
    def key_fields(self) -> Tuple[str, Optional[str]]: ...
    def flush(self) -> None: ...
    def metrics(self) -> Dict[str, Dict[str, Any]]: ...

class NativeScan:
    """A scan of one consistent view; batches until it is over."""

    def next_batch(self, max_rows: int) -> Optional[ArrowBatch]: ...

class NativePartitionRead:
    """One partition's documents as committed up to ``upto``, read from the bucket."""

    def __init__(
        self,
        store_name: str,
        partition: int,
        upto: int,
        field_names: List[str],
        storage_url: str,
        storage_options: Optional[Dict[str, str]] = ...,
        batch_size: int = ...,
        snapshot: Optional[int] = ...,
        served_at_ms: Optional[int] = ...,
    ) -> None: ...
    def next_batch(self) -> Optional[ArrowBatch]: ...

def create_checkpoint(
    store_name: str, name: str, storage_url: str, storage_options: Optional[Dict[str, str]] = ...
) -> Tuple[str, int, List[Tuple[int, int]]]: ...
def list_checkpoints(
    store_name: str,
    storage_url: str,
    storage_options: Optional[Dict[str, str]] = ...,
    name: Optional[str] = ...,
) -> List[Tuple[str, int, List[Tuple[int, int]]]]: ...
def delete_checkpoint(
    store_name: str, name: str, storage_url: str, storage_options: Optional[Dict[str, str]] = ...
) -> None: ...
def points_as_of(
    store_name: str, time_ms: int, storage_url: str, storage_options: Optional[Dict[str, str]] = ...
) -> List[Tuple[int, Optional[int]]]: ...
def store_tips(
    store_name: str, storage_url: str, storage_options: Optional[Dict[str, str]] = ...
) -> List[int]: ...

class NativeReader:
    def __init__(
        self,
        store_name: str,
        storage_url: str,
        mount_directory: str,
        storage_options: Optional[Dict[str, str]] = ...,
        partitions: Optional[List[int]] = ...,
        poll_interval_ms: int = ...,
        lazy: bool = ...,
        idle_poll_interval_ms: int = ...,
        wake_topic: Optional[str] = ...,
        checkpoint: Optional[str] = ...,
        as_of_ms: Optional[int] = ...,
    ) -> None: ...
    def startup(self) -> None: ...
    def shutdown(self) -> None: ...
    def get_value(self, key: Key, field: str) -> Any: ...
    def get_bytes(self, key: Key, field: str) -> Optional[bytes]: ...
    def get_string(self, key: Key, field: str) -> Optional[str]: ...
    def get_int64(self, key: Key, field: str) -> Optional[int]: ...
    def get_float64(self, key: Key, field: str) -> Optional[float]: ...
    def get_bool(self, key: Key, field: str) -> Optional[bool]: ...
    def multiget(self, keys: Sequence[Key], fields: List[str], as_string: bool) -> List[Any]: ...
    def multiget_split(
        self, bytes_keys: Sequence[bytes], str_keys: Sequence[str], fields: List[str], as_string: bool
    ) -> List[Any]: ...
    def multiget_batch(self, keys: Sequence[Key], fields: List[str]) -> ArrowBatch: ...
    def feast_read(
        self,
        keys: Sequence[bytes],
        fields: List[str],
        kinds: List[int],
        ts_field: str,
        expired_before: Optional[int],
        columns: Optional[List[str]] = ...,
        int_key: Optional[Tuple[str, bytes, Sequence[int]]] = ...,
    ) -> ArrowBatch: ...
    def scan(self, fields: List[str]) -> NativeScan: ...
    def status(self) -> List[Dict[str, Any]]: ...
    def metrics(self) -> Dict[str, Dict[str, Any]]: ...

class ArrowBatch:
    def __arrow_c_array__(self, requested_schema: Optional[object] = ...) -> Tuple[object, object]: ...

def create_store(
    store_name: str,
    primary_key_field: str,
    partitioning_key_field: Optional[str],
    num_partitions: int,
    storage_url: str,
    storage_options: Optional[Dict[str, str]] = ...,
    ttl_seconds: Optional[int] = ...,
) -> None: ...
def run_snapshot(
    store_name: str, storage_url: str, storage_options: Optional[Dict[str, str]] = ..., force: bool = ...
) -> List[str]: ...
def init_logging(level: str, path: Optional[str] = ...) -> bool: ...
def write_runs(
    data: object,
    store_name: str,
    storage_url: str,
    storage_options: Optional[Dict[str, str]] = ...,
    import_id: Optional[str] = ...,
    memory_budget: Optional[str] = ...,
) -> str: ...
def commit_runs(
    written: List[str],
    store_name: str,
    mode: str,
    storage_url: str,
    storage_options: Optional[Dict[str, str]] = ...,
) -> str: ...
def import_parquet(
    location: str,
    store_name: str,
    mode: str,
    storage_url: str,
    storage_options: Optional[Dict[str, str]] = ...,
    import_id: Optional[str] = ...,
    source_options: Optional[Dict[str, str]] = ...,
    memory_budget: Optional[str] = ...,
) -> str: ...
def partition_of(key: Union[str, bytes], num_partitions: int) -> int: ...

"""Readers and writers: :class:`IKVReader`, :class:`IKVWriter` (make them with
:mod:`ikvpy.factory`)."""

import datetime
import os
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from ikvpy import _internal
from ikvpy._validate import event_time_us as _event_us, int_in, non_blank_str, sequence_of, str_list, ttl_seconds as _ttl
from ikvpy.clientoptions import ClientOptions
from ikvpy.document import IKVDocument
from ikvpy.errors import IKVRuntimeError, IKVTypeError, IKVValueError, IKVWarning

Key = Union[str, bytes]


# The logging configuration this process runs with: logging is process-wide (one
# subscriber for the native library), so the first client that asks for it sets it.
_logging_config: Optional[Tuple[str, Optional[str]]] = None


def _describe_logging(config: Tuple[str, Optional[str]]) -> str:
    level, path = config
    return f"level {level!r} to {'file ' + repr(path) if path else 'the console'}"


def _setup_logging(options: ClientOptions) -> None:
    """Configures logging once per process; a different configuration later warns
    (IKVWarning) and is ignored, rather than silently creating an empty log file."""
    global _logging_config
    if options.logging is None:
        return
    if _logging_config is None:
        _logging_config = options.logging
        level, path = options.logging
        if not _internal.init_logging(level, path):
            warnings.warn(
                "another logging subscriber is installed in this process; ikvpy's logging options are ignored",
                IKVWarning,
                stacklevel=3,
            )
    elif options.logging != _logging_config:
        warnings.warn(
            f"ikvpy logging is configured once per process and is already "
            f"{_describe_logging(_logging_config)}; this client's {_describe_logging(options.logging)} is ignored",
            IKVWarning,
            stacklevel=3,
        )


def _document(document: Any) -> IKVDocument:
    if not isinstance(document, IKVDocument):
        raise IKVTypeError(f"expected an IKVDocument (from IKVDocumentBuilder), not {type(document).__name__}")
    return document


# Field names already checked by `_field` (bounded: a store has few names; past the bound a
# name is checked at every call, as before).
_CHECKED_FIELDS: "set[str]" = set()
_CHECKED_FIELDS_MAX = 4096


def _field(name: Any) -> str:
    """``name`` checked as a field name (a str, valid Unicode, not blank). A get's hot path:
    a name seen before costs one set lookup, not the checks (which encode the name)."""
    if type(name) is str and name in _CHECKED_FIELDS:
        return name
    non_blank_str(name, "field_name")
    if type(name) is str and len(_CHECKED_FIELDS) < _CHECKED_FIELDS_MAX:
        _CHECKED_FIELDS.add(name)
    return name


def _key(key: Any) -> Key:
    if not isinstance(key, (str, bytes)):
        raise IKVTypeError(f"a primary key must be str or bytes, not {type(key).__name__}")
    return key


def _reopen_reader(options: ClientOptions, started: bool) -> "IKVReader":
    """Unpickles a reader: a started one starts on first use in the receiving process."""
    return IKVReader(options, _lazy=started)


class IKVReader:
    """An embedded reader: a local copy of the store under the mount directory, kept fresh by
    polling. Thread-safe. Usable as a context manager (``with reader: ...``).

    Every reader process of a host that opens the same store on the same mount directory
    shares one local copy: the first polls the bucket, the others attach to it and see each
    write within a poll interval. A reader started before ``fork()`` reopens in the child on
    first use (attached to the same copy). A reader pickles to its options: unpickled in
    another process (Ray actors, Spark UDFs, DataLoader workers), a started reader starts on
    first use there."""

    def __init__(self, options: ClientOptions, *, _lazy: bool = False) -> None:
        if not isinstance(options, ClientOptions):
            raise IKVTypeError(f"expected ClientOptions, not {type(options).__name__}")
        if options.mount_directory is None:
            raise IKVValueError("a reader needs a mount directory: call with_mount_directory()")
        if options.storage_url is None:
            raise IKVValueError("a reader needs a storage URL: call with_storage_url() or set IKV_STORAGE_URL")
        self._options = options
        self._native = _internal.NativeReader(
            options.store_name,
            options.storage_url,
            os.fspath(options.mount_directory),
            storage_options=options.storage_options or None,
            partitions=options.partitions,
            poll_interval_ms=max(1, int(options.poll_interval_seconds * 1000)),
            lazy=_lazy,
            idle_poll_interval_ms=max(1, int(options.idle_poll_interval_seconds * 1000)),
            wake_topic=options.wake_topic,
            checkpoint=getattr(options, "checkpoint", None),
            as_of_ms=getattr(options, "as_of_ms", None),
        )
        self._started = _lazy
        if _lazy:
            _setup_logging(options)

    def __reduce__(self) -> Tuple[Any, Tuple[ClientOptions, bool]]:
        return (_reopen_reader, (self._options, self._started))

    def startup(self) -> None:
        """Builds, resumes or attaches to the local copy; an owner catches up with every
        committed write first, an attached reader serves what the owner has applied."""
        _setup_logging(self._options)
        self._native.startup()
        self._started = True

    def shutdown(self) -> None:
        """Stops polling; an owner flushes the local copy and hands the mount to another
        reader process."""
        self._native.shutdown()
        self._started = False

    def __enter__(self) -> "IKVReader":
        self.startup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # The getters pass the key as it is: the native side checks it (str or bytes, valid
    # Unicode) and raises the same IKVTypeError `_key` would, without a Python call per get.
    def get_bytes_value(self, primary_key: Key, field_name: str) -> Optional[bytes]:
        """A string or bytes field as bytes, or None."""
        return self._native.get_bytes(primary_key, _field(field_name))

    def get_string_value(self, primary_key: Key, field_name: str) -> Optional[str]:
        """A string field (or a bytes field holding UTF-8), or None."""
        return self._native.get_string(primary_key, _field(field_name))

    def get_int64_value(self, primary_key: Key, field_name: str) -> Optional[int]:
        return self._native.get_int64(primary_key, _field(field_name))

    def get_float64_value(self, primary_key: Key, field_name: str) -> Optional[float]:
        return self._native.get_float64(primary_key, _field(field_name))

    def get_bool_value(self, primary_key: Key, field_name: str) -> Optional[bool]:
        return self._native.get_bool(primary_key, _field(field_name))

    def get_value(self, primary_key: Key, field_name: str) -> Any:
        """A field's value with the type it was written with (str, bytes, int, float, bool), or None."""
        return self._native.get_value(primary_key, _field(field_name))

    def multiget_bytes_values(
        self,
        bytes_primary_keys: Sequence[bytes] = [],  # noqa: B006 (the original's signature)
        str_primary_keys: Sequence[str] = [],  # noqa: B006
        field_names: Sequence[str] = [],  # noqa: B006
    ) -> Iterator[Optional[bytes]]:
        """Values of ``field_names`` for every key, flat and key-major (bytes keys first, then
        str keys), None where missing."""
        # The keys are checked natively (a Python loop over them costs more than the reads).
        fields = str_list(field_names, "field_names")
        return iter(self._native.multiget_split(bytes_primary_keys, str_primary_keys, fields, False))

    def multiget_string_values(
        self,
        bytes_primary_keys: Sequence[bytes] = [],  # noqa: B006
        str_primary_keys: Sequence[str] = [],  # noqa: B006
        field_names: Sequence[str] = [],  # noqa: B006
    ) -> Iterator[Optional[str]]:
        """As :meth:`multiget_bytes_values`, decoded as strings."""
        fields = str_list(field_names, "field_names")
        return iter(self._native.multiget_split(bytes_primary_keys, str_primary_keys, fields, True))

    def multiget_table(self, primary_keys: Sequence[Key], field_names: Sequence[str]) -> Any:
        """Keys × fields as a ``pyarrow.Table``: column ``_ikv_key`` (binary) and one typed
        column per field, null where missing. Needs pyarrow (``pip install ikvpy[arrow]``)."""
        try:
            import pyarrow as pa
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise IKVRuntimeError("multiget_table needs pyarrow: pip install 'ikvpy[arrow]'") from e
        keys = [_key(k) for k in sequence_of(primary_keys, "primary_keys")]
        fields = str_list(field_names, "field_names")
        batch = pa.record_batch(self._native.multiget_batch(keys, fields))
        return pa.Table.from_batches([batch])

    def scan(self, field_names: Sequence[str], batch_size: int = 65_536) -> Iterator[Any]:
        """Every live document, as ``pyarrow.RecordBatch``es of at most ``batch_size`` rows:
        column ``_ikv_key`` (binary) first, then one column per field (null where a document
        has no value; typed by the values in that batch, of type null when none of its
        documents has the field: ``pyarrow.concat_tables(..., promote_options="default")``
        unifies them). All batches come from one consistent view, the one current when the
        scan starts: writes applied later are not seen. Reads the local copy only (no storage
        request); order unspecified. Needs pyarrow (``pip install ikvpy[arrow]``)."""
        try:
            import pyarrow as pa
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise IKVRuntimeError("scan needs pyarrow: pip install 'ikvpy[arrow]'") from e
        fields = str_list(field_names, "field_names")
        rows = int_in(batch_size, "batch_size", 1, 1 << 24)
        scan = self._native.scan(fields)

        def batches() -> Iterator[Any]:
            while True:
                batch = scan.next_batch(rows)
                if batch is None:
                    return
                yield pa.record_batch(batch)

        return batches()

    def status(self) -> List[Dict[str, Any]]:
        """Per mounted partition: applied_sequence, snapshot_sequence, caught_up_at (Unix
        seconds: every write committed before it is visible), last_successful_poll,
        lag_deltas, last_error, gap (a missing delta below a later one, or None), and
        owns_mount (whether this process polls the bucket for the host's readers of the mount,
        rather than following the process that does)."""
        return self._native.status()

    def metrics(self) -> Dict[str, Dict[str, Any]]:
        """This process's reader metrics, by name: ``{"type", "help", "unit", "samples"}``,
        each sample ``{"labels": {...}, "value": float}`` (histograms: ``buckets``, ``count``,
        ``sum``). Counters count what this process did since the reader started; only the
        process that owns the mount polls, so a host's processes never count a poll twice.
        ``ikvpy.metrics`` exposes them to ``prometheus_client``."""
        return self._native.metrics()


class IKVWriter:
    """Writes to a store, through the writer service (``writer_url``) or directly to storage.
    Thread-safe; concurrent calls coalesce into one commit per partition. Each call returns
    once its operations are durable."""

    def __init__(self, options: ClientOptions) -> None:
        if not isinstance(options, ClientOptions):
            raise IKVTypeError(f"expected ClientOptions, not {type(options).__name__}")
        if options.writer_url is None and options.storage_url is None:
            raise IKVValueError(
                "a writer needs a writer URL (with_writer_url / IKV_WRITER_URL) or a storage URL "
                "(with_storage_url / IKV_STORAGE_URL)"
            )
        if options.writer_url is not None and (options.account_id is None or options.account_passkey is None):
            raise IKVValueError("the writer service needs with_account_id() and with_account_passkey()")
        self._options = options
        self._native: Optional[Any] = None

    def startup(self) -> None:
        """Connects (and, with a writer service, checks the credentials)."""
        _setup_logging(self._options)
        o = self._options
        self._native = _internal.NativeWriter(
            o.store_name,
            storage_url=o.storage_url,
            storage_options=o.storage_options or None,
            writer_url=o.writer_url,
            account_id=o.account_id,
            account_passkey=o.account_passkey,
        )

    def shutdown(self) -> None:
        """Leaves the partitions' tip hints for the next writer, then lets the writer go."""
        native, self._native = self._native, None
        if native is not None:
            native.flush()

    def __enter__(self) -> "IKVWriter":
        self.startup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def metrics(self) -> Dict[str, Dict[str, Any]]:
        """This writer's metrics, shaped as :meth:`IKVReader.metrics`: commits, operations,
        bytes, commit latency, lost races, tip searches and its storage requests (direct mode;
        through a writer service there are none here: the service serves them at
        ``/metrics``)."""
        if self._native is None:
            raise IKVRuntimeError("the writer is not started: call startup()")
        return self._native.metrics()

    def _write(self, ops: list) -> List[Tuple[int, int]]:
        """Commits ``ops``; returns the ``(partition, sequence)`` of each delta holding them
        (for callers in this package that wait for their own writes)."""
        if self._native is None:
            raise IKVRuntimeError("the writer is not started: call startup()")
        return self._native.write(ops)

    def upsert_fields(
        self,
        document: IKVDocument,
        ttl_seconds: Optional[int] = None,
        event_time: "Optional[Union[datetime.datetime, int]]" = None,
    ) -> None:
        """Unions the document's fields into the stored document (later values overwrite).

        ``ttl_seconds``: the values stop being served that many seconds after the write (0:
        never, even when the store has a default); ``None`` takes the store's default.
        ``event_time`` (a timezone-aware datetime, or int microseconds since the epoch): for
        each field, the write with the newest event time wins whatever the commit order; a
        write without one is applied by commit order, as writes always are."""
        ttl, event = _ttl(ttl_seconds), _event_us(event_time)
        self._write([("upsert_fields", _document(document).as_fields(), ttl, event)])

    def upsert_fields_batch(
        self,
        documents: Sequence[IKVDocument],
        ttl_seconds: Optional[int] = None,
        event_time: "Optional[Union[datetime.datetime, int]]" = None,
    ) -> None:
        """Upserts many documents in one call: one commit per partition for the whole batch
        (an ikv addition for bulk loads; validated in full before anything is written).
        ``ttl_seconds`` and ``event_time`` as for :meth:`upsert_fields`, for every document."""
        ttl, event = _ttl(ttl_seconds), _event_us(event_time)
        self._write(
            [("upsert_fields", _document(d).as_fields(), ttl, event) for d in sequence_of(documents, "documents")]
        )

    def delete_fields(self, document: IKVDocument, fields_to_delete: Sequence[str]) -> None:
        """Deletes the named fields of the document the given one identifies."""
        names = str_list(fields_to_delete, "fields_to_delete")
        self._write([("delete_fields", _document(document).as_fields(), names)])

    def delete_document(self, document: IKVDocument) -> None:
        """Deletes the document the given one identifies."""
        self._write([("delete_document", _document(document).as_fields())])

    def drop_fields_by_name(self, field_names: Sequence[str]) -> None:
        """Drops these fields from every document (the primary key is silently kept)."""
        self._write([("drop_fields_by_name", str_list(field_names, "field_names"))])

    def drop_fields_by_name_prefix(self, field_name_prefixes: Sequence[str]) -> None:
        """Drops every field starting with one of the prefixes from every document."""
        self._write([("drop_fields_by_name_prefix", str_list(field_name_prefixes, "field_name_prefixes"))])

    def drop_all_fields(self) -> None:
        """Deletes every document of the store."""
        self._write([("drop_all_fields",)])

"""Client configuration, as in the original SDK, plus ikv's own options.

Every option has an environment default read at :meth:`ClientOptionsBuilder.build`:
``IKV_STORAGE_URL`` (storage root URL), ``IKV_WRITER_URL`` (writer service; unset means the
writer commits directly to storage), and the standard AWS variables (``AWS_ENDPOINT_URL``,
``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ...)
for S3, which the native layer reads itself.
"""

import datetime
import os
from typing import Dict, List, Optional, Tuple

from ikvpy._validate import int_in, non_blank_str, utf8_str
from ikvpy.errors import IKVTypeError, IKVValueError

_LEVELS = ("error", "warn", "info", "debug", "trace")


def _level(level: object) -> str:
    name = non_blank_str(level, "log level").lower()
    if name not in _LEVELS:
        raise IKVValueError(f"log level must be one of {', '.join(_LEVELS)} (any case), not {level!r}")
    return name


class ClientOptions:
    """Immutable options of a reader or writer; make one with :class:`ClientOptionsBuilder`.
    Picklable: a pickle carries the whole configuration (credentials included), for handing
    options to worker processes."""

    def __init__(
        self,
        store_name: Optional[str],
        account_id: Optional[str],
        account_passkey: Optional[str],
        mount_directory: Optional[str],
        storage_url: Optional[str],
        storage_options: Dict[str, str],
        writer_url: Optional[str],
        partitions: Optional[List[int]],
        poll_interval_seconds: float,
        logging: Optional[Tuple[str, Optional[str]]],
        idle_poll_interval_seconds: float = 3.0,
        wake_topic: Optional[str] = None,
        checkpoint: Optional[str] = None,
        as_of_ms: Optional[int] = None,
    ) -> None:
        self.store_name = store_name
        self.account_id = account_id
        self.account_passkey = account_passkey
        self.mount_directory = mount_directory
        self.storage_url = storage_url
        self.storage_options = dict(storage_options)
        self.writer_url = writer_url
        self.partitions = None if partitions is None else list(partitions)
        self.poll_interval_seconds = poll_interval_seconds
        self.idle_poll_interval_seconds = idle_poll_interval_seconds
        self.wake_topic = wake_topic
        self.logging = logging
        # A point-in-time reader's pin (at most one of the two).
        self.checkpoint = checkpoint
        self.as_of_ms = as_of_ms

    def __repr__(self) -> str:
        # Never shows the passkey or credentials.
        return (
            f"ClientOptions(store_name={self.store_name!r}, account_id={self.account_id!r}, "
            f"mount_directory={self.mount_directory!r}, storage_url={self.storage_url!r}, "
            f"writer_url={self.writer_url!r}, partitions={self.partitions!r}"
            + (f", checkpoint={self.checkpoint!r}" if self.checkpoint is not None else "")
            + (f", as_of_ms={self.as_of_ms!r}" if self.as_of_ms is not None else "")
            + ")"
        )


def _seconds(seconds: float, what: str) -> float:
    """A number of seconds in (0, 3600], or the ikvpy error naming ``what``."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise IKVTypeError(f"{what} must be a number of seconds, not {type(seconds).__name__}")
    if not 0 < seconds <= 3600:
        raise IKVValueError(f"{what} must be in (0, 3600] seconds, got {seconds}")
    return float(seconds)


class ClientOptionsBuilder:
    """Builds :class:`ClientOptions`. Each ``with_*`` returns the builder."""

    def __init__(self) -> None:
        self._store_name: Optional[str] = None
        self._account_id: Optional[str] = None
        self._account_passkey: Optional[str] = None
        self._mount_directory: Optional[str] = None
        self._storage_url: Optional[str] = None
        self._storage_options: Dict[str, str] = {}
        self._writer_url: Optional[str] = None
        self._partitions: Optional[List[int]] = None
        self._poll_interval_seconds = 0.5
        self._idle_poll_interval_seconds = 3.0
        self._wake_topic: Optional[str] = None
        self._logging: Optional[Tuple[str, Optional[str]]] = None
        self._checkpoint: Optional[str] = None
        self._as_of_ms: Optional[int] = None

    def with_account_id(self, account_id: str) -> "ClientOptionsBuilder":
        self._account_id = non_blank_str(account_id, "account_id")
        return self

    def with_account_passkey(self, account_passkey: str) -> "ClientOptionsBuilder":
        self._account_passkey = non_blank_str(account_passkey, "account_passkey")
        return self

    def with_store_name(self, store_name: str) -> "ClientOptionsBuilder":
        self._store_name = non_blank_str(store_name, "store_name")
        return self

    def with_mount_directory(self, mount_directory: str) -> "ClientOptionsBuilder":
        self._mount_directory = non_blank_str(mount_directory, "mount_directory")
        return self

    def with_console_logging(self, level: str) -> "ClientOptionsBuilder":
        """Log to stderr at ``level`` (error, warn, info, debug, trace; any case).

        Logging is process-wide: the first client started with a logging option sets it for
        the whole process; a later client asking for another level or destination gets an
        ``ikvpy.IKVWarning`` naming the configuration in force, and its request is ignored."""
        self._logging = (_level(level), None)
        return self

    def with_file_logging(self, level: str, filepath: str) -> "ClientOptionsBuilder":
        """Log to ``filepath`` (appended) at ``level``. Process-wide, set once: see
        :meth:`with_console_logging`."""
        self._logging = (_level(level), non_blank_str(filepath, "filepath"))
        return self

    def with_storage_url(self, storage_url: str) -> "ClientOptionsBuilder":
        """Storage root: ``s3://bucket/prefix``, ``az://container/prefix``, ``gs://bucket/prefix``,
        ``file:///abs/dir`` (docs/CLOUDS.md). Default: ``IKV_STORAGE_URL``."""
        self._storage_url = non_blank_str(storage_url, "storage_url")
        return self

    def with_storage_option(self, key: str, value: str) -> "ClientOptionsBuilder":
        """One object-store option of the URL's cloud, e.g. ``aws_endpoint``, ``aws_region``,
        ``azure_storage_account_name``, ``google_service_account``."""
        self._storage_options[non_blank_str(key, "storage option key")] = utf8_str(value, f"storage option {key!r}")
        return self

    def with_writer_url(self, writer_url: str) -> "ClientOptionsBuilder":
        """Writer service endpoint. Default: ``IKV_WRITER_URL``; unset means direct mode."""
        self._writer_url = non_blank_str(writer_url, "writer_url")
        return self

    def with_partitions(self, partitions: List[int]) -> "ClientOptionsBuilder":
        """Partitions a reader mounts (default: all)."""
        if isinstance(partitions, (str, bytes)) or not hasattr(partitions, "__iter__"):
            raise IKVTypeError(f"partitions must be a list of int, not {type(partitions).__name__}")
        parts = list(partitions)
        for p in parts:
            int_in(p, "each partition number", 0, 2**32 - 1)
        self._partitions = parts
        return self

    def with_poll_interval(self, seconds: float) -> "ClientOptionsBuilder":
        """Time between a reader's polls for new writes to partitions that changed within
        the last 30 s (default 0.5 s)."""
        self._poll_interval_seconds = _seconds(seconds, "poll interval")
        return self

    def with_idle_poll_interval(self, seconds: float) -> "ClientOptionsBuilder":
        """Time between a reader's checks of the store's wake signal once its partitions have
        been quiet for 30 s (default 3 s; never shorter than the poll interval): the longest
        the first write after a quiet spell waits to be seen, plus a round trip. One request
        per check whatever the number of partitions: 3 s costs about $0.35 a month per host,
        1 s about $1.04 (docs/OPERATIONS.md, "Request budget")."""
        self._idle_poll_interval_seconds = _seconds(seconds, "idle poll interval")
        return self

    def with_wake_topic(self, topic_arn: str) -> "ClientOptionsBuilder":
        """The bucket's wake topic (the SNS topic ARN ``ikv prepare-bucket --notify`` prints): a
        reader host subscribes a queue of its own and learns of the first write after a quiet
        spell within a long poll, instead of at its next check. Needs SQS and SNS permissions
        (docs/DEPLOY.md); without them the reader polls as without a topic."""
        self._wake_topic = non_blank_str(topic_arn, "wake topic")
        return self

    def with_checkpoint(self, name: str) -> "ClientOptionsBuilder":
        """A point-in-time reader: serves exactly the state checkpoint ``name`` pinned
        (``ikvpy.admin.create_checkpoint``) and never polls. Its local copy is a directory of
        its own under the mount directory, shared by every reader of the same point on the
        host, beside the live copy. Not with :meth:`with_as_of`."""
        if self._as_of_ms is not None:
            raise IKVValueError("a reader is pinned to a checkpoint or to a time, not both: with_as_of() was called")
        self._checkpoint = non_blank_str(name, "checkpoint name")
        return self

    def with_as_of(self, time: datetime.datetime) -> "ClientOptionsBuilder":
        """A point-in-time reader: serves the newest state committed at or before ``time``
        (a timezone-aware datetime; in each partition, the last write whose commit reached the
        bucket by then) and never polls. Within retention only: older is refused by name when
        the reader starts. Not with :meth:`with_checkpoint`."""
        if self._checkpoint is not None:
            raise IKVValueError("a reader is pinned to a checkpoint or to a time, not both: with_checkpoint() was called")
        if not isinstance(time, datetime.datetime):
            raise IKVTypeError(f"as_of must be a timezone-aware datetime, not {type(time).__name__}")
        if time.tzinfo is None:
            raise IKVValueError(f"as_of must be timezone-aware (a naive datetime names no instant): {time!r}")
        ms = int(time.timestamp() * 1000)
        if ms < 0:
            raise IKVValueError(f"as_of {time} is before 1970")
        self._as_of_ms = ms
        return self

    def build(self) -> ClientOptions:
        if self._store_name is None:
            raise IKVValueError("store_name is required: call with_store_name()")
        storage_url = self._storage_url or os.environ.get("IKV_STORAGE_URL") or None
        writer_url = self._writer_url or os.environ.get("IKV_WRITER_URL") or None
        return ClientOptions(
            store_name=self._store_name,
            account_id=self._account_id,
            account_passkey=self._account_passkey,
            mount_directory=self._mount_directory,
            storage_url=storage_url,
            storage_options=self._storage_options,
            writer_url=writer_url,
            partitions=self._partitions,
            poll_interval_seconds=self._poll_interval_seconds,
            logging=self._logging,
            idle_poll_interval_seconds=self._idle_poll_interval_seconds,
            wake_topic=self._wake_topic,
            checkpoint=self._checkpoint,
            as_of_ms=self._as_of_ms,
        )

"""Exceptions raised by ikvpy.

Every class derives from :class:`IKVError` and from the built-in type the original SDK raised
in the same situation, so ``except ValueError`` keeps working.
"""


class IKVError(Exception):
    """Base class of every ikvpy error."""


class IKVValueError(IKVError, ValueError):
    """Invalid input: a bad document, name, option or argument. Nothing was written."""


class IKVTypeError(IKVError, TypeError):
    """A value of the wrong type: an argument, or a typed read of a field of another type."""


class IKVRuntimeError(IKVError, RuntimeError):
    """A failure while running: the local store, a shut-down client."""


class StoreNotFoundError(IKVRuntimeError):
    """The store does not exist under the storage root."""


class StoreExistsError(IKVValueError):
    """create_store found a store of that name; it was left untouched."""


class StorageError(IKVRuntimeError):
    """The bucket or the writer service failed or could not be reached (may be transient)."""


class StorageAccessError(StorageError):
    """The bucket refused the credentials (S3's 401/403, a directory's permissions): fix the
    role, policy or permissions; retrying will not help."""


class CorruptDataError(IKVRuntimeError):
    """An object in the bucket fails its checksum or does not decode as the format says; it
    was not served. The message names the object."""


class AuthenticationError(IKVRuntimeError):
    """The writer service refused the account id / passkey, or the account may not write the store."""


class NotMountedError(IKVValueError):
    """The key belongs to a partition this reader does not mount."""


class MountInUseError(IKVRuntimeError):
    """Another process uses the mount directory; each reader needs its own."""


class IKVWarning(UserWarning):
    """Something ikvpy ignored or changed on the caller's behalf (for example a second,
    different logging configuration in one process)."""

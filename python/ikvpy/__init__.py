"""ikvpy: the IKV Python API over ikv's embedded reader and writer.

Modules, as in the original SDK: :mod:`ikvpy.clientoptions`, :mod:`ikvpy.document`,
:mod:`ikvpy.client`, :mod:`ikvpy.factory`; plus :mod:`ikvpy.admin`, :mod:`ikvpy.errors`,
:mod:`ikvpy.bulk` (bulk imports), :mod:`ikvpy.ray` (Ray Data; needs ``ray[data]``) and
:mod:`ikvpy.feast` (a Feast online store; needs ``feast``).
"""

from ikvpy.errors import (
    AuthenticationError,
    CorruptDataError,
    IKVError,
    IKVRuntimeError,
    IKVTypeError,
    IKVValueError,
    IKVWarning,
    MountInUseError,
    NotMountedError,
    StorageAccessError,
    StorageError,
    StoreExistsError,
    StoreNotFoundError,
)

__all__ = [
    "AuthenticationError",
    "CorruptDataError",
    "IKVError",
    "IKVRuntimeError",
    "IKVTypeError",
    "IKVValueError",
    "IKVWarning",
    "MountInUseError",
    "NotMountedError",
    "StorageAccessError",
    "StorageError",
    "StoreExistsError",
    "StoreNotFoundError",
]

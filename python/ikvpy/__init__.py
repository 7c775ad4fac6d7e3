"""ikvpy: the IKV Python API over ikv's embedded reader and writer.

Modules, as in the original SDK: :mod:`ikvpy.clientoptions`, :mod:`ikvpy.document`,
:mod:`ikvpy.client`, :mod:`ikvpy.factory`; plus :mod:`ikvpy.admin` and :mod:`ikvpy.errors`.
"""

from ikvpy.errors import (
    AuthenticationError,
    IKVError,
    IKVRuntimeError,
    IKVTypeError,
    IKVValueError,
    IKVWarning,
    MountInUseError,
    NotMountedError,
    StorageError,
    StoreExistsError,
    StoreNotFoundError,
)

__all__ = [
    "AuthenticationError",
    "IKVError",
    "IKVRuntimeError",
    "IKVTypeError",
    "IKVValueError",
    "IKVWarning",
    "MountInUseError",
    "NotMountedError",
    "StorageError",
    "StoreExistsError",
    "StoreNotFoundError",
]

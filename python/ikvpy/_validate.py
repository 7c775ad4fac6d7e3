"""Argument checks shared by the public modules (TypeError / ValueError as the original)."""

import datetime
from typing import Any, Dict, Optional

from ikvpy.errors import IKVTypeError, IKVValueError


def utf8_str(value: Any, what: str) -> str:
    """A str that UTF-8 can encode: lone surrogates (from ``surrogateescape`` decoding or a
    bad ``\\ud800`` literal) are refused here rather than failing inside the native module."""
    if not isinstance(value, str):
        raise IKVTypeError(f"{what} must be a str, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise IKVValueError(
            f"{what} is not valid Unicode text: character {e.start} is a lone surrogate "
            f"({value[e.start]!r}); pass bytes for binary data"
        ) from None
    return value


def non_blank_str(value: Any, what: str) -> str:
    utf8_str(value, what)
    if not value.strip():
        raise IKVValueError(f"{what} must not be blank")
    return value


def int_in(value: Any, what: str, low: int, high: int) -> int:
    """An int (not a bool) in ``[low, high]``: Python ints have no size limit, the native
    side's do."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise IKVTypeError(f"{what} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise IKVValueError(f"{what} must be between {low} and {high}, got {value}")
    return value


# The longest time to live (`MAX_TTL_SECONDS` in docs/FORMAT.md): 100 years.
MAX_TTL_SECONDS = 100 * 365 * 24 * 3600


def ttl_seconds(value: Any, what: str = "ttl_seconds", low: int = 0) -> "Optional[int]":
    """None (the store's default) or whole seconds: 0 (never expires, on a write) up to 100
    years."""
    if value is None:
        return None
    return int_in(value, what, low, MAX_TTL_SECONDS)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_I64 = (-(2**63), 2**63 - 1)


def event_time_us(value: Any, what: str = "event_time") -> "Optional[int]":
    """None, a timezone-aware datetime, or whole microseconds since the Unix epoch (an int,
    not a bool): a write's event time, as the native side takes it (µs, 64-bit)."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise IKVValueError(f"{what} must be timezone-aware (a naive datetime names no instant): {value!r}")
        return (value - _EPOCH) // datetime.timedelta(microseconds=1)
    if isinstance(value, bool) or not isinstance(value, int):
        raise IKVTypeError(f"{what} must be a timezone-aware datetime or int microseconds, not {type(value).__name__}")
    return int_in(value, what, _I64[0], _I64[1])


def storage_options(value: Any) -> "Optional[Dict[str, str]]":
    """None or a dict of str to str (object-store option names and values)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise IKVTypeError(f"storage_options must be a dict of str to str, not {type(value).__name__}")
    for k, v in value.items():
        non_blank_str(k, "a storage option name")
        utf8_str(v, f"storage option {k!r}")
    return dict(value)


def str_list(values: Any, what: str) -> "list[str]":
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise IKVTypeError(f"{what} must be a list of str, not {type(values).__name__}")
    out = list(values)
    for v in out:
        non_blank_str(v, f"each of {what}")
    return out


def sequence_of(values: Any, what: str) -> "list[Any]":
    """A list from any iterable except a str or bytes, which would otherwise be taken one
    character (or byte) at a time."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise IKVTypeError(f"{what} must be a list, not {type(values).__name__}")
    return list(values)


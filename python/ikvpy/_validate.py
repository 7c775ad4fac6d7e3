"""Argument checks shared by the public modules (TypeError / ValueError as the original)."""

from typing import Any

from ikvpy.errors import IKVTypeError, IKVValueError


def non_blank_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise IKVTypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise IKVValueError(f"{what} must not be blank")
    return value


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


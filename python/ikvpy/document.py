"""Documents: build them with :class:`IKVDocumentBuilder`."""

from typing import Any, List, Tuple

from ikvpy._validate import non_blank_str, utf8_str
from ikvpy.errors import IKVTypeError, IKVValueError

# Type codes shared with the native module (and the on-bucket format).
STRING, BYTES, INT64, FLOAT64, BOOL = 1, 2, 3, 4, 5
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class IKVDocument:
    """A set of named, typed field values. Immutable once built."""

    def __init__(self, fields: "dict[str, Tuple[int, Any]]") -> None:
        self._fields = dict(fields)

    def as_fields(self) -> List[Tuple[str, int, Any]]:
        """``(name, type code, value)`` for every field."""
        return [(name, code, value) for name, (code, value) in self._fields.items()]

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"IKVDocument({ {k: v for k, (_, v) in self._fields.items()} })"


class IKVDocumentBuilder:
    """Builds an :class:`IKVDocument`. Putting a field twice keeps the last value."""

    def __init__(self) -> None:
        self._fields: "dict[str, Tuple[int, Any]]" = {}

    def _put(self, name: str, code: int, value: Any) -> "IKVDocumentBuilder":
        self._fields[non_blank_str(name, "field name")] = (code, value)
        return self

    def put_string_field(self, name: str, value: str) -> "IKVDocumentBuilder":
        if not isinstance(value, str):
            raise IKVTypeError(f"field {name!r}: value must be a str, not {type(value).__name__}")
        return self._put(name, STRING, utf8_str(value, f"field {name!r}"))

    def put_bytes_field(self, name: str, value: bytes) -> "IKVDocumentBuilder":
        if isinstance(value, (bytearray, memoryview)):
            value = bytes(value)
        if not isinstance(value, bytes):
            raise IKVTypeError(f"field {name!r}: value must be bytes, not {type(value).__name__}")
        return self._put(name, BYTES, value)

    def put_int64_field(self, name: str, value: int) -> "IKVDocumentBuilder":
        if isinstance(value, bool) or not isinstance(value, int):
            raise IKVTypeError(f"field {name!r}: value must be an int, not {type(value).__name__}")
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise IKVValueError(f"field {name!r}: {value} does not fit in a signed 64-bit integer")
        return self._put(name, INT64, value)

    def put_float64_field(self, name: str, value: float) -> "IKVDocumentBuilder":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise IKVTypeError(f"field {name!r}: value must be a float, not {type(value).__name__}")
        try:
            as_float = float(value)
        except OverflowError:
            raise IKVValueError(f"field {name!r}: {value} is too large for a 64-bit float") from None
        return self._put(name, FLOAT64, as_float)

    def put_bool_field(self, name: str, value: bool) -> "IKVDocumentBuilder":
        if not isinstance(value, bool):
            raise IKVTypeError(f"field {name!r}: value must be a bool, not {type(value).__name__}")
        return self._put(name, BOOL, value)

    def build(self) -> IKVDocument:
        return IKVDocument(self._fields)

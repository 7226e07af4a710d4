"""Sans-IO AMF0 encoder/decoder (Adobe "Action Message Format -- AMF 0" specification).

Decoding is defensive: every malformed, truncated or over-deep input raises
:class:`AMF0Error` (a :class:`~common.proto.errors.ProtocolError`), never anything else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from common.proto.errors import ProtocolError

__all__ = [
    "UNDEFINED",
    "AMF0Error",
    "AMFDate",
    "ECMAArray",
    "MAX_DEPTH",
    "decode_all",
    "decode_value",
    "encode",
]

# Type markers.
NUMBER: Final = 0x00
BOOLEAN: Final = 0x01
STRING: Final = 0x02
OBJECT: Final = 0x03
MOVIECLIP: Final = 0x04
NULL: Final = 0x05
UNDEFINED_MARKER: Final = 0x06
REFERENCE: Final = 0x07
ECMA_ARRAY: Final = 0x08
OBJECT_END: Final = 0x09
STRICT_ARRAY: Final = 0x0A
DATE: Final = 0x0B
LONG_STRING: Final = 0x0C
UNSUPPORTED: Final = 0x0D
RECORDSET: Final = 0x0E
XML_DOCUMENT: Final = 0x0F
TYPED_OBJECT: Final = 0x10
AVMPLUS: Final = 0x11

#: Maximum nesting of objects / arrays accepted by the decoder (and the encoder).
MAX_DEPTH: Final = 64

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_F64 = struct.Struct(">d")
_NUMBER = struct.Struct(">Bd")
_BOOL_TRUE = b"\x01\x01"
_BOOL_FALSE = b"\x01\x00"
_STRING_HDR = struct.Struct(">BH")
_LONG_HDR = struct.Struct(">BI")
_COUNT_HDR = struct.Struct(">BI")
_DATE = struct.Struct(">Bdh")
_DATE_BODY = struct.Struct(">dh")
_OBJECT_END = b"\x00\x00\x09"


class AMF0Error(ProtocolError):
    """Malformed AMF0 data."""


class _Undefined:
    """Type of the :data:`UNDEFINED` singleton (AMF0 ``undefined``, marker 0x06)."""

    __slots__ = ()
    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


#: The AMF0 ``undefined`` value.
UNDEFINED: Final = _Undefined()


class ECMAArray(dict):
    """An AMF0 ECMA array (associative array, marker 0x08); a plain ``dict`` otherwise."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"ECMAArray({dict.__repr__(self)})"


@dataclass(frozen=True)
class AMFDate:
    """An AMF0 date: milliseconds since the Unix epoch (UTC) and a (reserved) time-zone field."""

    ms: float
    tz: int = 0


# --------------------------------------------------------------------------- encoding


def encode(*values: object) -> bytes:
    """Encode each value in turn and return the concatenated AMF0 bytes.

    Raises ``TypeError`` for unsupported types and ``ValueError`` for values that cannot
    be represented (over-long keys, unencodable strings, nesting deeper than ``MAX_DEPTH``).
    """
    out: list[bytes] = []
    for value in values:
        _encode(value, out, 0)
    return b"".join(out)


def _encode_key(key: object, out: list[bytes]) -> None:
    if not isinstance(key, str):
        raise TypeError(f"AMF0 object keys must be str, not {type(key).__name__}")
    raw = key.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("AMF0 object key longer than 65535 bytes")
    out.append(_U16.pack(len(raw)))
    out.append(raw)


def _encode(value: object, out: list[bytes], depth: int) -> None:
    if isinstance(value, str):
        raw = value.encode("utf-8")
        n = len(raw)
        if n <= 0xFFFF:
            out.append(_STRING_HDR.pack(STRING, n))
        else:
            out.append(_LONG_HDR.pack(LONG_STRING, n))
        out.append(raw)
    elif value is None:
        out.append(b"\x05")
    elif isinstance(value, bool):  # before int: bool is an int subclass
        out.append(_BOOL_TRUE if value else _BOOL_FALSE)
    elif isinstance(value, int | float):
        out.append(_NUMBER.pack(NUMBER, float(value)))
    elif isinstance(value, dict | list | tuple):
        depth += 1
        if depth > MAX_DEPTH:
            raise ValueError(f"AMF0 nesting deeper than {MAX_DEPTH}")
        if isinstance(value, dict):
            if isinstance(value, ECMAArray):
                out.append(_COUNT_HDR.pack(ECMA_ARRAY, len(value)))
            else:
                out.append(b"\x03")
            for key, item in value.items():
                _encode_key(key, out)
                _encode(item, out, depth)
            out.append(_OBJECT_END)
        else:
            out.append(_COUNT_HDR.pack(STRICT_ARRAY, len(value)))
            for item in value:
                _encode(item, out, depth)
    elif value is UNDEFINED:
        out.append(b"\x06")
    elif isinstance(value, AMFDate):
        if not -0x8000 <= value.tz <= 0x7FFF:
            raise ValueError("AMFDate.tz must fit in a signed 16-bit integer")
        out.append(_DATE.pack(DATE, float(value.ms), value.tz))
    else:
        raise TypeError(f"cannot AMF0-encode {type(value).__name__}")


# --------------------------------------------------------------------------- decoding

Buffer = bytes | bytearray | memoryview


def decode_value(data: Buffer, pos: int = 0) -> tuple[object, int]:
    """Decode one AMF0 value starting at ``pos``; return ``(value, new_pos)``."""
    if pos < 0 or pos >= len(data):
        raise AMF0Error("no AMF0 value at end of data")
    return _decode(data, pos, len(data), 0)


def decode_all(data: Buffer) -> list[object]:
    """Decode consecutive AMF0 values until the end of ``data``."""
    end = len(data)
    pos = 0
    values: list[object] = []
    while pos < end:
        value, pos = _decode(data, pos, end, 0)
        values.append(value)
    return values


def _read_utf8(data: Buffer, start: int, n: int, end: int) -> str:
    stop = start + n
    if stop > end:
        raise AMF0Error("truncated AMF0 string")
    try:
        return str(data[start:stop], "utf-8")
    except UnicodeDecodeError as exc:
        raise AMF0Error(f"invalid UTF-8 in AMF0 string: {exc.reason}") from None


def _read_props(data: Buffer, pos: int, end: int, depth: int, out: dict) -> int:
    """Read ``key, value`` pairs into ``out`` up to and including the object-end marker."""
    unpack_u16 = _U16.unpack_from
    while True:
        if pos + 2 > end:
            raise AMF0Error("truncated AMF0 object (missing object end)")
        (n,) = unpack_u16(data, pos)
        pos += 2
        if n == 0:
            if pos >= end:
                raise AMF0Error("truncated AMF0 object (missing object end)")
            if data[pos] == OBJECT_END:
                return pos + 1
            key = ""
        else:
            key = _read_utf8(data, pos, n, end)
            pos += n
            if pos >= end:
                raise AMF0Error("truncated AMF0 object property")
        value, pos = _decode(data, pos, end, depth)
        out[key] = value


def _decode(data: Buffer, pos: int, end: int, depth: int) -> tuple[object, int]:
    marker = data[pos]
    pos += 1
    if marker == NUMBER:
        if pos + 8 > end:
            raise AMF0Error("truncated AMF0 number")
        return _F64.unpack_from(data, pos)[0], pos + 8
    if marker == STRING:
        if pos + 2 > end:
            raise AMF0Error("truncated AMF0 string length")
        (n,) = _U16.unpack_from(data, pos)
        pos += 2
        return _read_utf8(data, pos, n, end), pos + n
    if marker == BOOLEAN:
        if pos >= end:
            raise AMF0Error("truncated AMF0 boolean")
        return data[pos] != 0, pos + 1
    if marker == NULL:
        return None, pos
    if marker == UNDEFINED_MARKER:
        return UNDEFINED, pos
    if marker in (OBJECT, ECMA_ARRAY, TYPED_OBJECT, STRICT_ARRAY):
        depth += 1
        if depth > MAX_DEPTH:
            raise AMF0Error(f"AMF0 nesting deeper than {MAX_DEPTH}")
        if marker == OBJECT:
            obj: dict = {}
            return obj, _read_props(data, pos, end, depth, obj)
        if marker == ECMA_ARRAY:
            # The associative-count is only a hint; read until the object-end marker.
            if pos + 4 > end:
                raise AMF0Error("truncated AMF0 ECMA array count")
            arr = ECMAArray()
            return arr, _read_props(data, pos + 4, end, depth, arr)
        if marker == TYPED_OBJECT:
            if pos + 2 > end:
                raise AMF0Error("truncated AMF0 typed object class name")
            (n,) = _U16.unpack_from(data, pos)
            _read_utf8(data, pos + 2, n, end)  # class name, validated and dropped
            obj = {}
            return obj, _read_props(data, pos + 2 + n, end, depth, obj)
        # STRICT_ARRAY
        if pos + 4 > end:
            raise AMF0Error("truncated AMF0 strict array count")
        (count,) = _U32.unpack_from(data, pos)
        pos += 4
        if count > end - pos:  # every element takes at least one byte
            raise AMF0Error(f"AMF0 strict array count {count} exceeds remaining data")
        items: list[object] = []
        append = items.append
        for _ in range(count):
            if pos >= end:
                raise AMF0Error("truncated AMF0 strict array")
            item, pos = _decode(data, pos, end, depth)
            append(item)
        return items, pos
    if marker == DATE:
        if pos + 10 > end:
            raise AMF0Error("truncated AMF0 date")
        ms, tz = _DATE_BODY.unpack_from(data, pos)
        return AMFDate(ms, tz), pos + 10
    if marker in (LONG_STRING, XML_DOCUMENT):
        if pos + 4 > end:
            raise AMF0Error("truncated AMF0 long string length")
        (n,) = _U32.unpack_from(data, pos)
        pos += 4
        return _read_utf8(data, pos, n, end), pos + n
    if marker == UNSUPPORTED:
        return None, pos
    if marker == REFERENCE:
        # References are never produced by RTMP encoders in practice; resolving them
        # would allow shared/cyclic structures, so they are rejected.
        raise AMF0Error("AMF0 references are not supported")
    if marker == OBJECT_END:
        raise AMF0Error("AMF0 object-end marker outside an object")
    if marker == AVMPLUS:
        raise AMF0Error("AMF3 (avmplus-object) values are not supported")
    raise AMF0Error(f"unknown or reserved AMF0 type marker 0x{marker:02x}")

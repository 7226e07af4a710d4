"""Tests for common.proto.amf0."""

from __future__ import annotations

import contextlib
import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.proto.amf0 import (
    MAX_DEPTH,
    UNDEFINED,
    AMF0Error,
    AMFDate,
    ECMAArray,
    decode_all,
    decode_value,
    encode,
)
from common.proto.errors import ProtocolError


def _norm(value: object) -> object:
    """Type-tagged, order-preserving form for exact round-trip comparison."""
    if isinstance(value, ECMAArray):
        return ("ecma", [(k, _norm(v)) for k, v in value.items()])
    if isinstance(value, dict):
        return ("obj", [(k, _norm(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return ("list", [_norm(v) for v in value])
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", float(value))
    if isinstance(value, AMFDate):
        return ("date", float(value.ms), value.tz)
    return (type(value).__name__, value)


# --------------------------------------------------------------------------- known vectors


def test_connect_command_bytes() -> None:
    expected = (
        b"\x02\x00\x07connect"
        + b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"
        + b"\x03\x00\x03app\x02\x00\x04live\x00\x00\x09"
    )
    assert encode("connect", 1.0, {"app": "live"}) == expected
    assert decode_all(expected) == ["connect", 1.0, {"app": "live"}]


@pytest.mark.parametrize(
    ("value", "raw"),
    [
        (None, b"\x05"),
        (True, b"\x01\x01"),
        (False, b"\x01\x00"),
        (1, b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"),
        (-2.5, b"\x00" + struct.pack(">d", -2.5)),
        ("", b"\x02\x00\x00"),
        ("é", b"\x02\x00\x02\xc3\xa9"),
        (UNDEFINED, b"\x06"),
        ([], b"\x0a\x00\x00\x00\x00"),
        ((None, "a"), b"\x0a\x00\x00\x00\x02\x05\x02\x00\x01a"),
        ({}, b"\x03\x00\x00\x09"),
        (ECMAArray(), b"\x08\x00\x00\x00\x00\x00\x00\x09"),
        (ECMAArray(a=None), b"\x08\x00\x00\x00\x01\x00\x01a\x05\x00\x00\x09"),
        (AMFDate(1.0, -60), b"\x0b" + struct.pack(">dh", 1.0, -60)),
    ],
)
def test_encode_known_bytes(value: object, raw: bytes) -> None:
    assert encode(value) == raw
    decoded, pos = decode_value(raw)
    assert pos == len(raw)
    assert _norm(decoded) == _norm(value)


def test_bool_is_not_encoded_as_number() -> None:
    assert encode(True, 1) == b"\x01\x01\x00" + struct.pack(">d", 1.0)


def test_long_string_round_trip() -> None:
    short = "x" * 0xFFFF
    long = "y" * 0x10000
    assert encode(short)[0] == 0x02
    raw = encode(long)
    assert raw[:5] == b"\x0c\x00\x01\x00\x00"
    assert decode_all(raw) == [long]
    assert decode_all(encode(short)) == [short]
    # Multi-byte characters: the limit is on UTF-8 length, not characters.
    wide = "é" * 0x8000
    assert encode(wide)[0] == 0x0C
    assert decode_all(encode(wide)) == [wide]


def test_ecma_array_type_preserved() -> None:
    (value,) = decode_all(encode(ECMAArray(duration=0.0, width=320)))
    assert type(value) is ECMAArray
    assert value == {"duration": 0.0, "width": 320.0}
    assert repr(value).startswith("ECMAArray(")


def test_ecma_array_wrong_count_still_decodes() -> None:
    body = b"\x00\x01a\x00" + struct.pack(">d", 1.0) + b"\x00\x01b\x05\x00\x00\x09"
    for count in (0, 1, 7, 0xFFFFFFFF):
        raw = b"\x08" + struct.pack(">I", count) + body + b"\x05"
        assert decode_all(raw) == [{"a": 1.0, "b": None}, None]


def test_object_key_order_and_nesting() -> None:
    value = {"z": 1, "a": [1, {"b": ECMAArray(c="d")}], "m": None}
    (decoded,) = decode_all(encode(value))
    assert list(decoded) == ["z", "a", "m"]
    assert _norm(decoded) == _norm(value)


def test_empty_key_property() -> None:
    raw = b"\x03\x00\x00\x05\x00\x00\x09"  # key "" -> null, then object end
    assert decode_all(raw) == [{"": None}]


def test_typed_object_unsupported_and_xml() -> None:
    raw = b"\x10\x00\x03Foo\x00\x01x\x01\x01\x00\x00\x09"
    assert decode_all(raw) == [{"x": True}]
    assert decode_all(b"\x0d") == [None]
    assert decode_all(b"\x0f\x00\x00\x00\x03<a>") == ["<a>"]


def test_undefined_singleton() -> None:
    assert repr(UNDEFINED) == "UNDEFINED"
    assert decode_all(b"\x06")[0] is UNDEFINED
    assert type(UNDEFINED)() is UNDEFINED


def test_decode_value_position_and_memoryview() -> None:
    raw = encode("a", 2.0, None)
    view = memoryview(b"junk" + raw)
    value, pos = decode_value(view, 4)
    assert (value, pos) == ("a", 8)
    value, pos = decode_value(view, pos)
    assert (value, pos) == (2.0, 17)
    assert decode_value(view, pos) == (None, 18)
    assert decode_all(bytearray(raw)) == ["a", 2.0, None]
    assert decode_all(b"") == []


def test_encode_rejects_unsupported() -> None:
    with pytest.raises(TypeError):
        encode(object())
    with pytest.raises(TypeError):
        encode({1: "x"})
    with pytest.raises(TypeError):
        encode(b"bytes")
    with pytest.raises(ValueError):
        encode({"k" * 0x10000: 1})
    with pytest.raises(ValueError):
        encode(AMFDate(0.0, 1 << 20))
    deep: list = []
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(ValueError):
        encode(deep)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\x00\x00\x00", id="short-number"),
        pytest.param(b"\x01", id="short-bool"),
        pytest.param(b"\x02\x00", id="short-string-len"),
        pytest.param(b"\x02\x00\x05abc", id="short-string"),
        pytest.param(b"\x02\x00\x02\xc3\x28", id="bad-utf8"),
        pytest.param(b"\x02\x00\x03\xed\xa0\x80", id="surrogate-utf8"),
        pytest.param(b"\x03\x00\x02\xff\xfe\x05\x00\x00\x09", id="bad-utf8-key"),
        pytest.param(b"\x03\x00\x01a\x05", id="object-no-end"),
        pytest.param(b"\x03\x00\x01a", id="object-key-no-value"),
        pytest.param(b"\x03\x00\x01a\x09", id="object-end-as-value"),
        pytest.param(b"\x08\x00\x00", id="ecma-short-count"),
        pytest.param(b"\x08\x00\x00\x00\x00\x00", id="ecma-no-end"),
        pytest.param(b"\x09", id="bare-object-end"),
        pytest.param(b"\x0a\x00\x00\x00\x02\x05", id="strict-array-short"),
        pytest.param(b"\x0a\xff\xff\xff\xff", id="strict-array-huge"),
        pytest.param(b"\x0b\x00\x00", id="short-date"),
        pytest.param(b"\x0c\x00\x00\x00\x09abc", id="short-long-string"),
        pytest.param(b"\x07\x00\x00", id="reference"),
        pytest.param(b"\x11\x02", id="amf3-switch"),
        pytest.param(b"\x04", id="movieclip"),
        pytest.param(b"\x0e", id="recordset"),
        pytest.param(b"\x10\x00\x05Fo", id="typed-object-short-name"),
        pytest.param(b"\x12", id="unknown-marker"),
        pytest.param(b"\xff", id="unknown-marker-ff"),
    ],
)
def test_malformed_raises(raw: bytes) -> None:
    with pytest.raises(AMF0Error):
        decode_all(raw)


def test_decode_value_out_of_range() -> None:
    with pytest.raises(AMF0Error):
        decode_value(b"")
    with pytest.raises(AMF0Error):
        decode_value(b"\x05", 1)
    with pytest.raises(AMF0Error):
        decode_value(b"\x05", -1)


def test_every_truncation_raises() -> None:
    raw = encode(
        {"a": [1, "two", ECMAArray(x=None)], "d": AMFDate(5.0), "s": "z" * 70000, "u": UNDEFINED}
    )
    for cut in range(len(raw)):
        with pytest.raises(AMF0Error):
            decode_value(raw[:cut])


def test_depth_limit() -> None:
    ok = b"\x0a\x00\x00\x00\x01" * (MAX_DEPTH - 1) + b"\x05"
    assert decode_all(ok)
    too_deep = b"\x0a\x00\x00\x00\x01" * (MAX_DEPTH + 1) + b"\x05"
    with pytest.raises(AMF0Error):
        decode_all(too_deep)
    # Far deeper than Python's recursion limit, mixed containers.
    nested = b"\x03\x00\x01k" * 5000
    with pytest.raises(AMF0Error):
        decode_all(nested)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x02\x00\x05ab", "truncated AMF0 string"),
        (b"\x00\x01\x02", "truncated AMF0 number"),
        (b"\x42", "type marker 0x42"),
    ],
)
def test_bad_amf0_is_a_protocol_error_saying_why(data: bytes, why: str) -> None:
    """What the servers catch to close the connection and log the reason."""
    with pytest.raises(ProtocolError, match=why):
        decode_all(data)


# --------------------------------------------------------------------------- properties

_keys = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
    | st.just(UNDEFINED)
    | st.builds(
        AMFDate,
        st.floats(allow_nan=False),
        st.integers(min_value=-0x8000, max_value=0x7FFF),
    )
)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(_keys, children, max_size=5)
        | st.dictionaries(_keys, children, max_size=5).map(ECMAArray)
    ),
    max_leaves=30,
)


@given(st.lists(_values, max_size=4))
def test_round_trip(values: list[object]) -> None:
    raw = encode(*values)
    decoded = decode_all(raw)
    assert [_norm(v) for v in decoded] == [_norm(v) for v in values]


def test_nan_round_trip() -> None:
    (value,) = decode_all(encode(math.nan))
    assert math.isnan(value)


@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    with contextlib.suppress(AMF0Error):
        decode_all(data)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    _values,
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(min_value=0),
)
def test_fuzz_mutated_encodings(value: object, flips: list[tuple[int, int]], cut: int) -> None:
    raw = bytearray(encode(value))
    for index, byte in flips:
        raw[index % len(raw)] = byte
    for data in (bytes(raw), bytes(raw[: cut % (len(raw) + 1)])):
        with contextlib.suppress(AMF0Error):
            decode_all(data)

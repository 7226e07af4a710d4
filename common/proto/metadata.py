"""Publisher metadata (onMetaData) reduced to what a node uses: short keys with finite
numbers, booleans or short printable strings. Anything else is dropped, so metadata never
carries NaN, deep objects or control characters into JSON, msgpack, logs or headers."""

from __future__ import annotations

import math

from common.proto import amf0

MAX_KEYS = 64
MAX_KEY = 64
MAX_TEXT = 256


def _clean_value(value: object) -> object | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else None
    if isinstance(value, str) and len(value) <= MAX_TEXT and value.isprintable():
        return value
    return None


def clean(values: dict) -> tuple[dict, list[str]]:
    """The usable part of `values`, and the (shown, bounded) keys that were dropped."""
    kept: dict = {}
    dropped: list[str] = []
    for key, value in values.items():
        ok = isinstance(key, str) and 0 < len(key) <= MAX_KEY and key.isprintable()
        cleaned = _clean_value(value) if ok and len(kept) < MAX_KEYS else None
        if cleaned is None:
            if len(dropped) < 8:
                dropped.append(ascii(key)[:MAX_KEY] if isinstance(key, str) else repr(type(key)))
            continue
        kept[key] = cleaned
    return kept, dropped


def encode(values: dict) -> bytes:
    """The onMetaData body (AMF0 "onMetaData" + ECMA array) for cleaned `values`."""
    return amf0.encode("onMetaData", amf0.ECMAArray(values))

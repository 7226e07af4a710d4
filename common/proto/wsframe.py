"""The WebSocket frames a server sends with media (RFC 6455 5.2): unmasked binary frames
whose header is built once per batch; the payload parts follow it unchanged."""

from __future__ import annotations

import struct

MAX_SMALL = 125
MAX_MEDIUM = 0xFFFF


def binary_header(size: int) -> bytes:
    """The header of one final, unmasked binary frame of `size` payload bytes."""
    if size <= MAX_SMALL:
        return bytes((0x82, size))
    if size <= MAX_MEDIUM:
        return struct.pack("!BBH", 0x82, 126, size)
    return struct.pack("!BBQ", 0x82, 127, size)


def binary_frame(payload: bytes) -> bytes:
    """One whole binary frame (for a one-off message; batches use `binary_header`)."""
    return binary_header(len(payload)) + payload

"""RTMP message type ids, protocol control messages and command helpers."""

from __future__ import annotations

import struct

from common.proto import amf0

SET_CHUNK_SIZE = 1
ABORT = 2
ACKNOWLEDGEMENT = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
SHARED_OBJECT_AMF3 = 16
COMMAND_AMF3 = 17
DATA_AMF0 = 18
SHARED_OBJECT_AMF0 = 19
COMMAND_AMF0 = 20
AGGREGATE = 22

# User control event types
UC_STREAM_BEGIN = 0
UC_STREAM_EOF = 1
UC_STREAM_DRY = 2
UC_SET_BUFFER_LENGTH = 3
UC_STREAM_IS_RECORDED = 4
UC_PING_REQUEST = 6
UC_PING_RESPONSE = 7

# Chunk stream ids used for what we send.
CSID_CONTROL = 2
CSID_COMMAND = 3
CSID_DATA = 5
CSID_AUDIO = 6
CSID_VIDEO = 7

_U32 = struct.Struct(">I")
_UC = struct.Struct(">HI")


def u32(value: int) -> bytes:
    """A 4-byte big-endian unsigned integer."""
    return _U32.pack(value & 0xFFFFFFFF)


def user_control(event: int, value: int) -> bytes:
    """Payload of a user control message with one 32-bit argument."""
    return _UC.pack(event, value & 0xFFFFFFFF)


def set_buffer_length(stream_id: int, ms: int) -> bytes:
    """Payload of the SetBufferLength user control event."""
    return _UC.pack(UC_SET_BUFFER_LENGTH, stream_id) + u32(ms)


def peer_bandwidth(size: int, limit_type: int = 2) -> bytes:
    """Payload of Set Peer Bandwidth (limit type 2 = dynamic)."""
    return u32(size) + bytes((limit_type,))


def command(name: str, transaction_id: float, obj: object, *args: object) -> bytes:
    """AMF0 command payload: name, transaction id, command object, arguments."""
    return amf0.encode(name, transaction_id, obj, *args)


def status_info(level: str, code: str, description: str, **extra: object) -> dict:
    """An onStatus / _result info object."""
    info = {"level": level, "code": code, "description": description}
    info.update(extra)
    return info


def split_aggregate(timestamp: int, payload: bytes) -> list[tuple[int, int, bytes]]:
    """Split an aggregate message into (type_id, timestamp, body) sub-messages.

    Sub-message timestamps are rebased so the first one equals the aggregate's timestamp.
    """
    from common.proto.rtmp.chunk import ChunkError

    out: list[tuple[int, int, bytes]] = []
    pos = 0
    first_ts: int | None = None
    end = len(payload)
    while pos < end:
        if end - pos < 11:
            raise ChunkError("truncated aggregate sub-message header")
        type_id = payload[pos]
        size = int.from_bytes(payload[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(payload[pos + 4 : pos + 7], "big") | (payload[pos + 7] << 24)
        body_start = pos + 11
        if end - body_start < size:
            raise ChunkError("truncated aggregate sub-message body")
        if first_ts is None:
            first_ts = ts
        out.append(
            (
                type_id,
                (timestamp + ts - first_ts) & 0xFFFFFFFF,
                payload[body_start : body_start + size],
            )
        )
        pos = body_start + size + 4
    return out

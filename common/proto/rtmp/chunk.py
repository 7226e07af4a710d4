"""RTMP chunk stream: reassemble messages from chunks, and split messages into chunks.

Sans-IO: `ChunkReader.feed(bytes) -> list[Message]` and `encode_message(...) -> bytes`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from common.proto.errors import ProtocolError

DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 0xFFFFFF
EXTENDED_TS = 0xFFFFFF

_U24 = struct.Struct(">I")
_U32 = struct.Struct(">I")
_U32LE = struct.Struct("<I")


class ChunkError(ProtocolError):
    """The chunk stream is malformed or exceeds a configured bound."""


@dataclass(slots=True)
class Message:
    """One reassembled RTMP message."""

    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes
    csid: int = 0


@dataclass(slots=True)
class _ChunkState:
    """What the last chunk header on one chunk stream said, plus a partial message."""

    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    started: bool = False
    parts: list | None = None
    received: int = 0


class ChunkReader:
    """Reassembles RTMP messages from a chunked byte stream.

    `max_message_size` caps any declared message length; `max_chunk_streams` caps how many
    distinct chunk stream ids a peer may use (each keeps header state for compression);
    `max_pending_bytes` caps the bytes of all partly received messages together (default:
    one largest message plus 1 MiB), so a peer cannot make a connection hold
    `max_chunk_streams` partial messages of the largest size.
    """

    __slots__ = (
        "chunk_size",
        "max_message_size",
        "max_chunk_streams",
        "max_pending_bytes",
        "pending_bytes",
        "bytes_received",
        "_buf",
        "_states",
    )

    def __init__(
        self,
        *,
        max_message_size: int = 8 * 1024 * 1024,
        max_chunk_streams: int = 64,
        max_pending_bytes: int | None = None,
    ) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_message_size = max_message_size
        self.max_chunk_streams = max_chunk_streams
        self.max_pending_bytes = (
            max_pending_bytes if max_pending_bytes is not None else max_message_size + (1 << 20)
        )
        self.pending_bytes = 0
        self.bytes_received = 0
        self._buf = bytearray()
        self._states: dict[int, _ChunkState] = {}

    def set_chunk_size(self, size: int) -> None:
        """Apply the peer's Set Chunk Size."""
        if size < 1 or size > MAX_CHUNK_SIZE:
            raise ChunkError(f"absurd chunk size {size} (allowed 1..{MAX_CHUNK_SIZE})")
        self.chunk_size = size

    def abort(self, csid: int) -> None:
        """Apply the peer's Abort Message: drop the partial message on `csid`."""
        state = self._states.get(csid)
        if state is not None:
            self.pending_bytes -= state.received
            state.parts = None
            state.received = 0

    def feed(self, data: bytes) -> list[Message]:
        """Consume bytes; return every message completed by them."""
        self.bytes_received += len(data)
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos = 0
        end = len(buf)
        try:
            while True:
                consumed = self._read_chunk(buf, pos, end, out)
                if consumed == 0:
                    break
                pos += consumed
        finally:
            if pos:
                del buf[:pos]
        return out

    def _read_chunk(self, buf: bytearray, pos: int, end: int, out: list[Message]) -> int:
        """Parse one chunk at `pos`; return bytes consumed, or 0 if incomplete."""
        if pos >= end:
            return 0
        start = pos
        b0 = buf[pos]
        fmt = b0 >> 6
        csid = b0 & 0x3F
        pos += 1
        if csid == 0:
            if end - pos < 1:
                return 0
            csid = 64 + buf[pos]
            pos += 1
        elif csid == 1:
            if end - pos < 2:
                return 0
            csid = 64 + buf[pos] + (buf[pos + 1] << 8)
            pos += 2
        header_len = (11, 7, 3, 0)[fmt]
        if end - pos < header_len:
            return 0
        state = self._states.get(csid)
        if state is None:
            if fmt != 0:
                raise ChunkError(f"chunk stream {csid} starts with fmt {fmt}, not fmt 0")
            if len(self._states) >= self.max_chunk_streams:
                raise ChunkError(f"more than {self.max_chunk_streams} chunk streams in use")
            state = _ChunkState()
        new_message = state.parts is None
        ts_field = None if fmt == 3 else buf[pos] << 16 | buf[pos + 1] << 8 | buf[pos + 2]
        if fmt <= 1:
            length = (buf[pos + 3] << 16) | (buf[pos + 4] << 8) | buf[pos + 5]
            type_id = buf[pos + 6]
        else:
            length = state.length
            type_id = state.type_id
        stream_id = _U32LE.unpack_from(buf, pos + 7)[0] if fmt == 0 else state.stream_id
        pos += header_len
        extended = ts_field == EXTENDED_TS if fmt < 3 else state.extended
        if extended:
            if end - pos < 4:
                return 0
            ext = _U32.unpack_from(buf, pos)[0]
            pos += 4
            if ts_field == EXTENDED_TS:
                ts_field = ext
        if not new_message and fmt != 3:
            raise ChunkError(f"fmt {fmt} chunk on stream {csid} in the middle of a message")
        if new_message and length > self.max_message_size:
            raise ChunkError(
                f"message of {length} bytes exceeds the {self.max_message_size}-byte cap"
            )
        remaining = length - state.received if not new_message else length
        take = min(self.chunk_size, remaining)
        if end - pos < take:
            return 0
        # The whole chunk is present: commit the header to the chunk stream's state.
        if csid not in self._states:
            self._states[csid] = state
        if new_message:
            if fmt == 0:
                state.timestamp = ts_field
                state.delta = ts_field
            elif fmt in (1, 2):
                state.delta = ts_field
                state.timestamp = (state.timestamp + ts_field) & 0xFFFFFFFF
            else:
                state.timestamp = (state.timestamp + state.delta) & 0xFFFFFFFF
            state.length = length
            state.type_id = type_id
            state.stream_id = stream_id
            state.extended = extended
            state.parts = []
            state.received = 0
        if take:
            if self.pending_bytes + take > self.max_pending_bytes:
                raise ChunkError(
                    f"partly received messages exceed {self.max_pending_bytes} bytes together"
                )
            state.parts.append(bytes(buf[pos : pos + take]))
            state.received += take
            self.pending_bytes += take
        pos += take
        if state.received >= state.length:
            self.pending_bytes -= state.received
            parts = state.parts
            payload = parts[0] if len(parts) == 1 else b"".join(parts)
            state.parts = None
            state.received = 0
            out.append(Message(state.type_id, state.stream_id, state.timestamp, payload, csid))
            # Set Chunk Size and Abort change how the very next chunks parse: apply them now.
            if state.type_id == 1 and len(payload) >= 4:
                size = int.from_bytes(payload[:4], "big")
                if size & 0x80000000:
                    raise ChunkError("set chunk size with the top bit set")
                self.set_chunk_size(size)
            elif state.type_id == 2 and len(payload) >= 4:
                self.abort(int.from_bytes(payload[:4], "big"))
        return pos - start


def _basic_header(fmt: int, csid: int) -> bytes:
    if 2 <= csid <= 63:
        return bytes(((fmt << 6) | csid,))
    if 64 <= csid <= 319:
        return bytes((fmt << 6, csid - 64))
    if 320 <= csid <= 65599:
        v = csid - 64
        return bytes(((fmt << 6) | 1, v & 0xFF, v >> 8))
    raise ValueError(f"chunk stream id {csid} out of range")


def encode_message(
    csid: int,
    type_id: int,
    stream_id: int,
    timestamp: int,
    payload: bytes | memoryview,
    chunk_size: int,
) -> bytes:
    """Chunk one message: a fmt 0 header, then fmt 3 continuation chunks.

    Uses only fmt 0 and 3, so the bytes do not depend on earlier messages and can be
    shared by every connection that uses the same chunk size.
    """
    timestamp &= 0xFFFFFFFF
    length = len(payload)
    extended = timestamp >= EXTENDED_TS
    ts_field = EXTENDED_TS if extended else timestamp
    header = (
        _basic_header(0, csid)
        + ts_field.to_bytes(3, "big")
        + length.to_bytes(3, "big")
        + bytes((type_id,))
        + _U32LE.pack(stream_id)
    )
    ext = _U32.pack(timestamp) if extended else b""
    if extended:
        header += ext
    if length <= chunk_size:
        return header + payload
    cont = _basic_header(3, csid) + ext
    parts = [header, payload[:chunk_size]]
    for off in range(chunk_size, length, chunk_size):
        parts.append(cont)
        parts.append(payload[off : off + chunk_size])
    return b"".join(parts)

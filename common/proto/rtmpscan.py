"""A lean reader of the play side of an RTMP chunk stream, for players that watch a stream
go by (sans-IO).

Once playing, a player needs from each audio/video message only its type, timestamp,
length and first two body bytes (before the first keyframe): `RtmpPlayScanner` parses
chunk headers, skips media bodies without copying or reassembling them and hands those to
an `FlvScanner` (`media`), keeps the few other messages whole (protocol control, user
control, commands, data: clock stamps go to the scanner's `scripts`), answers pings and
acknowledges what it received once per fed piece. It takes over a connection from the
session that set it up (`ChunkStream`: the chunk size and each chunk stream's last header).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from common.proto import amf0
from common.proto.errors import ProtocolError
from common.proto.flvscan import FlvScanner
from common.proto.rtmp import messages as m
from common.proto.rtmp.chunk import encode_message

PLAY_END_CODES = (
    "NetStream.Play.Stop",
    "NetStream.Play.UnpublishNotify",
    "NetStream.Play.Complete",
)
MAX_CONTROL_SIZE = 1024 * 1024
"""Largest message other than audio/video a player keeps whole (commands, metadata)."""
MAX_CHUNK_STREAMS = 64
_HEAD = struct.Struct(">II")  # fmt << 30 | csid << 24 | timestamp, length << 8 | type


class RtmpScanError(ProtocolError):
    """The chunk stream is malformed or exceeds a bound."""


@dataclass(slots=True)
class ChunkStream:
    """One chunk stream's last header, and the message it is in the middle of (if any):
    `received` bytes of it came, `partial` those bytes (None: it is not in a message)."""

    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    received: int = 0
    partial: bytes | None = None


@dataclass
class Handover:
    """Where a play session's chunk stream stands when the scanner takes over."""

    chunk_size: int = 128
    streams: dict[int, ChunkStream] = field(default_factory=dict)
    pending: bytes = b""  # bytes received but not parsed yet
    received: int = 0  # bytes received so far (acknowledgements count them)
    ack_window: int = 0
    last_ack: int = 0
    window_sent: int = 0
    out_chunk_size: int = 128


class _Stream:
    __slots__ = ("ts", "delta", "length", "type_id", "stream_id", "extended", "left", "body")

    def __init__(self) -> None:
        self.ts = self.delta = self.length = self.type_id = self.stream_id = 0
        self.extended = False
        self.left = 0  # bytes of the current message still to come (0: between messages)
        self.body: bytearray | None = None  # a kept message's bytes, or a media one's start


class RtmpPlayScanner:
    """Feed the server's bytes in any pieces (`feed(buf, start, stop)`: the media payload
    bytes among them). `ended` is set when the server ends the play (a Play.Stop-like
    status or StreamEOF); `replies()` is what to send back. RtmpScanError on a malformed
    stream."""

    def __init__(self, flv: FlvScanner, start: Handover | None = None) -> None:
        start = start or Handover()
        self.flv = flv
        self.chunk_size = start.chunk_size
        self.received = start.received
        self.ack_window = start.ack_window
        self.last_ack = start.last_ack
        self.window_sent = start.window_sent
        self.out_chunk_size = start.out_chunk_size
        self.ended = ""
        self.started = False  # NetStream.Play.Start came
        self.refused = ""  # "code: description" of an error status before that
        self._out: list[bytes] = []
        self._streams: dict[int, _Stream] = {}
        self._rest = b""  # a chunk header split between pieces
        self._cur: _Stream | None = None  # the stream whose chunk payload is coming
        self._chunk_left = 0  # bytes of that payload still to come
        self._media = 0
        for csid, cs in start.streams.items():
            st = self._streams[csid] = _Stream()
            st.ts, st.delta, st.length = cs.timestamp, cs.delta, cs.length
            st.type_id, st.stream_id, st.extended = cs.type_id, cs.stream_id, cs.extended
            if cs.partial is not None:
                st.left = cs.length - cs.received
                st.body = bytearray(cs.partial)
                if st.type_id in (8, 9):
                    self._media += len(cs.partial)
        if start.pending:
            self.feed(start.pending, 0, len(start.pending), count=False)

    def replies(self) -> bytes:
        """What to send to the server now (acknowledgements, pong, window size)."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def feed(self, data, pos: int, end: int, *, count: bool = True) -> int:
        """Scan `data[pos:end]` (bytes, bytearray or memoryview; not kept)."""
        if count:
            self.received += end - pos
        self._media = 0
        if self._rest:
            rest = self._rest
            head = rest + bytes(data[pos : min(end, pos + 18)])
            used = self._header(head, 0, len(head))
            if not used:
                self._rest = head
                return 0
            self._rest = b""
            pos += used - len(rest)
        media = 0
        flv = self.flv
        streams = self._streams
        unpack = _HEAD.unpack_from
        chunk_size = self.chunk_size
        cur, chunk_left = self._cur, self._chunk_left
        while True:
            if chunk_left:  # a chunk's payload
                st = cur
                n = chunk_left if end - pos >= chunk_left else end - pos
                body = st.body
                t = st.type_id
                if t == 8 or t == 9:
                    media += n
                    if body is not None and len(body) < 2:  # classify media before a keyframe
                        body += data[pos : pos + min(n, 2 - len(body))]
                elif body is not None:
                    body += data[pos : pos + n]
                pos += n
                st.left -= n
                chunk_left -= n
                if chunk_left:
                    break
                if not st.left:
                    if (t == 8 or t == 9) and body is None:  # playing: every tag counts
                        ts = st.ts
                        word = (ts & 0xFFFFFF) << 8 | ts >> 24 & 0xFF  # as an FLV tag header's
                        if flv.first is None:
                            flv.first = word
                        flv.last = word
                    else:
                        self._cur, self._chunk_left = cur, 0
                        self._message(st)
                        cur, chunk_left = self._cur, self._chunk_left
                        chunk_size = self.chunk_size
                continue
            if pos >= end:
                break
            b0 = data[pos]
            st = streams.get(b0 & 0x3F) if b0 & 0x3E else None  # csid >= 2
            if st is not None and not st.extended:  # the common headers, inline
                fmt, left = b0 >> 6, st.left
                if fmt == 3 and left:  # the next chunk of a message
                    cur = st
                    chunk_left = left if left < chunk_size else chunk_size
                    pos += 1
                    continue
                if fmt < 2 and not left and end - pos >= 12 - 4 * fmt:  # a new audio/video one
                    w0, w1 = unpack(data, pos)
                    ts, t, left = w0 & 0xFFFFFF, w1 & 0xFF, w1 >> 8
                    if ts != 0xFFFFFF and (t == 8 or t == 9) and left:
                        st.type_id, st.length, st.delta = t, left, ts
                        st.ts = ts if fmt == 0 else (st.ts + ts) & 0xFFFFFFFF
                        if flv.keyed:  # playing: a message here whole is skipped at once
                            more = (left - 1) // chunk_size  # its next chunks (fmt 3)
                            size = 12 - 4 * fmt + left + more
                            if pos + size <= end:
                                c3, p = b0 | 0xC0, pos + 12 - 4 * fmt + chunk_size
                                while more and data[p] == c3:
                                    more -= 1
                                    p += chunk_size + 1
                                if not more:
                                    ts = st.ts
                                    word = (ts & 0xFFFFFF) << 8 | ts >> 24 & 0xFF
                                    if flv.first is None:
                                        flv.first = word
                                    flv.last = word
                                    st.body, st.left = None, 0
                                    media += left
                                    pos += size
                                    continue
                        st.body = None if flv.keyed else bytearray()
                        st.left = left
                        cur = st
                        chunk_left = left if left < chunk_size else chunk_size
                        pos += 12 - 4 * fmt
                        continue
            self._cur, self._chunk_left = cur, chunk_left
            used = self._header(data, pos, end)
            cur, chunk_left = self._cur, self._chunk_left
            chunk_size = self.chunk_size
            if not used:
                self._rest = bytes(data[pos:end])
                break
            pos += used
        self._cur, self._chunk_left = cur, chunk_left
        self._media += media
        if self.ack_window and self.received - self.last_ack >= self.ack_window:
            self.last_ack = self.received
            self._send(m.CSID_CONTROL, m.ACKNOWLEDGEMENT, m.u32(self.received & 0xFFFFFFFF))
        return self._media

    def _header(self, data, pos: int, end: int) -> int:
        """Parse the chunk header at `pos`: its length (0: incomplete); the chunk's stream
        and payload size in `_cur` / `_chunk_left` (a message of no bytes completes)."""
        b0 = data[pos]
        fmt, csid = b0 >> 6, b0 & 0x3F
        start = pos
        pos += 1
        if csid < 2:
            if end - pos < csid + 1:
                return 0
            csid = 64 + data[pos] + (data[pos + 1] << 8 if csid else 0)
            pos += 1 + (b0 & 0x3F)
        st = self._streams.get(csid)
        if fmt == 3:
            if st is None:
                raise RtmpScanError(f"chunk stream {csid} starts with fmt 3, not fmt 0")
            if st.extended:
                if end - pos < 4:
                    return 0
                pos += 4  # repeats the extended timestamp (or delta) in force
            if not st.left:
                st.ts = (st.ts + st.delta) & 0xFFFFFFFF
                self._begin(st)
        else:
            hl = (11, 7, 3)[fmt]
            if end - pos < hl:
                return 0
            ts = data[pos] << 16 | data[pos + 1] << 8 | data[pos + 2]
            ext = ts == 0xFFFFFF
            if ext and end - pos < hl + 4:
                return 0
            if st is None:
                if fmt != 0:
                    raise RtmpScanError(f"chunk stream {csid} starts with fmt {fmt}, not fmt 0")
                if len(self._streams) >= MAX_CHUNK_STREAMS:
                    raise RtmpScanError(f"more than {MAX_CHUNK_STREAMS} chunk streams in use")
                st = self._streams[csid] = _Stream()
            if st.left:
                raise RtmpScanError(f"fmt {fmt} chunk on stream {csid} in the middle of a message")
            if fmt < 2:
                st.length = data[pos + 3] << 16 | data[pos + 4] << 8 | data[pos + 5]
                st.type_id = data[pos + 6]
                if fmt == 0:
                    st.stream_id = int.from_bytes(data[pos + 7 : pos + 11], "little")
            pos += hl
            if ext:
                ts = int.from_bytes(data[pos : pos + 4], "big")
                pos += 4
            st.extended = ext
            if fmt == 0:
                st.ts = st.delta = ts
            else:
                st.delta = ts
                st.ts = (st.ts + ts) & 0xFFFFFFFF
            self._begin(st)
        self._cur = st
        self._chunk_left = min(self.chunk_size, st.left)
        if not st.left:
            self._message(st)
        return pos - start

    def _begin(self, st: _Stream) -> None:
        """A new message starts on `st`."""
        length = st.length
        if st.type_id == 8 or st.type_id == 9:
            st.body = None if self.flv.keyed else bytearray()
        elif length > MAX_CONTROL_SIZE:
            raise RtmpScanError(f"a type {st.type_id} message of {length} bytes")
        else:
            st.body = bytearray()
        st.left = length

    def _message(self, st: _Stream) -> None:
        """`st`'s message is complete."""
        t = st.type_id
        body, st.body = st.body, None
        if t == 8 or t == 9:
            b = body or b""
            self.flv.media(t, st.ts, b[0] if b else 0, b[1] if len(b) > 1 else 0, st.length)
        elif t == m.DATA_AMF0 or t == m.DATA_AMF3:
            self._data(st.ts, bytes(body[1:] if t == m.DATA_AMF3 else body))
        elif t == m.COMMAND_AMF0 or t == m.COMMAND_AMF3:
            self._command(bytes(body[1:] if t == m.COMMAND_AMF3 else body))
        elif t == m.AGGREGATE:
            for sub, ts, sub_body in m.split_aggregate(st.ts, bytes(body)):
                if sub == 8 or sub == 9:
                    b0 = sub_body[0] if sub_body else 0
                    b1 = sub_body[1] if len(sub_body) > 1 else 0
                    self.flv.media(sub, ts, b0, b1, len(sub_body))
                elif sub == m.DATA_AMF0:
                    self._data(ts, sub_body)
        else:
            self._control(t, bytes(body))

    def _data(self, ts: int, payload: bytes) -> None:
        """A data message: a clock stamp or metadata (the scanner's scripts take them)."""
        self.flv.scripts.append((ts, payload))

    def _command(self, payload: bytes) -> None:
        try:
            values = amf0.decode_all(payload)
        except ProtocolError:
            raise RtmpScanError("undecodable command") from None
        if len(values) >= 4 and values[0] == "onStatus" and isinstance(values[3], dict):
            info = values[3]
            self.status(str(info.get("level", "")), str(info.get("code", "")),
                        str(info.get("description", "")))  # fmt: skip

    def status(self, level: str, code: str, description: str) -> None:
        """An onStatus: the play started, was refused (an error before it started) or
        ended."""
        if code == "NetStream.Play.Start":
            self.started = True
        elif level == "error" and not self.started:
            self.refused = f"{code}: {description}"
            self.ended = code
        elif code in PLAY_END_CODES:
            self.ended = code

    def _control(self, t: int, p: bytes) -> None:
        if t in (m.SET_CHUNK_SIZE, m.ABORT, m.ACKNOWLEDGEMENT, m.WINDOW_ACK_SIZE):
            if len(p) < 4:
                raise RtmpScanError(f"protocol control message {t} shorter than 4 bytes")
            value = int.from_bytes(p[:4], "big")
            if t == m.SET_CHUNK_SIZE:
                if not 1 <= value <= 0xFFFFFF:
                    raise RtmpScanError(f"absurd chunk size {value}")
                self.chunk_size = value
            elif t == m.ABORT:
                st = self._streams.get(value)
                if st is not None:
                    st.left, st.body = 0, None
                    if self._cur is st:
                        self._chunk_left = 0
            elif t == m.WINDOW_ACK_SIZE:
                self.ack_window = value
        elif t == m.SET_PEER_BANDWIDTH:
            if len(p) < 5:
                raise RtmpScanError("set peer bandwidth shorter than 5 bytes")
            value = int.from_bytes(p[:4], "big")
            if value != self.window_sent:
                self.window_sent = value
                self._send(m.CSID_CONTROL, m.WINDOW_ACK_SIZE, m.u32(value))
        elif t == m.USER_CONTROL:
            if len(p) < 6:
                raise RtmpScanError("user control message shorter than 6 bytes")
            event = int.from_bytes(p[:2], "big")
            value = int.from_bytes(p[2:6], "big")
            if event == m.UC_PING_REQUEST:
                self._send(
                    m.CSID_CONTROL, m.USER_CONTROL, m.user_control(m.UC_PING_RESPONSE, value)
                )
            elif event == m.UC_STREAM_EOF:
                self.ended = "StreamEOF"

    def _send(self, csid: int, type_id: int, payload: bytes) -> None:
        self._out.append(encode_message(csid, type_id, 0, 0, payload, self.out_chunk_size))

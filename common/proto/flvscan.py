"""A fast FLV stream scanner for players that watch a stream go by (sans-IO).

Unlike `FlvParser` it keeps no tag bodies: it walks tag headers, skips bodies as they
arrive (never copying them), and reports what a player needs: the first and last
timestamps of audio/video (nothing before the first video keyframe of a stream with video;
until then sequence headers are not media, after it every audio/video tag counts), the
keyframe that made it playable, and the script tags (clock stamps) whole.

`FlvScanner.walk(buf, start, stop)` scans a slice of any buffer (a reused receive
buffer) and accumulates into the scanner's `first`/`last`/`keyframe_ts`/`scripts` until
`take()`; `feed(data)` does both for one piece. `ChunkedFlvScanner` does the same for an
HTTP/1.1 body (chunked, sized or until close) carrying FLV, in one pass over the bytes."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from common.proto.errors import ProtocolError
from common.proto.flv import FlvError

_PEEK = 2  # body bytes needed to classify an audio/video tag
_TAG = struct.Struct(">II")  # type << 24 | size, ts24 << 8 | ts_ext
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_BOUNDARY = re.compile(rb"\r\n([0-9A-Fa-f]{1,16})\r\n")
"""Between two chunks: the CRLF after one's data, the next one's size line."""
_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})\r\n")
"""A chunk's size line without extensions (what servers send)."""
_NEXT_LINE = re.compile(rb"\r\n([0-9A-Fa-f]{1,4})\r\n")
"""A chunk's CRLF and the next one's size line, when they fit in 8 bytes."""
_WINDOW = struct.Struct(">Q")
_LINES: dict[int, tuple[int, int]] = {}
"""8 bytes from a chunk's CRLF on, as a number -> (bytes to the next chunk's data, its
size): what `_NEXT_LINE` found there (the bytes after the line do not change it)."""
MAX_LINES = 65536
MAX_LINE = 1024
"""Longest chunk size or trailer line a chunked body may have."""


@dataclass(slots=True)
class Scan:
    """What one fed piece completed."""

    first_ts: int | None = None
    last_ts: int | None = None
    keyframe_ts: int | None = None  # the first keyframe (playback can start there)
    scripts: list[tuple[int, bytes]] = field(default_factory=list)


def word_ts(word: int) -> int:
    """A tag header's second word (ts24 << 8 | ts_ext) as the 32-bit timestamp."""
    return word >> 8 | (word & 0xFF) << 24


class FlvScanner:
    """Feed an FLV byte stream (file header first) in any pieces. Per batch of pieces,
    `first`/`last` are the raw second header words of the first and last media tags
    (`take` turns them into timestamps), `keyframe_ts` the keyframe that made the stream
    playable, `scripts` the script tags (timestamp, body)."""

    __slots__ = ("max_tag_size", "header_seen", "keyed", "video_seen", "first", "last",
                 "keyframe_ts", "scripts", "_head", "_skip")  # fmt: skip

    def __init__(self, *, max_tag_size: int = 16 * 1024 * 1024) -> None:
        self.max_tag_size = max_tag_size
        self.header_seen = False
        self.keyed = False  # a video keyframe has been seen
        self.video_seen = False
        self.first: int | None = None
        self.last = 0
        self.keyframe_ts: int | None = None
        self.scripts: list[tuple[int, bytes]] = []
        self._head = b""  # an incomplete tag start (header + peeked bytes, or a script tag)
        self._skip = 0  # body bytes of the current tag still to skip

    def feed(self, data: bytes) -> Scan:
        """Scan `data`; raise FlvError on a stream that is not FLV."""
        self.walk(data, 0, len(data))
        return self.take()

    def take(self) -> Scan:
        """What the pieces walked since the last `take` held (and forget it)."""
        scan = Scan(keyframe_ts=self.keyframe_ts)
        if self.first is not None:
            scan.first_ts, scan.last_ts = word_ts(self.first), word_ts(self.last)
            self.first = None
        if self.scripts:
            scan.scripts, self.scripts = self.scripts, []
        self.keyframe_ts = None
        return scan

    def walk(self, data, pos: int, end: int) -> None:
        """Scan `data[pos:end]` (bytes, bytearray or memoryview; not kept)."""
        while self._head:  # finish a tag start kept from the last piece first
            head = self._head
            need = self._need(head)
            if len(head) < need:
                if pos >= end:
                    return
                take = min(need - len(head), end - pos)
                self._head = head + bytes(data[pos : pos + take])
                pos += take
                continue
            self._head = b""
            self._walk(head, 0, len(head))
        if pos < end:
            self._walk(data, pos, end)

    def _need(self, head: bytes) -> int:
        """Bytes a kept tag start needs before it can be scanned."""
        if not self.header_seen:
            if len(head) < 9:
                return 9
            offset = int.from_bytes(head[5:9], "big")
            return offset + 4 if 9 <= offset <= 1024 else len(head)  # _walk refuses it
        if len(head) < 11:
            return 11
        if head[0] == 18:
            size = head[1] << 16 | head[2] << 8 | head[3]
            if size <= self.max_tag_size:
                return 15 + size
        return 11 + _PEEK

    def _walk(self, data, pos: int, end: int) -> None:
        if self._skip:
            if end - pos <= self._skip:
                self._skip -= end - pos
                return
            pos += self._skip
            self._skip = 0
        if not self.header_seen:
            if end - pos < 9:
                self._keep(data, pos, end)
                return
            if bytes(data[pos : pos + 3]) != b"FLV":
                raise FlvError("bad FLV signature")
            offset = int.from_bytes(data[pos + 5 : pos + 9], "big")
            if not 9 <= offset <= 1024:
                raise FlvError(f"invalid FLV header DataOffset {offset}")
            if end - pos < offset + 4:
                self._keep(data, pos, end)
                return
            pos += offset + 4
            self.header_seen = True
        max_size = self.max_tag_size
        unpack = _TAG.unpack_from
        first, last = self.first, self.last
        keyed = self.keyed
        while end - pos >= 11:
            w0, w1 = unpack(data, pos)
            tag_type = w0 >> 24
            size = w0 & 0xFFFFFF
            if size > max_size:
                raise FlvError(f"FLV tag of {size} bytes exceeds the {max_size}-byte limit")
            if keyed and (tag_type == 9 or tag_type == 8):
                # playing: every audio/video tag counts (a mid-stream sequence header
                # carries the current time too), no need to look into bodies
                if first is None:
                    first = w1
                last = w1
                pos += 15 + size
                continue
            stop = pos + 15 + size
            if tag_type == 9 or tag_type == 8:
                if end - pos < 11 + _PEEK:
                    break
                b1 = data[pos + 12] if size > 1 else 0
                if self._counts(tag_type, w1, data[pos + 11], b1, size):
                    if first is None:
                        first = w1
                    last = w1
                    keyed = self.keyed
            elif tag_type == 18:
                if stop > end:
                    break  # script tags are kept whole: wait for the rest
                self.scripts.append((word_ts(w1), bytes(data[pos + 11 : stop - 4])))
            elif tag_type & 0x20:
                raise FlvError("encrypted (filtered) FLV tags are not supported")
            else:
                raise FlvError(f"unknown FLV tag type 0x{tag_type:02x}")
            pos = stop
        self.first, self.last = first, last
        if pos > end:
            self._skip = pos - end
        elif pos < end:
            self._keep(data, pos, end)

    def scan_tags(self, tags: Iterable[tuple[int, int, bytes]]) -> Scan:
        """The same for messages that come already framed (RTMP): (type, timestamp, body)."""
        for tag_type, ts, body in tags:
            if tag_type == 18:
                self.scripts.append((ts, body))
            elif tag_type == 9 or tag_type == 8:
                size = len(body)
                b0, b1 = (body[0] if size else 0), (body[1] if size > 1 else 0)
                self.media(tag_type, ts, b0, b1, size)
        return self.take()

    def media(self, tag_type: int, ts: int, b0: int, b1: int, size: int) -> None:
        """One framed audio (8) or video (9) message at `ts` whose body (of `size` bytes)
        starts with `b0`, `b1` (0 where it has none)."""
        word = (ts & 0xFFFFFF) << 8 | ts >> 24 & 0xFF
        if self.keyed or self._counts(tag_type, word, b0, b1, size):
            if self.first is None:
                self.first = word
            self.last = word

    def _counts(self, tag_type: int, word: int, b0: int, b1: int, size: int) -> bool:
        """Whether an audio (8) or video (9) tag (header word `word`) whose body starts with
        `b0`, `b1` is media. Before the first keyframe only pictures from a keyframe on
        count (audio too while no video has been seen), sequence headers never; after it,
        every tag counts."""
        if self.keyed:
            return True
        if not size:
            return False
        if tag_type == 9:
            if not self._video(b0, b1) or (b0 >> 4) & 0x07 != 1:
                return False  # a decoder cannot start before a keyframe
            self.keyed = True
            self.keyframe_ts = word_ts(word)
            return True
        return not (
            self.video_seen
            or (b0 >> 4 == 10 and size > 1 and b1 == 0)
            or b0 >> 4 == 9
            and b0 & 0x0F == 0
        )  # audio waits for the keyframe; AAC / ExAudio sequence headers

    def _video(self, b0: int, b1: int) -> bool:
        """Whether a video tag with these first body bytes is a picture (not a sequence
        header, end of sequence, metadata or command frame)."""
        if b0 & 0x80:  # Enhanced RTMP: the low nibble is the packet type
            frame_type, packet_type = (b0 >> 4) & 0x07, b0 & 0x0F
            picture = packet_type in (1, 3, 6, 7) and frame_type != 5
        else:
            frame_type, codec = b0 >> 4, b0 & 0x0F
            picture = frame_type != 5 and not (codec in (7, 12) and b1 != 1)
        self.video_seen = self.video_seen or picture
        return picture

    def _keep(self, data, pos: int, end: int) -> None:
        if end - pos > 64 * 1024 + 15 and not self.header_seen:
            raise FlvError("no FLV header")
        self._head = bytes(data[pos:end])


class ChunkedFlvScanner:
    """An HTTP/1.1 response body carrying FLV, scanned as it arrives: `chunked` framing
    (else `length` bytes, else until the connection closes) and the FLV tags inside it in
    one pass, nothing copied but chunk size lines and tag starts split between reads.
    `feed(buf, start, stop)` returns the body (FLV) bytes among them; ProtocolError (its
    FlvError for the FLV) on a malformed body; `done` once the body ended."""

    __slots__ = ("flv", "chunked", "done", "_left", "_crlf", "_line", "_trailer")

    def __init__(self, flv: FlvScanner, *, chunked: bool, length: int | None = None) -> None:
        self.flv = flv
        self.chunked = chunked
        self.done = False
        self._left = -1 if length is None or chunked else length  # -1: until close
        if chunked:
            self._left = 0
        self._crlf = 0  # bytes of the CRLF after a chunk's data still to come
        self._line = b""  # an unfinished size or trailer line
        self._trailer = False

    def feed(self, data, pos: int, end: int) -> int:
        """Scan `data[pos:end]` (a bytearray, or bytes); the FLV bytes it held."""
        if self.done:
            if pos < end:
                raise ProtocolError("data after the end of the body")
            return 0
        if not self.chunked:
            if self._left < 0:
                self.flv.walk(data, pos, end)
                return end - pos
            n = min(end - pos, self._left)
            self.flv.walk(data, pos, pos + n)
            self._left -= n
            if not self._left:
                self.done = True
                if pos + n < end:
                    raise ProtocolError("data after the end of the body")
            return n
        body = 0
        flv = self.flv
        if flv.keyed and not (self._left or self._crlf or self._line or self._trailer
                              or flv._head or flv._skip):  # fmt: skip
            body, pos = self._whole_chunks(data, pos, end)
        walk = flv.walk
        boundary = _BOUNDARY.match
        while pos < end:
            left = self._left
            if left:
                stop = pos + left if end - pos > left else end
                walk(data, pos, stop)
                body += stop - pos
                left -= stop - pos
                pos = stop
                if left:
                    self._left = left
                    return body
                # the common case: CRLF, the next chunk's size, CRLF, all here
                m = boundary(data, pos, end)
                if m is not None and (left := int(m.group(1), 16)):
                    self._left = left
                    pos = m.end()
                    continue
                self._left = 0
                self._crlf = 2
                continue
            if self._crlf:
                while self._crlf and pos < end:
                    if data[pos] != (13 if self._crlf == 2 else 10):  # CR, then LF
                        raise ProtocolError("chunk data not followed by CRLF")
                    pos += 1
                    self._crlf -= 1
                continue
            nl = data.find(b"\n", pos, end)
            if nl < 0:
                self._line += bytes(data[pos:end])
                if len(self._line) > MAX_LINE:
                    raise ProtocolError("chunk size or trailer line too long")
                return body
            line = self._line + bytes(data[pos:nl])
            self._line = b""
            pos = nl + 1
            if len(line) > MAX_LINE:
                raise ProtocolError("chunk size or trailer line too long")
            line = line.rstrip(b"\r")
            if self._trailer:
                if not line:
                    self.done = True
                    if pos < end:
                        raise ProtocolError("data after the end of the body")
                    return body
                continue
            if not _HEX.fullmatch(line):  # with an extension (;name=value) or blanks
                line = line.partition(b";")[0].strip(b" \t")
                if not _HEX.fullmatch(line):
                    raise ProtocolError(f"bad chunk size line {line[:40]!r}")
            size = int(line, 16)
            if size == 0:
                self._trailer = True
            else:
                self._left = size
        return body

    def _whole_chunks(self, data, pos: int, end: int) -> tuple[int, int]:
        """The common case, once the stream plays: whole chunks (size line, data, CRLF)
        that each hold whole audio/video tags, as servers write them. Scans them in one
        loop; stops (body bytes, position) at the first that is not so (a split or
        script tag, an extension, a long or malformed line), for `feed`'s general path.
        Between two chunks, the 8 bytes from the CRLF on (CRLF, a size of up to 4 hex
        digits, CRLF) are looked up as one number in `_LINES`, parsed once per process."""
        m = _SIZE_LINE.match(data, pos, end)
        if m is None:
            return 0, pos
        flv = self.flv
        unpack = _TAG.unpack_from
        window = _WINDOW.unpack_from
        lines = _LINES
        max_size = flv.max_tag_size
        first, last = flv.first, flv.last
        body = 0
        start, size = m.end(), int(m[1], 16)
        while True:
            stop = start + size
            if size < 15 or stop + 2 > end:
                break
            w0, w1 = unpack(data, start)
            if size - 15 == w0 & 0xFFFFFF <= max_size and (w0 >> 24) | 1 == 9:
                if first is None:  # one audio/video tag, the chunk's size: most chunks
                    first = w1
                last = w1
            else:  # several tags; a chunk rescanned by the general path gives the same
                p = start
                while stop - p >= 15:
                    w0, w1 = unpack(data, p)
                    if (w0 >> 24) | 1 != 9 or w0 & 0xFFFFFF > max_size:  # not audio/video
                        break
                    p += 15 + (w0 & 0xFFFFFF)
                    if first is None:
                        first = w1
                    last = w1
                if p != stop:
                    break
            if end - stop < 8:  # the last chunk of this read, or one cut short
                if stop + 2 <= end and data[stop] == 13 and data[stop + 1] == 10:
                    body += size
                    pos = stop + 2
                break
            key = window(data, stop)[0]
            line = lines.get(key)
            if line is None:
                m = _NEXT_LINE.match(data, stop, end)
                if m is None:  # a longer size line, an extension or no CRLF
                    if data[stop] == 13 and data[stop + 1] == 10:
                        body += size
                        pos = stop + 2
                    break
                line = m.end() - stop, int(m[1], 16)
                if len(lines) >= MAX_LINES:
                    lines.clear()
                lines[key] = line
            body += size
            pos = stop + 2
            skip, size = line
            if not size:  # the last chunk: its trailer goes the general way
                break
            start = stop + skip
        flv.first, flv.last = first, last
        return body, pos

    def eof(self) -> None:
        """The connection closed: ProtocolError unless the body may end so."""
        if not self.done and (self.chunked or self._left >= 0):
            raise ProtocolError("connection closed in the middle of the body")
        self.done = True

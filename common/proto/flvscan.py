"""A fast FLV stream scanner for players that watch a stream go by (sans-IO).

Unlike `FlvParser` it keeps no tag bodies: it walks tag headers, skips bodies as they
arrive, and reports per fed piece what a player needs: the first and last timestamps of
audio/video (nothing before the first video keyframe of a stream with video; until then
sequence headers are not media, after it every audio/video tag counts), the keyframe that
made it playable, and the script tags (clock stamps) whole."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from common.proto.flv import FlvError

_PEEK = 2  # body bytes needed to classify an audio/video tag


@dataclass(slots=True)
class Scan:
    """What one fed piece completed."""

    first_ts: int | None = None
    last_ts: int | None = None
    keyframe_ts: int | None = None  # the first keyframe (playback can start there)
    video: bool = False  # playable video tags were among them
    scripts: list[tuple[int, bytes]] = field(default_factory=list)


class FlvScanner:
    """Feed an FLV byte stream (file header first) in any pieces; `feed` returns a Scan."""

    def __init__(self, *, max_tag_size: int = 16 * 1024 * 1024) -> None:
        self.max_tag_size = max_tag_size
        self.header_seen = False
        self.keyed = False  # a video keyframe has been seen
        self.video_seen = False
        self._buf = b""  # an incomplete tag start (header + peeked bytes, or a script tag)
        self._skip = 0  # body bytes of the current tag still to skip

    def feed(self, data: bytes) -> Scan:
        """Scan `data`; raise FlvError on a stream that is not FLV."""
        scan = Scan()
        pos, end = 0, len(data)
        if self._skip:
            if end <= self._skip:
                self._skip -= end
                return scan
            pos, self._skip = self._skip, 0
        if self._buf:
            data = self._buf + bytes(data[pos:])
            pos, end = 0, len(data)
            self._buf = b""
        if not self.header_seen:
            if end - pos < 9:
                self._keep(data, pos, end)
                return scan
            if data[pos : pos + 3] != b"FLV":
                raise FlvError("bad FLV signature")
            offset = int.from_bytes(data[pos + 5 : pos + 9], "big")
            if not 9 <= offset <= 1024:
                raise FlvError(f"invalid FLV header DataOffset {offset}")
            if end - pos < offset + 4:
                self._keep(data, pos, end)
                return scan
            pos += offset + 4
            self.header_seen = True
        max_size = self.max_tag_size
        first = last = None
        while end - pos >= 11:
            tag_type = data[pos]
            size = data[pos + 1] << 16 | data[pos + 2] << 8 | data[pos + 3]
            if size > max_size:
                raise FlvError(f"FLV tag of {size} bytes exceeds the {max_size}-byte limit")
            ts = data[pos + 4] << 16 | data[pos + 5] << 8 | data[pos + 6] | data[pos + 7] << 24
            stop = pos + 15 + size
            if self.keyed and (tag_type == 9 or tag_type == 8):
                # playing: every audio/video tag counts (a mid-stream sequence header
                # carries the current time too), no need to look into bodies; this is
                # `_take`'s keyed case, inlined for the hot path
                if first is None:
                    first = ts
                last = ts
                scan.video = scan.video or tag_type == 9
                pos = stop
                continue
            if tag_type == 9 or tag_type == 8:
                if end - pos < 11 + _PEEK:
                    break
                b1 = data[pos + 12] if size > 1 else 0
                self._take(scan, tag_type, ts, data[pos + 11], b1, size)
            elif tag_type == 18:
                if stop > end:
                    break  # script tags are kept whole: wait for the rest
                scan.scripts.append((ts, bytes(data[pos + 11 : stop - 4])))
            elif tag_type & 0x20:
                raise FlvError("encrypted (filtered) FLV tags are not supported")
            else:
                raise FlvError(f"unknown FLV tag type 0x{tag_type:02x}")
            pos = stop
        if first is not None:
            if scan.first_ts is None:
                scan.first_ts = first
            scan.last_ts = last
        if pos > end:
            self._skip = pos - end
        elif pos < end:
            self._keep(data, pos, end)
        return scan

    def scan_tags(self, tags: Iterable[tuple[int, int, bytes]]) -> Scan:
        """The same for messages that come already framed (RTMP): (type, timestamp, body)."""
        scan = Scan()
        for tag_type, ts, body in tags:
            if tag_type == 18:
                scan.scripts.append((ts, body))
            elif tag_type == 9 or tag_type == 8:
                size = len(body)
                b0, b1 = (body[0] if size else 0), (body[1] if size > 1 else 0)
                self._take(scan, tag_type, ts, b0, b1, size)
        return scan

    def _take(self, scan: Scan, tag_type: int, ts: int, b0: int, b1: int, size: int) -> None:
        """One audio (8) or video (9) tag whose body starts with `b0`, `b1`. Before the
        first keyframe only pictures from a keyframe on count (audio too while no video
        has been seen), sequence headers never; after it, every tag counts."""
        if not self.keyed:
            if not size:
                return
            if tag_type == 9:
                if not self._video(b0, b1) or (b0 >> 4) & 0x07 != 1:
                    return  # a decoder cannot start before a keyframe
                self.keyed = True
                scan.keyframe_ts = ts
            elif (
                self.video_seen
                or (b0 >> 4 == 10 and size > 1 and b1 == 0)
                or b0 >> 4 == 9
                and b0 & 0x0F == 0
            ):
                return  # audio waits for the keyframe; AAC / ExAudio sequence headers
        scan.video = scan.video or tag_type == 9
        if scan.first_ts is None:
            scan.first_ts = ts
        scan.last_ts = ts

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

    def _keep(self, data: bytes, pos: int, end: int) -> None:
        if end - pos > 64 * 1024 + 15 and not self.header_seen:
            raise FlvError("no FLV header")
        self._buf = bytes(data[pos:end])

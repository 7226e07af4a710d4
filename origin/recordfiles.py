"""Recordings, pure: file names (start time and duration), which files retention removes,
the playback query (start, duration), the cuts of a recorded FLV file into VOD segments and
the VOD playlist covering a time range."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from common.proto.numparse import parse_uint

FORMATS = ("flv", "mp4")
PART = ".part"
"""Suffix of the file being written (renamed to its final name once done)."""
MAX_VOD_SECONDS = 24 * 3600
"""Longest time range one playback playlist covers."""
MAX_VOD_SEGMENTS = 50_000
"""Most segments in one playback playlist."""
VOD_TARGET_MS = 4000
"""Playback segments are cut at the first keyframe after this much media."""
CUT_SLACK_MS = 100
MAX_CUT_BYTES = 16 * 1024 * 1024
"""Most bytes of a playback segment of an FLV file (muxed on demand): a bigger cut (no
keyframes, or timestamps that do not go on) is left out of playlists and refused."""

_STAMP = "%Y%m%dT%H%M%S"
_FILE = re.compile(r"(\d{8}T\d{6})(\d{3})Z_(\d{1,12})\.(flv|mp4)")
_SEGMENT = re.compile(r"(\d{1,12})-(\d{1,12})")
_PART = re.compile(r"(\d{8}T\d{6})(\d{3})Z\.flv\.part")


def stamp(epoch_ms: int) -> str:
    """'20261130T150119123Z': a UTC wall-clock time to the millisecond, sortable as text."""
    when = datetime.fromtimestamp(epoch_ms // 1000, UTC)
    return f"{when.strftime(_STAMP)}{epoch_ms % 1000:03d}Z"


def iso(epoch_ms: int) -> str:
    """ISO 8601 UTC to the millisecond ('2026-11-30T15:01:19.123Z')."""
    when = datetime.fromtimestamp(epoch_ms // 1000, UTC)
    return f"{when.strftime('%Y-%m-%dT%H:%M:%S')}.{epoch_ms % 1000:03d}Z"


def file_name(start_ms: int, duration_ms: int, fmt: str) -> str:
    """The name of a finished recording file: START_DURATIONMS.FORMAT."""
    return f"{stamp(start_ms)}_{duration_ms}.{fmt}"


def part_name(start_ms: int) -> str:
    """The name of a file being recorded."""
    return f"{stamp(start_ms)}.flv{PART}"


@dataclass(frozen=True, slots=True)
class RecordedFile:
    """One finished file of `app`/`name`'s recordings."""

    app: str
    name: str
    start_ms: int  # wall clock (epoch ms) of its first frame
    duration_ms: int
    format: str
    size: int = 0

    @property
    def file(self) -> str:
        """Its file name (in record_dir/app/name/)."""
        return file_name(self.start_ms, self.duration_ms, self.format)

    @property
    def end_ms(self) -> int:
        """Wall clock of its end."""
        return self.start_ms + self.duration_ms

    def as_json(self) -> dict:
        """What the API shows of it."""
        return {
            "app": self.app,
            "name": self.name,
            "file": f"{self.app}/{self.name}/{self.file}",
            "start": iso(self.start_ms),
            "duration": round(self.duration_ms / 1000, 3),
            "bytes": self.size,
            "format": self.format,
        }


def _start(match: re.Match[str]) -> int | None:
    try:
        when = datetime.strptime(match[1], _STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(when.timestamp()) * 1000 + int(match[2])


def parse_file(app: str, name: str, entry: str, size: int = 0) -> RecordedFile | None:
    """The RecordedFile a directory entry names, None for any other name."""
    match = _FILE.fullmatch(entry)
    start = _start(match) if match is not None else None
    if match is None or start is None:
        return None
    return RecordedFile(app, name, start, int(match[3]), match[4], size)


def parse_part(entry: str) -> int | None:
    """The start (epoch ms) of a file being recorded, by its name; None for other names."""
    match = _PART.fullmatch(entry)
    return _start(match) if match is not None else None


def to_remove(
    files: list[RecordedFile], now_ms: int, max_bytes: int, max_age_s: float
) -> list[RecordedFile]:
    """Files retention removes, oldest first: those that ended more than `max_age_s` ago
    (0: none), then the oldest until the rest fit in `max_bytes` (0: no bound)."""
    ordered = sorted(files, key=lambda f: (f.start_ms, f.app, f.name, f.format))
    out: list[RecordedFile] = []
    kept: list[RecordedFile] = []
    for f in ordered:
        if max_age_s > 0 and f.end_ms < now_ms - max_age_s * 1000:
            out.append(f)
        else:
            kept.append(f)
    if max_bytes > 0:
        total = sum(f.size for f in kept)
        for f in kept:
            if total <= max_bytes:
                break
            out.append(f)
            total -= f.size
    return out


# --------------------------------------------------------------------------- playback query


class BadQuery(ValueError):
    """A playback query that cannot be served (the message says why: a 400)."""


def _seconds(text: str) -> float | None:
    """`text` as seconds if it is plain ASCII digits with an optional fraction ('12.5'),
    else None (no sign, exponent, underscore, non-ASCII digit, nan or inf)."""
    whole, dot, frac = text.partition(".")
    number = parse_uint(whole, 10**18)
    if number is None or (dot and parse_uint(frac, 10**19 - 1) is None):
        return None
    return float(text)


def parse_start(text: str) -> int:
    """Epoch ms of a playback `start`: epoch seconds (with decimals) or ISO 8601 (UTC
    unless it says otherwise)."""
    text = text.strip()
    if not text or len(text) > 40:
        raise BadQuery("start must be ISO 8601 or epoch seconds")
    seconds = _seconds(text)
    if seconds is None:
        try:
            if not text.isascii():
                raise ValueError(text)
            when = datetime.fromisoformat(text)
        except ValueError:
            raise BadQuery(f"start {text!r} is neither ISO 8601 nor epoch seconds") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp()
    if not math.isfinite(seconds) or not 0 <= seconds < 2**33:
        raise BadQuery(f"start {text!r} is out of range")
    return round(seconds * 1000)


def parse_duration(text: str) -> int:
    """Milliseconds of a playback `duration` (seconds, at most MAX_VOD_SECONDS)."""
    seconds = _seconds(text)
    if seconds is None:
        raise BadQuery("duration must be seconds (plain ASCII digits)")
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_VOD_SECONDS:
        raise BadQuery(f"duration must be in (0, {MAX_VOD_SECONDS}] seconds")
    return round(seconds * 1000)


def playback_range(query: dict[str, str]) -> tuple[int, int]:
    """(start, end) epoch ms of a playback query; BadQuery says why not."""
    if "start" not in query or "duration" not in query:
        raise BadQuery("playback needs start (ISO 8601 or epoch seconds) and duration (s)")
    start = parse_start(query["start"])
    return start, start + parse_duration(query["duration"])


# --------------------------------------------------------------------------- VOD segments


@dataclass(frozen=True, slots=True)
class FileIndex:
    """Where a recorded FLV file's media is: the end of its head (header, metadata, sequence
    headers), its keyframes (timestamp, byte offset), its first and last timestamps and a
    checksum of its sequence headers (files of one format whose checksums differ do not
    decode alike: a discontinuity)."""

    head_end: int
    keyframes: tuple[tuple[int, int], ...]
    first_ts: int
    last_ts: int
    size: int
    has_video: bool = True
    headers: int = 0


@dataclass(frozen=True, slots=True)
class Cut:
    """A playback segment of one file: media times relative to the file's first frame and
    the byte range of its tags."""

    start: int
    end: int
    offset: int
    stop: int

    @property
    def uri(self) -> str:
        """Its segment name ('START-END')."""
        return f"{self.start}-{self.end}"

    @property
    def size(self) -> int:
        """Bytes of its tags."""
        return self.stop - self.offset


def cuts(index: FileIndex, target_ms: int = VOD_TARGET_MS) -> list[Cut]:
    """The file cut at the first keyframe `target_ms` or more after the previous cut (a file
    without keyframes is one segment)."""
    first = index.first_ts
    end = max(index.last_ts - first, 1)
    keys = [(ts - first, off) for ts, off in index.keyframes if ts >= first]
    if not keys:
        return [Cut(0, end, index.head_end, index.size)]
    if keys[0][0] > 0:  # media before the first keyframe (audio only files have none)
        keys[0] = (0, keys[0][1])
    starts = [keys[0]]
    for rel, off in keys[1:]:
        if rel - starts[-1][0] >= target_ms - CUT_SLACK_MS:
            starts.append((rel, off))
    out = []
    for i, (rel, off) in enumerate(starts):
        nxt = starts[i + 1] if i + 1 < len(starts) else (end, index.size)
        if nxt[0] > rel:
            out.append(Cut(rel, nxt[0], off, nxt[1]))
    return out


def find_cut(index: FileIndex, segment: str, target_ms: int = VOD_TARGET_MS) -> Cut | None:
    """The cut a segment name ('START-END') names in this file, None if none."""
    if _SEGMENT.fullmatch(segment) is None:
        return None
    return next((c for c in cuts(index, target_ms) if c.uri == segment), None)


@dataclass(frozen=True, slots=True)
class VodSegment:
    """One line of a playback playlist."""

    uri: str
    duration_ms: int
    wall_ms: int
    discontinuity: bool


def vod_segments(
    files: list[tuple[RecordedFile, FileIndex]], start_ms: int, end_ms: int,
    target_ms: int = VOD_TARGET_MS,
) -> list[VodSegment]:  # fmt: skip
    """The segments of `files` (by start time) overlapping [start_ms, end_ms); a file that
    does not continue the previous one starts a discontinuity: a gap in wall-clock time,
    other sequence headers (same format), or FLV timestamps that do not go on (a publisher
    back with timestamps from 0)."""
    out: list[VodSegment] = []
    prev: tuple[int, str, int, int] | None = None  # wall end, format, headers, media end
    for rec, index in sorted(files, key=lambda fi: fi[0].start_ms):
        gap = True
        for cut in cuts(index, target_ms):
            wall = rec.start_ms + cut.start
            if wall + (cut.end - cut.start) <= start_ms or wall >= end_ms:
                continue
            if (
                rec.format == "flv" and cut.size > MAX_CUT_BYTES
            ):  # not muxed: what follows is a discontinuity
                gap = True
                prev = None
                continue
            if len(out) >= MAX_VOD_SEGMENTS:
                raise BadQuery(f"more than {MAX_VOD_SEGMENTS} segments: ask for less time")
            out.append(
                VodSegment(
                    f"{rec.file}/{cut.uri}.ts",
                    cut.end - cut.start,
                    wall,
                    bool(out) and gap and _breaks(prev, rec, index, cut),
                )
            )
            gap = False
            prev = (wall + cut.end - cut.start, rec.format, index.headers, index.first_ts + cut.end)
    return out


def _breaks(
    prev: tuple[int, str, int, int] | None, rec: RecordedFile, index: FileIndex, cut: Cut
) -> bool:
    """Whether `cut`, the first of its file in a playlist, does not continue `prev`."""
    if prev is None:
        return True
    wall_end, fmt, headers, media_end = prev
    if abs(rec.start_ms + cut.start - wall_end) > 1000:
        return True
    if fmt != rec.format:
        return False
    if headers != index.headers:
        return True
    return fmt == "flv" and abs(index.first_ts + cut.start - media_end) > 1000


def vod_playlist(segments: list[VodSegment]) -> str:
    """A VOD HLS playlist (EXT-X-PLAYLIST-TYPE:VOD, EXT-X-ENDLIST) of `segments`."""
    target = max((math.ceil(s.duration_ms / 1000) for s in segments), default=1)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{max(target, 1)}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
    ]
    for seg in segments:
        if seg.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{iso(seg.wall_ms)}")
        lines.append(f"#EXTINF:{seg.duration_ms / 1000:.3f},")
        lines.append(seg.uri)
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"

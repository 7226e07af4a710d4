"""A media playlist reader for simulated HLS players (sans-IO, RFC 8216 section 4.3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from common.proto.errors import ProtocolError


class PlaylistError(ProtocolError):
    """The text is not a usable media playlist."""


@dataclass
class Segment:
    """One media segment: its sequence number, URI, EXTINF duration, and its
    EXT-X-PROGRAM-DATE-TIME as epoch seconds when the playlist gives one."""

    sequence: int
    uri: str
    duration: float
    wall: float | None = None
    discontinuity: bool = False


@dataclass
class MediaPlaylist:
    """What a player needs of a media playlist."""

    target_duration: float
    media_sequence: int = 0
    segments: list[Segment] = field(default_factory=list)
    ended: bool = False

    def last_sequence(self) -> int:
        return self.segments[-1].sequence if self.segments else self.media_sequence - 1

    def start_sequence(self) -> int:
        """Where a player joins (RFC 8216 6.3.3): the first segment of a finished
        playlist, else the last one starting at least three target durations from the end."""
        if self.ended or not self.segments:
            return self.media_sequence
        left = 0.0
        for seg in reversed(self.segments):
            left += seg.duration
            if left >= 3 * self.target_duration:
                return seg.sequence
        return self.media_sequence


def _wall(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_media_playlist(text: str) -> MediaPlaylist:
    """Parse an M3U8 media playlist; PlaylistError if it is not one."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise PlaylistError("not a playlist: the first line is not #EXTM3U")
    target: float | None = None
    pl = MediaPlaylist(0.0)
    duration: float | None = None
    wall: float | None = None
    disc = False
    seq: int | None = None
    for line in lines[1:]:
        if line.startswith("#EXT-X-STREAM-INF"):
            raise PlaylistError("a multivariant playlist, not a media playlist")
        if line.startswith("#EXT-X-TARGETDURATION:"):
            try:
                target = float(line.split(":", 1)[1])
            except ValueError:
                raise PlaylistError(f"bad {line!r}") from None
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            try:
                pl.media_sequence = int(line.split(":", 1)[1])
            except ValueError:
                raise PlaylistError(f"bad {line!r}") from None
        elif line.startswith("#EXTINF:"):
            try:
                duration = float(line[8:].split(",", 1)[0])
            except ValueError:
                raise PlaylistError(f"bad {line!r}") from None
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            wall = _wall(line.split(":", 1)[1])
        elif line == "#EXT-X-DISCONTINUITY":
            disc = True
        elif line == "#EXT-X-ENDLIST":
            pl.ended = True
        elif not line.startswith("#"):
            if duration is None:
                raise PlaylistError(f"segment {line!r} has no #EXTINF")
            if seq is None:
                seq = pl.media_sequence
            pl.segments.append(Segment(seq, line, duration, wall, disc))
            seq += 1
            duration, wall, disc = None, None, False
    if target is None:
        raise PlaylistError("no #EXT-X-TARGETDURATION")
    pl.target_duration = target
    return pl

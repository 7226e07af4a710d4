"""RFC 8216 live media playlists: the segments of a sliding window, their rendering, the
rewriting of their segment URIs, and the parser a player reads them back with (sans-IO)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from common.proto.errors import ProtocolError


@dataclass
class Segment:
    """A segment of a live playlist (`data`: its muxed bytes where they are held)."""

    seq: int
    duration: float
    uri: str
    data: bytes = b""
    discontinuity: bool = False
    wall: float | None = None  # ingest wall clock of its first frame (EXT-X-PROGRAM-DATE-TIME)
    disc_before: int | None = None  # discontinuous segments numbered below it, when known


def nearest_second(seconds: float) -> int:
    """`seconds` rounded to the nearest integer, halves up (RFC 8216 4.3.3.1: a segment's
    EXTINF so rounded is at most EXT-X-TARGETDURATION; Python's round(2.5) is 2)."""
    return math.floor(seconds + 0.5)


def program_date_time(wall: float) -> str:
    """RFC 8216 4.3.2.6: an ISO 8601 date-time with milliseconds."""
    stamp = datetime.fromtimestamp(wall, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def parse_program_date_time(value: str) -> float | None:
    """Epoch seconds of an EXT-X-PROGRAM-DATE-TIME value; None when it is not one."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def render_playlist(
    segments: list[Segment],
    *,
    target_duration: int,
    discontinuity_sequence: int,
    ended: bool,
) -> str:
    """An RFC 8216 media playlist for the given sliding window.

    A client numbers the segments EXT-X-MEDIA-SEQUENCE, +1, +2, ... (RFC 8216 6.2.1), so
    the window's own numbers must be consecutive: ValueError otherwise.
    """
    first = segments[0].seq if segments else 0
    for i, seg in enumerate(segments):
        if seg.seq != first + i:
            raise ValueError(f"segment {seg.seq} at position {i} after {first}: not consecutive")
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target_duration}",
        f"#EXT-X-MEDIA-SEQUENCE:{first}",
    ]
    if discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}")
    for seg in segments:
        if seg.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        if seg.wall is not None:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(seg.wall)}")
        lines.append(f"#EXTINF:{seg.duration:.3f},")
        lines.append(seg.uri)
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def with_query(playlist: bytes, query: str) -> bytes:
    """A media playlist whose segment URIs carry `query` (urlencoded); a parameter of the
    same name a URI already had is replaced (a parent's token by the viewer's own)."""
    lines = playlist.split(b"\n")
    extra = query.encode()
    names = {param.partition(b"=")[0] for param in extra.split(b"&")}
    for i, line in enumerate(lines):
        if line and not line.startswith(b"#"):
            uri, _, old = line.partition(b"?")
            kept = [p for p in old.split(b"&") if p and p.partition(b"=")[0] not in names]
            lines[i] = uri + b"?" + b"&".join([*kept, extra])
    return b"\n".join(lines)


@dataclass
class HlsPlaylist:
    """The live state of one stream's HLS: a sliding window of segments, bounded."""

    name: str
    session: str
    target: float
    window: int = 6
    keep: int = 3
    segments: list[Segment] = field(default_factory=list)
    expired_discontinuities: int = 0
    first_seq: int = 0  # number of the first segment ever added, or of the oldest one gone + 1
    target_duration: int = 0
    ended: bool = False
    ended_at: float = 0.0
    extra_discontinuities: int = 0  # marked here, not by the stream's segment clock
    _rendered: tuple[tuple, bytes] | None = field(default=None, repr=False, compare=False)
    _changes: int = field(default=0, repr=False, compare=False)  # bumped by add()/place()

    @property
    def next_seq(self) -> int:
        """The media sequence number of the next segment added."""
        return self.segments[-1].seq + 1 if self.segments else self.first_seq

    def append(
        self,
        data: bytes,
        duration: float,
        *,
        discontinuity: bool,
        wall: float | None = None,
        disc_before: int | None = None,
    ) -> Segment:
        """Add a muxed segment numbered `next_seq` (see `place`) and return it."""
        seq = self.next_seq
        seg = Segment(seq, duration, self.uri(seq), data, discontinuity, wall, disc_before)
        self.add(seg)
        return seg

    def discontinuities(self) -> int:
        """Discontinuous segments numbered below `next_seq`."""
        held = sum(1 for s in self.segments if s.discontinuity)
        if self.segments and self.segments[0].disc_before is not None:
            return self.segments[0].disc_before + held
        return self.expired_discontinuities + held

    def place(self, seq: int, session: str) -> bool:
        """Make the next segment number `seq` of `session` (numbers a stream's segment clock
        gave): the playlist continues if that is what comes next, else it starts over
        there, without the segments it held. True if it started over."""
        if session == self.session and seq == self.next_seq:
            return False
        had = bool(self.segments)
        if session != self.session or had:
            self.segments.clear()
            self.expired_discontinuities = 0
            self.target_duration = 0
        self.session = session
        self.first_seq = seq
        self._changes += 1
        return had

    def add(self, seg: Segment) -> None:
        """Append a segment numbered `next_seq`; segments past the window (plus `keep` for
        slow clients) go."""
        if seg.seq != self.next_seq:
            raise ValueError(f"segment {seg.seq} added where {self.next_seq} comes next")
        self.ended = False
        self.segments.append(seg)
        self._changes += 1
        self.target_duration = max(
            self.target_duration, math.ceil(self.target), nearest_second(seg.duration)
        )
        while len(self.segments) > self.window + self.keep:
            old = self.segments.pop(0)
            self.first_seq = old.seq + 1
            if old.discontinuity:
                self.expired_discontinuities += 1

    def playlist(self) -> str:
        """The playlist text (the last `window` segments)."""
        shown = self.segments[-self.window :]
        hidden = self.segments[: -self.window] if len(self.segments) > self.window else []
        disc = self.expired_discontinuities + sum(1 for s in hidden if s.discontinuity)
        if shown and shown[0].disc_before is not None:
            disc = shown[0].disc_before  # counted by the stream's segment clock
        return render_playlist(
            shown,
            target_duration=self.target_duration or math.ceil(self.target),
            discontinuity_sequence=disc,
            ended=self.ended,
        )

    def rendered(self) -> bytes:
        """`playlist()` encoded, rendered once per version and shared by every request.
        The version counts add()/place() calls, never a segment's id(): a freed segment's
        id can come back on the next one."""
        version = (
            self.session,
            self.first_seq,
            len(self.segments),
            self._changes,
            self.ended,
            self.target_duration,
            self.expired_discontinuities,
            self.window,
        )
        memo = self._rendered
        if memo is not None and memo[0] == version:
            return memo[1]
        body = self.playlist().encode()
        self._rendered = (version, body)
        return body

    def segment(self, uri: str) -> Segment | None:
        """A segment still held, by URI."""
        for seg in self.segments:
            if seg.uri == uri:
                return seg
        return None

    def uri(self, seq: int) -> str:
        """The URI of segment `seq` (relative to the playlist)."""
        return f"{self.name}-{self.session}-{seq}.ts"


class PlaylistError(ProtocolError):
    """The text is not a usable media playlist."""


@dataclass
class MediaPlaylist:
    """A media playlist as a player reads it (what `render_playlist` writes)."""

    target_duration: float
    media_sequence: int = 0
    discontinuity_sequence: int = 0
    segments: list[Segment] = field(default_factory=list)
    ended: bool = False

    def last_sequence(self) -> int:
        """The number of the last segment listed (media_sequence - 1 when none is)."""
        return self.segments[-1].seq if self.segments else self.media_sequence - 1

    def start_sequence(self) -> int:
        """Where a player joins (RFC 8216 6.3.3): the first segment of a finished
        playlist, else the last one starting at least three target durations from the end."""
        if self.ended or not self.segments:
            return self.media_sequence
        left = 0.0
        for seg in reversed(self.segments):
            left += seg.duration
            if left >= 3 * self.target_duration:
                return seg.seq
        return self.media_sequence


def _int(line: str) -> int:
    try:
        return int(line.partition(":")[2])
    except ValueError:
        raise PlaylistError(f"bad {line!r}") from None


def _float(line: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise PlaylistError(f"bad {line!r}") from None


def parse_playlist(text: str) -> MediaPlaylist:
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
            target = _float(line, line.partition(":")[2])
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            pl.media_sequence = _int(line)
        elif line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE:"):
            pl.discontinuity_sequence = _int(line)
        elif line.startswith("#EXTINF:"):
            duration = _float(line, line[8:].split(",", 1)[0])
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            wall = parse_program_date_time(line.split(":", 1)[1])
        elif line == "#EXT-X-DISCONTINUITY":
            disc = True
        elif line == "#EXT-X-ENDLIST":
            pl.ended = True
        elif not line.startswith("#"):
            if duration is None:
                raise PlaylistError(f"segment {line!r} has no #EXTINF")
            if seq is None:
                seq = pl.media_sequence
            pl.segments.append(Segment(seq, duration, line, b"", disc, wall))
            seq += 1
            duration, wall, disc = None, None, False
    if target is None:
        raise PlaylistError("no #EXT-X-TARGETDURATION")
    pl.target_duration = target
    return pl

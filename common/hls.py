"""HLS: a segmenter that cuts frames at keyframes, RFC 8216 live playlists, and MPEG-TS
muxing of a segment through PyAV (remuxing FLV tags, no decoding).

`Segmenter` and `render_playlist` are pure; `mux_ts` is blocking CPU work (run it in a thread).
"""

from __future__ import annotations

import io
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import av

from common import flv
from common.rtmp import messages as m
from common.stream import Frame

AUDIO_ONLY_CUT_MS = 1000
"""Without video, segments are cut on audio frames."""


@dataclass
class SegmentSpec:
    """A closed segment's frames (starting at a keyframe when there is video)."""

    seq: int
    frames: list[Frame]
    start_ms: int
    duration_ms: int
    discontinuity: bool
    headers: list[Frame]


class Segmenter:
    """Cuts a stream's frames into segments at keyframes once `target_ms` has passed.

    Frames before the first keyframe are skipped, so every segment decodes on its own.
    A new source (publisher) or a timestamp jump starts a segment marked discontinuous.
    """

    def __init__(self, target_ms: int = 2000, *, first_seq: int = 0, jump_ms: int = 10_000) -> None:
        self.target_ms = target_ms
        self.jump_ms = jump_ms
        self.next_seq = first_seq
        self._frames: list[Frame] = []
        self._start: int | None = None
        self._last_ts: int | None = None
        self._epoch: int | None = None
        self._discontinuity = False
        self._headers: dict[int, Frame] = {}
        self._seg_headers: list[Frame] = []
        self.has_video = False

    def mark_discontinuity(self) -> None:
        """The next segment starts a discontinuity (e.g. a new publisher)."""
        self._discontinuity = True

    def push(self, frame: Frame, epoch: int = 0) -> SegmentSpec | None:
        """Add a frame; returns the segment it closed, if any."""
        if frame.header:
            self._headers[frame.type_id] = frame
            if frame.type_id == m.VIDEO:
                self.has_video = True
            return None
        closed = None
        jumped = self._last_ts is not None and (
            frame.timestamp < self._last_ts - 1000 or frame.timestamp > self._last_ts + self.jump_ms
        )
        new_epoch = self._epoch is not None and epoch != self._epoch
        self._epoch = epoch
        if jumped or new_epoch:
            closed = self._close(frame.timestamp if not jumped else self._last_ts)
            self._discontinuity = True
        self._last_ts = frame.timestamp
        starts = frame.keyframe if self.has_video else frame.type_id == m.AUDIO
        if self._start is None:
            if not starts:
                return closed
            self._open(frame)
            return closed
        elapsed = frame.timestamp - self._start
        cut_at = self.target_ms if self.has_video else min(self.target_ms, AUDIO_ONLY_CUT_MS)
        if starts and elapsed >= cut_at - 100:
            closed = self._close(frame.timestamp) or closed
            self._open(frame)
        else:
            self._frames.append(frame)
        return closed

    def flush(self, frame_ms: int = 33) -> SegmentSpec | None:
        """Close the open segment (end of stream)."""
        if self._start is None or self._last_ts is None:
            return None
        return self._close(self._last_ts + frame_ms)

    def _open(self, frame: Frame) -> None:
        self._start = frame.timestamp
        self._frames = [frame]
        self._seg_headers = [
            self._headers[t] for t in (m.DATA_AMF0, m.VIDEO, m.AUDIO) if t in self._headers
        ]

    def _close(self, end_ms: int) -> SegmentSpec | None:
        if self._start is None or not self._frames:
            self._start = None
            return None
        spec = SegmentSpec(
            seq=self.next_seq,
            frames=self._frames,
            start_ms=self._start,
            duration_ms=max(1, end_ms - self._start),
            discontinuity=self._discontinuity,
            headers=self._seg_headers,
        )
        self.next_seq += 1
        self._discontinuity = False
        self._start = None
        self._frames = []
        return spec


def mux_ts(spec: SegmentSpec) -> bytes:
    """The segment as MPEG-TS: its FLV tags remuxed by PyAV's mpegts muxer (which converts
    AVC to Annex B with SPS/PPS at the keyframe and writes ADTS for AAC)."""
    has_audio = any(h.type_id == m.AUDIO for h in spec.headers)
    has_video = any(h.type_id == m.VIDEO for h in spec.headers)
    parts = [flv.file_header(audio=has_audio, video=has_video)]
    for h in spec.headers:
        ts = 0 if h.type_id == m.DATA_AMF0 else spec.start_ms
        parts.append(flv.build_tag(h.type_id, ts, h.payload))
    parts += [f.flv for f in spec.frames]
    src = av.open(io.BytesIO(b"".join(parts)), format="flv")
    out_buf = io.BytesIO()
    muxed = 0
    try:
        out = av.open(out_buf, "w", format="mpegts")
        try:
            mapping = {}
            for stream in src.streams:
                if stream.type in ("video", "audio"):
                    mapping[stream.index] = out.add_stream_from_template(stream)
            for packet in src.demux():
                target = mapping.get(packet.stream.index)
                if target is None or packet.dts is None:
                    continue
                packet.stream = target
                out.mux(packet)
                muxed += 1
        finally:
            out.close()
    finally:
        src.close()
    return out_buf.getvalue() if muxed else b""


@dataclass
class Segment:
    """A muxed segment in a live playlist."""

    seq: int
    duration: float
    uri: str
    data: bytes
    discontinuity: bool
    wall: float | None = None  # ingest wall clock of its first frame (EXT-X-PROGRAM-DATE-TIME)


def program_date_time(wall: float) -> str:
    """RFC 8216 4.3.2.6: an ISO 8601 date-time with milliseconds."""
    stamp = datetime.fromtimestamp(wall, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def render_playlist(
    segments: list[Segment],
    *,
    target_duration: int,
    discontinuity_sequence: int,
    ended: bool,
) -> str:
    """An RFC 8216 media playlist for the given sliding window."""
    first = segments[0].seq if segments else 0
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
    target_duration: int = 0
    ended: bool = False
    ended_at: float = 0.0

    def add(self, seg: Segment) -> None:
        """Append a segment; segments past the window (plus `keep` for slow clients) go."""
        self.ended = False
        self.segments.append(seg)
        self.target_duration = max(
            self.target_duration, math.ceil(self.target), round(seg.duration)
        )
        while len(self.segments) > self.window + self.keep:
            old = self.segments.pop(0)
            if old.discontinuity:
                self.expired_discontinuities += 1

    def playlist(self) -> str:
        """The playlist text (the last `window` segments)."""
        shown = self.segments[-self.window :]
        hidden = self.segments[: -self.window] if len(self.segments) > self.window else []
        disc = self.expired_discontinuities + sum(1 for s in hidden if s.discontinuity)
        return render_playlist(
            shown,
            target_duration=self.target_duration or math.ceil(self.target),
            discontinuity_sequence=disc,
            ended=self.ended,
        )

    def segment(self, uri: str) -> Segment | None:
        """A segment still held, by URI."""
        for seg in self.segments:
            if seg.uri == uri:
                return seg
        return None

    def uri(self, seq: int) -> str:
        """The URI of segment `seq` (relative to the playlist)."""
        return f"{self.name}-{self.session}-{seq}.ts"


def hls_path(path: str) -> tuple[str, str, str] | None:
    """'/app/name.m3u8' or '/app/name-session-seq.ts' -> (app, name, file); None otherwise."""
    parts = path.strip("/").split("/")
    if len(parts) != 2:
        return None
    app, file = parts
    if file.endswith(".m3u8"):
        return app, file[: -len(".m3u8")], file
    if file.endswith(".ts"):
        return app, file.rsplit("-", 2)[0], file
    return None


def client_key(peer: str, user_agent: str) -> str:
    """How an HLS viewer is told apart from others: its address (without port) and agent."""
    return f"{peer.rsplit(':', 1)[0]}|{user_agent}"


def new_session() -> str:
    """A short id that makes segment URIs unique across restarts of a stream."""
    return format(int(time.time() * 1000) & 0xFFFFFFFFFF, "x")


class HlsViewers:
    """Counts HLS viewers per stream: distinct clients seen within `window` seconds."""

    def __init__(self, window: float = 6.0) -> None:
        self.window = window
        self._seen: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)

    def seen(self, key: tuple[str, str], client: str, now: float) -> None:
        """A client fetched the playlist or a segment of `key`."""
        self._seen[key][client] = now

    def count(self, key: tuple[str, str], now: float) -> int:
        """Clients of `key` seen recently (forgetting older ones)."""
        clients = self._seen.get(key)
        if not clients:
            return 0
        for c in [c for c, t in clients.items() if now - t > self.window]:
            del clients[c]
        if not clients:
            del self._seen[key]
            return 0
        return len(clients)

    def total(self, now: float) -> int:
        """All HLS viewers."""
        return sum(self.count(k, now) for k in list(self._seen))

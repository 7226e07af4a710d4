"""HLS: a segmenter that cuts frames at keyframes, RFC 8216 live playlists, and MPEG-TS
muxing of a segment through PyAV (remuxing FLV tags, no decoding).

`Segmenter` and `render_playlist` are pure; `mux_ts` is blocking CPU work (run it in a thread).
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

import av

from common import flv
from common.rtmp import messages as m
from common.stream import Frame
from common.streamkey import StreamKey, StreamKeyError, shown

AUDIO_ONLY_CUT_MS = 1000
"""Without video, segments are cut on audio frames."""
CUT_SLACK_MS = 100
"""A keyframe this close to the target duration already cuts."""
BACK_JUMP_MS = 1000
"""A frame this far behind the newest output time is a timestamp jump (backwards)."""
MAX_STEP_MS = 200
"""Longest frame duration learned from a track's timestamps (used to retime broken ones)."""
FRAME_MS = {m.VIDEO: 40, m.AUDIO: 23}
"""A track's frame duration until its timestamps tell."""
MEDIA = (m.AUDIO, m.VIDEO)


@dataclass
class SegmentSpec:
    """A closed segment's frames (starting at a keyframe when there is video).

    `times` are the frames' output timestamps: equal to `frame.timestamp` unless the
    stream's timestamps jumped or went backwards (see `Segmenter`). `seq` counts the
    segmenter's cuts; the playlist numbers the segments it gets (`HlsPlaylist.append`).
    """

    seq: int
    frames: list[Frame]
    start_ms: int
    duration_ms: int
    discontinuity: bool
    headers: list[Frame]
    times: list[int] = field(default_factory=list)
    cause: str = "target"  # target, forced (too long without a keyframe), source, end
    jumps: int = 0  # timestamp jumps smoothed over inside this segment


class _Track:
    """Retiming state of one track (audio or video)."""

    __slots__ = ("offset", "out", "step", "clamped")

    def __init__(self, step: int) -> None:
        self.offset = 0  # output = raw + offset
        self.out: int | None = None  # last output timestamp
        self.step = step  # learned frame duration
        self.clamped = False  # the last frame did not move forward by itself


class Segmenter:
    """Cuts a stream's frames into segments at keyframes once `target_ms` has passed.

    Frames before the first keyframe are skipped, so every segment decodes on its own.
    A new source (publisher) closes the open segment and starts one marked discontinuous.

    Timestamps are not trusted: each audio/video frame gets an output timestamp that keeps
    its track strictly increasing and all tracks within `BACK_JUMP_MS`..`jump_ms` of the
    newest output time. A well-behaved stream keeps its own timestamps. A jump (forward
    more than `jump_ms`, backwards more than `BACK_JUMP_MS`) rebases the track to continue
    one frame after the newest output, without cutting or dropping anything, and marks the
    next segment discontinuous (once for the jumps within `target_ms`, e.g. video then
    audio). A frame that does not move its track forward is placed 1 ms (the first time)
    or one learned frame duration (at most `MAX_STEP_MS`) after the previous one. Cuts,
    durations and the muxed segment all use output times, so any timestamps give segments
    of at least the target (less `CUT_SLACK_MS`) of output time, and the muxer never sees
    time go backwards. A segment with no keyframe for `max_ms` of media (or `max_bytes`)
    is cut anyway (bounded memory): the next one starts without a keyframe.
    """

    def __init__(
        self,
        target_ms: int = 2000,
        *,
        first_seq: int = 0,
        jump_ms: int = 10_000,
        max_ms: int | None = None,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.target_ms = target_ms
        self.jump_ms = jump_ms
        self.max_ms = max_ms if max_ms is not None else max(30_000, 10 * target_ms)
        self.max_bytes = max_bytes
        self.next_seq = first_seq
        self.has_video = False
        self.jumps = 0
        """Timestamp jumps smoothed over."""
        self.retimed = 0
        """Frames whose output timestamp differs from their own."""
        self.forced_cuts = 0
        """Segments cut without a keyframe (`max_ms` or `max_bytes` reached)."""
        self._tracks: dict[int, _Track] = {}
        self._high: int | None = None  # newest output timestamp, all tracks
        self._last_out: int | None = None  # output timestamp of the last media frame
        self._burst: int | None = None  # output time of the first jump of the latest burst
        self._epoch: int | None = None
        self._discontinuity = False  # for the next segment opened
        self._headers: dict[int, Frame] = {}
        self._start: int | None = None
        self._frames: list[Frame] = []
        self._times: list[int] = []
        self._bytes = 0
        self._seg_discontinuity = False
        self._seg_jumps = 0
        self._seg_headers: list[Frame] = []

    def mark_discontinuity(self) -> None:
        """The next segment opened starts a discontinuity (e.g. a new publisher)."""
        self._discontinuity = True

    def seed(self, headers: list[Frame]) -> None:
        """Take metadata and sequence headers the stream already has (a reader added late
        starts after them): `Stream.header_frames(...)`."""
        for frame in headers:
            if frame.header:
                self.push(frame)

    def push(self, frame: Frame, epoch: int = 0) -> SegmentSpec | None:
        """Add a frame; returns the segment it closed, if any."""
        if frame.header:
            self._headers[frame.type_id] = frame
            if frame.type_id == m.VIDEO:
                self.has_video = True
            return None
        media = frame.type_id in MEDIA
        out = self._retime(frame) if media else frame.timestamp
        closed = None
        if self._epoch is not None and epoch != self._epoch:
            end = out if media or self._last_out is None else self._last_out
            closed = self._close(end, "source")
            self._discontinuity = True
        self._epoch = epoch
        if media:
            self._last_out = out
        starts = frame.keyframe if self.has_video else frame.type_id == m.AUDIO
        if self._start is None:
            if starts:
                self._open(frame, out)
            return closed
        elapsed = out - self._start
        cut_at = self.target_ms if self.has_video else min(self.target_ms, AUDIO_ONLY_CUT_MS)
        if starts and elapsed >= cut_at - CUT_SLACK_MS:
            closed = self._close(out, "target")
            self._open(frame, out)
        elif (
            media
            and frame.type_id == (m.VIDEO if self.has_video else m.AUDIO)
            and (elapsed >= self.max_ms or self._bytes >= self.max_bytes)
        ):
            self.forced_cuts += 1
            closed = self._close(out, "forced")
            self._open(frame, out)
        else:
            self._frames.append(frame)
            self._times.append(out)
            self._bytes += len(frame.payload)
        return closed

    def flush(self, frame_ms: int = 33) -> SegmentSpec | None:
        """Close the open segment (end of stream)."""
        if self._start is None or self._last_out is None:
            return None
        return self._close(self._last_out + frame_ms, "end")

    def _retime(self, frame: Frame) -> int:
        track = self._tracks.get(frame.type_id)
        if track is None:
            track = self._tracks[frame.type_id] = _Track(FRAME_MS[frame.type_id])
        ts = frame.timestamp
        out = ts + track.offset
        high = self._high
        jumped = high is not None and (out > high + self.jump_ms or out < high - BACK_JUMP_MS)
        if jumped:
            assert high is not None
            out = high + track.step
            track.offset = out - ts
            self.jumps += 1
            self._seg_jumps += 1
            if self._burst is None or out - self._burst >= self.target_ms:
                # the first jump of a burst (tracks jump one after the other): one mark
                self._burst = out
                self._discontinuity = True
        last = track.out
        if last is not None and out <= last:
            out = last + (track.step if track.clamped else 1)
            track.clamped = True
        else:
            if last is not None and not jumped and out - last <= MAX_STEP_MS:
                track.step = out - last
            track.clamped = False
        if out != ts:
            self.retimed += 1
        track.out = out
        if high is None or out > high:
            self._high = out
        return out

    def _open(self, frame: Frame, out: int) -> None:
        self._start = out
        self._frames = [frame]
        self._times = [out]
        self._bytes = len(frame.payload)
        self._seg_discontinuity = self._discontinuity
        self._discontinuity = False
        self._seg_headers = [
            self._headers[t] for t in (m.DATA_AMF0, m.VIDEO, m.AUDIO) if t in self._headers
        ]

    def _close(self, end_ms: int, cause: str) -> SegmentSpec | None:
        if self._start is None or not self._frames:
            self._start = None
            return None
        spec = SegmentSpec(
            seq=self.next_seq,
            frames=self._frames,
            start_ms=self._start,
            duration_ms=max(1, end_ms - self._start),
            discontinuity=self._seg_discontinuity,
            headers=self._seg_headers,
            times=self._times,
            cause=cause,
            jumps=self._seg_jumps,
        )
        self.next_seq += 1
        self._start = None
        self._frames = []
        self._times = []
        self._bytes = 0
        self._seg_jumps = 0
        return spec


def mux_ts(spec: SegmentSpec) -> bytes:
    """The segment as MPEG-TS: its FLV tags remuxed by PyAV's mpegts muxer (which converts
    AVC to Annex B with SPS/PPS at the keyframe and writes ADTS for AAC). Frames are stamped
    with their output times (`spec.times`); an empty result means nothing could be muxed."""
    has_audio = any(h.type_id == m.AUDIO for h in spec.headers)
    has_video = any(h.type_id == m.VIDEO for h in spec.headers)
    parts = [flv.file_header(audio=has_audio, video=has_video)]
    for h in spec.headers:
        ts = 0 if h.type_id == m.DATA_AMF0 else spec.start_ms
        parts.append(flv.build_tag(h.type_id, ts, h.payload))
    times = spec.times or [f.timestamp for f in spec.frames]
    parts += [
        f.flv if t == f.timestamp else flv.build_tag(f.type_id, t, f.payload)
        for f, t in zip(spec.frames, times, strict=True)
    ]
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

    @property
    def next_seq(self) -> int:
        """The media sequence number of the next segment added."""
        return self.segments[-1].seq + 1 if self.segments else self.first_seq

    def append(
        self, data: bytes, duration: float, *, discontinuity: bool, wall: float | None = None
    ) -> Segment:
        """Add a muxed segment numbered `next_seq` (so numbers never skip: a segment that
        could not be muxed takes no number) and return it."""
        seq = self.next_seq
        seg = Segment(seq, duration, self.uri(seq), data, discontinuity, wall)
        self.add(seg)
        return seg

    def add(self, seg: Segment) -> None:
        """Append a segment numbered `next_seq`; segments past the window (plus `keep` for
        slow clients) go."""
        if seg.seq != self.next_seq:
            raise ValueError(f"segment {seg.seq} added where {self.next_seq} comes next")
        self.ended = False
        self.segments.append(seg)
        self.target_duration = max(
            self.target_duration, math.ceil(self.target), round(seg.duration)
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


_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.~-]{0,250}\.ts")
"""An HLS segment file name (the origin's NAME-SESSION-SEQ.ts)."""


def hls_target(path: str) -> tuple[StreamKey, str]:
    """A viewer's HLS path ('/app/name.m3u8' or '/app/name-session-seq.ts', percent-decoded)
    -> its stream key and the canonical, percent-quoted path (what an edge asks its parent
    for, and its cache key); StreamKeyError with the reason for anything else."""
    target = hls_path(path)
    if target is None:
        raise StreamKeyError("expected /app/name.m3u8 or /app/name-session-seq.ts")
    app, name, file = target
    key = StreamKey.parse(app, name)
    if file.endswith(".ts") and (_SEGMENT.fullmatch(file) is None or file.count("-") < 2):
        raise StreamKeyError(f"segment name {shown(file)} is not NAME-SESSION-SEQ.ts")
    return key, f"/{quote(key.app, safe='')}/{quote(file, safe='')}"


def client_key(peer: str, user_agent: str) -> str:
    """How an HLS viewer is told apart from others: its address (without port) and a short
    digest of its agent (so a key is small whatever the agent string)."""
    digest = hashlib.blake2b(user_agent.encode("utf-8", "replace"), digest_size=8).hexdigest()
    return f"{peer.rsplit(':', 1)[0]}|{digest}"


def new_session() -> str:
    """A short id that makes segment URIs unique across restarts of a stream."""
    return format(int(time.time() * 1000) & 0xFFFFFFFFFF, "x")


class HlsViewers:
    """Counts HLS viewers per stream: distinct clients seen within `window` seconds.

    Clients are keyed by what requests say (address and agent), so the table is bounded:
    each stream's clients are kept oldest first and expire from the front; at most
    `max_per_address` clients of one address count for a stream (one host cannot inflate a
    stream's viewers, and so an edge's load, without limit), `max_clients` per stream and
    `max_streams` streams are held (the oldest go first).
    """

    def __init__(
        self,
        window: float = 6.0,
        *,
        max_clients: int = 100_000,
        max_streams: int = 10_000,
        max_per_address: int = 4096,
    ) -> None:
        self.window = window
        self.max_clients = max_clients
        self.max_streams = max_streams
        self.max_per_address = max_per_address
        self._seen: dict[tuple[str, str], dict[str, float]] = {}
        self._per_address: dict[tuple[str, str], Counter[str]] = {}

    def seen(self, key: tuple[str, str], client: str, now: float) -> None:
        """A client fetched the playlist or a segment of `key`."""
        clients = self._seen.pop(key, None)
        if clients is None:
            clients = {}
            while len(self._seen) >= self.max_streams:
                oldest = next(iter(self._seen))
                del self._seen[oldest]
                self._per_address.pop(oldest, None)
        self._seen[key] = clients  # most recently seen stream last
        per_address = self._per_address.setdefault(key, Counter())
        self._expire(key, clients, now)
        if client in clients:
            del clients[client]
        else:
            address = client.rsplit("|", 1)[0]
            if per_address[address] >= self.max_per_address:
                return
            per_address[address] += 1
        clients[client] = now  # oldest first
        while len(clients) > self.max_clients:
            self._drop(key, clients, next(iter(clients)))

    def _drop(self, key: tuple[str, str], clients: dict[str, float], client: str) -> None:
        del clients[client]
        per_address = self._per_address.get(key)
        if per_address is not None:
            address = client.rsplit("|", 1)[0]
            per_address[address] -= 1
            if per_address[address] <= 0:
                del per_address[address]

    def _expire(self, key: tuple[str, str], clients: dict[str, float], now: float) -> None:
        while clients:
            oldest = next(iter(clients))
            if now - clients[oldest] <= self.window:
                return
            self._drop(key, clients, oldest)

    def count(self, key: tuple[str, str], now: float) -> int:
        """Clients of `key` seen recently (forgetting older ones)."""
        clients = self._seen.get(key)
        if clients is None:
            return 0
        self._expire(key, clients, now)
        if not clients:
            del self._seen[key]
            self._per_address.pop(key, None)
        return len(clients)

    def total(self, now: float) -> int:
        """All HLS viewers."""
        return sum(self.count(k, now) for k in list(self._seen))

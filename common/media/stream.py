"""The one media object shared by origin and edge: `Stream`, its `Frame`s and readers.

A source pushes frames; readers hold a cursor (a sequence number) into the ring and
never get a private copy. Each frame's wire bytes are built once and shared.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import trio

from common.media.segclock import CLOCK_PREFIX, ClockState, Cut, SegmentClock
from common.proto import amf0, flv, metadata
from common.proto.clock import is_stamp
from common.proto.rtmp import messages as m
from common.proto.rtmp.chunk import encode_message

RTMP_CHUNK_SIZE = 4096
"""Chunk size of the RTMP bytes shared by every RTMP player (announced at connect)."""
PLAY_STREAM_ID = 1
"""Message stream id of the shared RTMP bytes (the id our server gives the first stream)."""
SOURCE_GAP_MS = 20
"""Timestamp step inserted where a new source continues a stream."""

log = logging.getLogger("livecdn.stream")

_RTMP_CSID = {m.AUDIO: m.CSID_AUDIO, m.VIDEO: m.CSID_VIDEO, m.DATA_AMF0: m.CSID_DATA}


class Frame:
    """One media message in the ring, with wire bytes shared by all readers."""

    __slots__ = (
        "seq",
        "type_id",
        "timestamp",
        "payload",
        "keyframe",
        "header",
        "flv",
        "source",
        "cut",
        "clock",
        "stamp",
        "_rtmp",
    )

    def __init__(
        self,
        seq: int,
        type_id: int,
        timestamp: int,
        payload: bytes,
        *,
        keyframe: bool = False,
        header: bool = False,
    ) -> None:
        self.seq = seq
        self.type_id = type_id
        self.timestamp = timestamp
        self.payload = payload
        self.keyframe = keyframe
        self.header = header
        self.flv = flv.build_tag(type_id, timestamp, payload)
        self.source = 0  # which source (publisher/upstream) of the stream pushed it
        self.cut: Cut | None = None  # the HLS segment it starts
        self.clock: ClockState | None = None  # keyframes: the segment clock after it
        self.stamp: Frame | None = None  # the clock stamp after it, for readers that ask
        self._rtmp: bytes | None = None

    @property
    def rtmp(self) -> bytes:
        """RTMP chunks (fmt 0 header, RTMP_CHUNK_SIZE, PLAY_STREAM_ID), built on first use."""
        data = self._rtmp
        if data is None:
            data = self._rtmp = self.rtmp_for(PLAY_STREAM_ID)
        return data

    def rtmp_for(self, stream_id: int, timestamp: int | None = None) -> bytes:
        """RTMP chunks for another message stream id or timestamp (not cached)."""
        ts = self.timestamp if timestamp is None else timestamp
        csid = _RTMP_CSID.get(self.type_id, m.CSID_DATA)
        return encode_message(csid, self.type_id, stream_id, ts, self.payload, RTMP_CHUNK_SIZE)

    def __repr__(self) -> str:
        kind = {8: "audio", 9: "video", 18: "data"}.get(self.type_id, str(self.type_id))
        flags = "K" if self.keyframe else ("H" if self.header else "")
        return f"<Frame {self.seq} {kind} {self.timestamp}ms {len(self.payload)}B {flags}>"


@dataclass
class StreamStats:
    """Counters of one stream, for the API and metrics."""

    frames_in: int = 0
    bytes_in: int = 0
    dropped_frames: int = 0
    sources: int = 0


@dataclass(eq=False, slots=True)
class Reader:
    """A cursor into a stream's ring, owned by one player connection."""

    protocol: str
    cursor: int = 0
    need_keyframe: bool = False
    dropped: int = 0
    closed: bool = False
    clock: bool = False  # gets the segment clock's state wherever its frames (re)start
    stamps: bool = False  # gets the clock stamps (`common.proto.clock`) after their frames


class Stream:
    """Metadata, sequence headers, the GOP ring and the readers of one live stream.

    The ring is bounded by `max_frames` and `max_bytes`; it is trimmed a whole GOP at a
    time so that, while the bounds allow, it starts at a keyframe.
    """

    def __init__(
        self,
        app: str,
        name: str,
        *,
        gop_cache: bool = True,
        max_frames: int = 2048,
        max_bytes: int = 16 * 1024 * 1024,
        max_lag_ms: int = 5000,
        segment_ms: int = 2000,
        session: str = "0",
        wall_ms: Callable[[], int] = lambda: 0,
    ) -> None:
        self.app = app
        self.name = name
        self.gop_cache = gop_cache
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.max_lag_ms = max_lag_ms
        self.metadata: bytes | None = None
        self.metadata_values: dict = {}
        self.video_header: bytes | None = None
        self.audio_header: bytes | None = None
        self.video_codec: str | None = None
        self.audio_codec: str | None = None
        self.audio_rate: int | None = None
        self.audio_channels: int | None = None
        self.dimensions: tuple[int, int] | None = None
        self.tracks: tuple[bool, bool] | None = None  # (audio, video) when a source told us
        self.closed = False
        self.stats = StreamStats()
        self.readers: set[Reader] = set()
        self._frames: list[Frame] = []
        self._base = 0  # seq of _frames[0]
        self._head = 0  # seq the next frame gets
        self._bytes = 0
        self._last_keyframe: int | None = None
        self._keyframes: list[int] = []
        self._changed = trio.Event()
        self._offset = 0
        self._floor = 0
        self._last_ts: int | None = None
        self._rebase = False
        self._dropped_keys: list[str] = []  # onMetaData keys last dropped (logged once)
        self._track_ts: dict[int, int] = {}  # the last timestamp of each media track
        self._dedup: dict[int, int] | None = None  # see continue_timeline
        self.clock = SegmentClock(segment_ms, session, now_ms=wall_ms)
        """Where HLS segments begin, the same on every node (see `common.media.segclock`):
        `session` names its segments, `wall_ms` dates them."""

    # ------------------------------------------------------------------ source side

    @property
    def head(self) -> int:
        """Sequence number the next pushed frame will get."""
        return self._head

    def new_source(self) -> None:
        """A new source (publisher or upstream) takes over: its timestamps are rebased
        to continue where the previous source stopped."""
        self.stats.sources += 1
        if self._last_ts is not None:
            self._rebase = True
        self._dedup = None

    def take_clock(self, state: ClockState) -> bool:
        """A parent's segment clock for the keyframe that comes next. The same stream pulled
        again (or skipped ahead) keeps its timeline (`continue_timeline`) and ignores a state
        it is already past; True if the clock took the state."""
        if state.session == self.clock.session:
            self.continue_timeline()
            if self.clock.covers(state):
                return False
        self.clock.anchor(state)
        return True

    def continue_timeline(self) -> None:
        """The new source continues this stream's own timeline (the same stream from the same
        origin, pulled again): its timestamps are taken as they are, after the offset so far,
        and the frames it repeats (up to each track's last timestamp) are dropped."""
        self._rebase = False
        self._dedup = dict(self._track_ts) or None

    def push(self, type_id: int, timestamp: int, payload: bytes) -> Frame | None:
        """Add one audio/video/data message; sequence headers update the stream's headers.

        Returns the frame put in the ring, or None if nothing changed (e.g. a repeated
        identical sequence header, or an empty message: some encoders send those).
        """
        self.stats.frames_in += 1
        self.stats.bytes_in += len(payload)
        if not payload or (type_id == m.DATA_AMF0 and payload.startswith(CLOCK_PREFIX)):
            return None  # a segment clock comes only from a parent, never through a stream
        if type_id == m.DATA_AMF0 and is_stamp(payload):
            self._attach_stamp(payload)
            return None
        ts = self._rebased(timestamp)
        if self._dedup is not None and type_id in self._dedup:
            if ts <= self._dedup[type_id]:
                return None  # a source pulled again repeats what this stream has
            del self._dedup[type_id]
        keyframe = False
        if type_id == m.VIDEO:
            info = flv.video_info(payload)
            if info.sequence_header:
                self.video_codec = info.codec
                if payload == self.video_header:
                    return None
                if self.video_header is not None:
                    self.clock.header_changed()  # new settings: HLS starts a discontinuity
                self.video_header = payload
                self.dimensions = flv.avc_config_dimensions(payload) or self.dimensions
                return self._append(type_id, ts, payload, header=True)
            keyframe = info.keyframe and not info.end_of_sequence
        elif type_id == m.AUDIO:
            info = flv.audio_info(payload)
            self.audio_codec = info.codec
            if info.sequence_header:
                self.audio_rate = info.sample_rate
                self.audio_channels = info.channels
                if payload == self.audio_header:
                    return None
                if self.audio_header is not None:
                    self.clock.header_changed()
                self.audio_header = payload
                return self._append(type_id, ts, payload, header=True)
        return self._append(type_id, ts, payload, keyframe=keyframe)

    def _attach_stamp(self, payload: bytes) -> None:
        """A clock stamp rides on the keyframe it follows, out of the ring (one elsewhere is
        dropped): only readers that asked get it, so standard players never see an unknown
        data stream."""
        last = self._frames[-1] if self._frames else None
        if last is not None and last.keyframe and last.stamp is None:
            last.stamp = Frame(-1, m.DATA_AMF0, last.timestamp, payload)

    def set_metadata(self, payload: bytes, values: dict) -> Frame | None:
        """Replace onMetaData (the AMF0 body starting with "onMetaData"); only its clean
        part (finite numbers, short strings) is kept and sent on, see `common.proto.metadata`."""
        values, dropped = metadata.clean(values)
        if dropped and dropped != self._dropped_keys:  # once per set of keys, not per message
            self._dropped_keys = dropped
            log.info(
                "metadata of %s/%s: dropped unusable keys %s",
                self.app,
                self.name,
                ", ".join(dropped),
            )
        payload = metadata.encode(values)
        if payload == self.metadata:
            return None
        self.metadata = payload
        self.metadata_values = values
        # Timestamp 0: ffmpeg's FLV demuxer treats onMetaData with any other timestamp as
        # an extra data stream.
        return self._append(m.DATA_AMF0, 0, payload, header=True)

    def _rebased(self, timestamp: int) -> int:
        if self._rebase:
            self._rebase = False
            self._floor = self._last_ts + SOURCE_GAP_MS
            self._offset = self._floor - timestamp
        ts = timestamp + self._offset
        if ts < self._floor:
            ts = self._floor
        self._last_ts = ts
        return ts

    def _append(
        self, type_id: int, ts: int, payload: bytes, *, keyframe: bool = False, header: bool = False
    ) -> Frame:
        frame = Frame(self._head, type_id, ts, payload, keyframe=keyframe, header=header)
        frame.source = self.stats.sources
        if not header:
            self._track_ts[type_id] = ts
            cut = self.clock.feed(
                type_id,
                ts,
                len(payload),
                keyframe=keyframe,
                video=self.has_video,
            )
            frame.cut = cut
            if keyframe:
                frame.clock = self.clock.state(at=ts, starts=cut is not None)
        self._frames.append(frame)
        self._head += 1
        self._bytes += len(frame.flv)
        if keyframe:
            self._last_keyframe = frame.seq
            self._keyframes.append(frame.seq)
            if not self.gop_cache:
                # Drop the previous GOP, but not the frames a reader has yet to read
                # (readers already behind the ring's tail will jump anyway).
                base = self._base
                self._drop_before(
                    min([frame.seq, *(r.cursor for r in self.readers if r.cursor >= base)])
                )
        self._trim()
        self._changed.set()
        self._changed = trio.Event()
        return frame

    def _trim(self) -> None:
        while len(self._frames) > self.max_frames or self._bytes > self.max_bytes:
            later = next((k for k in self._keyframes if k > self._base), None)
            self._drop_before(later if later is not None else self._base + 1)
        # By media time: a GOP goes once the next one starts `max_lag_ms` or more before the
        # newest frame (a reader that far behind jumps to the newest keyframe anyway), so the
        # ring holds the last GOP plus `max_lag_ms`, not as much as frames and bytes allow.
        newest = self._last_ts or 0
        while True:
            keys = self._keyframes  # ascending, none before the ring's start
            i = 1 if keys and keys[0] <= self._base else 0
            if i >= len(keys):
                return
            later = keys[i]
            if newest - self._frames[later - self._base].timestamp < self.max_lag_ms:
                return
            self._drop_before(later)

    def _drop_before(self, seq: int) -> None:
        k = seq - self._base
        if k <= 0:
            return
        for frame in self._frames[:k]:
            self._bytes -= len(frame.flv)
        del self._frames[:k]
        self._base = seq
        self._keyframes = [s for s in self._keyframes if s >= seq]
        if self._last_keyframe is not None and self._last_keyframe < seq:
            self._last_keyframe = None

    def close(self) -> None:
        """End of stream: wake every reader so it can finish."""
        self.closed = True
        self._changed.set()

    # ------------------------------------------------------------------ reader side

    def add_reader(self, protocol: str, *, clock: bool = False, stamps: bool = False) -> Reader:
        """A new reader, positioned for a fast start (latest keyframe) or the next one;
        `clock`: a pulling node, which gets the segment clock's state (see `clock_state`)
        ahead of the keyframe it skips to when it falls behind; `stamps`: it gets the clock
        stamps too (`Frame.stamp`)."""
        reader = Reader(protocol, clock=clock, stamps=stamps)
        if self.gop_cache and self._last_keyframe is not None:
            reader.cursor = self._last_keyframe
            if clock:  # a node that packages HLS: the whole segment, from where it began
                cuts = (k for k in reversed(self._keyframes) if self._frames[k - self._base].cut)
                reader.cursor = next(cuts, self._last_keyframe)
        else:
            reader.cursor = self._head
            reader.need_keyframe = self.has_video
        self.readers.add(reader)
        return reader

    def remove_reader(self, reader: Reader) -> None:
        """Forget a reader (its connection ended)."""
        reader.closed = True
        self.readers.discard(reader)

    @property
    def has_video(self) -> bool:
        """Whether the stream carries video (a video header, or metadata says so)."""
        return self.video_header is not None or "videocodecid" in self.metadata_values

    def header_frames(self, timestamp: int) -> list[Frame]:
        """Metadata (stamped 0) and sequence headers (stamped `timestamp`), for a new reader."""
        out = []
        for type_id, payload in (
            (m.DATA_AMF0, self.metadata),
            (m.VIDEO, self.video_header),
            (m.AUDIO, self.audio_header),
        ):
            if payload is not None:
                ts = 0 if type_id == m.DATA_AMF0 else timestamp
                out.append(Frame(-1, type_id, ts, payload, header=True))
        return out

    def clock_state(self, reader: Reader) -> ClockState:
        """The segment clock as of the first frame `reader` will get (call before its first
        `pending`): a pulling node continues the stream's segments from there."""
        k = reader.cursor - self._base
        if 0 <= k < len(self._frames):
            state = self._frames[k].clock
            if state is not None:
                return state
        return self.clock.state()

    def start_timestamp(self, reader: Reader) -> int:
        """Timestamp of the first frame `reader` will get (for its header frames)."""
        k = reader.cursor - self._base
        if 0 <= k < len(self._frames):
            return self._frames[k].timestamp
        return self._last_ts or 0

    def pending(self, reader: Reader, limit: int | None = None) -> list[Frame]:
        """Frames from the reader's cursor to the head; advances the cursor.

        A reader behind the ring's tail, or lagging more than `max_lag_ms`, jumps to the
        newest keyframe; the frames it skips are counted as dropped. Header frames
        (metadata, sequence headers) still in the ring are not skipped.
        """
        cursor = reader.cursor
        if cursor >= self._head:
            return []
        frames = self._frames
        k = cursor - self._base
        headers: list[Frame] = []
        if k < 0 or (
            self._last_keyframe is not None
            and cursor < self._last_keyframe
            and self._lag_ms(k) > self.max_lag_ms
        ):
            target = self._last_keyframe if self._last_keyframe is not None else self._head
            # Sequence headers and metadata in the skipped range are still sent: the
            # frames after the jump may need them. A reader behind the ring's tail may have
            # missed some already trimmed away, so it gets the stream's current ones.
            if k < 0:
                at = frames[target - self._base].timestamp if target < self._head else 0
                headers = self.header_frames(at)
            else:
                headers = [f for f in frames[k : target - self._base] if f.header]
            dropped = target - cursor - (len(headers) if k >= 0 else 0)
            if reader.clock and target < self._head:
                # a pulling node misses the cuts it skips: the clock's state comes along
                key = frames[target - self._base]
                if key.clock is not None:
                    state = Frame(-1, m.DATA_AMF0, key.timestamp, key.clock.encode(), header=True)
                    headers = [state, *headers]
            reader.dropped += dropped
            self.stats.dropped_frames += dropped
            reader.need_keyframe = self._last_keyframe is None and self.has_video
            k = target - self._base
        end = len(frames) if limit is None else min(len(frames), k + limit)
        out = headers + frames[k:end] if headers else frames[k:end]
        reader.cursor = self._base + end
        if reader.need_keyframe:
            out = self._from_keyframe(reader, out)
        return out

    def _lag_ms(self, k: int) -> int:
        """Media time from the frame at ring index `k` to the newest frame.

        onMetaData frames are stamped 0 whatever the stream's time, so they are skipped.
        """
        frames = self._frames
        for i in range(k, len(frames)):
            frame = frames[i]
            if not (frame.header and frame.type_id == m.DATA_AMF0):
                return (self._last_ts or 0) - frame.timestamp
        return 0

    def _from_keyframe(self, reader: Reader, frames: list[Frame]) -> list[Frame]:
        kept = []
        for frame in frames:
            if reader.need_keyframe and frame.keyframe:
                reader.need_keyframe = False
            if frame.header or not reader.need_keyframe:
                kept.append(frame)
        return kept

    async def wait_beyond(self, seq: int) -> None:
        """Return once a frame with sequence number >= `seq` exists or the stream closes."""
        while self._head <= seq and not self.closed:
            await self._changed.wait()

    # ------------------------------------------------------------------ measurements

    def iter_frames(self) -> Iterator[Frame]:
        """The frames currently in the ring, oldest first."""
        return iter(self._frames)

    @property
    def ring_bytes(self) -> int:
        """Bytes (FLV tags) held in the ring."""
        return self._bytes

    def measured(self) -> dict:
        """Bitrate (bit/s) and frame rate over the ring's media time."""
        media = [f for f in self._frames if not f.header]
        if len(media) < 2:
            return {"bitrate": 0, "fps": 0.0}
        span = media[-1].timestamp - media[0].timestamp
        if span <= 0:
            return {"bitrate": 0, "fps": 0.0}
        size = sum(len(f.payload) for f in media)
        videos = sum(1 for f in media if f.type_id == m.VIDEO)
        return {
            "bitrate": int(size * 8000 / span),
            "fps": round((videos - 1) * 1000 / span, 2) if videos > 1 else 0.0,
        }


def metadata_values(payload: bytes) -> dict:
    """The object of an onMetaData body, or {}."""
    values = amf0.decode_all(payload)
    return dict(values[1]) if len(values) > 1 and isinstance(values[1], dict) else {}


class Registry:
    """Live streams by (app, name)."""

    def __init__(self) -> None:
        self._streams: dict[tuple[str, str], Stream] = {}

    def get(self, app: str, name: str) -> Stream | None:
        """The live stream app/name, if any."""
        return self._streams.get((app, name))

    def add(self, stream: Stream) -> None:
        """Register a new stream."""
        self._streams[(stream.app, stream.name)] = stream

    def remove(self, stream: Stream) -> None:
        """Unregister `stream` (only if it is still the registered one)."""
        key = (stream.app, stream.name)
        if self._streams.get(key) is stream:
            del self._streams[key]

    def __iter__(self) -> Iterator[Stream]:
        return iter(list(self._streams.values()))

    def __len__(self) -> int:
        return len(self._streams)

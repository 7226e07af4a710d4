"""The HLS segmenter: cuts a stream's frames into segments at keyframes, retiming broken
timestamps (pure: frames in, segment specs out)."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.media.segclock import (
    AUDIO_ONLY_CUT_MS,
    BACK_JUMP_MS,
    CUT_SLACK_MS,
    Cut,
    longest_uncut_ms,
)
from common.media.stream import Frame
from common.proto.rtmp import messages as m

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
    cut: Cut | None = None  # the stream's segment clock's cut (`marked` segmenters)


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

    A `marked` segmenter cuts only where the stream's segment clock did (`Frame.cut`, see
    `common.media.segclock`) and takes its numbers and discontinuities from there, so that
    every node cuts a live stream alike; timestamps are still retimed as above, each segment
    on its own (from its first frame's timestamp).
    """

    def __init__(
        self,
        target_ms: int = 2000,
        *,
        first_seq: int = 0,
        jump_ms: int = 10_000,
        max_ms: int | None = None,
        max_bytes: int = 64 * 1024 * 1024,
        marked: bool = False,
    ) -> None:
        self.target_ms = target_ms
        self.marked = marked
        self._cut: Cut | None = None
        self.jump_ms = jump_ms
        self.max_ms = max_ms if max_ms is not None else longest_uncut_ms(target_ms)
        self.max_bytes = max_bytes
        self.next_seq = first_seq
        self.has_video = False
        self.jumps = 0
        """Timestamp jumps smoothed over."""
        self.retimed = 0
        """Frames whose output timestamp differs from their own."""
        self.forced_cuts = 0
        """Segments cut without a keyframe (`max_ms` or `max_bytes` reached)."""
        self.abandoned = 0
        """Open segments given up because no cut came (a `marked` segmenter; bounded)."""
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
        if self.marked and frame.cut is not None:
            # each segment retimed on its own: its output depends on its frames only, so
            # every node that cut it writes the same (a jump's discontinuity: the clock's)
            self._tracks.clear()
            self._high = self._burst = None
        out = self._retime(frame) if media else frame.timestamp
        if self.marked:
            return self._push_marked(frame, out)
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

    def _push_marked(self, frame: Frame, out: int) -> SegmentSpec | None:
        if frame.type_id in MEDIA:
            self._last_out = out
        cut = frame.cut
        if cut is None:
            if self._start is not None:
                self._frames.append(frame)
                self._times.append(out)
                self._bytes += len(frame.payload)
                if out - self._start > 2 * self.max_ms or self._bytes > self.max_bytes:
                    # the clock stopped cutting (it cuts by then): bounded, the frames go
                    self.abandoned += 1
                    self._start, self._frames, self._times, self._bytes = None, [], [], 0
            return None
        closed = self._close(out, "forced" if cut.forced else "target")
        if cut.forced:
            self.forced_cuts += 1
        self._discontinuity = cut.discontinuity
        self._open(frame, out)
        self._cut = cut
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
        cut, self._cut = self._cut, None
        spec = SegmentSpec(
            seq=cut.seq if cut is not None else self.next_seq,
            frames=self._frames,
            start_ms=self._start,
            duration_ms=max(1, end_ms - self._start),
            discontinuity=self._seg_discontinuity,
            headers=self._seg_headers,
            times=self._times,
            cause=cause,
            jumps=self._seg_jumps,
            cut=cut,
        )
        self.next_seq = spec.seq + 1
        self._start = None
        self._frames = []
        self._times = []
        self._bytes = 0
        self._seg_jumps = 0
        return spec

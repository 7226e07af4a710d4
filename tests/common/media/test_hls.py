"""The sans-IO HLS core: the segmenter (fuzzed with hostile timestamps, and checked against
the segmenter it replaced on well-behaved streams), playlist numbering, TS muxing of retimed
segments."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.media.segmenter import (
    AUDIO_ONLY_CUT_MS,
    BACK_JUMP_MS,
    CUT_SLACK_MS,
    MAX_STEP_MS,
    Segmenter,
    SegmentSpec,
)
from common.media.stream import Frame, Stream
from common.proto.flv import FlvParser
from common.proto.hlsplaylist import HlsPlaylist, Segment, render_playlist
from common.proto.rtmp import messages as m
from common.serve.tsmux import mux_ts
from tests.hls_validator import LiveValidator, parse

V, A, D = m.VIDEO, m.AUDIO, m.DATA_AMF0


def header(type_id: int) -> Frame:
    return Frame(-1, type_id, 0, b"\x17\x00hdr" if type_id == V else b"\xaf\x00hdr", header=True)


def media(seq: int, type_id: int, ts: int, key: bool = False) -> Frame:
    payload = (b"\x17\x01" if key else b"\x27\x01") if type_id == V else b"\xaf\x01"
    return Frame(seq, type_id, ts, payload + b"x" * 20, keyframe=key and type_id == V)


def run(seg: Segmenter, frames: list[Frame], sources: list[int] | None = None) -> list[SegmentSpec]:
    out = []
    for i, f in enumerate(frames):
        spec = seg.push(f, sources[i] if sources else 0)
        if spec is not None:
            out.append(spec)
    spec = seg.flush()
    if spec is not None:
        out.append(spec)
    return out


def av_stream(n: int, fps: int = 25, gop: int = 25, t0: int = 0) -> list[Frame]:
    """`n` video frames (keyframe every `gop`) each followed by an audio frame."""
    frames = []
    for i in range(n):
        ts = t0 + i * 1000 // fps
        frames.append(media(2 * i, V, ts, key=i % gop == 0))
        frames.append(media(2 * i + 1, A, ts))
    return frames


# --------------------------------------------------------------------------- the old segmenter


class LegacySegmenter:
    """The segmenter as it was before timestamps were distrusted (the reference for
    well-behaved streams): cut at keyframes, jump = close + discontinuity."""

    def __init__(self, target_ms: int = 2000, *, jump_ms: int = 10_000) -> None:
        self.target_ms, self.jump_ms, self.next_seq = target_ms, jump_ms, 0
        self._frames: list[Frame] = []
        self._start = self._last_ts = self._epoch = None
        self._discontinuity = False
        self._headers: dict[int, Frame] = {}
        self._seg_headers: list[Frame] = []
        self.has_video = False

    def push(self, frame: Frame, epoch: int = 0):
        if frame.header:
            self._headers[frame.type_id] = frame
            self.has_video |= frame.type_id == V
            return None
        closed = None
        last = self._last_ts
        jumped = last is not None and (
            frame.timestamp < last - 1000 or frame.timestamp > last + self.jump_ms
        )
        new_epoch = self._epoch is not None and epoch != self._epoch
        self._epoch = epoch
        if jumped or new_epoch:
            closed = self._close(frame.timestamp if not jumped else last)
            self._discontinuity = True
        self._last_ts = frame.timestamp
        starts = frame.keyframe if self.has_video else frame.type_id == A
        if self._start is None:
            if starts:
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

    def flush(self, frame_ms: int = 33):
        if self._start is None or self._last_ts is None:
            return None
        return self._close(self._last_ts + frame_ms)

    def _open(self, frame: Frame) -> None:
        self._start = frame.timestamp
        self._frames = [frame]
        self._seg_headers = [self._headers[t] for t in (D, V, A) if t in self._headers]

    def _close(self, end_ms: int):
        if self._start is None or not self._frames:
            self._start = None
            return None
        spec = (self._frames, self._start, max(1, end_ms - self._start), self._discontinuity)
        self.next_seq += 1
        self._discontinuity = False
        self._start = None
        self._frames = []
        return spec


@st.composite
def well_behaved(draw) -> tuple[bool, list[Frame], list[int]]:
    """A stream as encoders send it: each track strictly increasing, tracks interleaved
    within 400 ms of each other, keyframes at least every 20 video frames, stamps (data)
    behind some keyframes, maybe a second source continuing the timestamps."""
    video = draw(st.booleans())
    skew = {V: draw(st.integers(-400, 400)), A: draw(st.integers(-400, 400))}
    start = draw(st.integers(0, 2**31))
    steps = st.one_of(st.integers(1, 200), st.integers(200, 3000))
    events = []
    for type_id in (V, A) if video else (A,):
        ts = start + max(0, -skew[type_id])
        n = draw(st.integers(0, 120))
        since_key = 99
        for _ in range(n):
            ts += draw(steps)
            key = type_id == V and (since_key >= 19 or draw(st.booleans()))
            since_key = 0 if key else since_key + 1
            events.append((ts + skew[type_id], type_id, ts, key))
    events.sort(key=lambda e: (e[0], e[1]))
    frames = [header(V)] if video else []
    frames.append(header(A))
    for _, type_id, ts, key in events:
        frames.append(media(len(frames), type_id, ts, key))
        if key and draw(st.booleans()):
            frames.append(Frame(len(frames), D, ts, b"\x02stamp"))
    cut = draw(st.integers(0, len(frames)))
    sources = [0] * cut + [1] * (len(frames) - cut)
    return video, frames, sources


@settings(max_examples=300, deadline=None)
@given(well_behaved(), st.sampled_from([1000, 2000, 6000]))
def test_a_well_behaved_stream_is_cut_exactly_as_before(stream, target_ms):
    _, frames, sources = stream
    new, old = Segmenter(target_ms), LegacySegmenter(target_ms)
    got = run(new, frames, sources)
    want = []
    for i, f in enumerate(frames):
        spec = old.push(f, sources[i])
        if spec is not None:
            want.append(spec)
    if (spec := old.flush()) is not None:
        want.append(spec)
    assert [(s.frames, s.start_ms, s.duration_ms, s.discontinuity) for s in got] == want
    for spec in got:
        assert spec.times == [f.timestamp for f in spec.frames], "timestamps kept"
    assert new.jumps == new.retimed == new.forced_cuts == 0


# --------------------------------------------------------------------------- hostile timestamps


TS = st.integers(0, 2**32 - 1)


@st.composite
def hostile(draw) -> tuple[bool, list[Frame], list[int], str]:
    """Any timestamps: random, backwards, all equal, alternating per frame, huge jumps;
    any keyframe pattern; maybe a second source."""
    video = draw(st.booleans())
    pattern = draw(st.sampled_from(["random", "backwards", "equal", "alternating", "jumps"]))
    n = draw(st.integers(0, 400))
    base = draw(TS)
    step = draw(st.integers(1, 5000))
    other = (base + draw(st.integers(11_000, 2**32 - 11_000))) % 2**32  # far from base
    kinds = st.sampled_from([V, A, D] if video else [A, D])
    keys = draw(st.sampled_from(["all", "none", "some", "rare"]))
    frames = [header(V)] if video else []
    frames.append(header(A))
    for i in range(n):
        if pattern == "random":
            ts = draw(TS)
        elif pattern == "backwards":
            ts = max(0, base - i * step)
        elif pattern == "equal":
            ts = base
        elif pattern == "alternating":
            ts = base if i % 2 else other
        else:  # well-behaved with a huge jump now and then
            ts = (base + i * 40 + (other if draw(st.integers(0, 30)) == 0 else 0)) % 2**32
        type_id = draw(kinds)
        key = {"all": True, "none": False, "rare": i % 97 == 0}.get(keys) or (
            keys == "some" and draw(st.booleans())
        )
        frames.append(media(len(frames), type_id, ts, key))
    cut = draw(st.integers(0, len(frames)))
    sources = [0] * cut + [draw(st.integers(0, 1))] * (len(frames) - cut)
    return video, frames, sources, pattern


@settings(max_examples=400, deadline=None)
@given(hostile(), st.sampled_from([1000, 2000, 4000]))
def test_hostile_timestamps_give_sane_segments(stream, target_ms):
    video, frames, sources, pattern = stream
    seg = Segmenter(target_ms, max_ms=20_000)
    specs = run(seg, frames, sources)
    cut_at = target_ms if video else min(target_ms, AUDIO_ONLY_CUT_MS)
    seen: set[int] = set()
    last_out: dict[int, int] = {}
    forced = False  # the previous segment was cut without a keyframe
    opened_at_start = 0
    for spec in specs:
        assert spec.frames and len(spec.times) == len(spec.frames)
        assert any(f.type_id in (V, A) for f in spec.frames), "no segment without media"
        assert isinstance(spec.duration_ms, int) and 1 <= spec.duration_ms < 2**40
        assert math.isfinite(spec.duration_ms / 1000)
        first = spec.frames[0]
        if not forced:
            assert first.keyframe if video else first.type_id == A, "opens at a keyframe"
            opened_at_start += 1
        forced = spec.cause == "forced"
        if spec.cause == "target":
            assert spec.duration_ms >= cut_at - CUT_SLACK_MS, "no segment under the minimum"
        for f, t in zip(spec.frames, spec.times, strict=True):
            assert f.seq not in seen, "a frame in two segments"
            seen.add(f.seq)
            if f.type_id in (V, A):
                assert t > last_out.get(f.type_id, -1), "each track strictly increasing"
                # reachable: a frame jump_ms past the highest, then steps of MAX_STEP_MS
                assert 0 <= t <= 2**32 + seg.jump_ms + MAX_STEP_MS * len(frames)
                last_out[f.type_id] = t
        if pattern in ("backwards", "equal", "alternating") and spec.cause == "target":
            # every frame moves its track's clock by at most MAX_STEP_MS, and a lagging track
            # may be pulled up to within BACK_JUMP_MS of the other: no per-frame segments
            n_media = sum(1 for f in spec.frames if f.type_id in (V, A))
            assert (n_media + 1) * MAX_STEP_MS + BACK_JUMP_MS >= cut_at - CUT_SLACK_MS
    starts = sum(1 for f in frames if (f.keyframe if video else f.type_id == A))
    assert opened_at_start <= starts
    assert seg.forced_cuts == sum(1 for s in specs if s.cause == "forced")
    # at most one discontinuity per segment, only where a jump or a new source was
    discs = sum(1 for s in specs if s.discontinuity)
    assert discs <= min(len(specs), seg.jumps + (len(set(sources)) - 1))
    if len(set(sources)) == 1:
        # no media lost: every frame from the first segment's start is in a segment
        pushed = [f.seq for f in frames if not f.header]
        if specs:
            first = pushed.index(specs[0].frames[0].seq)
            assert sorted(seen) == pushed[first:]
        else:
            assert not any(f.keyframe if video else f.type_id == A for f in frames if not f.header)


@pytest.mark.parametrize(
    ("name", "stamp"),
    [
        ("equal", lambda i: 5000),
        ("backwards", lambda i: 10**6 - 40 * i),
        ("alternating", lambda i: 0 if i % 2 else 4_000_000),
        ("random", lambda i: (i * 2654435761) % 2**32),
    ],
)
def test_broken_timestamps_still_give_about_target_segments(name, stamp):
    """A 25 fps stream whose timestamps are useless is cut every ~2 s of frames (counted
    at the learned or default frame duration), never per frame, with at most one
    discontinuity per segment."""
    frames = [header(V), header(A)]
    for i in range(750):  # 30 s at 25 fps, keyframe every second
        frames.append(media(len(frames), V, stamp(2 * i), key=i % 25 == 0))
        frames.append(media(len(frames), A, stamp(2 * i + 1)))
    seg = Segmenter(2000)
    specs = run(seg, frames)
    assert 8 <= len(specs) <= 20, [s.duration_ms for s in specs]
    for spec in specs[:-1]:
        videos = sum(1 for f in spec.frames if f.type_id == V)
        assert 25 <= videos <= 100
        assert 1900 <= spec.duration_ms <= 4100


def test_one_jump_is_one_discontinuity_and_no_media_is_lost():
    frames = [header(V), header(A)]
    frames += av_stream(100)  # 4 s
    frames += av_stream(100, t0=3_600_000)  # the encoder's clock jumped an hour
    for i, f in enumerate(frames):
        f.seq = i
    seg = Segmenter(2000)
    specs = run(seg, frames)
    assert seg.jumps == 2  # video, then audio
    assert [s.discontinuity for s in specs] == [False, False, True, False]
    assert sum(len(s.frames) for s in specs) == 400, "no frame dropped at the jump"
    times = [t for s in specs for f, t in zip(s.frames, s.times, strict=True) if f.type_id == V]
    steps = {b - a for a, b in zip(times, times[1:], strict=False)}
    assert steps == {40}, "the output continues one frame after the jump"


def test_tracks_far_apart_are_aligned_once():
    """Audio stamped 5 s behind video (an encoder bug) is one jump, not one per frame."""
    frames = [header(V), header(A)]
    for i in range(250):
        frames.append(media(len(frames), V, 10_000 + i * 40, key=i % 25 == 0))
        frames.append(media(len(frames), A, 5_000 + i * 40))
    seg = Segmenter(2000)
    specs = run(seg, frames)
    assert seg.jumps == 1
    assert sum(s.discontinuity for s in specs) == 1
    assert [round(s.duration_ms / 1000) for s in specs] == [2, 2, 2, 2, 2]


def test_no_keyframe_for_too_long_is_cut_anyway():
    frames = [header(V), header(A)] + av_stream(2000, gop=10_000)  # one keyframe, 80 s
    seg = Segmenter(2000)
    specs = run(seg, frames)
    assert [s.cause for s in specs] == ["forced", "forced", "end"]
    assert specs[0].duration_ms == 30_000


def test_new_source_closes_and_starts_one_discontinuity():
    frames = [header(V), header(A)] + av_stream(150)
    sources = [1] * len(frames)
    more = av_stream(150, t0=6020)
    frames += more
    sources += [2] * len(more)
    specs = run(Segmenter(2000), frames, sources)
    assert [s.cause for s in specs] == ["target", "target", "source", "target", "target", "end"]
    assert [s.discontinuity for s in specs] == [False, False, False, True, False, False]


def test_seeded_headers_are_used_by_a_late_reader():
    """A reader added after the sequence headers (it starts at the newest keyframe) cuts
    video segments with them once seeded from the stream."""
    stream = Stream("live", "s")
    stream.push(V, 0, bytes([0x17, 0, 0, 0, 0]) + b"\x01\x64\x00\x1f")
    stream.push(A, 0, bytes([0xAF, 0, 0x12, 0x10]))
    for f in av_stream(30):
        stream.push(f.type_id, f.timestamp, f.payload)
    reader = stream.add_reader("hls")
    frames = stream.pending(reader)
    assert not any(f.header for f in frames), "the headers are behind the reader"
    seg = Segmenter(1000)
    seg.seed(stream.header_frames(stream.start_timestamp(reader)))
    specs = run(seg, frames)
    assert seg.has_video and specs[0].frames[0].keyframe
    assert [h.type_id for h in specs[0].headers] == [V, A]


# --------------------------------------------------------------------------- playlists


def test_playlist_numbers_never_skip_and_render_refuses_holes():
    pl = HlsPlaylist("s", "abc", 2.0, window=3, keep=1)
    validator = LiveValidator()
    for i in range(12):
        if i % 4 == 3:
            continue  # this segment failed to mux: it takes no number
        seg = pl.append(b"ts", 2.0, discontinuity=i % 4 == 0 and i > 0)
        assert seg.uri == f"s-abc-{seg.seq}.ts"
        validator.add(pl.playlist())
    assert [s.seq for s in pl.segments] == [5, 6, 7, 8]
    assert validator.history[-1].media_sequence == 6
    with pytest.raises(ValueError, match="not consecutive"):
        render_playlist(
            [Segment(1, 2.0, "a", b"", False), Segment(3, 2.0, "b", b"", False)],
            target_duration=2,
            discontinuity_sequence=0,
            ended=False,
        )
    with pytest.raises(ValueError):
        pl.add(Segment(42, 2.0, "x", b"", False))


def test_discontinuity_sequence_counts_the_ones_that_left():
    pl = HlsPlaylist("s", "abc", 1.0, window=2, keep=0)
    validator = LiveValidator()
    for i in range(8):
        pl.append(b"ts", 1.0, discontinuity=i in (1, 2, 5))
        validator.add(pl.playlist())
    last = parse(pl.playlist())
    assert last.discontinuity_sequence == 3 and last.media_sequence == 6


# --------------------------------------------------------------------------- muxing


@dataclass
class ClipFrames:
    headers: list[Frame]
    media: list[Frame]


@pytest.fixture(scope="module")
def clip_frames(clip) -> ClipFrames:
    stream = Stream("t", "clip")
    out = []
    for tag in FlvParser().feed(clip.read_bytes()):
        if tag.tag_type in (V, A):
            frame = stream.push(tag.tag_type, tag.timestamp, tag.body)
            if frame is not None:
                out.append(frame)
    return ClipFrames([f for f in out if f.header], [f for f in out if not f.header])


@pytest.mark.parametrize("pattern", ["kept", "equal", "backwards", "alternating", "video_back"])
def test_retimed_segments_mux_and_decode(clip_frames, pattern):
    """Real H.264/AAC with broken timestamps: the segments still mux (the muxer refuses
    non-increasing timestamps) and decode, each track increasing."""
    stamps = {
        "kept": lambda i, f: f.timestamp,
        "equal": lambda i, f: 777,
        "backwards": lambda i, f: 100_000 - 20 * i,
        "alternating": lambda i, f: 0 if i % 2 else 90_000_000,
        "video_back": lambda i, f: f.timestamp if f.type_id == A else 5000 - f.timestamp,
    }[pattern]
    frames = [
        Frame(i, f.type_id, stamps(i, f), f.payload, keyframe=f.keyframe)
        for i, f in enumerate(clip_frames.media)
    ]
    seg = Segmenter(2000)
    specs = run(seg, clip_frames.headers + frames)
    assert len(specs) >= 2
    for spec in specs:
        data = mux_ts(spec)
        assert data, f"{pattern}: segment {spec.seq} did not mux"
        with av.open(io.BytesIO(data), format="mpegts") as c:
            dts: dict[str, list[int]] = {}
            for packet in c.demux():
                if packet.dts is not None:
                    dts.setdefault(packet.stream.type, []).append(packet.dts)
            assert set(dts) == {"audio", "video"}
            for values in dts.values():
                assert values == sorted(values) and len(set(values)) == len(values)
            c.seek(0)
            assert sum(1 for _ in c.decode(video=0)) >= 10


def test_hls_viewers_are_bounded_and_expire():
    from common.serve.hlsviewers import HlsViewers

    viewers = HlsViewers(window=6.0, max_clients=100, max_streams=3)
    for i in range(1000):
        viewers.seen(("live", "a"), f"10.0.0.{i}|agent", now=i * 0.001)
    assert viewers.count(("live", "a"), 1.0) == 100
    viewers.seen(("live", "a"), "late|agent", now=7.5)
    assert viewers.count(("live", "a"), 7.5) == 1  # the others expired from the front
    for n in range(10):
        viewers.seen(("live", f"s{n}"), "c", now=8.0)
    assert len(viewers._seen) == 3 and viewers.total(8.0) == 3
    viewers.seen(("live", "s9"), "c", now=8.5)  # seen again: moves to the back
    assert viewers.count(("live", "s9"), 20.0) == 0 and viewers.total(20.0) == 0


def test_one_address_cannot_inflate_a_streams_hls_viewers():
    from common.serve.hlsviewers import HlsViewers, client_key

    viewers = HlsViewers(window=6.0, max_per_address=10)
    for i in range(100):
        viewers.seen(("live", "a"), client_key("10.0.0.1:5000", f"agent {i}" * 1000), now=1.0)
    viewers.seen(("live", "a"), client_key("10.0.0.2:5000", "other"), now=1.0)
    assert viewers.count(("live", "a"), 1.0) == 11
    assert all(len(c) < 40 for c in viewers._seen[("live", "a")])  # keys stay small
    # once they expire, the address may count again
    viewers.seen(("live", "a"), client_key("10.0.0.1:5000", "late"), now=10.0)
    assert viewers.count(("live", "a"), 10.0) == 1

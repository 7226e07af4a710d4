"""The segment clock: cuts and numbers are a function of the stream, so a node that joins
late (anchored by its parent's state) cuts and numbers exactly as the origin does."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.media.segclock import CLOCK_PREFIX, ClockState, Cut, SegmentClock
from common.media.segmenter import Segmenter
from common.media.stream import Stream
from common.proto import amf0
from common.proto.rtmp import messages as m

V, A = m.VIDEO, m.AUDIO
AVC_HEADER = b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff\xe1\x00\x04abcd\x01\x00\x02ef"
AAC_HEADER = b"\xaf\x00\x12\x10"


def clock(target_ms: int = 2000, wall: int = 1_000_000) -> SegmentClock:
    return SegmentClock(target_ms, "s1", now_ms=lambda: wall)


def frames(n: int, fps: int = 25, gop: int = 50, t0: int = 0, audio: bool = True):
    """(type, ts, size, keyframe) of a stream: video at `fps`, keyframes every `gop`."""
    out = []
    for i in range(n):
        ts = t0 + i * 1000 // fps
        out.append((V, ts, 1000 + i % 7, i % gop == 0))
        if audio:
            out.append((A, ts + 3, 200, False))
    return out


def cuts(c: SegmentClock, stream, video: bool = True) -> list[tuple[int, Cut]]:
    out = []
    for type_id, ts, size, key in stream:
        cut = c.feed(type_id, ts, size, keyframe=key, video=video)
        if cut is not None:
            out.append((ts, cut))
    return out


def test_a_regular_stream_is_cut_on_bucket_changes_and_numbered_from_its_time():
    got = cuts(clock(), frames(250, gop=25))  # 10 s, keyframe every second
    assert [ts for ts, _ in got] == [0, 2000, 4000, 6000, 8000]
    assert [c.seq for _, c in got] == [0, 1, 2, 3, 4]
    assert [c.wall_ms for _, c in got] == [1_000_000 + t for t, _ in got]
    assert not any(c.discontinuity for _, c in got)
    assert got[-1][1].longest_ms == 2000


def test_keyframes_a_little_early_still_cut_their_bucket():
    stream = [(V, ts, 100, True) for ts in (0, 1999, 3950, 6001, 7960)]
    got = cuts(clock(), stream)
    assert [ts for ts, _ in got] == [0, 1999, 3950, 6001, 7960]


def test_long_gops_make_long_segments_numbered_without_holes():
    got = cuts(clock(), frames(500, gop=125))  # keyframes every 5 s, target 2 s
    assert [ts for ts, _ in got] == [0, 5000, 10000, 15000]
    assert [c.seq for _, c in got] == [0, 1, 2, 3]


def test_changed_headers_cut_at_the_next_keyframe_with_a_discontinuity():
    c = clock()
    got = cuts(c, frames(60, gop=25))
    c.header_changed()
    got += cuts(c, frames(60, gop=25, t0=2420))
    assert [(ts, cut.discontinuity, cut.discontinuities_before) for ts, cut in got] == [
        (0, False, 0),
        (2000, False, 0),
        (2420, True, 0),
        (4420, False, 1),
    ]


def test_no_keyframe_for_too_long_is_cut_anyway():
    c = SegmentClock(2000, "s", now_ms=lambda: 0, max_ms=30_000)
    got = cuts(c, frames(2000, gop=10_000))
    assert [(ts, cut.forced) for ts, cut in got] == [(0, False), (30_000, True), (60_000, True)]


def test_a_resumed_playlist_continues_its_numbers():
    c = clock()
    c.resume("old", 17, 3, 4000)
    (_, first), *_ = cuts(c, frames(60))
    assert (first.seq, first.session, first.discontinuity) == (17, "old", True)
    assert (first.discontinuities_before, first.longest_ms) == (3, 4000)


@st.composite
def streams(draw):
    """Video with irregular GOPs and jittered timestamps, sometimes jumps and header
    changes (given as None entries)."""
    out = []
    ts = draw(st.integers(0, 10**6))
    for _ in range(draw(st.integers(1, 300))):
        if draw(st.integers(0, 40)) == 0:
            out.append(None)  # new sequence headers
        if draw(st.integers(0, 60)) == 0:
            ts += draw(st.sampled_from([-5000, 20_000, 100]))
        ts = max(0, ts + draw(st.integers(10, 60)))
        out.append((V, ts, draw(st.integers(1, 5000)), draw(st.integers(0, 30)) == 0))
        out.append((A, ts + draw(st.integers(-30, 30)), 100, False))
    return out


def run_stream(c: SegmentClock, stream) -> list[tuple[int, tuple]]:
    """(position, cut) for every cut; header changes by None entries. States taken at
    keyframes, as the Stream does, by position."""
    got, states = [], {}
    for i, item in enumerate(stream):
        if item is None:
            c.header_changed()
            continue
        type_id, ts, size, key = item
        cut = c.feed(type_id, ts, size, keyframe=key, video=True)
        if key:
            states[i] = c.state(at=ts, starts=cut is not None)
        if cut is not None:
            got.append((i, cut))
    return got, states


@settings(max_examples=200, deadline=None)
@given(streams(), st.data(), st.sampled_from([0, 0, 12_345, -700]))
def test_a_node_anchored_anywhere_cuts_and_numbers_as_the_origin(stream, data, shift):
    """Whatever keyframe a node starts at, and though its stream's timestamps are shifted
    (rebased after a new pull), its cuts and their numbers, dates and counts are the
    origin's; and a node anchored to it in turn (a second tier) agrees too."""
    origin = clock(2000, wall=5)
    want, states = run_stream(origin, stream)
    if not states:
        return
    join = data.draw(st.sampled_from(sorted(states)))
    state = ClockState.decode(states[join].encode())  # as it travels
    edge = SegmentClock(4000, "other", now_ms=lambda: 99)
    edge.anchor(state)
    moved = [None if f is None else (f[0], f[1] + shift, *f[2:]) for f in stream[join:]]
    got, edge_states = run_stream(edge, moved)
    assert [(i + join, cut) for i, cut in got] == [(i, cut) for i, cut in want if i >= join]
    if len(edge_states) > 1:
        second = data.draw(st.sampled_from(sorted(edge_states)[1:]))
        tier2 = SegmentClock(2000, "third", now_ms=lambda: 7)
        tier2.anchor(ClockState.decode(edge_states[second].encode()))
        got2, _ = run_stream(tier2, stream[join + second :])
        assert [(i + join + second, c) for i, c in got2] == [
            (i, c) for i, c in want if i >= join + second
        ]


def test_the_stream_marks_cuts_and_gives_the_state_for_a_new_reader():
    stream = Stream("live", "x", segment_ms=1000)
    stream.push(V, 0, AVC_HEADER)
    stream.push(A, 0, AAC_HEADER)
    for ts in range(0, 3000, 40):
        stream.push(V, ts, (b"\x17\x01" if ts % 1000 == 0 else b"\x27\x01") + b"x" * 50)
        stream.push(A, ts + 5, b"\xaf\x01" + b"y" * 20)
    marked = [f for f in stream.iter_frames() if f.cut is not None]
    assert [(f.timestamp, f.cut.seq) for f in marked] == [(0, 0), (1000, 1), (2000, 2)]
    reader = stream.add_reader("edge")
    state = stream.clock_state(reader)
    assert (state.at, state.seq, state.starts, state.target_ms) == (2000, 2, True, 1000)


def test_a_publisher_cannot_send_a_segment_clock_through_the_stream():
    stream = Stream("live", "x")
    forged = clock().state().encode()
    assert stream.push(m.DATA_AMF0, 0, forged) is None
    assert stream.push(m.DATA_AMF0, 0, amf0.encode("onTextData", {"t": "hi"})) is not None


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"session": "x" * 40},
        {"session": "../x"},
        {"seq": -5},
        {"seq": 1.5},
        {"seq": float("nan")},
        {"target_ms": 0},
        {"starts": 1},
        {"seg_start": "0"},
        {"epoch_ts": 2**60},
    ],
)
def test_a_bad_state_from_a_parent_is_refused(values):
    good = {f: getattr(clock().state(), f) for f in ClockState.__slots__}
    body = {k: v for k, v in {**good, **values}.items() if v is not None} if values else {}
    payload = amf0.encode("livecdnSegmentClock", amf0.ECMAArray(body))
    with pytest.raises(ValueError):
        ClockState.decode(payload)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_a_value_error(data):
    with contextlib.suppress(ValueError):
        ClockState.decode(data)


def av_frames(t0: int, seconds: float, gop_ms: int = 1000) -> list[tuple[int, int, bytes]]:
    """(type, ts, payload) of a 25 fps stream with audio, a keyframe every `gop_ms`."""
    out = []
    for ts in range(t0, t0 + int(seconds * 1000), 40):
        key = ts % gop_ms == 0
        out.append((V, ts, (b"\x17\x01" if key else b"\x27\x01") + b"x" * 50))
        out.append((A, ts + 5, b"\xaf\x01" + b"y" * 20))
    return out


def push(stream: Stream, cuts: dict[int, int], type_id: int, ts: int, payload: bytes) -> None:
    """Push a frame; note the seq of a cut by the frame's timestamp."""
    frame = stream.push(type_id, ts, payload)
    if frame is not None and frame.cut is not None:
        cuts[frame.timestamp] = frame.cut.seq


class Pulled:
    """An origin stream and an edge stream pulling it, frame by frame, as edge/pull.py does:
    a new pull is a new source that gets the clock's state before its first frame."""

    def __init__(self) -> None:
        big = {"max_frames": 100_000, "max_bytes": 1 << 30}
        self.origin = Stream("live", "x", segment_ms=1000, session="orig", **big)
        self.edge = Stream("live", "x", session="own", **big)
        self.want: dict[int, int] = {}  # origin: cut seq by timestamp
        self.got: dict[int, int] = {}  # edge: the same
        self.pushed: list[int] = []  # timestamps of the video frames the edge took
        for s in (self.origin, self.edge):
            s.push(V, 0, AVC_HEADER)
            s.push(A, 0, AAC_HEADER)
        self.reader = None

    def publish(self, frames) -> None:
        for f in frames:
            push(self.origin, self.want, *f)
            self.relay()

    def pull(self) -> None:
        """A (new) pull: from the origin's newest keyframe, the clock's state first."""
        self.reader = self.origin.add_reader("edge", clock=True)
        self.edge.new_source()
        self.edge.take_clock(ClockState.decode(self.origin.clock_state(self.reader).encode()))
        self.relay()

    def drop(self) -> None:
        self.origin.remove_reader(self.reader)
        self.reader = None

    def relay(self) -> None:
        if self.reader is None:
            return
        for f in self.origin.pending(self.reader):
            if f.type_id == m.DATA_AMF0 and f.payload.startswith(CLOCK_PREFIX):
                self.edge.take_clock(ClockState.decode(f.payload))
            elif not f.header:
                frame = self.edge.push(f.type_id, f.timestamp, f.payload)
                if frame is not None and frame.type_id == V:
                    self.pushed.append(frame.timestamp)
                if frame is not None and frame.cut is not None:
                    self.got[frame.timestamp] = frame.cut.seq


def shifts(p: Pulled) -> set[int]:
    """How far the edge's cuts are from the origin's same-numbered ones."""
    by_seq = {seq: t for t, seq in p.want.items()}
    return {t - by_seq[seq] for t, seq in p.got.items()}


def test_an_edge_that_pulls_again_after_an_outage_keeps_the_origins_numbers():
    p = Pulled()
    p.publish(av_frames(0, 1.2))
    p.pull()
    p.publish(av_frames(1200, 4.8))
    p.drop()
    p.publish(av_frames(6000, 4))  # the edge is away: the origin goes on
    p.pull()
    p.publish(av_frames(10_000, 6))
    assert sorted(p.got.values()) == [1, 2, 3, 4, 5, 9, 10, 11, 12, 13, 14, 15]
    # one constant shift (the first pull's rebase onto the edge's headers), kept by the
    # second pull of the same stream: its timeline runs on
    assert len(shifts(p)) == 1


def test_an_edge_that_fails_over_mid_gop_takes_no_frame_or_cut_twice():
    p = Pulled()
    p.publish(av_frames(0, 0.4))
    p.pull()
    p.publish(av_frames(400, 3.3))  # up to 3660: a second into the GOP of 3000
    p.drop()
    p.pull()  # again at once: the new pull starts at keyframe 3000, which the edge has
    p.publish(av_frames(3680, 3))
    assert len(p.pushed) == len(set(p.pushed)) and p.pushed == sorted(p.pushed)
    assert sorted(p.got.values()) == [0, 1, 2, 3, 4, 5, 6]
    assert len(shifts(p)) == 1


def test_a_slow_edge_skipped_ahead_by_its_parent_gets_the_clock_with_the_keyframe():
    p = Pulled()
    p.publish(av_frames(0, 0.4))
    p.pull()
    p.publish(av_frames(400, 1.6))
    reader, p.reader = p.reader, None  # the edge stops reading (a stalled link)
    p.publish(av_frames(2000, 7))  # past max_lag_ms: its reader will skip ahead
    p.reader = reader
    p.publish(av_frames(9000, 3))
    assert reader.dropped > 0
    assert len(shifts(p)) == 1
    assert sorted(p.got.values()) == [0, 1, 9, 10, 11]


def test_a_marked_segmenter_gives_up_an_open_segment_that_never_ends():
    stream = Stream("live", "x", segment_ms=1000, max_frames=100_000, max_bytes=1 << 30)
    stream.push(V, 0, AVC_HEADER)
    seg = Segmenter(1000, marked=True, max_ms=2000)
    for f in stream.pending(stream.add_reader("hls")):
        seg.push(f)
    frame = stream.push(V, 0, b"\x17\x01" + b"x" * 50)
    seg.push(frame)
    frame.cut = None  # as if the clock stopped cutting: only delta frames from here
    for ts in range(40, 10_000, 40):
        f = stream.push(V, ts, b"\x27\x01" + b"x" * 50)
        assert seg.push(f) is None
    assert seg.abandoned == 1 and len(seg._frames) < 100


def test_a_timestamp_jump_is_a_discontinuity_not_a_long_segment():
    """60 s forward mid-GOP: no forced cut on a non-keyframe, the longest segment stays
    the GOP's length (EXT-X-TARGETDURATION), and the dates run on by media time."""
    stream = frames(50, gop=25) + frames(100, gop=25, t0=62_000)[12:]
    got = cuts(clock(), stream)
    assert not any(c.forced for _, c in got)
    assert [(ts, c.discontinuity) for ts, c in got] == [(0, False), (63000, True), (64000, False)]
    # the first segment holds 2 s before the jump and 0.76 s after it
    assert max(c.longest_ms for _, c in got) == 2720
    assert [c.wall_ms - 1_000_000 for _, c in got] == [0, 2720, 3720]


def test_a_pulling_node_starts_at_the_segment_a_viewer_is_in_the_middle_of():
    """Keyframes every second, segments every two: a viewer starts at the newest keyframe,
    a node that packages HLS at the keyframe that began the segment, so it has it whole."""
    stream = Stream("live", "x", segment_ms=2000, session="s")
    stream.push(V, 0, AVC_HEADER)
    for typ, ts, payload in av_frames(0, 3.5):
        stream.push(typ, ts, payload)
    viewer, node = stream.add_reader("flv"), stream.add_reader("edge", clock=True)
    assert stream.start_timestamp(viewer) == 3000
    assert stream.start_timestamp(node) == 2000
    state = stream.clock_state(node)
    assert (state.at, state.seq, state.starts) == (2000, 1, True)

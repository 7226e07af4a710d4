"""Tests for common.media.stream: the GOP ring, readers, shared wire bytes, sources."""

from __future__ import annotations

import struct

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.media.stream import (
    PLAY_STREAM_ID,
    RTMP_CHUNK_SIZE,
    SOURCE_GAP_MS,
    Frame,
    Registry,
    Stream,
    metadata_values,
)
from common.proto import amf0, flv
from common.proto.rtmp import messages as m
from common.proto.rtmp.chunk import ChunkReader

# An AVCDecoderConfigurationRecord with one SPS (Baseline, 320x240) and one PPS.
SPS = bytes.fromhex("6742c00dd90141f9a1000003000100000300328f1429a0")
PPS = bytes.fromhex("68cb83cb20")
AVC_CONFIG = (
    bytes([1, 0x42, 0xC0, 0x0D, 0xFF, 0xE1])
    + struct.pack(">H", len(SPS))
    + SPS
    + bytes([1])
    + struct.pack(">H", len(PPS))
    + PPS
)
VIDEO_HEADER = bytes([0x17, 0x00, 0, 0, 0]) + AVC_CONFIG
VIDEO_HEADER_2 = bytes([0x17, 0x00, 0, 0, 0]) + AVC_CONFIG[:-1] + b"\x21"
AUDIO_HEADER = bytes([0xAF, 0x00, 0x12, 0x10])
AUDIO_HEADER_2 = bytes([0xAF, 0x00, 0x11, 0x90])  # 48 kHz stereo
META_VALUES = {"width": 320.0, "height": 240.0, "videocodecid": 7.0, "audiocodecid": 10.0}
META = amf0.encode("onMetaData", amf0.ECMAArray(META_VALUES))


def key(data: bytes = b"key") -> bytes:
    return bytes([0x17, 0x01, 0, 0, 0]) + data


def inter(data: bytes = b"inter") -> bytes:
    return bytes([0x27, 0x01, 0, 0, 0]) + data


def aac(data: bytes = b"aac") -> bytes:
    return bytes([0xAF, 0x01]) + data


def with_headers(stream: Stream, ts: int = 0) -> None:
    stream.set_metadata(META, dict(META_VALUES))
    assert stream.push(m.VIDEO, ts, VIDEO_HEADER) is not None
    assert stream.push(m.AUDIO, ts, AUDIO_HEADER) is not None


def push_gop(stream: Stream, ts: int, inters: int = 3, step: int = 40, size: int = 10) -> int:
    """A keyframe, then `inters` inter frames each followed by an audio frame; returns next ts."""
    stream.push(m.VIDEO, ts, key(bytes(size)))
    for i in range(inters):
        stream.push(m.VIDEO, ts + (i + 1) * step, inter(bytes(size)))
        stream.push(m.AUDIO, ts + (i + 1) * step + 1, aac(bytes(size)))
    return ts + (inters + 1) * step


def kinds(frames: list[Frame]) -> list[str]:
    out = []
    for f in frames:
        if f.header:
            out.append({m.VIDEO: "VH", m.AUDIO: "AH", m.DATA_AMF0: "M"}[f.type_id])
        elif f.type_id == m.VIDEO:
            out.append("K" if f.keyframe else "P")
        else:
            out.append("A")
    return out


def check_ring(stream: Stream) -> list[Frame]:
    ring = list(stream.iter_frames())
    assert [f.seq for f in ring] == list(range(stream.head - len(ring), stream.head))
    assert stream.ring_bytes == sum(len(f.flv) for f in ring)
    assert len(ring) <= stream.max_frames
    assert stream.ring_bytes <= stream.max_bytes
    return ring


# ----------------------------------------------------------------------------- readers


def test_gop_cache_reader_starts_at_newest_keyframe() -> None:
    stream = Stream("live", "demo")
    with_headers(stream)
    assert stream.video_codec == "avc" and stream.audio_codec == "aac"
    assert (stream.audio_rate, stream.audio_channels) == (44100, 2)
    assert stream.dimensions == (320, 240)
    ts = push_gop(stream, 0)
    newest = stream.head
    ts = push_gop(stream, ts)
    reader = stream.add_reader("flv")
    assert reader.cursor == newest
    assert not reader.need_keyframe
    heads = stream.header_frames(stream.start_timestamp(reader))
    assert kinds(heads) == ["M", "VH", "AH"]
    assert [(f.type_id, f.timestamp, f.payload) for f in heads] == [
        (m.DATA_AMF0, 0, META),
        (m.VIDEO, 160, VIDEO_HEADER),
        (m.AUDIO, 160, AUDIO_HEADER),
    ]
    frames = stream.pending(reader)
    assert kinds(frames) == ["K", "P", "A", "P", "A", "P", "A"]
    assert [f.seq for f in frames] == list(range(newest, stream.head))
    assert frames[0].timestamp == 160
    assert reader.cursor == stream.head
    assert stream.pending(reader) == []
    stream.push(m.AUDIO, 400, aac())
    stream.push(m.VIDEO, 400, inter())
    assert kinds(stream.pending(reader)) == ["A", "P"]
    assert reader.dropped == 0 and stream.stats.dropped_frames == 0
    assert stream.readers == {reader}
    stream.remove_reader(reader)
    assert reader.closed and stream.readers == set()


def test_header_frames_without_headers() -> None:
    stream = Stream("live", "demo")
    assert stream.header_frames(0) == []
    stream.push(m.AUDIO, 0, AUDIO_HEADER)
    assert kinds(stream.header_frames(5)) == ["AH"]


def test_gop_cache_reader_before_any_keyframe_waits_for_one() -> None:
    stream = Stream("live", "demo")
    with_headers(stream)
    stream.push(m.VIDEO, 0, inter())  # joined mid-GOP: no keyframe yet
    reader = stream.add_reader("flv")
    assert reader.need_keyframe
    stream.push(m.AUDIO, 10, aac())
    stream.push(m.VIDEO, 40, inter())
    assert stream.pending(reader) == []
    push_gop(stream, 80, inters=1)
    assert kinds(stream.pending(reader)) == ["K", "P", "A"]
    assert not reader.need_keyframe


def test_without_gop_cache_reader_waits_for_next_keyframe() -> None:
    stream = Stream("live", "demo", gop_cache=False)
    with_headers(stream)
    ts = push_gop(stream, 0)
    reader = stream.add_reader("flv")
    assert reader.need_keyframe
    assert reader.cursor == stream.head
    stream.push(m.AUDIO, ts, aac(b"skipped"))
    stream.push(m.VIDEO, ts + 1, inter(b"skipped"))
    assert stream.pending(reader) == []
    stream.push(m.VIDEO, ts + 40, key(b"first"))
    stream.push(m.AUDIO, ts + 41, aac(b"after"))
    got = stream.pending(reader)
    assert [(f.type_id, f.payload) for f in got] == [
        (m.VIDEO, key(b"first")),
        (m.AUDIO, aac(b"after")),
    ]
    assert not reader.need_keyframe
    stream.push(m.VIDEO, ts + 80, inter())
    assert kinds(stream.pending(reader)) == ["P"]
    assert reader.dropped == 0


def test_without_gop_cache_headers_before_the_keyframe_are_kept() -> None:
    stream = Stream("live", "demo", gop_cache=False)
    with_headers(stream)
    push_gop(stream, 0)
    reader = stream.add_reader("rtmp")
    stream.push(m.AUDIO, 300, aac())
    stream.push(m.VIDEO, 300, VIDEO_HEADER_2)
    stream.push(m.VIDEO, 340, key())
    assert kinds(stream.pending(reader)) == ["VH", "K"]


def test_without_gop_cache_audio_only_stream_starts_at_once() -> None:
    stream = Stream("live", "radio", gop_cache=False)
    stream.push(m.AUDIO, 0, AUDIO_HEADER)
    stream.push(m.AUDIO, 0, aac())
    reader = stream.add_reader("flv")
    assert not reader.need_keyframe
    stream.push(m.AUDIO, 23, aac(b"x"))
    assert kinds(stream.pending(reader)) == ["A"]


def test_without_gop_cache_existing_reader_loses_nothing_at_a_keyframe() -> None:
    """A reader that has not yet read the tail of a GOP when the next keyframe arrives
    (e.g. it batches 50 ms) still gets those frames, and nothing counts as dropped."""
    stream = Stream("live", "demo", gop_cache=False)
    with_headers(stream)
    reader = stream.add_reader("flv")
    ts = push_gop(stream, 0)
    assert kinds(stream.pending(reader)) == ["K", "P", "A", "P", "A", "P", "A"]
    stream.push(m.VIDEO, ts, inter(b"last of gop"))
    stream.push(m.AUDIO, ts + 1, aac(b"audio"))
    stream.push(m.VIDEO, ts + 40, key(b"next gop"))
    got = stream.pending(reader)
    assert [f.payload for f in got] == [inter(b"last of gop"), aac(b"audio"), key(b"next gop")]
    assert reader.dropped == 0
    assert stream.stats.dropped_frames == 0
    # A reader joining now still starts at the next keyframe.
    late = stream.add_reader("flv")
    stream.push(m.VIDEO, ts + 80, inter())
    assert stream.pending(late) == []


# ----------------------------------------------------------------------------- ring bounds


def test_ring_bounded_by_frames_and_trimmed_by_whole_gops() -> None:
    stream = Stream("live", "demo", max_frames=10)
    with_headers(stream)
    ts = 0
    for _ in range(6):
        ts = push_gop(stream, ts, inters=2)  # 5 frames per GOP
        ring = check_ring(stream)
    assert len(ring) == 10
    assert kinds(ring) == ["K", "P", "A", "P", "A"] * 2
    # One more frame: the oldest whole GOP goes, not just one frame.
    stream.push(m.VIDEO, ts, key())
    ring = check_ring(stream)
    assert kinds(ring) == ["K", "P", "A", "P", "A", "K"]


def test_ring_bounded_by_bytes() -> None:
    stream = Stream("live", "demo", max_bytes=5000)
    ts = 0
    for _ in range(20):
        ts = push_gop(stream, ts, inters=3, size=150)
        ring = check_ring(stream)
        assert ring[0].keyframe
    assert stream.ring_bytes <= 5000
    assert stream.ring_bytes > 5000 - 2 * sum(len(f.flv) for f in ring[:7])


def test_single_gop_larger_than_ring_is_trimmed_frame_by_frame() -> None:
    stream = Stream("live", "demo", max_frames=4)
    stream.push(m.VIDEO, 0, VIDEO_HEADER)
    stream.push(m.VIDEO, 0, key())
    for i in range(10):
        stream.push(m.VIDEO, 40 * (i + 1), inter())
    ring = check_ring(stream)
    assert len(ring) == 4
    assert kinds(ring) == ["P"] * 4
    # No keyframe left: a new reader must wait for the next one.
    reader = stream.add_reader("flv")
    assert reader.need_keyframe
    stream.push(m.VIDEO, 500, inter())
    assert stream.pending(reader) == []
    stream.push(m.VIDEO, 540, key())
    assert kinds(stream.pending(reader)) == ["K"]


_ops = st.lists(st.tuples(st.sampled_from("KPAHh"), st.integers(0, 400)), min_size=1, max_size=120)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops, max_frames=st.integers(1, 30), max_bytes=st.integers(200, 6000))
def test_ring_invariants(ops, max_frames, max_bytes) -> None:
    stream = Stream("live", "demo", max_frames=max_frames, max_bytes=max_bytes)
    reader = stream.add_reader("flv")
    got: list[Frame] = []
    ts = 0
    for i, (op, size) in enumerate(ops):
        ts += 10
        base_before = stream.head - len(list(stream.iter_frames()))
        if op == "K":
            stream.push(m.VIDEO, ts, key(bytes(size)))
        elif op == "P":
            stream.push(m.VIDEO, ts, inter(bytes(size)))
        elif op == "A":
            stream.push(m.AUDIO, ts, aac(bytes(size)))
        elif op == "H":
            stream.push(m.VIDEO, ts, VIDEO_HEADER + bytes([i & 0xFF]))
        else:
            stream.push(m.AUDIO, ts, AUDIO_HEADER + bytes([i & 0xFF]))
        ring = check_ring(stream)
        base_after = stream.head - len(ring)
        if base_after != base_before and any(f.keyframe for f in ring):
            assert ring[0].keyframe  # trimmed: the ring starts at a keyframe again
        if i % 3 == 0:
            got += stream.pending(reader)
    got += stream.pending(reader)
    got = [f for f in got if f.seq >= 0]  # not the current headers given after a jump
    seqs = [f.seq for f in got]
    assert seqs == sorted(set(seqs))
    assert reader.cursor == stream.head
    assert len(got) + reader.dropped <= stream.head
    assert stream.stats.dropped_frames == reader.dropped
    assert stream.stats.frames_in == len(ops)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(st.sampled_from("KPAHr"), min_size=1, max_size=80),
    join=st.integers(0, 80),
    gop_cache=st.booleans(),
)
def test_reader_gets_every_frame_from_its_first_keyframe(ops, join, gop_cache) -> None:
    """Within the ring's bounds a reader misses nothing once it has its first keyframe,
    whenever it reads, with or without the GOP cache."""
    stream = Stream("live", "demo", gop_cache=gop_cache)
    stream.push(m.VIDEO, 0, VIDEO_HEADER)
    reader = None
    start = None
    got: list[Frame] = []
    for i, op in enumerate(ops):
        if i == join:
            reader = stream.add_reader("flv")
            start = reader.cursor
        ts = 10 * (i + 1)
        if op == "K":
            stream.push(m.VIDEO, ts, key())
        elif op == "P":
            stream.push(m.VIDEO, ts, inter())
        elif op == "A":
            stream.push(m.AUDIO, ts, aac())
        elif op == "H":
            stream.push(m.VIDEO, ts, VIDEO_HEADER + bytes([i]))
        elif reader is not None:
            got += stream.pending(reader)
    if reader is None:
        return
    got += stream.pending(reader)
    assert reader.dropped == 0
    seqs = [f.seq for f in got]
    assert seqs == sorted(set(seqs))
    first_key = next((f.seq for f in got if f.keyframe), None)
    if first_key is not None:
        # contiguous from the first keyframe on
        assert seqs[seqs.index(first_key) :] == list(range(first_key, stream.head))
    # before it, only header frames
    assert all(f.header for f in got if first_key is None or f.seq < first_key)
    assert seqs == [] or seqs[0] >= start


# ----------------------------------------------------------------------------- falling behind


def test_reader_behind_the_tail_jumps_to_newest_keyframe() -> None:
    stream = Stream("live", "demo", max_frames=12)
    reader = stream.add_reader("flv")
    ts = 0
    for _ in range(8):
        ts = push_gop(stream, ts, inters=1)  # K P A: 3 frames per GOP
    newest = max(f.seq for f in stream.iter_frames() if f.keyframe)
    assert stream.head == 24 and newest == 21
    got = stream.pending(reader)
    assert kinds(got) == ["K", "P", "A"]
    assert got[0].seq == newest
    assert reader.dropped == newest
    assert stream.stats.dropped_frames == newest
    assert reader.cursor == stream.head
    # A second reader falling behind adds to the stream's count.
    other = stream.add_reader("rtmp")
    for _ in range(5):
        ts = push_gop(stream, ts, inters=1)
    assert kinds(stream.pending(other)) == ["K", "P", "A"]
    assert other.cursor == stream.head
    assert other.dropped == 36 - 21  # it started at keyframe 21; now the newest is 36
    assert stream.stats.dropped_frames == newest + 15


def test_reader_lagging_in_media_time_jumps() -> None:
    stream = Stream("live", "demo", max_lag_ms=1000)
    with_headers(stream)
    reader = stream.add_reader("flv")
    ts = push_gop(stream, 0, inters=24)  # 1 s GOP
    assert len(stream.pending(reader)) == 49
    ts = push_gop(stream, ts, inters=24)
    ts = push_gop(stream, ts, inters=24)  # the reader is now 2 s behind
    got = stream.pending(reader)
    assert got[0].keyframe and got[0].timestamp == 2000
    assert len(got) == 49
    assert reader.dropped == 49
    # Within the lag bound nothing is skipped.
    push_gop(stream, ts, inters=10)
    assert len(stream.pending(reader)) == 21
    assert reader.dropped == 49


def test_caught_up_reader_is_not_skipped_over_new_metadata() -> None:
    """onMetaData is stamped 0 in the ring; it must not look like minutes of lag."""
    stream = Stream("live", "demo", max_lag_ms=1000)
    with_headers(stream)
    ts = push_gop(stream, 60_000)
    reader = stream.add_reader("flv")
    stream.pending(reader)
    stream.set_metadata(amf0.encode("onMetaData", {"width": 640.0}), {"width": 640.0})
    stream.push(m.VIDEO, ts, VIDEO_HEADER_2)
    stream.push(m.VIDEO, ts, key(b"new"))
    got = stream.pending(reader)
    assert kinds(got) == ["M", "VH", "K"]
    assert reader.dropped == 0 and stream.stats.dropped_frames == 0


def test_jump_keeps_sequence_header_changes_it_skips() -> None:
    """A lagging reader that jumps over a codec change still gets the new header."""
    stream = Stream("live", "demo", max_lag_ms=1000)
    with_headers(stream)
    reader = stream.add_reader("flv")
    ts = push_gop(stream, 0, inters=24)
    stream.pending(reader)
    ts = push_gop(stream, ts, inters=24)
    stream.push(m.VIDEO, ts, VIDEO_HEADER_2)
    ts = push_gop(stream, ts, inters=24)
    ts = push_gop(stream, ts, inters=24)
    got = stream.pending(reader)
    # behind the ring's tail (kept by media time): the stream's current headers come first
    assert kinds(got)[:4] == ["M", "VH", "AH", "K"]
    assert got[1].payload == VIDEO_HEADER_2
    assert got[3].timestamp == 3000
    assert reader.dropped == 2 * 49 + 1  # the trimmed header too (its current copy was sent)


# ----------------------------------------------------------------------------- wire bytes


def _sample_stream() -> tuple[Stream, list[Frame]]:
    stream = Stream("live", "demo")
    with_headers(stream)
    stream.push(m.VIDEO, 0x00FFFFF0, key(bytes(range(256)) * 40))  # > RTMP_CHUNK_SIZE
    stream.push(m.AUDIO, 0x00FFFFFF, aac(b"x" * 500))
    stream.push(m.VIDEO, 0x01000010, inter(b"y" * 9000))
    stream.push(m.DATA_AMF0, 0x01000011, amf0.encode("onCuePoint", {"t": 1.0}))
    return stream, list(stream.iter_frames())


def test_flv_bytes_parse_back() -> None:
    _, frames = _sample_stream()
    parser = flv.FlvParser()
    tags = parser.feed(flv.file_header() + b"".join(f.flv for f in frames))
    assert [(t.tag_type, t.timestamp, t.body) for t in tags] == [
        (f.type_id, f.timestamp, f.payload) for f in frames
    ]


def test_rtmp_bytes_parse_back() -> None:
    _, frames = _sample_stream()
    reader = ChunkReader()
    reader.set_chunk_size(RTMP_CHUNK_SIZE)
    msgs = reader.feed(b"".join(f.rtmp for f in frames))
    assert [(x.type_id, x.stream_id, x.timestamp, x.payload) for x in msgs] == [
        (f.type_id, PLAY_STREAM_ID, f.timestamp, f.payload) for f in frames
    ]
    assert [x.csid for x in msgs] == [5, 7, 6, 7, 6, 7, 5]
    other = frames[3].rtmp_for(3, 77)
    reader2 = ChunkReader()
    reader2.set_chunk_size(RTMP_CHUNK_SIZE)
    (msg,) = reader2.feed(other)
    assert (msg.stream_id, msg.timestamp, msg.payload) == (3, 77, frames[3].payload)


def test_wire_bytes_are_shared_between_readers() -> None:
    stream = Stream("live", "demo")
    with_headers(stream)
    push_gop(stream, 0)
    a = stream.add_reader("flv")
    b = stream.add_reader("rtmp")
    fa = stream.pending(a)
    fb = stream.pending(b)
    assert len(fa) == len(fb) == 7
    for x, y in zip(fa, fb, strict=True):
        assert x is y
        assert x.flv is y.flv
        assert x.rtmp is y.rtmp


# ----------------------------------------------------------------------------- sources


def test_new_source_timestamps_continue() -> None:
    stream = Stream("live", "demo")
    with_headers(stream, ts=0)
    push_gop(stream, 0)  # up to ts 121
    last = max(f.timestamp for f in stream.iter_frames())
    assert last == 121
    stream.new_source()
    assert stream.stats.sources == 1
    f1 = stream.push(m.VIDEO, 50_000, key())
    f2 = stream.push(m.AUDIO, 50_010, aac())
    f3 = stream.push(m.VIDEO, 50_040, inter())
    assert [f1.timestamp, f2.timestamp, f3.timestamp] == [
        last + SOURCE_GAP_MS,
        last + SOURCE_GAP_MS + 10,
        last + SOURCE_GAP_MS + 40,
    ]
    # A third source starting from zero also continues.
    stream.new_source()
    f4 = stream.push(m.VIDEO, 0, key())
    f5 = stream.push(m.VIDEO, 40, inter())
    assert [f4.timestamp, f5.timestamp] == [f3.timestamp + SOURCE_GAP_MS] * 1 + [
        f3.timestamp + SOURCE_GAP_MS + 40
    ]
    media = [f.timestamp for f in stream.iter_frames() if not f.header]
    assert media == sorted(media)


def test_first_source_is_not_rebased() -> None:
    stream = Stream("live", "demo")
    stream.new_source()
    assert stream.push(m.VIDEO, 5000, key()).timestamp == 5000


def test_new_source_repeated_and_changed_headers() -> None:
    stream = Stream("live", "demo")
    with_headers(stream)
    push_gop(stream, 0)
    reader = stream.add_reader("flv")
    stream.pending(reader)
    head = stream.head
    stream.new_source()
    assert stream.push(m.VIDEO, 0, VIDEO_HEADER) is None  # identical: not re-sent
    assert stream.push(m.AUDIO, 0, AUDIO_HEADER) is None
    assert stream.head == head
    changed = stream.push(m.AUDIO, 0, AUDIO_HEADER_2)
    assert changed is not None and changed.header
    assert changed.timestamp == 121 + SOURCE_GAP_MS
    assert stream.audio_header == AUDIO_HEADER_2
    assert (stream.audio_rate, stream.audio_channels) == (48000, 2)
    stream.push(m.VIDEO, 0, key())
    assert kinds(stream.pending(reader)) == ["AH", "K"]
    assert kinds(stream.header_frames(0)) == ["M", "VH", "AH"]
    assert stream.header_frames(0)[2].payload == AUDIO_HEADER_2


def test_identical_metadata_is_not_repeated() -> None:
    stream = Stream("live", "demo")
    assert stream.set_metadata(META, dict(META_VALUES)) is not None
    assert stream.set_metadata(META, dict(META_VALUES)) is None
    assert stream.has_video  # from the metadata's videocodecid
    assert metadata_values(META) == META_VALUES


# ----------------------------------------------------------------------------- waiting


async def test_wait_beyond_returns_on_push() -> None:
    stream = Stream("live", "demo")
    stream.push(m.AUDIO, 0, aac())
    done: list[int] = []

    async def waiter() -> None:
        await stream.wait_beyond(stream.head)
        done.append(stream.head)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert done == []
        stream.push(m.AUDIO, 10, aac())
        await trio.testing.wait_all_tasks_blocked()
        assert done == [2]
    with trio.fail_after(1):
        await stream.wait_beyond(0)  # already there: returns at once


async def test_wait_beyond_two_frames_ahead() -> None:
    stream = Stream("live", "demo")
    done = trio.Event()

    async def waiter() -> None:
        await stream.wait_beyond(1)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        stream.push(m.AUDIO, 0, aac())  # seq 0: not beyond 1 yet
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        stream.push(m.AUDIO, 10, aac())  # seq 1
        await trio.testing.wait_all_tasks_blocked()
        assert done.is_set()


async def test_wait_beyond_returns_on_close() -> None:
    stream = Stream("live", "demo")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.wait_beyond, 100)
            await trio.testing.wait_all_tasks_blocked()
            stream.close()
    assert stream.closed
    with trio.fail_after(1):
        await stream.wait_beyond(1000)


# ----------------------------------------------------------------------------- measuring


def test_measured_bitrate_and_fps() -> None:
    stream = Stream("live", "demo")
    with_headers(stream)
    assert stream.measured() == {"bitrate": 0, "fps": 0.0}
    total = 0
    for i in range(51):  # 25 fps for 2 s, 5000-byte frames
        payload = (key if i % 25 == 0 else inter)(bytes(4995))
        stream.push(m.VIDEO, i * 40, payload)
        total += len(payload)
    result = stream.measured()
    expected = total * 8 * 1000 / 2000
    assert abs(result["bitrate"] - expected) / expected < 0.03
    assert result["fps"] == 25.0


def test_measured_with_zero_span() -> None:
    stream = Stream("live", "demo")
    stream.push(m.AUDIO, 5, aac())
    stream.push(m.AUDIO, 5, aac())
    assert stream.measured() == {"bitrate": 0, "fps": 0.0}


# ----------------------------------------------------------------------------- misc


@pytest.mark.parametrize("type_id", [m.AUDIO, m.VIDEO, m.DATA_AMF0])
def test_empty_messages_are_ignored(type_id: int) -> None:
    """Some encoders send zero-length audio/video messages; they must not kill a publish."""
    stream = Stream("live", "demo")
    reader = stream.add_reader("flv")
    assert stream.push(type_id, 0, b"") is None
    assert stream.head == 0
    assert stream.pending(reader) == []


def test_frame_repr_and_stats() -> None:
    stream = Stream("live", "demo")
    frame = stream.push(m.VIDEO, 40, key(b"abc"))
    assert repr(frame) == "<Frame 0 video 40ms 8B K>"
    assert stream.stats.frames_in == 1 and stream.stats.bytes_in == 8


def test_registry() -> None:
    registry = Registry()
    a = Stream("live", "a")
    registry.add(a)
    assert registry.get("live", "a") is a and len(registry) == 1
    replacement = Stream("live", "a")
    registry.add(replacement)
    registry.remove(a)  # no longer the registered one: kept
    assert registry.get("live", "a") is replacement
    registry.remove(replacement)
    assert registry.get("live", "a") is None and list(registry) == []


@pytest.mark.parametrize("gop_cache", [True, False])
def test_reader_on_empty_stream(gop_cache: bool) -> None:
    stream = Stream("live", "demo", gop_cache=gop_cache)
    reader = stream.add_reader("hls")
    assert stream.pending(reader) == []
    assert stream.start_timestamp(reader) == 0
    stream.push(m.AUDIO, 0, aac())
    assert kinds(stream.pending(reader)) == ["A"]


def test_ring_is_bounded_by_media_time():
    """The ring keeps the last GOP plus max_lag_ms, not as many GOPs as frames/bytes allow."""
    stream = Stream("live", "t", max_lag_ms=3000)
    stream.push(m.VIDEO, 0, VIDEO_HEADER)
    for i in range(30 * 25):  # 30 s at 25 fps, a keyframe every second
        stream.push(m.VIDEO, i * 40, key() if i % 25 == 0 else inter())
    frames = [f for f in stream.iter_frames() if not f.header]
    span = frames[-1].timestamp - frames[0].timestamp
    assert frames[0].keyframe
    assert 3000 <= span < 4000 + 1000
    reader = stream.add_reader("flv")
    assert stream.pending(reader)[0].keyframe


def test_media_time_trim_keeps_the_last_gop_even_if_longer():
    stream = Stream("live", "t", max_lag_ms=500)
    for i in range(200):  # one 8 s GOP
        stream.push(m.VIDEO, i * 40, key() if i == 0 else inter())
    assert sum(1 for _ in stream.iter_frames()) == 200


def test_hostile_metadata_is_reduced_to_clean_values():
    stream = Stream("live", "t")
    values = {
        "width": 320.0,
        "nan": float("nan"),
        "inf": float("inf"),
        "nested": {"a": 1.0},
        "list": [1.0],
        "long": "x" * 10_000,
        "crlf": "a\r\nb",
        "encoder": "Lavf60",
        "": 1.0,
    }
    payload = amf0.encode("onMetaData", amf0.ECMAArray(values))
    stream.set_metadata(payload, values)
    assert stream.metadata_values == {"width": 320.0, "encoder": "Lavf60"}
    assert metadata_values(stream.metadata) == {"width": 320.0, "encoder": "Lavf60"}

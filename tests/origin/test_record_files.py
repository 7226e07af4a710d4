"""Recordings' pure parts and file handling, fast: names, retention, the playback query and
paths, file cuts, the FLV index of a written file and the VOD playlist; parsers fuzzed."""

from __future__ import annotations

import json
import os

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from common.config import ConfigError, OriginConfig, build
from common.media.stream import Frame
from common.net.hooks import HookClient
from common.net.http import Request
from common.net.httpclient import fetch
from common.proto import flv
from common.proto.hooks import HookCall, HookEvent
from common.proto.paths import RecordingPath, api_recording, recording_path
from common.proto.rtmp import messages as m
from common.proto.streamkey import StreamKey, StreamKeyError
from common.serve.metrics import NodeMetrics
from origin import recorddisk
from origin import recorder as recorder_module
from origin.recordcut import MAX_FILE_BYTES, MIN_FILE_BYTES, FileCutter, file_bytes
from origin.recorder import Recorder, Recording
from origin.recordfiles import (
    MAX_CUT_BYTES,
    BadQuery,
    FileIndex,
    RecordedFile,
    cuts,
    file_name,
    find_cut,
    iso,
    parse_file,
    parse_start,
    playback_range,
    to_remove,
    vod_playlist,
    vod_segments,
)
from origin.recordvod import MAX_PLAYLIST_WAITING, PLAYLIST_BUILDS, Playback, frames_of
from tests.conftest import start_origin
from tests.media import aac_frame, aac_header, avc_header, interframe, keyframe

T0 = 1_796_050_879_123  # 2026-11-30T15:01:19.123Z


def test_file_names_round_trip_and_sort_by_time():
    name = file_name(T0, 60_040, "flv")
    assert name == "20261130T150119123Z_60040.flv"
    assert parse_file("live", "a", name) == RecordedFile("live", "a", T0, 60_040, "flv")
    assert iso(T0) == "2026-11-30T15:01:19.123Z"
    later = file_name(T0 + 1, 5, "mp4")
    assert sorted([later, name]) == [name, later]
    for bad in ("x.flv", name + ".part", name.replace("flv", "avi"), "../" + name,
                "20261330T150119123Z_1.flv", ""):  # fmt: skip
        assert parse_file("live", "a", bad) is None, bad


def rec(start: int, duration: int, size: int, name: str = "a") -> RecordedFile:
    return RecordedFile("live", name, start, duration, "flv", size)


def test_retention_removes_the_oldest_first_by_size_and_age():
    files = [rec(T0 + 60_000 * i, 60_000, 100, f"s{i % 2}") for i in range(5)]
    now = T0 + 5 * 60_000
    assert to_remove(files, now, 0, 0) == []
    assert to_remove(files, now, 250, 0) == files[:3]
    assert to_remove(list(reversed(files)), now, 500, 0) == []
    # ended more than 150 s ago: the first two (they ended 240 s and 180 s ago)
    assert to_remove(files, now, 0, 150) == files[:2]
    assert to_remove(files, now, 150, 150) == files[:4]


def test_the_playback_query_is_validated():
    assert parse_start("2026-11-30T15:01:19.123Z") == T0
    assert parse_start("2026-11-30T16:01:19.123+01:00") == T0
    assert parse_start("2026-11-30T15:01:19.123") == T0  # UTC unless it says otherwise
    assert parse_start(str(T0 / 1000)) == T0
    assert playback_range({"start": "100", "duration": "60"}) == (100_000, 160_000)
    for query in ({}, {"start": "100"}, {"duration": "1"}, {"start": "now", "duration": "1"},
                  {"start": "100", "duration": "0"}, {"start": "100", "duration": "nan"},
                  {"start": "inf", "duration": "1"}, {"start": "-5", "duration": "1"},
                  {"start": "100", "duration": "86401"}, {"start": "1" * 50, "duration": "1"},
                  {"start": "1_796_053_000", "duration": "60"}, {"start": "100", "duration": "3_600"},
                  {"start": "\uff11\uff10\uff10", "duration": "1"}, {"start": "100", "duration": "\u0661"},
                  {"start": "1e3", "duration": "1"}, {"start": "100", "duration": "+5"},
                  {"start": "100.", "duration": "1"}, {"start": "100", "duration": ".5"},
                  {"start": "2026-11-30T15:01:1\u0669Z", "duration": "1"}):  # fmt: skip
        with pytest.raises(BadQuery):
            playback_range(query)
    assert playback_range({"start": "100.25", "duration": "0.5"}) == (100_250, 100_750)


@given(st.text(max_size=60), st.text(max_size=20))
def test_any_playback_query_is_a_range_or_bad_query(start, duration):
    try:
        a, b = playback_range({"start": start, "duration": duration})
    except BadQuery:
        return
    assert 0 <= a < b <= a + 86_400_000


def test_recording_paths():
    key = StreamKey("live", "cam")
    assert recording_path("/live/cam/recordings/index.m3u8") == RecordingPath(key)
    assert recording_path("/live/cam/recordings/F/1-2.ts") == RecordingPath(key, "F", "1-2")
    assert recording_path("/live/cam.m3u8") is None
    assert recording_path("/live/cam/other/index.m3u8") is None
    for bad in ("/live/cam/recordings/x.m3u8", "/live/cam/recordings/a/b/c.ts",
                "/../cam/recordings/index.m3u8"):  # fmt: skip
        with pytest.raises(StreamKeyError):
            recording_path(bad)
    assert api_recording("/api/recordings") == (None, "")
    assert api_recording("/api/recordings/live/cam") == (key, "")
    assert api_recording("/api/recordings/live/cam/stop") == (key, "stop")
    assert api_recording("/api/streams") is None
    with pytest.raises(StreamKeyError):
        api_recording("/api/recordings/live/cam/delete")


@given(st.text(max_size=80))
def test_any_path_parses_or_is_refused(path):
    try:
        recording_path(path)
        api_recording(path)
    except StreamKeyError:
        pass


def stream_frames(seconds: int, *, fps: int = 25, gop: int = 25) -> list[Frame]:
    """Headers, then `seconds` of video (a keyframe every `gop` frames) and audio."""
    frames = [Frame(-1, m.VIDEO, 0, avc_header(), header=True),
              Frame(-1, m.AUDIO, 0, aac_header(), header=True)]  # fmt: skip
    for i in range(seconds * fps):
        ts = i * 1000 // fps
        key = i % gop == 0
        frames.append(Frame(i, m.VIDEO, ts, keyframe() if key else interframe(), keyframe=key))
        frames.append(Frame(i, m.AUDIO, ts, aac_frame()))
    return frames


def cut_files(frames: list[Frame], segment_ms: int, **bounds: int) -> list[bytes]:
    cutter = FileCutter(segment_ms, **bounds)
    files: list[bytearray] = []
    for frame in frames:
        start, data = cutter.push(frame)
        if start is not None:
            files.append(bytearray(start.data))
        elif data:
            files[-1] += data
    return [bytes(f) for f in files]


def test_files_are_cut_at_keyframes_and_each_is_a_whole_flv_file():
    files = cut_files(stream_frames(10), 3000)
    assert len(files) == 4  # 0-3, 3-6, 6-9, 9-10 s (at keyframes every second)
    for data in files:
        tags = flv.FlvParser().feed(data)
        assert [t.tag_type for t in tags[:3]] == [flv.TAG_VIDEO, flv.TAG_AUDIO, flv.TAG_VIDEO]
        assert flv.is_sequence_header(flv.TAG_VIDEO, tags[0].body)
        assert flv.video_info(tags[2].body).keyframe
        assert tags[2].timestamp % 3000 == 0


def test_a_new_sequence_header_cuts_at_the_next_keyframe():
    frames = stream_frames(4)
    changed = bytearray(avc_header())
    changed[-1] ^= 1
    frames.insert(60, Frame(-1, m.VIDEO, 1100, bytes(changed), header=True))
    files = cut_files(frames, 60_000)
    assert len(files) == 2
    assert flv.FlvParser().feed(files[1])[0].body == bytes(changed)


def test_files_are_cut_by_frames_and_bytes_when_timestamps_stay_at_zero():
    frames = [Frame(0, m.VIDEO, 0, avc_header(), header=True)]
    for i in range(1000):
        frames.append(
            Frame(i, m.VIDEO, 0, keyframe() if i % 50 == 0 else interframe(), keyframe=i % 50 == 0)
        )
        frames.append(Frame(i, m.AUDIO, 0, aac_frame()))
    by_frames = cut_files(frames, 60_000, max_frames=300)
    assert len(by_frames) == 7
    assert all(len(flv.FlvParser().feed(f)) <= 301 for f in by_frames)
    by_bytes = cut_files(frames, 60_000, max_bytes=100_000)
    assert len(by_bytes) == 8  # about 760 kB
    assert all(len(f) < 100_000 + 2100 for f in by_bytes)
    assert sum(len(flv.FlvParser().feed(f)) - 1 for f in by_bytes) == 2000  # no frame lost
    assert file_bytes(0) == MAX_FILE_BYTES and file_bytes(3_000_000) == MIN_FILE_BYTES
    assert file_bytes(400 * 2**20) == 100 * 2**20 and file_bytes(2**40) == MAX_FILE_BYTES


def test_a_file_is_cut_when_the_video_stops_and_the_audio_goes_on():
    frames = [Frame(0, m.VIDEO, 0, avc_header(), header=True), Frame(0, m.AUDIO, 0, aac_header(), header=True),
              Frame(0, m.VIDEO, 0, keyframe(), keyframe=True)]  # fmt: skip
    frames += [Frame(i, m.AUDIO, i * 23, aac_frame()) for i in range(1000)]  # 23 s of audio
    cutter = FileCutter(2000, max_ms=5000)
    starts = [start.start_ts for f in frames if (start := cutter.push(f)[0]) is not None]
    assert starts == [0, 6003, 12006, 18009]
    assert cutter.duration() == 22977 - 18009


def test_index_cuts_playlist_and_segments_of_a_written_file(tmp_path):
    writer = recorddisk.FileWriter(str(tmp_path), "live", "a", T0)
    data = cut_files(stream_frames(10), 60_000)[0]
    writer.write(data)
    path = writer.finish(10_000)
    assert os.path.basename(path) == "20261130T150119123Z_10000.flv"
    [rec_] = recorddisk.list_files(str(tmp_path))
    assert rec_.size == len(data)
    index = recorddisk.index_flv(str(tmp_path), rec_)
    assert len(index.keyframes) == 10 and index.first_ts == 0 and index.last_ts == 9960
    segs = cuts(index, 4000)
    assert [(c.start, c.end) for c in segs] == [(0, 4000), (4000, 8000), (8000, 9960)]
    assert find_cut(index, "4000-8000", 4000) == segs[1]
    assert find_cut(index, "4000-7999", 4000) is None
    # the tags of a cut: the head plus whole GOPs
    part = recorddisk.read_range(
        str(tmp_path), rec_, [(0, index.head_end), (segs[1].offset, segs[1].stop)]
    )
    frames = frames_of(part)
    media = [f for f in frames if not f.header]
    assert media[0].keyframe and media[0].timestamp == 4000 and media[-1].timestamp < 8000
    # VOD: 5 s from 3 s in: the segments 0-4 and 4-8 (whole GOP groups)
    lines = vod_segments([(rec_, index)], T0 + 3000, T0 + 8000, 4000)
    assert [s.uri for s in lines] == [f"{rec_.file}/0-4000.ts", f"{rec_.file}/4000-8000.ts"]
    text = vod_playlist(lines)
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.endswith("#EXT-X-ENDLIST\n")
    assert "#EXT-X-DISCONTINUITY" not in text and "#EXTINF:4.000," in text


def test_a_file_removed_while_written_fails_its_next_write(tmp_path):
    writer = recorddisk.FileWriter(str(tmp_path), "live", "a", T0)
    writer.write(b"FLV")
    os.unlink(writer.path)
    with pytest.raises(FileNotFoundError):
        writer.write(b"more")
    writer.close()


def test_a_start_taken_by_another_file_moves_on_and_overwrites_nothing(tmp_path):
    first = recorddisk.FileWriter(str(tmp_path), "live", "a", T0)
    first.write(b"first")
    second = recorddisk.FileWriter(str(tmp_path), "live", "a", T0)  # same start, still open
    second.write(b"second")
    assert second.start_ms == T0 + 1 and second.path != first.path
    first.finish(1000)
    third = recorddisk.FileWriter(str(tmp_path), "live", "a", T0)  # a finished file has it
    assert third.start_ms == T0 + 2
    second.finish(1000)
    third.abort()
    files = recorddisk.list_files(str(tmp_path))
    assert [(f.start_ms, f.size) for f in files] == [(T0, 5), (T0 + 1, 6)]


def test_nothing_outside_record_dir(tmp_path):
    root = tmp_path / "rec"
    (root / "live").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "live" / "x")
    with pytest.raises(recorddisk.UnsafePath):
        recorddisk.FileWriter(str(root), "live", "x", T0)
    target = tmp_path / "elsewhere" / file_name(T0, 1, "flv")
    target.write_bytes(b"secret")
    assert recorddisk.list_files(str(root)) == []  # a symlinked folder is not listed
    os.symlink(target, root / "live" / "y")
    assert recorddisk.list_files(str(root), "live", "y") == []
    (root / "live" / "z").mkdir()
    os.symlink(target, root / "live" / "z" / file_name(T0, 1, "flv"))
    assert recorddisk.list_files(str(root)) == []  # a symlinked file is not a recording


def test_vod_marks_a_discontinuity_between_files_that_do_not_follow():
    index = FileIndex(13, ((0, 13), (2000, 100)), 0, 3960, 200)
    follows = FileIndex(13, ((4000, 13), (6000, 100)), 4000, 7960, 200)  # its timestamps go on
    a, b, c = rec(T0, 4000, 200), rec(T0 + 4000, 4000, 200), rec(T0 + 60_000, 4000, 200)
    lines = vod_segments([(c, index), (a, index), (b, follows)], T0, T0 + 100_000, 1000)
    assert [s.discontinuity for s in lines] == [False, False, False, False, True, False]


def test_vod_leaves_out_and_refuses_a_cut_too_big_to_mux_on_demand():
    big = FileIndex(13, ((0, 13),), 0, 0, MAX_CUT_BYTES + 14)  # timestamps never went on
    index = FileIndex(13, ((0, 13), (2000, 100)), 0, 3960, 200)
    a, b, c = rec(T0, 1, MAX_CUT_BYTES + 14), rec(T0 + 1, 4000, 200), rec(T0 + 4001, 4000, 200)
    lines = vod_segments([(a, index), (b, big), (c, index)], T0, T0 + 100_000, 1000)
    assert [s.uri.split("/")[0] for s in lines] == [a.file, a.file, c.file, c.file]
    assert [s.discontinuity for s in lines] == [False, False, True, False]


def written(root: str, files: list[bytes], starts: list[int]) -> list[tuple]:
    """`files` written as recordings starting at `starts` (ms after T0), with their indexes."""
    out = []
    for data, start in zip(files, starts, strict=True):
        writer = recorddisk.FileWriter(root, "live", "d", T0 + start)
        writer.write(data)
        writer.finish(2000)
    for f in recorddisk.list_files(root):
        out.append((f, recorddisk.index_flv(root, f)))
    return out


def test_vod_marks_a_discontinuity_where_headers_change_or_timestamps_restart(tmp_path):
    def marks(files: list[bytes], folder: str) -> list[bool]:
        (tmp_path / folder).mkdir()
        indexed = written(str(tmp_path / folder), files, [0, 2000])
        return [s.discontinuity for s in vod_segments(indexed, T0, T0 + 10_000, 1000)]

    assert marks(cut_files(stream_frames(4), 2000), "same") == [False] * 4
    frames = stream_frames(4)
    changed = bytearray(avc_header())
    changed[-1] ^= 1
    frames.insert(60, Frame(-1, m.VIDEO, 1100, bytes(changed), header=True))
    assert marks(cut_files(frames, 60_000), "headers") == [False, False, True, False]
    again = cut_files(stream_frames(2), 60_000) * 2  # a publisher back with timestamps from 0
    assert marks(again, "restart") == [False, False, True, False]


@given(st.binary(max_size=400))
def test_indexing_any_file_gives_an_index_or_flv_error(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("fuzz")
    folder = root / "live" / "f"
    folder.mkdir(parents=True)
    name = file_name(T0, 1, "flv")
    (folder / name).write_bytes(flv.file_header() + data)
    try:
        index = recorddisk.index_flv(str(root), parse_file("live", "f", name))
    except flv.FlvError:
        return
    assert 13 <= index.head_end <= index.size and cuts(index)


@given(
    st.lists(
        st.tuples(st.sampled_from(["key", "inter", "audio", "vhead", "data"]), st.integers(0, 900)),
        max_size=120,
    ),
    st.integers(1, 3000),
)
def test_any_frames_make_whole_files_that_lose_no_frame_after_the_first_keyframe(events, seg):
    cutter = FileCutter(seg, max_ms=5000)
    cutter.seed([Frame(-1, m.VIDEO, 0, avc_header(), header=True)])
    files: list[bytearray] = []
    ts, started, expected = 0, False, 0
    for kind, step in events:
        ts += step
        if kind == "vhead":
            payload = bytearray(avc_header())
            payload[-1] = step % 256
            frame = Frame(-1, m.VIDEO, ts, bytes(payload), header=True)
        elif kind == "data":
            frame = Frame(0, m.DATA_AMF0, ts, b"\x02\x00\x01x")
        elif kind == "audio":
            frame = Frame(0, m.AUDIO, ts, aac_frame())
        else:
            key = kind == "key"
            frame = Frame(0, m.VIDEO, ts, keyframe() if key else interframe(), keyframe=key)
        started = started or kind == "key"
        expected += started and kind in ("key", "inter", "audio", "data")
        start, data = cutter.push(frame)
        if start is not None:
            files.append(bytearray(start.data))
        elif data:
            files[-1] += data
    got = 0
    previous = 0
    for data in files:
        tags = flv.FlvParser().feed(bytes(data))
        media = [t for t in tags if not flv.is_sequence_header(t.tag_type, t.body)]
        assert flv.is_sequence_header(flv.TAG_VIDEO, tags[0].body)
        # a file starts with video, or with audio once the video stopped for max_ms + 1 s
        assert media[0].tag_type == flv.TAG_VIDEO or media[0].timestamp - previous >= 6000
        previous = media[0].timestamp
        got += len(media)
    assert got == expected


async def test_files_left_being_written_are_finished_when_the_origin_starts(nursery, tmp_path):
    whole = recorddisk.FileWriter(str(tmp_path), "live", "a", T0)
    data = cut_files(stream_frames(3), 60_000)[0]
    whole.write(data + data[13:40])  # a last tag cut short, as by a crash
    whole.close()
    empty = recorddisk.FileWriter(str(tmp_path), "live", "b", T0)
    empty.write(flv.file_header())
    empty.close()
    server, addr = await start_origin(nursery, record_dir=str(tmp_path))
    [rec_] = recorddisk.list_files(str(tmp_path))
    assert (rec_.name, rec_.start_ms, rec_.duration_ms, rec_.size) == ("a", T0, 2960, len(data))
    assert sorted(os.listdir(tmp_path / "live" / "b")) == []
    reply = await fetch("GET", f"http://127.0.0.1:{addr.http_port}/api/recordings/live/a")
    assert json.loads(reply.body)["recordings"][0]["duration"] == 2.96


def test_the_api_shows_the_path_being_written_to_admins_only():
    recording = Recording(
        "live", "a", "api", current="/srv/rec/live/a/20261130T150119123Z.flv.part"
    )
    assert recording.as_json(True)["file"] == "/srv/rec/live/a/20261130T150119123Z.flv.part"
    assert recording.as_json(False)["file"] == "live/a/20261130T150119123Z.flv.part"


async def test_listings_do_not_wait_for_writes_and_are_kept_briefly(tmp_path, monkeypatch):
    config = build(OriginConfig, {"record_dir": str(tmp_path)})
    recorder = Recorder(config, HookClient({}, timeout=1.0), NodeMetrics("origin"))
    for start in (T0, T0 + 60_000):
        writer = recorddisk.FileWriter(str(tmp_path), "live", "a", start)
        writer.write(b"FLV")
        writer.finish(60_000)
    for holder in range(int(recorder.limiter.total_tokens)):  # every writer thread busy
        recorder.limiter.acquire_on_behalf_of_nowait(holder)
    with trio.fail_after(10):  # a hang guard: a listing behind the writes never ends
        listing = await recorder.listing()
    assert listing["total"] == 2 and listing["active"] == []
    os.unlink(tmp_path / "live" / "a" / file_name(T0, 60_000, "flv"))
    assert (await recorder.listing())["total"] == 2  # the listing kept, not the disk again
    monkeypatch.setattr(recorder_module, "LISTING_TTL", 0.0)
    assert (await recorder.listing())["total"] == 1


async def test_playback_builds_few_playlists_at_once_and_turns_the_rest_away(tmp_path):
    playback = Playback(str(tmp_path), 60)
    assert playback.max_indexes >= 2 * 24 * 60  # a day of 60 s files, twice
    path = "/live/a/recordings/index.m3u8"
    target = recording_path(path)
    query = {"start": str(T0 // 1000), "duration": "60"}
    req = Request("GET", path, path, query, {}, b"", "127.0.0.1:1")
    for holder in range(PLAYLIST_BUILDS):  # builds going on
        playback.builds.acquire_on_behalf_of_nowait(holder)
    answers: list[int] = []

    async def ask() -> None:
        answers.append((await playback.respond(req, target)).status)

    async with trio.open_nursery() as nursery:
        for _ in range(MAX_PLAYLIST_WAITING):
            nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        busy = await playback.respond(req, target)
        assert busy.status == 503 and ("retry-after", "2") in busy.headers
        for holder in range(PLAYLIST_BUILDS):
            playback.builds.release_on_behalf_of(holder)
    assert answers == [404] * MAX_PLAYLIST_WAITING  # served once a build was free: none here
    assert playback.waiting == 0


async def test_playback_refuses_a_segment_too_big_to_mux_without_reading_it(tmp_path):
    frames = [Frame(0, m.VIDEO, 0, avc_header(), header=True),
              Frame(0, m.VIDEO, 0, keyframe(), keyframe=True)]  # fmt: skip
    frames += [Frame(i, m.VIDEO, 0, interframe(2**20)) for i in range(17)]
    [data] = cut_files(frames, 60_000)
    writer = recorddisk.FileWriter(str(tmp_path), "live", "a", T0)
    writer.write(data)
    writer.finish(1)
    playback = Playback(str(tmp_path), 60)
    path = f"/live/a/recordings/{file_name(T0, 1, 'flv')}/0-1.ts"
    req = Request("GET", path, path, {}, {}, b"", "127.0.0.1:1")
    reply = await playback.respond(req, recording_path(path))
    assert reply.status == 404 and b"not served" in reply.body
    path = "/live/a/recordings/index.m3u8"
    query = {"start": str(T0 // 1000), "duration": "60"}
    req = Request("GET", path, path, query, {}, b"", "127.0.0.1:1")
    assert (await playback.respond(req, recording_path(path))).status == 404  # nothing listed


async def test_retention_counts_the_files_being_written_and_never_removes_them(tmp_path):
    config = build(OriginConfig, {"record_dir": str(tmp_path), "record_max_bytes": 1000})
    recorder = Recorder(config, HookClient({}, timeout=1.0), NodeMetrics("origin"))
    for start in (T0, T0 + 60_000):
        writer = recorddisk.FileWriter(str(tmp_path), "live", "a", start)
        writer.write(b"x" * 300)
        writer.finish(60_000)
    writing = recorddisk.FileWriter(str(tmp_path), "live", "b", T0 + 120_000)
    writing.write(b"x" * 600)
    recorder.active[("live", "b")] = Recording("live", "b", "api", current_bytes=600)
    await recorder.retain()  # 1200 bytes: the oldest goes, never the file being written
    assert [f.start_ms for f in recorddisk.list_files(str(tmp_path))] == [T0 + 60_000]
    assert os.path.exists(writing.path) and recorder.removed == 1
    writing.close()


def test_config_and_the_hook_body():
    with pytest.raises(ConfigError, match="record_dir"):
        build(OriginConfig, {"record_apps": ["live"]})
    with pytest.raises(ConfigError):
        build(OriginConfig, {"record_format": "avi"})
    call = HookCall(HookEvent.RECORD_DONE, "live", "a", "", "record",
                    details=(("path", "/r/x.flv"), ("duration", 1.5)))  # fmt: skip
    body = json.loads(call.body())
    assert body["action"] == "on_record_done" and body["path"] == "/r/x.flv"
    assert body["duration"] == 1.5 and body["app"] == "live"

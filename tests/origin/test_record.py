"""Recording (DVR) at the origin, end to end: real ffmpeg publishes (faster than real time:
recordings go by media time), the files are real FLV/MP4 that PyAV reads, the listing API, the
on_record_done hook (a real hook server), start/stop by the admin API, VOD playback of a time
range through PyAV, disk errors that end only the recording, retention."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import datetime
from functools import partial
from pathlib import Path

import pytest
import trio

from common.net.httpclient import fetch
from common.net.rtmpclient import RtmpClient
from common.proto import flv
from common.proto.rtmp import messages as m
from tests.conftest import FFMPEG, needs_ffmpeg, start_origin, wait_for_stream
from tests.edge.test_edge_real import FlvViewer
from tests.hookserver import start_hooks
from tests.media import aac_frame, aac_header, avc_header, interframe, keyframe, play_video
from tests.metrics import metric

pytestmark = [pytest.mark.slow, needs_ffmpeg]

TOKEN = "admin-token-for-tests-0123"


async def publish_fast(nursery: trio.Nursery, clip: Path, url: str, loops: int) -> trio.Process:
    """Publish `clip` `loops` times at 20x real time (all of it, then ffmpeg exits)."""
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-readrate", "20",
           "-stream_loop", str(loops - 1), "-i", str(clip), "-c", "copy", "-f", "flv", url]  # fmt: skip
    return await nursery.start(
        partial(trio.run_process, cmd, check=False, stdin=subprocess.DEVNULL)
    )


async def publish_live(nursery: trio.Nursery, clip: Path, url: str) -> trio.Process:
    """Publish `clip` in real time, looping, until the test ends."""
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
           "-i", str(clip), "-c", "copy", "-f", "flv", url]  # fmt: skip
    return await nursery.start(
        partial(trio.run_process, cmd, check=False, stdin=subprocess.DEVNULL)
    )


async def get_json(url: str, method: str = "GET", token: str = "") -> tuple[int, dict]:
    headers = [("authorization", f"Bearer {token}")] if token else []
    reply = await fetch(method, url, headers=headers)
    return reply.status, json.loads(reply.body)


async def wait_files(base: str, count: int, timeout: float = 60) -> list[dict]:
    """The listing once `count` files are done and nothing is being recorded."""
    with trio.fail_after(timeout):
        while True:
            _, listing = await get_json(f"{base}/api/recordings")
            if len(listing["recordings"]) >= count and not listing["active"]:
                return listing["recordings"]
            await trio.sleep(0.2)


def file_span(path: str) -> float:
    """Seconds of video in a recorded file (PyAV)."""
    return play_video(path)["span"]


async def test_a_minute_recorded_listed_hooked_and_played_back(nursery, clip, tmp_path):
    hooks = await start_hooks(nursery, lambda body: 403 if "deny" in body["query"] else 200)
    server, addr = await start_origin(
        nursery, record_dir=str(tmp_path), record_apps=["live"], record_segment_seconds=20,
        on_record_done=hooks.url("/done"), on_play=hooks.url("/play"), publisher_grace=0,
    )  # fmt: skip
    base = f"http://127.0.0.1:{addr.http_port}"
    proc = await publish_fast(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/cam", 10)
    await wait_for_stream(server, "live", "cam")
    _, listing = await get_json(f"{base}/api/recordings/live/cam")
    assert [a["name"] for a in listing["active"]] == ["cam"]
    await proc.wait()
    files = await wait_files(base, 3)
    assert [f["format"] for f in files] == ["flv"] * 3 and listing["total"] == 0
    assert sum(f["duration"] for f in files) == pytest.approx(60, abs=1)
    assert files[0]["duration"] == pytest.approx(20, abs=0.1)

    # real FLV files: header, metadata and sequence headers first, each playable alone
    folder = tmp_path / "live" / "cam"
    names = sorted(os.listdir(folder))
    assert names == sorted(f["file"].split("/")[-1] for f in files)
    for name in names:
        data = (folder / name).read_bytes()
        tags = flv.FlvParser().feed(data)
        assert [t.tag_type for t in tags[:3]] == [flv.TAG_SCRIPT, flv.TAG_VIDEO, flv.TAG_AUDIO]
        assert flv.is_sequence_header(flv.TAG_VIDEO, tags[1].body)
        assert flv.video_info(tags[3 if tags[3].tag_type == flv.TAG_VIDEO else 4].body).keyframe
        assert await trio.to_thread.run_sync(file_span, str(folder / name)) == pytest.approx(
            20, abs=1
        )

    calls = await hooks.wait_for("on_record_done", 3)
    assert {c["path"] for c in calls} == {str(folder / n) for n in names}
    assert {(c["app"], c["name"]) for c in calls} == {("live", "cam")}
    assert sorted(c["start"] for c in calls) == [f["start"] for f in files]
    assert sum(c["duration"] for c in calls) == pytest.approx(60, abs=1)
    assert {c["bytes"] for c in calls} == {os.path.getsize(folder / n) for n in names}

    # VOD: the whole minute, by ISO start, plays with the right duration
    start = files[0]["start"]
    url = f"{base}/live/cam/recordings/index.m3u8?start={start}&duration=60"
    reply = await fetch("GET", url)
    assert reply.status == 200, reply.body
    text = reply.body.decode()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.rstrip().endswith("#EXT-X-ENDLIST")
    played = await trio.to_thread.run_sync(play_video, url)
    assert played["span"] == pytest.approx(60, abs=1)
    assert played["decoded"] >= 25 * 59 and played["kinds"] == {"video", "audio"}

    # playback is a play: on_play decides (protocol hls)
    assert (await fetch("GET", f"{url}&deny=1")).status == 403
    assert hooks.of("on_play")[-1]["protocol"] == "hls"

    # a part of it, by epoch seconds: about 10 s (whole GOPs)
    epoch = datetime.fromisoformat(start).timestamp() + 25
    played = await trio.to_thread.run_sync(
        play_video, f"{base}/live/cam/recordings/index.m3u8?start={epoch}&duration=10"
    )
    assert 9 <= played["span"] <= 16

    # garbage in: 400; nothing recorded then: 404
    for query in ("start=yesterday&duration=10", f"start={start}&duration=-1",
                  f"start={start}&duration=1e9", f"start={start}", "duration=5"):  # fmt: skip
        reply = await fetch("GET", f"{base}/live/cam/recordings/index.m3u8?{query}")
        assert reply.status == 400, query
    reply = await fetch("GET", f"{base}/live/cam/recordings/index.m3u8?start=1000&duration=60")
    assert reply.status == 404
    for bad in ("/live/cam/recordings/x/0-1.ts", "/live/cam/recordings/../../etc/passwd",
                "/live/cam/recordings/20000101T000000000Z_1/0-1.ts"):  # fmt: skip
        assert (await fetch("GET", base + bad)).status in (400, 404), bad
    metrics = (await fetch("GET", f"{base}/metrics")).body.decode()
    assert metric(metrics, "livecdn_record_files_total") == 3


async def media_beyond(stream, ms: int) -> None:
    """Wait until `stream` has media `ms` beyond its newest frame now."""

    def newest() -> int:
        return max((f.timestamp for f in stream.iter_frames()), default=0)

    goal = newest() + ms
    with trio.fail_after(60):  # a hang guard only
        while newest() < goal:
            await trio.sleep(0.1)


async def test_mp4_and_start_stop_by_the_admin_api(nursery, clip, tmp_path):
    hooks = await start_hooks(nursery)
    server, addr = await start_origin(
        nursery, record_dir=str(tmp_path), record_format="mp4", admin_token=TOKEN,
        on_record_done=hooks.url(),
    )  # fmt: skip
    base = f"http://127.0.0.1:{addr.http_port}"
    await publish_live(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/a")
    await wait_for_stream(server, "live", "a")
    start = f"{base}/api/recordings/live/a/start"
    assert (await get_json(start, "POST"))[0] == 401
    assert (await get_json(start, "POST", "wrong-token-wrong-token"))[0] == 403
    assert (await get_json(f"{base}/api/recordings/live/nope/start", "POST", TOKEN))[0] == 404
    status, body = await get_json(start, "POST", TOKEN)
    assert status == 200 and body["started"]["by"] == "api"
    assert (await get_json(start, "POST", TOKEN))[0] == 409
    await media_beyond(server.registry.get("live", "a"), 4000)
    _, listing = await get_json(f"{base}/api/recordings/live/a", token=TOKEN)
    part = listing["active"][0]["file"]
    assert part.startswith(str(tmp_path)) and part.endswith(".flv.part")  # admins: the path
    _, listing = await get_json(f"{base}/api/recordings/live/a")  # others: its name
    assert listing["active"][0]["file"] == f"live/a/{os.path.basename(part)}"
    stop = f"{base}/api/recordings/live/a/stop"
    assert (await get_json(stop, "POST"))[0] == 401
    status, body = await get_json(stop, "POST", TOKEN)
    assert status == 200
    [call] = await hooks.wait_for("on_record_done")
    assert call["path"].endswith(".mp4") and os.path.exists(call["path"])
    assert call["duration"] >= 2
    with open(call["path"], "rb") as f:
        assert f.read(12)[4:8] == b"ftyp"
    played = await trio.to_thread.run_sync(play_video, call["path"])
    assert abs(played["span"] - call["duration"]) <= 0.5
    assert played["kinds"] == {"video", "audio"}
    files = await wait_files(base, 1)
    assert files[0]["format"] == "mp4"
    # an MP4 recording plays back too
    url = f"{base}/live/a/recordings/index.m3u8?start={files[0]['start']}&duration=10"
    played = await trio.to_thread.run_sync(play_video, url)
    assert played["span"] == pytest.approx(call["duration"], abs=0.5)
    assert played["kinds"] == {"video", "audio"}
    assert (await get_json(stop, "POST", TOKEN))[0] == 404


@pytest.mark.parametrize("break_it", ["removed", "read-only", "a file"])
async def test_a_disk_error_ends_the_recording_not_the_viewers(
    nursery, clip, tmp_path, caplog, break_it
):
    if os.geteuid() == 0 and break_it == "read-only":
        pytest.skip("root writes to read-only directories")
    record_dir = tmp_path / "rec"
    record_dir.mkdir()
    server, addr = await start_origin(
        nursery, record_dir=str(record_dir), record_apps=["live"], record_segment_seconds=2
    )
    base = f"http://127.0.0.1:{addr.http_port}"
    await publish_live(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/d")
    await wait_for_stream(server, "live", "d")
    async with trio.open_nursery() as inner:
        viewer = FlvViewer(f"{base}/live/d.flv")
        await inner.start(viewer.run)
        with trio.fail_after(30):  # a hang guard only: a file being written, then break it
            while not server.recorder.bytes:
                await trio.sleep(0.1)
        if break_it == "removed":
            shutil.rmtree(record_dir)
        elif break_it == "a file":  # where the stream's folder was
            shutil.rmtree(record_dir / "live")
            (record_dir / "live").write_bytes(b"")
        else:
            for folder in (record_dir / "live" / "d", record_dir / "live", record_dir):
                folder.chmod(0o500)
        with trio.fail_after(10):
            while server.recorder.active:
                await trio.sleep(0.1)
        # the viewer plays on: 50 more frames arrive after the recording ended
        await viewer.wait_frames(len(viewer.video) + 50, seconds=30)
        assert viewer.error is None and viewer.monotonic()
        inner.cancel_scope.cancel()
    if break_it == "read-only":
        for folder in (record_dir, record_dir / "live", record_dir / "live" / "d"):
            folder.chmod(0o700)
    lines = [r.getMessage() for r in caplog.records if r.name == "livecdn.record"]
    ended = [line for line in lines if "ended" in line]
    assert len(ended) == 1 and "live/d" in ended[0], lines
    metrics = (await fetch("GET", f"{base}/metrics")).body.decode()
    assert metric(metrics, "livecdn_record_failures_total", kind="disk") == 1
    assert server.registry.get("live", "d") is not None


@pytest.mark.parametrize(
    ("bound", "files", "kept"),
    # a file alone beyond record_max_bytes ends its recording: one file, removed
    [({"record_max_bytes": 1}, 1, 0), ({"record_max_age_seconds": 3600}, 4, 4)],
)
async def test_retention_removes_the_oldest_files(nursery, clip, tmp_path, bound, files, kept):
    server, addr = await start_origin(
        nursery, record_dir=str(tmp_path), record_apps=["live"], record_segment_seconds=5,
        publisher_grace=0, **bound,
    )  # fmt: skip
    base = f"http://127.0.0.1:{addr.http_port}"
    # an old file of another stream, and a file that is not a recording
    old = tmp_path / "live" / "old"
    old.mkdir(parents=True)
    (old / "20200101T000000000Z_5000.flv").write_bytes(b"x" * 100)
    (old / "notes.txt").write_text("mine")
    proc = await publish_fast(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/r", 3)
    await proc.wait()
    # 18 s in files of 5 s: 4 files (1 if it alone is too big), each followed by retention
    with trio.fail_after(30):
        while server.recorder.active or server.recorder.files < files:
            await trio.sleep(0.1)
        while server.recorder.removed < files + 1 - kept:
            await trio.sleep(0.1)
    assert not (old / "20200101T000000000Z_5000.flv").exists()
    assert (old / "notes.txt").exists()
    _, listing = await get_json(f"{base}/api/recordings")
    assert [f["name"] for f in listing["recordings"]] == ["r"] * kept
    assert server.recorder.removed == files + 1 - kept


async def publish_constant_timestamps(url: str, megabytes: float) -> RtmpClient:
    """Publish made-up AVC+AAC whose every timestamp is 0, `megabytes` of it, as fast as the
    origin takes it (a hostile publisher); the client, still connected."""
    client = await RtmpClient.connect(url)
    await client.publish()
    await client.send(m.VIDEO, 0, avc_header())
    await client.send(m.AUDIO, 0, aac_header())
    for i in range(int(megabytes * 100)):
        await client.send(m.VIDEO, 0, keyframe(9000) if i % 25 == 0 else interframe(9000))
        await client.send(m.AUDIO, 0, aac_frame(1000))
    return client


async def test_a_file_whose_timestamps_stay_at_zero_is_cut_by_bytes(nursery, tmp_path):
    server, addr = await start_origin(
        nursery, record_dir=str(tmp_path), record_apps=["live"], record_max_bytes=6 * 2**20
    )
    client = await publish_constant_timestamps(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/z", 5)
    with trio.fail_after(30):  # a hang guard only
        while server.recorder.files < 3:
            await trio.sleep(0.1)
    assert server.recorder.active  # the recording goes on
    client.close()
    with trio.fail_after(30):
        while server.recorder.active:
            await trio.sleep(0.1)
    sizes = [p.stat().st_size for p in (tmp_path / "live" / "z").iterdir()]
    assert len(sizes) == 4 and all(s <= 1.5 * 2**20 + 10_100 for s in sizes), sizes
    # playback lists them: each a segment of one instant
    base = f"http://127.0.0.1:{addr.http_port}/live/z/recordings"
    reply = await fetch("GET", f"{base}/index.m3u8?start={int(time.time()) - 60}&duration=120")
    assert reply.status == 200 and reply.body.decode().count("#EXTINF:0.001,") == 4


async def test_a_file_beyond_record_max_bytes_alone_ends_its_recording(nursery, tmp_path, caplog):
    server, addr = await start_origin(
        nursery, record_dir=str(tmp_path), record_apps=["live"], record_max_bytes=500_000
    )
    (tmp_path / "live" / "old").mkdir(parents=True)  # another stream's file goes first
    (tmp_path / "live" / "old" / "20200101T000000000Z_5000.flv").write_bytes(b"x" * 100)
    client = await publish_constant_timestamps(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/y", 1)
    with trio.fail_after(30):  # a hang guard only
        while server.recorder.active or server.recorder.removed < 2:
            await trio.sleep(0.1)
    assert server.registry.get("live", "y") is not None  # the stream goes on
    client.close()
    assert list((tmp_path / "live" / "y").iterdir()) == []
    lines = [r.getMessage() for r in caplog.records if r.name == "livecdn.record"]
    ended = [line for line in lines if "ended" in line]
    assert len(ended) == 1 and "beyond record_max_bytes" in ended[0], lines

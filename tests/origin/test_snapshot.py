"""Snapshots at the origin: ffmpeg (or our client replaying ffmpeg's clip) publishes; the
images are decoded with PyAV; one decode however many ask; play tokens; bad `w`; audio only."""

from __future__ import annotations

import io
import json
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import pytest
import trio

from common.net.httpclient import fetch
from common.net.rtmpclient import RtmpClient
from common.proto import flv, playtoken
from common.proto.flv import FlvParser
from tests.conftest import FFMPEG, ffmpeg_publish, needs_ffmpeg, start_origin, wait_for_stream
from tests.hookserver import HookServer
from tests.metrics import metric, scrape

pytestmark = [pytest.mark.slow, needs_ffmpeg]

SECRET = "play-secret-for-tests-0123"


def picture(data: bytes) -> tuple[str, int, int, int]:
    """The container format, width, height and number of distinct gray levels of an image."""
    with av.open(io.BytesIO(data)) as container:
        frame = next(container.decode(video=0))
        name = container.format.name
    gray = frame.reformat(format="gray")
    row = gray.planes[0].line_size
    pixels = bytes(gray.planes[0])
    levels = {pixels[y * row + x] for y in range(frame.height) for x in range(frame.width)}
    return name, frame.width, frame.height, len(levels)


async def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    reply = await fetch("GET", f"http://127.0.0.1:{port}{path}")
    return reply.status, reply.headers, reply.body


async def publish_one_gop(nursery: trio.Nursery, clip: Path, url: str) -> None:
    """Publish the clip's headers and first GOP with our client, then nothing more (the
    stream stays live with one keyframe: a fixed snapshot)."""
    tags = [t for t in FlvParser().feed(clip.read_bytes()) if t.tag_type in (8, 9)]
    keys = [i for i, t in enumerate(tags) if t.tag_type == 9 and flv.video_info(t.body).keyframe]
    second = next(i for i in keys if not flv.is_sequence_header(9, tags[i].body) and i > keys[1])
    client = await RtmpClient.connect(url)
    await client.publish()
    for t in tags[:second]:
        await client.send(t.tag_type, t.timestamp, t.body)

    async def hold() -> None:
        try:
            await trio.sleep_forever()
        finally:
            client.close()

    nursery.start_soon(hold)


async def test_jpeg_png_and_scaled_snapshots_of_a_live_stream(nursery, clip):
    origin, addr = await start_origin(nursery)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/s")
    await wait_for_stream(origin, "live", "s")
    port = addr.http_port
    for path, kind, size in (
        ("/live/s.jpg", ("image/jpeg", "jpeg_pipe"), (320, 240)),
        ("/live/s.png", ("image/png", "png_pipe"), (320, 240)),
        ("/live/s.jpg?w=160", ("image/jpeg", "jpeg_pipe"), (160, 120)),
        ("/live/s.png?w=100", ("image/png", "png_pipe"), (96, 72)),  # widths step by 16
        ("/live/s.jpg?w=5000", ("image/jpeg", "jpeg_pipe"), (320, 240)),  # never above the source
        ("/live/s.jpg?w=1", ("image/jpeg", "jpeg_pipe"), (16, 12)),
    ):
        status, headers, body = await get(port, path)
        assert status == 200, (path, body)
        assert headers["content-type"] == kind[0]
        assert headers["cache-control"] == "max-age=1"
        name, width, height, levels = picture(body)
        assert (name, (width, height)) == (kind[1], size), path
        assert levels > 8, f"{path}: a blank picture ({levels} gray levels)"
    for bad in ("abc", "-1", "1.5", "%00"):
        status, _, body = await get(port, f"/live/s.jpg?w={bad}")
        assert status == 400 and b"w must be" in body, bad
    status, _, body = await get(port, "/live/nothing.jpg")
    assert status == 404 and b"no live stream live/nothing" in body
    status, _, _ = await get(port, "/live/bad%20name.png")
    assert status == 400
    reply = await fetch("POST", f"http://127.0.0.1:{port}/live/s.jpg")
    assert reply.status == 405
    api = json.loads((await get(port, "/api/streams"))[2])
    assert api["streams"][0]["thumbnail"] == "/live/s.jpg?w=160"
    text = await scrape(port)
    assert metric(text, "livecdn_snapshots_served_total", format="jpeg") == 4
    assert metric(text, "livecdn_snapshots_served_total", format="png") == 2
    assert metric(text, "livecdn_snapshot_decodes_total") >= 1


async def test_many_requests_for_one_keyframe_decode_it_once(nursery, clip):
    origin, addr = await start_origin(nursery)
    await publish_one_gop(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/one")
    await wait_for_stream(origin, "live", "one")
    bodies: list[bytes] = []

    async def ask(path: str) -> None:
        status, _, body = await get(addr.http_port, path)
        assert status == 200
        bodies.append(body)

    async with trio.open_nursery() as n:
        for _ in range(20):
            n.start_soon(ask, "/live/one.jpg")
    assert len(set(bodies)) == 1
    stats = origin.snapshots.stats
    assert stats.decoded == 1 and stats.made["jpeg"] == 1 and stats.served["jpeg"] == 20
    async with trio.open_nursery() as n:
        for _ in range(10):
            n.start_soon(ask, "/live/one.jpg?w=64")
            n.start_soon(ask, "/live/one.png")
    assert stats.decoded == 1, "another size or format of the same keyframe decodes nothing"
    assert stats.made["jpeg"] == 2 and stats.made["png"] == 1
    text = await scrape(addr.http_port)
    assert metric(text, "livecdn_snapshots_shared_total") >= 19 + 9 + 9


async def test_a_corrupt_keyframe_fails_only_its_requests(nursery, clip):
    origin, addr = await start_origin(nursery)
    tags = [t for t in FlvParser().feed(clip.read_bytes()) if t.tag_type == 9]
    client = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/bad")
    await client.publish()
    await client.send(9, 0, tags[0].body)  # the real AVC header
    await client.send(9, 0, bytes([0x17, 1, 0, 0, 0, 0, 0, 0, 9]) + b"\xff" * 500)
    await wait_for_stream(origin, "live", "bad")
    for _ in range(3):
        status, _, body = await get(addr.http_port, "/live/bad.jpg")
        assert status == 500 and b"no snapshot of live/bad" in body
    assert origin.snapshots.stats.failures["decode"] == 1, "one decode, its error shared"
    text = await scrape(addr.http_port)
    assert metric(text, "livecdn_snapshot_failures_total", reason="decode") == 1
    status, _, _ = await get(addr.http_port, "/healthz")
    assert status == 200
    client.close()


async def test_play_tokens_guard_snapshots(nursery, clip):
    origin, addr = await start_origin(nursery, play_secret=SECRET)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/t")
    await wait_for_stream(origin, "live", "t")
    token = playtoken.play_query(SECRET, "live/t", int(time.time()) + 60)
    other = playtoken.play_query(SECRET, "live/other", int(time.time()) + 60)
    for query in ("", f"?{other}", "?w=64"):
        status, _, _ = await get(addr.http_port, f"/live/t.jpg{query}")
        assert status == 403, query
    status, _, body = await get(addr.http_port, f"/live/t.png?w=64&{token}")
    assert status == 200 and picture(body)[1:3] == (64, 48)
    text = await scrape(addr.http_port)
    assert metric(text, "livecdn_connections_refused_total", reason="play_token") == 3
    api = json.loads((await get(addr.http_port, "/api/streams"))[2])
    assert api["streams"][0]["thumbnail"] is None, "no thumbnail a page could not load"


async def test_audio_only_and_not_yet_keyed_streams_get_404(nursery, tmp_path):
    origin, addr = await start_origin(nursery, snapshot_wait=1.0)
    audio = tmp_path / "audio.flv"
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         "sine=frequency=440:sample_rate=44100", "-t", "3", "-c:a", "aac", "-f", "flv", str(audio)],
        check=True,
    )  # fmt: skip
    await ffmpeg_publish(nursery, audio, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/a")
    with trio.fail_after(10):
        while (s := origin.registry.get("live", "a")) is None or s.audio_header is None:
            await trio.sleep(0.05)
    status, _, body = await get(addr.http_port, "/live/a.jpg")
    assert status == 404 and b"has no video" in body
    api = json.loads((await get(addr.http_port, "/api/streams/live/a"))[2])
    assert api["thumbnail"] is None
    # a stream with a video header but no keyframe yet: a bounded wait, then 404
    client = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/k")
    await client.publish()
    await client.send_metadata({"videocodecid": 7.0, "width": 320.0, "height": 240.0})
    with trio.fail_after(10):
        while origin.registry.get("live", "k") is None:
            await trio.sleep(0.05)
    status, _, body = await get(addr.http_port, "/live/k.jpg")
    assert status == 404 and b"no keyframe of live/k within 1 s" in body
    failures = origin.snapshots.stats.failures
    assert failures["no_video"] == 1 and failures["no_keyframe"] == 1
    client.close()


def hevc_flv(clip: Path, out: Path, frames: int = 50) -> None:
    """The clip's first `frames` pictures encoded as HEVC by PyAV (libx265) in enhanced-RTMP
    FLV (fourcc hvc1), a keyframe every 25, stamped 40 ms apart."""
    with av.open(str(clip)) as src, av.open(str(out), "w", format="flv") as dst:
        stream = dst.add_stream("libx265", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)  # else every tag is stamped 0 ms
        stream.options = {"x265-params": "keyint=25:min-keyint=25:log-level=none"}
        for i, picture in enumerate(src.decode(video=0)):
            if i == frames:
                break
            picture.pts, picture.time_base = i, Fraction(1, 25)
            dst.mux(stream.encode(picture))
        dst.mux(stream.encode(None))


@pytest.mark.skipif("libx265" not in av.codecs_available, reason="PyAV has no libx265")
async def test_an_hevc_stream_over_enhanced_rtmp_snapshots(nursery, clip, tmp_path):
    origin, addr = await start_origin(nursery)
    hevc = tmp_path / "hevc.flv"
    await trio.to_thread.run_sync(hevc_flv, clip, hevc)
    await publish_one_gop(nursery, hevc, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/hevc")
    stream = await wait_for_stream(origin, "live", "hevc")
    assert stream.video_codec == "hevc"
    status, _, body = await get(addr.http_port, "/live/hevc.png?w=192")
    assert status == 200, body
    name, width, height, levels = picture(body)
    assert (name, width, height) == ("png_pipe", 192, 144) and levels > 8


async def test_on_play_decides_snapshots_and_hears_them_end(nursery, clip):
    hooks = await nursery.start(
        HookServer(lambda body: 403 if "deny" in body["query"] else 200).run
    )
    origin, addr = await start_origin(nursery, on_play=hooks.url(), on_play_done=hooks.url())
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/h")
    await wait_for_stream(origin, "live", "h")
    status, _, _ = await get(addr.http_port, "/live/h.jpg?w=64")
    assert status == 200
    play = (await hooks.wait_for("on_play"))[0]
    assert play["protocol"] == "snapshot" and play["name"] == "h"
    done = (await hooks.wait_for("on_play_done"))[0]
    assert done["protocol"] == "snapshot"
    status, _, _ = await get(addr.http_port, "/live/h.jpg?deny=1")
    assert status == 403
    api = json.loads((await get(addr.http_port, "/api/streams"))[2])
    assert api["streams"][0]["thumbnail"] is None, "a hook decides: no thumbnail for pages"

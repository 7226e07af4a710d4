"""Real ffmpeg publishes to the origin; PyAV, ffprobe and our FLV parser play it back."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess

import av
import pytest
import trio

from common.net.httpclient import open_request
from common.proto import flv
from common.proto.flv import FlvParser
from tests.conftest import ffmpeg_publish, needs_ffmpeg, start_origin, wait_for_stream

pytestmark = [pytest.mark.slow, needs_ffmpeg]


def read_with_pyav(url: str, video_frames: int = 40, ca_file: str = "") -> dict:
    """Demux and decode `url` until `video_frames` video frames decoded (an https:// server
    verified against `ca_file`)."""
    options = {"rw_timeout": "8000000"} if url.startswith("rtmp") else {"timeout": "8000000"}
    if ca_file:
        options |= {"ca_file": ca_file, "tls_verify": "1"}
    container = av.open(url, options=options)
    try:
        first_video_key = None
        dts: dict[str, list[int]] = {"video": [], "audio": []}
        decoded = 0
        audio_packets = 0
        for packet in container.demux():
            if packet.dts is None or packet.size == 0:
                continue
            kind = packet.stream.type
            if kind == "video":
                if first_video_key is None:
                    first_video_key = packet.is_keyframe
                dts["video"].append(packet.dts)
                decoded += len(packet.decode())
                if decoded >= video_frames:
                    break
            elif kind == "audio":
                dts["audio"].append(packet.dts)
                audio_packets += 1
        return {
            "first_video_key": first_video_key,
            "decoded": decoded,
            "audio_packets": audio_packets,
            "dts": dts,
            "kinds": sorted({s.type for s in container.streams}),
            "size": (container.streams.video[0].width, container.streams.video[0].height),
        }
    finally:
        container.close()


@pytest.mark.parametrize("proto", ["flv", "rtmp"])
async def test_pyav_plays_and_decodes(nursery, origin, clip, proto):
    server, addr = origin
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/cam")
    await wait_for_stream(server, "live", "cam", keyframes=2)
    url = (
        f"http://127.0.0.1:{addr.http_port}/live/cam.flv"
        if proto == "flv"
        else f"rtmp://127.0.0.1:{addr.rtmp_port}/live/cam"
    )
    result = await trio.to_thread.run_sync(read_with_pyav, url)
    assert result["first_video_key"] is True
    assert result["decoded"] >= 40
    assert result["audio_packets"] > 10
    assert result["kinds"] == ["audio", "video"]
    assert result["size"] == (320, 240)
    for kind, values in result["dts"].items():
        assert values == sorted(values), f"{kind} timestamps go backwards"


async def test_ffprobe_sees_h264_and_aac(nursery, origin, clip):
    server, addr = origin
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/probe")
    await wait_for_stream(server, "live", "probe")
    for url in (
        f"http://127.0.0.1:{addr.http_port}/live/probe.flv",
        f"rtmp://127.0.0.1:{addr.rtmp_port}/live/probe",
    ):
        cmd = [
            shutil.which("ffprobe") or "ffprobe",
            "-v",
            "error",
            "-show_streams",
            "-of",
            "json",
            url,
        ]
        proc = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
        assert proc.returncode == 0, proc.stderr.decode()
        streams = json.loads(proc.stdout)["streams"]
        codecs = sorted(s["codec_name"] for s in streams)
        assert codecs == ["aac", "h264"], url
        video = next(s for s in streams if s["codec_name"] == "h264")
        assert (video["width"], video["height"]) == (320, 240)


async def collect_flv(url: str, *, until_ms: int | None = None, max_tags: int = 100000):
    """Read HTTP-FLV tags with our client; stop after a tag with timestamp >= until_ms."""
    resp = await open_request("GET", url)
    assert resp.status == 200
    assert resp.headers["content-type"] == "video/x-flv"
    parser = FlvParser()
    tags = []
    try:
        async for data in resp.chunks():
            for tag in parser.feed(data):
                tags.append(tag)
                if (until_ms is not None and tag.timestamp >= until_ms) or len(tags) >= max_tags:
                    return tags
    finally:
        resp.close()
    return tags


async def test_mid_stream_join_gets_a_decodable_picture_from_the_cache(nursery, origin, clip):
    """The first picture comes at once: the cached keyframe the stream already had when the
    viewer asked, not the next one (the opposite of the test without a GOP cache below)."""
    server, addr = origin
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/join")
    stream = await wait_for_stream(server, "live", "join", keyframes=2)
    await trio.sleep(0.5)  # join in the middle of a GOP
    latest = max(f.timestamp for f in stream.iter_frames())
    url = f"http://127.0.0.1:{addr.http_port}/live/join.flv"
    resp = await open_request("GET", url)
    parser = FlvParser()
    received = bytearray()
    media = []
    try:
        async for data in resp.chunks():
            received += data
            media += [t for t in parser.feed(data) if t.tag_type in (8, 9)]
            media = [t for t in media if not flv.is_sequence_header(t.tag_type, t.body)]
            if media:
                break
    finally:
        resp.close()
    first = media[0]
    assert first.tag_type == flv.TAG_VIDEO and flv.video_info(first.body).keyframe
    assert first.timestamp <= latest, "the first picture should come from the GOP cache"

    def decode_first(data: bytes) -> tuple[bool, int]:
        with av.open(io.BytesIO(data), format="flv") as c:
            for frame in c.decode(video=0):
                return frame.key_frame, frame.width
        return False, 0

    key, width = await trio.to_thread.run_sync(decode_first, bytes(received))
    assert key and width == 320


async def test_without_gop_cache_a_viewer_waits_for_the_next_keyframe(nursery, clip):
    server, addr = await start_origin(nursery, gop_cache=False)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/nocache")
    stream = await wait_for_stream(server, "live", "nocache", keyframes=1)
    await trio.sleep(1.3)  # past the first keyframe, into the second GOP
    latest = max(f.timestamp for f in stream.iter_frames())
    tags = await collect_flv(f"http://127.0.0.1:{addr.http_port}/live/nocache.flv", max_tags=6)
    media = [t for t in tags if not flv.is_sequence_header(t.tag_type, t.body) and t.tag_type != 18]
    first = media[0]
    assert first.tag_type == flv.TAG_VIDEO
    assert flv.video_info(first.body).keyframe
    assert first.timestamp > latest, "the first frame came from a cache that should be off"


async def test_fifty_flv_readers_receive_the_same_frames_in_order(nursery, origin, clip):
    server, addr = origin
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/crowd")
    stream = await wait_for_stream(server, "live", "crowd", keyframes=1)
    until = max(f.timestamp for f in stream.iter_frames()) + 2500
    url = f"http://127.0.0.1:{addr.http_port}/live/crowd.flv"
    results: list[list] = [[] for _ in range(50)]

    async def reader(i: int) -> None:
        results[i] = await collect_flv(url, until_ms=until)

    with trio.fail_after(20):
        async with trio.open_nursery() as readers:
            for i in range(50):
                readers.start_soon(reader, i)

    def media_key(tag):
        return (tag.tag_type, tag.timestamp, hashlib.sha1(tag.body).hexdigest())

    sequences = []
    for tags in results:
        media = [t for t in tags if t.tag_type in (8, 9)]
        video = [t.timestamp for t in media if t.tag_type == 9]
        audio = [t.timestamp for t in media if t.tag_type == 8]
        assert video == sorted(video) and audio == sorted(audio)
        sequences.append([media_key(t) for t in media])
    # Everyone started at a keyframe of the cache; compare the common window.
    start = max(seq[0][1] for seq in sequences)
    end = min(seq[-1][1] for seq in sequences)
    assert end - start >= 2000
    windows = [[k for k in seq if start <= k[1] < end] for seq in sequences]
    assert all(w == windows[0] for w in windows)
    assert len(windows[0]) > 50


def test_ffprobe_installed():
    assert shutil.which("ffprobe"), "ffmpeg's ffprobe is required by these tests"
    assert subprocess.run(["ffprobe", "-version"], capture_output=True).returncode == 0

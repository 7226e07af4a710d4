"""HLS at the origin: real ffmpeg publishes; PyAV and ffprobe play; playlists follow RFC 8216."""

from __future__ import annotations

import io
import shutil

import av
import pytest
import trio

from common.net.httpclient import fetch
from common.proto.hlsplaylist import HlsPlaylist
from tests.conftest import ffmpeg_publish, needs_ffmpeg, start_origin, wait_for_stream
from tests.hls_validator import LiveValidator, parse
from tests.media import play_video as play_hls  # others import it from here too

pytestmark = [pytest.mark.slow, needs_ffmpeg]


def decode_segment(data: bytes) -> dict:
    with av.open(io.BytesIO(data), format="mpegts") as c:
        kinds = sorted(s.type for s in c.streams)
        frames = list(c.decode(video=0))
    return {
        "kinds": kinds,
        "frames": len(frames),
        "first_key": frames[0].key_frame if frames else None,
    }


async def test_hls_plays_validates_and_every_segment_decodes_alone(nursery, clip):
    server, addr = await start_origin(nursery, hls_target_duration=1.0, hls_window=4)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/h")
    await wait_for_stream(server, "live", "h")
    base = f"http://127.0.0.1:{addr.http_port}/live"
    validator = LiveValidator()

    async def reload_playlists() -> None:
        for _ in range(30):
            reply = await fetch("GET", f"{base}/h.m3u8")
            status, headers, body = reply.status, reply.headers, reply.body
            assert status == 200
            assert headers["content-type"] == "application/vnd.apple.mpegurl"
            assert headers["cache-control"] == "max-age=0"  # <= half of the 1 s target
            validator.add(body.decode())
            await trio.sleep(0.25)

    async with trio.open_nursery() as n:
        n.start_soon(reload_playlists)
        result = await trio.to_thread.run_sync(play_hls, f"{base}/h.m3u8", 3.0)
    assert result["span"] >= 3.0 and result["decoded"] >= 60
    first_seq, _, first_uri, _ = validator.history[0].segments[0]
    with trio.fail_after(30):  # a hang guard: the window slides once a segment
        while validator.history[-1].media_sequence <= first_seq + HlsPlaylist.keep:
            validator.add((await fetch("GET", f"{base}/h.m3u8")).body.decode())
            await trio.sleep(0.25)
    last = validator.history[-1]
    assert last.target == 1 and 2 <= len(last.segments) <= 4
    for seq, _duration, uri, _ in last.segments:
        reply = await fetch("GET", f"{base}/{uri}")
        status, headers, data = reply.status, reply.headers, reply.body
        assert status == 200 and headers["content-type"] == "video/mp2t"
        assert "immutable" in headers["cache-control"]
        decoded = decode_segment(data)
        assert decoded["kinds"] == ["audio", "video"]
        assert decoded["first_key"] is True, f"segment {seq} does not start with a keyframe"
        assert decoded["frames"] >= 20
    # the first segment seen slid out of the window and of those kept for slow clients
    assert (await fetch("GET", f"{base}/{first_uri}")).status == 404
    probe = await trio.run_process(
        [
            shutil.which("ffprobe"),
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv",
            f"{base}/h.m3u8",
        ],
        capture_stdout=True,
    )
    assert b"h264" in probe.stdout and b"aac" in probe.stdout


async def test_publisher_reconnect_continues_with_a_discontinuity_then_ends(nursery, clip):
    """Without publisher_grace each publisher makes a new Stream: the playlist (kept for
    hls_grace_seconds) continues with a discontinuity."""
    server, addr = await start_origin(
        nursery, hls_target_duration=1.0, hls_window=10, hls_grace_seconds=2.0, publisher_grace=0
    )
    url = f"rtmp://127.0.0.1:{addr.rtmp_port}/live/re"
    base = f"http://127.0.0.1:{addr.http_port}/live"
    validator = LiveValidator()
    for _ in range(2):  # two publishers one after the other, each sending 3 s of the clip
        proc = await ffmpeg_publish(nursery, clip, url, loop=False, seconds=3)
        await proc.wait()
        await trio.sleep(0.3)
        reply = await fetch("GET", f"{base}/re.m3u8")
        status, body = reply.status, reply.body
        assert status == 200
        validator.add(body.decode())
    last = validator.history[-1]
    assert last.ended, "EXT-X-ENDLIST once the stream ended"
    seqs = [s[0] for s in last.segments]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "media sequence is continuous"
    discs = [s for s in last.segments if s[3]]
    assert len(discs) == 1, "the second publisher starts with EXT-X-DISCONTINUITY"
    assert validator.history[0].ended
    with trio.fail_after(20):  # a hang guard; the grace's length: test_hls_robust.py, MockClock
        while (await fetch("GET", f"{base}/re.m3u8")).status != 404:  # removed after the grace
            await trio.sleep(0.1)


async def test_hls_can_be_switched_off_and_written_to_a_directory(nursery, clip, tmp_path):
    _, off = await start_origin(nursery, hls=False)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{off.rtmp_port}/live/x")
    server, on = await start_origin(nursery, hls_target_duration=1.0, hls_dir=str(tmp_path))
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{on.rtmp_port}/live/x")
    await wait_for_stream(server, "live", "x", keyframes=3)
    await trio.sleep(1.5)
    assert (await fetch("GET", f"http://127.0.0.1:{off.http_port}/live/x.m3u8")).status == 404
    text = (tmp_path / "live" / "x.m3u8").read_text()
    for _, _, uri, _ in parse(text).segments:
        assert (tmp_path / "live" / uri).stat().st_size > 1000

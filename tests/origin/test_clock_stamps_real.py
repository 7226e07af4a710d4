"""With clock stamps on, ffprobe and ffmpeg see only video and audio (from the origin and
through an edge), while a player that asks (`?stamps=1`) gets the stamps."""

from __future__ import annotations

import json
import shutil

import pytest
import trio

from common.net.httpclient import open_request
from common.proto.clock import asking_stamps, read_stamp
from common.proto.flvscan import FlvScanner
from tests.conftest import ffmpeg_publish, start_edge, start_origin, wait_for_stream

pytestmark = pytest.mark.slow

SPAN_MS = 2500
"""Media read from a live FLV (the clip has a keyframe, so a stamp, every second)."""


async def _stamps(url: str) -> list[float]:
    """The clock stamps among the first SPAN_MS of media at `url`."""
    resp = await open_request("GET", url)
    assert resp.status == 200
    scanner, first, stamps = FlvScanner(), None, []
    try:
        with trio.fail_after(20):
            async for data in resp.chunks():
                scan = scanner.feed(data)
                stamps += [w for _, b in scan.scripts if (w := read_stamp(b)) is not None]
                if scan.first_ts is not None:
                    first = scan.first_ts if first is None else first
                    if scan.last_ts - first >= SPAN_MS:
                        return stamps
    finally:
        resp.close()
    raise AssertionError(f"{url} ended early")


async def test_standard_tools_see_only_video_and_audio(nursery, clip, tmp_path):
    origin, o = await start_origin(nursery, clock_stamps=True)
    _, e = await start_edge(nursery, [f"http://127.0.0.1:{o.http_port}"])
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{o.rtmp_port}/live/x")
    await wait_for_stream(origin, "live", "x", keyframes=2)
    urls = {
        "origin": f"http://127.0.0.1:{o.http_port}/live/x.flv",
        "edge": f"http://127.0.0.1:{e.http_port}/live/x.flv",
        "edge-rtmp": f"rtmp://127.0.0.1:{e.rtmp_port}/live/x",
    }
    for where, url in urls.items():
        cmd = ["ffprobe", "-v", "error", "-show_streams", "-of", "json", url]
        proc = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
        assert proc.returncode == 0, proc.stderr.decode()
        kinds = sorted(s["codec_type"] for s in json.loads(proc.stdout)["streams"])
        assert kinds == ["audio", "video"], (where, kinds)
    for where in ("origin", "edge"):
        out = tmp_path / f"{where}.mp4"
        cmd = [shutil.which("ffmpeg") or "ffmpeg", "-v", "error", "-y", "-i", urls[where],
               "-t", "3", "-map", "0", "-c", "copy", str(out)]  # fmt: skip
        proc = await trio.run_process(cmd, capture_stderr=True, check=False)
        assert proc.returncode == 0, (where, proc.stderr.decode())
        assert out.stat().st_size > 0
        assert await _stamps(urls[where]) == [], where
        assert len(await _stamps(asking_stamps(urls[where]))) >= 2, where

"""Signed play URLs at an edge that pulls from an origin requiring them: the edge checks
viewers' tokens locally (a refused viewer starts no pull) and signs its own pulls and HLS
fetches with the shared play_secret; an edge without the secret gets nothing from the origin."""

from __future__ import annotations

import pytest
import trio

from common.net.httpclient import fetch
from common.proto import flv
from tests.conftest import ffmpeg_publish, needs_ffmpeg, start_edge, start_origin, wait_for_stream
from tests.metrics import metric, scrape
from tests.origin.test_hls import play_hls
from tests.origin.test_play_tokens import (
    SECRET,
    assert_refused,
    decode_frames,
    flv_tags,
    signed,
)

pytestmark = [pytest.mark.slow, needs_ffmpeg]


async def test_an_edge_checks_viewers_and_signs_its_own_pulls(nursery, clip):
    server, o = await start_origin(nursery, play_secret=SECRET, hls_target_duration=1.0)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{o.rtmp_port}/live/p")
    await wait_for_stream(server, "live", "p")
    edge, e = await start_edge(nursery, [f"rtmp://127.0.0.1:{o.rtmp_port}"], play_secret=SECRET,
                               hls_parents=[f"http://127.0.0.1:{o.http_port}"])  # fmt: skip
    http = f"http://127.0.0.1:{e.http_port}/live/p"
    rtmp = f"rtmp://127.0.0.1:{e.rtmp_port}/live/p"

    await assert_refused("live/p", [f"{http}.flv", f"{http}.m3u8", f"{http}-x-1.ts"], rtmp)
    assert not edge.pull.upstreams and not edge.hls.objects(), "a refused viewer pulls nothing"

    token = signed("live/p")
    tags = await flv_tags(f"{http}.flv?{token}", 25)  # the edge pulled over RTMP, signed
    assert any(t.tag_type == flv.TAG_VIDEO for t in tags)
    assert await trio.to_thread.run_sync(decode_frames, f"{rtmp}?{token}", 10) >= 10
    # HLS: the edge fetched the playlist with its own token; the viewer's replaces it
    with trio.fail_after(10):
        while (reply := await fetch("GET", f"{http}.m3u8?{token}")).status != 200:
            await trio.sleep(0.2)
    segments = [line for line in reply.body.decode().splitlines() if ".ts" in line]
    assert segments and all(line.endswith(f"?{token}") for line in segments), segments
    segment = f"http://127.0.0.1:{e.http_port}/live/{segments[-1]}"
    assert (await fetch("GET", segment)).status == 200
    assert (await fetch("GET", segment.split("?")[0])).status == 403
    result = await trio.to_thread.run_sync(play_hls, f"{http}.m3u8?{token}", 2.0)
    assert result["span"] >= 2.0 and result["decoded"] >= 40
    origin_metrics = await scrape(o.http_port)
    assert metric(origin_metrics, "livecdn_connections_refused_total", reason="play_token") == 0


async def test_an_http_flv_pull_is_signed_and_an_edge_without_the_secret_gets_nothing(
    nursery, clip
):
    server, o = await start_origin(nursery, play_secret=SECRET)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{o.rtmp_port}/live/f")
    await wait_for_stream(server, "live", "f")
    parent = [f"http://127.0.0.1:{o.http_port}"]
    _, signing = await start_edge(nursery, parent, play_secret=SECRET)
    tags = await flv_tags(f"http://127.0.0.1:{signing.http_port}/live/f.flv?{signed('live/f')}", 25)
    assert any(t.tag_type == flv.TAG_VIDEO for t in tags)

    _, open_edge = await start_edge(nursery, parent, connect_timeout=2.0)  # no play_secret
    for path in ("live/f.flv", "live/f.m3u8"):
        reply = await fetch("GET", f"http://127.0.0.1:{open_edge.http_port}/{path}", timeout=30)
        assert reply.status >= 400, (path, reply.status)
    refused = metric(await scrape(o.http_port), "livecdn_connections_refused_total",
                     reason="play_token")  # fmt: skip
    assert refused >= 2

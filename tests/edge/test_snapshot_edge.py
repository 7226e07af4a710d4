"""Snapshots at an edge with an rtmp:// parent: a snapshot of a stream the edge does not hold
pulls it (and lets it linger), one of a held stream takes no hold of its own, pull=0 never
pulls; play tokens guard them as at the origin."""

from __future__ import annotations

import json
import time

import pytest
import trio

from common.net.httpclient import fetch
from common.proto import playtoken
from tests.conftest import ffmpeg_publish, needs_ffmpeg, start_edge, start_origin, wait_for_stream
from tests.metrics import metric, scrape
from tests.origin.test_snapshot import get, picture, publish_one_gop

pytestmark = [pytest.mark.slow, needs_ffmpeg]

SECRET = "play-secret-for-tests-0123"


async def test_an_edge_pulls_for_a_snapshot_and_lets_the_pull_linger(nursery, clip):
    origin, addr = await start_origin(nursery)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/e")
    await wait_for_stream(origin, "live", "e")
    edge, eaddr = await start_edge(
        nursery, [f"rtmp://127.0.0.1:{addr.rtmp_port}"], linger_seconds=30.0
    )
    port = eaddr.http_port
    status, _, body = await get(port, "/live/e.jpg?pull=0")
    assert status == 404 and not edge.pull.upstreams, "pull=0 never starts a pull"
    status, headers, body = await get(port, "/live/e.jpg")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    name, width, height, levels = picture(body)
    assert (name, width, height) == ("jpeg_pipe", 320, 240) and levels > 8
    up = edge.pull.upstreams[("live", "e")]
    assert up.viewers == 0 and up.state == "lingering", "the snapshot's hold ended with it"
    status, _, body = await get(port, "/live/e.png?w=160&pull=0")
    assert status == 200 and picture(body)[:3] == ("png_pipe", 160, 120)
    assert up.viewers == 0 and up.state == "lingering", "a held stream's snapshot adds no hold"
    streams = json.loads((await get(port, "/api/streams"))[2])["streams"]
    assert streams[0]["thumbnail"] == "/live/e.jpg?w=160&pull=0"
    status, _, _ = await get(port, "/live/missing.jpg")
    assert status == 404
    status, _, _ = await get(port, "/live/e.jpg?w=x")
    assert status == 400
    text = await scrape(port)
    assert metric(text, "livecdn_snapshots_served_total") == 2
    assert metric(text, "livecdn_snapshot_decodes_total") >= 1


async def test_an_edge_with_a_play_secret_refuses_snapshots_without_a_token(nursery, clip):
    origin, addr = await start_origin(nursery, play_secret=SECRET)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/p")
    await wait_for_stream(origin, "live", "p")
    edge, eaddr = await start_edge(
        nursery, [f"rtmp://127.0.0.1:{addr.rtmp_port}"], play_secret=SECRET
    )
    status, _, _ = await get(eaddr.http_port, "/live/p.jpg")
    assert status == 403 and not edge.pull.upstreams, "refused before any pull"
    token = playtoken.play_query(SECRET, "live/p", int(time.time()) + 60)
    with trio.fail_after(20):
        reply = await fetch("GET", f"http://127.0.0.1:{eaddr.http_port}/live/p.jpg?{token}")
    assert reply.status == 200 and picture(reply.body)[1:3] == (320, 240)


async def test_a_crowd_of_snapshots_at_an_edge_is_one_pull_and_one_decode(nursery, clip):
    origin, addr = await start_origin(nursery)
    await publish_one_gop(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/one")
    await wait_for_stream(origin, "live", "one")
    edge, eaddr = await start_edge(nursery, [f"rtmp://127.0.0.1:{addr.rtmp_port}"])
    bodies: list[bytes] = []

    async def ask() -> None:
        status, _, body = await get(eaddr.http_port, "/live/one.jpg?w=128")
        assert status == 200
        bodies.append(body)

    async with trio.open_nursery() as n:
        for _ in range(20):
            n.start_soon(ask)
    assert len(set(bodies)) == 1 and picture(bodies[0])[1:3] == (128, 96)
    assert edge.pull.stats.started == 1, "one upstream for the crowd"
    stats = edge.snapshots.stats
    assert stats.decoded == 1 and stats.made["jpeg"] == 1 and stats.served["jpeg"] == 20
    assert origin.snapshots.stats.decoded == 0, "the edge decodes its own"

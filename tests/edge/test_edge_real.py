"""Edges with real sockets: ffmpeg publishes to origins, PyAV and our clients play from edges."""

from __future__ import annotations

import json

import pytest
import trio

from common.config import OriginConfig, build
from common.net.httpclient import HttpClientError, fetch, open_request
from common.net.rtmpclient import RtmpClient, RtmpClientError
from common.proto import flv
from common.proto.flv import FlvParser
from common.proto.rtmp import session as rs
from origin.server import Origin
from tests.conftest import (
    ffmpeg_publish,
    needs_ffmpeg,
    start_edge,
    start_killable,
    start_origin,
    wait_for_stream,
)
from tests.media import publish_synthetic, synthetic_publish
from tests.origin.test_play_real_clients import read_with_pyav

pytestmark = [pytest.mark.slow, needs_ffmpeg]


ONE_RTMP_VIEWER = {"flv": 0, "ws": 0, "rtmp": 1, "hls": 0, "total": 1}  # an edge's upstream, alone


async def api(port: int, path: str = "/api/streams") -> dict:
    reply = await fetch("GET", f"http://127.0.0.1:{port}{path}")
    status, body = reply.status, reply.body
    assert status == 200
    return json.loads(body)


async def origin_viewers(port: int, name: str) -> dict:
    streams = (await api(port))["streams"]
    return next(s for s in streams if s["name"] == name)["viewers"]


class FlvViewer:
    """An HTTP-FLV viewer that records when video arrives and its timestamps."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.video: list[tuple[float, int, bool]] = []
        self.ended_cleanly = False
        self.error: str | None = None

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        resp = await open_request("GET", self.url)
        assert resp.status == 200, resp.status
        task_status.started()
        parser = FlvParser()
        try:
            async for data in resp.chunks():
                for tag in parser.feed(data):
                    if tag.tag_type == flv.TAG_VIDEO:
                        info = flv.video_info(tag.body)
                        if not info.sequence_header:
                            self.video.append((trio.current_time(), tag.timestamp, info.keyframe))
            self.ended_cleanly = True
        except HttpClientError as exc:
            self.error = str(exc)
        finally:
            resp.close()

    async def watch_for(self, seconds: float) -> None:
        """Play for `seconds`, then leave."""
        async with trio.open_nursery() as watching:
            await watching.start(self.run)
            await trio.sleep(seconds)
            watching.cancel_scope.cancel()

    def frames_after(self, t: float) -> int:
        return sum(1 for at, _, _ in self.video if at >= t)

    async def wait_frames(self, n: int, seconds: float = 15.0) -> None:
        """Until `n` video frames have arrived in all; `seconds` only guards against a hang."""
        with trio.fail_after(seconds):
            while len(self.video) < n:
                await trio.sleep(0.05)

    def monotonic(self) -> bool:
        ts = [v[1] for v in self.video]
        return ts == sorted(ts)


async def test_two_hundred_viewers_make_one_upstream(nursery, origin, clip):
    server, addr = origin
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/crowd")
    await wait_for_stream(server, "live", "crowd")
    edge, eaddr = await start_edge(nursery, [f"rtmp://127.0.0.1:{addr.rtmp_port}"])
    viewers = [FlvViewer(f"http://127.0.0.1:{eaddr.http_port}/live/crowd.flv") for _ in range(200)]
    with trio.fail_after(20):
        async with trio.open_nursery() as starting:
            for v in viewers:
                starting.start_soon(nursery.start, v.run)
    for v in viewers:
        await v.wait_frames(21)
    assert await origin_viewers(addr.http_port, "crowd") == ONE_RTMP_VIEWER
    info = (await api(eaddr.http_port))["streams"][0]
    assert info["viewers"]["flv"] == 200 and info["upstream"]["state"] == "live"
    assert info["upstream"]["bytes_from_parent"] > 0
    for v in viewers:
        assert v.video[0][2], "every viewer starts at a keyframe"
        assert v.monotonic()
    # and real decoders agree, over HTTP-FLV and RTMP from the edge
    for url in (
        f"http://127.0.0.1:{eaddr.http_port}/live/crowd.flv",
        f"rtmp://127.0.0.1:{eaddr.rtmp_port}/live/crowd",
    ):
        result = await trio.to_thread.run_sync(read_with_pyav, url, 25)
        assert result["first_video_key"] and result["decoded"] >= 25 and result["audio_packets"]
    metrics = (await fetch("GET", f"http://127.0.0.1:{eaddr.http_port}/metrics")).body
    text = metrics.decode()
    assert "livecdn_upstreams 1.0" in text and "livecdn_pulls_started_total 1.0" in text


async def test_two_tier_chain_holds_one_upstream_per_hop(nursery, origin, clip):
    server, addr = origin
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/chain")
    await wait_for_stream(server, "live", "chain")
    _, e1 = await start_edge(nursery, [f"rtmp://127.0.0.1:{addr.rtmp_port}"])
    _, e2 = await start_edge(nursery, [f"http://127.0.0.1:{e1.http_port}"])
    _, e3 = await start_edge(nursery, [f"rtmp://127.0.0.1:{e1.rtmp_port}"])
    for url in (
        f"http://127.0.0.1:{e2.http_port}/live/chain.flv",
        f"rtmp://127.0.0.1:{e2.rtmp_port}/live/chain",
        f"http://127.0.0.1:{e3.http_port}/live/chain.flv",
    ):
        result = await trio.to_thread.run_sync(read_with_pyav, url, 25)
        assert result["first_video_key"] and result["decoded"] >= 25
        assert all(v == sorted(v) for v in result["dts"].values())
    # with viewers on both second-tier edges at once, each hop still holds one upstream
    a = FlvViewer(f"http://127.0.0.1:{e2.http_port}/live/chain.flv")
    b = FlvViewer(f"http://127.0.0.1:{e2.http_port}/live/chain.flv")
    c = FlvViewer(f"http://127.0.0.1:{e3.http_port}/live/chain.flv")
    for v in (a, b, c):
        await nursery.start(v.run)
    for v in (a, b, c):
        await v.wait_frames(11)
    assert await origin_viewers(addr.http_port, "chain") == ONE_RTMP_VIEWER
    e1_info = (await api(e1.http_port))["streams"][0]
    assert e1_info["viewers"] == {
        "flv": 1,
        "ws": 0,
        "rtmp": 1,
        "hls": 0,
        "total": 2,
    }  # e2 (HTTP-FLV) and e3 (RTMP)
    assert (await api(e2.http_port))["streams"][0]["viewers"]["flv"] == 2


async def test_failover_between_origins_keeps_viewers(nursery, clip):
    o1 = Origin(build(OriginConfig, {"host": "127.0.0.1", "rtmp_port": 0, "http_port": 0}))
    a1, kill_o1 = await start_killable(nursery, o1)
    o2, a2 = await start_origin(nursery)
    for a in (a1, a2):
        await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{a.rtmp_port}/live/ha")
    await wait_for_stream(o1, "live", "ha")
    await wait_for_stream(o2, "live", "ha")
    edge, eaddr = await start_edge(
        nursery,
        [f"rtmp://127.0.0.1:{a1.rtmp_port}", f"rtmp://127.0.0.1:{a2.rtmp_port}"],
        stall_timeout=2.0,
        connect_timeout=1.0,
    )
    viewers = [FlvViewer(f"http://127.0.0.1:{eaddr.http_port}/live/ha.flv") for _ in range(50)]
    for v in viewers:
        await nursery.start(v.run)
    for v in viewers:
        await v.wait_frames(25)
    kill_o1.cancel()
    at_kill = [len(v.video) for v in viewers]

    def kept() -> int:  # viewers with a GOP's worth of frames since the kill
        pairs = zip(viewers, at_kill, strict=True)
        return sum(1 for v, n in pairs if len(v.video) >= n + 25 and v.error is None)

    with trio.move_on_after(15):  # a hang guard
        while kept() < 49:
            await trio.sleep(0.1)
    assert kept() >= 49, f"only {kept()} of 50 viewers kept receiving frames"
    assert all(v.monotonic() for v in viewers)
    info = (await api(eaddr.http_port))["streams"][0]
    assert info["upstream"]["parent"].endswith(str(a2.rtmp_port))
    assert info["upstream"]["failovers"] == 1
    metrics = (await fetch("GET", f"http://127.0.0.1:{eaddr.http_port}/metrics")).body
    assert "livecdn_failovers_total 1.0" in metrics.decode()


def transitions(caplog: pytest.LogCaptureFixture, key: str) -> list[tuple[str, str]]:
    """The lifecycle states the edge's upstream for `key` went through, as logged."""
    prefix = f"upstream {key}: "
    steps = [
        m.removeprefix(prefix) for r in caplog.records if (m := r.getMessage()).startswith(prefix)
    ]
    return [tuple(s.split(" (")[0].split(" -> ")) for s in steps if " -> " in s]


async def test_real_lifecycle_linger_missing_and_publisher_stop(nursery, origin, caplog):
    """The order and outcome of an upstream's lifecycle on the real clock; how long the linger
    lasts is timed on the MockClock in test_pull_lifecycle.py."""
    caplog.set_level("INFO", logger="livecdn.edge")
    server, addr = origin
    linger = 5.0  # long enough that a viewer arriving once it started always comes within it
    edge, eaddr = await start_edge(
        nursery, [f"rtmp://127.0.0.1:{addr.rtmp_port}"], linger_seconds=linger, not_found_ttl=2.0
    )
    http = f"http://127.0.0.1:{eaddr.http_port}"
    # missing stream: a prompt 404, then answered from the cache
    for _ in range(3):
        status = (await fetch("GET", f"{http}/live/ghost.flv")).status
        assert status == 404
    player = await RtmpClient.connect(f"rtmp://127.0.0.1:{eaddr.rtmp_port}/live/ghost")
    with pytest.raises(RtmpClientError) as err:
        await player.play()
    assert err.value.code == "NetStream.Play.StreamNotFound"
    metrics = (await fetch("GET", f"{http}/metrics")).body
    assert "livecdn_not_found_cached_total 3.0" in metrics.decode()
    assert "livecdn_pulls_started_total 1.0" in metrics.decode()

    pub = await publish_synthetic(nursery, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/life")
    await trio.sleep(0.3)
    await FlvViewer(f"{http}/live/life.flv").watch_for(0.5)  # the only viewer leaves
    with trio.fail_after(10):  # a hang guard
        while (await api(eaddr.http_port))["streams"][0]["upstream"]["state"] != "lingering":
            await trio.sleep(0.05)
    second = FlvViewer(f"{http}/live/life.flv")  # within the linger: same upstream
    await nursery.start(second.run)
    await second.wait_frames(1)
    assert edge.pull.stats.started == 2  # ghost + life
    rtmp_viewer = await RtmpClient.connect(f"rtmp://127.0.0.1:{eaddr.rtmp_port}/live/life")
    await rtmp_viewer.play()

    # the publisher stops: edge viewers get a clean end (once the origin's grace for the
    # publisher to come back is over) and the upstream goes away
    pub.close()
    with trio.fail_after(15):
        while not second.ended_cleanly:
            await trio.sleep(0.05)
        events = []
        while not any(isinstance(e, rs.StreamEOF) for e in events):
            events += await rtmp_viewer.next_events()
        while (await api(eaddr.http_port))["streams"]:
            await trio.sleep(0.05)
    assert edge.pull.stats.stopped["publisher stopped"] == 1
    assert transitions(caplog, "live/life") == [
        ("connecting", "live"),
        ("live", "lingering"),
        ("lingering", "live"),  # the second viewer reused the upstream
        ("live", "closed"),
    ]

    # an idle upstream goes away after the linger
    await publish_synthetic(nursery, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/idle")
    await trio.sleep(0.3)
    await FlvViewer(f"{http}/live/idle.flv").watch_for(0.3)
    with trio.fail_after(linger + 10):  # a hang guard
        while (await api(eaddr.http_port))["streams"]:
            await trio.sleep(0.1)
    assert edge.pull.stats.stopped == {
        "not found at parent": 1,  # live/ghost
        "publisher stopped": 1,
        "linger expired": 1,
    }
    assert transitions(caplog, "live/idle") == [
        ("connecting", "live"),
        ("live", "lingering"),
        ("lingering", "closed"),
    ]
    assert await origin_viewers(addr.http_port, "idle") == {
        "flv": 0,
        "ws": 0,
        "rtmp": 0,
        "hls": 0,
        "total": 0,
    }


async def test_publisher_takeover_at_the_origin_is_seamless_at_the_edge(nursery):
    server, addr = await start_origin(nursery, on_republish="takeover")
    _, eaddr = await start_edge(nursery, [f"http://127.0.0.1:{addr.http_port}"])
    url = f"rtmp://127.0.0.1:{addr.rtmp_port}/live/swap"
    await publish_synthetic(nursery, url)
    await trio.sleep(0.3)
    viewer = FlvViewer(f"http://127.0.0.1:{eaddr.http_port}/live/swap.flv")
    await nursery.start(viewer.run)
    await trio.sleep(1)
    second = await RtmpClient.connect(url)
    await second.publish()
    at_swap = len(viewer.video)
    nursery.start_soon(synthetic_publish, second)
    await viewer.wait_frames(at_swap + 25)  # a GOP's worth from the new publisher
    assert viewer.error is None and not viewer.ended_cleanly
    assert viewer.monotonic()

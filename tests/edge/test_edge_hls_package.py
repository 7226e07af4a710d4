"""HLS packaged at the edge (hls_mode "package") from the upstream its FLV and RTMP viewers
share, against a real origin fed by ffmpeg; and hls_mode "cache" beside it."""

from __future__ import annotations

import time

import pytest
import trio

from common.config import ConfigError, EdgeConfig, build
from common.net.httpclient import fetch
from common.proto import auth
from tests.conftest import (
    QOS_SECRET,
    ffmpeg_publish,
    needs_ffmpeg,
    start_edge,
    start_origin,
    wait_for_stream,
)
from tests.edge.test_edge_real import FlvViewer, api, origin_viewers
from tests.hls_validator import LiveValidator
from tests.media import replay_clip
from tests.metrics import metric, scrape
from tests.origin.test_hls import play_hls

pytestmark = [pytest.mark.slow, needs_ffmpeg]


async def published(nursery, clip, name: str, **origin_settings):
    """An origin with ffmpeg publishing live/`name` to it; the origin's address."""
    server, addr = await start_origin(nursery, hls_target_duration=1.0, **origin_settings)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/{name}")
    await wait_for_stream(server, "live", name)
    return addr


async def packaging_edge(nursery, addr, **settings):
    """An edge with the origin at `addr` as its only (rtmp://) parent, 1 s segments."""
    parent = f"rtmp://127.0.0.1:{addr.rtmp_port}"
    return await start_edge(nursery, [parent], hls_target_duration=1.0, **settings)


async def fetch_playlist(url: str, seconds: float = 15.0) -> str:
    """The playlist at `url` once it lists a segment; `seconds` only guards against a hang."""
    with trio.fail_after(seconds):
        while True:
            reply = await fetch("GET", url)
            if reply.status == 200:
                return reply.body.decode()
            await trio.sleep(0.2)


async def test_an_edge_with_an_rtmp_parent_packages_hls_pyav_plays(nursery, clip):
    addr = await published(nursery, clip, "p")
    edge, eaddr = await packaging_edge(nursery, addr)
    assert edge.hls.packagers is not None, 'hls_mode "auto" with an rtmp:// parent packages'
    base = f"http://127.0.0.1:{eaddr.http_port}/live"
    statuses: list[int] = []

    async def first_request() -> None:
        statuses.append((await fetch("GET", f"{base}/p.m3u8")).status)

    async with trio.open_nursery() as n:  # a crowd at once: one start, all wait for it
        for _ in range(20):
            n.start_soon(first_request)
    assert statuses.count(200) == 20, statuses
    validator = LiveValidator()

    async def reload_playlists() -> None:
        for _ in range(24):
            validator.add(await fetch_playlist(f"{base}/p.m3u8"))
            await trio.sleep(0.25)

    async with trio.open_nursery() as n:
        n.start_soon(reload_playlists)
        result = await trio.to_thread.run_sync(play_hls, f"{base}/p.m3u8", 3.0)
    assert result["span"] >= 3.0 and result["decoded"] >= 60
    segment = validator.history[-1].segments[-1][2]
    reply = await fetch("GET", f"{base}/{segment}")
    assert reply.status == 200 and reply.body[:1] == b"\x47"
    assert reply.headers["content-type"] == "video/mp2t"
    edge_metrics = await scrape(eaddr.http_port)
    assert metric(edge_metrics, "livecdn_hls_segments_total") >= 3
    assert metric(edge_metrics, "livecdn_hls_failures_total") == 0
    assert metric(edge_metrics, "livecdn_hls_packaged_streams") == 1
    assert metric(edge_metrics, "livecdn_hls_packaging_started_total") == 1
    assert metric(edge_metrics, "livecdn_pulls_started_total") == 1
    assert metric(edge_metrics, "livecdn_hls_cache_misses_total") == 0
    origin_metrics = await scrape(addr.http_port)
    assert metric(origin_metrics, "livecdn_hls_requests_total") == 0, "nothing asked the origin"
    listing = await api(eaddr.http_port)
    assert listing["hls_mode"] == "package"
    (stream,) = listing["streams"]
    assert stream["hls"]["mode"] == "package" and stream["hls"]["segments"] >= 1
    assert stream["upstream"]["state"] == "live" and stream["viewers"]["hls"] >= 1


async def test_flv_and_hls_viewers_share_one_upstream_released_after_hls_leaves(nursery, clip):
    addr = await published(nursery, clip, "s")
    # a viewer gone 3 target durations (3 s) + linger (1 s) stops the packager
    _, eaddr = await packaging_edge(nursery, addr, linger_seconds=1.0)
    base = f"http://127.0.0.1:{eaddr.http_port}/live"
    flv = FlvViewer(f"{base}/s.flv")
    async with trio.open_nursery() as watching:
        await watching.start(flv.run)
        await flv.wait_frames(10)
        await fetch_playlist(f"{base}/s.m3u8")
        result = await trio.to_thread.run_sync(play_hls, f"{base}/s.m3u8", 2.0)
        assert result["span"] >= 2.0 and result["decoded"] > 0  # it played 2 s of media
        edge_metrics = await scrape(eaddr.http_port)
        assert metric(edge_metrics, "livecdn_pulls_started_total") == 1
        assert metric(edge_metrics, "livecdn_upstreams") == 1
        assert metric(edge_metrics, "livecdn_hls_packaged_streams") == 1
        assert (await origin_viewers(addr.http_port, "s"))["total"] == 1, "one upstream"
        # the HLS viewer has left: the packager stops, the FLV viewer keeps the upstream
        with trio.fail_after(20):
            while metric(await scrape(eaddr.http_port), "livecdn_hls_packaged_streams"):
                await trio.sleep(0.2)
        (stream,) = (await api(eaddr.http_port))["streams"]
        assert "hls" not in stream and stream["upstream"]["state"] == "live"
        assert stream["viewers"]["flv"] == 1
        frames = len(flv.video)
        await flv.wait_frames(frames + 10)
        watching.cancel_scope.cancel()
    # the last viewer gone, the upstream lingers and stops as usual
    with trio.fail_after(20):
        while metric(await scrape(eaddr.http_port), "livecdn_upstreams"):
            await trio.sleep(0.2)
    edge_metrics = await scrape(eaddr.http_port)
    assert metric(edge_metrics, "livecdn_pulls_stopped_total", reason="linger expired") == 1
    assert metric(edge_metrics, "livecdn_pulls_started_total") == 1


async def test_hls_alone_holds_the_upstream_and_a_return_starts_afresh(nursery, clip):
    addr = await published(nursery, clip, "a")
    edge, eaddr = await packaging_edge(nursery, addr, linger_seconds=1.0)
    url = f"http://127.0.0.1:{eaddr.http_port}/live/a.m3u8"
    await fetch_playlist(url)
    with trio.fail_after(20):
        while edge.pull.upstreams:
            await trio.sleep(0.2)
    assert not edge.packagers.active and not edge.hls_store.playlists
    assert "#EXT-X-ENDLIST" not in await fetch_playlist(url)
    edge_metrics = await scrape(eaddr.http_port)
    assert metric(edge_metrics, "livecdn_pulls_started_total") == 2
    assert metric(edge_metrics, "livecdn_hls_packaging_started_total") == 2


async def test_a_stream_missing_upstream_is_a_quick_404(nursery, origin):
    _, addr = origin
    _, eaddr = await start_edge(nursery, [f"rtmp://127.0.0.1:{addr.rtmp_port}"])
    for _ in range(2):
        with trio.fail_after(5):  # a hang guard: the parent answers at once
            reply = await fetch("GET", f"http://127.0.0.1:{eaddr.http_port}/live/none.m3u8")
        assert reply.status == 404
    edge_metrics = await scrape(eaddr.http_port)
    assert metric(edge_metrics, "livecdn_not_found_cached_total") == 1
    assert metric(edge_metrics, "livecdn_hls_packaged_streams") == 0
    reply = await fetch("GET", f"http://127.0.0.1:{eaddr.http_port}/live/none-1-0.ts")
    assert reply.status == 404


async def test_an_edge_packages_from_an_http_parent_when_told(nursery, clip):
    addr = await published(nursery, clip, "h")
    edge, eaddr = await start_edge(
        nursery, [f"http://127.0.0.1:{addr.http_port}"], hls_mode="package"
    )
    playlist = await fetch_playlist(f"http://127.0.0.1:{eaddr.http_port}/live/h.m3u8")
    assert "#EXTINF" in playlist
    assert edge.pull.upstreams[("live", "h")].parent.startswith("http://"), "over HTTP-FLV"
    edge_metrics = await scrape(eaddr.http_port)
    assert metric(edge_metrics, "livecdn_hls_segments_total") >= 1
    assert metric(edge_metrics, "livecdn_hls_cache_misses_total") == 0


async def test_cache_mode_fetches_hls_from_the_http_parent(nursery, clip):
    addr = await published(nursery, clip, "c")
    edge, eaddr = await start_edge(
        nursery, [f"rtmp://127.0.0.1:{addr.rtmp_port}"], hls_mode="cache",
        hls_parents=[f"http://127.0.0.1:{addr.http_port}"],
    )  # fmt: skip
    playlist = await fetch_playlist(f"http://127.0.0.1:{eaddr.http_port}/live/c.m3u8")
    segment = [line for line in playlist.splitlines() if line.endswith(".ts")][-1]
    reply = await fetch("GET", f"http://127.0.0.1:{eaddr.http_port}/live/{segment}")
    assert reply.status == 200 and reply.body[:1] == b"\x47"
    edge_metrics = await scrape(eaddr.http_port)
    assert metric(edge_metrics, "livecdn_hls_cache_misses_total") >= 2
    assert metric(edge_metrics, "livecdn_hls_segments_total") == 0
    assert not edge.pull.upstreams, "cached HLS pulls no FLV/RTMP upstream"
    listing = await api(eaddr.http_port)
    assert listing["hls_mode"] == "cache" and listing["streams"][0]["hls"]["mode"] == "cache"


def test_hls_mode_auto_follows_the_parents():
    def edge(**values) -> EdgeConfig:
        return build(EdgeConfig, values)

    assert edge(parents=["rtmp://o:1935"]).packages_hls()
    assert edge(parents=["rtmps://o:4935", "http://o:8080"]).packages_hls()
    assert not edge(parents=["http://o:8080"]).packages_hls()
    assert not edge(parents=["rtmp://o:1935"], hls_parents=["http://o:8080"]).packages_hls()
    assert edge(parents=["http://o:8080"], hls_mode="package").packages_hls()
    with pytest.raises(ConfigError, match="cache"):
        edge(parents=["rtmp://o:1935"], hls_mode="cache")


async def test_packaged_segments_are_class_paced(autojump_clock, nursery, clip):
    """Virtual time: the class token on the playlist is passed to its segments, which the
    edge paces at the class's ceiling, as in cache mode."""
    origin, o = await start_origin(nursery)
    slow = {"basic": {"rate_mbps": 0.1, "ceil_mbps": 0.2}}
    edge, e = await packaging_edge(nursery, o, qos_secret=QOS_SECRET, classes=slow)
    nursery.start_soon(replay_clip, f"rtmp://127.0.0.1:{o.rtmp_port}/live/q", clip)
    await wait_for_stream(origin, "live", "q")
    token = auth.class_query(QOS_SECRET, "live/q", "basic", int(time.time()) + 60)
    playlist = await fetch_playlist(f"http://127.0.0.1:{e.http_port}/live/q.m3u8?{token}")
    uris = [line for line in playlist.splitlines() if line and not line.startswith("#")]
    assert uris and all(uri.endswith(token) for uri in uris), uris
    plain = edge.hls_store.playlists[("live", "q")].segment(uris[0].split("?")[0]).data
    t0 = trio.current_time()
    reply = await fetch("GET", f"http://127.0.0.1:{e.http_port}/live/{uris[0]}", timeout=60)
    took = trio.current_time() - t0
    assert reply.status == 200 and reply.body == plain, "the packaged bytes, paced"
    ceil = slow["basic"]["ceil_mbps"] * 125_000
    burst = max(ceil * 0.05, 16384.0)  # the class's ceiling bucket starts full
    assert abs((len(plain) - burst) / took - ceil) <= 0.03 * ceil, (len(plain), took)

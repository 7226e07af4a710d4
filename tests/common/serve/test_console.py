"""A node's page at `/`: the static files (a fixed set, right types, vendored players
immutable, no way out of the folder), the live feed /api/events (Server-Sent Events, bounded),
and in a real browser (chromium) the page listing an edge's streams and playing one over
HTTP-FLV, WebSocket-FLV and HLS with no console errors."""

from __future__ import annotations

import json
import re
import time

import pytest
import trio

from common.net.httpclient import fetch, open_request
from common.proto.playtoken import play_query
from common.serve import console
from common.serve.metrics import NodeMetrics
from tests.browser import needs_chromium, open_page
from tests.conftest import ffmpeg_publish, needs_ffmpeg, start_edge, start_origin, wait_for_stream
from tests.metrics import metric, scrape

SECRET = "s3cret-for-signed-play-urls-0123456789"


async def test_the_page_and_its_files(nursery) -> None:
    _, address = await start_origin(nursery)
    base = f"http://127.0.0.1:{address.http_port}"
    page = await fetch("GET", f"{base}/", headers=[("origin", "http://example.com")])
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["access-control-allow-origin"] == "*"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert b"/static/console.js" in page.body and page.headers["cache-control"] == "no-store"
    for src in (b"/static/vendor/mpegts-1.8.2.js", b"/static/vendor/hls.light-1.6.15.min.js"):
        assert src in page.body
        got = await fetch("GET", base + src.decode())
        assert got.status == 200 and got.headers["content-type"].startswith("text/javascript")
        assert got.headers["cache-control"] == console.IMMUTABLE and len(got.body) > 100_000
    module = await fetch("GET", f"{base}/static/player.js")
    assert module.status == 200 and b"export class Player" in module.body
    assert module.headers["cache-control"] == "no-cache"
    head = await fetch("HEAD", f"{base}/static/console.css")
    assert head.status == 200 and head.body == b"" and int(head.headers["content-length"]) > 100


@pytest.mark.parametrize(
    "path",
    [
        "/static/../node.py",
        "/static/%2e%2e/node.py",
        "/static/..%2fconsole.py",
        "/static/vendor/../../console.py",
        "/static//etc/passwd",
        "/static/",
        "/static/nothere.js",
        "/static/vendor/VERSIONS",
    ],
)
async def test_no_path_leaves_the_static_files(nursery, path: str) -> None:
    _, address = await start_origin(nursery)
    got = await fetch("GET", f"http://127.0.0.1:{address.http_port}{path}")
    assert got.status == 404 and b"import" not in got.body


async def test_the_page_is_only_read(nursery) -> None:
    _, address = await start_origin(nursery)
    got = await fetch("POST", f"http://127.0.0.1:{address.http_port}/", body=b"x")
    assert got.status == 405 and got.headers["allow"] == "GET, HEAD"


async def events(url: str):
    """The `data:` events of the event stream at `url`, parsed, and the response."""
    resp = await open_request("GET", url)
    assert resp.status == 200 and resp.headers["content-type"] == "text/event-stream"

    async def parsed():
        buffer = b""
        async for data in resp.chunks():
            buffer += data
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if event.startswith(b"data: "):
                    yield json.loads(event[len(b"data: ") :])

    return resp, parsed()


def test_hls_cache_reads_the_edges_cache_counters() -> None:
    metrics = NodeMetrics("edge")
    metrics.counter("hls_cache_hits_total", "hits", (), lambda: {(): 7})
    metrics.counter("hls_cache_misses_total", "misses", ())
    metrics.inc("hls_cache_misses_total", 3)
    metrics.counter("hls_cache_coalesced_total", "not a hit or a miss", (), lambda: {(): 5})
    assert console.hls_cache(metrics) == {"hits": 7, "misses": 3}


@needs_ffmpeg
async def test_the_live_feed_sends_the_node_every_second(nursery, clip, monkeypatch) -> None:
    origin, address = await start_origin(nursery)
    url = f"http://127.0.0.1:{address.http_port}/api/events"
    resp, feed = await events(url)
    with trio.fail_after(5):
        first = await anext(feed)
    assert first["node"] == "origin" and first["streams"] == []
    assert first["viewers"] == {"flv": 0, "ws": 0, "rtmp": 0, "hls": 0}
    assert first["hls_cache"] == {}  # an origin has no HLS cache
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{address.rtmp_port}/live/feed")
    await wait_for_stream(origin, "live", "feed")
    with trio.fail_after(5):
        start = trio.current_time()
        while not (snap := await anext(feed))["streams"]:
            pass
        assert trio.current_time() - start < 3  # about once a second
    (stream,) = snap["streams"]
    assert (stream["app"], stream["name"], stream["video"]["width"]) == ("live", "feed", 320)
    assert stream["publisher"]["address"].startswith("127.0.0.1:")  # loopback: the admin view

    monkeypatch.setattr(console, "MAX_EVENT_CLIENTS", 2)
    second, second_feed = await events(url)
    with trio.fail_after(5):
        await anext(second_feed)
    assert (await fetch("GET", url)).status == 503  # bounded
    resp.close()
    second.close()
    with trio.fail_after(10):  # the node notices the closed clients on its next writes
        while True:
            again = await open_request("GET", url)
            again.close()
            if again.status == 200:
                break
            assert again.status == 503
            await trio.sleep(0.2)
    head = await fetch("HEAD", url)
    assert head.status == 200 and head.headers["content-type"] == "text/event-stream"

    # one address cannot hold every place
    monkeypatch.setattr(console, "MAX_EVENT_CLIENTS", 32)
    monkeypatch.setattr(console, "MAX_EVENT_CLIENTS_PER_HOST", 1)
    with trio.fail_after(10):
        while (held := await open_request("GET", url)).status != 200:
            held.close()
            await trio.sleep(0.2)
    crowded = await fetch("GET", url)
    assert crowded.status == 503 and b"this address" in crowded.body
    held.close()


@pytest.mark.slow
@needs_ffmpeg
@needs_chromium
async def test_an_edge_page_lists_and_plays_its_stream(nursery, clip, tmp_path) -> None:
    """With signed play URLs required: the page takes the token in its query field."""
    origin, o_addr = await start_origin(nursery, play_secret=SECRET)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{o_addr.rtmp_port}/live/page")
    await wait_for_stream(origin, "live", "page")
    parents = [f"http://127.0.0.1:{o_addr.http_port}"]
    _, e_addr = await start_edge(nursery, parents, play_secret=SECRET)
    base = f"http://127.0.0.1:{e_addr.http_port}"
    token = play_query(SECRET, "live/page", int(time.time()) + 600)
    async with open_page(tmp_path) as page:
        with pytest.raises(TimeoutError):  # no token, no play
            await page.play(base, "live/page", "flv", timeout=3)
        assert any("403" in error for error in page.errors), page.errors
        page.errors.clear()
        for via in ("flv", "ws", "hls"):
            width, status = await page.play(base, "live/page", via, token)
            assert width == 320, via
            assert status.startswith({"flv": "HTTP-FLV", "ws": "WebSocket-FLV", "hls": "HLS"}[via])
            assert "buffer latency" in status
            if via == "hls":  # the playlist's program date-times: latency from the ingest
                assert re.search(r"latency \d+\.\d s from ingest", status), status
        with trio.fail_after(3):  # a page left closes its WebSocket (pagehide)
            while metric(await scrape(base), "livecdn_viewers", protocol="ws") != 0:
                await trio.sleep(0.1)
        await page.wait_for(
            "document.querySelector('#streams button[data-stream=\"live/page\"]') !== null"
        )
        assert await page.evaluate("document.title") == "livecdn edge"
        await page.screenshot(tmp_path / "console-node.png")
        assert page.errors == []


@pytest.mark.slow
@needs_ffmpeg
@needs_chromium
async def test_an_origin_page_with_the_admin_token_kicks_a_publisher(
    nursery, clip, tmp_path
) -> None:
    """Without a token in the page's fragment no kick button; with #admin=TOKEN, a kick (no
    ban: the publisher may come back)."""
    token = "admin-token-of-the-origin-0123456"
    origin, address = await start_origin(nursery, admin_token=token)
    url = f"rtmp://127.0.0.1:{address.rtmp_port}/live/kick"
    await ffmpeg_publish(nursery, clip, url)
    await wait_for_stream(origin, "live", "kick")
    base = f"http://127.0.0.1:{address.http_port}"
    play = "document.querySelector('#streams button[data-stream=\"live/kick\"]') !== null"
    kick = "document.querySelector('#streams button[data-action=\"kick\"]')"
    async with open_page(tmp_path) as page:
        await page.navigate(f"{base}/")
        await page.wait_for(play)
        assert await page.evaluate(f"{kick} === null")
        await page.navigate(f"{base}/?x#admin={token}")
        await page.wait_for(f"{kick} !== null")
        await page.evaluate(f"{kick}.click()")
        status = "document.getElementById('action-status').textContent"
        await page.wait_for(f"{status} === 'kick live/kick: done'")
        assert origin.registry.get("live", "kick") is None
        await page.wait_for("!document.getElementById('empty').hidden")
        await ffmpeg_publish(nursery, clip, url)  # not banned
        await wait_for_stream(origin, "live", "kick")
        await page.wait_for(f"{kick} !== null")
        assert page.errors == []

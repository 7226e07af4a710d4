"""The balancer's console at `/`: its feed (/api/events) shows the edges with their health,
the origins and the streams; in a real browser (chromium) the page draws the deployment and
plays a stream through the balancer over HTTP-FLV and HLS (its 302) and WebSocket-FLV (the
edge /api/route names), with no console errors; opened with the admin token in its fragment
(#admin=TOKEN) it drains and undrains an edge through the balancer's admin API."""

from __future__ import annotations

import json

import pytest
import trio

from balancer.server import Balancer
from common.config import BalancerConfig, EdgeConfig, build
from common.net.httpclient import fetch, open_request
from edge.server import Edge
from tests.browser import needs_chromium, open_page
from tests.conftest import (
    ffmpeg_publish,
    needs_ffmpeg,
    start_killable,
    start_origin,
    wait_for_stream,
)

EDGES = ("edge-a", "edge-b")
ADMIN_TOKEN = "admin-token-for-the-console-0123"


async def deployment(nursery, clip) -> tuple[str, dict[str, trio.CancelScope]]:
    """A balancer, an origin publishing live/console and two edges: the balancer's URL once
    both edges are in rotation and the stream is announced, and the scope that kills each
    edge."""
    balancer = Balancer(
        build(
            BalancerConfig,
            {
                "host": "127.0.0.1",
                "http_port": 0,
                "control_port": 0,
                "check_interval": 0.5,
                "admin_token": ADMIN_TOKEN,
            },
        )
    )
    http, control = await nursery.start(balancer.run)
    ctl = f"127.0.0.1:{control}"
    origin, o_addr = await start_origin(nursery, balancer=ctl, node_id="origin")
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{o_addr.rtmp_port}/live/console")
    await wait_for_stream(origin, "live", "console")
    kills = {}
    for name in EDGES:
        values = {"host": "127.0.0.1", "rtmp_port": 0, "http_port": 0, "balancer": ctl,
                  "node_id": name, "parents": [f"http://127.0.0.1:{o_addr.http_port}"]}  # fmt: skip
        _, kills[name] = await start_killable(nursery, Edge(build(EdgeConfig, values)))
    base = f"http://127.0.0.1:{http}"
    with trio.fail_after(15):
        while True:
            edges = json.loads((await fetch("GET", f"{base}/api/edges")).body)["edges"]
            streams = json.loads((await fetch("GET", f"{base}/api/streams")).body)["streams"]
            if len(edges) == 2 and all(e["in_rotation"] for e in edges) and streams:
                return base, kills
            await trio.sleep(0.2)


@needs_ffmpeg
async def test_the_feed_shows_the_deployment(nursery, clip) -> None:
    base, _ = await deployment(nursery, clip)
    page = await fetch("GET", f"{base}/")
    assert page.status == 200 and b"/static/console.js" in page.body
    assert (await fetch("GET", f"{base}/static/balancer.js")).status == 200
    resp = await open_request("GET", f"{base}/api/events")
    assert resp.headers["content-type"] == "text/event-stream"
    buffer = b""
    with trio.fail_after(5):
        async for data in resp.chunks():
            buffer += data
            if b"\ndata: " in buffer and buffer.endswith(b"\n\n"):
                break
    resp.close()
    snap = json.loads(buffer.split(b"data: ", 1)[1])
    assert [e["id"] for e in snap["edges"]] == list(EDGES)
    assert all(e["in_rotation"] and e["http"].startswith("http://") for e in snap["edges"])
    assert [o["id"] for o in snap["origins"]] == ["origin"]
    assert [s["stream"] for s in snap["streams"]] == ["live/console"]


@pytest.mark.slow
@needs_ffmpeg
@needs_chromium
async def test_the_console_draws_the_deployment_and_plays_through_the_balancer(
    nursery, clip, tmp_path
) -> None:
    base, kills = await deployment(nursery, clip)
    async with open_page(tmp_path) as page:
        for via in ("ws", "hls", "flv"):
            width, status = await page.play(base, "live/console", via)
            assert width == 320, via
            if via == "ws":  # browsers do not follow a 302 on a WebSocket: the edge it names
                assert status.startswith("WebSocket-FLV ws://") and base[7:] not in status
            else:
                assert f"{base}/live/console" in status
        for edge in EDGES:
            assert await page.wait_for(
                f"document.querySelector('#graph g[data-node=\"{edge}\"]') !== null"
            )
            state = f"document.querySelector('#edges tr[data-edge=\"{edge}\"] td:nth-child(2)')"
            assert await page.evaluate(f"{state}.textContent") == "up"
        assert await page.wait_for(  # the heartbeats carry the page's own viewer
            "document.querySelector('#streams td:nth-child(4)').textContent.startsWith('1 (')"
        )
        assert await page.evaluate("document.title") == "livecdn console"
        assert await page.evaluate("document.querySelectorAll('#edges button').length") == 0
        assert page.errors == []

        # the class exercise: kill the edge that has the viewer; it leaves the rotation on
        # the page, and the player, routed anew, plays on from the other edge
        viewers = "document.querySelector('#edges tr[data-edge=\"{}\"] td:nth-child(3)')"
        (watched,) = [
            e for e in EDGES if await page.evaluate(f"{viewers.format(e)}.textContent") == "1"
        ]
        (other,) = set(EDGES) - {watched}
        kills[watched].cancel()
        state = f"document.querySelector('#edges tr[data-edge=\"{watched}\"] td:nth-child(2)')"
        await page.wait_for(f"{state}.textContent.startsWith('out of rotation')", timeout=5)
        await page.wait_for(f"{viewers.format(other)}.textContent === '1'", timeout=20)
        assert await page.playback(timeout=20) == 320

        await drain_and_undrain(page, base, other)


async def drain_and_undrain(page, base: str, edge: str) -> None:
    """The page opened with a wrong admin token shows the balancer's 403; with the right one it
    drains `edge` (the balancer's API then says so) and undrains it."""
    row = f'#edges tr[data-edge="{edge}"]'
    button = f"document.querySelector('{row} button[data-action=\"{{}}\"]')"
    status = "document.getElementById('action-status').textContent"

    async def click(action: str) -> None:
        await page.wait_for(f"{button.format(action)}?.disabled === false")
        await page.evaluate(f"{button.format(action)}.click()")

    async def draining() -> bool:
        edges = json.loads((await fetch("GET", f"{base}/api/edges")).body)["edges"]
        (entry,) = [e for e in edges if e["id"] == edge]
        return entry["draining"]

    await page.navigate(f"{base}/#admin=wrong-token-of-a-stranger-0123")
    page.errors.clear()
    await click("drain")
    await page.wait_for(f"{status} === 'drain {edge}: 403: wrong admin token'")
    refused = f"/api/edges/{edge}/drain"
    assert len(page.errors) == 1 and "403" in page.errors[0] and refused in page.errors[0]
    page.errors.clear()  # Chrome logs a fetch answered 4xx as a console error: that one only
    assert not await draining()

    await page.navigate("about:blank")  # a fragment alone would not load the page anew
    await page.navigate(f"{base}/#admin={ADMIN_TOKEN}")
    await click("drain")
    await page.wait_for(f"{status} === 'drain {edge}: done'")
    assert await draining()
    await click("undrain")  # enabled once the feed shows the edge draining
    await page.wait_for(f"{status} === 'undrain {edge}: done'")
    assert not await draining()
    assert page.errors == []

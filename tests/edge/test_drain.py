"""An edge's drain (what SIGTERM runs, through the controls its serve() hands out): the
balancer is told, new plays are refused with a retry, the viewers keep playing until they
leave or drain_timeout, then those left get a clean end of their stream."""

from __future__ import annotations

import logging

import pytest
import trio

from balancer.server import Balancer
from common.config import BalancerConfig, EdgeConfig, build
from common.net.httpclient import fetch
from common.net.rtmpclient import RtmpClient, RtmpClientError, ends_play
from common.serve.lifecycle import Serving
from edge.server import serve
from tests.conftest import start_origin
from tests.edge.test_edge_real import FlvViewer
from tests.media import publish_synthetic

HANG = 15  # seconds: only a guard against hangs


async def start_cluster(nursery, drain_timeout: float):
    """A balancer, an origin publishing live/d, and an edge (started by its serve()) that
    reports to the balancer; the edge's Serving and the balancer."""
    b = Balancer(build(BalancerConfig, {"host": "127.0.0.1", "http_port": 0, "control_port": 0}))
    _, control = await nursery.start(b.run)
    _, oaddr = await start_origin(nursery)
    await publish_synthetic(nursery, f"rtmp://127.0.0.1:{oaddr.rtmp_port}/live/d")
    config = build(
        EdgeConfig,
        {
            "host": "127.0.0.1",
            "rtmp_port": 0,
            "http_port": 0,
            "node_id": "e1",
            "parents": [f"rtmp://127.0.0.1:{oaddr.rtmp_port}"],
            "balancer": f"127.0.0.1:{control}",
            "drain_timeout": drain_timeout,
        },
    )
    serving: Serving = await nursery.start(serve, config)
    with trio.fail_after(HANG):
        while "e1" not in b.edges:
            await trio.sleep(0.05)
    return serving, b


async def play_both(nursery, serving: Serving) -> tuple[FlvViewer, RtmpClient]:
    """An HTTP-FLV and an RTMP viewer of live/d at the edge, both playing."""
    port = serving.address
    viewer = FlvViewer(f"http://127.0.0.1:{port.http_port}/live/d.flv")
    await nursery.start(viewer.run)
    rtmp = await RtmpClient.connect(f"rtmp://127.0.0.1:{port.rtmp_port}/live/d")
    await rtmp.play()
    await viewer.wait_frames(5)
    return viewer, rtmp


def start_drain(nursery, serving: Serving) -> trio.Event:
    """Start the edge's drain; the event is set when it is over."""
    drained = trio.Event()

    async def drain() -> None:
        await serving.controls.drain()
        drained.set()

    nursery.start_soon(drain)
    return drained


async def test_a_draining_edge_tells_the_balancer_and_refuses_new_plays(nursery, caplog):
    serving, b = await start_cluster(nursery, drain_timeout=3600)
    port = serving.address
    viewer, _ = await play_both(nursery, serving)
    http = f"http://127.0.0.1:{port.http_port}"
    assert (await fetch("GET", f"{http}/readyz")).status == 200
    caplog.set_level(logging.INFO, logger="livecdn")
    drained = start_drain(nursery, serving)
    with trio.fail_after(HANG):
        while not b.edges["e1"].beat.draining:
            await trio.sleep(0.05)
    route = await fetch(
        "GET", f"http://127.0.0.1:{b.address[0]}/api/route?app=live&name=d&proto=flv"
    )
    assert route.status == 503, route  # the only edge is out of rotation
    refused = await fetch("GET", f"http://127.0.0.1:{port.http_port}/live/d.flv")
    assert refused.status == 503 and refused.headers["retry-after"] == "1"
    late = await RtmpClient.connect(f"rtmp://127.0.0.1:{port.rtmp_port}/live/d")
    with pytest.raises(RtmpClientError) as err:
        await late.play()
    assert err.value.code == "NetStream.Play.Failed"
    late.close()
    await viewer.wait_frames(len(viewer.video) + 5)  # those already here keep playing
    assert not drained.is_set() and viewer.error is None and not viewer.ended_cleanly
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("draining")]
    assert lines[0] == (
        "draining: 2 viewers, new plays refused; closing those left in 3600 s (drain_timeout)"
    )
    metrics = (await fetch("GET", f"http://127.0.0.1:{port.http_port}/metrics")).body.decode()
    assert "livecdn_draining 1.0" in metrics
    # not ready (no new viewers), yet alive: a liveness probe must not kill a draining edge
    ready = await fetch("GET", f"{http}/readyz")
    assert ready.status == 503 and b'"draining"' in ready.body
    assert (await fetch("GET", f"{http}/healthz")).status == 200
    balancer_ready = await fetch("GET", f"http://127.0.0.1:{b.address[0]}/readyz")
    assert balancer_ready.status == 200


async def test_after_drain_timeout_the_viewers_left_get_a_clean_end(nursery, caplog):
    serving, _ = await start_cluster(nursery, drain_timeout=0)
    viewer, rtmp = await play_both(nursery, serving)
    caplog.set_level(logging.INFO, logger="livecdn")
    events = []
    with trio.fail_after(HANG):
        await start_drain(nursery, serving).wait()
        while not viewer.ended_cleanly:  # the end of the chunked body
            await trio.sleep(0.05)
        while not any(ends_play(e) for e in events):
            events += await rtmp.next_events()
    codes = [getattr(e, "code", "") for e in events]
    assert "NetStream.Play.UnpublishNotify" in codes and viewer.error is None
    assert "draining: closing 1 streams' 2 viewers (HTTP-FLV and RTMP)" in caplog.messages


async def test_a_drain_ends_when_the_last_viewer_leaves(nursery):
    serving, _ = await start_cluster(nursery, drain_timeout=3600)
    viewer = FlvViewer(f"http://127.0.0.1:{serving.address.http_port}/live/d.flv")
    async with trio.open_nursery() as watching:
        await watching.start(viewer.run)
        await viewer.wait_frames(3)
        drained = start_drain(nursery, serving)
        await viewer.wait_frames(len(viewer.video) + 3)
        assert not drained.is_set()
        watching.cancel_scope.cancel()  # the viewer leaves
    with trio.fail_after(HANG):
        await drained.wait()

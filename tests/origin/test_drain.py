"""An origin's drain (what SIGTERM runs): every stream ends cleanly for its viewers, the edges
pulling it and its recording; the publisher is closed; new plays and publishes are refused."""

from __future__ import annotations

import os

import pytest
import trio

from common.net.httpclient import fetch
from common.net.rtmpclient import RtmpClient, RtmpClientError
from tests.conftest import start_edge, start_origin, wait_for_stream
from tests.edge.test_edge_real import FlvViewer
from tests.media import publish_synthetic

HANG = 15  # seconds: only a guard against hangs


async def test_a_draining_origin_ends_its_streams_cleanly(nursery, tmp_path):
    origin, addr = await start_origin(
        nursery, record_dir=str(tmp_path), record_apps=["live"], publisher_grace=5
    )
    rtmp = f"rtmp://127.0.0.1:{addr.rtmp_port}/live/o"
    publisher = await publish_synthetic(nursery, rtmp)
    await wait_for_stream(origin, "live", "o", keyframes=2)
    _, eaddr = await start_edge(nursery, [f"rtmp://127.0.0.1:{addr.rtmp_port}"])
    here = FlvViewer(f"http://127.0.0.1:{addr.http_port}/live/o.flv")
    there = FlvViewer(f"http://127.0.0.1:{eaddr.http_port}/live/o.flv")
    for viewer in (here, there):
        await nursery.start(viewer.run)
        await viewer.wait_frames(3)

    with trio.fail_after(HANG):
        await origin.controls.drain()
        while not (here.ended_cleanly and there.ended_cleanly):  # edges see the end too
            await trio.sleep(0.05)
    assert publisher.conn.closed  # closed though the publisher_grace would have kept it
    assert not origin.registry.get("live", "o") and not origin.recorder.active
    names = os.listdir(tmp_path / "live" / "o")
    assert len(names) == 1 and names[0].endswith(".flv"), names  # finished, not a .part

    refused = await fetch("GET", f"http://127.0.0.1:{addr.http_port}/live/o.flv")
    assert refused.status == 503 and refused.headers["retry-after"] == "1"
    late = await RtmpClient.connect(rtmp)
    with pytest.raises(RtmpClientError, match="the origin is stopping"):
        await late.publish()
    late.close()

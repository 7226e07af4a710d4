"""An edge's read-only API refuses methods that ask for a change: a DELETE (the origin's kick)
sent to an edge must not be answered 200 with the stream's listing, as if it had done
something."""

from __future__ import annotations

import json

import trio

from common.net.httpclient import fetch, open_request
from common.net.rtmpclient import RtmpClient
from tests.conftest import start_edge, start_origin
from tests.media import synthetic_publish


async def test_an_edge_refuses_delete_and_post_on_its_streams_api(nursery):
    _, origin = await start_origin(nursery)
    publisher = await RtmpClient.connect(f"rtmp://127.0.0.1:{origin.rtmp_port}/live/k")
    await publisher.publish()
    nursery.start_soon(synthetic_publish, publisher)
    edge, address = await start_edge(nursery, [f"rtmp://127.0.0.1:{origin.rtmp_port}"])
    base = f"http://127.0.0.1:{address.http_port}"
    viewer = await open_request("GET", f"{base}/live/k.flv")
    assert viewer.status == 200
    api = f"{base}/api/streams"
    with trio.fail_after(10):
        while (await fetch("GET", f"{api}/live/k")).status != 200:
            await trio.sleep(0.05)
    for method, url in (("DELETE", f"{api}/live/k?ban=60"), ("DELETE", api), ("POST", api),
                        ("POST", f"{base}/healthz"), ("DELETE", f"{base}/metrics")):  # fmt: skip
        reply = await fetch(method, url)
        assert reply.status == 405, (method, url, reply.status)
        assert reply.headers["allow"] == "GET, HEAD"
    info = json.loads((await fetch("GET", f"{api}/live/k")).body)
    assert info["viewers"]["total"] == 1  # the viewer plays on
    viewer.close()

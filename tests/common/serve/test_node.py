"""The play node's parts: a PlayNode serves whatever NodeRole it is given (streams, pacing,
routes), refuses publishing without an Ingest and hands a publisher's messages to one."""

from __future__ import annotations

import pytest
import trio

from common.config import ServeConfig, build
from common.net.http import Request, Response, StreamingResponse
from common.net.httpclient import fetch
from common.net.rtmpclient import RtmpClient, RtmpClientError
from common.proto.rtmp import messages as m
from common.proto.rtmp import session as rs
from common.proto.shaping import Pacer
from common.proto.streamkey import StreamKeyError
from common.serve.fanouts import Fanouts
from common.serve.hlsviewers import HlsViewers
from common.serve.node import NodeAddress, PlayNode
from common.serve.play import Subscription
from common.serve.rtmpserver import PublishRefused, RtmpConnection

CONFIG = build(ServeConfig, {"host": "127.0.0.1", "rtmp_port": 0, "http_port": 0})


class Role:
    """A NodeRole with no streams: 'live/bad' fails the key check a part makes again."""

    async def subscribe(self, app: str, name: str) -> Subscription | None:
        if name == "bad":
            raise StreamKeyError("checked again and refused")
        return None

    def pace_for(self, app: str, name: str, query: dict[str, str]) -> Pacer | None:
        if query.get("class") == "forged":
            raise PermissionError("bad class token")
        return None

    async def route_api(self, req: Request) -> Response | StreamingResponse | None:
        return Response.text(200, "the role's own") if req.path == "/own" else None


class Recorder:
    """An Ingest that accepts every publish and records what reaches it."""

    def __init__(self, log: list[object]) -> None:
        self.log = log

    async def publish(self, rtmp: RtmpConnection, event: rs.Publish) -> PublishRefused | None:
        rtmp.session.accept_publish(event.stream_id, event.name)
        self.log.append(("publish", event.name))
        return None

    def media(self, event: rs.Media | rs.Metadata) -> None:
        self.log.append(("media", event.payload))

    def delete(self, stream_id: int) -> bool:
        return True

    def close(self, bytes_in: int) -> None:
        self.log.append(("close", bytes_in > 0))


async def start(nursery: trio.Nursery, node: PlayNode) -> NodeAddress:
    return await nursery.start(node.run)


def refused(body: bytes, reason: str) -> str:
    return f'livecdn_connections_refused_total{{reason="{reason}"}} 1.0' in body.decode()


async def test_routes_go_to_the_role(nursery, caplog):
    node = PlayNode(CONFIG, "test", Role(), hls_viewers=HlsViewers())
    addr = await start(nursery, node)
    base = f"http://127.0.0.1:{addr.http_port}"
    reply = await fetch("GET", base + "/healthz")
    status, body = reply.status, reply.body
    assert status == 200 and b'"node": "test"' in body
    own = await fetch("GET", base + "/own")
    assert (own.status, own.body) == (200, b"the role's own\n")
    assert (await fetch("GET", base + "/elsewhere")).status == 404
    assert (await fetch("GET", base + "/live/none.flv")).status == 404
    assert (await fetch("GET", base + "/live/bad.flv")).status == 400
    assert (await fetch("GET", base + "/live/a.flv?class=forged")).status == 403
    metrics = (await fetch("GET", base + "/metrics")).body
    for reason in ("not_found", "bad_name", "bad_class_token"):
        assert refused(metrics, reason), reason
    logged = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("flv play of live/a by 127.0.0.1:") and m.endswith("refused: bad class token")
        for m in logged
    ), logged


async def test_without_an_ingest_publishing_is_refused(nursery):
    node = PlayNode(CONFIG, "test", Role(), hls_viewers=HlsViewers())
    addr = await start(nursery, node)
    client = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/a")
    with pytest.raises(RtmpClientError) as err:
        await client.publish()
    assert err.value.code == "NetStream.Publish.Denied"
    metrics = (await fetch("GET", f"http://127.0.0.1:{addr.http_port}/metrics")).body
    assert refused(metrics, "publish_not_allowed")


async def test_a_publisher_reaches_the_ingest_of_its_connection(nursery):
    log: list[object] = []
    node = PlayNode(CONFIG, "test", Role(), hls_viewers=HlsViewers(), ingest=lambda: Recorder(log))
    addr = await start(nursery, node)
    client = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/a")
    await client.publish()
    await client.send(m.VIDEO, 0, b"\x17\x01frame")
    client.conn.close()
    with trio.fail_after(5):
        while ("close", True) not in log:
            await trio.sleep(0.01)
    assert log == [("publish", "a"), ("media", b"\x17\x01frame"), ("close", True)]


def test_fanouts_keep_the_drops_of_forgotten_streams():
    fanouts = Fanouts(CONFIG)
    stream = fanouts.new_stream("live", "a")
    fanout = fanouts.open(stream)
    assert fanouts.get(stream) is fanout and fanouts[stream] is fanout
    assert fanouts.viewers() == {("flv",): 0, ("ws",): 0, ("rtmp",): 0}
    stream.stats.dropped_frames = 3
    fanouts.drop(stream)
    assert fanouts.get(stream) is None and fanouts.dropped_frames() == 3
    fanouts.drop(stream)  # twice: counted once
    assert fanouts.dropped_frames() == 3

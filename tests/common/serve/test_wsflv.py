"""FLV over WebSocket (ws://HOST/APP/NAME.flv): the same fan-out as HTTP-FLV, in binary
messages a real WebSocket client (wsproto) reads and PyAV decodes; pings answered, a bad
handshake refused, a client's close ends only its play."""

from __future__ import annotations

import io

import av
import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
)

from common.net.httpclient import fetch
from tests.conftest import ffmpeg_publish, needs_ffmpeg, start_origin, wait_for_stream
from tests.metrics import metric, scrape

pytestmark = [pytest.mark.slow, needs_ffmpeg]


class Client:
    """A WebSocket client on a real socket."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list = []

    @classmethod
    async def open(cls, port: int, target: str) -> Client:
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        await client.send(Request(host=f"127.0.0.1:{port}", target=target))
        return client

    async def send(self, event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def next_event(self):
        while not self.events:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)
            self.events.extend(self.ws.events())
        return self.events.pop(0)


async def live_origin(nursery, clip):
    origin, address = await start_origin(nursery)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{address.rtmp_port}/live/w")
    await wait_for_stream(origin, "live", "w")
    return origin, address


async def test_a_websocket_viewer_gets_decodable_flv(nursery, clip) -> None:
    origin, address = await live_origin(nursery, clip)
    client = await Client.open(address.http_port, "/live/w.flv")
    with trio.fail_after(10):
        assert isinstance(await client.next_event(), AcceptConnection)
        data = bytearray()
        while len(data) < 150_000:
            event = await client.next_event()
            assert isinstance(event, BytesMessage)
            data += event.data
        base = f"http://127.0.0.1:{address.http_port}"
        assert metric(await scrape(base), "livecdn_viewers", protocol="ws") == 1
        await client.send(Ping(b"hi"))
        while not isinstance(event := await client.next_event(), Pong):
            assert isinstance(event, BytesMessage)
        assert event.payload == b"hi"
        await client.send(CloseConnection(code=1000))
        while not isinstance(await client.next_event(), CloseConnection):
            pass
    assert data[:3] == b"FLV" and data[4] == 5  # audio and video flags
    container = av.open(io.BytesIO(bytes(data)), format="flv")
    video = container.streams.video[0]
    frames = [f for p in container.demux(video) for f in p.decode()]
    assert len(frames) >= 10 and frames[0].width == 320
    with trio.fail_after(5):
        while metric(await scrape(base), "livecdn_viewers", protocol="ws") != 0:
            await trio.sleep(0.05)


async def test_a_bad_handshake_is_refused_and_others_play_on(nursery, clip) -> None:
    _, address = await live_origin(nursery, clip)
    url = f"http://127.0.0.1:{address.http_port}/live/w.flv"
    upgrade = [("upgrade", "websocket"), ("connection", "Upgrade")]
    got = await fetch("GET", url, headers=[*upgrade, ("sec-websocket-version", "13")])
    assert got.status == 400 and b"Sec-WebSocket-Key" in got.body
    got = await fetch("GET", url, headers=[*upgrade, ("sec-websocket-version", "8"),
                                           ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")])  # fmt: skip
    assert got.status == 400
    client = await Client.open(address.http_port, "/live/nothere.flv")
    with trio.fail_after(5):
        assert isinstance(await client.next_event(), RejectConnection)  # a 404


async def test_a_client_breaking_the_protocol_ends_only_its_play(nursery, clip) -> None:
    _, address = await live_origin(nursery, clip)
    bad = await Client.open(address.http_port, "/live/w.flv")
    good = await Client.open(address.http_port, "/live/w.flv")
    with trio.fail_after(10):
        assert isinstance(await bad.next_event(), AcceptConnection)
        assert isinstance(await good.next_event(), AcceptConnection)
        await bad.stream.send_all(b"\x82\x05hello")  # an unmasked client frame
        while await bad.stream.receive_some(65536):
            pass  # the server closes it
        got = 0
        while got < 50_000:
            event = await good.next_event()
            assert isinstance(event, BytesMessage)
            got += len(event.data)


async def test_a_page_of_an_origin_not_in_cors_origins_gets_no_websocket(nursery, clip) -> None:
    origin, address = await start_origin(nursery, cors_origins=["https://page.example"])
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{address.rtmp_port}/live/w")
    await wait_for_stream(origin, "live", "w")
    for page, accepted in (("https://evil.example", False), ("https://page.example", True)):
        client = Client(await trio.open_tcp_stream("127.0.0.1", address.http_port))
        await client.send(Request(host="x", target="/live/w.flv",
                                  extra_headers=[(b"origin", page.encode())]))  # fmt: skip
        with trio.fail_after(5):
            event = await client.next_event()
        assert isinstance(event, AcceptConnection if accepted else RejectConnection), page
        if not accepted:
            assert event.status_code == 403
        await client.stream.aclose()

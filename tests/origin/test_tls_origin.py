"""An origin with tls_cert/tls_key: RTMPS publish and play, HTTPS-FLV and the API over TLS,
beside the plain listeners (real sockets, certificates made at test time)."""

from __future__ import annotations

import logging

import pytest
import trio
from wsproto.events import AcceptConnection, BytesMessage, Request

from common.net.httpclient import fetch, open_request
from common.net.rtmpclient import RtmpClient, RtmpClientError
from common.net.tls import TlsError, client_context
from common.proto import flv
from common.proto.flv import FlvParser
from common.proto.rtmp import session as rs
from tests.common.serve.test_wsflv import Client
from tests.conftest import start_origin, wait_for_stream
from tests.media import publish_synthetic
from tests.tlscerts import Certs


async def start_tls_origin(nursery: trio.Nursery, certs: Certs, **overrides: object):
    """An origin with TLS listeners on free ports."""
    return await start_origin(
        nursery, tls_cert=certs.cert, tls_key=certs.key, rtmps_port=0, https_port=0, **overrides
    )


async def test_rtmps_publish_and_play_and_https_flv(
    nursery: trio.Nursery, tls_certs: Certs, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, "livecdn.node")
    origin, addr = await start_tls_origin(nursery, tls_certs)
    assert addr.rtmps_port and addr.https_port
    up = next(r.message for r in caplog.records if r.message.startswith("origin up:"))
    assert f"rtmps://127.0.0.1:{addr.rtmps_port}" in up
    assert f"https://127.0.0.1:{addr.https_port}" in up
    trust = client_context(tls_certs.ca)

    rtmps = f"rtmps://127.0.0.1:{addr.rtmps_port}/live/tls"
    await publish_synthetic(nursery, rtmps, trust)
    await wait_for_stream(origin, "live", "tls")

    player = await RtmpClient.connect(rtmps, tls=trust)
    await player.play()
    with trio.fail_after(10):
        media: list[rs.Media] = []
        while len(media) < 30:
            media += [e for e in await player.next_events() if isinstance(e, rs.Media)]
    assert any(e.type_id == 9 and flv.video_info(e.payload).keyframe for e in media)
    player.close()

    resp = await open_request("GET", f"https://127.0.0.1:{addr.https_port}/live/tls.flv", tls=trust)
    assert resp.status == 200
    parser, tags = FlvParser(), []
    with trio.fail_after(10):
        async for data in resp.chunks():
            tags += parser.feed(data)
            if sum(t.tag_type == 9 for t in tags) >= 30:
                break
    resp.close()
    assert any(t.tag_type == 9 and flv.video_info(t.body).keyframe for t in tags)

    health = await fetch("GET", f"https://localhost:{addr.https_port}/healthz", tls=trust)
    assert health.status == 200 and b'"origin"' in health.body
    plain = await fetch("GET", f"http://127.0.0.1:{addr.http_port}/api/streams")
    assert plain.status == 200 and b'"tls"' in plain.body


async def test_an_untrusted_origin_is_refused_by_our_clients(
    nursery: trio.Nursery, tls_certs: Certs
):
    _, addr = await start_tls_origin(nursery, tls_certs)
    stranger = client_context(tls_certs.other_ca)
    with pytest.raises(TlsError, match="certificate verify failed"):
        await RtmpClient.connect(f"rtmps://127.0.0.1:{addr.rtmps_port}/live/x", tls=stranger)
    with pytest.raises(TlsError, match="certificate verify failed"):
        await fetch("GET", f"https://127.0.0.1:{addr.https_port}/healthz", tls=stranger)


async def test_no_tls_listeners_without_a_certificate(nursery: trio.Nursery):
    _, addr = await start_origin(nursery)
    assert addr.rtmps_port is None and addr.https_port is None


async def test_a_plain_publisher_on_the_rtmps_port_does_not_hurt_the_origin(
    nursery: trio.Nursery, tls_certs: Certs
):
    origin, addr = await start_tls_origin(nursery, tls_certs, handshake_timeout=1.0)
    with pytest.raises(RtmpClientError, match="closed by the server"):
        await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmps_port}/live/x", timeout=5)
    await publish_synthetic(nursery, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/plain")
    await wait_for_stream(origin, "live", "plain")


async def test_wss_viewer_and_a_clean_rtmps_end(nursery: trio.Nursery, tls_certs: Certs):
    origin, addr = await start_tls_origin(nursery, tls_certs, publisher_grace=0)
    trust = client_context(tls_certs.ca)
    pub = await publish_synthetic(nursery, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/w", None)
    await wait_for_stream(origin, "live", "w")

    tcp = await trio.open_tcp_stream("127.0.0.1", addr.https_port)
    ws = Client(trio.SSLStream(tcp, trust, server_hostname="localhost"))
    await ws.send(Request(host=f"localhost:{addr.https_port}", target="/live/w.flv"))
    player = await RtmpClient.connect(f"rtmps://localhost:{addr.rtmps_port}/live/w", tls=trust)
    await player.play()
    with trio.fail_after(10):
        assert isinstance(await ws.next_event(), AcceptConnection)
        data = bytearray()
        while len(data) < 20_000:
            event = await ws.next_event()
            assert isinstance(event, BytesMessage)
            data += event.data
    assert data[:3] == b"FLV"

    pub.close()  # the publisher leaves: the RTMPS player gets the end, then the close
    events: list[rs.Event] = []
    with trio.fail_after(10), pytest.raises(RtmpClientError, match="closed by the server"):
        while True:
            events += await player.next_events()
    assert any(isinstance(e, rs.StreamEOF) for e in events)

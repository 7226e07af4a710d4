"""An edge's HLS viewer on one keep-alive connection: its cached requests are answered by
the node's keep-alive hub, and still counted (viewers, cache hits, bytes)."""

from __future__ import annotations

import os

import pytest
import trio

from common.net.conn import accept_loop, listen_socket
from common.net.http import HttpLimits, Request, Response, serve_http
from tests.conftest import needs_ffmpeg, start_edge
from tests.edge.test_edge_hls_package import fetch_playlist, packaging_edge, published
from tests.metrics import metric, scrape

PLAYLIST = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nk-1-0.ts\n"
SEGMENT = b"\x47" + os.urandom(400 * 1024)


async def parent(task_status=trio.TASK_STATUS_IGNORED) -> None:
    """A parent with one playlist and one segment, cacheable for a minute."""

    async def handler(req: Request) -> Response:
        body = {"/live/k.m3u8": PLAYLIST, "/live/k-1-0.ts": SEGMENT}.get(req.path)
        if body is None:
            return Response.text(404, "no")
        return Response(200, body, "application/octet-stream", [("cache-control", "max-age=60")])

    sock = listen_socket("127.0.0.1", 0)
    task_status.started(sock.getsockname()[1])
    await accept_loop(sock, lambda c: serve_http(c, handler, HttpLimits()), max_connections=10)


async def read_response(sock: trio.socket.SocketType, buf: bytearray) -> tuple[bytes, bytes]:
    while b"\r\n\r\n" not in buf:
        data = await sock.recv(65536)
        assert data
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(buf) < end + length:
        data = await sock.recv(65536)
        assert data
        buf += data
    body = bytes(buf[end : end + length])
    del buf[: end + length]
    return head, body


async def test_a_keepalive_viewer_is_answered_by_the_hub_and_counted(nursery):
    port = await nursery.start(parent)
    edge, eaddr = await start_edge(nursery, [f"http://127.0.0.1:{port}"])
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", eaddr.http_port))
    buf = bytearray()
    for _ in range(5):
        for target, want in (("/live/k.m3u8", PLAYLIST), ("/live/k-1-0.ts", SEGMENT)):
            await sock.send(f"GET {target} HTTP/1.1\r\nHost: e\r\nUser-Agent: t\r\n\r\n".encode())
            head, body = await read_response(sock, buf)
            assert head.startswith(b"HTTP/1.1 200") and body == want
    hub = edge.node._hub
    assert hub is not None and hub.served >= 7  # all but the misses and the first request
    text = await scrape(eaddr.http_port)
    assert metric(text, "livecdn_viewers", protocol="hls") == 1
    assert metric(text, "livecdn_hls_cache_hits_total") >= 8
    assert metric(text, "livecdn_http_hub_answers_total") == hub.served
    assert metric(text, "livecdn_http_hub_rounds_total") >= 1
    assert metric(text, "livecdn_http_hub_parked") == 1  # the viewer's connection, idle
    sock.close()


@pytest.mark.slow
@needs_ffmpeg
async def test_a_packaging_edge_answers_a_keepalive_viewer_from_its_store(nursery, clip):
    addr = await published(nursery, clip, "p")
    edge, eaddr = await packaging_edge(nursery, addr)
    url = f"http://127.0.0.1:{eaddr.http_port}/live/p.m3u8"
    await fetch_playlist(url)  # packaging runs
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", eaddr.http_port))
    buf = bytearray()
    for _ in range(3):
        await sock.send(b"GET /live/p.m3u8 HTTP/1.1\r\nHost: e\r\nUser-Agent: t\r\n\r\n")
        head, body = await read_response(sock, buf)
        assert head.startswith(b"HTTP/1.1 200") and body.startswith(b"#EXTM3U")
        uri = [line for line in body.decode().splitlines() if line.endswith(".ts")][-1]
        await sock.send(f"GET /live/{uri} HTTP/1.1\r\nHost: e\r\nUser-Agent: t\r\n\r\n".encode())
        head, body = await read_response(sock, buf)
        assert head.startswith(b"HTTP/1.1 200") and body[:1] == b"\x47"
    hub = edge.node._hub
    assert hub is not None and hub.served >= 4  # all but the connection's first request
    text = await scrape(eaddr.http_port)
    assert metric(text, "livecdn_hls_requests_total", kind="segment") >= 3
    assert metric(text, "livecdn_viewers", protocol="hls") >= 1
    sock.close()

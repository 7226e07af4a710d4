"""The origin's HLS viewer on one keep-alive connection: its playlists and segments are the
store's shared responses, answered by the node's keep-alive hub through the origin's fast
lane, and still counted (requests, viewers); a play check keeps them on the full route."""

from __future__ import annotations

import pytest
import trio

from common.net.http import SharedResponse
from origin.hlsfast import MAX_TARGETS
from tests.conftest import ffmpeg_publish, needs_ffmpeg, start_origin, wait_for_stream
from tests.edge.test_edge_hls_keepalive import read_response
from tests.edge.test_edge_hls_package import fetch_playlist
from tests.metrics import metric, scrape
from tests.origin.test_hls_robust import decode

pytestmark = [pytest.mark.slow, needs_ffmpeg]


async def origin_publishing(nursery, clip, **settings):
    server, addr = await start_origin(nursery, hls_target_duration=1.0, **settings)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/k")
    await wait_for_stream(server, "live", "k")
    return server, addr


async def ask(sock, buf: bytearray, method: str, target: str) -> tuple[bytes, bytes]:
    await sock.send(f"{method} {target} HTTP/1.1\r\nHost: o\r\nUser-Agent: t\r\n\r\n".encode())
    if method == "HEAD":
        while b"\r\n\r\n" not in buf:
            buf += await sock.recv(65536)
        end = buf.index(b"\r\n\r\n") + 4
        head = bytes(buf[:end])
        del buf[:end]
        return head, b""
    return await read_response(sock, buf)


async def test_a_keepalive_viewer_is_answered_by_the_hub_and_counted(nursery, clip):
    server, addr = await origin_publishing(nursery, clip)
    await fetch_playlist(f"http://127.0.0.1:{addr.http_port}/live/k.m3u8")
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", addr.http_port))
    buf = bytearray()
    rounds = 4
    for _ in range(rounds):
        head, body = await ask(sock, buf, "GET", "/live/k.m3u8")
        assert head.startswith(b"HTTP/1.1 200") and body.startswith(b"#EXTM3U")
        assert b"application/vnd.apple.mpegurl" in head.lower()
        uri = [line for line in body.decode().splitlines() if line.endswith(".ts")][-1]
        head, data = await ask(sock, buf, "GET", f"/live/{uri}")
        assert head.startswith(b"HTTP/1.1 200") and b"immutable" in head
        assert decode(data)["first_key"]
        seg = server.hls.playlists[("live", "k")].segment(uri)
        assert seg is not None and data == seg.data
        head, _ = await ask(sock, buf, "HEAD", f"/live/{uri}")
        assert head.startswith(b"HTTP/1.1 200") and f"{len(data)}".encode() in head
    hub = server.node._hub
    assert hub is not None and hub.served >= 3 * rounds - 1  # all but the first request
    text = await scrape(addr.http_port)
    assert metric(text, "livecdn_hls_requests_total", kind="segment") >= 2 * rounds
    assert metric(text, "livecdn_hls_requests_total", kind="playlist") >= rounds
    assert metric(text, "livecdn_viewers", protocol="hls") == 2  # this one and fetch_playlist
    sock.close()


async def test_objects_not_ready_and_other_paths_take_the_full_route(nursery, clip):
    server, addr = await origin_publishing(nursery, clip)
    await fetch_playlist(f"http://127.0.0.1:{addr.http_port}/live/k.m3u8")
    fast = server.fast_http
    assert isinstance(fast("GET", "/live/k.m3u8", {}, "127.0.0.1:1"), SharedResponse)
    for method, target in [
        ("POST", "/live/k.m3u8"),
        ("GET", "/live/k.m3u8?token=x"),
        ("GET", "/live/%6B.m3u8"),
        ("GET", "/live/nope.m3u8"),  # no such playlist: the route waits, then 404
        ("GET", "/live/k-nosuch-1.ts"),
        ("GET", "/live/k.flv"),
        ("GET", "/live/k/recordings/x.m3u8"),
        ("GET", "/api/streams"),
        ("GET", "//live/k.m3u8"),
    ]:
        assert fast(method, target, {}, "127.0.0.1:1") is None, target
    for n in range(MAX_TARGETS + 10):  # parses kept, bounded
        fast("GET", f"/live/x{n}.m3u8", {}, "127.0.0.1:1")
    assert len(fast._targets) <= MAX_TARGETS


async def test_a_play_check_keeps_hls_on_the_full_route(nursery, clip):
    server, addr = await origin_publishing(nursery, clip, play_secret="s3cret-s3cret-s3cret")
    with trio.fail_after(15):
        while (
            not server.hls.playlists.get(("live", "k"))
            or not server.hls.playlists[("live", "k")].segments
        ):
            await trio.sleep(0.2)
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", addr.http_port))
    buf = bytearray()
    for _ in range(3):
        head, _ = await ask(sock, buf, "GET", "/live/k.m3u8")
        assert head.startswith(b"HTTP/1.1 403")
    hub = server.node._hub
    assert hub is None or hub.served == 0
    sock.close()

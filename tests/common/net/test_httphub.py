"""The keep-alive hub: idle connections' fast-lane requests answered by one task, the rest
given back to the connection's own task, over real sockets."""

from __future__ import annotations

import logging
import os
import socket

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.net.conn import Conn, accept_loop, listen_socket
from common.net.http import HttpLimits, Request, Response, SharedResponse, serve_http
from common.net.httphub import GATHER, KeepAliveHub
from common.proto.cors import CorsPolicy

SEGMENT = os.urandom(700 * 1024)  # several times the send buffer: the hub waits for room
PLAYLIST = b"#EXTM3U\n#EXTINF:2.0,\ns-1.ts\n"
HOST = "Host: x\r\n"


def shared_objects() -> dict[str, SharedResponse]:
    return {
        "/a.m3u8": SharedResponse(200, PLAYLIST, "application/vnd.apple.mpegurl"),
        "/s.ts": SharedResponse(200, SEGMENT, "video/mp2t"),
    }


class Server:
    """serve_http with a fast lane over `objects` and a running hub."""

    def __init__(self, limits: HttpLimits | None = None) -> None:
        self.objects = shared_objects()
        self.asked: list[str] = []
        self.handled: list[str] = []
        self.hub = KeepAliveHub()
        self.limits = limits or HttpLimits()
        self.port = 0
        self.ended = 0

    def fast(self, method: str, target: str, headers: dict[str, str], peer: str):
        self.asked.append(target)
        if target == "/boom":
            raise RuntimeError("fast lane bug")
        return self.objects.get(target) if method in ("GET", "HEAD") else None

    async def handler(self, req: Request) -> Response:
        self.handled.append(req.target)
        return Response(200, f"slow {req.method} {req.target}".encode())

    async def serve(self, conn: Conn) -> None:
        try:
            await serve_http(conn, self.handler, self.limits, CorsPolicy(), self.fast, self.hub)
        finally:
            self.ended += 1

    async def start(self, nursery: trio.Nursery) -> Server:
        sock = listen_socket("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        nursery.start_soon(self.hub.run)
        nursery.start_soon(lambda: accept_loop(sock, self.serve, max_connections=100))
        while not self.hub.running:
            await trio.sleep(0)
        return self


async def connect(port: int, rcvbuf: int | None = None) -> trio.socket.SocketType:
    sock = trio.socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    return sock


async def read_response(
    sock: trio.socket.SocketType, buf: bytearray, slow: bool = False, head_only: bool = False
) -> tuple[bytes, bytes]:
    """One response (head, body; `head_only`: to a HEAD); what follows stays in `buf`.
    `slow`: small reads."""
    while b"\r\n\r\n" not in buf:
        data = await sock.recv(65536)
        assert data, "closed before a response head"
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    if head_only:
        length = 0
    while len(buf) < end + length:
        data = await sock.recv(4096 if slow else 65536)
        assert data, "closed in a body"
        buf += data
        if slow:
            await trio.sleep(0)
    body = bytes(buf[end : end + length])
    del buf[: end + length]
    return head, body


async def get(sock: trio.socket.SocketType, buf: bytearray, target: str, slow=False):
    await sock.send(f"GET {target} HTTP/1.1\r\n{HOST}\r\n".encode())
    return await read_response(sock, buf, slow)


async def wait_parked(server: Server, n: int = 1) -> None:
    while server.hub.parked < n:
        await trio.sleep(0.001)


async def test_the_hub_answers_keepalive_requests_and_gives_the_rest_back(nursery):
    server = await Server().start(nursery)
    sock = await connect(server.port, rcvbuf=16 * 1024)
    buf = bytearray()
    for round_ in range(4):
        _, body = await get(sock, buf, "/a.m3u8")
        assert body == PLAYLIST
        await wait_parked(server)
        _, body = await get(sock, buf, "/s.ts", slow=True)  # sent on as the peer reads
        assert body == SEGMENT
        await wait_parked(server)
        head, body = await get(sock, buf, f"/other?r={round_}")  # declined: the task
        assert body == f"slow GET /other?r={round_}".encode() and head.startswith(b"HTTP/1.1 200")
    # the first request came to the task; every other fast one the hub answered
    assert server.hub.served == 7
    assert server.handled == [f"/other?r={r}" for r in range(4)]
    assert server.asked.count("/other?r=0") == 1  # a declined request is not asked again
    sock.close()


async def test_pipelined_requests_are_answered_in_order(nursery):
    server = await Server().start(nursery)
    sock = await connect(server.port)
    buf = bytearray()
    await get(sock, buf, "/a.m3u8")
    await wait_parked(server)
    await sock.send(
        (
            f"GET /s.ts HTTP/1.1\r\n{HOST}\r\n"
            f"GET /x HTTP/1.1\r\n{HOST}\r\n"
            f"HEAD /a.m3u8 HTTP/1.1\r\n{HOST}\r\n"
            f"GET /a.m3u8 HTTP/1.1\r\n{HOST}\r\n"
        ).encode()
    )
    assert (await read_response(sock, buf))[1] == SEGMENT
    assert (await read_response(sock, buf))[1] == b"slow GET /x"
    head = (await read_response(sock, buf, head_only=True))[0]
    assert f"content-length: {len(PLAYLIST)}".encode() in head
    assert (await read_response(sock, buf))[1] == PLAYLIST
    sock.close()


async def test_a_head_split_over_sends_and_a_close_are_honoured(nursery):
    server = await Server().start(nursery)
    sock = await connect(server.port)
    buf = bytearray()
    await get(sock, buf, "/a.m3u8")
    await wait_parked(server)
    await sock.send(b"GET /a.m3")  # a partial head: the task reads the rest
    await trio.sleep(0.01)
    await sock.send(f"u8 HTTP/1.1\r\n{HOST}\r\n".encode())
    assert (await read_response(sock, buf))[1] == PLAYLIST
    await wait_parked(server)
    await sock.send(f"GET /s.ts HTTP/1.1\r\n{HOST}Connection: close\r\n\r\n".encode())
    head, body = await read_response(sock, buf)
    assert body == SEGMENT and b"connection: close" in head
    assert await sock.recv(10) == b""  # closed after the answer
    sock.close()


async def test_bad_and_oversized_heads_get_their_status(nursery):
    server = await Server(HttpLimits(max_header_bytes=1024)).start(nursery)
    for bad, status in ((b"NOT HTTP AT ALL\r\n\r\n", b"400"), (b"GET /" + b"a" * 3000, b"431")):
        sock = await connect(server.port)
        buf = bytearray()
        await get(sock, buf, "/a.m3u8")
        await wait_parked(server)
        await sock.send(bad)
        head, _ = await read_response(sock, buf)
        assert head.startswith(b"HTTP/1.1 " + status)
        assert await sock.recv(10) == b""
        sock.close()


async def test_a_fast_lane_failure_is_logged_and_the_handler_answers(nursery, caplog):
    server = await Server().start(nursery)
    sock = await connect(server.port)
    buf = bytearray()
    await get(sock, buf, "/a.m3u8")
    await wait_parked(server)
    with caplog.at_level(logging.ERROR, "livecdn.http"):
        _, body = await get(sock, buf, "/boom")
    assert body == b"slow GET /boom"
    assert [r.message for r in caplog.records].count(
        f"fast lane failed for '/boom' from {sock.getsockname()[0]}:{sock.getsockname()[1]}"
    ) == 1
    sock.close()


async def test_the_peer_leaving_ends_its_task(nursery):
    server = await Server().start(nursery)
    socks = []
    for _ in range(5):
        sock = await connect(server.port)
        await get(sock, bytearray(), "/a.m3u8")
        socks.append(sock)
    await wait_parked(server, 5)
    for sock in socks:
        sock.close()
    while server.ended < 5:
        await trio.sleep(0.001)
    assert server.hub.parked == 0


async def test_a_busy_hub_gathers_requests_into_rounds_an_idle_one_answers_at_once(
    nursery, autojump_clock
):
    server = await Server().start(nursery)
    socks = [await connect(server.port) for _ in range(10)]
    bufs = [bytearray() for _ in socks]
    for sock, buf in zip(socks, bufs, strict=True):
        await get(sock, buf, "/a.m3u8")  # the first request of each goes to its task
    await wait_parked(server, len(socks))
    rounds, served = server.hub.rounds, server.hub.served
    for sock in socks:  # one request every 0.2 ms (virtual time)
        await sock.send(f"GET /a.m3u8 HTTP/1.1\r\n{HOST}\r\n".encode())
        await trio.sleep(GATHER / 25)
    for sock, buf in zip(socks, bufs, strict=True):
        assert (await read_response(sock, buf))[1] == PLAYLIST
    assert server.hub.served - served == 10
    # the first wakes the hub; the nine that come while it gathers are answered together
    assert server.hub.rounds - rounds <= 3
    await trio.sleep(1.0)
    for sock, buf in zip(socks[:2], bufs[:2], strict=True):  # an idle hub answers at once
        sent_at = trio.current_time()
        await sock.send(f"GET /a.m3u8 HTTP/1.1\r\n{HOST}\r\n".encode())
        assert (await read_response(sock, buf))[1] == PLAYLIST
        assert trio.current_time() == sent_at
        await trio.sleep(GATHER * 0.6)
    for sock in socks:
        sock.close()


async def test_an_idle_parked_connection_is_closed_quietly(nursery, autojump_clock, caplog):
    server = await Server(HttpLimits(keepalive_timeout=5.0)).start(nursery)
    sock = await connect(server.port)
    buf = bytearray()
    await get(sock, buf, "/a.m3u8")
    await wait_parked(server)
    with caplog.at_level(logging.INFO, "livecdn.http"):
        assert await sock.recv(10) == b""  # closed after 5 s, with no answer
    assert not caplog.records
    sock.close()


async def test_a_peer_not_taking_an_answer_is_closed_with_one_line(nursery, autojump_clock, caplog):
    server = await Server(HttpLimits(send_timeout=3.0)).start(nursery)
    sock = await connect(server.port, rcvbuf=4096)
    buf = bytearray()
    await get(sock, buf, "/a.m3u8")
    await wait_parked(server)
    with caplog.at_level(logging.INFO, "livecdn.http"):
        await sock.send(f"GET /s.ts HTTP/1.1\r\n{HOST}\r\n".encode())
        while server.ended < 1:  # the peer reads nothing
            await trio.sleep(1)
    lines = [r.message for r in caplog.records]
    assert len(lines) == 1 and "response not taken within 3 s" in lines[0]
    sock.close()


async def test_parked_connections_go_on_alone_when_the_hub_stops(nursery):
    server = Server()
    sock_l = listen_socket("127.0.0.1", 0)
    port = sock_l.getsockname()[1]
    nursery.start_soon(lambda: accept_loop(sock_l, server.serve, max_connections=100))
    async with trio.open_nursery() as hub_nursery:
        hub_nursery.start_soon(server.hub.run)
        while not server.hub.running:
            await trio.sleep(0)
        sock = await connect(port, rcvbuf=8192)
        buf = bytearray()
        await get(sock, buf, "/a.m3u8")
        await wait_parked(server)
        await sock.send(f"GET /s.ts HTTP/1.1\r\n{HOST}\r\n".encode())
        while server.hub.served < 1:
            await trio.sleep(0.001)
        hub_nursery.cancel_scope.cancel()  # mid-answer: the task sends the rest
    assert not server.hub.running
    assert (await read_response(sock, buf))[1] == SEGMENT
    assert (await get(sock, buf, "/a.m3u8"))[1] == PLAYLIST  # served the usual way
    assert server.hub.served == 1
    sock.close()


async def test_cancelling_a_parked_connection_unparks_it(nursery):
    server = Server()
    await server.start(nursery)
    sock = await connect(server.port)
    await get(sock, bytearray(), "/a.m3u8")
    await wait_parked(server)
    # the connections' nursery (accept_loop's) is cancelled with its node: simulate it by
    # serving one connection in a scope of our own
    listener = listen_socket("127.0.0.1", 0)
    client = await connect(listener.getsockname()[1])
    listener.setblocking(True)
    accepted, _ = listener.accept()
    listener.close()
    conn = Conn(accepted)
    with trio.CancelScope() as scope:

        async def cancel_when_parked() -> None:
            await wait_parked(server, 2)
            scope.cancel()

        nursery.start_soon(cancel_when_parked)
        await client.send(f"GET /a.m3u8 HTTP/1.1\r\n{HOST}\r\n".encode())
        await serve_http(conn, server.handler, server.limits, CorsPolicy(), server.fast, server.hub)
    assert scope.cancelled_caught
    assert server.hub.parked == 1  # the other one is still there
    conn.close()
    client.close()
    sock.close()


@pytest.mark.parametrize("rcvbuf", [None, 8192])
async def test_many_connections_interleaved(nursery, rcvbuf):
    server = await Server().start(nursery)

    async def viewer(i: int) -> None:
        sock = await connect(server.port, rcvbuf=rcvbuf)
        buf = bytearray()
        for r in range(6):
            target = ("/a.m3u8", "/s.ts", f"/v{i}")[(i + r) % 3]
            _, body = await get(sock, buf, target, slow=i % 2 == 0)
            want = {"/a.m3u8": PLAYLIST, "/s.ts": SEGMENT}.get(
                target, f"slow GET {target}".encode()
            )
            assert body == want
        sock.close()

    async with trio.open_nursery() as viewers:
        for i in range(40):
            viewers.start_soon(viewer, i)
    assert server.hub.served > 0


REQUESTS = [
    f"GET /a.m3u8 HTTP/1.1\r\n{HOST}\r\n",
    f"GET /s.ts HTTP/1.1\r\n{HOST}\r\n",
    f"GET /q?x=1 HTTP/1.1\r\n{HOST}\r\n",
    f"HEAD /s.ts HTTP/1.1\r\n{HOST}\r\n",
    f"GET /a.m3u8 HTTP/1.1\r\n{HOST}Origin: https://b.example\r\n\r\n",
]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    picks=st.lists(st.integers(0, len(REQUESTS) - 1), min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 400), max_size=5),
    wait_first=st.booleans(),
)
def test_requests_cut_anywhere_are_answered_in_order(picks, cuts, wait_first):
    """Whatever the split of the request bytes (pipelined or not), each request gets its
    own answer, in order."""
    wire = "".join(REQUESTS[i] for i in picks).encode()
    points = sorted({c % (len(wire) + 1) for c in cuts})

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await Server().start(nursery)
            sock = await connect(server.port)
            buf = bytearray()
            if wait_first:  # the connection parks first
                await get(sock, buf, "/a.m3u8")
                await wait_parked(server)
            last = 0
            for point in [*points, len(wire)]:
                if point > last:
                    await sock.send(wire[last:point])
                    await trio.sleep(0.001)
                    last = point
            for i in picks:
                head, body = await read_response(sock, buf, head_only=i == 3)
                if i in (0, 4):
                    assert body == PLAYLIST
                elif i == 1:
                    assert body == SEGMENT
                elif i == 2:
                    assert body == b"slow GET /q?x=1"
                else:
                    assert body == b"" and head.startswith(b"HTTP/1.1 200")
            sock.close()
            nursery.cancel_scope.cancel()

    trio.run(main)

"""The HTTP server's fast lane (shared responses, sent by writev or sendfile) and its one
deadline per connection, over real sockets."""

from __future__ import annotations

import os
import socket
from collections import OrderedDict
from functools import partial

import pytest
import trio

from common.net import sendfile
from common.net.conn import Conn, accept_loop, listen_socket
from common.net.http import HttpLimits, Request, Response, SharedResponse, serve_http
from common.proto.cors import CorsPolicy

SEGMENT = os.urandom(300 * 1024)  # larger than the send buffer: several sendfile calls
PLAYLIST = b"#EXTM3U\n#EXTINF:2.0,\ns-1.ts\n"


def fast_lane(shared: dict[str, SharedResponse], seen: list[str]):
    def fast(method: str, target: str, headers: dict[str, str], peer: str):
        seen.append(f"{method} {target}")
        return shared.get(target) if method in ("GET", "HEAD") else None

    return fast


async def start_server(nursery: trio.Nursery, fast, limits: HttpLimits | None = None) -> int:
    async def handler(req: Request) -> Response:
        return Response(200, f"slow {req.method} {req.path} {req.query}".encode())

    sock = listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]

    async def serve(conn: Conn) -> None:
        cors = CorsPolicy(("https://a.example",))
        await serve_http(conn, handler, limits or HttpLimits(), cors, fast)

    nursery.start_soon(lambda: accept_loop(sock, serve, max_connections=10))
    return port


async def read_response(stream: trio.SocketStream, buf: bytearray) -> tuple[bytes, bytes]:
    """One response (head, body) from `stream`; what follows stays in `buf`."""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        assert data, "connection closed before a response head"
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    if head.startswith(b"HEAD-NO-BODY"):
        length = 0
    while len(buf) < end + length:
        data = await stream.receive_some(65536)
        assert data, "connection closed in a body"
        buf += data
    body = bytes(buf[end : end + length])
    del buf[: end + length]
    return head, body


@pytest.mark.parametrize("with_sendfile", [True, False])
async def test_pipelined_keepalive_requests_get_their_own_answers_in_order(
    nursery, monkeypatch, with_sendfile
):
    if not with_sendfile:
        monkeypatch.setattr(sendfile, "_SUPPORTED", False)
    shared = {
        "/live/a.m3u8": SharedResponse(200, PLAYLIST, "application/vnd.apple.mpegurl"),
        "/live/a-s-1.ts": SharedResponse(
            200, SEGMENT, "video/mp2t", [("cache-control", "max-age=60")]
        ),
    }
    seen: list[str] = []
    port = await start_server(nursery, fast_lane(shared, seen))
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    host = "Host: x\r\n"
    await stream.send_all(
        (
            f"GET /live/a.m3u8 HTTP/1.1\r\n{host}\r\n"
            f"GET /live/a-s-1.ts HTTP/1.1\r\n{host}Origin: https://a.example\r\n\r\n"
            f"GET /other?x=1 HTTP/1.1\r\n{host}\r\n"
            f"GET /live/a-s-1.ts HTTP/1.1\r\n{host}\r\n"
        ).encode()
    )
    buf = bytearray()
    head, body = await read_response(stream, buf)
    assert head.startswith(b"HTTP/1.1 200") and body == PLAYLIST
    assert b"access-control-allow-origin" not in head and b"vary: origin" in head
    head, body = await read_response(stream, buf)
    assert body == SEGMENT
    assert b"access-control-allow-origin: https://a.example\r\n" in head
    assert b"cache-control: max-age=60\r\n" in head and b"connection: close" not in head
    head, body = await read_response(stream, buf)
    assert body == b"slow GET /other {'x': '1'}"  # the fast lane passed: the handler answered
    head, body = await read_response(stream, buf)
    assert body == SEGMENT
    assert seen == [
        "GET /live/a.m3u8",
        "GET /live/a-s-1.ts",
        "GET /other?x=1",
        "GET /live/a-s-1.ts",
    ]
    # a HEAD gets the head alone, and "Connection: close" closes after the answer
    await stream.send_all(
        f"HEAD /live/a-s-1.ts HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode()
    )
    rest = bytearray(buf)
    while data := await stream.receive_some(65536):
        rest += data
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"connection: close\r\n\r\n")
    assert f"content-length: {len(SEGMENT)}".encode() in rest
    await stream.aclose()


async def test_heads_are_built_once_per_variant():
    shared = SharedResponse(200, b"x", "text/plain")
    cors = (("access-control-allow-origin", "*"),)
    first = shared.head(cors, False)
    assert shared.head(cors, False) is first
    assert shared.head(cors, True) is not first and shared.head(cors, True).endswith(
        b"connection: close\r\n\r\n"
    )


async def test_an_idle_keepalive_connection_is_closed_quietly(nursery, autojump_clock):
    port = await start_server(nursery, None, HttpLimits(keepalive_timeout=5.0))
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = bytearray()
    _, body = await read_response(stream, buf)
    assert body == b"slow GET /a {}"
    assert await stream.receive_some(100) == b""  # closed after 5 s, with no answer


async def test_a_request_not_finished_in_time_gets_a_408(nursery, autojump_clock):
    port = await start_server(nursery, None, HttpLimits(header_timeout=3.0))
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET /a HTTP/1.1\r\nHost")
    buf = bytearray()
    head, _ = await read_response(stream, buf)
    assert head.startswith(b"HTTP/1.1 408")


async def test_send_file_sends_exact_bytes_over_a_real_socket():
    listener = listen_socket("127.0.0.1", 0)
    client = socket.create_connection(listener.getsockname())
    listener.setblocking(True)
    server, _ = listener.accept()
    listener.close()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    conn = Conn(server)
    body = os.urandom(2 * 1024 * 1024 + 17)
    owner = SharedResponse(200, body, "video/mp2t")
    memfile = owner.file()
    assert memfile is not None and memfile.size == len(body)
    got = bytearray()
    peer = trio.socket.from_stdlib_socket(client)

    async def receive() -> None:
        while len(got) < 5 + len(body):
            got.extend(await peer.recv(65536))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await sendfile.send_file(conn, b"head:", memfile)
    assert bytes(got) == b"head:" + body
    assert conn.bytes_out == 5 + len(body)
    conn.close()
    peer.close()


@pytest.mark.parametrize("same_head", [True, False])
async def test_a_head_kept_in_the_memory_file_goes_out_with_the_body(same_head):
    """The head a body's file was made with is sent from the file (one sendfile); another
    head goes first, then the body after the file's head."""
    listener = listen_socket("127.0.0.1", 0)
    client = socket.create_connection(listener.getsockname())
    listener.setblocking(True)
    server, _ = listener.accept()
    listener.close()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    conn = Conn(server)
    body = os.urandom(700 * 1024 + 3)
    owner = SharedResponse(200, body, "video/mp2t")
    kept = owner.head((), False)
    memfile = owner.file(kept)
    assert memfile is not None and memfile.start % sendfile.PAGE == 0  # whole pages
    assert memfile.start - memfile.head_at == len(kept)
    assert memfile.size == memfile.start + len(body)
    head = kept if same_head else owner.head((("access-control-allow-origin", "*"),), True)
    got = bytearray()
    peer = trio.socket.from_stdlib_socket(client)

    async def receive() -> None:
        while len(got) < len(head) + len(body):
            got.extend(await peer.recv(65536))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await sendfile.send_file(conn, head, memfile)
    assert bytes(got) == head + body
    assert conn.bytes_out == len(head) + len(body)
    conn.close()
    peer.close()


async def test_memory_files_are_bounded_the_oldest_given_up(monkeypatch):
    monkeypatch.setattr(sendfile, "_owners", OrderedDict())  # only this test's holders
    monkeypatch.setattr(sendfile, "MAX_MEMFILES", sendfile.MemFile.open_files + 2)
    monkeypatch.setattr(sendfile, "KEEP_IN_USE", 0.0)
    body = b"x" * sendfile.MIN_FILE_BYTES
    owners = [SharedResponse(200, body, "video/mp2t") for _ in range(4)]
    held = owners[0].file()  # a send under way holds it
    assert held is not None and owners[1].file() is not None
    assert owners[2].file() is not None  # the oldest owners gave theirs up
    assert owners[0]._file is None and owners[1]._file is None
    assert held.fd >= 0  # still open for the send that uses it
    assert owners[3].file() is not None and owners[2]._file is None
    assert sendfile.MemFile.open_files <= sendfile.MAX_MEMFILES
    assert SharedResponse(200, b"small", "text/plain").file() is None


async def test_memory_files_in_use_are_not_given_up_for_new_bodies(monkeypatch):
    """More hot bodies than files: a new body is written from memory rather than take the
    file of one used just now (no file made and dropped per request), and the body used
    least recently is the one that gives its file up."""
    monkeypatch.setattr(sendfile, "_owners", OrderedDict())  # only this test's holders
    monkeypatch.setattr(sendfile, "MAX_MEMFILES", sendfile.MemFile.open_files + 2)
    monkeypatch.setattr(sendfile, "KEEP_IN_USE", 3600.0)
    body = b"x" * sendfile.MIN_FILE_BYTES
    owners = [SharedResponse(200, body, "video/mp2t") for _ in range(3)]
    first, second = owners[0].file(), owners[1].file()
    assert first is not None and second is not None
    assert owners[2].file() is None  # both in use: none given up
    assert owners[0]._file is first and owners[1]._file is second
    monkeypatch.setattr(sendfile, "KEEP_IN_USE", 0.0)
    assert owners[0].file() is first  # used again: now the most recently used
    del second  # no send holds it: given up, it closes at once
    assert owners[2].file() is not None
    assert owners[1]._file is None and owners[0]._file is first


async def test_pipelined_requests_over_tls_are_all_answered(tmp_path):
    """Requests a TLS connection has already received and decrypted are answered at once,
    not after the peer sends more (the plain-socket wait for readability does not apply)."""
    import socket
    import ssl

    from common.net.tls import server_context, tls_handler
    from tests.tlscerts import make_certs

    certs = make_certs(tmp_path)
    size, n = 128, 128

    def request(i: int) -> bytes:
        base = f"GET /r{i:04d} HTTP/1.1\r\nhost: a\r\nx-pad: "
        return (base + "p" * (size - len(base) - 4) + "\r\n\r\n").encode()

    async def handler(req: Request) -> Response:
        return Response(200, b"ok " + req.path.encode())

    sock = listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    serve = tls_handler(
        lambda c: serve_http(c, handler, HttpLimits(keepalive_timeout=30.0)),
        server_context(certs.cert, certs.key),
    )

    def client() -> int:
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        with ctx.wrap_socket(
            socket.create_connection(("127.0.0.1", port)), server_hostname="localhost"
        ) as s:
            s.sendall(b"".join(request(i) for i in range(n)))
            s.settimeout(20)
            got = b""
            while got.count(b"HTTP/1.1 200") < n:
                data = s.recv(65536)
                if not data:
                    break
                got += data
            return got.count(b"HTTP/1.1 200")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(accept_loop, sock, serve, max_connections=4))
        answered = await trio.to_thread.run_sync(client)
        nursery.cancel_scope.cancel()
    assert answered == n

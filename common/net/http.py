"""A small trio HTTP/1.1 server (parser in `common.proto.http1`): routing by handler, keep-alive,
limits, streaming bodies."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

import trio

from common.net.conn import Conn, ConnClosed
from common.net.supervise import log_failure
from common.net.tls import TlsConn
from common.proto.cors import CorsPolicy
from common.proto.http1 import HttpError, RequestHead, RequestParser, response_head
from common.proto.streamkey import shown

log = logging.getLogger("livecdn.http")

SERVER_NAME = "livecdn"
ANY_PAGE = CorsPolicy()
"""Any page may read the responses."""


@dataclass(frozen=True)
class HttpLimits:
    """Bounds on one HTTP connection."""

    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 1024 * 1024
    header_timeout: float = 10.0
    keepalive_timeout: float = 30.0
    send_timeout: float = 30.0


@dataclass
class Request:
    """A parsed request with its (small) body."""

    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    peer: str
    secure: bool = False
    """It came over TLS (an HTTPS listener)."""


@dataclass
class Response:
    """A complete response."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, obj: object, status: int = 200) -> Response:
        """A JSON response."""
        return cls(status, json.dumps(obj, indent=1).encode() + b"\n", "application/json")

    @classmethod
    def text(cls, status: int, text: str, headers: list[tuple[str, str]] | None = None) -> Response:
        """A plain-text response (errors carry their reason here)."""
        return cls(status, (text + "\n").encode(), headers=headers or [])


READS = ("GET", "HEAD")


def not_a_read(req: Request) -> Response | None:
    """None for GET or HEAD; else the 405 a read-only route answers (it changes nothing, so
    it must not answer another method as if it had)."""
    if req.method in READS:
        return None
    return Response.text(405, f"{req.path} is read-only: GET or HEAD", [("allow", "GET, HEAD")])


@dataclass
class StreamingResponse:
    """Headers now, then `body(conn)` writes a chunked body itself; the connection closes after.

    `body` must write HTTP/1.1 chunk framing (see `chunk()`), and the final `LAST_CHUNK`.
    """

    status: int
    content_type: str
    body: Callable[[Conn], Awaitable[None]]
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Upgrade:
    """101 Switching Protocols with `headers`, then `body(conn)` speaks the new protocol;
    the connection closes after."""

    headers: list[tuple[str, str]]
    body: Callable[[Conn], Awaitable[None]]


LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


Handler = Callable[[Request], Awaitable[Response | StreamingResponse | Upgrade]]


def _headers(
    extra: list[tuple[str, str]], content_type: str, cors: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    return [("server", SERVER_NAME), ("content-type", content_type), *cors, *extra]


async def serve_http(
    conn: Conn,
    handler: Handler,
    limits: HttpLimits = HttpLimits(),
    cors: CorsPolicy = ANY_PAGE,
) -> None:
    """Serve requests on one connection until it closes or a streaming body ends. Every
    response carries `cors`'s headers; OPTIONS (a CORS preflight) is answered here."""
    parser = RequestParser(
        max_header_bytes=limits.max_header_bytes, max_body_bytes=limits.max_body_bytes
    )
    first = True
    while True:
        timeout = limits.header_timeout if first else limits.keepalive_timeout
        try:
            got = await _read_request(conn, parser, timeout)
        except HttpError as exc:
            log.info("HTTP %s from %s: %s", exc.status, conn.peer, exc.reason)
            resp = Response.text(exc.status, exc.reason, cors.headers(None))
            await _send_response(conn, resp, close=True, send_timeout=1.0)
            return
        if got is None:
            return
        head, body = got
        first = False
        await trio.lowlevel.checkpoint()  # pipelined requests must not hog the event loop
        try:
            url = urlsplit(head.target)
        except ValueError as exc:  # e.g. "//[": an unclosed IPv6 bracket
            log.info("HTTP 400 from %s: bad target %s: %s", conn.peer, shown(head.target), exc)
            origin = head.headers.get("origin")
            resp = Response.text(400, "malformed request target", cors.headers(origin))
            await _send_response(conn, resp, close=True, send_timeout=1.0)
            return
        origin = head.headers.get("origin")
        if head.method == "OPTIONS":
            resp = Response(204, headers=cors.preflight(origin))
            await _send_response(conn, resp, close=not head.keep_alive)
            if not head.keep_alive or conn.closed:
                return
            continue
        allowed = cors.headers(origin)
        request = Request(
            method=head.method,
            target=head.target,
            path=unquote(url.path) if "%" in url.path else url.path,
            query=dict(parse_qsl(url.query)) if url.query else {},
            headers=head.headers,
            body=body,
            peer=conn.peer,
            secure=isinstance(conn, TlsConn),
        )
        try:
            resp = await handler(request)
            if isinstance(resp, StreamingResponse):
                head_bytes = _streaming_head(resp, allowed)
            elif isinstance(resp, Upgrade):
                head_bytes = response_head(
                    101, [("server", SERVER_NAME), *resp.headers], content_length=None, close=False
                )
            else:
                close = not head.keep_alive
                parts = _response_parts(resp, allowed, close=close, head=head.method == "HEAD")
        except Exception:
            log.exception(
                "handler failed for %s %s from %s", request.method, shown(request.target), conn.peer
            )
            resp = Response.text(500, "internal error")
            close = not head.keep_alive
            parts = _response_parts(resp, allowed, close=close)
        if isinstance(resp, StreamingResponse | Upgrade):
            conn.write(head_bytes)
            if request.method == "HEAD":
                await _send_parts(conn, [], limits.send_timeout)
                return
            try:
                await resp.body(conn)
            except Exception as exc:
                log_failure(f"HTTP {request.method} {shown(request.path)} to {conn.peer}", exc, log)
            return
        await _send_parts(conn, parts, limits.send_timeout)
        if close or conn.closed:
            return


async def _read_request(
    conn: Conn, parser: RequestParser, timeout: float
) -> tuple[RequestHead, bytes] | None:
    deadline = trio.current_time() + timeout
    while True:
        got = parser.next_request()
        if got is not None:
            return got
        if parser.eof:
            return None
        data = None
        with trio.move_on_at(deadline):
            data = await conn.recv()
        if data is None:
            if not parser.buffered:
                return None  # an idle keep-alive connection timed out: close quietly
            raise HttpError(408, "request not received in time")
        parser.feed(data)


def _streaming_head(resp: StreamingResponse, cors: list[tuple[str, str]]) -> bytes:
    headers = _headers(resp.headers, resp.content_type, cors)
    headers.append(("cache-control", "no-cache"))
    return response_head(resp.status, headers, content_length=None, close=True)


def _response_parts(
    resp: Response, cors: list[tuple[str, str]], *, close: bool, head: bool = False
) -> list[bytes]:
    headers = _headers(resp.headers, resp.content_type, cors)
    parts = [response_head(resp.status, headers, content_length=len(resp.body), close=close)]
    if resp.body and not head:
        parts.append(resp.body)  # the (possibly cached, shared) body is written without a copy
    return parts


async def _send_parts(conn: Conn, parts: list[bytes], send_timeout: float) -> None:
    conn.writev(parts)
    with contextlib.suppress(ConnClosed), trio.move_on_after(send_timeout) as scope:
        await conn.drain()
    if scope.cancelled_caught:
        log.info("closing HTTP %s: response not taken within %g s", conn.peer, send_timeout)
        conn.close()


async def _send_response(
    conn: Conn,
    resp: Response,
    *,
    close: bool,
    head: bool = False,
    send_timeout: float = 30.0,
) -> None:
    await _send_parts(conn, _response_parts(resp, [], close=close, head=head), send_timeout)

"""A small trio + h11 HTTP/1.1 server: routing by handler, keep-alive, limits, streaming bodies."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import trio

from common.conn import Conn, ConnClosed

log = logging.getLogger("livecdn.http")

SERVER_NAME = b"livecdn"


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
    def text(cls, status: int, text: str) -> Response:
        """A plain-text response (errors carry their reason here)."""
        return cls(status, (text + "\n").encode())


@dataclass
class StreamingResponse:
    """Headers now, then `body(conn)` writes a chunked body itself; the connection closes after.

    `body` must write HTTP/1.1 chunk framing (see `chunk()`), and the final `LAST_CHUNK`.
    """

    status: int
    content_type: str
    body: Callable[[Conn], Awaitable[None]]
    headers: list[tuple[str, str]] = field(default_factory=list)


LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]


def _headers(extra: list[tuple[str, str]], content_type: str) -> list[tuple[bytes, bytes]]:
    out = [(b"server", SERVER_NAME), (b"content-type", content_type.encode())]
    out += [(k.encode(), v.encode()) for k, v in extra]
    return out


async def serve_http(conn: Conn, handler: Handler, limits: HttpLimits = HttpLimits()) -> None:
    """Serve requests on one connection until it closes or a streaming body ends."""
    h = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
    first = True
    while True:
        timeout = limits.header_timeout if first else limits.keepalive_timeout
        try:
            request = await _read_request(conn, h, limits, timeout)
        except _BadRequest as exc:
            log.info("HTTP %s from %s: %s", exc.status, conn.peer, exc.reason)
            if h.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                resp = Response.text(exc.status, exc.reason)
                await _send_response(conn, h, resp, close=True)
            return
        if request is None:
            return
        first = False
        try:
            resp = await handler(request)
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.target)
            resp = Response.text(500, "internal error")
        if isinstance(resp, StreamingResponse):
            headers = _headers(resp.headers, resp.content_type)
            headers += [(b"transfer-encoding", b"chunked"), (b"cache-control", b"no-cache")]
            data = h.send(
                h11.Response(status_code=resp.status, headers=headers, reason=_reason(resp.status))
            )
            conn.write(data)
            await resp.body(conn)
            return
        close = h.their_state is not h11.DONE or request.headers.get("connection") == "close"
        await _send_response(
            conn,
            h,
            resp,
            close=close,
            head=request.method == "HEAD",
            send_timeout=limits.send_timeout,
        )
        if close or h.our_state is h11.MUST_CLOSE:
            return
        try:
            h.start_next_cycle()
        except h11.ProtocolError:
            return


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def _next_event(conn: Conn, h: h11.Connection, deadline: float) -> h11.Event | None:
    while True:
        try:
            event = h.next_event()
        except h11.RemoteProtocolError as exc:
            raise _BadRequest(exc.error_status_hint, f"malformed HTTP: {exc}") from exc
        if event is not h11.NEED_DATA:
            return event
        data = b""
        with trio.move_on_at(deadline):
            data = await conn.recv()
            if not data:
                h.receive_data(b"")
                continue
            h.receive_data(data)
            continue
        if h.their_state is h11.IDLE and not h.trailing_data[0]:
            return None  # idle keep-alive connection timed out: close quietly
        raise _BadRequest(408, "request not received in time")


async def _read_request(
    conn: Conn, h: h11.Connection, limits: HttpLimits, timeout: float
) -> Request | None:
    deadline = trio.current_time() + timeout
    event = await _next_event(conn, h, deadline)
    if event is None or isinstance(event, h11.ConnectionClosed):
        return None
    if not isinstance(event, h11.Request):
        raise _BadRequest(400, f"unexpected {type(event).__name__}")
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        length = 0
    if length > limits.max_body_bytes:
        raise _BadRequest(413, f"body of {length} bytes exceeds {limits.max_body_bytes}")
    body = bytearray()
    while True:
        ev = await _next_event(conn, h, deadline)
        if ev is None or isinstance(ev, h11.ConnectionClosed):
            return None
        if isinstance(ev, h11.Data):
            body += ev.data
            if len(body) > limits.max_body_bytes:
                raise _BadRequest(413, f"body exceeds {limits.max_body_bytes} bytes")
        elif isinstance(ev, h11.EndOfMessage):
            break
    target = event.target.decode("latin-1")
    parts = urlsplit(target)
    return Request(
        method=event.method.decode("latin-1"),
        target=target,
        path=unquote(parts.path),
        query=dict(parse_qsl(parts.query)),
        headers=headers,
        body=bytes(body),
        peer=conn.peer,
    )


async def _send_response(
    conn: Conn,
    h: h11.Connection,
    resp: Response,
    *,
    close: bool,
    head: bool = False,
    send_timeout: float = 30.0,
) -> None:
    headers = _headers(resp.headers, resp.content_type)
    headers.append((b"content-length", str(len(resp.body)).encode()))
    if close:
        headers.append((b"connection", b"close"))
    try:
        parts = [
            h.send(
                h11.Response(status_code=resp.status, headers=headers, reason=_reason(resp.status))
            )
        ]
        if resp.body and not head:
            # passthrough: the (possibly cached, shared) body is written without a copy
            parts += h.send_with_data_passthrough(h11.Data(data=resp.body))
        parts.append(h.send(h11.EndOfMessage()))
    except h11.LocalProtocolError as exc:
        log.warning("cannot send response to %s: %s", conn.peer, exc)
        return
    conn.writev([p for p in parts if p])
    with contextlib.suppress(ConnClosed), trio.move_on_after(send_timeout) as scope:
        await conn.drain()
    if scope.cancelled_caught:
        log.info("closing HTTP %s: response not taken within %g s", conn.peer, send_timeout)
        conn.close()

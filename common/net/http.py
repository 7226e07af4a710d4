"""A small trio HTTP/1.1 server (parser in `common.proto.http1`): routing by handler, keep-alive,
limits, streaming bodies."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import parse_qsl, unquote, urlsplit

import trio

from common.net.conn import Conn, ConnClosed
from common.net.httphub import GONE, RECV_SIZE, SEND, TAKE, KeepAliveHub, Parked
from common.net.sendfile import (
    MIN_FILE_BYTES,
    MemFile,
    memfile_for,
    send_file_now,
    send_rest,
    used,
)
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
"""A request's answer (a SharedResponse, a kind of Response, is sent as the fast lane's)."""


def _headers(
    extra: list[tuple[str, str]], content_type: str, cors: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    return [("server", SERVER_NAME), ("content-type", content_type), *cors, *extra]


FastLane = Callable[[str, str, dict[str, str], str], "SharedResponse | None"]
"""(method, target, headers, peer) -> a shared response to send as is, or None for the full
handler. It must not wait: what it answers needs no more than a lookup."""


class SharedResponse(Response):
    """A response served many times unchanged (a cached playlist or segment): its body is
    shared (never change it: `as_response` gives a copy to change), its head built once per
    CORS variant and keep-alive, and a large body goes out from a memory file with sendfile
    (no copy through user space)."""

    __hash__ = object.__hash__  # one of a kind: compared and kept by identity
    __eq__ = object.__eq__

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []
        self._heads: dict[tuple[tuple[tuple[str, str], ...], bool], bytes] = {}
        self._file: MemFile | None | bool = None  # False: none wanted or possible

    def head(self, cors: tuple[tuple[str, str], ...], close: bool) -> bytes:
        """The response head for these CORS headers and keep-alive (kept: a few variants)."""
        key = (cors, close)
        found = self._heads.get(key)
        if found is None:
            headers = _headers(self.headers, self.content_type, list(cors))
            found = response_head(self.status, headers, content_length=len(self.body), close=close)
            if len(self._heads) < MAX_HEAD_VARIANTS:
                self._heads[key] = found
        return found

    def file(self, head: bytes = b"") -> MemFile | None:
        """The body in a memory file for sendfile (made on first use, after `head`: the
        head most asked for is sent with the body in one call), None for a small body or
        while it cannot have one."""
        got = self._file
        if got:
            used(self)
        elif got is None:
            got = memfile_for(self, self.body, head)
            if got is not None:
                self._file = got
            elif len(self.body) < MIN_FILE_BYTES:
                self._file = False
        return got or None

    def drop_file(self) -> None:
        """Give the memory file up (to the newer bodies; it closes after the sends using it)."""
        self._file = None

    def as_response(self) -> Response:
        """The same answer as a plain Response (to change it for one request)."""
        return Response(self.status, self.body, self.content_type, list(self.headers))


MAX_HEAD_VARIANTS = 8
"""Heads kept per shared response (CORS variants x keep-alive); others are built each time."""

_READ, _HANDLE, _SEND = range(3)
"""What a connection does while its deadline may pass."""


async def serve_http(
    conn: Conn,
    handler: Handler,
    limits: HttpLimits = HttpLimits(),
    cors: CorsPolicy = ANY_PAGE,
    fast: FastLane | None = None,
    hub: KeepAliveHub | None = None,
) -> None:
    """Serve requests on one connection until it closes or a streaming body ends. Every
    response carries `cors`'s headers; OPTIONS (a CORS preflight) is answered here. `fast`
    answers what it can (cached objects) before a Request is built for `handler`; with a
    running `hub`, an idle plain-TCP keep-alive connection waits there, and the hub answers
    what `fast` answers without waking this task (`common.net.httphub`).

    One cancel scope covers the connection; its deadline moves with what the connection
    waits for (the next request, the peer taking a response), and a response the kernel
    takes at once waits for nothing. The idle deadline moves only by more than a sixteenth
    of keepalive_timeout: an idle connection may close up to that much early."""
    parser = RequestParser(
        max_header_bytes=limits.max_header_bytes, max_body_bytes=limits.max_body_bytes
    )
    secure = isinstance(conn, TlsConn)
    plain = type(conn) is Conn  # sendfile needs the socket itself (not TLS)
    scope = trio.CancelScope(deadline=trio.current_time() + limits.header_timeout)
    phase = _READ
    final: Response | None = None
    place: Parked | None = None  # in the hub (made when first parked)
    taken: tuple[RequestHead, bytes] | None = None  # declined by the fast lane in the hub
    try:
        with scope:
            after_response = False  # the peer has just been answered: wait before reading
            yielded = True
            while True:
                declined = taken is not None  # the hub asked the fast lane already
                if taken is not None:
                    got, taken = taken, None
                else:
                    try:
                        got = parser.next_request()
                    except HttpError as exc:
                        log.info("HTTP %s from %s: %s", exc.status, conn.peer, exc.reason)
                        final = Response.text(exc.status, exc.reason, cors.headers(None))
                        break
                if got is None:
                    if parser.eof:
                        return
                    if after_response and plain and not parser.buffered:
                        # the next request comes after the peer has read this response:
                        # wait for it rather than try (and fail) to receive it now (not on
                        # TLS, whose connection may hold requests already received and
                        # decrypted)
                        after_response = False
                        if conn.closed:
                            return
                        if hub is not None and fast is not None and plain and hub.running:
                            if place is None:
                                place = Parked(
                                    conn,
                                    parser,
                                    fast,
                                    partial(_start_shared, cors, plain=True),
                                    limits.keepalive_timeout,
                                    limits.send_timeout,
                                )
                            scope.deadline = math.inf  # the hub keeps the timeouts
                            why = await hub.park(place)
                            yielded = True
                            if why == GONE:
                                return
                            if why == SEND:
                                phase = _SEND
                                scope.deadline = trio.current_time() + limits.send_timeout
                                try:
                                    await _send_parked(conn, place)
                                except ConnClosed:
                                    return
                                if place.close or conn.closed:
                                    return
                                after_response = True
                            phase = _READ
                            scope.deadline = trio.current_time() + limits.keepalive_timeout
                            if why == TAKE:
                                taken, place.taken = place.taken, None
                            continue
                        try:
                            await trio.lowlevel.wait_readable(conn.sock)
                        except trio.ClosedResourceError:
                            return
                    parser.feed(await conn.recv(RECV_SIZE))
                    yielded = True
                    continue
                head, body = got
                if not yielded:
                    await trio.lowlevel.checkpoint()  # pipelined requests must not hog the loop
                yielded = False
                close = not head.keep_alive
                origin = head.headers.get("origin")
                shared = None
                if fast is not None and not declined:
                    try:
                        shared = fast(head.method, head.target, head.headers, conn.peer)
                    except Exception:
                        log.exception(
                            "fast lane failed for %s from %s", shown(head.target), conn.peer
                        )
                if shared is None:
                    try:
                        url = urlsplit(head.target)
                    except ValueError as exc:  # e.g. "//[": an unclosed IPv6 bracket
                        log.info(
                            "HTTP 400 from %s: bad target %s: %s",
                            conn.peer,
                            shown(head.target),
                            exc,
                        )
                        final = Response.text(400, "malformed request target", cors.headers(origin))
                        break
                    if head.method == "OPTIONS":
                        resp: Response | StreamingResponse | Upgrade = Response(
                            204, headers=cors.preflight(origin)
                        )
                        parts = _response_parts(resp, [], close=close)
                    else:
                        allowed = cors.headers(origin)
                        request = Request(
                            method=head.method,
                            target=head.target,
                            path=unquote(url.path) if "%" in url.path else url.path,
                            query=dict(parse_qsl(url.query)) if url.query else {},
                            headers=head.headers,
                            body=body,
                            peer=conn.peer,
                            secure=secure,
                        )
                        phase = _HANDLE
                        scope.deadline = math.inf
                        try:
                            resp = await handler(request)
                            if isinstance(resp, SharedResponse):
                                shared = resp
                            elif isinstance(resp, StreamingResponse):
                                head_bytes = _streaming_head(resp, allowed)
                            elif isinstance(resp, Upgrade):
                                head_bytes = response_head(
                                    101,
                                    [("server", SERVER_NAME), *resp.headers],
                                    content_length=None,
                                    close=False,
                                )
                            else:
                                parts = _response_parts(
                                    resp, allowed, close=close, head=head.method == "HEAD"
                                )
                        except Exception:
                            log.exception(
                                "handler failed for %s %s from %s",
                                request.method,
                                shown(request.target),
                                conn.peer,
                            )
                            resp = Response.text(500, "internal error")
                            parts = _response_parts(resp, allowed, close=close)
                        yielded = True
                        if isinstance(resp, StreamingResponse | Upgrade):
                            conn.write(head_bytes)
                            if request.method == "HEAD":
                                await _send_parts(conn, [], limits.send_timeout)
                                return
                            try:
                                await resp.body(conn)
                            except Exception as exc:
                                log_failure(
                                    f"HTTP {request.method} {shown(request.path)} to {conn.peer}",
                                    exc,
                                    log,
                                )
                            return
                phase = _SEND
                if shared is not None:
                    memfile, offset, sent_all = _start_shared(cors, conn, shared, head, plain)
                    if memfile is not None:
                        scope.deadline = trio.current_time() + limits.send_timeout
                        try:
                            await send_rest(conn, memfile, offset)
                        except ConnClosed:
                            return
                        yielded = True
                        sent_all = True
                else:
                    sent_all = conn.writev(parts)
                if not sent_all:
                    scope.deadline = trio.current_time() + limits.send_timeout
                    try:
                        await conn.drain()
                    except ConnClosed:
                        return
                    yielded = True
                if close or conn.closed:
                    return
                phase = _READ
                idle_deadline = trio.current_time() + limits.keepalive_timeout
                if not 0 <= idle_deadline - scope.deadline <= limits.keepalive_timeout / 16:
                    scope.deadline = idle_deadline  # else it was moved there a moment ago
                after_response = True
        if final is not None:
            await _send_response(conn, final, close=True, send_timeout=1.0)
        elif scope.cancelled_caught:
            if phase == _SEND:
                log.info(
                    "closing HTTP %s: response not taken within %g s",
                    conn.peer,
                    limits.send_timeout,
                )
                conn.close()
            elif phase == _READ and parser.buffered:
                log.info("HTTP 408 from %s: request not received in time", conn.peer)
                resp = Response.text(408, "request not received in time", cors.headers(None))
                await _send_response(conn, resp, close=True, send_timeout=1.0)
            # else an idle keep-alive connection timed out: close quietly
    finally:
        if place is not None and hub is not None:
            hub.forget(place)


def _start_shared(
    cors: CorsPolicy, conn: Conn, shared: SharedResponse, head: RequestHead, plain: bool
) -> tuple[MemFile | None, int, bool]:
    """Begin sending `shared` as the answer to the request `head` (also the keep-alive
    hub's `Answer`, with `plain`). While its body's memory file is still to send: (the
    file, the offset to go on from (-1: the head waits in conn's backlog), False); else
    (None, 0, all went out at once (else conn's backlog holds the rest))."""
    head_bytes = shared.head(cors.header_tuple(head.headers.get("origin")), not head.keep_alive)
    if head.method == "HEAD":
        return None, 0, conn.write(head_bytes)
    if plain and (memfile := shared.file(head_bytes)) is not None:
        offset = send_file_now(conn, head_bytes, memfile)
        if offset < memfile.size:
            return memfile, offset, False
        return None, 0, True
    return None, 0, conn.writev([head_bytes, shared.body])


async def _send_parked(conn: Conn, place: Parked) -> None:
    """Finish the answer the hub began (its body's memory file, or conn's backlog)."""
    file, place.file = place.file, None
    if file is not None:
        await send_rest(conn, file, place.offset)
    else:
        await conn.drain()


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

"""A small trio + h11 HTTP/1.1 client over http:// or https:// (verified): whole responses
or streamed bodies (HTTP-FLV pulls)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import trio

from common.net.conn import Conn
from common.net.tls import TlsConn, connect, context_for
from common.proto.errors import ProtocolError
from common.proto.http1 import ChunkedDecoder


class HttpClientError(Exception):
    """The server sent something we cannot use, or the connection broke."""


class MalformedResponse(HttpClientError):
    """The server's response (head or body framing) breaks HTTP/1.1."""


@dataclass(frozen=True, slots=True)
class FetchResult:
    """A whole response, as `fetch` returns it."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpResponse:
    """Status and headers of a response whose body is read with `body()` or `chunks()`."""

    status: int
    headers: dict[str, str]
    conn: Conn | TlsConn
    _h: h11.Connection

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body data as it arrives; ends at the end of the body."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            # long streamed bodies (HTTP-FLV) skip h11's per-event work: a lean decoder
            decoder = ChunkedDecoder()
            data, closed = self._h.trailing_data
            while True:
                try:
                    pieces = decoder.feed(data)
                except ProtocolError as exc:
                    raise MalformedResponse(f"malformed chunked body: {exc}") from exc
                if pieces:
                    # servers often send a chunk per frame: one piece per read is cheaper
                    yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
                if decoder.done:
                    return
                if closed:
                    raise HttpClientError("connection closed in the middle of the body")
                data = await self.conn.recv()
                closed = not data
        while True:
            try:
                event = self._h.next_event()
            except h11.RemoteProtocolError as exc:
                raise MalformedResponse(f"malformed response body: {exc}") from exc
            if event is h11.NEED_DATA:
                data = await self.conn.recv()
                if not data and self._h.their_state is h11.SEND_BODY:
                    raise HttpClientError("connection closed in the middle of the body")
                self._h.receive_data(data)
                continue
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    async def body(self, limit: int = 64 * 1024 * 1024) -> bytes:
        """The whole body (bounded by `limit`)."""
        out = bytearray()
        async for data in self.chunks():
            out += data
            if len(out) > limit:
                raise HttpClientError(f"body exceeds {limit} bytes")
        return bytes(out)

    def raw_body(self) -> tuple[bytes, bool]:
        """For a caller that reads the body from `conn` itself: the bytes already read
        past the head (not yet decoded) and whether the server closed meanwhile."""
        data, closed = self._h.trailing_data
        return bytes(data), closed

    @property
    def framing(self) -> tuple[bool, int | None]:
        """How the body ends: (chunked, content length or None: at the close)."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return True, None
        length = self.headers.get("content-length", "").strip()
        return False, int(length) if length.isdigit() else None

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


async def open_request(
    method: str,
    url: str,
    *,
    body: bytes = b"",
    timeout: float = 10.0,
    rcvbuf: int | None = None,
    user_agent: str = "livecdn",
    headers: list[tuple[str, str]] | None = None,
    tls: ssl.SSLContext | None = None,
) -> HttpResponse:
    """Send a request and read the response head; the caller reads the body and closes.
    An https:// server's certificate is verified with `tls` (default: the system's trust)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http:// or https:// URL: {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host = parts.hostname
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    with trio.fail_after(timeout):
        conn = await connect(host, port, context_for(parts.scheme, tls), rcvbuf=rcvbuf)
        try:
            h = h11.Connection(h11.CLIENT)
            head = [("host", f"{host}:{port}"), ("user-agent", user_agent), *(headers or ())]
            if body or method in ("POST", "PUT"):
                head.append(("content-length", str(len(body))))
            data = h.send(h11.Request(method=method, target=target, headers=head))
            if body:
                data += h.send(h11.Data(data=body))
            data += h.send(h11.EndOfMessage())
            await conn.send_all(data)
            while True:
                event = h.next_event()
                if event is h11.NEED_DATA:
                    h.receive_data(await conn.recv())
                    continue
                if isinstance(event, h11.Response):
                    hdrs = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
                    return HttpResponse(event.status_code, hdrs, conn, h)
                if isinstance(event, h11.ConnectionClosed):
                    raise HttpClientError("connection closed before a response")
        except h11.RemoteProtocolError as exc:
            conn.close()
            raise MalformedResponse(f"bad response from {host}:{port}: {exc}") from exc
        except BaseException:
            conn.close()
            raise


async def fetch(
    method: str,
    url: str,
    *,
    body: bytes = b"",
    timeout: float = 10.0,
    limit: int = 64 * 1024 * 1024,
    headers: list[tuple[str, str]] | None = None,
    tls: ssl.SSLContext | None = None,
) -> FetchResult:
    """A whole request: its status, headers and body (of at most `limit` bytes); `headers`
    are sent besides Host, User-Agent and Content-Length; `tls` as for `open_request`."""
    with trio.fail_after(timeout):
        resp = await open_request(method, url, body=body, timeout=timeout, headers=headers, tls=tls)
        try:
            data = b"" if method == "HEAD" else await resp.body(limit)  # HEAD has no body
            return FetchResult(resp.status, resp.headers, data)
        finally:
            resp.close()

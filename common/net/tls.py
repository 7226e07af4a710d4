"""TLS over `Conn`: contexts from PEM files, and `TlsConn`, which offers Conn's interface
(non-awaiting `write`, `drain`, `recv`, ...) over stdlib ssl's SSLObject on memory BIOs.

Records are encrypted into a memory BIO and handed to the plain Conn underneath, so a fan-out
still writes to thousands of TLS viewers without a task switch each, and plain-TCP Conns are
untouched (TLS costs only the connections that use it).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from functools import cache

import trio

from common.net.conn import RECV_SIZE, Conn, open_connection
from common.proto.errors import ConnClosed

log = logging.getLogger("livecdn.tls")

HANDSHAKE_TIMEOUT = 10.0
"""The default bound of a TLS handshake (a node uses its handshake_timeout)."""

__all__ = [
    "TlsConn",
    "TlsError",
    "client_context",
    "connect",
    "context_for",
    "default_client_context",
    "server_context",
    "tls_handler",
]


class TlsError(OSError):
    """A TLS handshake failed or a context cannot be made; the message says why."""


def _reason(exc: ssl.SSLError) -> str:
    """The useful part of an ssl error (not the _ssl.c line)."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    return (exc.reason or str(exc)).replace("_", " ").lower()


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context with the PEM certificate chain `cert` and its private key `key`
    (TLS 1.2 or later, no renegotiation); TlsError names the file that cannot be used."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION  # a TLS 1.2 client cannot make us redo handshakes
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise TlsError(f"cannot use tls_cert {cert} with tls_key {key}: {_reason(exc)}") from exc
    except OSError as exc:
        raise TlsError(f"cannot read tls_cert {cert} or tls_key {key}: {exc}") from exc
    return context


def client_context(ca: str = "") -> ssl.SSLContext:
    """A client context that verifies the server's certificate and host name against the
    PEM bundle `ca` (empty: the system's trust store)."""
    try:
        context = ssl.create_default_context(cafile=ca or None)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"cannot read tls_ca {ca}: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@cache
def default_client_context() -> ssl.SSLContext:
    """The system-trust client context (made once: loading the trust store takes time)."""
    return client_context()


def context_for(scheme: str, tls: ssl.SSLContext | None) -> ssl.SSLContext | None:
    """The client context for a `scheme` URL: None for plain schemes; for https and rtmps
    `tls`, or the system-trust context."""
    if scheme not in ("https", "rtmps"):
        return None
    return tls or default_client_context()


class TlsConn:
    """A TLS connection over a plain `Conn` (`raw`), with Conn's interface."""

    __slots__ = ("raw", "peer", "_ssl", "_in", "_out")

    def __init__(
        self, raw: Conn, obj: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO
    ) -> None:
        self.raw = raw
        self.peer = raw.peer
        self._ssl = obj
        self._in = incoming
        self._out = outgoing

    @classmethod
    async def handshake(
        cls, raw: Conn, context: ssl.SSLContext, server_hostname: str | None = None
    ) -> TlsConn:
        """Handshake over `raw` as the server, or as the client of `server_hostname`
        (verified if the context says so); TlsError says why it failed."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = context.wrap_bio(
            incoming,
            outgoing,
            server_side=server_hostname is None,
            server_hostname=server_hostname,
        )
        conn = cls(raw, obj, incoming, outgoing)
        who = server_hostname or raw.peer
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                conn._flush()  # the alert, so the peer learns why
                raise TlsError(f"TLS handshake with {who} failed: {_reason(exc)}") from exc
            conn._flush()
            try:
                await raw.drain()
            except ConnClosed as exc:
                raise TlsError(f"TLS handshake with {who}: connection broken") from exc
            data = await raw.recv()
            if not data:
                raise TlsError(f"TLS handshake with {who}: closed by the peer")
            incoming.write(data)
        conn._flush()
        return conn

    def _flush(self) -> bool:
        return self.raw.write(self._out.read()) if self._out.pending else True

    @property
    def sock(self) -> socket.socket:
        """The socket underneath."""
        return self.raw.sock

    @property
    def closed(self) -> bool:
        return self.raw.closed

    @property
    def backlog_bytes(self) -> int:
        return self.raw.backlog_bytes

    @property
    def bytes_in(self) -> int:
        """Bytes received on the wire (TLS records)."""
        return self.raw.bytes_in

    @property
    def bytes_out(self) -> int:
        """Bytes sent on the wire (TLS records)."""
        return self.raw.bytes_out

    @property
    def opened_at(self) -> float:
        """When the connection underneath was accepted (`Conn.opened_at`)."""
        return self.raw.opened_at

    @opened_at.setter
    def opened_at(self, value: float) -> None:
        self.raw.opened_at = value

    async def recv(self, size: int = RECV_SIZE) -> bytes:
        """Receive some plaintext; b"" when the peer closed or the connection broke."""
        while not self.raw.closed:
            try:
                data = self._ssl.read(size)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:  # a bad record, or a close without close_notify
                self.close()
                return b""
            else:
                if data and self._in.pending:
                    data = self._more(data, size)
                self._flush()
                return data  # b"": the peer's close_notify
            self._flush()  # e.g. a key update's answer
            wire = await self.raw.recv()
            if not wire:
                return b""
            self._in.write(wire)
        return b""

    def kernel_unsent(self) -> int:
        """`Conn.kernel_unsent` of the connection underneath (TLS records)."""
        return self.raw.kernel_unsent()

    async def recv_turn(self, size: int = RECV_SIZE) -> bytes:
        """`recv` that gives the other tasks a turn at least once (`Conn.recv_turn`)."""
        data = await self.recv(size)
        await trio.lowlevel.checkpoint()
        return data

    def _more(self, data: bytes, size: int) -> bytes:
        """`data` and the plaintext of the records already received, up to `size` bytes in
        all (one read returns one record: this saves the caller a read per record)."""
        parts = [data]
        room = size - len(data)
        while room > 0 and self._in.pending:
            try:
                more = self._ssl.read(room)
            except ssl.SSLError:  # a partial record (SSLWantReadError), or a bad one: later
                break
            if not more:
                break
            parts.append(more)
            room -= len(more)
        return b"".join(parts) if len(parts) > 1 else data

    def write(self, data: bytes | memoryview) -> bool:
        """Encrypt and send without waiting, as Conn.write. True if all went out."""
        if self.raw.closed:
            return False
        try:
            self._ssl.write(data)
        except ssl.SSLError:
            self.close()
            return False
        return self._flush()

    def writev(self, parts: list[bytes]) -> bool:
        """Like `write` for several buffers (one join, then full-size records)."""
        return self.write(b"".join(parts))

    async def drain(self) -> None:
        """Wait until the backlog is sent; raise ConnClosed if the connection breaks."""
        await self.raw.drain()

    def shutdown_write(self) -> None:
        """Send close_notify and a FIN; reading goes on."""
        # SSLWantReadError: the peer's close_notify has not come yet
        with contextlib.suppress(ssl.SSLError):
            self._ssl.unwrap()
        self._flush()
        self.raw.shutdown_write()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.raw.close()

    # The same steps as a plain Conn's: they use only the methods above.
    send_all = Conn.send_all
    close_gracefully = Conn.close_gracefully


def tls_handler(
    handler: Callable[[TlsConn], Awaitable[None]],
    context: ssl.SSLContext,
    *,
    timeout: float = HANDSHAKE_TIMEOUT,
) -> Callable[[Conn], Awaitable[None]]:
    """An accept_loop handler that handshakes (within `timeout`) before `handler`; a failed
    or silent handshake ends only that connection, with one log line naming the peer."""

    async def serve(raw: Conn) -> None:
        try:
            with trio.fail_after(timeout):
                conn = await TlsConn.handshake(raw, context)
        except trio.TooSlowError:
            log.info("TLS handshake with %s: none within %g s", raw.peer, timeout)
            return
        except TlsError as exc:
            log.info("%s", exc)
            return
        await handler(conn)

    return serve


async def connect(
    host: str, port: int, context: ssl.SSLContext | None, *, rcvbuf: int | None = None
) -> Conn | TlsConn:
    """A plain Conn to host:port, or (with a `context`) a TlsConn that verified `host`."""
    raw = await open_connection(host, port, rcvbuf=rcvbuf)
    if context is None:
        return raw
    try:
        return await TlsConn.handshake(raw, context, server_hostname=host)
    except BaseException:
        raw.close()
        raise

"""Nonblocking TCP connections and listeners for trio, with a non-awaiting `write`.

`Conn.write()` sends what the kernel takes at once and keeps the rest as a backlog that
`drain()` (awaited by the connection's own task) flushes. This lets one task fan frames
out to thousands of sockets without a task switch per socket, while a slow socket only
ever holds up itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import math
import socket
import struct
import termios
from collections.abc import Awaitable, Callable

import trio

from common.net.supervise import log_failure
from common.proto.errors import ConnClosed

log = logging.getLogger("livecdn.conn")

RECV_SIZE = 65536
IOV_BATCH = 512
SEND_BUFFER = 256 * 1024
"""SO_SNDBUF of accepted sockets: a viewer that stops reading fills this (not megabytes of
kernel autotuning) and so meets `slow_timeout` soon after."""
ACCEPT_BATCH = 16
"""Connections one listener takes in a row before it lets the other tasks run: a flood of
new connections waits in the kernel's backlog, not in front of the viewers already playing."""


class Accepted:
    """When this process last accepted a connection on any listener (trio time): while that is
    recent, viewers are joining, and long work (a fan-out) lets their round trips through
    sooner."""

    last = -math.inf


__all__ = [
    "Accepted",
    "Conn",
    "ConnClosed",
    "Slots",
    "accept_loop",
    "hold_socket",
    "hold_sockets",
    "listen_socket",
    "listen_sockets",
    "open_connection",
]


class Conn:
    """One accepted or connected TCP socket."""

    __slots__ = (
        "sock",
        "peer",
        "_backlog",
        "backlog_bytes",
        "closed",
        "bytes_in",
        "bytes_out",
        "opened_at",
    )

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        try:
            host, port = sock.getpeername()[:2]
            self.peer = f"{host}:{port}"
        except OSError:
            self.peer = "?"
        self._backlog: list[memoryview] = []
        self.backlog_bytes = 0
        self.closed = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.opened_at = math.nan
        """When a listener accepted it (trio's clock); NaN for one we opened, or once a
        play has counted its join (`PlayStats.joined`)."""

    def recv_now(self, size: int = RECV_SIZE) -> bytes | None:
        """Receive what the kernel holds, without waiting: None when it holds nothing yet;
        b"" when the peer closed or the connection broke."""
        if self.closed:
            return b""
        try:
            data = self.sock.recv(size)
        except BlockingIOError:
            return None
        except OSError:
            return b""
        self.bytes_in += len(data)
        return data

    async def recv(self, size: int = RECV_SIZE) -> bytes:
        """Receive some bytes; b"" when the peer closed or the connection broke."""
        while (data := self.recv_now(size)) is None:
            try:
                await trio.lowlevel.wait_readable(self.sock)
            except trio.ClosedResourceError:
                return b""
        return data

    async def recv_turn(self, size: int = RECV_SIZE) -> bytes:
        """`recv` that gives the other tasks a turn exactly once: a peer that always has
        data cannot hog the loop, and one whose bytes had to be waited for costs no
        extra scheduler round (on a busy node each round is milliseconds)."""
        data = self.recv_now(size)
        if data is None:
            return await self.recv(size)
        await trio.lowlevel.checkpoint()
        return data

    def write(self, data: bytes | memoryview) -> bool:
        """Send without waiting; keep what the kernel did not take. True if all went out."""
        if self.closed:
            return False
        if self._backlog:
            self._queue([data], 0)
            return False
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return False
        self.bytes_out += sent
        if sent < len(data):
            self._queue([data], sent)
            return False
        return True

    def writev(self, parts: list[bytes]) -> bool:
        """Like `write` for several buffers, sent with one sendmsg (no joining copy)."""
        if self.closed:
            return False
        if not self._backlog:
            start = 0
            while start < len(parts):
                group = parts[start : start + IOV_BATCH]
                try:
                    sent = self.sock.sendmsg(group)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self.close()
                    return False
                self.bytes_out += sent
                start += len(group)
                if sent < sum(len(p) for p in group):
                    self._queue(group, sent)
                    break
            else:
                return True
            parts = parts[start:]
        self._queue(parts, 0)
        return False

    def _queue(self, parts: list[bytes], skip: int) -> None:
        for part in parts:
            size = len(part)
            if skip >= size:
                skip -= size
                continue
            self._backlog.append(memoryview(part)[skip:])
            self.backlog_bytes += size - skip
            skip = 0

    async def drain(self) -> None:
        """Wait until the backlog is sent; raise ConnClosed if the connection breaks."""
        while self._backlog:
            if self.closed:
                raise ConnClosed
            try:
                await trio.lowlevel.wait_writable(self.sock)
            except trio.ClosedResourceError as exc:
                raise ConnClosed from exc
            try:
                sent = self.sock.sendmsg(self._backlog[:IOV_BATCH])
            except BlockingIOError:
                continue
            except OSError as exc:
                self.close()
                raise ConnClosed from exc
            self.bytes_out += sent
            self.backlog_bytes -= sent
            while sent:
                head = self._backlog[0]
                if sent >= len(head):
                    sent -= len(head)
                    self._backlog.pop(0)
                else:
                    self._backlog[0] = head[sent:]
                    sent = 0
        if self.closed:
            raise ConnClosed

    def kernel_unsent(self) -> int:
        """Bytes the kernel holds for the peer, not yet acknowledged (SIOCOUTQ); 0 if it
        cannot tell. When it falls, the peer is taking bytes, though with a big send buffer
        the socket may stay unwritable for seconds (epoll waits for half of it to free)."""
        try:
            held = fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except (OSError, ValueError):
            return 0
        return struct.unpack("i", held)[0]

    async def send_all(self, data: bytes | memoryview) -> None:
        """Write and wait until it is all sent."""
        self.write(data)
        await self.drain()

    async def close_gracefully(self, timeout: float = 1.0) -> None:
        """Flush, send FIN, and read until the peer closes (or `timeout`), then close.

        Closing with unread input would send a reset, and the peer's TCP stack could then
        discard our last words (an error status) before its application reads them.
        """
        with trio.move_on_after(timeout):
            try:
                await self.drain()
                self.shutdown_write()
                while await self.recv():
                    pass
            except (ConnClosed, OSError):
                pass
        self.close()

    def shutdown_write(self) -> None:
        """Send a FIN (drain first: a backlog is not sent after it); reading goes on."""
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Close the socket (idempotent); tasks waiting on it are woken."""
        if self.closed:
            return
        self.closed = True
        self._backlog.clear()
        self.backlog_bytes = 0
        with contextlib.suppress(RuntimeError):
            trio.lowlevel.notify_closing(self.sock)
        self.sock.close()


class ListenError(OSError):
    """A port that cannot be listened on; the message names the address."""

    def __str__(self) -> str:
        return f"cannot listen on {self.filename}: [Errno {self.errno}] {self.strerror}"


def hold_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to host:port (port 0 picks a free port) with SO_REUSEADDR, not
    listening: it holds the port (no port-0 bind or outgoing connection is given it) while
    listeners of ours bind beside it. `reuse_port`: with SO_REUSEPORT too, so a group of
    listeners bound to the port with it share its new connections (the kernel spreads them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(exc.errno, exc.strerror, f"{host}:{port}") from exc
    return sock


def listen_socket(
    host: str, port: int, backlog: int = 1024, *, reuse_port: bool = False
) -> socket.socket:
    """A bound, listening, nonblocking TCP socket (port 0 picks a free port); `reuse_port`:
    one of the port's SO_REUSEPORT group (see `hold_socket`)."""
    sock = hold_socket(host, port, reuse_port=reuse_port)
    try:
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenError(exc.errno, exc.strerror, f"{host}:{port}") from exc
    sock.setblocking(False)
    return sock


def _each_port(ports: list[int], open_one: Callable[[int], socket.socket]) -> list[socket.socket]:
    """`open_one` for each port, all or none (a failure closes those already open)."""
    socks: list[socket.socket] = []
    try:
        for port in ports:
            socks.append(open_one(port))
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


def listen_sockets(host: str, ports: list[int], *, reuse_port: bool = False) -> list[socket.socket]:
    """`listen_socket` for each port, all or none."""
    return _each_port(ports, lambda port: listen_socket(host, port, reuse_port=reuse_port))


def hold_sockets(host: str, ports: list[int], *, reuse_port: bool = False) -> list[socket.socket]:
    """`hold_socket` for each port, all or none."""
    return _each_port(ports, lambda port: hold_socket(host, port, reuse_port=reuse_port))


class Slots:
    """A connection budget shared by a node's listeners."""

    __slots__ = ("limit", "active")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0


async def accept_loop(
    sock: socket.socket,
    handler: Callable[[Conn], Awaitable[None]],
    *,
    max_connections: int | Slots,
    on_refused: Callable[[], None] | None = None,
) -> None:
    """Accept connections forever, each handled by its own task in a nursery.

    A handler's failure ends only its own connection, with one log line naming the peer
    (a traceback only for unexpected errors); the listener and other connections go on.
    """
    slots = max_connections if isinstance(max_connections, Slots) else Slots(max_connections)
    where = f"{sock.getsockname()[0]}:{sock.getsockname()[1]}"
    warned = -math.inf

    async def run(conn: Conn) -> None:
        try:
            await handler(conn)
        except Exception as exc:
            log_failure(f"connection {conn.peer} on {where}", exc, log)
        finally:
            slots.active -= 1
            conn.close()

    try:
        async with trio.open_nursery() as nursery:
            in_a_row = 0
            while True:
                if in_a_row >= ACCEPT_BATCH:
                    in_a_row = 0
                    await trio.lowlevel.checkpoint()
                try:
                    client, _ = sock.accept()
                except BlockingIOError:
                    in_a_row = 0
                    await trio.lowlevel.wait_readable(sock)
                    continue
                except OSError as exc:
                    if exc.errno in (errno.EBADF, errno.EINVAL, errno.ENOTSOCK):
                        raise  # the listening socket itself is gone
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        now = trio.current_time()
                        if now - warned >= 5.0:
                            warned = now
                            log.warning("accept on %s failed: %s; pausing 100 ms", where, exc)
                        await trio.sleep(0.1)
                    continue  # e.g. ECONNABORTED: that client is gone, the listener is not
                try:
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                    conn = Conn(client)
                    conn.opened_at = Accepted.last = trio.current_time()
                except OSError as exc:
                    log.info("dropped a connection on %s before serving it: %s", where, exc)
                    client.close()
                    continue
                if slots.active >= slots.limit:
                    now = trio.current_time()
                    if now - warned >= 5.0:
                        warned = now
                        log.warning(
                            "refused %s on %s: connection limit %d reached (logged every 5 s)",
                            conn.peer,
                            where,
                            slots.limit,
                        )
                    if on_refused:
                        on_refused()
                    conn.close()
                    continue
                slots.active += 1
                in_a_row += 1
                nursery.start_soon(run, conn)
    finally:
        with contextlib.suppress(RuntimeError):
            trio.lowlevel.notify_closing(sock)
        sock.close()


async def open_connection(host: str, port: int, *, rcvbuf: int | None = None) -> Conn:
    """Connect to host:port and return a Conn (`rcvbuf` sets SO_RCVBUF, e.g. to act slow)."""
    tsock = trio.socket.socket(
        socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM
    )
    if rcvbuf is not None:
        tsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        await tsock.connect((host, port))
    except BaseException:
        tsock.close()
        raise
    sock = socket.socket(fileno=tsock.detach())
    return Conn(sock)

"""Link emulation without root: a TCP proxy per link that adds delay and jitter, limits the
rate, and can take the link down; its settings change at run time (the fault schedule)."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import trio

from common.net.conn import Conn, accept_loop, listen_socket, open_connection
from common.proto.shaping import TokenBucket
from topology.delayline import DelayLine

log = logging.getLogger("livecdn.link")


@dataclass
class LinkSettings:
    """How a link behaves (per direction)."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_mbps: float = 0.0
    loss: float = 0.0  # probability per segment; TCP hides loss, so it shows as a stall
    down: bool = False


class LinkProxy:
    """Listens on a free port of `host` and forwards every connection to `target` through
    the link."""

    def __init__(
        self,
        name: str,
        target: tuple[str, int],
        settings: LinkSettings | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.name = name
        self.host = host
        self.target = target
        self.settings = settings or LinkSettings()
        self.port = 0
        self.bytes = 0
        self._conns: set[Conn] = set()
        self._rng = random.Random(name)

    def update(self, **changes: object) -> None:
        """Change the link's settings now (down=True also cuts current connections)."""
        for key, value in changes.items():
            if not hasattr(self.settings, key):
                raise KeyError(f"link setting {key!r} does not exist")
            setattr(self.settings, key, value)
        log.info("link %s: %s", self.name, self.settings)
        if self.settings.down:
            for conn in list(self._conns):
                conn.close()

    def rate(self) -> float:
        """Bytes a second each direction of a connection may carry (0: no limit)."""
        return self.settings.rate_mbps * 125_000

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; `task_status.started(port)`."""
        sock = listen_socket(self.host, 0)
        self.port = sock.getsockname()[1]
        task_status.started(self.port)
        await accept_loop(sock, self._handle, max_connections=10000)

    async def _handle(self, client: Conn) -> None:
        if self.settings.down:
            return
        try:
            server = await open_connection(*self.target)
        except OSError:
            return
        self._conns |= {client, server}
        try:
            async with trio.open_nursery() as nursery:
                for src, dst in ((client, server), (server, client)):
                    nursery.start_soon(self._direction, src, dst, nursery.cancel_scope)
        finally:
            self._conns -= {client, server}
            server.close()

    async def _direction(self, src: Conn, dst: Conn, scope: trio.CancelScope) -> None:
        send, recv = trio.open_memory_channel[tuple[float, bytes]](1024)
        bucket = TokenBucket(self.rate(), now=trio.current_time())
        line = DelayLine(self._rng)

        async def reader() -> None:
            async with send:
                while data := await src.recv():
                    s = self.settings
                    due = line.due(trio.current_time(), s.delay_ms, s.jitter_ms, s.loss)
                    await send.send((due, data))

        async def writer() -> None:
            async with recv:
                async for due, data in recv:
                    await trio.sleep_until(due)
                    rate = self.rate()
                    if rate != bucket.rate:
                        bucket.set_rate(rate, trio.current_time())
                    await trio.sleep(bucket.delay_for(len(data), trio.current_time()))
                    if self.settings.down:
                        break
                    self.bytes += len(data)
                    await dst.send_all(data)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                nursery.start_soon(writer)
        except Exception:
            pass
        scope.cancel()

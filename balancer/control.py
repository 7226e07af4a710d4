"""The control plane's connections: msgpack frames from edges and origins, authenticated
(with a cluster_secret), validated and handed to the node table; an unauthenticated,
invalid, refused or idle connection is closed, and strangers get only a small budget."""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from enum import StrEnum

import trio

from balancer.table import NodeTable
from common.config import BalancerConfig
from common.net.conn import Conn
from common.net.logbudget import LogBudget
from common.proto.control import Rejection, rejection
from common.proto.controlauth import NONCE_BYTES, ServerSession, refusal
from common.proto.errors import ProtocolError
from common.proto.peers import peer_host
from common.serve.metrics import NodeMetrics

log = logging.getLogger("livecdn.balancer")

MAX_STRANGERS = 32
"""Control connections not yet authenticated, at most (and at most control_max_connections)."""
MAX_STRANGERS_PER_HOST = 8
"""Of those, from one address."""


class Crowded(StrEnum):
    """Why a connection was closed to make room (a control_rejected_total reason)."""

    STRANGERS = "unauthenticated_limit"


class Strangers:
    """Control connections that have not authenticated yet (without a cluster_secret: that
    have sent no message yet), oldest first: at most `per_host` from one address and
    `total` in all. A newcomer over either bound cancels the oldest such connection's scope
    (from its own address, else any), so silent strangers neither keep a node out nor hold
    more than `total` of control_max_connections."""

    def __init__(self, total: int, per_host: int) -> None:
        self.total = total
        self.per_host = min(per_host, total)
        self._waiting: dict[trio.CancelScope, str] = {}  # insertion order: oldest first
        self._by_host: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._waiting)

    def arrive(self, host: str, scope: trio.CancelScope) -> None:
        """A new connection from `host`, cancelled through `scope` if it must make room."""
        if self._by_host[host] >= self.per_host:
            self._evict(next(s for s, h in self._waiting.items() if h == host))
        elif len(self._waiting) >= self.total:
            self._evict(next(iter(self._waiting)))
        self._waiting[scope] = host
        self._by_host[host] += 1

    def leave(self, scope: trio.CancelScope) -> None:
        """The connection of `scope` authenticated or ended (again: a no-op)."""
        host = self._waiting.pop(scope, None)
        if host is not None:
            self._by_host[host] -= 1
            if not self._by_host[host]:
                del self._by_host[host]

    def _evict(self, scope: trio.CancelScope) -> None:
        self.leave(scope)
        scope.cancel()


class ControlServer:
    """Serves control connections into `table`."""

    def __init__(self, config: BalancerConfig, table: NodeTable, metrics: NodeMetrics) -> None:
        self.config = config
        self.table = table
        self.metrics = metrics
        self.connections = 0
        total = min(MAX_STRANGERS, config.control_max_connections)
        self.strangers = Strangers(total, MAX_STRANGERS_PER_HOST)
        self.stranger_log = LogBudget(log, "control connections of strangers closed")
        """Lines about connections that never authenticated: a flood logs a summary."""
        metrics.counter(
            "control_rejected_total",
            "Control connections closed for a failed authentication or an invalid or refused "
            "message, by reason.",
            ("reason",),
        )
        metrics.counter("control_idle_total", "Control connections closed for sending nothing.")
        metrics.gauge(
            "control_connections", "Open control connections.", (), lambda: {(): self.connections}
        )

    def refused(self, reason: StrEnum) -> None:
        """Count a connection closed for `reason` (a Rejection, or the table's own reason)."""
        self.metrics.inc("control_rejected_total", labels=(reason,))

    def refuse_connection(self) -> None:
        """Count a connection the accept loop refused at control_max_connections."""
        self.refused(Rejection.CONNECTION_LIMIT)

    async def handle(self, conn: Conn) -> None:
        """One node's control connection: the hello, then (with a cluster_secret) the node's
        auth, then its messages. A failed auth, an invalid or refused message closes it with
        one log line (and a `refused` frame saying why); so does `control_idle_timeout`
        without a message (the auth is one), and, before it authenticated, a newer stranger
        that needs its place (`Strangers`)."""
        session = ServerSession(self.config.cluster_secret, secrets.token_bytes(NONCE_BYTES))
        idle = self.config.control_idle_timeout
        self.connections += 1
        stranger = trio.CancelScope()
        self.strangers.arrive(peer_host(conn.peer), stranger)
        try:
            conn.write(session.hello())
            with stranger, trio.move_on_after(idle) as scope:
                while True:
                    data = await conn.recv()
                    if not data:
                        if session.required and session.node is None:
                            self.refused(Rejection.AUTH)
                            self.stranger_log.info(
                                trio.current_time(),
                                "control connection %s closed before authenticating",
                                conn.peer,
                            )
                        return
                    try:
                        messages = session.feed(data)
                        reply = session.take_outgoing()
                        if reply:
                            conn.write(reply)
                            log.info("control connection %s is node %s", conn.peer, session.node)
                        for msg in messages:
                            self.table.on_message(msg, conn.peer, trio.current_time())
                    except ProtocolError as exc:
                        self.strangers.leave(stranger)  # closing now, for its own reason
                        self.refused(rejection(exc))
                        why = "closing control connection %s: %s"
                        if session.node is None:  # a stranger's: within the log budget
                            self.stranger_log.info(trio.current_time(), why, conn.peer, exc)
                        else:
                            log.info(why, conn.peer, exc)
                        conn.write(refusal(str(exc)))
                        await conn.close_gracefully()
                        return
                    if messages or reply:
                        self.strangers.leave(stranger)
                        scope.deadline = trio.current_time() + idle
            if stranger.cancelled_caught:
                self.refused(Crowded.STRANGERS)
                self.stranger_log.info(
                    trio.current_time(),
                    "closing control connection %s: not authenticated, and a newer one needs "
                    "its place (at most %d such from one address, %d in all)",
                    conn.peer,
                    self.strangers.per_host,
                    self.strangers.total,
                )
                return
            self.metrics.inc("control_idle_total")
            why = "closing control connection %s: no message for %g s"
            if session.node is None:
                self.stranger_log.info(trio.current_time(), why, conn.peer, idle)
            else:
                log.info(why, conn.peer, idle)
        finally:
            self.strangers.leave(stranger)
            self.connections -= 1
            self.table.connection_closed(conn.peer)

    async def forget_loop(self) -> None:
        """Forget silent nodes, a few times per `forget_after`."""
        while True:
            await trio.sleep(min(self.config.forget_after / 4, 5.0))
            self.table.forget(trio.current_time())
            self.stranger_log.flush(trio.current_time())

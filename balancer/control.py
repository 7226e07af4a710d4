"""The control plane's connections: msgpack frames from edges and origins, authenticated
(with a cluster_secret), validated and handed to the node table; an unauthenticated,
invalid, refused or idle connection is closed."""

from __future__ import annotations

import logging
import secrets
from enum import StrEnum

import trio

from balancer.table import NodeTable
from common.config import BalancerConfig
from common.net.conn import Conn
from common.proto.control import Rejection, rejection
from common.proto.controlauth import NONCE_BYTES, ServerSession, refusal
from common.proto.errors import ProtocolError
from common.serve.metrics import NodeMetrics

log = logging.getLogger("livecdn.balancer")


class ControlServer:
    """Serves control connections into `table`."""

    def __init__(self, config: BalancerConfig, table: NodeTable, metrics: NodeMetrics) -> None:
        self.config = config
        self.table = table
        self.metrics = metrics
        self.connections = 0
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
        without a message (the auth is one)."""
        session = ServerSession(self.config.cluster_secret, secrets.token_bytes(NONCE_BYTES))
        idle = self.config.control_idle_timeout
        self.connections += 1
        try:
            conn.write(session.hello())
            with trio.move_on_after(idle) as scope:
                while True:
                    data = await conn.recv()
                    if not data:
                        if session.required and session.node is None:
                            self.refused(Rejection.AUTH)
                            log.info(
                                "control connection %s closed before authenticating", conn.peer
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
                        self.refused(rejection(exc))
                        log.info("closing control connection %s: %s", conn.peer, exc)
                        conn.write(refusal(str(exc)))
                        await conn.close_gracefully()
                        return
                    if messages or reply:
                        scope.deadline = trio.current_time() + idle
            self.metrics.inc("control_idle_total")
            log.info("closing control connection %s: no message for %g s", conn.peer, idle)
        finally:
            self.connections -= 1

    async def forget_loop(self) -> None:
        """Forget silent nodes, a few times per `forget_after`."""
        while True:
            await trio.sleep(min(self.config.forget_after / 4, 5.0))
            self.table.forget(trio.current_time())

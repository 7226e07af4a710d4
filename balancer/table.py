"""The nodes the balancer knows: edges from their heartbeats, origins' streams from their
announcements, bounded tables, and forgetting the silent ones."""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum

import trio

from balancer.edges import EdgeState
from common.config import BalancerConfig
from common.proto.control import ControlError, ControlMessage, Heartbeat, StreamInfo
from common.serve.metrics import NodeMetrics

log = logging.getLogger("livecdn.balancer")


class TableFull(StrEnum):
    """Why a new node was refused (a control_rejected_total reason)."""

    EDGES = "edges_full"
    ORIGINS = "origins_full"


class NodeTable:
    """Edges by id and origins' live streams, as the control plane reported them."""

    def __init__(self, config: BalancerConfig, metrics: NodeMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.edges: dict[str, EdgeState] = {}
        self.origin_streams: dict[str, dict[str, StreamInfo]] = {}  # origin -> "app/name" -> info
        self.origin_seen: dict[str, float] = {}
        self.on_forget: Callable[[str], None] = lambda edge: None
        """Called with the id of each edge forgotten."""
        metrics.gauge("edges", "Edges by state.", ("state",), self._edge_states)
        metrics.counter("edges_forgotten_total", "Edges forgotten after heartbeats stopped.")
        metrics.counter("origins_forgotten_total", "Origins forgotten after announcements stopped.")

    def _edge_states(self) -> dict[tuple[str, ...], float]:
        now = trio.current_time()
        out = {("in",): 0.0, ("out",): 0.0}
        for e in self.edges.values():
            out[("out",) if e.out_reason(now, self.config.heartbeat_timeout) else ("in",)] += 1
        return out

    def on_message(self, msg: ControlMessage, peer: str, now: float) -> None:
        """A validated control message from an edge or origin. ControlError (the connection
        is then closed) if it would grow a full edge or origin table."""
        cfg = self.config
        if isinstance(msg, Heartbeat):
            edge = self.edges.get(msg.node)
            if edge is None:
                if len(self.edges) >= cfg.max_edges:
                    self.forget(now)
                if len(self.edges) >= cfg.max_edges:
                    raise ControlError(
                        f"edge table full ({cfg.max_edges} edges): refusing new edge {msg.node}",
                        TableFull.EDGES,
                    )
                edge = self.edges[msg.node] = EdgeState(msg.node, msg)
                log.info("edge %s joined (%s) from %s", msg.node, msg.http, peer)
            elif edge.heartbeat_stale(now, cfg.heartbeat_timeout):
                log.info("edge %s is back (heartbeats resumed)", msg.node)
            edge.heard(msg, now, peer)
        else:
            if msg.node not in self.origin_seen:
                if len(self.origin_seen) >= cfg.max_origins:
                    self.forget(now)
                if len(self.origin_seen) >= cfg.max_origins:
                    raise ControlError(
                        f"origin table full ({cfg.max_origins} origins): "
                        f"refusing new origin {msg.node}",
                        TableFull.ORIGINS,
                    )
                log.info("origin %s announced from %s", msg.node, peer)
            self.origin_streams[msg.node] = {s.key: s for s in msg.streams}
            self.origin_seen[msg.node] = now

    def connection_closed(self, peer: str) -> None:
        """The control connection `peer` closed: the edges whose heartbeats it carried (and
        no newer connection since) are out of rotation at once."""
        for edge in self.edges.values():
            if edge.peer == peer and edge.connected:
                edge.disconnected()

    def forget(self, now: float) -> None:
        """Drop edges and origins silent for more than `forget_after` seconds."""
        limit = self.config.forget_after
        for node, edge in list(self.edges.items()):
            if now - edge.last_heartbeat > limit:
                del self.edges[node]
                self.on_forget(node)
                self.metrics.inc("edges_forgotten_total")
                log.info("edge %s forgotten: no heartbeat for %g s", node, limit)
        for node, seen in list(self.origin_seen.items()):
            if now - seen > limit:
                del self.origin_seen[node]
                self.origin_streams.pop(node, None)
                self.metrics.inc("origins_forgotten_total")
                log.info("origin %s forgotten: no announcement for %g s", node, limit)

    def bitrate(self, stream: str) -> float:
        """The stream's measured bitrate (from the origins), or 0 if unknown."""
        for streams in self.origin_streams.values():
            info = streams.get(stream)
            if info is not None:
                return info.bitrate
        return 0.0

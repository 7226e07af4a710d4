"""Choosing an edge for each new viewer: which edges may take one more, the policy's pick,
and the admission queue when none can; every refusal carries its reason."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum

import trio

from balancer.edges import EdgeState, Excluded, Exclusion
from balancer.policy import EdgeView, make_policy
from balancer.table import NodeTable
from common.config import BalancerConfig
from common.serve.metrics import NodeMetrics

log = logging.getLogger("livecdn.balancer")

QUEUE_POLL = 0.2  # seconds between a queued request's looks for room


class RejectReason(StrEnum):
    """Why a viewer was refused (the label of rejects_total)."""

    FULL = "full"  # some edge was left out for lack of room
    NO_EDGE = "no_edge"  # no edge in rotation at all
    QUEUE_FULL = "queue_full"  # the admission queue had no place either


@dataclass(frozen=True)
class NoRoom:
    """No edge can take a viewer: each known edge's exclusion, and with `queued`, the
    admission queue was full (that many waiting)."""

    excluded: dict[str, Excluded] = field(default_factory=dict)
    queued: int | None = None

    @property
    def reason(self) -> RejectReason:
        """The metrics label."""
        if self.queued is not None:
            return RejectReason.QUEUE_FULL
        if any(e.why is Exclusion.FULL for e in self.excluded.values()):
            return RejectReason.FULL
        return RejectReason.NO_EDGE

    def __str__(self) -> str:
        edges = "; ".join(f"{k}: {v}" for k, v in sorted(self.excluded.items())) or "no edges known"
        if self.queued is not None:
            return f"admission queue full ({self.queued} waiting); {edges}"
        return edges


@dataclass(frozen=True)
class Routed:
    """The edge picked for one new viewer, and the policy's reason."""

    edge: EdgeState
    reason: str


class Router:
    """Picks edges for new viewers (counting them until the edge's next heartbeat)."""

    def __init__(self, config: BalancerConfig, table: NodeTable, metrics: NodeMetrics) -> None:
        self.config = config
        self.table = table
        self.metrics = metrics
        self.policy = make_policy(config.policy, hash_balance_factor=config.hash_balance_factor)
        self.queued = 0  # requests waiting in the admission queue
        metrics.counter("routes_total", "Viewers routed, by edge.", ("edge",))
        metrics.counter("rejects_total", "Viewers refused (503), by reason.", ("reason",))
        metrics.gauge(
            "admission_queue", "Requests waiting for room.", (), lambda: {(): self.queued}
        )

    def forget_edge(self, edge: str) -> None:
        """An edge was forgotten: so is its routes_total row."""
        self.metrics.drop("routes_total", (edge,))

    def eligible(self, stream: str) -> tuple[list[EdgeView], dict[str, Excluded]]:
        """Edges that may take one more viewer of `stream`, and why the others may not."""
        now = trio.current_time()
        bitrate = self.table.bitrate(stream)
        views, excluded = [], {}
        for edge in self.table.edges.values():
            why = edge.out_reason(now, self.config.heartbeat_timeout)
            if why is None:
                v = edge.view()
                if v.capacity_viewers and v.viewers + 1 > v.capacity_viewers:
                    why = Excluded(
                        Exclusion.FULL, f"full: {v.viewers}/{v.capacity_viewers} viewers"
                    )
                elif v.capacity_bps and v.egress_bps + bitrate > v.capacity_bps:
                    why = Excluded(
                        Exclusion.FULL,
                        f"full: {v.egress_bps / 1e6:.1f}+{bitrate / 1e6:.1f} "
                        f"of {v.capacity_bps / 1e6:.1f} Mbps",
                    )
                else:
                    views.append(v)
                    continue
            excluded[edge.id] = why
        return views, excluded

    def choose(self, stream: str, *, retry: bool = False) -> Routed | NoRoom:
        """Pick an edge for one new viewer of `stream` (with the policy's reason), or say
        why none can take it; logged (a queued request's retries that still find no room
        only at debug level)."""
        views, excluded = self.eligible(stream)
        choice = self.policy.choose(stream, views)
        if choice is None:
            none = NoRoom(excluded)
            log.log(
                logging.DEBUG if retry else logging.INFO,
                "route %s: no edge can take it (%s)",
                stream,
                none,
            )
            return none
        edge = self.table.edges[choice.edge.id]
        edge.assigned += 1
        edge.routed_total += 1
        self.metrics.inc("routes_total", labels=(edge.id,))
        log.info("route %s -> %s: %s", stream, edge.id, choice.reason)
        return Routed(edge, choice.reason)

    async def admit(self, stream: str) -> Routed | NoRoom:
        """An edge for one new viewer, or why not (counted in rejects_total). With
        `overflow = "queue"` up to `queue_max` requests wait `queue_timeout` for room; any
        more are refused at once."""
        cfg = self.config
        routed = self.choose(stream)
        if isinstance(routed, NoRoom) and cfg.overflow == "queue":
            if self.queued >= cfg.queue_max:
                routed = NoRoom(routed.excluded, self.queued)
            else:
                routed = await self._wait(stream, routed)
        if isinstance(routed, NoRoom):
            self.metrics.inc("rejects_total", labels=(routed.reason,))
        return routed

    async def _wait(self, stream: str, routed: NoRoom) -> Routed | NoRoom:
        """Look for room every QUEUE_POLL seconds, for up to `queue_timeout`."""
        timeout = self.config.queue_timeout
        self.queued += 1
        try:
            with trio.move_on_after(timeout):
                while True:
                    await trio.sleep(QUEUE_POLL)
                    found = self.choose(stream, retry=True)
                    if not isinstance(found, NoRoom):
                        return found
                    routed = found
        finally:
            self.queued -= 1
        log.info("route %s: no edge could take it within %g s (%s)", stream, timeout, routed)
        return routed

"""One edge as the balancer sees it: its latest heartbeat, its health (changed in one place),
and why it is out of rotation."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import Enum, StrEnum

from balancer.policy import EdgeView
from common.proto.control import Heartbeat

log = logging.getLogger("livecdn.balancer")


class Health(Enum):
    """What the active health checks say of an edge (with rise/fall thresholds)."""

    UP = "up"
    DOWN = "down"


class Exclusion(StrEnum):
    """Why an edge cannot take a new viewer."""

    GONE = "gone"  # the control connection that carried its heartbeats closed
    STALE = "stale"  # its heartbeats stopped
    FAILING = "failing"  # its health checks fail
    DRAINING = "draining"
    FULL = "full"  # no room for one more viewer (viewers or bandwidth)


@dataclass(frozen=True)
class Excluded:
    """An edge left out of a choice: why, and the detail shown in logs and the API."""

    why: Exclusion
    detail: str

    def __str__(self) -> str:
        return self.detail


@dataclass
class EdgeState:
    """What the balancer knows about one edge: its latest (validated) heartbeat and the
    balancer's own view of it (health checks, drain, viewers sent since that heartbeat)."""

    id: str
    beat: Heartbeat
    last_heartbeat: float = -math.inf
    streams: frozenset[str] = frozenset()
    checks_ok: int = 0
    checks_failed: int = 0
    health: Health = Health.UP
    check_error: str = ""
    draining: bool = False
    assigned: int = 0  # viewers sent since the last heartbeat (not yet in its count)
    routed_total: int = 0
    peer: str = ""  # the control connection its last heartbeat came on
    connected: bool = True  # that connection is open

    def __post_init__(self) -> None:
        self.streams = frozenset(self.beat.streams)

    @property
    def http(self) -> str:
        """The edge's base HTTP URL (http://host:port)."""
        return self.beat.http

    @property
    def rtmp(self) -> str:
        """The edge's base RTMP URL (rtmp://host:port), or ""."""
        return self.beat.rtmp

    def base(self, scheme: str, secure: bool) -> str:
        """The edge's base URL for `scheme` ("http" or "rtmp") for a viewer: its TLS
        listener's (https://, rtmps://) if the viewer came over TLS and the edge has one."""
        tls = getattr(self.beat, scheme + "s") if secure else ""
        return tls or getattr(self.beat, scheme)

    def heard(self, beat: Heartbeat, now: float, peer: str = "") -> None:
        """A new heartbeat (on the control connection `peer`): it replaces what the edge
        said before."""
        if not self.connected:
            log.info("edge %s reconnected from %s", self.id, peer)
        self.peer, self.connected = peer, True
        self.beat = beat
        self.streams = frozenset(beat.streams)
        self.last_heartbeat = now
        self.assigned = 0

    def disconnected(self) -> None:
        """Its control connection closed (a killed or stopping edge's does at once): out of
        rotation until a heartbeat comes again, without waiting for heartbeat_timeout."""
        self.connected = False
        log.warning("edge %s out of rotation: its control connection %s closed", self.id, self.peer)

    def heartbeat_stale(self, now: float, timeout: float) -> bool:
        """True if the edge's heartbeats stopped more than `timeout` ago."""
        return now - self.last_heartbeat > timeout

    def reporting(self, now: float, timeout: float) -> bool:
        """True while its reports are current (connected, heartbeats within `timeout`): only
        then are its viewers counted; a dead edge's last count is no one watching."""
        return self.connected and not self.heartbeat_stale(now, timeout)

    def check_passed(self, rise: int) -> None:
        """A health check passed: back up after `rise` in a row."""
        self.checks_ok += 1
        self.checks_failed = 0
        if self.health is Health.DOWN and self.checks_ok >= rise:
            self.set_health(Health.UP, f"{rise} checks passed")

    def check_failed(self, error: str, fall: int) -> None:
        """A health check failed with `error`: down after `fall` in a row."""
        self.checks_failed += 1
        self.checks_ok = 0
        self.check_error = error
        if self.health is Health.UP and self.checks_failed >= fall:
            self.set_health(Health.DOWN, error)

    def set_health(self, health: Health, why: str) -> None:
        """The one place the edge's health changes; the transition is logged."""
        if health is self.health:
            return
        self.health = health
        if health is Health.UP:
            log.info("edge %s back in rotation (%s)", self.id, why)
        else:
            log.warning("edge %s out of rotation: %s", self.id, why)

    def set_draining(self, draining: bool, why: str) -> None:
        """The one place the operator's drain changes; logged (even when unchanged)."""
        self.draining = draining
        log.info("edge %s %s %s", self.id, "draining" if draining else "undrained", why)

    def out_reason(self, now: float, timeout: float) -> Excluded | None:
        """Why the edge is out of rotation, or None if it is in."""
        if not self.connected:
            return Excluded(Exclusion.GONE, "control connection closed")
        if self.heartbeat_stale(now, timeout):
            return Excluded(Exclusion.STALE, f"no heartbeat for {timeout:g} s")
        if self.health is Health.DOWN:
            return Excluded(Exclusion.FAILING, f"health check failing: {self.check_error}")
        if self.draining or self.beat.draining:
            return Excluded(Exclusion.DRAINING, "draining")
        return None

    def view(self) -> EdgeView:
        """The policy's view, counting viewers sent since the last heartbeat."""
        b = self.beat
        return EdgeView(
            id=self.id,
            weight=b.weight,
            viewers=b.viewers + self.assigned,
            capacity_viewers=b.capacity_viewers,
            egress_bps=b.egress_bps,
            capacity_bps=b.capacity_bps,
            streams=self.streams,
        )

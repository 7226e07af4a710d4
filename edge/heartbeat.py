"""What the edge reports to the balancer every second: where it listens, its load, its
capacity and the busiest streams it holds."""

from __future__ import annotations

from collections.abc import Callable

import trio

from common.config import EdgeConfig
from common.proto.control import MAX_STREAMS, ControlError, Heartbeat, check_stream_key
from common.serve.node import NodeAddress


def advertised_host(config: EdgeConfig) -> str:
    """The host viewers reach this edge at, as it goes in a URL."""
    host = config.public_host or ("127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address in a URL
    return host


def busiest(viewers: dict[tuple[str, str], int]) -> dict[str, int]:
    """Viewers by stream key, the busiest MAX_STREAMS streams (ties by key); keys the
    balancer would refuse are left out (they cannot be routed anyway)."""
    streams: dict[str, int] = {}
    for (app, name), n in viewers.items():
        try:
            streams[check_stream_key(f"{app}/{name}")] = n
        except ControlError:
            continue
    if len(streams) > MAX_STREAMS:
        streams = dict(sorted(streams.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_STREAMS])
    return streams


class EdgeHeartbeat:
    """Builds the edge's heartbeats; call it once a second (the reporter does)."""

    def __init__(
        self,
        config: EdgeConfig,
        address: NodeAddress,
        *,
        held: Callable[[], dict[tuple[str, str], int]],
        viewers: Callable[[], int],
        sent: Callable[[], int],
    ) -> None:
        self.config = config
        self.address = address
        self.held = held
        self.viewers = viewers
        self.sent = sent
        self._beat_at = 0.0
        self._beat_sent = 0
        self.draining = False
        """Set when the edge drains: the balancer sends it no new viewers."""
        self.draining_told = trio.Event()
        """Set once a heartbeat saying so has been handed to the reporter."""

    def egress_bps(self) -> float:
        """Bits/s sent to viewers since the last call."""
        now = trio.current_time()
        sent = self.sent()
        elapsed = max(now - self._beat_at, 1e-3)
        egress = max(0.0, (sent - self._beat_sent) * 8 / elapsed)
        self._beat_at, self._beat_sent = now, sent
        return egress

    def __call__(self) -> list[Heartbeat]:
        """This second's heartbeat."""
        cfg, port = self.config, self.address
        host = advertised_host(cfg)
        if self.draining:
            self.draining_told.set()
        return [
            Heartbeat(
                node=cfg.node_id or f"edge-{port.http_port}",
                http=f"http://{host}:{port.http_port}",
                rtmp=f"rtmp://{host}:{port.rtmp_port}",
                viewers=self.viewers(),
                egress_bps=self.egress_bps(),
                streams=busiest(self.held()),
                capacity_viewers=cfg.capacity_viewers,
                capacity_bps=cfg.capacity_mbps * 1e6,
                weight=cfg.weight,
                region=cfg.region,
                draining=self.draining,
                https=f"https://{host}:{port.https_port}" if port.https_port else "",
                rtmps=f"rtmps://{host}:{port.rtmps_port}" if port.rtmps_port else "",
            )
        ]

"""`load --metrics-port`: the players' QoE as Prometheus metrics (livecdn_load_*), served
from the load run's own process while it plays. Every series is labelled by run (load, or
loadK for a file's Kth profile), shard (I/N), protocol and client profile: bounded, never
per player."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from common.serve.metrics import cumulative
from topology.players.qoe import LATENCY_BUCKETS, TTFF_BUCKETS
from topology.players.shard import Shard

LABELS = ["run", "shard", "protocol", "profile"]
Snapshot = Callable[[], dict[str, dict]]


class LoadMetrics:
    """A Prometheus collector of load runs' QoE snapshots (topology.players.qoe), one
    source per run and shard; a run started again under the same name replaces its source."""

    def __init__(self) -> None:
        self._sources: dict[tuple[str, str], Snapshot] = {}
        self._lock = threading.Lock()  # sources are added in trio, read by the HTTP thread

    def add(self, run: str, shard: Shard, snapshot: Snapshot) -> None:
        """Export what `snapshot()` returns (called at each scrape, from another thread:
        it must only read) as run `run`, share `shard`."""
        with self._lock:
            self._sources[(run, str(shard))] = snapshot

    def collect(self) -> Iterator[Metric]:
        """The metrics, summed from every source's latest snapshot."""
        players = GaugeMetricFamily("livecdn_load_players", "Simulated players by state "
                                    "(waiting, joining, playing, stalled, retrying; done or "
                                    "failed once the run ended)", labels=[*LABELS, "state"])  # fmt: skip
        ttff = HistogramMetricFamily("livecdn_load_ttff_seconds", "Time from a player's "
                                     "start to its first video keyframe", labels=LABELS)  # fmt: skip
        latency = HistogramMetricFamily("livecdn_load_latency_seconds", "Latency from the "
                                        "origin's clock stamp to the screen", labels=LABELS)  # fmt: skip
        counters = {
            "stalls": CounterMetricFamily("livecdn_load_stalls", "Playback stalls (buffer ran "
                                          "dry)", labels=LABELS),
            "stall_s": CounterMetricFamily("livecdn_load_stall_seconds", "Seconds spent "
                                           "stalled", labels=LABELS),
            "reconnects": CounterMetricFamily("livecdn_load_reconnects", "Plays joined again "
                                              "after a player's first", labels=LABELS),
            "bytes": CounterMetricFamily("livecdn_load_received_bytes", "Media bytes the "
                                         "players received", labels=LABELS),
        }  # fmt: skip
        failures = CounterMetricFamily("livecdn_load_session_failures", "Play sessions that "
                                       "ended in a failure, by kind (refused, network)",
                                       labels=[*LABELS, "kind"])  # fmt: skip
        with self._lock:
            sources = list(self._sources.items())
        for (run, shard), snapshot in sources:
            for g in snapshot().values():
                labels = [run, shard, g["protocol"], g["profile"]]
                for state, n in g["states"].items():
                    players.add_metric([*labels, state], n)
                ttff.add_metric(labels, cumulative(g["ttff"], TTFF_BUCKETS), g["ttff"]["sum"])
                latency.add_metric(
                    labels, cumulative(g["latency"], LATENCY_BUCKETS), g["latency"]["sum"]
                )
                for key, family in counters.items():
                    family.add_metric(labels, g[key])
                for kind, n in g["failures"].items():
                    failures.add_metric([*labels, kind], n)
        yield players
        yield ttff
        yield latency
        yield from counters.values()
        yield failures


CURRENT: ContextVar[LoadMetrics | None] = ContextVar("load_metrics", default=None)
"""The metrics a load run reports to (None: not served); set where `load` starts, so that
runs started deep inside a topology (its [[load]] profiles) report too."""


CONNECTIONS = 16  # connections served at once; more are closed at once
IDLE_TIMEOUT = 10.0  # seconds a connection may stay silent (a request, or reading the answer)


class QuietHandler(WSGIRequestHandler):
    """A request handler that logs nothing, its socket timing out after IDLE_TIMEOUT."""

    def setup(self) -> None:
        self.timeout = IDLE_TIMEOUT
        super().setup()

    def log_message(self, format: str, *args: object) -> None:
        """Log nothing."""


class BoundedServer(ThreadingMixIn, WSGIServer):
    """A threading WSGI server with at most `limit` connections (a thread each) at once:
    one more is closed as soon as it is accepted; each connection's socket times out after
    IDLE_TIMEOUT, so idle or slow clients cannot pile up threads."""

    daemon_threads = True
    request_queue_size = 128  # a burst of connections waits in the kernel, not in SYN retries

    def __init__(self, address: tuple[str, int], handler: type, limit: int = CONNECTIONS) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.slots = threading.BoundedSemaphore(limit)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def handle_error(self, request, client_address) -> None:
        """A failed connection (a client that timed out or went away) ends quietly."""

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def serve_metrics(host: str, port: int) -> tuple[LoadMetrics, BoundedServer]:
    """Serve /metrics of a new LoadMetrics on host:port (0: a free port) from a daemon
    thread (a BoundedServer); OSError if the port cannot be bound."""
    metrics = LoadMetrics()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    server = BoundedServer((host, port), QuietHandler)
    server.set_app(make_wsgi_app(registry))
    threading.Thread(target=server.serve_forever, name="load-metrics", daemon=True).start()
    return metrics, server

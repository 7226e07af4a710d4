"""Per-node Prometheus metrics: cheap plain counters on the hot path, exported at scrape time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class NodeMetrics(Collector):
    """Counters kept as plain Python numbers; gauges computed by callbacks at scrape time.

    `counters[(name, labels)]` are monotonically increasing; `gauges` maps a metric name to
    (help, label names, callback returning {label values: value}).
    """

    def __init__(self, node: str) -> None:
        self.node = node
        self.counters: Counter[tuple[str, tuple[str, ...]]] = Counter()
        self._counter_help: dict[
            str, tuple[str, tuple[str, ...], Callable[[], dict[tuple[str, ...], float]] | None]
        ] = {}
        self._gauges: dict[
            str, tuple[str, tuple[str, ...], Callable[[], dict[tuple[str, ...], float]]]
        ] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def counter(
        self,
        name: str,
        help_text: str,
        labels: tuple[str, ...] = (),
        callback: Callable[[], dict[tuple[str, ...], float]] | None = None,
    ) -> None:
        """Declare a counter; `callback` may supply values kept elsewhere (added to `inc`s)."""
        self._counter_help[name] = (help_text, labels, callback)

    def inc(self, name: str, value: float = 1, labels: tuple[str, ...] = ()) -> None:
        """Add to a counter."""
        self.counters[(name, labels)] += value

    def drop(self, name: str, labels: tuple[str, ...]) -> None:
        """Forget a counter's row (its subject is gone: a forgotten edge)."""
        self.counters.pop((name, labels), None)

    def gauge(
        self,
        name: str,
        help_text: str,
        labels: tuple[str, ...],
        callback: Callable[[], dict[tuple[str, ...], float]],
    ) -> None:
        """Declare a gauge whose values `callback` computes when scraped."""
        self._gauges[name] = (help_text, labels, callback)

    def collect(self) -> Iterable:
        """Yield metric families (prometheus_client Collector protocol)."""
        for name, (help_text, labels, callback) in self._counter_help.items():
            fam = CounterMetricFamily(f"livecdn_{name}", help_text, labels=list(labels))
            values: Counter[tuple[str, ...]] = Counter()
            for (cname, lvals), value in self.counters.items():
                if cname == name:
                    values[lvals] += value
            if callback is not None:
                values.update(callback())
            if not values and not labels:
                values[()] = 0
            for lvals, value in values.items():
                fam.add_metric(list(lvals), value)
            yield fam
        for name, (help_text, labels, callback) in self._gauges.items():
            fam = GaugeMetricFamily(f"livecdn_{name}", help_text, labels=list(labels))
            for lvals, value in callback().items():
                fam.add_metric(list(lvals), value)
            yield fam

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)

"""Per-node Prometheus metrics: cheap plain counters on the hot path, exported at scrape time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Counts of observed values by label values, in cumulative `buckets` (upper bounds)."""

    __slots__ = ("buckets", "rows")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.rows: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
        """label values -> (count per bucket, the last one +Inf; [sum])"""

    def observe(self, value: float, labels: tuple[str, ...] = ()) -> None:
        """Count one value."""
        row = self.rows.get(labels)
        if row is None:
            row = self.rows[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        counts, total = row
        at = 0
        for bound in self.buckets:
            if value <= bound:
                break
            at += 1
        counts[at] += 1
        total[0] += value


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
        self._histograms: dict[str, tuple[str, tuple[str, ...], Histogram]] = {}
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

    def histogram(
        self, name: str, help_text: str, labels: tuple[str, ...], histogram: Histogram
    ) -> None:
        """Declare a histogram whose counts `histogram` keeps."""
        self._histograms[name] = (help_text, labels, histogram)

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
        for name, (help_text, labels, hist) in self._histograms.items():
            fam = HistogramMetricFamily(f"livecdn_{name}", help_text, labels=list(labels))
            bounds = [*(str(b) for b in hist.buckets), "+Inf"]
            for lvals, (counts, total) in hist.rows.items():
                cumulative, running = [], 0
                for bound, n in zip(bounds, counts, strict=True):
                    running += n
                    cumulative.append((bound, running))
                fam.add_metric(list(lvals), cumulative, total[0])
            yield fam

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)

"""Per-node Prometheus metrics: cheap plain counters on the hot path, exported at scrape time."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def new_histogram(bounds: tuple[float, ...]) -> dict:
    """Counts per bucket (not cumulative; the last is +Inf) and the sum of the values: a
    plain dict, so that snapshots can be sent between processes and added up."""
    return {"counts": [0] * (len(bounds) + 1), "sum": 0.0}


def observe(hist: dict, bounds: tuple[float, ...], value: float) -> None:
    """Count `value` in its bucket (a bound is inclusive, as Prometheus' `le`)."""
    hist["counts"][bisect_left(bounds, value)] += 1
    hist["sum"] += value


def cumulative(hist: dict, bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    """A histogram as Prometheus' cumulative (le, count) pairs."""
    out, total = [], 0
    for bound, n in zip([*map(str, bounds), "+Inf"], hist["counts"], strict=True):
        total += n
        out.append((bound, total))
    return out


class Histogram:
    """A histogram of observed values by label values, in `buckets` (upper bounds)."""

    __slots__ = ("buckets", "rows")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.rows: dict[tuple[str, ...], dict] = {}
        """label values -> `new_histogram`"""

    def observe(self, value: float, labels: tuple[str, ...] = ()) -> None:
        """Count one value."""
        row = self.rows.get(labels)
        if row is None:
            row = self.rows[labels] = new_histogram(self.buckets)
        observe(row, self.buckets, value)


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
            for lvals, row in hist.rows.items():
                fam.add_metric(list(lvals), cumulative(row, hist.buckets), row["sum"])
            yield fam

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)

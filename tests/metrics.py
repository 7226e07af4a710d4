"""Read a node's Prometheus /metrics in tests: a value by name and labels, absent ones failing."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from common.net.httpclient import fetch

_REQUIRED = object()


async def scrape(node: int | str) -> str:
    """The /metrics text of a node: its HTTP port on 127.0.0.1, or its base URL."""
    base = f"http://127.0.0.1:{node}" if isinstance(node, int) else node
    body = (await fetch("GET", f"{base}/metrics")).body
    return body.decode()


def metric(text: str, name: str, default: float | object = _REQUIRED, **labels: str) -> float:
    """The sum of sample `name`'s values whose labels include `labels`, in exposition `text`.

    A declared family without a matching row reads 0 (a counter not yet counted); a family
    missing from `text`, or labels none of its rows carry, raise AssertionError unless a
    `default` is given, so a renamed or removed metric cannot pass as 0.
    """
    families = [f for f in text_string_to_metric_families(text) if name in _sample_names(f)]
    rows = [s for f in families for s in f.samples if s.name == name]
    if not families or (rows and not any(labels.keys() <= s.labels.keys() for s in rows)):
        if default is _REQUIRED:
            raise AssertionError(f"no metric {name} with labels {sorted(labels)} in:\n{text}")
        return float(default)  # type: ignore[arg-type]
    return sum(s.value for s in rows if labels.items() <= s.labels.items())


def _sample_names(family: Metric) -> tuple[str, ...]:
    """The names of a family's value samples (a counter's end in `_total`, a histogram's
    in `_bucket`, `_count` and `_sum`)."""
    if family.type == "counter":
        return (f"{family.name}_total",)
    if family.type == "histogram":
        return tuple(f"{family.name}{end}" for end in ("_bucket", "_count", "_sum"))
    return (family.name,)

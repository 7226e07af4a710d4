"""NodeMetrics histograms: cumulative buckets, bounds inclusive, and a node's workers'
histograms merged into one (each bucket summed)."""

from __future__ import annotations

import pytest

from common.serve.metrics import Histogram, NodeMetrics
from common.serve.workermerge import merge_metrics
from tests.metrics import metric


def exposition(values: list[float]) -> str:
    mt = NodeMetrics("test")
    hist = Histogram((0.01, 0.1, 1.0))
    mt.histogram("join_seconds", "Joins.", ("protocol",), hist)
    for v in values:
        hist.observe(v, ("rtmp",))
    return mt.render().decode()


def bucket(text: str, le: str) -> float:
    return metric(text, "livecdn_join_seconds_bucket", le=le, protocol="rtmp")


def test_buckets_are_cumulative_and_bounds_inclusive() -> None:
    text = exposition([0.005, 0.01, 0.05, 0.5, 3.0])
    assert bucket(text, "0.01") == 2  # 0.01 itself is in the 0.01 bucket
    assert bucket(text, "0.1") == 3
    assert bucket(text, "1.0") == 4
    assert bucket(text, "+Inf") == 5
    assert metric(text, "livecdn_join_seconds_count", protocol="rtmp") == 5
    assert metric(text, "livecdn_join_seconds_sum", protocol="rtmp") == pytest.approx(3.565)


def test_no_observations_no_rows() -> None:
    assert metric(exposition([]), "livecdn_join_seconds_count") == 0


def test_workers_histograms_merge_bucket_by_bucket() -> None:
    texts = {0: exposition([0.005, 0.5]), 1: exposition([0.05])}
    merged = merge_metrics(texts, {}).decode()
    assert bucket(merged, "0.01") == 1
    assert bucket(merged, "0.1") == 2
    assert bucket(merged, "+Inf") == 3
    assert metric(merged, "livecdn_join_seconds_count", protocol="rtmp") == 3

"""tests.metrics.metric: values by name and labels; a missing metric fails instead of reading 0."""

from __future__ import annotations

import pytest

from tests.metrics import metric

TEXT = """# HELP livecdn_hits_total h
# TYPE livecdn_hits_total counter
livecdn_hits_total{kind="a",node="n"} 3.0
livecdn_hits_total{kind="b",node="n"} 4.0
# HELP livecdn_misses_total h
# TYPE livecdn_misses_total counter
# HELP livecdn_bytes h
# TYPE livecdn_bytes gauge
livecdn_bytes 2.0
"""


def test_values_by_name_and_labels():
    assert metric(TEXT, "livecdn_hits_total", kind="a") == 3
    assert metric(TEXT, "livecdn_hits_total") == 7  # summed over the rows
    assert metric(TEXT, "livecdn_bytes") == 2


def test_a_declared_family_without_the_row_reads_zero():
    assert metric(TEXT, "livecdn_hits_total", kind="c") == 0
    assert metric(TEXT, "livecdn_misses_total", reason="x") == 0


@pytest.mark.parametrize(
    ("name", "labels"),
    [("livecdn_gone_total", {}), ("livecdn_hits", {}), ("livecdn_hits_total", {"knd": "a"})],
)
def test_a_missing_metric_or_label_fails_unless_a_default_is_given(name, labels):
    with pytest.raises(AssertionError):
        metric(TEXT, name, **labels)
    assert metric(TEXT, name, default=-1.0, **labels) == -1

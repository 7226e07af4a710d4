"""The one link-delay model: data leaves in the order it came, after delay +- jitter, and a
'lost' segment is late by a retransmission stall."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from topology.delayline import RETRANSMIT_STALL, DelayLine


def test_a_fixed_delay_is_added_to_each_send() -> None:
    line = DelayLine(random.Random(1))
    assert line.due(10.0, 100, 0) == pytest.approx(10.1)
    assert line.due(10.5, 100, 0) == pytest.approx(10.6)
    assert line.delay_s(0, 0) == 0.0


@given(
    sends=st.lists(st.floats(0, 0.05), min_size=1, max_size=50),
    delay=st.floats(0, 500),
    jitter=st.floats(0, 500),
    seed=st.integers(0, 1000),
)
def test_data_leaves_in_order_and_never_early(sends, delay, jitter, seed) -> None:
    line = DelayLine(random.Random(seed))
    now, last = 0.0, 0.0
    for gap in sends:
        now += gap
        due = line.due(now, delay, jitter)
        assert due >= last and due >= now
        assert due <= max(last, now + (delay + jitter) / 1000) + 1e-9
        last = due


def test_loss_costs_a_retransmission_stall() -> None:
    line = DelayLine(random.Random(1))
    assert line.due(0.0, 10, 0, loss=1.0) == pytest.approx(0.01 + RETRANSMIT_STALL)
    assert DelayLine(random.Random(1)).due(0.0, 10, 0, loss=0.0) == pytest.approx(0.01)

"""Backoff: the delay sequence, its cap and its resets (common/proto/backoff.py)."""

from __future__ import annotations

from common.proto.backoff import Backoff


def test_delays_double_up_to_the_cap() -> None:
    b = Backoff(0.5, 3.0)
    assert [b.failed() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_stable_run_starts_again_from_the_first_delay() -> None:
    b = Backoff(1.0, 30.0, stable=60.0)
    assert [b.failed(ran_for=5.0) for _ in range(3)] == [1.0, 2.0, 4.0]
    assert b.failed(ran_for=59.9) == 8.0  # not quite stable
    assert b.failed(ran_for=60.0) == 1.0
    assert b.failed() == 2.0


def test_reset_after_a_success() -> None:
    b = Backoff(1.0, 10.0)
    b.failed(), b.failed()
    b.reset()
    assert b.failed() == 1.0

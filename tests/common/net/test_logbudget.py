"""The log budget: a burst goes out line by line, a flood is summed up once per window."""

from __future__ import annotations

import logging

from common.net.logbudget import LogBudget


def test_a_flood_is_told_in_one_line_per_window(caplog) -> None:
    log = logging.getLogger("test.budget")
    budget = LogBudget(log, "strangers closed", burst=3, window=10.0)
    with caplog.at_level(logging.INFO, logger="test.budget"):
        for i in range(1000):
            budget.info(100.0 + i * 0.001, "closing %d", i)
        budget.flush(105.0)  # the window has not passed: nothing yet
        assert [r.getMessage() for r in caplog.records] == ["closing 0", "closing 1", "closing 2"]
        budget.flush(111.0)
        assert caplog.records[-1].getMessage() == (
            "997 more strangers closed in the last 10 s (not logged one by one)"
        )
        budget.info(112.0, "closing %s", "again")  # a new window: line by line again
        assert caplog.records[-1].getMessage() == "closing again"
        assert len(caplog.records) == 5

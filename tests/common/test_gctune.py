"""The node's garbage-collector settings."""

from __future__ import annotations

import gc

from common.serve.gctune import OLDER_THRESHOLDS, YOUNG_THRESHOLD, tune_gc


def test_tune_gc_freezes_what_exists_and_collects_cycles_still() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
        assert gc.get_freeze_count() > 0

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        del a, b
        assert gc.collect() >= 2  # a cycle made after start-up is still freed
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

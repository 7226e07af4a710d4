"""Garbage-collector settings for a serving node.

A node allocates a few short-lived objects per request or frame, almost none of which form
reference cycles, while it holds tens of thousands of long-lived ones (modules, config,
connections' state). With CPython's default thresholds the young generation is collected
every 700 allocations and each older collection walks all those long-lived objects again:
a fifth of an HLS edge's CPU went there. After start-up the objects that exist are moved
out of the collector's sight (`gc.freeze`), and collections run less often; cycles are
still collected, so memory stays bounded.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
"""Allocations (net of deallocations) between young-generation collections (default 700)."""
OLDER_THRESHOLDS = (20, 100)
"""Young collections per middle one, middle ones per full one (default 10, 10)."""


def tune_gc() -> None:
    """Freeze what exists now (the node once started) and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)

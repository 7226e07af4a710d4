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

YOUNG_THRESHOLD = 10_000
"""Allocations (net of deallocations) between young-generation collections (default 700).
A collection's pause grows with the objects it walks (about 0.3-0.6 us each here) and a
joining viewer leaves about 77 behind (its tasks, coroutines, session): with 50,000 a
2000-viewer ramp saw three 17-32 ms pauses on the edge, every connection's round trips
waiting behind them; with 10,000, 3-5 ms."""
OLDER_THRESHOLDS = (1, 100)
"""Young collections per middle one (a middle one follows every two young ones and walks about
three young ones' worth: 7-15 ms at 10,000), middle ones per full one (default 10, 10;
CPython also waits until a full collection would walk a quarter more long-lived objects than
the last one). At N = 2000, against (50,000, 20, 100): collector time over an RTMP ramp 92 /
85 against 82 / 79 ms, over an HLS run 30 / 26 against 20 / 10 ms; longest pause 15 / 12
against 32 / 29 ms; loaded RTMP join p99 12.0 / 11.1 against 19.8 / 19.4 ms."""


def tune_gc() -> None:
    """Freeze what exists now (the node once started) and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)

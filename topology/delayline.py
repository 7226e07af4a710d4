"""The one link-delay model (sans-IO): delay +- jitter, loss as a retransmission stall, and
first in, first out; used by the link proxy and by the players' client links."""

from __future__ import annotations

import random

RETRANSMIT_STALL = 0.2
"""Seconds a 'lost' segment is held back (about TCP's minimum retransmission timeout)."""


class DelayLine:
    """When each piece of data sent into one direction of a link comes out of it."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.last_due = 0.0

    def delay_s(self, delay_ms: float, jitter_ms: float) -> float:
        """One draw of the link's one-way delay +- jitter, in seconds (never negative)."""
        jitter = self.rng.uniform(-jitter_ms, jitter_ms) if jitter_ms else 0.0
        return max(0.0, delay_ms + jitter) / 1000.0

    def due(self, now: float, delay_ms: float, jitter_ms: float, loss: float = 0.0) -> float:
        """When data sent at `now` arrives: after its delay, never before the data sent
        before it, and a retransmission stall later when it is 'lost' (probability `loss`)."""
        due = max(self.last_due, now + self.delay_s(delay_ms, jitter_ms))
        if loss and self.rng.random() < loss:
            due += RETRANSMIT_STALL
        self.last_due = due
        return due

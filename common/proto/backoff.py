"""Retry delays: doubling from a first delay up to a cap, back to the first after a stable run."""

from __future__ import annotations

import math


class Backoff:
    """The delays before retries, sans-IO: the caller measures how long each attempt ran.

    Each failure's delay doubles the previous one, from `first` up to `most`; an attempt
    that ran at least `stable` seconds (or a `reset`) starts the sequence again."""

    __slots__ = ("first", "most", "stable", "_next")

    def __init__(self, first: float, most: float, stable: float = math.inf) -> None:
        self.first = first
        self.most = most
        self.stable = stable
        self._next = first

    def failed(self, ran_for: float = 0.0) -> float:
        """The delay before the next attempt, after one that failed when it had run
        `ran_for` seconds."""
        if ran_for >= self.stable:
            self._next = self.first
        delay = self._next
        self._next = min(delay * 2, self.most)
        return delay

    def reset(self) -> None:
        """An attempt succeeded: the next failure waits `first` again."""
        self._next = self.first

"""Log lines that strangers cause, within a budget: a flood of refused connections must not
fill the disk with one line each, nor hide what happened."""

from __future__ import annotations

import logging


class LogBudget:
    """At most `burst` lines per `window` seconds go out one by one; the rest are counted and
    told in one line when the window has passed (at the next line or `flush`)."""

    def __init__(self, log: logging.Logger, what: str, *, burst: int = 20, window: float = 10.0):
        self.log = log
        self.what = what
        self.burst = burst
        self.window = window
        self._ends = -1.0
        self._sent = 0
        self.suppressed = 0

    def info(self, now: float, msg: str, *args: object) -> None:
        """Log `msg % args` at info level if the window's budget allows; else count it."""
        self.flush(now)
        if self._sent < self.burst:
            self._sent += 1
            self.log.info(msg, *args)
        else:
            self.suppressed += 1

    def flush(self, now: float) -> None:
        """Once the window has passed: tell how many lines were held back, start another."""
        if now < self._ends:
            return
        if self.suppressed:
            self.log.warning(
                "%d more %s in the last %g s (not logged one by one)",
                self.suppressed,
                self.what,
                self.window,
            )
        self._ends, self._sent, self.suppressed = now + self.window, 0, 0

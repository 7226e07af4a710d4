"""Token buckets (sans-IO: the caller passes the clock) for rate limits and link emulation."""

from __future__ import annotations


class TokenBucket:
    """`rate` bytes per second with bursts of up to `burst` bytes; rate 0 means unlimited."""

    def __init__(self, rate: float, burst: float | None = None, *, now: float = 0.0) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate * 0.05, 16384.0)
        self.tokens = self.burst
        self.stamp = now

    def delay_for(self, size: int, now: float) -> float:
        """Take `size` bytes; return how long to wait before sending them (0 = now)."""
        if self.rate <= 0:
            return 0.0
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= size
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def set_rate(self, rate: float, now: float) -> None:
        """Change the rate (tokens so far are kept)."""
        self.delay_for(0, now)
        self.rate = rate

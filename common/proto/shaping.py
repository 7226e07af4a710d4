"""Token buckets and an HTB-like class shaper (sans-IO: the caller passes the clock)."""

from __future__ import annotations

from typing import Protocol


class Pacer(Protocol):
    """What paces one viewer: `start` when its join burst has gone out, then `delay_for`
    before each batch."""

    def start(self, now: float) -> None: ...

    def delay_for(self, size: int, now: float) -> float: ...


class TokenBucket:
    """`rate` bytes per second with bursts of up to `burst` bytes; rate 0 means unlimited.

    Tokens may go negative: a taker that overdraws reserves the time until they are back,
    so takers sharing one bucket queue behind each other and together get `rate`."""

    def __init__(self, rate: float, burst: float | None = None, *, now: float = 0.0) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate * 0.05, 16384.0)
        self.tokens = self.burst
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_for(self, size: int, now: float) -> float:
        """Seconds until `size` bytes could be taken (0 = now), taking nothing."""
        if self.rate <= 0:
            return 0.0
        self.refill(now)
        return max(0.0, (size - self.tokens) / self.rate)

    def take(self, size: int, now: float) -> None:
        self.refill(now)
        self.tokens -= size

    def delay_for(self, size: int, now: float) -> float:
        """Take `size` bytes; return how long to wait before sending them (0 = now)."""
        if self.rate <= 0:
            return 0.0
        self.take(size, now)
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def start(self, now: float) -> None:
        """Empty the bucket: pacing starts from here (the join burst was free)."""
        self.refill(now)
        self.tokens = 0.0

    def set_rate(self, rate: float, now: float) -> None:
        """Change the rate (tokens so far are kept)."""
        self.refill(now)
        self.rate = rate


class HtbClass:
    """One viewer class on one node, shared by all its viewers there (HTB-like):
    up to `rate` bytes/s is guaranteed; beyond it the class borrows from the node's link
    while the link has room, up to `ceil`. Counts what it let through."""

    def __init__(self, name: str, rate: float, ceil: float, link: TokenBucket | None) -> None:
        self.name = name
        burst = max(ceil * 0.05, 16384.0)
        self.assured = TokenBucket(rate, burst)
        self.ceiling = TokenBucket(ceil, burst)
        self.link = link
        self.sent_bytes = 0
        self.borrowed_bytes = 0

    def start(self, now: float) -> None:
        """A joining viewer's burst (its first GOP) is not charged to the class."""

    def set_rates(self, rate: float, ceil: float, now: float) -> None:
        """New assured rate and ceiling (a reload); its viewers keep being paced by it."""
        burst = max(ceil * 0.05, 16384.0)
        for bucket, new in ((self.assured, rate), (self.ceiling, ceil)):
            bucket.set_rate(new, now)
            bucket.burst = burst

    def delay_for(self, size: int, now: float) -> float:
        """Reserve `size` bytes for one viewer of the class; seconds to wait before sending."""
        assured = self.assured.wait_for(size, now)
        # Borrow only while the link has room now, as HTB does. Assured traffic does not wait
        # for the link, so a link in debt is booked ahead by it; a borrower booking a later
        # slot would share that slot with the assured traffic sent meanwhile.
        borrowing = assured > 0 and (self.link is None or self.link.wait_for(size, now) == 0)
        wait = max(self.ceiling.wait_for(size, now), 0.0 if borrowing else assured)
        # taken now: a bucket in debt earns it back at its rate, which waiting repays
        self.ceiling.take(size, now)
        if self.link is not None:
            self.link.take(size, now)
        if borrowing:
            self.borrowed_bytes += size
        else:
            self.assured.take(size, now)
        self.sent_bytes += size
        return wait


class Htb:
    """The viewer classes of one node under its link (`link_rate` bytes/s, 0: unlimited)."""

    def __init__(self, classes: dict[str, tuple[float, float]], link_rate: float = 0.0) -> None:
        self.link = TokenBucket(link_rate, max(link_rate * 0.05, 65536.0)) if link_rate else None
        self.classes = {
            name: HtbClass(name, rate, ceil, self.link) for name, (rate, ceil) in classes.items()
        }

    def set_classes(
        self, classes: dict[str, tuple[float, float]], link_rate: float, now: float
    ) -> None:
        """New rates (a reload): kept classes change theirs in place, new ones are added,
        and a class no longer listed stays for the viewers it paces. The link takes
        `link_rate` (0: unlimited), a link added now shapes every class."""
        if self.link is None and link_rate:
            self.link = TokenBucket(link_rate, max(link_rate * 0.05, 65536.0), now=now)
            for shaper in self.classes.values():
                shaper.link = self.link
        elif self.link is not None:
            self.link.set_rate(link_rate, now)
            self.link.burst = max(link_rate * 0.05, 65536.0)
        for name, (rate, ceil) in classes.items():
            if name in self.classes:
                self.classes[name].set_rates(rate, ceil, now)
            else:
                self.classes[name] = HtbClass(name, rate, ceil, self.link)

    def charge_unshaped(self, size: int, now: float) -> None:
        """Bytes the node sent outside the classes (unclassed viewers, join bursts): they
        used the link, so the classes have that much less to borrow."""
        if self.link is not None:
            self.link.take(size, now)

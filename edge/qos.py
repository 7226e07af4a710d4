"""Viewer classes on an edge: the class token check, the classes' HTB shaping, admission of
classed viewers (counted once admitted) and charging the shared link with unshaped bytes."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import trio

from common.config import EdgeConfig, class_rates
from common.proto import auth
from common.proto.shaping import Htb, Pacer
from common.serve.metrics import NodeMetrics

LINK_CHARGE_PERIOD = 0.1
"""Seconds between charges of the link with what went out unshaped."""


class Qos:
    """The edge's viewer classes: which class a request's token grants, and the shared
    HTB whose class pacers shape those viewers."""

    def __init__(self, config: EdgeConfig) -> None:
        self.secret = config.qos_secret
        self.classes = config.classes
        self.htb = Htb(class_rates(config.classes), config.capacity_mbps * 125_000)
        self.viewers: Counter[str] = Counter()
        """Classed viewers admitted, by class."""

    def class_of(self, app: str, name: str, query: dict[str, str]) -> str | None:
        """The viewer class in `query`'s token (None without one); PermissionError if the
        token is bad."""
        if not self.classes or "lc" not in query:
            return None
        klass = auth.check_class(self.secret, f"{app}/{name}", query, time.time())
        if klass is None or klass not in self.classes:
            raise PermissionError("invalid or expired viewer class token")
        return klass

    def pacer(self, klass: str) -> Pacer:
        """The pacer every viewer of `klass` on this edge shares."""
        return self.htb.classes[klass]

    def admit(self, app: str, name: str, query: dict[str, str]) -> Pacer | None:
        """A play viewer's pacer (None: unshaped); its class counts it only once its
        token is accepted (PermissionError otherwise)."""
        klass = self.class_of(app, name, query)
        if klass is None:
            return None
        self.viewers[klass] += 1
        return self.pacer(klass)

    async def charge_link(self, sent: Callable[[], int]) -> None:
        """Every LINK_CHARGE_PERIOD, charge the classes' link with what of `sent()` (all
        bytes to viewers so far) went out unshaped. Only with a link (capacity_mbps)."""
        charged = 0
        while True:
            await trio.sleep(LINK_CHARGE_PERIOD)
            unshaped = sent() - sum(c.sent_bytes for c in self.htb.classes.values())
            if unshaped > charged:
                self.htb.charge_unshaped(unshaped - charged, trio.current_time())
                charged = unshaped

    def register_metrics(self, mt: NodeMetrics) -> None:
        """Export the classes' numbers."""
        classes = self.htb.classes
        mt.counter(
            "class_viewers_total",
            "Viewers admitted with a viewer-class token, by class.",
            ("class",),
            lambda: {(k,): v for k, v in self.viewers.items()},
        )
        mt.counter(
            "class_bytes_total",
            "Bytes sent to viewers of each class after their join burst.",
            ("class",),
            lambda: {(k,): c.sent_bytes for k, c in classes.items()},
        )
        mt.counter(
            "class_borrowed_bytes_total",
            "Of those, bytes beyond the class's assured rate, borrowed from the edge's link.",
            ("class",),
            lambda: {(k,): c.borrowed_bytes for k, c in classes.items()},
        )

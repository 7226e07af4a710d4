"""Viewer classes on an edge: the class token check, the classes' HTB shaping, admission of
classed viewers (counted once admitted) and charging the shared link with unshaped bytes."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import trio

from common.config import EdgeConfig, class_rates, default_class
from common.proto import auth
from common.proto.shaping import Htb, HtbClass, Pacer
from common.serve.metrics import NodeMetrics

LINK_CHARGE_PERIOD = 0.1
"""Seconds between charges of the link with what went out unshaped."""


class AdmittedClass:
    """A class's shaper as its play viewers get it: `start`, called once per viewer when
    the fan-out admits it (its join burst has gone out), counts the viewer. One per class:
    nothing is built per viewer, and `delay_for` is the class's own."""

    def __init__(self, shaper: HtbClass, admitted: Counter[str]) -> None:
        self.shaper = shaper
        self.admitted = admitted
        self.delay_for = shaper.delay_for

    def start(self, now: float) -> None:
        """One more viewer of the class is served."""
        self.admitted[self.shaper.name] += 1
        self.shaper.start(now)


class Qos:
    """The edge's viewer classes: which class a request's token grants, and the shared
    HTB whose class pacers shape those viewers."""

    def __init__(self, config: EdgeConfig) -> None:
        self.secret = config.qos_secret
        self.classes = config.classes
        self.default = default_class(config.classes)
        """The class of viewers without a class token (the lowest-rate one)."""
        self.htb = Htb(class_rates(config.classes), config.capacity_mbps * 125_000)
        self.viewers: Counter[str] = Counter()
        """Classed play viewers admitted, by class."""
        self._admitted = {
            name: AdmittedClass(shaper, self.viewers) for name, shaper in self.htb.classes.items()
        }

    def reload(self, config: EdgeConfig) -> bool:
        """Take `config`'s classes, qos_secret and capacity_mbps (Htb.set_classes: playing
        viewers keep their class's shaper, whose rates change in place). True if the edge
        has a link only now (start `charge_link`)."""
        had_link = self.htb.link is not None
        self.htb.set_classes(
            class_rates(config.classes), config.capacity_mbps * 125_000, trio.current_time()
        )
        for name, shaper in self.htb.classes.items():
            if name not in self._admitted:
                self._admitted[name] = AdmittedClass(shaper, self.viewers)
        self.secret, self.classes = config.qos_secret, config.classes
        self.default = default_class(config.classes)
        return not had_link and self.htb.link is not None

    def class_of(self, app: str, name: str, query: dict[str, str]) -> str | None:
        """The viewer class in `query`'s token; without one, the default class (None
        only without classes), so dropping a token never gains bandwidth; PermissionError
        if the token is bad."""
        if not self.classes:
            return None
        klass = auth.presented_class(self.secret, self.classes, f"{app}/{name}", query, time.time())
        return klass or self.default

    def pacer(self, klass: str) -> Pacer:
        """The shaper every viewer of `klass` on this edge shares (HLS segments)."""
        return self.htb.classes[klass]

    def play_pacer(self, app: str, name: str, query: dict[str, str]) -> Pacer | None:
        """An HTTP-FLV or RTMP viewer's pacer (None: unshaped, only without classes;
        PermissionError: a bad token). The viewer counts for its class once the fan-out admits it: not when
        the stream is missing, refused, or the request a HEAD."""
        klass = self.class_of(app, name, query)
        return None if klass is None else self._admitted[klass]

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
            "Viewers admitted by class (the default class: those without a class token).",
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

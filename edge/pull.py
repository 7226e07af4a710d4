"""Pull-on-miss: one upstream per (edge, stream), with an explicit single-flight lifecycle.

    connecting --(parent plays)--> live --(last viewer leaves)--> lingering
        |                           |  ^                              |  \\
        |                           |  +------(viewer within linger)--+   (linger expires)
        |                       (broken/stalled: next parent, viewers stay)     |
        +--(parent: no such stream)--> not found (cached briefly)               v
                                    (publisher stopped) --------------------> closed

The first viewer creates the `Upstream`; later viewers wait on the same pending connect.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from common.play import Fanout, Subscription
from common.stream import Stream
from edge.feeds import Feed, NotFound, ParentError, open_feed

log = logging.getLogger("livecdn.edge")

Connector = Callable[[str, str, str], Awaitable[Feed]]


@dataclass(frozen=True)
class PullSettings:
    """Timing of the upstream lifecycle."""

    linger: float = 10.0
    not_found_ttl: float = 2.0
    connect_timeout: float = 5.0
    stall_timeout: float = 5.0
    retry_seconds: float = 10.0
    retry_pause: float = 0.5


class PullStats:
    """Counters of the pull manager, for metrics."""

    def __init__(self) -> None:
        self.started = 0
        self.stopped: Counter[str] = Counter()
        self.failovers = 0
        self.bytes_from_parents = 0
        self.not_found_cached = 0
        self.not_found = 0


class Upstream:
    """The pull of one stream from a parent, shared by all its viewers on this edge."""

    def __init__(self, manager: PullManager, app: str, name: str) -> None:
        self.manager = manager
        self.app = app
        self.name = name
        self.stream: Stream = manager.make_stream(app, name)
        self.fanout: Fanout = manager.make_fanout(self.stream)
        self.state = "connecting"
        self.viewers = 0
        self.ready = trio.Event()
        self.found = False
        self.parent: str | None = None
        self.since = time.time()
        self.failovers = 0
        self.bytes_from_parent = 0
        self._feed: Feed | None = None
        self._changed = trio.Event()
        self._idle_since = trio.current_time()
        self._scope = trio.CancelScope()

    # ------------------------------------------------------------------ viewers

    def acquire(self) -> None:
        """A viewer arrives (cancels a linger in progress)."""
        self.viewers += 1
        if self.state == "lingering":
            self.state = "live"
            log.info(
                "upstream %s/%s: viewer back within the linger, reusing it", self.app, self.name
            )
        self._notify()

    def release(self) -> None:
        """A viewer leaves; the last one starts the linger timer."""
        self.viewers -= 1
        if self.viewers == 0:
            self._idle_since = trio.current_time()
        if self.viewers == 0 and self.state == "live":
            self.state = "lingering"
            log.info(
                "upstream %s/%s: no viewers, lingering %g s",
                self.app,
                self.name,
                self.manager.settings.linger,
            )
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def info(self) -> dict:
        """JSON description for the API."""
        return {
            "app": self.app,
            "name": self.name,
            "viewers": {**self.fanout.viewers(), "total": self.viewers},
            "upstream": {
                "parent": self.parent,
                "state": self.state,
                "bytes_from_parent": self.bytes_from_parent + self.feed_bytes(),
                "since": self.since,
                "failovers": self.failovers,
            },
            "dropped_frames": self.stream.stats.dropped_frames,
        }

    def feed_bytes(self) -> int:
        """Bytes received on the current upstream connection so far."""
        return self._feed.bytes_in if self._feed is not None else 0

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Pull until the stream ends, the linger expires, or the parents are gone."""
        reason = "cancelled"
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.fanout.run)
                    nursery.start_soon(self._linger_watch)
                    reason = await self._pull()
                    nursery.cancel_scope.cancel()
        finally:
            self.state = "closed"
            self.fanout.close()
            self.ready.set()
            self.manager.finished(self, reason)

    def stop(self, reason: str) -> None:
        """Close the upstream now."""
        self.state = "closed"
        self.manager.finished(self, reason)
        self._scope.cancel()

    async def _linger_watch(self) -> None:
        linger = self.manager.settings.linger
        while True:
            if self.viewers <= 0:
                deadline = self._idle_since + linger
                if trio.current_time() >= deadline:
                    log.info(
                        "upstream %s/%s: no viewers for %g s, closing it",
                        self.app,
                        self.name,
                        linger,
                    )
                    self.stop("linger expired")
                    return
                with trio.move_on_at(deadline):
                    await self._changed.wait()
                continue
            await self._changed.wait()

    async def _pull(self) -> str:
        settings = self.manager.settings
        parents = self.manager.parents
        index = 0
        failures = 0
        down_since: float | None = None
        was_live = False
        while True:
            parent = parents[index % len(parents)]
            try:
                with trio.fail_after(settings.connect_timeout):
                    feed = await self.manager.connector(parent, self.app, self.name)
            except NotFound:
                if not was_live:
                    log.info("upstream %s/%s: %s has no such stream", self.app, self.name, parent)
                    self.manager.remember_not_found(self.app, self.name)
                    self.ready.set()
                    return "not found at parent"
                log.info("upstream %s/%s: gone at %s, stream ended", self.app, self.name, parent)
                return "stream ended at parent"
            except (ParentError, OSError, trio.TooSlowError) as exc:
                why = str(exc) or "connect timed out"
                log.warning(
                    "upstream %s/%s: parent %s failed: %s", self.app, self.name, parent, why
                )
                failures += 1
                index += 1
                now = trio.current_time()
                down_since = down_since if down_since is not None else now
                if failures % len(parents) == 0:
                    if not was_live:
                        self.ready.set()
                        return "no parent reachable"
                    if now - down_since >= settings.retry_seconds:
                        return f"no parent reachable for {settings.retry_seconds:g} s"
                    await trio.sleep(settings.retry_pause)
                continue
            self._feed = feed
            if was_live:
                self.failovers += 1
                self.manager.stats.failovers += 1
                log.warning(
                    "upstream %s/%s: failover to %s (viewers stay: %d)",
                    self.app,
                    self.name,
                    parent,
                    self.viewers,
                )
            self.stream.new_source()
            self.parent = parent
            self.found = was_live = True
            failures = 0
            down_since = None
            if self.state == "connecting":
                self.state = "live" if self.viewers > 0 else "lingering"
            self.ready.set()
            try:
                ended = await self._relay(feed)
            except ParentError as exc:
                log.warning("upstream %s/%s: %s: %s", self.app, self.name, parent, exc)
                index += 1
                continue
            finally:
                self.bytes_from_parent += feed.bytes_in
                self.manager.stats.bytes_from_parents += feed.bytes_in
                self._feed = None
                feed.close()
            if ended:
                log.info("upstream %s/%s: publisher stopped at %s", self.app, self.name, parent)
                return "publisher stopped"

    async def _relay(self, feed: Feed) -> bool:
        """Copy items into the stream; True on a clean end; ParentError on break or stall."""
        stall = self.manager.settings.stall_timeout
        stream = self.stream
        last_media = trio.current_time()
        while True:
            items = None
            with trio.move_on_at(last_media + stall):
                items = await feed.receive()
            if items is None:
                raise ParentError(f"stalled: no media for {stall:g} s")
            for item in items:
                kind = item[0]
                if kind == "media":
                    stream.push(item[1], item[2], item[3])
                    last_media = trio.current_time()
                elif kind == "meta":
                    stream.set_metadata(item[1], item[2])
                elif kind == "end":
                    return True


class PullManager:
    """The edge's upstreams by (app, name), and the brief memory of missing streams."""

    def __init__(
        self,
        parents: list[str],
        settings: PullSettings,
        *,
        make_stream: Callable[[str, str], Stream],
        make_fanout: Callable[[Stream], Fanout],
        drop_fanout: Callable[[Stream], None] = lambda s: None,
        connector: Connector = open_feed,
    ) -> None:
        if not parents:
            raise ValueError("an edge needs at least one parent")
        self.parents = list(parents)
        self.settings = settings
        self.make_stream = make_stream
        self.make_fanout = make_fanout
        self.drop_fanout = drop_fanout
        self.connector = connector
        self.upstreams: dict[tuple[str, str], Upstream] = {}
        self.not_found: dict[tuple[str, str], float] = {}
        self.stats = PullStats()
        self.nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Own the upstream tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def subscribe(self, app: str, name: str) -> Subscription | None:
        """StreamSource: wait for the (possibly shared, pending) upstream of app/name."""
        key = (app, name)
        expiry = self.not_found.get(key)
        if expiry is not None:
            if expiry > trio.current_time():
                self.stats.not_found_cached += 1
                return None
            del self.not_found[key]
        up = self.upstreams.get(key)
        if up is None:
            up = Upstream(self, app, name)
            self.upstreams[key] = up
            self.stats.started += 1
            assert self.nursery is not None, "PullManager.run() is not running"
            self.nursery.start_soon(up.run)
            log.info("upstream %s/%s: first viewer, pulling from %s", app, name, self.parents[0])
        up.acquire()
        try:
            await up.ready.wait()
        except BaseException:
            up.release()
            raise
        if not up.found or up.state == "closed":
            up.release()
            self.stats.not_found += 1
            return None
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                up.release()

        return Subscription(up.fanout, release)

    def remember_not_found(self, app: str, name: str) -> None:
        """Cache a parent's 'no such stream' briefly."""
        if self.settings.not_found_ttl > 0:
            self.not_found[(app, name)] = trio.current_time() + self.settings.not_found_ttl

    def finished(self, up: Upstream, reason: str) -> None:
        """An upstream is over: forget it (idempotent)."""
        key = (up.app, up.name)
        if self.upstreams.get(key) is up:
            del self.upstreams[key]
            self.stats.stopped[reason] += 1
            self.drop_fanout(up.stream)
            log.info("upstream %s/%s closed: %s", up.app, up.name, reason)

"""HLS cut at the edge (hls_mode "package"): a stream's playlist is packaged here from the
same upstream its FLV and RTMP viewers share, for as long as HLS viewers keep asking."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypedDict

import trio

from common.media.stream import Stream
from common.net.supervise import log_failure
from common.serve.hlsstore import HlsStore
from common.serve.metrics import NodeMetrics
from common.serve.play import Subscription
from edge.pull import TooManyStreams

log = logging.getLogger("livecdn.edge")

Subscribe = Callable[[str, str], Awaitable[Subscription | None]]


class HlsPackaged(TypedDict):
    """What the edge packages of one stream (the streams API's `hls` in package mode)."""

    mode: str
    segments: int
    bytes: int
    ended: bool
    since: float


@dataclass
class Packaged:
    """One stream packaged at this edge."""

    key: tuple[str, str]
    asked: float
    """When an HLS viewer last asked for its playlist or a segment (trio time)."""
    since: float
    """When packaging started (wall clock)."""
    nursery: trio.Nursery | None = None
    """Runs its packagers (one per upstream stream: a new one after the publisher is back)."""
    stream: Stream | None = None
    """The upstream's stream packaged now."""


@dataclass
class _Start:
    """One request starting a stream's packaging; the others wait for its outcome."""

    done: trio.Event = field(default_factory=trio.Event)
    finished: bool = False
    """False if the starting request was cancelled (a waiter then tries itself)."""
    found: bool = False
    error: str | None = None


class EdgePackagers:
    """The streams packaged at this edge, into `store`.

    The first playlist request for a stream subscribes to its upstream (through `subscribe`,
    the pull manager's, so HLS and FLV/RTMP viewers share one pull) and starts the store's
    packager on it. Each HLS request keeps it going; after `idle` seconds without one, the
    packager stops, its playlist is forgotten and the hold on the upstream released (which
    then lingers as for any last viewer). At most `max_streams` streams are packaged."""

    def __init__(
        self, store: HlsStore, subscribe: Subscribe, *, idle: float, max_streams: int
    ) -> None:
        self.store = store
        self.subscribe = subscribe
        self.idle = idle
        self.max_streams = max_streams
        self.active: dict[tuple[str, str], Packaged] = {}
        self.started = 0
        self.stopped = 0
        self._starting: dict[tuple[str, str], _Start] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Own the packagers until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def asked(self, key: tuple[str, str]) -> None:
        """An HLS viewer asked for something of `key`: its packager goes on."""
        entry = self.active.get(key)
        if entry is not None:
            entry.asked = trio.current_time()

    def live(self, key: tuple[str, str]) -> Packaged | None:
        """`key`'s packaging while it packages a live upstream stream, else None."""
        entry = self.active.get(key)
        if entry is None or entry.stream is None or entry.stream.closed:
            return None
        return entry

    async def ensure(self, app: str, name: str) -> bool:
        """Package app/name from its live upstream (subscribing on the first request);
        whether there is a playlist to serve (False: the parents do not have the stream).
        TooManyStreams beyond `max_streams`, as the pull manager's own. Requests arriving
        while one starts it wait for that one's outcome."""
        key = (app, name)
        while True:
            self.asked(key)
            if self.live(key) is not None:
                return True
            start = self._starting.get(key)
            if start is None:
                break
            await start.done.wait()
            if start.error is not None:
                raise TooManyStreams(start.error)
            if start.finished:
                return start.found
        self._starting[key] = start = _Start()
        try:
            start.found = await self._start(key)
            start.finished = True
        except TooManyStreams as exc:
            start.error = str(exc)
            raise
        finally:
            del self._starting[key]
            start.done.set()
        return start.found

    async def _start(self, key: tuple[str, str]) -> bool:
        if key not in self.active and len(self.active) >= self.max_streams:
            raise TooManyStreams(f"too many streams packaged on this edge ({self.max_streams})")
        sub = await self.subscribe(*key)
        if sub is None:
            return key in self.store.playlists  # an ended playlist (ENDLIST) is still served
        try:
            entry = self.active.get(key)
            if entry is None:
                entry = Packaged(key, trio.current_time(), time.time())
                self.active[key] = entry
                assert self._nursery is not None, "EdgePackagers.run() is not running"
                await self._nursery.start(self._keep, entry)
            entry.stream = sub.fanout.stream
            assert entry.nursery is not None
            await entry.nursery.start(self._package, sub)
        except BaseException:
            sub.release()
            raise
        return True

    async def _package(self, sub: Subscription, *, task_status: trio.TaskStatus) -> None:
        """One upstream stream's packager (the store's), holding the upstream meanwhile."""
        try:
            await self.store.package(sub.fanout.stream, task_status=task_status)
        finally:
            sub.release()

    async def _keep(self, entry: Packaged, *, task_status: trio.TaskStatus) -> None:
        """Run `entry`'s packagers until no HLS viewer asked for `idle` seconds."""
        app, name = entry.key
        self.started += 1
        log.info("HLS %s/%s: packaging here from the upstream", app, name)
        try:
            async with trio.open_nursery() as nursery:
                entry.nursery = nursery
                task_status.started()
                while (idle_at := entry.asked + self.idle) > trio.current_time():
                    await trio.sleep_until(idle_at)
                if self.active.get(entry.key) is entry:
                    del self.active[entry.key]
                nursery.cancel_scope.cancel()
            log.info("HLS %s/%s: no HLS viewer for %g s, packaging stopped", app, name, self.idle)
        except Exception as exc:  # a bug here ends this stream's packaging, never the edge
            log_failure(f"HLS packaging of {app}/{name}", exc, log)
        finally:
            if self.active.get(entry.key) is entry:
                del self.active[entry.key]
            self.store.drop(entry.key)
            self.stopped += 1

    def describe(self) -> dict[tuple[str, str], HlsPackaged]:
        """What is packaged, by stream."""
        out: dict[tuple[str, str], HlsPackaged] = {}
        for key, entry in self.active.items():
            playlist = self.store.playlists.get(key)
            segments = playlist.segments if playlist is not None else []
            out[key] = {
                "mode": "package",
                "segments": len(segments),
                "bytes": sum(len(s.data) for s in segments),
                "ended": playlist is None or playlist.ended,
                "since": entry.since,
            }
        return out

    def register_metrics(self, mt: NodeMetrics) -> None:
        """Export the store's packaging counters (as the origin's) and the packagers."""
        self.store.register_metrics(mt)
        mt.gauge(
            "hls_packaged_streams",
            "Streams whose HLS this node packages now (edge: hls_mode package).",
            (),
            lambda: {(): len(self.active)},
        )
        mt.counter(
            "hls_packaging_started_total",
            "Streams this edge started packaging HLS for (an HLS viewer asked).",
            (),
            lambda: {(): self.started},
        )

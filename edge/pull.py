"""Pull-on-miss: one upstream per (edge, stream), with an explicit single-flight lifecycle.

    connecting --(parent plays)--> live --(last viewer leaves)--> lingering
        |                           |  ^                              |  \\
        |                           |  +------(viewer within linger)--+   (linger expires)
        |                       (broken/stalled/garbage, or the stream          |
        |                        lost at a restarting parent: next parent,      |
        |                        viewers stay, for up to retry_seconds)         |
        +--(parent: no such stream)--> not found (cached briefly)               v
                                    (publisher stopped) --------------------> closed

The first viewer creates the `Upstream`; later viewers wait on the same pending connect,
and are let in once the stream's tracks are known (or `tracks_wait` has passed). Whatever
goes wrong in one pull ends only that pull (`Upstream.run` never raises).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import trio

from common.config import EdgeConfig
from common.media.segclock import CLOCK_PREFIX, ClockState
from common.media.stream import Stream
from common.net.supervise import describe, log_failure
from common.proto.errors import ProtocolError, Unavailable
from common.proto.rtmp import messages as m
from common.proto.rtmp import session as rs
from common.proto.streamkey import StreamKey, shown
from common.serve.feeds import End, Failure, Feed, NotFound, ParentError, Tracks, open_feed
from common.serve.metrics import NodeMetrics
from common.serve.play import Fanout, Subscription

log = logging.getLogger("livecdn.edge")

Connector = Callable[[str, str, str], Awaitable[Feed]]

MAX_NOT_FOUND = 10_000
"""Entries of the negative cache of missing streams (it is keyed by what viewers ask for)."""


R = TypeVar("R", bound=StrEnum)


class TooManyStreams(Unavailable):
    """The edge already pulls `max_streams` streams: a new one is refused (503)."""


class UpstreamState(StrEnum):
    """Where an upstream is in its lifecycle (the module docstring draws it)."""

    CONNECTING = "connecting"
    LIVE = "live"
    LINGERING = "lingering"
    CLOSED = "closed"


class StopReason(StrEnum):
    """Why an upstream ended (the `reason` label of pulls_stopped_total)."""

    PUBLISHER_STOPPED = "publisher stopped"
    LINGER_EXPIRED = "linger expired"
    NOT_FOUND = "not found at parent"
    NO_PARENT = "no parent reachable"
    PARENTS_GONE = "no parent served the stream within retry_seconds"
    FAILED = "failed"
    """A bug inside the pull (logged with its traceback)."""
    CANCELLED = "cancelled"
    DRAINED = "edge drained"
    """The edge stops (SIGTERM): its viewers were closed after drain_timeout."""


class Refusal(StrEnum):
    """Why a new pull was refused before reaching a parent (pulls_refused_total)."""

    TOO_MANY_STREAMS = "too_many_streams"
    BAD_KEY = "bad_key"


@dataclass(frozen=True)
class PullSettings:
    """Timing of the upstream lifecycle."""

    linger: float = 10.0
    not_found_ttl: float = 2.0
    connect_timeout: float = 5.0
    stall_timeout: float = 5.0
    retry_seconds: float = 10.0
    retry_pause: float = 0.5
    tracks_wait: float = 1.0
    """After connecting, how long the first viewers wait for the stream's tracks to be known
    (the parent's FLV header flags or onMetaData, then the tracks' first messages)."""
    recovered_after: float = 5.0
    """A new upstream connection that has delivered media this long ends the outage: the
    next break gets a fresh `retry_seconds` (a parent that breaks sooner does not)."""

    @classmethod
    def from_config(cls, config: EdgeConfig) -> PullSettings:
        """The timings an edge's config sets."""
        return cls(
            linger=config.linger_seconds,
            not_found_ttl=config.not_found_ttl,
            connect_timeout=config.connect_timeout,
            stall_timeout=config.stall_timeout,
            retry_seconds=config.retry_seconds,
        )


class PullStats:
    """Counters of the pull manager, for metrics."""

    def __init__(self) -> None:
        self.started = 0
        self.stopped: Counter[StopReason] = Counter()
        self.failovers = 0
        self.bytes_from_parents = 0
        self.not_found_cached = 0
        self.not_found = 0
        self.failures: Counter[Failure] = Counter()
        """Failed upstream connections by reason."""
        self.refused: Counter[Refusal] = Counter()
        """New pulls refused before reaching a parent, by reason."""


def by_label(counts: Counter[R]) -> dict[tuple[str, ...], float]:
    """A counter keyed by reasons as metric values (the enum values are the labels)."""
    return {(reason.value,): n for reason, n in counts.items()}


class Upstream:
    """The pull of one stream from a parent, shared by all its viewers on this edge."""

    def __init__(self, manager: PullManager, app: str, name: str) -> None:
        self.manager = manager
        self.app = app
        self.name = name
        self.stream: Stream = manager.make_stream(app, name)
        self.fanout: Fanout = manager.make_fanout(self.stream)
        self.state = UpstreamState.CONNECTING
        self.viewers = 0
        self.ready = trio.Event()
        self.found = False
        self.parent: str | None = None
        self.since = time.time()
        self.failovers = 0
        self.bytes_from_parent = 0
        self.declared: tuple[bool, bool] | None = None  # (audio, video) the parent announced
        self.seen: set[int] = set()  # message types received (8 audio, 9 video)
        self._ready_by = float("inf")
        self._feed: Feed | None = None
        self._relaying: trio.CancelScope | None = None
        """The relay from the current parent (cancelled by `move`)."""
        self._changed = trio.Event()
        self._idle_since = trio.current_time()
        self._scope = trio.CancelScope()

    # ------------------------------------------------------------------ viewers

    def acquire(self) -> None:
        """A viewer arrives (cancels a linger in progress)."""
        self.viewers += 1
        if self.state is UpstreamState.LINGERING:
            self._set_state(UpstreamState.LIVE, "viewer back within the linger, reusing it")
        self._notify()

    def release(self) -> None:
        """A viewer leaves; the last one starts the linger timer."""
        self.viewers -= 1
        if self.viewers == 0:
            self._idle_since = trio.current_time()
        if self.viewers == 0 and self.state is UpstreamState.LIVE:
            linger = self.manager.settings.linger
            self._set_state(UpstreamState.LINGERING, f"no viewers, lingering {linger:g} s")
        self._notify()

    def _set_state(self, state: UpstreamState, why: str) -> None:
        """The one place the lifecycle state changes: logs the transition and why."""
        if state is self.state:
            return
        log.info("upstream %s: %s -> %s (%s)", self.key, self.state, state, why)
        self.state = state

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
        """Pull until the stream ends, the linger expires, or the parents are gone.

        Never raises (but Cancelled): whatever fails here ends only this pull, with one
        log line naming the stream, the parent and the reason; its viewers get the end
        of the stream.
        """
        reason = StopReason.CANCELLED
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.fanout.run)
                    nursery.start_soon(self._linger_watch)
                    reason = await self._pull()
                    nursery.cancel_scope.cancel()
        except Exception as exc:
            reason = StopReason.FAILED
            self.manager.stats.failures[Failure.UNEXPECTED] += 1
            log_failure(f"upstream {self.key} from {self.parent or '-'}", exc, log)
        finally:
            self._close(reason)
            self.fanout.close()
            self.ready.set()

    @property
    def key(self) -> str:
        """'app/name', for log lines."""
        return f"{self.app}/{self.name}"

    def stop(self, reason: StopReason) -> None:
        """Close the upstream now."""
        self._close(reason)
        self._scope.cancel()

    def _close(self, reason: StopReason) -> None:
        self._set_state(UpstreamState.CLOSED, reason)
        self.manager.finished(self, reason)

    async def _linger_watch(self) -> None:
        linger = self.manager.settings.linger
        while True:
            if self.viewers <= 0:
                deadline = self._idle_since + linger
                if trio.current_time() >= deadline:
                    log.info("upstream %s: no viewers for %g s, closing it", self.key, linger)
                    self.stop(StopReason.LINGER_EXPIRED)
                    return
                with trio.move_on_at(deadline):
                    await self._changed.wait()
                continue
            await self._changed.wait()

    def move(self) -> bool:
        """Leave the parent being relayed (a reload removed it) for the manager's parents, as
        a failover does: viewers stay. False if no relay runs (the next connection uses the
        new parents anyway)."""
        if self._relaying is None:
            return False
        self._relaying.cancel()
        return True

    def _failed(self, parent: str, kind: Failure, why: str) -> None:
        """One failed upstream connection: counted by kind, one log line."""
        self.manager.stats.failures[kind] += 1
        log.warning("upstream %s from %s failed (%s): %s", self.key, parent, kind, why)

    async def _pull(self) -> StopReason:
        """Connect, relay, fail over; return why the pull ended.

        Before the stream was ever live, each parent is tried once: a parent's "no such
        stream" ends the pull at once (remembered briefly). Once live, any break (connect
        failures, resets, garbage, stalls, and "no such stream" too: a parent restarting
        has not got its publisher back yet) moves on to the next parent, pausing
        `retry_pause` after each round of them, until `retry_seconds` have passed since
        the break; only a clean end from the parent (the publisher stopped) ends viewers.
        """
        settings = self.manager.settings
        index = 0
        tries = 0  # connections tried since the stream last flowed
        down_since: float | None = None
        was_live = False
        while True:
            parents = self.manager.parents  # a reload may have changed them
            if tries and tries % len(parents) == 0:
                if not was_live:
                    return StopReason.NO_PARENT
                if trio.current_time() - (down_since or 0.0) >= settings.retry_seconds:
                    return StopReason.PARENTS_GONE
                await trio.sleep(settings.retry_pause)
            parent = parents[index % len(parents)]
            tries += 1
            try:
                with trio.fail_after(settings.connect_timeout):
                    feed = await self.manager.connector(parent, self.app, self.name)
            except NotFound:
                if not was_live:
                    log.info("upstream %s: %s has no such stream", self.key, parent)
                    self.manager.remember_not_found(self.app, self.name)
                    return StopReason.NOT_FOUND
                self._failed(parent, Failure.NOT_FOUND, "no such stream (yet?)")
                index += 1
                continue
            except trio.TooSlowError:
                why = f"no answer within {settings.connect_timeout:g} s"
                self._failed(parent, Failure.TIMEOUT, why)
                index += 1
                continue
            except ParentError as exc:
                self._failed(parent, exc.kind, str(exc))
                index += 1
                continue
            except Exception as exc:  # a bug, or something no feed maps: this parent failed
                self.manager.stats.failures[Failure.UNEXPECTED] += 1
                log_failure(f"upstream {self.key}: connecting to {parent}", exc, log)
                index += 1
                continue
            self._feed = feed
            if was_live:
                self.failovers += 1
                self.manager.stats.failovers += 1
                log.warning(
                    "upstream %s: failover to %s (viewers stay: %d)",
                    self.key,
                    parent,
                    self.viewers,
                )
            else:
                self._ready_by = trio.current_time() + settings.tracks_wait
            self.stream.new_source()
            self.parent = parent
            self.found = was_live = True
            if self.state is UpstreamState.CONNECTING:
                state = UpstreamState.LIVE if self.viewers > 0 else UpstreamState.LINGERING
                self._set_state(state, f"playing from {parent}")
            connected = trio.current_time()
            flowing: list[float] = []  # when media first came on this connection
            ended = moved = False
            try:
                with trio.CancelScope() as relaying:
                    self._relaying = relaying
                    ended = await self._relay(feed, flowing)
                if moved := relaying.cancelled_caught:
                    log.info("upstream %s: %s is no parent any more: moving to %s",
                             self.key, parent, self.manager.parents[0])  # fmt: skip
            except ParentError as exc:
                self._failed(parent, exc.kind, str(exc))
                ended = False
            except ProtocolError as exc:  # a message the stream could not take
                why = f"bad message from the parent: {describe(exc)}"
                self._failed(parent, Failure.BAD_DATA, why)
                ended = False
            except Exception as exc:
                self.manager.stats.failures[Failure.UNEXPECTED] += 1
                log_failure(f"upstream {self.key} from {parent}", exc, log)
                ended = False
            finally:
                self.bytes_from_parent += feed.bytes_in
                self.manager.stats.bytes_from_parents += feed.bytes_in
                self._feed = self._relaying = None
                feed.close()
            if ended:
                log.info("upstream %s: publisher stopped at %s", self.key, parent)
                return StopReason.PUBLISHER_STOPPED
            # a break: viewers waiting for the tracks go ahead with what is known
            self._go_ready()
            now = trio.current_time()
            if moved or (flowing and now - flowing[0] >= settings.recovered_after):
                tries = 0  # this connection worked: a fresh outage starts now
                down_since = now
            elif down_since is None:
                down_since = connected
            index = 0 if moved else index + 1  # moved: from the first of the new parents

    async def _relay(self, feed: Feed, flowing: list[float]) -> bool:
        """Copy events into the stream; True on a clean end; ParentError on break or stall.

        Appends the time of the first media to `flowing`. Until the stream's tracks are
        known (or `tracks_wait` has passed), the first viewers are held back (`ready`).
        """
        stall = self.manager.settings.stall_timeout
        stream = self.stream
        last_media = trio.current_time()
        while True:
            deadline = last_media + stall
            waiting = not self.ready.is_set()
            if waiting:
                deadline = min(deadline, self._ready_by)
            events = None
            with trio.move_on_at(deadline):
                events = await feed.receive()
            if events is None:
                if waiting and trio.current_time() >= self._ready_by:
                    self._go_ready()
                    continue
                raise ParentError(f"stalled: no media for {stall:g} s", Failure.STALLED)
            for event in events:
                if isinstance(event, rs.Media):
                    if event.type_id == m.DATA_AMF0 and event.payload.startswith(CLOCK_PREFIX):
                        self._anchor(event.payload)  # for the keyframe that comes next
                        continue
                    stream.push(event.type_id, event.timestamp, event.payload)
                    self.seen.add(event.type_id)
                    last_media = trio.current_time()
                    if not flowing:
                        flowing.append(last_media)
                elif isinstance(event, rs.Metadata):
                    stream.set_metadata(event.payload, event.values)
                    self._declare_from_metadata(event.values)
                elif isinstance(event, Tracks):
                    if self.declared is None:
                        self.declared = (event.audio, event.video)
                elif isinstance(event, End):
                    return True
            if waiting and self._tracks_known():
                self._go_ready()

    def _anchor(self, payload: bytes) -> None:
        """Continue the parent's segment clock (a bad one is ignored: this edge then
        numbers its HLS segments itself)."""
        try:
            state = ClockState.decode(payload)
        except ValueError as exc:
            log.warning("upstream %s: bad segment clock from %s: %s", self.key, self.parent, exc)
            return
        if self.stream.take_clock(state):
            log.debug("upstream %s: clock at %d from %s", self.key, state.seq, self.parent)

    def _declare_from_metadata(self, values: object) -> None:
        """onMetaData naming codecs says which tracks there are (it wins over FLV flags,
        which a parent that does not know yet may set to both)."""
        if not isinstance(values, dict):
            return
        audio, video = "audiocodecid" in values, "videocodecid" in values
        if audio or video:
            self.declared = (audio, video)

    def _tracks_known(self) -> bool:
        """Whether every track the parent declared has sent its first message (with no
        declaration: once both kinds have)."""
        audio, video = m.AUDIO in self.seen, m.VIDEO in self.seen
        if self.declared is None:
            return audio and video
        want_audio, want_video = self.declared
        return (want_audio or want_video) and audio >= want_audio and video >= want_video

    def _go_ready(self) -> None:
        """Let the waiting viewers in; the stream carries its tracks as `tracks`
        ((audio, video), for the FLV file header) when anything is known."""
        if self.ready.is_set():
            return
        audio, video = m.AUDIO in self.seen, m.VIDEO in self.seen
        if self.declared is not None:
            audio, video = audio or self.declared[0], video or self.declared[1]
        if audio or video:
            self.stream.tracks = (audio, video)  # type: ignore[attr-defined]
        self.ready.set()


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
        max_streams: int = 1000,
        max_not_found: int = MAX_NOT_FOUND,
    ) -> None:
        if not parents:
            raise ValueError("an edge needs at least one parent")
        self.parents = list(parents)
        self.settings = settings
        self.make_stream = make_stream
        self.make_fanout = make_fanout
        self.drop_fanout = drop_fanout
        self.connector = connector
        self.max_streams = max_streams
        self.max_not_found = max_not_found
        self.upstreams: dict[tuple[str, str], Upstream] = {}
        self.not_found: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.stats = PullStats()
        self.nursery: trio.Nursery | None = None
        self._refusal_logged = -float("inf")

    def set_parents(self, parents: list[str]) -> int:
        """Pull from `parents` from now on (a reload): each connection an upstream makes next
        takes them, and upstreams relaying from a parent no longer among them move to them at
        once (viewers stay). Returns how many moved."""
        self.parents = list(parents)
        moved = 0
        for up in self.upstreams.values():
            if up.parent is not None and up.parent not in self.parents and up.move():
                moved += 1
        return moved

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Own the upstream tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def subscribe(self, app: str, name: str) -> Subscription | None:
        """StreamSource: wait for the (possibly shared, pending) upstream of app/name.

        None if the parents do not have it; StreamKeyError for a key outside the stream-key
        grammar (callers validate first: this is a defence); TooManyStreams when a new pull
        would exceed `max_streams`.
        """
        try:
            StreamKey.parse(app, name)
        except ValueError:
            self.stats.refused[Refusal.BAD_KEY] += 1
            raise
        key = (app, name)
        expiry = self.not_found.get(key)
        if expiry is not None:
            if expiry > trio.current_time():
                self.stats.not_found_cached += 1
                return None
            del self.not_found[key]
        up = self.upstreams.get(key)
        if up is None:
            if len(self.upstreams) >= self.max_streams:
                self._refuse_new(app, name)
            up = Upstream(self, app, name)
            self.upstreams[key] = up
            self.stats.started += 1
            assert self.nursery is not None, "PullManager.run() is not running"
            self.nursery.start_soon(up.run)
            log.info("upstream %s/%s: first viewer, pulling from %s", app, name, self.parents[0])
        up.acquire()
        if not up.ready.is_set():  # a held stream: no scheduler round (ms on a busy node)
            try:
                await up.ready.wait()
            except BaseException:
                up.release()
                raise
        if not up.found or up.state is UpstreamState.CLOSED:
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

    def _refuse_new(self, app: str, name: str) -> None:
        self.stats.refused[Refusal.TOO_MANY_STREAMS] += 1
        now = trio.current_time()
        if now - self._refusal_logged >= 5.0:  # a crowd of refusals is one line per 5 s
            self._refusal_logged = now
            log.warning(
                "refused a pull of %s/%s: %d streams pulled already (max_streams; "
                "logged every 5 s, %d refused so far)",
                shown(app),
                shown(name),
                len(self.upstreams),
                self.stats.refused[Refusal.TOO_MANY_STREAMS],
            )
        raise TooManyStreams(f"too many streams on this edge (max_streams {self.max_streams})")

    def remember_not_found(self, app: str, name: str) -> None:
        """Cache a parent's 'no such stream' briefly; the table is bounded by
        `max_not_found` (expired entries go first, then the oldest)."""
        ttl = self.settings.not_found_ttl
        if ttl <= 0 or self.max_not_found <= 0:
            return
        now = trio.current_time()
        table = self.not_found
        table.pop((app, name), None)
        # one TTL for all: insertion order is expiry order
        while table:
            oldest, expiry = next(iter(table.items()))
            if expiry > now and len(table) < self.max_not_found:
                break
            del table[oldest]
        table[(app, name)] = now + ttl

    def finished(self, up: Upstream, reason: StopReason) -> None:
        """An upstream is over: forget it (idempotent)."""
        key = (up.app, up.name)
        if self.upstreams.get(key) is up:
            del self.upstreams[key]
            self.stats.stopped[reason] += 1
            self.drop_fanout(up.stream)

    def held(self) -> set[tuple[str, str]]:
        """The streams this edge really pulls: found at a parent and not closed."""
        return {
            k
            for k, up in self.upstreams.items()
            if up.found and up.state is not UpstreamState.CLOSED
        }

    def bytes_received(self) -> int:
        """Bytes received from parents so far, the open connections' included."""
        live = sum(up.feed_bytes() for up in self.upstreams.values())
        return self.stats.bytes_from_parents + live

    def register_metrics(self, mt: NodeMetrics) -> None:
        """Export the pull manager's numbers."""
        stats = self.stats
        mt.gauge(
            "upstreams",
            "Open upstreams (pulls from parents).",
            (),
            lambda: {(): len(self.upstreams)},
        )
        mt.counter(
            "pulls_started_total", "Upstream pulls started.", (), lambda: {(): stats.started}
        )
        mt.counter(
            "pulls_stopped_total",
            "Upstream pulls stopped, by reason.",
            ("reason",),
            lambda: by_label(stats.stopped),
        )
        mt.counter(
            "failovers_total",
            "Upstream switches to another parent.",
            (),
            lambda: {(): stats.failovers},
        )
        mt.counter(
            "back_to_source_bytes_total",
            "Bytes received from parents.",
            (),
            lambda: {(): self.bytes_received()},
        )
        mt.counter(
            "not_found_cached_total",
            "Requests for missing streams answered from the short negative cache.",
            (),
            lambda: {(): stats.not_found_cached},
        )
        mt.counter(
            "not_found_total",
            "Requests for streams the parents do not have.",
            (),
            lambda: {(): stats.not_found},
        )
        mt.counter(
            "pull_failures_total",
            "Upstream connections that failed or broke, by reason (" + ", ".join(Failure) + ").",
            ("reason",),
            lambda: by_label(stats.failures),
        )
        mt.counter(
            "pulls_refused_total",
            "New pulls refused before reaching a parent, by reason (" + ", ".join(Refusal) + ").",
            ("reason",),
            lambda: by_label(stats.refused),
        )
        mt.gauge(
            "not_found_entries",
            "Streams remembered as missing at the parents (bounded negative cache).",
            (),
            lambda: {(): len(self.not_found)},
        )

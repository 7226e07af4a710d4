"""Pull: an external RTMP or HTTP-FLV source copied into an ordinary origin stream (HLS,
HTTP-FLV, RTMP and edges serve it like a published one).

A static pull runs while the origin runs; an on-demand pull starts with a viewer and ends
`linger` seconds after its last one. Both reconnect with backoff; viewers keep the stream
for `publisher_grace` while the source is away, as they would for a publisher.

A local publisher of the same name wins: the pull hands the stream over (viewers kept) and
stops; a static pull waits until that stream has ended, then pulls again.
"""

from __future__ import annotations

import ssl
from typing import Protocol

import trio

from common.config.relayspec import Source
from common.media.stream import Stream
from common.net.supervise import describe
from common.proto.errors import ConnClosed, ProtocolError
from common.proto.rtmp import session as rs
from common.proto.streamkey import StreamKey
from common.serve.feeds import End, Failure, Feed, NotFound, ParentError, Tracks, open_feed
from common.serve.metrics import NodeMetrics
from origin.relaystate import (
    CONNECT_TIMEOUT,
    STALL_TIMEOUT,
    RelayState,
    RelayStatus,
    log,
    shown_url,
)

READY_AFTER = 1.0
"""Viewers waiting for an on-demand pull get the stream at its first video keyframe, or
this long after its first media (an audio-only source)."""
BLOCKED_POLL = 1.0
"""How often a static pull looks whether the local publisher's stream has ended."""


class PullHost(Protocol):
    """What a pull needs of the origin."""

    def pull_blocked(self, key: StreamKey) -> bool:
        """Whether a local publisher holds the name (or viewers wait for it to come back)."""
        ...

    async def claim(self, key: StreamKey) -> bool:
        """Whether this worker of the node may pull the name (always, in one process)."""
        ...

    def let_go(self, key: StreamKey) -> None:
        """The pull holds no stream of the name: another worker may take it."""
        ...

    def open_pulled(self, key: StreamKey) -> Stream | None:
        """A new origin stream for the pull, None if the origin is full (max_streams)."""
        ...

    def close_pulled(self, stream: Stream, why: str) -> None:
        """End the pulled stream (viewers get a clean end)."""
        ...

    def viewers(self, stream: Stream) -> int:
        """Viewers of the stream (all protocols, edges included)."""
        ...

    @property
    def grace(self) -> float:
        """How long viewers keep a stream whose source is away."""
        ...


class Puller:
    """Pulls `source` into stream `key` of the origin (`run`)."""

    def __init__(
        self,
        key: StreamKey,
        source: Source,
        label: str,
        host: PullHost,
        metrics: NodeMetrics,
        *,
        tls: ssl.SSLContext | None = None,
        linger: float | None = None,
    ) -> None:
        self.key = key
        self.source = source
        self.label = label  # the configured source or template, shown (the metrics' label)
        self.host = host
        self.metrics = metrics
        self.tls = tls
        self.linger = linger  # on demand: how long it outlives its last viewer
        self.stream: Stream | None = None
        self.ready = trio.Event()  # on demand: media flows, or the first attempt failed
        self.status = RelayStatus(f"pull of {key} from {shown_url(source.url, False)}")
        self._scope = trio.CancelScope()
        self._connection_scope: trio.CancelScope | None = None
        self._unwatched_since = trio.current_time()
        self._end_reason = "the origin stops"
        self._away_since: float | None = None  # trio clock: the source's first failure

    @property
    def on_demand(self) -> bool:
        return self.linger is not None

    def as_json(self, admin: bool) -> dict:
        """The API's view."""
        return {
            "app": self.key.app,
            "name": self.key.name,
            "source": shown_url(self.source.url, admin),
            "mode": "on_demand" if self.on_demand else "static",
            **self.status.as_json(admin),
        }

    def hand_over(self) -> None:
        """A local publisher took the stream: stop feeding it (and leave it open)."""
        self.stream = None
        if self._connection_scope is not None:
            self._connection_scope.cancel()
        if self.on_demand:
            self._scope.cancel()
        self.status.set(RelayState.WAITING, "a local publisher took the stream over")

    def stop(self) -> None:
        """End the pull (and its stream)."""
        self._scope.cancel()

    async def run(self) -> None:
        """Pull until stopped (static) or unwatched / failed at its start (on demand)."""
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    if self.on_demand:
                        nursery.start_soon(self._watch_viewers)
                    await self._pull()
                    nursery.cancel_scope.cancel()
        finally:
            self.ready.set()
            self.status.set(RelayState.ENDED)
            if self.stream is not None:
                self.host.close_pulled(self.stream, self._end_reason)
                self.stream = None
            else:  # stopped while it connected (or waited): its claim of the name goes too
                self.host.let_go(self.key)

    async def _watch_viewers(self) -> None:
        """On demand: stop once the stream has had no viewer for `linger` seconds."""
        assert self.linger is not None
        while True:
            await trio.sleep(min(1.0, max(self.linger, 0.05)))
            now = trio.current_time()
            if self.stream is not None and self.host.viewers(self.stream) > 0:
                self._unwatched_since = now
            elif self.ready.is_set() and now - self._unwatched_since >= self.linger:
                self._end_reason = f"no viewer for {self.linger:g} s"
                self.status.set(RelayState.ENDED, self._end_reason)
                self._scope.cancel()
                return

    async def _pull(self) -> None:
        status = self.status
        while True:
            if self.host.pull_blocked(self.key) or not await self.host.claim(self.key):
                if self.on_demand:
                    return
                status.set(RelayState.WAITING, "a local publisher has the stream")
                await trio.sleep(BLOCKED_POLL)
                continue
            status.set(RelayState.CONNECTING)
            started = trio.current_time()
            with trio.CancelScope() as self._connection_scope:
                try:
                    await self._connection()
                    error, reason = "the source ended the stream", "ended"
                except NotFound:
                    error, reason = "the source has no such stream", Failure.NOT_FOUND.value
                except ParentError as exc:
                    error, reason = str(exc), exc.kind.value
                except (OSError, ConnClosed, ProtocolError) as exc:
                    error, reason = f"broke: {describe(exc)}", Failure.BROKEN.value
                except Exception as exc:  # a bug: logged with its traceback, and retried
                    error, reason = describe(exc), Failure.UNEXPECTED.value
                    if error != status.last_error:
                        log.exception("%s failed", status.what)
            self._connection_scope = None
            if self.stream is None:
                self.host.let_go(self.key)
            if status.state is RelayState.WAITING or self.host.pull_blocked(self.key):
                continue  # a local publisher has the stream
            self.metrics.inc("relay_pull_failures_total", labels=(reason,))
            if self.on_demand and not self.ready.is_set():
                status.set(RelayState.ENDED, error, kind=reason)
                return  # the viewers that asked get a 404
            self.ready.set()
            now = trio.current_time()
            if self._away_since is None:
                self._away_since = now
            delay = status.backoff.failed(now - started)
            status.set(RelayState.RETRYING, error, f" (next try in {delay:g} s)", reason)
            await self._retry_wait(now + delay)
            status.reconnects += 1
            self.metrics.inc("relay_pull_reconnects_total", labels=(self.label,))

    async def _retry_wait(self, retry_at: float) -> None:
        """Wait until `retry_at`; the stream ends once its source has been away (since the
        first failure after its last media) for the grace."""
        assert self._away_since is not None
        grace_ends = self._away_since + self.host.grace
        if self.stream is not None and grace_ends < retry_at:
            await trio.sleep_until(grace_ends)
            if self.stream is not None:
                self.host.close_pulled(self.stream, "its source is away")
                self.stream = None
        await trio.sleep_until(retry_at)

    async def _connection(self) -> None:
        src = self.source
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                feed = await open_feed(src.parent, src.app, src.name, tls=self.tls, query=src.query)
        except trio.TooSlowError as exc:
            raise ParentError("no answer within the connect timeout", Failure.TIMEOUT) from exc
        try:
            if self.host.pull_blocked(self.key):
                return  # a local publisher came first
            await self._relay(feed)
        finally:
            self.status.bytes += feed.bytes_in - self._counted
            self.metrics.inc("relay_pull_bytes_total", feed.bytes_in - self._counted, (self.label,))
            self._counted = 0
            feed.close()

    _counted = 0  # bytes of this connection already counted

    def _open(self, held: list[rs.Metadata | Tracks]) -> Stream:
        """The origin stream for this connection's first media (opened if there is none:
        a source that never sends media opens none), with the metadata and tracks `held`
        until then."""
        if self.stream is None or self.stream.closed:
            self.stream = self.host.open_pulled(self.key)
            if self.stream is None:
                raise ParentError("the origin is full (max_streams)", Failure.REFUSED)
        stream = self.stream
        stream.new_source()
        for event in held:
            self._apply(stream, event)
        held.clear()
        return stream

    @staticmethod
    def _apply(stream: Stream, event: rs.Metadata | Tracks) -> None:
        if isinstance(event, rs.Metadata):
            stream.set_metadata(event.payload, event.values)
        elif isinstance(event, Tracks):
            stream.tracks = (event.audio, event.video)

    async def _relay(self, feed: Feed) -> None:
        """Copy the feed into the stream until it ends (returns) or breaks (ParentError)."""
        first_media: float | None = None
        last_media = trio.current_time()
        held: list[
            rs.Metadata | Tracks
        ] = []  # the newest metadata and tracks before the first media
        stream: Stream | None = None
        while True:
            events = None
            with trio.move_on_at(last_media + STALL_TIMEOUT):
                events = await feed.receive()
            if events is None:
                raise ParentError(f"no media for {STALL_TIMEOUT:g} s", Failure.STALLED)
            if self.status.state is RelayState.WAITING:
                return  # handed over meanwhile
            for event in events:
                if isinstance(event, rs.Media):
                    if stream is None:
                        stream = self._open(held)
                    frame = stream.push(event.type_id, event.timestamp, event.payload)
                    last_media = trio.current_time()
                    if first_media is None:
                        first_media = last_media
                        self._away_since = None
                        self.status.set(RelayState.ACTIVE)
                    if not self.ready.is_set() and (
                        (frame is not None and frame.keyframe)
                        or last_media - first_media >= READY_AFTER
                    ):
                        self.ready.set()
                elif isinstance(event, (rs.Metadata, Tracks)):
                    if stream is not None:
                        self._apply(stream, event)
                    else:
                        held[:] = [e for e in held if type(e) is not type(event)] + [event]
                elif isinstance(event, End):
                    return
            self.status.settle()
            sent = feed.bytes_in
            self.status.bytes += sent - self._counted
            self.metrics.inc("relay_pull_bytes_total", sent - self._counted, (self.label,))
            self._counted = sent

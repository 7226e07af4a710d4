"""One RTMP connection on a node: handshake and connect with timeouts, play from a
`StreamSource` (origin registry or edge pull), and publishing through the node's `Ingest`
(none: the node refuses to take streams)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import partial
from typing import Protocol
from urllib.parse import parse_qsl

import trio

from common.config import ServeConfig
from common.net.conn import Conn, ConnClosed
from common.proto.clock import STAMPS_QUERY
from common.proto.errors import ProtocolError, Unavailable
from common.proto.rtmp import session as rs
from common.proto.shaping import TokenBucket
from common.proto.streamkey import StreamKey, StreamKeyError, check_part, shown
from common.serve.play import CLOCK_QUERY, Player, StreamSource
from common.serve.playgate import PlayDenied, PlayGate, PlayProtocol, PlayRequest
from common.serve.refusal import Refusal

log = logging.getLogger("livecdn.rtmp")

MAX_PLAYS = 4
"""Plays at once on one connection (players use one; a few Flash-era clients use more)."""
READ_PAUSE_BACKLOG = 1 << 20
"""Unsent bytes past which a playing connection's commands are not read until they drain."""
FINISH_TIMEOUT = 2.0
"""How long a finished connection waits for the peer to close before closing itself."""


@dataclass(frozen=True)
class RtmpLimits:
    """Bounds on one RTMP connection."""

    handshake_timeout: float = 10.0
    idle_timeout: float = 30.0
    max_message_size: int = 8 * 1024 * 1024
    slow_timeout: float = 10.0
    ingest_bytes_per_s: float = 0.0  # per publisher; 0: no cap

    @classmethod
    def from_config(cls, cfg: ServeConfig) -> RtmpLimits:
        """The limits a node's config sets."""
        return cls(
            cfg.handshake_timeout,
            cfg.idle_timeout,
            cfg.max_message_size,
            cfg.slow_timeout,
            getattr(cfg, "max_ingest_mbps", 0.0) * 125_000,
        )


class ConnState(Enum):
    """What an RTMP connection is doing (its plays are counted apart, in `players`)."""

    OPEN = "open"  # connecting, or playing
    PUBLISHING = "publishing"
    FINISHING = "finishing"  # flushed and half-closed: waiting for the peer to close


@dataclass(frozen=True)
class PublishRefused:
    """A refused publish, its answer queued on the session: `reason` for the metrics,
    `detail` for the log line."""

    reason: Refusal
    detail: str


def split_name(raw: str) -> tuple[str, dict[str, str]]:
    """'name?k=v' -> ('name', {'k': 'v'})."""
    name, _, query = raw.partition("?")
    return name, dict(parse_qsl(query))


class Ingest(Protocol):
    """What a node that takes streams does with one connection's publishing (one per
    connection: it may keep who publishes)."""

    async def publish(self, rtmp: RtmpConnection, event: rs.Publish) -> PublishRefused | None:
        """A publish request on `rtmp`: queue the session's answer; None if accepted, else
        why it was refused (the connection closes). The connection reads nothing more (no
        media) until it returns (it may wait for an on_publish hook)."""
        ...

    def media(self, event: rs.Media | rs.Metadata) -> None:
        """Media or metadata from the accepted publisher."""
        ...

    def delete(self, stream_id: int) -> bool:
        """The client deleted message stream `stream_id`: True if it published on it."""
        ...

    def close(self, bytes_in: int) -> None:
        """The connection is over (whatever the reason); it received `bytes_in` while
        publishing."""
        ...


class _PlayStopped(Exception):
    """The client deleted the message stream of the play the connection's task serves."""


class _Closing(Exception):
    """What the client sent while playing closes the connection (`args[0]`: why)."""


class RtmpConnection:
    """Serves one RTMP connection until it closes: plays from `source`, publishes into
    `ingest` (None: publishing is refused); plays pass `gate` first.

    One task serves a connection and its first play: while it plays, the play's task
    reads the connection and handles what the client sends (`_on_input`). Further plays
    at once on other message streams (a few Flash-era clients) get a task each."""

    __slots__ = (
        "conn",
        "gate",
        "source",
        "limits",
        "refuse",
        "ingest",
        "session",
        "players",
        "state",
        "bytes_in",
        "_nursery",
        "_inline_sid",
        "_leftover",
        "_why",
        "_finish_at",
        "_ingest",
    )

    def __init__(
        self,
        conn: Conn,
        source: StreamSource,
        limits: RtmpLimits,
        refuse: Callable[[Refusal], None],
        ingest: Ingest | None = None,
        *,
        gate: PlayGate | None = None,
    ) -> None:
        self.conn = conn
        self.gate = gate if gate is not None else PlayGate()
        self.source = source
        self.limits = limits
        self.refuse = refuse
        self.ingest = ingest
        self.session = rs.ServerSession(max_message_size=limits.max_message_size)
        self.players: dict[int, trio.CancelScope | None] = {}
        """Plays by message stream: their task's cancel scope, None for the play the
        connection's own task serves."""
        self.state = ConnState.OPEN
        self.bytes_in = 0
        self._nursery: trio.Nursery | None = None
        self._inline_sid: int | None = None
        self._leftover: list[rs.Event] = []
        """Events received but not handled yet (those after a play's start or stop)."""
        self._why: str | None = None
        """What it means if the connection's deadline passes (None: none is set; "": the
        connection ends quietly)."""
        self._finish_at = math.inf
        rate = limits.ingest_bytes_per_s
        self._ingest = TokenBucket(rate, max(rate, 1 << 20)) if rate > 0 else None

    def set_state(self, state: ConnState) -> None:
        """The one place the connection's state changes (logged at debug level)."""
        if state is not self.state:
            log.debug("RTMP %s: %s -> %s", self.conn.peer, self.state.value, state.value)
            self.state = state

    @property
    def publishing(self) -> bool:
        """True while the connection publishes a stream."""
        return self.state is ConnState.PUBLISHING

    def _busy(self, event: rs.Publish) -> str:
        self.session.reject_publish(event.stream_id, "NetStream.Publish.BadName", "already busy")
        return "second publish/play on one connection"

    async def _on_publish(self, event: rs.Publish) -> str | None:
        """A publish request: the ingest's answer, or a refusal on a node without one; None
        if accepted, else why the connection closes."""
        if self.publishing or self.players:
            return self._busy(event)
        if self.ingest is None:
            self.session.reject_publish(
                event.stream_id, "NetStream.Publish.Denied", "this node does not accept publishing"
            )
            refused = PublishRefused(Refusal.PUBLISH_NOT_ALLOWED, "this node only plays")
        else:
            refused = await self.ingest.publish(self, event)
        if refused is None:
            self.set_state(ConnState.PUBLISHING)
            return None
        self.refuse(refused.reason)
        return f"publish refused: {refused.detail}"

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        """Serve the connection; returns when it is closed."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    reason = await self._loop()
                except ProtocolError as exc:
                    self.refuse(Refusal.PROTOCOL_ERROR)
                    reason = f"protocol error: {exc}"
                if reason:
                    log.info("closing RTMP %s: %s", self.conn.peer, reason)
                self._why = None
                nursery.cancel_scope.cancel()
            if self._why:  # the deadline passed
                self.refuse(Refusal.TIMEOUT)
                log.info("closing RTMP %s: %s", self.conn.peer, self._why)
        finally:
            if self.ingest is not None:
                self.ingest.close(self.bytes_in)

    def _set_deadline(self, deadline: float, why: str) -> None:
        """Bound what the connection does next by `deadline` (`why`: its log line)."""
        if self._finish_at < deadline:
            deadline, why = self._finish_at, ""
        self._why = why if deadline < math.inf else None
        if self._nursery is not None:
            self._nursery.cancel_scope.deadline = deadline

    async def finish(self) -> None:
        """Flush and half-close; the connection ends when the peer closes (or soon after)."""
        self.set_state(ConnState.FINISHING)
        try:
            if await self._drained():
                self.conn.shutdown_write()
            else:
                self.conn.close()
        except (ConnClosed, OSError):
            self.conn.close()
        self._finish_at = min(self._finish_at, trio.current_time() + FINISH_TIMEOUT)
        self._set_deadline(self._finish_at, "")

    async def _drained(self) -> bool:
        """Wait until the backlog is sent; False if the peer has not read it within
        `slow_timeout`."""
        with trio.move_on_after(self.limits.slow_timeout) as scope:
            await self.conn.drain()
        return not scope.cancelled_caught

    def cancel(self) -> None:
        """End the connection from outside (kick, takeover)."""
        self._why = None
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        self.conn.close()

    async def _loop(self) -> str | None:
        limits = self.limits
        conn, session = self.conn, self.session
        started = trio.current_time()
        data = b""
        while True:
            if self._leftover:
                events, self._leftover = self._leftover, []
            else:
                if not session.handshake_complete:
                    deadline = started + limits.handshake_timeout
                    why = f"handshake not completed within {limits.handshake_timeout:g} s"
                elif self.players:
                    deadline, why = math.inf, ""
                elif self.publishing:
                    deadline = trio.current_time() + limits.idle_timeout
                    why = f"publisher sent nothing for {limits.idle_timeout:g} s"
                else:
                    deadline = started + limits.handshake_timeout + limits.idle_timeout
                    why = f"no publish or play within {limits.idle_timeout:g} s of connecting"
                self._set_deadline(deadline, why)
                data = await conn.recv_turn()
                self._set_deadline(math.inf, "")
                if not data:
                    return None if conn.closed else "peer closed the connection"
                if self.publishing:
                    self.bytes_in += len(data)
                    if self._ingest is not None:
                        # over the cap: stop reading for a while (TCP slows the publisher down)
                        await trio.sleep(self._ingest.delay_for(len(data), trio.current_time()))
                events = session.receive_data(data)
            reason = await self._on_events(events)
            if isinstance(reason, rs.Play):
                # This task serves the play; the events after it are handled once it
                # serves (or by this loop if it does not start).
                data, events = b"", []  # not kept while it plays
                try:
                    await self._play(reason, inline=True)
                    reason = None
                except _Closing as exc:
                    reason = str(exc)
            if reason:
                log.info("closing RTMP %s: %s", conn.peer, reason)
                conn.write(session.data_to_send())
                await conn.close_gracefully()
                return None
            out = session.data_to_send()
            if out:
                conn.write(out)
            if conn.backlog_bytes and not self.players:
                if not await self._drained():
                    return f"peer did not read our answers for {limits.slow_timeout:g} s"
            elif conn.backlog_bytes > READ_PAUSE_BACKLOG:
                # A player that keeps sending but reads nothing: its answers must not pile
                # up. Stop reading until its own task has drained the backlog.
                deadline = trio.current_time() + limits.slow_timeout
                while conn.backlog_bytes > READ_PAUSE_BACKLOG and not conn.closed:
                    if trio.current_time() >= deadline:
                        return f"peer read nothing for {limits.slow_timeout:g} s"
                    await trio.sleep(0.05)

    async def _on_events(self, events: list[rs.Event]) -> str | rs.Play | None:
        """Act on the events of one receive: a returned string closes the connection, a
        Play is for this task to serve (the events after it are left in `_leftover`)."""
        at = 0
        while at < len(events):
            event = events[at]
            at += 1
            if isinstance(event, rs.Publish):  # media waits in `events` for the answer
                reason = await self._on_publish(event)
            elif isinstance(event, rs.Play) and self._inline_sid is None:
                reason = self._check_play(event)
                if reason is None:
                    self._leftover = events[at:]
                    return event
            else:
                reason = self._on_event(event, events, at)
            if reason:
                return reason
        return None

    async def _on_input(self, data: bytes) -> None:
        """What the client sends while the connection's task plays."""
        self._while_playing(self.session.receive_data(data))
        # A player that keeps sending but reads nothing: its answers must not pile up.
        # Read nothing more until they are sent.
        if self.conn.backlog_bytes > READ_PAUSE_BACKLOG and not await self._drained():
            raise _Closing(f"peer read nothing for {self.limits.slow_timeout:g} s")

    def _while_playing(self, events: list[rs.Event]) -> None:
        """Act on events while the connection's task plays; raise _PlayStopped when the
        client deletes the play's message stream, _Closing to close the connection."""
        at = 0
        while at < len(events):
            event = events[at]
            at += 1
            if isinstance(event, rs.Publish):
                reason: str | None = self._busy(event)
            elif isinstance(event, rs.DeleteStream) and event.stream_id == self._inline_sid:
                self._leftover = events[at:]
                raise _PlayStopped
            else:
                reason = self._on_event(event, events, at)
            if reason:
                raise _Closing(reason)
        out = self.session.data_to_send()
        if out:
            self.conn.write(out)

    def _on_event(self, event: rs.Event, events: list[rs.Event], at: int) -> str | None:
        """Act on one session event (`events[at:]` come after it); a returned string closes
        the connection with that reason."""
        if isinstance(event, (rs.Media, rs.Metadata)):
            if self.publishing and self.ingest is not None:
                self.ingest.media(event)
            return None
        session = self.session
        if isinstance(event, rs.Connect):
            try:
                check_part(event.app, "application name")
            except StreamKeyError as exc:
                session.reject_connect(str(exc))
                self.refuse(Refusal.BAD_NAME)
                return f"connect refused: {exc}"
            events[at:at] = session.accept_connect(event.app)
            return None
        if isinstance(event, rs.Play):
            return self._on_play(event)
        if isinstance(event, rs.DeleteStream):
            ingest = self.ingest
            if self.publishing and ingest is not None and ingest.delete(event.stream_id):
                self.set_state(ConnState.OPEN)
            scope = self.players.pop(event.stream_id, None)
            if scope is not None:
                scope.cancel()
            return None
        if isinstance(event, rs.Command):
            log.debug("RTMP %s: ignoring command %s", self.conn.peer, shown(event.name))
        return None

    def _check_play(self, event: rs.Play) -> str | None:
        """Why a play request closes the connection, or None if it may go on."""
        if self.publishing:
            self.session.send_status(
                event.stream_id, "error", "NetStream.Play.Failed", "connection is publishing"
            )
            return "play on a publishing connection"
        if event.stream_id in self.players:
            return "play twice on one message stream"
        if len(self.players) >= MAX_PLAYS:
            self.session.send_status(
                event.stream_id,
                "error",
                "NetStream.Play.Failed",
                "too many plays on one connection",
            )
            return f"more than {MAX_PLAYS} plays on one connection"
        return None

    def _on_play(self, event: rs.Play) -> str | None:
        """A play while the connection's task plays already: a task of its own."""
        reason = self._check_play(event)
        if reason is None:
            scope = trio.CancelScope()
            self.players[event.stream_id] = scope
            assert self._nursery is not None
            self._nursery.start_soon(self._play_task, event, scope)
        return reason

    async def _refuse_play(self, sid: int, reason: Refusal, why: str) -> None:
        """Send the queued refusal, count and log it, and finish the connection."""
        self.refuse(reason)
        log.info("closing RTMP %s: %s", self.conn.peer, why)
        self.conn.write(self.session.data_to_send())
        self.players.pop(sid, None)
        await self.finish()

    def _end_play(self, sid: int, name: str) -> bytes:
        """The bytes that end a play (its stream ended)."""
        self.session.end_play(sid, name)
        return self.session.data_to_send()

    async def _play_task(self, event: rs.Play, scope: trio.CancelScope) -> None:
        with scope:
            await self._play(event, inline=False)
        self.players.pop(event.stream_id, None)

    async def _play(self, event: rs.Play, *, inline: bool) -> None:
        """Serve one play (`inline`: in the connection's task, which then reads what the
        client sends through `_on_input`)."""
        sid = event.stream_id
        if inline:
            self.players[sid] = None
            self._inline_sid = sid
        try:
            session, conn = self.session, self.conn
            app = session.app or ""
            name, query = split_name(event.name)
            try:
                key = StreamKey.parse(app, name)
                pacer = self.source.pace_for(key.app, key.name, query)
                play = PlayRequest(PlayProtocol.RTMP, key, query, conn.peer)
                await self.gate.admit(play)
            except (PermissionError, StreamKeyError, PlayDenied) as exc:
                session.send_status(sid, "error", "NetStream.Play.Failed", str(exc))
                reason = (
                    Refusal.BAD_NAME
                    if isinstance(exc, StreamKeyError)
                    else exc.reason
                    if isinstance(exc, PlayDenied)
                    else Refusal.BAD_CLASS_TOKEN
                )
                await self._refuse_play(sid, reason, f"play refused: {exc}")
                return
            try:
                sub = await self.source.subscribe(key.app, key.name)
            except Unavailable as exc:
                self.gate.ended(play)
                session.send_status(sid, "error", "NetStream.Play.Failed", str(exc))
                await self._refuse_play(sid, Refusal.UNAVAILABLE, f"play refused: {exc}")
                return
            except BaseException:
                self.gate.ended(play)
                raise
            if sub is None:
                self.gate.ended(play)
                session.play_not_found(sid, str(key))
                await self._refuse_play(sid, Refusal.NOT_FOUND, f"play of unknown stream {key}")
                return
            try:
                session.accept_play(sid, name)
                conn.write(session.data_to_send())
                log.info("RTMP play %s/%s by %s", app, name, conn.peer)
                try:
                    if inline and self._leftover:
                        events, self._leftover = self._leftover, []
                        self._while_playing(events)
                    stream = sub.fanout.stream
                    reader = stream.add_reader(
                        "rtmp",
                        clock=query.get(CLOCK_QUERY) == "1",
                        stamps=query.get(STAMPS_QUERY) == "1",
                    )
                    player = Player(
                        conn,
                        reader,
                        "rtmp",
                        stream_id=sid,
                        end=partial(self._end_play, sid, name),
                        bucket=pacer,
                        watch=inline,
                        on_input=self._on_input if inline else None,
                    )
                    await sub.fanout.serve(player)
                except _PlayStopped:
                    log.info("RTMP play %s/%s by %s stopped", app, name, conn.peer)
                    return
                log.info("RTMP play %s/%s by %s ended", app, name, conn.peer)
                await self.finish()
            finally:
                sub.release()
                self.gate.ended(play)
        finally:
            if inline:
                self._inline_sid = None
                self.players.pop(sid, None)

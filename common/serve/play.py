"""Serving a Stream to viewers over HTTP-FLV, WebSocket-FLV and RTMP (shared by origin and
edge).

A `Fanout` per stream sends each idle player everything new with one non-blocking write of
bytes shared by all players at the same position. It writes new frames at once while its
flushes are cheap (a few players) or the stream was idle for `batch_ms`, and coalesces
them while flushes are costly: new frames wait `COALESCE` times as long as the last flush
took, at most `batch_ms`, so a large fan-out still writes each player once per `batch_ms`.
A flush that itself takes long (a busy node) shortens the wait after it, down to MIN_PAUSE, so
writes stay about `batch_ms` apart. While viewers join, a flush that waited for frames to
coalesce spreads its steps over that wait less MIN_PAUSE (at most `SPREAD` of `batch_ms`), so
that players receive, and answer, a few at a time.
A player whose socket cannot take a batch becomes "slow": its own task drains the backlog and
catches up (skipping to the newest keyframe if it fell too far behind) and then hands it
back to the fanout. A slow player never holds up the source or other players.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import trio

from common.media.stream import PLAY_STREAM_ID, Frame, Reader, Stream
from common.net.conn import Accepted, Conn, ConnClosed
from common.net.http import LAST_CHUNK, Request, Response, StreamingResponse, Upgrade, chunk
from common.net.websocket import Inbound
from common.proto import flv
from common.proto.errors import ProtocolError, Unavailable
from common.proto.rtmp import messages as m
from common.proto.shaping import Pacer
from common.proto.streamkey import StreamKey
from common.proto.wsframe import binary_frame, binary_header
from common.serve.metrics import Histogram, NodeMetrics
from common.serve.refusal import Refusal

log = logging.getLogger("livecdn.play")


CLOCK_QUERY = "segclock"
"""A play asking (`?segclock=1`) for the stream's segment clock before its first frame: a
pulling node that packages HLS continues the stream's segments (`common.media.segclock`).
`STAMPS_QUERY` (`?stamps=1`) asks for the clock stamps after keyframes (`common.proto.clock`):
the simulated players do, and a pulling edge, for its own players that ask."""
PACED_FRAMES = 4
"""Frames a paced viewer's task takes at a time (small, so the pacing is smooth)."""
FLUSH_SLICE = 128
"""Players written per fan-out step before other tasks get a turn, while no viewer joins."""
JOIN_SLICE = 16
"""Players written per fan-out step while viewers join (a connection was accepted in the last
`JOINING` s). A new viewer's round trips (RTMP has five) each wait for the step under way: at
N = 2000, 1.5 Mbit/s and 250 ms batches, a step of 128 players took about 3.5 ms (up to 13 ms
with a keyframe) and a lone joiner's RTMP first keyframe p95 was 34.5 ms; with steps of 16 it
was 9.3 ms (bench/join_probe.sh). Each step costs a scheduler round, so a steady fan-out with
nobody joining keeps the larger steps."""
JOINING = 0.25
"""Seconds after the last accepted connection during which viewers count as joining."""
SPREAD = 0.8
"""Share of `batch_ms` over which a fully coalesced flush spreads its steps while viewers join
(a flush after a shorter pause spreads over that pause less MIN_PAUSE): each player is still
written once per pause, at its own moment. Written at once, N = 2000 players got their 250 ms
batches within a few ms, their processes (and the machine's cores) took the whole burst
together, and a new viewer's round trips waited behind it: RTMP first keyframe p95 41-53 ms at
once, 13 ms with fully coalesced flushes spread, 6.1-6.5 ms with every coalesced flush spread
(the slow joins had been those of the ramp's first half, before the fan-out coalesced fully;
bench/fanout_before_after.sh). With nobody joining a flush goes out at once: spread, its CPU
looked a few % dearer."""
MIN_PAUSE = 0.05
"""The least a costly fan-out waits between writes, however long its flushes take (s)."""
COALESCE = 10.0
"""New frames wait this many times as long as the fan-out's last flush took (at most
`batch_ms`) before they are flushed. A flush to a few players takes microseconds, so their
frames go out at once; one to thousands takes milliseconds, and then the frames of a whole
`batch_ms` are coalesced into one write per player, as with a fixed batch. The default
`batch_ms` (250 ms) is where fewer writes stop paying: at N = 2000 an edge's HTTP-FLV fan-out
took 0.63x the CPU of a 50 ms cap (bench/fanout_before_after.sh HEAD with
AFTER_ARGS="--batch-ms 250"), and 350 ms saved only 0.04x more."""
JOIN_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075),
    *(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
"""Upper bounds (s) of the join-time histogram's buckets."""


@dataclass
class Subscription:
    """A viewer's hold on a live stream; `release()` when the viewer leaves."""

    fanout: Fanout
    release: Callable[[], None] = lambda: None


class StreamSource(Protocol):
    """Where viewers' streams come from: the origin's registry, or an edge's pulls."""

    async def subscribe(self, app: str, name: str) -> Subscription | None:
        """The live stream app/name for a new viewer, or None if there is none."""
        ...

    def pace_for(self, app: str, name: str, query: dict[str, str]) -> Pacer | None:
        """What paces this viewer (its class), None for no limit (PermissionError: bad token)."""
        ...


class PlayStats:
    """Node-wide counters for players."""

    def __init__(self) -> None:
        self.bytes_out: Counter[str] = Counter()
        self.slow_disconnects = 0
        self.players_started: Counter[str] = Counter()
        self.join_seconds = Histogram(JOIN_BUCKETS)

    def joined(self, protocol: str, conn: Conn) -> None:
        """Count how long a viewer's connection took from its accept to its first frames
        (its handshake, request, checks and pull, and the node's own delays); a later play
        on the same connection is not counted again."""
        if not math.isnan(conn.opened_at):
            self.join_seconds.observe(trio.current_time() - conn.opened_at, (protocol,))
            conn.opened_at = math.nan

    def register_metrics(self, mt: NodeMetrics) -> None:
        """Export the bytes sent to viewers and the slow viewers dropped."""
        mt.counter(
            "bytes_out_total",
            "Media bytes sent to viewers, by protocol.",
            ("protocol",),
            lambda: {(k,): v for k, v in self.bytes_out.items()},
        )
        mt.counter(
            "slow_viewer_disconnects_total",
            "Viewers disconnected for not keeping up.",
            (),
            lambda: {(): self.slow_disconnects},
        )
        mt.histogram(
            "play_join_seconds",
            "From accepting a viewer's connection to queueing its first frames, by protocol.",
            ("protocol",),
            self.join_seconds,
        )


class PlayerState(Enum):
    """Who writes to a player."""

    SLOW = "slow"  # its own task: joining, catching up, or paced
    FANOUT = "fanout"  # the fan-out's batches
    DONE = "done"  # nobody: it has left


class Player:
    """One viewer connection reading one stream."""

    __slots__ = (
        "conn",
        "reader",
        "protocol",
        "stream_id",
        "state",
        "end",
        "bucket",
        "watch",
        "on_input",
        "kind",
        "_woken",
        "_parked",
    )

    def __init__(
        self,
        conn: Conn,
        reader: Reader,
        protocol: str,
        *,
        stream_id: int = PLAY_STREAM_ID,
        end: Callable[[], bytes] | None = None,
        bucket: Pacer | None = None,
        watch: bool = False,
        on_input: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> None:
        self.conn = conn
        self.bucket = bucket
        self.reader = reader
        self.protocol = protocol
        self.stream_id = stream_id
        self.state = PlayerState.SLOW
        self.end = end
        self.watch = watch
        """Whether `park` reads the viewer's socket (which has nothing else reading it) to
        notice that the viewer left: then one task serves the viewer, not two."""
        self.on_input = on_input
        """Watching, what the viewer sends goes here (None: it is ignored). It may `wake`
        the player, or raise to end the play."""
        self.kind = player_kind(protocol, stream_id, reader.stamps)
        """Players of one kind at one position get the same bytes."""
        self._woken = False
        self._parked: trio.CancelScope | trio.lowlevel.Task | None = None

    def wake(self) -> None:
        """Make `park` return (now, or at once when it is next called)."""
        self._woken = True
        parked = self._parked
        if parked is None:
            return
        self._parked = None
        if isinstance(parked, trio.CancelScope):
            parked.cancel()
        else:
            trio.lowlevel.reschedule(parked)

    async def park(self) -> None:
        """Wait until `wake` (or return at once if it was called since the last park);
        watching, raise ConnClosed if the viewer closes meanwhile (what it sends goes to
        `on_input`)."""
        if self._woken:
            self._woken = False
            return
        if not self.watch:  # the task itself is parked: no cancel scope to keep per viewer
            self._parked = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        else:
            with trio.CancelScope() as self._parked:
                conn, on_input = self.conn, self.on_input
                while data := await conn.recv_turn(4096):
                    if on_input is not None:
                        await on_input(data)
                    data = b""  # not kept while parked
                raise ConnClosed
        self._parked = None
        self._woken = False

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        """A parked task was cancelled (the viewer's connection ends)."""
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    def set_state(self, state: PlayerState) -> None:
        """The one place a player's state changes (logged at debug level)."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s viewer %s: %s -> %s",
                self.protocol,
                self.conn.peer,
                self.state.value,
                state.value,
            )
        self.state = state

    def parts(self, frames: list[Frame]) -> list[bytes]:
        """The wire bytes of `frames` for this player's protocol, as shared buffers."""
        if not frames:
            return []  # an empty HTTP chunk would end the response
        if self.reader.stamps:
            frames = with_stamps(frames)
        if self.protocol == "flv":
            parts = [f.flv for f in frames]
            size = sum(len(p) for p in parts)
            return [b"%x\r\n" % size, *parts, b"\r\n"]
        if self.protocol == "ws":
            parts = [f.flv for f in frames]
            return [binary_header(sum(len(p) for p in parts)), *parts]
        if self.stream_id == PLAY_STREAM_ID:
            return [f.rtmp for f in frames]
        return [f.rtmp_for(self.stream_id) for f in frames]

    def encode(self, frames: list[Frame]) -> bytes:
        """The wire bytes of `frames` for this player's protocol, joined."""
        return b"".join(self.parts(frames))


_PROTOCOLS = {"flv": 0, "ws": 1, "rtmp": 2}


def player_kind(protocol: str, stream_id: int, stamps: bool) -> int:
    """A number for what decides a player's bytes: protocol, message stream id (RTMP)
    and stamps."""
    kind = _PROTOCOLS[protocol] * 2 + stamps
    return kind if protocol != "rtmp" else kind + 6 * stream_id


def with_stamps(frames: list[Frame]) -> list[Frame]:
    """`frames` with each one's clock stamp after it."""
    out = []
    for f in frames:
        out.append(f)
        if f.stamp is not None:
            out.append(f.stamp)
    return out


class Fanout:
    """Sends a stream's new frames to its players in batches."""

    def __init__(
        self,
        stream: Stream,
        stats: PlayStats,
        *,
        batch_ms: float = 250,
        slow_timeout: float = 10.0,
        coalesce: float = COALESCE,
        timer: Callable[[], float] = time.thread_time,
    ) -> None:
        self.stream = stream
        self.stats = stats
        self.batch = batch_ms / 1000
        self.spread = self.batch * SPREAD
        """Seconds over which a fully coalesced flush spreads its steps (one after a shorter
        pause spreads over the pause less MIN_PAUSE)."""
        self.slow_timeout = slow_timeout
        self.coalesce = coalesce
        self.timer = timer
        """Measures what a flush costs: the CPU time of the node's thread, the other tasks
        that ran at its checkpoints included (so a busy node coalesces more), but not the
        wall clock, which a busy machine stretches while the node waits for a core."""
        self.players: set[Player] = set()
        self.flushes = 0
        self._idle_paced: set[Player] = set()
        """Paced players parked until new frames come (`run` wakes them as each flush begins)."""

    def close(self) -> None:
        """End the stream: every player sends what is left, then its end, and stops."""
        self.stream.close()
        for player in self.players:
            player.wake()

    def viewers(self) -> Counter[str]:
        """Players by protocol."""
        counts: Counter[str] = Counter({"flv": 0, "ws": 0, "rtmp": 0})
        counts.update(p.protocol for p in self.players)
        return counts

    def pause_after(self, cost: float) -> float:
        """How long new frames wait for the next flush when the last one took `cost`
        seconds: `coalesce` times that, at most `batch_ms`."""
        return min(self.batch, cost * self.coalesce)

    async def run(self) -> None:
        """The flushing loop; returns after the stream closes and players are woken."""
        stream = self.stream
        seen = stream.head
        pause, idle_at, took = 0.0, 0.0, 0.0
        while True:
            await stream.wait_beyond(seen)
            if stream.closed:
                break
            if pause and trio.current_time() < idle_at:
                # costly flushes: let more frames come, write them once. Writes stay about
                # `pause` apart however long a flush takes (`took`, longer on a busy node),
                # but never closer than MIN_PAUSE, so a busy node still coalesces
                await trio.sleep(max(min(pause, MIN_PAUSE), pause - took))
            seen = stream.head
            if self._idle_paced:
                idle, self._idle_paced = self._idle_paced, set()
                for player in idle:
                    player.wake()
            spread = max(0.0, min(self.spread, pause - MIN_PAUSE)) if self._joining() else 0.0
            t0, started = self.timer(), trio.current_time()
            work = await self._flush(spread)
            self.flushes += 1
            # a spread flush sleeps between its steps, and what ran meanwhile is not its cost
            pause = self.pause_after(work if spread else self.timer() - t0)
            took = trio.current_time() - started
            idle_at = trio.current_time() + self.batch  # nothing new by then: write at once
        for player in self.players:
            player.wake()

    async def _flush(self, spread: float = 0.0) -> float:
        """Write every player in `FANOUT` state what is new for it, a step of players at a
        time, the steps spread over `spread` s (0: one after another); returns the CPU time
        the spread steps took (0 when not spread)."""
        stream = self.stream
        # (cursor, kind) -> (bytes, cursor after them); the last one used is kept in locals,
        # since nearly every player is where the one before it was
        shared: dict[tuple[int, int], tuple[bytes, int]] = {}
        bytes_out = self.stats.bytes_out
        fanout = PlayerState.FANOUT
        players = list(self.players)
        start, step, work = 0, self._step(), 0.0
        end = trio.current_time() + spread
        while start < len(players):
            if start:
                # Let joins and other streams run: a flush to thousands of viewers takes a
                # while, and a new viewer's round trips should not wait for all of it.
                steps_left = -(-(len(players) - start) // step)
                gap = (end - trio.current_time()) / steps_left
                if gap > 0:
                    await trio.sleep(gap)
                else:
                    await trio.lowlevel.checkpoint()
                if stream.closed:
                    break  # its players catch up and end on their own
                step = self._step()
            t0 = self.timer() if spread else 0.0
            head = stream.head
            at, kind, data, after, protocol, sent = -1, -1, b"", 0, "", 0
            for player in players[start : start + step]:
                if player.state is not fanout:
                    continue
                reader = player.reader
                cursor = reader.cursor
                if cursor >= head:
                    continue
                if cursor == at and player.kind == kind and not reader.need_keyframe:
                    reader.cursor = after
                else:
                    if sent:
                        bytes_out[protocol] += sent * len(data)
                        sent = 0
                    key = (cursor, player.kind)
                    hit = shared.get(key)
                    if hit is None or reader.need_keyframe:
                        dropped = reader.dropped
                        frames = stream.pending(reader)
                        if not frames:
                            at = -1
                            continue
                        data = player.encode(frames)
                        if reader.dropped == dropped and not reader.need_keyframe:
                            shared[key] = (data, reader.cursor)
                            at, kind, after = cursor, player.kind, reader.cursor
                        else:
                            at = -1  # this player's own bytes: shared with nobody
                    else:
                        data, after = hit
                        reader.cursor = after
                        at, kind = key
                    protocol = player.protocol
                sent += 1
                if not player.conn.write(data):
                    player.set_state(PlayerState.SLOW)
                    player.wake()
            if sent:
                bytes_out[protocol] += sent * len(data)
            start += step
            if spread:
                work += self.timer() - t0
        return work

    @staticmethod
    def _joining() -> bool:
        """Viewers are joining: the node accepted a connection in the last `JOINING` s."""
        return trio.current_time() - Accepted.last < JOINING

    def _step(self) -> int:
        """Players the next fan-out step writes: fewer while viewers join."""
        return JOIN_SLICE if self._joining() else FLUSH_SLICE

    async def serve(self, player: Player, prelude: bytes = b"") -> None:
        """Run one player: headers and GOP first, then live frames until the stream ends
        (the player gets its end bytes) or the connection breaks. Cancel to stop it."""
        stream = self.stream
        reader = player.reader
        at = stream.start_timestamp(reader)
        start = stream.header_frames(at)
        if reader.clock:
            payload = stream.clock_state(reader).encode()
            start.insert(0, Frame(-1, m.DATA_AMF0, at, payload, header=True))
        first = stream.pending(reader)
        parts = player.parts(start + first)
        if prelude:
            parts.insert(0, prelude)
        size = sum(len(p) for p in parts)
        self.stats.bytes_out[player.protocol] += size
        self.stats.players_started[player.protocol] += 1
        if player.bucket is not None:
            # The join burst goes out at once (a fast start, like HTB's burst); pacing
            # starts after it.
            player.bucket.start(trio.current_time())
        player.conn.writev(parts)
        self.stats.joined(player.protocol, player.conn)
        self.players.add(player)
        try:
            if player.bucket is not None:
                await self._paced(player)
            while True:
                if player.state is PlayerState.SLOW:
                    await self._catch_up(player)
                if stream.closed:
                    await self._catch_up(player)
                    if player.end is not None:
                        player.conn.write(player.end())
                        await self._drain(player)
                    return
                await player.park()
        except ConnClosed:
            return
        finally:
            player.set_state(PlayerState.DONE)
            self.players.discard(player)
            stream.remove_reader(reader)

    async def _paced(self, player: Player) -> None:
        """A viewer whose class limits its rate: its own task sends what its pacer
        allows, in batches; falling behind skips to the newest keyframe as for anyone."""
        stream, bucket, conn = self.stream, player.bucket, player.conn
        assert bucket is not None
        player.set_state(PlayerState.SLOW)  # never the fan-out's: this task alone writes to it
        while not stream.closed:
            frames = stream.pending(player.reader, limit=PACED_FRAMES)
            if not frames:
                # Parked, not waiting on the stream: a watching player reads its socket
                # meanwhile, so a viewer that leaves an idle stream is gone at once.
                self._idle_paced.add(player)
                try:
                    await player.park()
                finally:
                    self._idle_paced.discard(player)
                continue
            parts = player.parts(frames)
            size = sum(len(p) for p in parts)
            await trio.sleep(bucket.delay_for(size, trio.current_time()))
            self.stats.bytes_out[player.protocol] += size
            conn.writev(parts)
            await self._drain(player)

    async def _drain(self, player: Player) -> None:
        conn = player.conn
        if conn.backlog_bytes:
            with trio.move_on_after(self.slow_timeout) as scope:
                await conn.drain()
            if scope.cancelled_caught:
                self.stats.slow_disconnects += 1
                log.warning(
                    "disconnecting slow %s viewer %s of %s/%s: %d bytes not taken in %.0f s",
                    player.protocol,
                    conn.peer,
                    self.stream.app,
                    self.stream.name,
                    conn.backlog_bytes,
                    self.slow_timeout,
                )
                conn.close()
                raise ConnClosed
        if conn.closed:
            raise ConnClosed

    async def _catch_up(self, player: Player) -> None:
        conn = player.conn
        while True:
            await self._drain(player)
            frames = self.stream.pending(player.reader)
            if not frames:
                player.set_state(PlayerState.FANOUT)
                return
            parts = player.parts(frames)
            size = sum(len(p) for p in parts)
            self.stats.bytes_out[player.protocol] += size
            conn.writev(parts)
            if conn.closed:
                raise ConnClosed


def flv_header(stream: Stream) -> bytes:
    """The FLV file header of `stream`, its audio and video flags those of its tracks."""
    if stream.tracks is not None:
        has_audio, has_video = stream.tracks
    else:
        has_video = stream.has_video or stream.video_header is not None
        has_audio = stream.audio_header is not None or "audiocodecid" in stream.metadata_values
    if not has_video and not has_audio:
        has_video = has_audio = True
    return flv.file_header(audio=has_audio, video=has_video)


async def flv_response(
    source: StreamSource,
    req: Request,
    key: StreamKey,
    refuse: Callable[[Refusal], None],
    pacer: Pacer | None = None,
    *,
    ended: Callable[[], None] = lambda: None,
    websocket: list[tuple[str, str]] | None = None,
    clock: bool = False,
    stamps: bool = False,
) -> Response | StreamingResponse | Upgrade:
    """Answer GET /app/name.flv (`key`, parsed from the path): a chunked FLV body while
    the stream lives (with `websocket`, the 101 headers of an upgrade: binary WebSocket
    messages), 404 if it does not; `ended` is called once the answer is over; `clock`:
    the stream's segment clock first (a pulling node's `CLOCK_QUERY`); `stamps`: with the
    clock stamps (`STAMPS_QUERY`)."""
    app, name = key.app, key.name
    try:
        sub = await source.subscribe(app, name)
    except Unavailable as exc:
        ended()
        refuse(Refusal.UNAVAILABLE)
        log.info("HTTP-FLV %s from %s refused: %s", key, req.peer, exc)
        return Response.text(503, str(exc))
    except BaseException:
        ended()
        raise
    if sub is None:
        ended()
        refuse(Refusal.NOT_FOUND)
        log.info("HTTP-FLV %s from %s: no such stream", key, req.peer)
        return Response.text(404, f"no live stream {key}")
    if req.method == "HEAD":
        sub.release()
        ended()
        return StreamingResponse(200, "video/x-flv", no_body)  # the head of a live body

    what = "HTTP-FLV" if websocket is None else "WebSocket-FLV"

    async def body(conn: Conn) -> None:
        log.info("%s play %s/%s by %s", what, app, name, conn.peer)
        try:
            await serve_flv(
                sub.fanout,
                conn,
                pacer,
                websocket=websocket is not None,
                clock=clock,
                stamps=stamps,
            )
        finally:
            sub.release()
            ended()
        log.info("%s play %s/%s by %s ended", what, app, name, conn.peer)

    if websocket is not None:
        return Upgrade(websocket, body)
    return StreamingResponse(200, "video/x-flv", body)


async def no_body(conn: Conn) -> None:
    """The body of a HEAD answer: none (the server writes only the head)."""


async def serve_flv(
    fanout: Fanout,
    conn: Conn,
    pacer: Pacer | None = None,
    *,
    websocket: bool = False,
    clock: bool = False,
    stamps: bool = False,
) -> None:
    """Body of an HTTP-FLV response (`websocket`: of a WebSocket): play until the stream
    ends or the viewer leaves; `pacer` paces this viewer (its class's share)."""
    stream = fanout.stream
    inbound = Inbound() if websocket else None
    if inbound is not None:
        prelude, end = binary_frame(flv_header(stream)), inbound.close
        protocol = "ws"
    else:
        prelude, end = chunk(flv_header(stream)), lambda: LAST_CHUNK
        protocol = "flv"
    reader = stream.add_reader(protocol, clock=clock, stamps=stamps)
    player = Player(conn, reader, protocol, end=end, bucket=pacer, watch=inbound is None)
    if inbound is None:
        await fanout.serve(player, prelude)  # the player's own task sees the viewer leave
        return

    async with trio.open_nursery() as nursery:

        async def watch_close() -> None:
            while data := await conn.recv_turn(4096):
                try:
                    if reply := inbound.feed(data):
                        conn.write(reply)
                except ProtocolError as exc:
                    log.info("closing WebSocket %s: %s", conn.peer, exc)
                    break
                if inbound.closed:
                    break
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch_close)
        await fanout.serve(player, prelude)
        nursery.cancel_scope.cancel()

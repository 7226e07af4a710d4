"""The fan-out's adaptive batching, on trio's MockClock with real loopback sockets: frames
go out at once while flushes are cheap, and are coalesced while they are costly; a flush
takes smaller steps while viewers join."""

from __future__ import annotations

import contextlib
import math
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
import trio
import trio.testing

from common.media.stream import Frame, Stream
from common.net.conn import Accepted, Conn
from common.proto.rtmp import messages as m
from common.serve import play
from common.serve.play import JOIN_SLICE, JOINING, Fanout, Player, PlayerState, PlayStats
from tests.media import avc_header, interframe, keyframe


def connected() -> tuple[Conn, socket.socket]:
    """A server-side Conn and the viewer's socket (nonblocking), connected over loopback."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        viewer = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    viewer.setblocking(False)
    return Conn(server), viewer


@pytest.fixture
def pair() -> Iterator[tuple[Conn, socket.socket]]:
    """One viewer's connection (see `connected`)."""
    conn, viewer = connected()
    yield conn, viewer
    conn.close()
    viewer.close()


def received(sock: socket.socket) -> bytes:
    """What the viewer can read now."""
    out = b""
    while True:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return out
        if not data:
            return out
        out += data


class Ticks:
    """A flush timer where every look advances `step` seconds: each flush 'takes' `step`."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def started(fanout: Fanout, conn: Conn, nursery: trio.Nursery) -> Player:
    """A FLV viewer of `fanout`'s stream, joined and handed to the fan-out."""
    stream = fanout.stream
    player = Player(conn, stream.add_reader("flv"), "flv")
    nursery.start_soon(fanout.serve, player)
    await trio.testing.wait_all_tasks_blocked()
    assert player.state is PlayerState.FANOUT
    return player


def live_stream() -> Stream:
    stream = Stream("live", "a")
    stream.push(m.VIDEO, 0, avc_header())
    stream.push(m.VIDEO, 0, keyframe())
    return stream


async def test_a_small_fanout_writes_each_frame_at_once(mock_clock, pair) -> None:
    conn, viewer = pair
    stream = live_stream()
    # a flush to one player takes 10 us: new frames wait 0.1 ms, not a 50 ms batch
    fanout = Fanout(stream, PlayStats(), batch_ms=50, timer=Ticks(0.00001))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fanout.run)
        await started(fanout, conn, nursery)
        received(viewer)  # the join burst
        for ts in (33, 67, 100):
            mock_clock.jump(0.033)
            frame = stream.push(m.VIDEO, ts, interframe(fill=ts))
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(0.0001)
            await trio.testing.wait_all_tasks_blocked()
            assert received(viewer).endswith(frame.flv + b"\r\n")
        assert fanout.flushes == 3
        nursery.cancel_scope.cancel()


async def test_an_idle_streams_frame_goes_out_without_waiting(mock_clock, pair) -> None:
    conn, viewer = pair
    stream = live_stream()
    # costly flushes (10 ms each), but nothing new for longer than a batch: no wait
    fanout = Fanout(stream, PlayStats(), batch_ms=50, timer=Ticks(0.010))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fanout.run)
        await started(fanout, conn, nursery)
        received(viewer)
        for ts in (100, 200, 300):
            frame = stream.push(m.VIDEO, ts, interframe(fill=ts // 100))
            await trio.testing.wait_all_tasks_blocked()
            assert received(viewer).endswith(frame.flv + b"\r\n")  # the clock stood still
            mock_clock.jump(0.1)
        assert fanout.flushes == 3
        nursery.cancel_scope.cancel()


async def test_under_load_frames_are_coalesced_into_one_write(mock_clock, pair) -> None:
    conn, viewer = pair
    stream = live_stream()
    # each flush takes 10 ms: new frames wait min(10 * 10, 50) = 50 ms for the next
    fanout = Fanout(stream, PlayStats(), batch_ms=50, coalesce=10, timer=Ticks(0.010))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fanout.run)
        await started(fanout, conn, nursery)
        received(viewer)
        first = stream.push(m.VIDEO, 40, interframe(fill=1))
        await trio.testing.wait_all_tasks_blocked()
        assert received(viewer).endswith(first.flv + b"\r\n")  # no flush yet: at once
        frames = []
        for i in range(3):
            mock_clock.jump(0.01)
            frames.append(stream.push(m.VIDEO, 80 + 40 * i, interframe(fill=2 + i)))
            await trio.testing.wait_all_tasks_blocked()
            assert received(viewer) == b""  # held: a flush is costly now
        mock_clock.jump(0.031)  # 50 ms after the first of them
        await trio.testing.wait_all_tasks_blocked()
        data = received(viewer)
        body = b"".join(f.flv for f in frames)
        assert data == b"%x\r\n" % len(body) + body + b"\r\n"  # one chunk, one write
        assert fanout.flushes == 2
        nursery.cancel_scope.cancel()


class Turns(trio.abc.Instrument):
    """Counts one task's scheduler turns."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.count = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1


@contextlib.asynccontextmanager
async def fanning(
    fanout: Fanout, n: int
) -> AsyncIterator[tuple[trio.Nursery, list[socket.socket]]]:
    """`fanout` running with `n` FLV viewers joined (their join bursts read): yields the
    nursery and the viewers' sockets; cancels and closes everything after."""
    pairs = [connected() for _ in range(n)]
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fanout.run)
            for conn, _ in pairs:
                await started(fanout, conn, nursery)
            for _, viewer in pairs:
                received(viewer)
            yield nursery, [viewer for _, viewer in pairs]
            nursery.cancel_scope.cancel()
    finally:
        for conn, viewer in pairs:
            conn.close()
            viewer.close()


async def test_a_flush_takes_smaller_steps_while_viewers_join(mock_clock, monkeypatch) -> None:
    monkeypatch.setattr(Accepted, "last", -math.inf)
    stream = live_stream()
    fanout = Fanout(stream, PlayStats(), batch_ms=50)
    async with fanning(fanout, 2 * JOIN_SLICE + 8) as (nursery, viewers):
        task = next(t for t in nursery.child_tasks if t.name.endswith("Fanout.run"))
        turns = Turns(task)
        trio.lowlevel.add_instrument(turns)
        counts = []
        for ts, joined_ago in ((40, math.inf), (80, JOINING / 2), (120, 2 * JOINING)):
            mock_clock.jump(1.0)  # past the batch: the frame is flushed at once
            Accepted.last = trio.current_time() - joined_ago
            turns.count = 0
            frame = stream.push(m.VIDEO, ts, interframe(fill=ts // 40))
            await trio.testing.wait_all_tasks_blocked()
            counts.append(turns.count)
            for viewer in viewers:
                assert received(viewer).endswith(frame.flv + b"\r\n")
        trio.lowlevel.remove_instrument(turns)
    # 40 viewers: one step with nobody joining, steps of 16 (16, 16, 8) just after an accept,
    # one step again once the joins are over
    assert counts == [1, 3, 1]


@pytest.mark.parametrize(
    ("cost", "spread"),
    [
        (0.030, 0.2),  # fully coalesced (pause 300 ms, capped at 250): over `Fanout.spread`
        (0.012, 0.07),  # pause 120 ms: over the pause less MIN_PAUSE
        (0.004, 0.0),  # pause 40 ms, under MIN_PAUSE: never spread
    ],
)
async def test_a_costly_flush_spreads_its_steps_while_viewers_join(
    mock_clock, monkeypatch, cost: float, spread: float
) -> None:
    monkeypatch.setattr(Accepted, "last", -math.inf)
    monkeypatch.setattr(play, "JOIN_SLICE", 8)
    stream = live_stream()
    # every flush "takes" `cost` (every spread step, too)
    fanout = Fanout(stream, PlayStats(), batch_ms=250, timer=Ticks(cost))
    async with fanning(fanout, 40) as (_, viewers):
        mock_clock.jump(1.0)
        first = stream.push(m.VIDEO, 40, interframe(fill=1))
        await trio.testing.wait_all_tasks_blocked()
        # the stream was idle: to everyone at once
        assert all(received(v).endswith(first.flv + b"\r\n") for v in viewers)
        got = []
        for ts, joining in ((80, True), (120, False)):
            mock_clock.jump(0.010)
            frame = stream.push(m.VIDEO, ts, interframe(fill=ts // 40))
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(0.250)  # past the pause: the flush begins
            Accepted.last = trio.current_time() if joining else -math.inf
            counts = []
            for _ in range(5):
                await trio.testing.wait_all_tasks_blocked()
                counts.append(sum(received(v).endswith(frame.flv + b"\r\n") for v in viewers))
                mock_clock.jump(spread / 4 + 1e-6)  # (past float rounding)
            got.append(counts)
    # joining: five steps of 8 viewers, a quarter of the spread apart; else all at once
    at_once = [40, 0, 0, 0, 0]
    assert got == [[8, 8, 8, 8, 8] if spread else at_once, at_once]
    assert fanout.spread == pytest.approx(0.2)


def test_the_pause_grows_with_the_flush_cost_up_to_batch_ms() -> None:
    fanout = Fanout(Stream("live", "a"), PlayStats(), batch_ms=50, coalesce=10)
    assert fanout.pause_after(0.00002) == pytest.approx(0.0002)
    assert fanout.pause_after(0.002) == pytest.approx(0.020)
    assert fanout.pause_after(0.1) == pytest.approx(0.050)


async def test_one_flush_gives_each_kind_of_player_its_own_bytes(mock_clock) -> None:
    stream = live_stream()
    fanout = Fanout(stream, PlayStats(), batch_ms=50)
    kinds = [("flv", 1, False), ("rtmp", 1, False), ("flv", 1, True), ("rtmp", 3, False)]
    pairs = [connected() for _ in range(2 * len(kinds))]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fanout.run)
        players = []
        for (protocol, sid, stamps), (conn, _) in zip(kinds * 2, pairs, strict=True):
            reader = stream.add_reader(protocol, stamps=stamps)
            players.append(Player(conn, reader, protocol, stream_id=sid))
            nursery.start_soon(fanout.serve, players[-1])
        await trio.testing.wait_all_tasks_blocked()
        for _, viewer in pairs:
            received(viewer)
        key = stream.push(m.VIDEO, 40, keyframe(fill=7))
        key.stamp = Frame(-1, m.DATA_AMF0, 40, b"stamp")
        await trio.testing.wait_all_tasks_blocked()
        for player, (_, viewer) in zip(players, pairs, strict=True):
            assert received(viewer) == player.encode([key])
        assert fanout.flushes == 1
        nursery.cancel_scope.cancel()
    for conn, viewer in pairs:
        conn.close()
        viewer.close()


async def test_a_parked_rtmp_player_is_woken_by_the_end_or_cancelled(mock_clock) -> None:
    stream = live_stream()
    fanout = Fanout(stream, PlayStats(), batch_ms=50)
    (conn1, viewer1), (conn2, viewer2) = connected(), connected()
    ended = Player(conn1, stream.add_reader("rtmp"), "rtmp", end=lambda: b"END")
    cancelled = Player(conn2, stream.add_reader("rtmp"), "rtmp")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fanout.run)
        nursery.start_soon(fanout.serve, ended)
        async with trio.open_nursery() as inner:
            inner.start_soon(fanout.serve, cancelled)
            await trio.testing.wait_all_tasks_blocked()
            assert ended.state is cancelled.state is PlayerState.FANOUT  # both parked
            inner.cancel_scope.cancel()
        assert cancelled.state is PlayerState.DONE
        assert fanout.players == {ended}
        fanout.close()
        await trio.testing.wait_all_tasks_blocked()
        assert received(viewer1).endswith(b"END")
        assert ended.state is PlayerState.DONE
    for conn, viewer in ((conn1, viewer1), (conn2, viewer2)):
        conn.close()
        viewer.close()

"""The players' hub: one task reads every playing socket once per tick; players it reads
keep their playback model (stalls when the stream pauses). On trio's MockClock, so the
tick and the stalls are counted in virtual time."""

from __future__ import annotations

import socket

import trio

from common.net.rtmpclient import RtmpClient
from tests.conftest import start_origin
from tests.media import aac_frame, aac_header, avc_header, interframe, keyframe
from topology.players.hub import Hub
from topology.players.player import SimPlayer, Target
from topology.players.profiles import ClientProfile


class Recorder:
    """A hub reader that notes when it was read and how much came."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reads: list[tuple[float, int]] = []

    def on_readable(self, buf: bytearray, now: float) -> bool:
        n = self.sock.recv_into(buf)
        self.reads.append((now, n))
        return not n


async def test_a_socket_is_read_at_most_once_a_tick(autojump_clock) -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    reader, hub = Recorder(ours), Hub(tick=0.02)

    async def send() -> None:
        for _ in range(100):  # every 5 ms, for 0.5 s
            theirs.send(b"x" * 100)
            await trio.sleep(0.005)
        theirs.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.run)
        nursery.start_soon(send)
        await hub.play(reader)
        nursery.cancel_scope.cancel()
    ours.close()
    times = [t for t, _ in reader.reads]
    assert sum(n for _, n in reader.reads) == 100 * 100
    assert all(b - a > 0.02 - 1e-9 for a, b in zip(times, times[1:], strict=False)), times
    assert len(times) <= 0.5 / 0.02 + 2  # 4 sends per read, not one read per send
    assert hub.playing == 0


async def publish_with_a_pause(client: RtmpClient, pause_at: float, pause_s: float) -> None:
    """25 fps AVC + AAC in real (virtual) time; at `pause_at` s the encoder stops for
    `pause_s` s, then goes on where it stopped (timestamps without a gap)."""
    await client.send(9, 0, avc_header())
    await client.send(8, 0, aac_header())
    start = trio.current_time()
    for n in range(25 * 12):
        ts = n * 40
        late = pause_s if ts >= pause_at * 1000 else 0.0
        await trio.sleep_until(start + ts / 1000 + late)
        await client.send(9, ts, keyframe(4000) if n % 25 == 0 else interframe(800))
        await client.send(8, ts, aac_frame())


async def test_hub_players_stall_once_when_the_stream_pauses(autojump_clock, nursery) -> None:
    _, o = await start_origin(nursery)
    pub = await RtmpClient.connect(f"rtmp://127.0.0.1:{o.rtmp_port}/live/p")
    await pub.publish()
    nursery.start_soon(publish_with_a_pause, pub, 5.0, 3.0)
    await trio.sleep(1.2)
    hub = Hub()
    players = [
        SimPlayer(0, Target("flv", base=f"http://127.0.0.1:{o.http_port}", stream="live/p")),
        SimPlayer(1, Target("rtmp", url=f"rtmp://127.0.0.1:{o.rtmp_port}/live/p")),
    ]
    until = trio.current_time() + 10
    async with trio.open_nursery() as n:
        n.start_soon(hub.run)
        for p in players:
            p.hub = hub
            n.start_soon(p.run, until)
        await trio.sleep_until(until + 0.5)
        assert hub.rounds and hub.reads, "the players were read by the hub"
        n.cancel_scope.cancel()
    for p in players:
        r = p.result
        assert r.failures == [], r.summary()
        assert r.join_s is not None and r.join_s < hub.tick, r.summary()  # read at once
        assert r.stalls == 1, r.summary()  # the pause, once; nothing else
        assert 1.0 < r.stall_s < 3.5, r.summary()
        assert r.media_s > 7, r.summary()


async def test_a_refused_rtmp_play_reads_the_same_on_the_hub(autojump_clock, nursery) -> None:
    """The lean reader watches for the answer to play itself (the client session does not
    wait for it); a refusal gives the same reason as the session's (a player with a
    modelled link keeps that path)."""
    _, o = await start_origin(nursery)
    target = Target("rtmp", url=f"rtmp://127.0.0.1:{o.rtmp_port}/live/nope")
    hub = Hub()
    on_hub = SimPlayer(0, target, retry_s=5.0)
    on_hub.hub = hub
    own = SimPlayer(1, target, ClientProfile("near", delay_ms=1), retry_s=5.0)
    own.hub = hub
    until = trio.current_time() + 3
    async with trio.open_nursery() as n:
        n.start_soon(hub.run)
        n.start_soon(on_hub.run, until)
        n.start_soon(own.run, until)
        await trio.sleep_until(until + 0.5)
        n.cancel_scope.cancel()
    (end,) = on_hub.result.failures
    assert [str(e) for e in own.result.failures] == [str(end)]
    assert "NetStream.Play.StreamNotFound" in str(end), str(end)
    assert on_hub.result.join_s is None and on_hub.result.state == "failed"


async def test_a_long_round_lets_other_tasks_run(autojump_clock) -> None:
    """A round over many ready sockets yields now and then (players joining meanwhile)."""
    pairs = [socket.socketpair() for _ in range(600)]
    seen: list[str] = []
    first_read = trio.Event()

    class Once(Recorder):
        def on_readable(self, buf: bytearray, now: float) -> bool:
            seen.append("read")
            first_read.set()
            return super().on_readable(buf, now)

    hub = Hub(tick=1.0)
    readers = []
    for ours, theirs in pairs:
        ours.setblocking(False)
        theirs.send(b"x")
        readers.append(Once(ours))

    async def other() -> None:  # runnable from the round's first read on
        await first_read.wait()
        seen.append("other")

    async with trio.open_nursery() as nursery:
        for r in readers:
            nursery.start_soon(hub.play, r)
        await trio.sleep(0.1)  # all registered
        nursery.start_soon(other)
        nursery.start_soon(hub.run)
        await trio.sleep(0.5)  # one round
        nursery.cancel_scope.cancel()
    for ours, theirs in pairs:
        ours.close()
        theirs.close()
    reads = [i for i, what in enumerate(seen) if what == "read"]
    assert len(reads) == 600 and hub.rounds == 1
    assert "other" in seen[reads[0] : reads[-1]], "the round yielded"

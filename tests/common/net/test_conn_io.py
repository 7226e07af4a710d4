"""A Conn's receive turns and what its kernel still holds.

`recv_turn`: the other tasks get exactly one turn per receive. A peer that always has data
cannot hog the loop, and bytes that had to be waited for cost no extra scheduler round (on a
busy node a round is milliseconds, and a new RTMP viewer's handshake and commands are four of
them). `kernel_unsent`: what a push's stall check reads."""

from __future__ import annotations

import socket

import trio
import trio.testing

from common.net.conn import Conn


def pair() -> tuple[Conn, socket.socket]:
    """Our Conn and its peer's socket, connected over loopback."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    return Conn(ours), peer


async def steps_of(coro_fn) -> tuple[object, int]:
    """What `coro_fn()` returned, and how many times its task was scheduled to get it."""
    steps = 0
    done: list[object] = []

    class Count(trio.abc.Instrument):
        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            nonlocal steps
            if task.name == "measured":
                steps += 1

    async def measured() -> None:
        done.append(await coro_fn())

    counter = Count()
    trio.lowlevel.add_instrument(counter)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(measured, name="measured")
    finally:
        trio.lowlevel.remove_instrument(counter)
    return done[0], steps


async def test_data_already_there_still_gives_the_others_a_turn() -> None:
    conn, peer = pair()
    peer.sendall(b"hello")
    with trio.testing.assert_checkpoints():
        assert await conn.recv_turn() == b"hello"
    peer.close()
    conn.close()


async def test_a_peer_that_always_sends_does_not_starve_another_task() -> None:
    conn, peer = pair()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.sleep(0)
        before = ticks
        for _ in range(20):
            peer.sendall(b"x" * 100)
            assert await conn.recv_turn()
        assert ticks - before >= 19
        nursery.cancel_scope.cancel()
    peer.close()
    conn.close()


async def test_bytes_waited_for_cost_no_extra_round() -> None:
    conn, peer = pair()

    async def send_later() -> None:
        await trio.sleep(0.05)
        peer.sendall(b"late")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_later)
        got, steps = await steps_of(conn.recv_turn)
    assert got == b"late"
    # started, parked until readable, woken once with the bytes: a receive followed by a
    # separate checkpoint (the old way) takes a third step
    assert steps == 2
    peer.close()
    conn.close()


async def test_the_end_of_the_peer_is_an_empty_receive() -> None:
    conn, peer = pair()
    peer.close()
    assert await conn.recv_turn() == b""
    conn.close()


async def test_kernel_unsent_falls_as_a_slow_peer_reads() -> None:
    """What the push's stall check reads: the bytes the kernel still holds for the peer. A
    peer that reads slowly makes it fall even while the socket takes nothing more."""
    conn, peer = pair()
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    conn.write(b"x" * (4 << 20))  # more than both buffers hold
    with trio.fail_after(5):
        while (held := conn.kernel_unsent()) < 256 << 10:
            await trio.sleep(0.01)
    peer.setblocking(False)
    taken = 0
    with trio.fail_after(5):
        while conn.kernel_unsent() >= held:
            try:
                taken += len(peer.recv(16 << 10))
            except BlockingIOError:
                await trio.sleep(0.01)
    assert taken and conn.kernel_unsent() < held
    peer.close()
    conn.close()
    assert conn.kernel_unsent() == 0  # a closed socket: it cannot tell

"""The accept loop under a burst of new connections: it takes at most ACCEPT_BATCH in a
row, so the tasks already running (viewers) get their turns while the backlog drains."""

from __future__ import annotations

import socket

import trio

from common.net.conn import ACCEPT_BATCH, Accepted, Conn, accept_loop, listen_socket


async def test_a_burst_of_connections_is_taken_in_batches() -> None:
    sock = listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    waiting = 4 * ACCEPT_BATCH
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(waiting)]
    ticks = 0
    ticks_seen: list[int] = []  # the ticker's count when each connection's handler ran
    done = trio.Event()
    opened: list[float] = []

    async def handler(conn: Conn) -> None:
        opened.append(conn.opened_at)
        ticks_seen.append(ticks)
        if len(ticks_seen) == waiting:
            done.set()
        await trio.sleep_forever()

    async def ticker() -> None:  # another task that is always ready to run, like a fan-out
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            nursery.start_soon(lambda: accept_loop(sock, handler, max_connections=waiting))
            with trio.fail_after(10):
                await done.wait()
            nursery.cancel_scope.cancel()
    finally:
        for client in clients:
            client.close()
    # every connection was served, and the ticker ran between the batches: once per batch
    # at least, where one uninterrupted accept run would have let it run about once
    assert len(ticks_seen) == waiting
    assert ticks_seen[-1] - ticks_seen[0] >= 3, ticks_seen
    assert len(set(ticks_seen)) >= 4, ticks_seen
    assert Accepted.last == max(opened)  # viewers are joining: a fan-out steps finer

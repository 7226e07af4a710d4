"""A class-paced chunked response body (an HLS segment sent to a viewer with a class), which
disconnects a viewer that does not take it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from common.net.conn import Conn
from common.net.http import LAST_CHUNK, chunk
from common.proto.shaping import Pacer

HLS_PACED_SLICE = 16384
"""Bytes of a class-shaped HLS segment written per pacing step."""


def paced_body(
    body: bytes,
    pacer: Pacer,
    *,
    timeout: float = 10.0,
    on_slow: Callable[[Conn], None] | None = None,
) -> Callable[[Conn], Awaitable[None]]:
    """A chunked response body that writes `body` as `pacer` allows (an HLS segment of a
    viewer with a class). A viewer that does not take a piece within `timeout` seconds is
    disconnected (`on_slow` is told)."""

    async def send(conn: Conn, data: bytes) -> bool:
        with trio.move_on_after(timeout) as scope:
            await conn.send_all(data)
        if not scope.cancelled_caught:
            return True
        if on_slow is not None:
            on_slow(conn)
        conn.close()
        return False

    async def write(conn: Conn) -> None:
        view = memoryview(body)
        for pos in range(0, len(body), HLS_PACED_SLICE):
            piece = view[pos : pos + HLS_PACED_SLICE]
            await trio.sleep(pacer.delay_for(len(piece), trio.current_time()))
            if not await send(conn, chunk(bytes(piece))):
                return
        await send(conn, LAST_CHUNK)

    return write

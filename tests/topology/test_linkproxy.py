"""The link proxy over real sockets: delay, rate, loss-as-stall and down. On trio's
MockClock (autojump): the times are the proxy's decisions in virtual time."""

from __future__ import annotations

import pytest
import trio

from common.net.conn import open_connection
from topology.delayline import RETRANSMIT_STALL
from topology.linkproxy import LinkProxy, LinkSettings


async def sink_server(task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Echoes everything back."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def echo(stream: trio.SocketStream) -> None:
        async for data in stream:
            await stream.send_all(data)

    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(echo, listeners)


async def round_trip(port: int, payload: bytes) -> float:
    conn = await open_connection("127.0.0.1", port)
    start = trio.current_time()
    await conn.send_all(payload)
    got = 0
    while got < len(payload):
        data = await conn.recv()
        assert data, "connection closed"
        got += len(data)
    conn.close()
    return trio.current_time() - start


async def test_delay_rate_loss_and_down(autojump_clock, nursery) -> None:
    target = await nursery.start(sink_server)
    proxy = LinkProxy("t", ("127.0.0.1", target), LinkSettings(delay_ms=50))
    port = await nursery.start(proxy.run)
    rtt = await round_trip(port, b"x" * 100)
    assert rtt == pytest.approx(0.1, abs=0.001), f"two 50 ms legs took {rtt:.3f} s"

    proxy.update(delay_ms=0, rate_mbps=1.0)  # 125 kB/s each way
    took = await round_trip(port, b"y" * 250_000)
    assert 2.0 <= took <= 2.5, f"250 kB at 1 Mbit/s took {took:.2f} s"

    proxy.update(rate_mbps=0, loss=1.0)  # every segment "lost" once
    rtt = await round_trip(port, b"z" * 100)
    assert rtt >= 2 * RETRANSMIT_STALL

    proxy.update(loss=0.0, down=True)
    conn = await open_connection("127.0.0.1", port)
    with trio.fail_after(2):
        assert await conn.recv() == b"", "a down link refuses new connections"
    proxy.update(down=False)
    assert await round_trip(port, b"back") == pytest.approx(0.0, abs=0.001)

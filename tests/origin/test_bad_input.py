"""Bad input and misbehaving clients get a clear close with a logged reason; others keep going.

Everything runs in-process on trio's MockClock (autojump): the timeouts and the witness's
frame gaps are the server's decisions in virtual time, not this machine's speed."""

from __future__ import annotations

import socket

import pytest
import trio

from common.net.conn import open_connection
from common.net.httpclient import fetch, open_request
from common.net.rtmpclient import RtmpClient
from common.proto import flv
from common.proto.flv import FlvParser
from common.proto.rtmp import messages as m
from common.proto.rtmp.chunk import encode_message
from common.proto.rtmp.handshake import ClientHandshake
from common.proto.rtmp.session import ClientSession
from origin.live import StreamState
from tests.conftest import start_origin
from tests.media import synthetic_publish

FAST = {
    "handshake_timeout": 0.5,
    "idle_timeout": 0.5,
    "slow_timeout": 1.0,
    "max_message_size": 65536,
    "http_header_timeout": 0.5,
    "publisher_grace": 0.3,
}


class Witness:
    """A publisher and an HTTP-FLV viewer that must be undisturbed by the bad clients."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.ended = False

    async def run(self, nursery: trio.Nursery, rtmp_port: int, http_port: int) -> None:
        pub = await RtmpClient.connect(f"rtmp://127.0.0.1:{rtmp_port}/live/witness")
        await pub.publish()
        nursery.start_soon(synthetic_publish, pub)
        await trio.sleep(0.3)
        resp = await open_request("GET", f"http://127.0.0.1:{http_port}/live/witness.flv")
        assert resp.status == 200
        nursery.start_soon(self._read, resp)

    async def _read(self, resp) -> None:
        parser = FlvParser()
        async for data in resp.chunks():
            for tag in parser.feed(data):
                if tag.tag_type == flv.TAG_VIDEO:
                    self.arrivals.append(trio.current_time())
        self.ended = True

    async def check(self, since: float) -> None:
        """The viewer got video steadily from `since` until at least 1.5 s later."""
        await trio.sleep_until(since + 1.5)
        times = [t for t in self.arrivals if t >= since]
        assert not self.ended
        assert len(times) > 10
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert max(gaps) < 0.5, f"witness stalled for {max(gaps):.2f} s"


@pytest.fixture
async def bad_env(nursery):
    server, addr = await start_origin(nursery, **FAST)
    witness = Witness()
    await witness.run(nursery, addr.rtmp_port, addr.http_port)
    return server, addr, witness


async def closed_within(conn, seconds: float) -> bool:
    """True if the server closes `conn` within `seconds` (reading and discarding data)."""
    with trio.move_on_after(seconds):
        while await conn.recv():
            pass
        return True
    return False


async def handshaken(port: int):
    """A raw connection that completed the RTMP handshake."""
    conn = await open_connection("127.0.0.1", port)
    hs = ClientHandshake()
    await conn.send_all(hs.data_to_send())
    while not hs.complete:
        hs.receive_data(await conn.recv())
        await conn.send_all(hs.data_to_send())
    return conn


def logged(caplog, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


async def test_garbage_and_truncated_handshakes(autojump_clock, bad_env, caplog):
    server, addr, witness = bad_env
    start = trio.current_time()
    garbage = await open_connection("127.0.0.1", addr.rtmp_port)
    await garbage.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\0" * 1600)
    assert await closed_within(garbage, 1.0)
    assert logged(caplog, "protocol error") and logged(caplog, "version")

    truncated = await open_connection("127.0.0.1", addr.rtmp_port)
    await truncated.send_all(b"\x03" + b"\0" * 700)
    silent = await open_connection("127.0.0.1", addr.rtmp_port)
    assert await closed_within(truncated, 2.0)
    assert await closed_within(silent, 2.0)
    assert logged(caplog, "handshake not completed within 0.5 s")
    await witness.check(start)


async def test_oversized_message_and_absurd_chunk_size(autojump_clock, bad_env, caplog):
    server, addr, witness = bad_env
    start = trio.current_time()
    big = await handshaken(addr.rtmp_port)
    header = (
        bytes([0x03])
        + (0).to_bytes(3, "big")
        + (1_000_000).to_bytes(3, "big")
        + b"\x14"
        + b"\0" * 4
    )
    await big.send_all(header + b"\0" * 100)
    assert await closed_within(big, 1.0)
    assert logged(caplog, "exceeds the 65536-byte cap")

    for size, why in (
        (0x7FFFFFFF, "absurd chunk size"),
        (0, "absurd chunk size"),
        (0x80000010, "top bit"),
    ):
        conn = await handshaken(addr.rtmp_port)
        await conn.send_all(encode_message(2, m.SET_CHUNK_SIZE, 0, 0, m.u32(size), 128))
        assert await closed_within(conn, 1.0)
        assert logged(caplog, why)
    await witness.check(start)


async def test_invalid_amf_and_commands_out_of_order(autojump_clock, bad_env, caplog):
    server, addr, witness = bad_env
    start = trio.current_time()
    conn = await handshaken(addr.rtmp_port)
    await conn.send_all(encode_message(3, m.COMMAND_AMF0, 0, 0, b"\x02\x00\x40conn", 128))
    assert await closed_within(conn, 1.0)
    assert logged(caplog, "protocol error")

    conn = await handshaken(addr.rtmp_port)
    payload = m.command("publish", 0, None, "sneaky", "live")
    await conn.send_all(encode_message(3, m.COMMAND_AMF0, 1, 0, payload, 128))
    assert await closed_within(conn, 1.0)
    assert logged(caplog, "'publish' before connect")
    assert server.registry.get("live", "sneaky") is None
    await witness.check(start)


async def test_idle_connections_are_closed(autojump_clock, bad_env, caplog):
    server, addr, witness = bad_env
    start = trio.current_time()
    # connected to the app, then nothing
    session = ClientSession("live", f"rtmp://127.0.0.1:{addr.rtmp_port}/live")
    conn = await open_connection("127.0.0.1", addr.rtmp_port)
    await conn.send_all(session.data_to_send())
    with trio.move_on_after(0.3):
        while True:
            session.receive_data(await conn.recv())
            await conn.send_all(session.data_to_send())
    assert await closed_within(conn, 2.0)
    assert logged(caplog, "no publish or play within")

    # a publisher that goes quiet
    quiet = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/quiet")
    await quiet.publish()
    assert server.registry.get("live", "quiet") is not None
    assert await closed_within(quiet.conn, 2.0)
    assert logged(caplog, "publisher sent nothing for 0.5 s")
    # viewers wait publisher_grace for it
    assert server.live[("live", "quiet")].state is StreamState.WAITING
    with trio.fail_after(2):
        while server.registry.get("live", "quiet") is not None:
            await trio.sleep(0.05)
    await witness.check(start)


async def test_bad_http_requests(autojump_clock, bad_env, caplog):
    server, addr, witness = bad_env
    start = trio.current_time()
    conn = await open_connection("127.0.0.1", addr.http_port)
    await conn.send_all(b"NOT HTTP AT ALL\r\n\r\n")
    reply = b""
    while data := await conn.recv():
        reply += data
    assert reply.startswith(b"HTTP/1.1 400")
    assert logged(caplog, "malformed HTTP")

    conn = await open_connection("127.0.0.1", addr.http_port)
    await conn.send_all(b"GET /live/witness.flv HTTP/1.1\r\nX-Big: " + b"a" * 40000)
    reply = b""
    while data := await conn.recv():
        reply += data
    assert reply.startswith(b"HTTP/1.1 431"), reply[:40]  # a head past 16 KiB

    idle = await open_connection("127.0.0.1", addr.http_port)
    assert await closed_within(idle, 2.0)
    status = (await fetch("GET", f"http://127.0.0.1:{addr.http_port}/live/missing.flv")).status
    assert status == 404
    await witness.check(start)


@pytest.mark.slow
async def test_a_viewer_that_stops_reading_is_disconnected(autojump_clock, nursery, caplog):
    server, addr = await start_origin(nursery, slow_timeout=1.0)
    witness = Witness()
    await witness.run(nursery, addr.rtmp_port, addr.http_port)
    big = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/big")
    await big.publish()
    nursery.start_soon(lambda: synthetic_publish(big, key_size=200_000, inter_size=100_000))
    await trio.sleep(0.5)
    start = trio.current_time()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", addr.http_port))
    sock.sendall(b"GET /live/big.flv HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        with trio.fail_after(15):
            while not logged(caplog, "disconnecting slow flv viewer"):
                await trio.sleep(0.1)
    finally:
        sock.close()
    metrics = (await fetch("GET", f"http://127.0.0.1:{addr.http_port}/metrics")).body
    assert "livecdn_slow_viewer_disconnects_total 1.0" in metrics.decode()
    await witness.check(start)


@pytest.mark.slow
async def test_a_lagging_viewer_skips_to_the_newest_keyframe(nursery):
    server, addr = await start_origin(nursery, slow_timeout=30.0, max_lag_ms=1000)
    big = await RtmpClient.connect(f"rtmp://127.0.0.1:{addr.rtmp_port}/live/lag")
    await big.publish()
    nursery.start_soon(lambda: synthetic_publish(big, key_size=200_000, inter_size=100_000))
    await trio.sleep(0.5)
    resp = await open_request("GET", f"http://127.0.0.1:{addr.http_port}/live/lag.flv", rcvbuf=4096)
    await trio.sleep(4)  # not reading: the server must neither buffer without bound nor stall
    stream = server.registry.get("live", "lag")
    parser = FlvParser()
    video = []
    with trio.fail_after(10):
        async for data in resp.chunks():
            video += [t for t in parser.feed(data) if t.tag_type == flv.TAG_VIDEO]
            if len(video) >= 150:
                break
    resp.close()
    assert stream.stats.dropped_frames > 0
    steps = [b.timestamp - a.timestamp for a, b in zip(video, video[1:], strict=False)]
    jump = max(range(len(steps)), key=steps.__getitem__)
    assert steps[jump] > 1000, "the viewer should have skipped ahead"
    assert flv.video_info(video[jump + 1].body).keyframe, "a skip must land on a keyframe"

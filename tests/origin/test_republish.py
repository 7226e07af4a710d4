"""No hijack by default (on_republish = "owner"), on real sockets and trio's MockClock: a
stranger cannot publish over a live name, the owner's reconnect after its connection went
silent can (the decision table: test_publish.py)."""

from __future__ import annotations

import pytest
import trio

from common.net.httpclient import fetch
from common.net.rtmpclient import RtmpClient, RtmpClientError
from common.proto import flv
from common.proto.rtmp import session as rs
from tests.conftest import start_origin
from tests.media import synthetic_publish

IDLE = 1.0  # takeover_idle_seconds in these tests


async def publisher(url: str) -> RtmpClient:
    client = await RtmpClient.connect(url)
    await client.publish()
    return client


def peer_of(client: RtmpClient) -> str:
    """The client's address as the origin sees it."""
    host, port = client.conn.sock.getsockname()[:2]
    return f"{host}:{port}"


class Viewer:
    """An RTMP player that records the video timestamps and arrival times it gets."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.video: list[tuple[float, int]] = []  # (trio time, timestamp)

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        client = await RtmpClient.connect(self.url)
        await client.play()
        task_status.started()
        while True:
            for event in await client.next_events():
                if isinstance(event, rs.Media) and event.type_id == flv.TAG_VIDEO:
                    self.video.append((trio.current_time(), event.timestamp))

    async def wait_frames(self, count: int) -> None:
        with trio.fail_after(10):  # a hang guard
            while len(self.video) < count:
                await trio.sleep(0.01)

    def since(self, start: float) -> int:
        return sum(1 for t, _ in self.video if t >= start)


async def test_a_stranger_is_refused_and_the_silent_owner_s_reconnect_takes_over(
    autojump_clock, nursery, caplog
):
    server, addr = await start_origin(nursery, takeover_idle_seconds=IDLE)
    url = f"rtmp://127.0.0.1:{addr.rtmp_port}/live/mine"
    owner = await publisher(url)
    sending = trio.CancelScope()

    async def owner_sends() -> None:
        with sending:
            await synthetic_publish(owner)

    nursery.start_soon(owner_sends)
    viewer = Viewer(url)
    await nursery.start(viewer.run)
    await viewer.wait_frames(10)

    # While the owner sends media, a second publisher of its name is refused.
    stranger = await RtmpClient.connect(url)
    with pytest.raises(RtmpClientError) as err:
        await stranger.publish()
    assert err.value.code == "NetStream.Publish.BadName"
    assert "live from another publisher" in str(err.value)
    assert any(
        "publish refused: live/mine is live from another publisher" in r.getMessage()
        for r in caplog.records
    )
    assert server.live[("live", "mine")].publisher.rtmp.conn.peer == peer_of(owner)
    refused = trio.current_time()
    await trio.sleep(1)
    assert viewer.since(refused) >= 20, "the viewers keep the owner's stream"
    assert server.registry.get("live", "mine").stats.sources == 1
    body = (await fetch("GET", f"http://127.0.0.1:{addr.http_port}/metrics")).body.decode()
    assert 'livecdn_connections_refused_total{reason="not_owner"} 1.0' in body

    # The owner's connection goes silent (a network blip: still open, nothing arrives).
    sending.cancel()
    silent = trio.current_time()
    await trio.sleep(IDLE / 2)
    early = await RtmpClient.connect(url)
    with pytest.raises(RtmpClientError, match="live from another publisher"):
        await early.publish()  # silent, but not for takeover_idle_seconds yet
    await trio.sleep_until(silent + IDLE)
    at = len(viewer.video)
    back = await publisher(url)  # the owner's encoder reconnects
    assert any("takeover: " in r.getMessage() and "sent no media for" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    nursery.start_soon(synthetic_publish, back)
    await viewer.wait_frames(at + 25)  # a GOP from the reconnected encoder, same viewer
    assert server.live[("live", "mine")].publisher.rtmp.conn.peer == peer_of(back)
    assert server.registry.get("live", "mine").stats.sources == 2
    with trio.fail_after(5), pytest.raises(RtmpClientError):
        while True:  # the silent connection was closed
            await owner.next_events()


@pytest.mark.parametrize("policy", ["takeover", "reject"])
async def test_the_explicit_policies(autojump_clock, nursery, policy):
    """With on_republish = "takeover" anyone may replace a live publisher at once;
    "reject" refuses even the reconnect of a silent owner."""
    server, addr = await start_origin(nursery, on_republish=policy, takeover_idle_seconds=IDLE)
    url = f"rtmp://127.0.0.1:{addr.rtmp_port}/live/p"
    first = await publisher(url)
    await first.send(9, 0, bytes([0x17, 0x01, 0, 0, 0, 0x65]))
    await trio.sleep(0 if policy == "takeover" else IDLE * 2)
    second = await RtmpClient.connect(url)
    if policy == "takeover":
        await second.publish()
        assert server.live[("live", "p")].publisher.rtmp.conn.peer == peer_of(second)
    else:
        with pytest.raises(RtmpClientError, match="already published"):
            await second.publish()
        assert server.live[("live", "p")].publisher.rtmp.conn.peer == peer_of(first)

"""The control plane with a cluster_secret, against a real balancer on port 0: strangers,
wrong secrets, replayed handshakes and impersonation are refused (logged, counted); real
nodes with the secret report and get viewers; a fake edge never gets one."""

from __future__ import annotations

import logging
import secrets
import tomllib
from collections import Counter

import pytest
import trio

from common.config import BalancerConfig, ConfigError, EdgeConfig, OriginConfig, build, load
from common.config.exposure import open_surfaces
from common.net.conn import Conn, open_connection
from common.net.httpclient import fetch
from common.net.reporter import report
from common.proto.control import Heartbeat
from common.proto.controlauth import HANDSHAKE_FRAME, NONCE_BYTES, ClientSession
from common.proto.wire import Decoder, encode
from tests.balancer.test_control_plane import closed_by_balancer, hb, start
from tests.conftest import start_edge, start_origin
from tests.metrics import metric, scrape
from tests.topology.test_cli import SMALL
from tests.topology.test_plan import write
from topology import schema
from topology.plan import plan
from topology.runsecrets import ensure_secrets

SECRET = "cluster secret for the tests"
WRONG = "not the cluster secret at all"


async def recv_frames(conn: Conn, count: int, within: float = 3.0) -> list[dict]:
    """The next `count` frames the balancer sends on `conn`."""
    decoder, got = Decoder(HANDSHAKE_FRAME), []
    with trio.fail_after(within):
        while len(got) < count:
            data = await conn.recv()
            assert data, f"closed after {got}"
            got += decoder.feed(data)
    return got


async def authenticate(
    control: int, node: str, secret: str = SECRET
) -> tuple[Conn, ClientSession, bytes]:
    """A raw connection that authenticated as `node`; the bytes it sent to do so."""
    conn = await open_connection("127.0.0.1", control)
    session = ClientSession(secret, node, secrets.token_bytes(NONCE_BYTES))
    sent = b""
    while not session.ready:
        data = await conn.recv()
        assert data, "the balancer closed the connection during the handshake"
        session.feed(data)
        reply = session.take_outgoing()
        sent += reply
        await conn.send_all(reply)
    return conn, session, sent


async def refused_with(conn: Conn) -> str:
    """The reason of the balancer's refusal on `conn` (it then closes the connection)."""
    frames = []
    decoder = Decoder(HANDSHAKE_FRAME)
    with trio.fail_after(3):
        while data := await conn.recv():
            frames += decoder.feed(data)
    conn.close()
    (refusal,) = [f for f in frames if f["type"] == "refused"]
    return refusal["reason"]


async def test_no_credentials_are_refused_logged_and_counted(nursery, caplog) -> None:
    caplog.set_level(logging.INFO, "livecdn.balancer")
    b, base, control = await start(nursery, cluster_secret=SECRET, control_idle_timeout=1.0)
    conn = await open_connection("127.0.0.1", control)
    (hello,) = await recv_frames(conn, 1)
    assert hello["auth"] == "hmac-sha256" and len(hello["challenge"]) == 32
    await conn.send_all(encode(hb("stranger", 1000)))
    assert "expected an auth message" in await refused_with(conn)
    # one that connects and leaves, and one that says nothing
    (await open_connection("127.0.0.1", control)).close()
    assert await closed_by_balancer(await open_connection("127.0.0.1", control), within=4)
    assert b.edges == {}
    text = await scrape(base)
    assert metric(text, "livecdn_control_rejected_total", reason="auth") == 2
    assert metric(text, "livecdn_control_idle_total") == 1
    lines = [
        r.getMessage() for r in caplog.records if "control connection 127.0.0.1:" in r.getMessage()
    ]
    assert any("expected an auth message" in line for line in lines)
    assert any("closed before authenticating" in line for line in lines)
    assert (await fetch("GET", f"{base}/live/x.flv")).status == 503  # no edge to send anyone to


async def test_a_wrong_secret_is_refused_and_the_node_says_why(nursery, caplog) -> None:
    caplog.set_level(logging.INFO, "livecdn")
    b, base, control = await start(nursery, cluster_secret=SECRET)
    beats = lambda: [Heartbeat("e1", "http://127.0.0.1:1000")]  # noqa: E731
    nursery.start_soon(lambda: report(f"127.0.0.1:{control}", beats, 0.05, secret=WRONG))
    with trio.fail_after(5):
        while metric(await scrape(base), "livecdn_control_rejected_total", reason="auth") < 2:
            await trio.sleep(0.05)
    assert b.edges == {}
    balancer = [r.getMessage() for r in caplog.records if r.name == "livecdn.balancer"]
    assert any("node e1: wrong cluster_secret" in m and "127.0.0.1:" in m for m in balancer)
    errors = [
        r for r in caplog.records if r.name == "livecdn.reporter" and r.levelno == logging.ERROR
    ]
    assert len(errors) == 1, "logged once, repeats at debug"
    assert "refused: node e1: wrong cluster_secret" in errors[0].getMessage()
    assert errors[0].exc_info is None


async def test_a_captured_handshake_replayed_on_a_new_connection_fails(nursery) -> None:
    b, base, control = await start(nursery, cluster_secret=SECRET)
    conn, session, sent = await authenticate(control, "e1")
    record = session.seal(hb("e1", 1000))
    await conn.send_all(record)
    with trio.fail_after(3):
        while "e1" not in b.edges:
            await trio.sleep(0.05)
    conn.close()
    del b.edges["e1"]
    # the eavesdropper replays everything the node sent, on a new connection
    replay = await open_connection("127.0.0.1", control)
    await recv_frames(replay, 1)
    await replay.send_all(sent + record)
    assert "wrong cluster_secret" in await refused_with(replay)
    # and a record replayed into a live authenticated connection
    conn, session, _ = await authenticate(control, "e2")
    first = session.seal(hb("e2", 2000))
    await conn.send_all(first + first)
    assert "wrong MAC" in await refused_with(conn)
    assert "e1" not in b.edges
    assert metric(await scrape(base), "livecdn_control_rejected_total", reason="auth") == 2


async def test_an_authenticated_node_cannot_speak_for_another(nursery) -> None:
    b, base, control = await start(nursery, cluster_secret=SECRET)
    conn, session, _ = await authenticate(control, "e1")
    await conn.send_all(session.seal(hb("e1", 1000)))
    with trio.fail_after(3):
        while "e1" not in b.edges:
            await trio.sleep(0.05)
    await conn.send_all(session.seal(hb("e2", 2000, draining=True)))
    assert "e1 sent a message for e2" in await refused_with(conn)
    assert set(b.edges) == {"e1"}
    text = await scrape(base)
    assert metric(text, "livecdn_control_rejected_total", reason="impersonation") == 1


async def fake_edge(control: int, port: int) -> None:
    """A stranger without the secret, trying again and again: plain heartbeats, then an
    auth with a guessed MAC, for an edge that would be the first choice."""
    attempt = 0
    while True:
        attempt += 1
        conn = await open_connection("127.0.0.1", control)
        try:
            (hello,) = await recv_frames(conn, 1)
            beat = hb("fake", port, capacity_viewers=10**6, weight=1000.0)
            if attempt % 2:
                await conn.send_all(encode(beat))
            else:
                guess = {"type": "auth", "node": "fake", "nonce": b"n" * 32, "mac": b"m" * 32}
                await conn.send_all(encode(guess) + encode(beat) + b"\0" * 32)
            while await conn.recv():
                pass
        finally:
            conn.close()
        await trio.sleep(0.02)


async def test_a_fake_edge_gets_no_viewer_and_the_real_one_gets_them_all(nursery) -> None:
    b, base, control = await start(nursery, cluster_secret=SECRET, policy="round_robin",
                                   check_interval=0.2)  # fmt: skip
    _, oaddr = await start_origin(nursery, balancer=f"127.0.0.1:{control}", node_id="o1",
                                  cluster_secret=SECRET)  # fmt: skip
    _, eaddr = await start_edge(nursery, [f"rtmp://127.0.0.1:{oaddr.rtmp_port}"],
                                balancer=f"127.0.0.1:{control}", node_id="e1",
                                cluster_secret=SECRET)  # fmt: skip
    fake_http = await trio.open_tcp_listeners(0, host="127.0.0.1")  # somewhere that answers
    fake_port = fake_http[0].socket.getsockname()[1]
    nursery.start_soon(fake_edge, control, fake_port)
    with trio.fail_after(5):
        while "e1" not in b.edges or "o1" not in b.table.origin_seen:
            await trio.sleep(0.05)
    where: Counter[str] = Counter()
    for i in range(60):
        reply = await fetch("GET", f"{base}/live/s{i % 3}.flv")
        assert reply.status == 302
        where[reply.headers["location"].split("/live/")[0]] += 1
        await trio.sleep(0.01)
    assert where == {f"http://127.0.0.1:{eaddr.http_port}": 60}
    assert set(b.edges) == {"e1"}
    assert metric(await scrape(base), "livecdn_control_rejected_total", reason="auth") >= 4
    for listener in fake_http:
        await listener.aclose()


async def test_silent_strangers_do_not_keep_a_real_edge_out(nursery, caplog) -> None:
    """More silent connections than control_max_connections, from the edge's own address:
    they hold only the unauthenticated budget (8 per address), so the edge still connects,
    authenticates and gets viewers."""
    b, base, control = await start(nursery, cluster_secret=SECRET, control_max_connections=40,
                                   control_idle_timeout=60.0, check_interval=0.2)  # fmt: skip
    strangers = [await open_connection("127.0.0.1", control) for _ in range(60)]
    with trio.fail_after(5):
        while metric(await scrape(base), "livecdn_control_rejected_total",
                     reason="unauthenticated_limit", default=0.0) < 52:  # fmt: skip
            await trio.sleep(0.05)
    assert b.control.connections == 8
    _, oaddr = await start_origin(nursery)
    _, eaddr = await start_edge(nursery, [f"rtmp://127.0.0.1:{oaddr.rtmp_port}"],
                                balancer=f"127.0.0.1:{control}", node_id="e1",
                                cluster_secret=SECRET)  # fmt: skip
    with trio.fail_after(10):
        while (reply := await fetch("GET", f"{base}/live/x.flv")).status != 302:
            await trio.sleep(0.1)
    assert reply.headers["location"].startswith(f"http://127.0.0.1:{eaddr.http_port}/live/x.flv")
    assert set(b.edges) == {"e1"} and b.control.connections == 8  # e1, and 7 strangers
    assert any("a newer one needs its place" in r.getMessage() for r in caplog.records)
    for conn in strangers:
        conn.close()


async def test_a_node_and_balancer_that_disagree_fail_clearly(nursery, caplog) -> None:
    caplog.set_level(logging.INFO, "livecdn")
    beats = lambda: [Heartbeat("e1", "http://127.0.0.1:1000")]  # noqa: E731
    open_b, _, open_control = await start(nursery)
    nursery.start_soon(lambda: report(f"127.0.0.1:{open_control}", beats, 0.05, secret=SECRET))
    closed_b, _, closed_control = await start(nursery, cluster_secret=SECRET)
    nursery.start_soon(lambda: report(f"127.0.0.1:{closed_control}", beats, 0.05))

    def errors() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "livecdn.reporter" and r.levelno == logging.ERROR]  # fmt: skip

    with trio.fail_after(5):
        while len(errors()) < 2:
            await trio.sleep(0.05)
    await trio.sleep(0.5)
    assert open_b.edges == {} and closed_b.edges == {}
    text = "\n".join(errors())
    assert len(errors()) == 2, text
    assert f"{open_control} failed" in text and "it has no cluster_secret" in text
    assert f"{closed_control} failed" in text and "it requires a cluster_secret" in text
    refusals = [r.getMessage() for r in caplog.records if "before authenticating" in r.getMessage()]
    assert refusals, "the balancer logs the node that left without authenticating"


def test_exposure_names_the_unauthenticated_control_plane() -> None:
    def lines(model: type, **values: object) -> list[str]:
        return [line for line in open_surfaces(build(model, values)) if "cluster_secret" in line]

    assert lines(BalancerConfig) and not lines(BalancerConfig, cluster_secret=SECRET)
    edge = {"parents": ["rtmp://127.0.0.1:1"]}
    assert not lines(EdgeConfig, **edge), "an edge that reports to no balancer"
    (line,) = lines(EdgeConfig, **edge, balancer="127.0.0.1:8091")
    assert line.startswith("no cluster_secret: the heartbeats to the balancer 127.0.0.1:8091")
    assert not lines(EdgeConfig, **edge, balancer="127.0.0.1:8091", cluster_secret=SECRET)
    (line,) = lines(OriginConfig, balancer="127.0.0.1:8091")
    assert "stream announcements" in line
    assert not lines(OriginConfig, balancer="127.0.0.1:8091", cluster_secret=SECRET)


@pytest.mark.parametrize("model", [BalancerConfig, EdgeConfig, OriginConfig])
def test_a_short_cluster_secret_is_a_config_error(model: type) -> None:
    with pytest.raises(ConfigError, match="cluster_secret: must be at least 16 characters"):
        build(model, {"cluster_secret": "short", "parents": ["rtmp://127.0.0.1:1"]}
              if model is EdgeConfig else {"cluster_secret": "short"})  # fmt: skip


def test_a_topology_run_authenticates_its_control_plane(tmp_path) -> None:
    text = "[balancer]\ncontrol_port = 0\nhttp_port = 0\n" + SMALL
    topo = schema.load(str(write(tmp_path, text)))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    found = tomllib.loads(ensure_secrets(topo, run_dir).read_text())
    secret = found["balancer"]["cluster_secret"]
    assert len(secret) >= 32 and "cluster_secret" not in found["origin"]
    plan(topo, run_dir)
    for model, name in ((BalancerConfig, "balancer"), (OriginConfig, "origin"),
                        (EdgeConfig, "edge1")):  # fmt: skip
        config = load(model, run_dir / f"{name}.toml", environ={})
        assert config.cluster_secret == secret, name
        assert open_surfaces(config) == [line for line in open_surfaces(config)
                                         if "cluster_secret" not in line]  # fmt: skip

"""The balancer's control port against hostile and broken peers (real TCP, balancer in-process):
bad messages close only their connection, tables stay bounded, silent peers are dropped and
forgotten, the admission queue is bounded, and the senders never die."""

from __future__ import annotations

import contextlib
import json
import logging
import math

import msgpack
import pytest
import trio

from balancer.edges import Exclusion
from balancer.routing import NoRoom
from balancer.server import Balancer
from common.config import BalancerConfig, ConfigError, build
from common.net.conn import Conn, ConnClosed, open_connection
from common.net.httpclient import fetch
from common.net.reporter import report
from common.proto.control import ControlError, Heartbeat, StreamInfo, StreamsAnnouncement
from common.proto.wire import encode
from tests.balancer.test_balancer import hear
from tests.conftest import ffmpeg_publish, needs_ffmpeg, start_edge, start_origin, wait_for_stream
from tests.metrics import metric, scrape


def hb(node: str, port: int, **extra: object) -> dict:
    msg = {"type": "heartbeat", "node": node, "http": f"http://127.0.0.1:{port}",
           "rtmp": f"rtmp://127.0.0.1:{port + 1}", "viewers": 0, "egress_bps": 0.0}  # fmt: skip
    msg.update(extra)
    return msg


def frame(obj: object) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


async def start(nursery: trio.Nursery, **overrides: object) -> tuple[Balancer, str, int]:
    values = {"host": "127.0.0.1", "http_port": 0, "control_port": 0, "check_interval": 60.0}
    b = Balancer(build(BalancerConfig, {**values, **overrides}))
    http, control = await nursery.start(b.run)
    return b, f"http://127.0.0.1:{http}", control


async def send(control: int, data: bytes) -> Conn:
    conn = await open_connection("127.0.0.1", control)
    with contextlib.suppress(ConnClosed):  # closed before it read everything: fine
        await conn.send_all(data)
    return conn


async def closed_by_balancer(conn: Conn, within: float = 3.0) -> bool:
    """True once the balancer closes `conn` (after its hello and maybe a refusal, which
    are all it sends on the control port)."""
    with trio.move_on_after(within):
        while await conn.recv():
            pass
        conn.close()
        return True
    conn.close()
    return False


async def heartbeating(control: int, *beats: dict, every: float = 0.2) -> None:
    """A fake edge: one connection, valid heartbeats forever."""
    conn = await open_connection("127.0.0.1", control)
    try:
        while True:
            await conn.send_all(b"".join(encode(m) for m in beats))
            await trio.sleep(every)
    finally:
        conn.close()


BAD = {
    "garbage msgpack": b"\x00\x00\x00\x03\xc1\xc1\xc1",
    "oversized frame": (1 << 30).to_bytes(4, "big") + b"x" * 100,
    "not a map": frame([1, 2, 3]),
    "no type": frame({"v": 1, "node": "x"}),
    "wrong version": frame({**hb("v2", 3000), "v": 2}),
    "NaN viewers": encode(hb("nan", 3000, viewers=math.nan)),
    "NaN egress": encode(hb("nan", 3000, egress_bps=math.nan)),
    "inf capacity": encode(hb("inf", 3000, capacity_bps=math.inf)),
    "negative viewers": encode(hb("neg", 3000, viewers=-5)),
    "weight a string": encode(hb("w", 3000, weight="heavy")),
    "viewers a bool": encode(hb("b", 3000, viewers=True)),
    "streams a list": encode(hb("l", 3000, streams=["live/a"])),
    "streams with a bad key": encode(hb("k", 3000, streams={"../../etc": 1})),
    "too many streams": encode(hb("m", 3000, streams={f"live/s{i}": 1 for i in range(1001)})),
    "huge map": encode(hb("h", 3000, streams={f"live/s{i}": 1 for i in range(20_000)})),
    "node not a string": encode(hb("x", 3000) | {"node": {"a": 1}}),
    "node with a newline": encode(hb("evil\nINFO fake log line", 3000)),
    "node too long": encode(hb("n" * 65, 3000)),
    "http with a path": encode(hb("p", 3000) | {"http": "http://127.0.0.1:3000/evil"}),
    "http with userinfo": encode(hb("u", 3000) | {"http": "http://a:b@127.0.0.1:3000"}),
    "http to no host": encode(hb("z", 3000) | {"http": "http://0.0.0.0:3000"}),
    "rtmp to no host": encode(hb("z6", 3000) | {"rtmp": "rtmp://[::]:3001"}),
    "region with escapes": encode(hb("r", 3000, region="\x1b[2J")),
    "announcement with NaN bitrate": encode(
        {
            "type": "streams",
            "node": "o",
            "streams": [{"app": "l", "name": "a", "bitrate": math.nan}],
        }
    ),
    "announcement streams a map": encode({"type": "streams", "node": "o", "streams": {"a": 1}}),
}


async def test_bad_messages_close_their_connection_and_nothing_else(nursery) -> None:
    b, base, control = await start(nursery, policy="least_load")
    nursery.start_soon(heartbeating, control, hb("good", 1000, capacity_viewers=100))
    with trio.fail_after(3):
        while "good" not in b.edges:
            await trio.sleep(0.05)
    for name, data in BAD.items():
        conn = await send(control, data)
        assert await closed_by_balancer(conn), f"{name}: the connection stays open"
        # after each: the balancer answers and still routes to the real edge
        status = (await fetch("GET", f"{base}/healthz")).status
        assert status == 200, name
        reply = await fetch("GET", f"{base}/live/x.flv")
        status, headers = reply.status, reply.headers
        assert status == 302 and headers["location"].startswith("http://127.0.0.1:1000/"), name
    assert set(b.edges) == {"good"} and not b.table.origin_streams
    text = await scrape(base)
    assert metric(text, "livecdn_control_rejected_total") == len(BAD)
    for reason in ("frame", "range", "type", "size", "syntax"):
        assert metric(text, "livecdn_control_rejected_total", reason=reason) >= 1, reason
    # and the real edge's connection was never disturbed
    body = (await fetch("GET", f"{base}/api/edges")).body
    assert b'"in_rotation": true' in body


async def test_edge_table_is_bounded(nursery, caplog) -> None:
    caplog.set_level(logging.INFO, "livecdn.balancer")
    b, base, control = await start(nursery, max_edges=3)
    nursery.start_soon(heartbeating, control, hb("good", 1000))
    with trio.fail_after(3):
        while "good" not in b.edges:
            await trio.sleep(0.05)
    conn = await send(control, encode(hb("n1", 2000)) + encode(hb("n2", 3000)))
    with trio.fail_after(3):
        while len(b.edges) < 3:
            await trio.sleep(0.05)
    # a fourth node id is refused: that connection closes, the table stays at 3
    await conn.send_all(encode(hb("n3", 4000)))
    assert await closed_by_balancer(conn)
    for i in range(20):
        assert await closed_by_balancer(await send(control, encode(hb(f"x{i}", 5000 + i))))
    assert set(b.edges) == {"good", "n1", "n2"}
    refusals = [r for r in caplog.records if "edge table full" in r.getMessage()]
    assert all("127.0.0.1:" in r.getMessage() for r in refusals)
    # strangers' refusals are logged one by one up to a budget, the rest summed up later
    assert len(refusals) == b.control.stranger_log.burst == 20
    assert b.control.stranger_log.suppressed == 1
    # known edges still heartbeat
    conn = await send(control, encode(hb("n1", 2000, viewers=7)))
    with trio.fail_after(3):
        while b.edges["n1"].beat.viewers != 7:
            await trio.sleep(0.05)
    conn.close()
    assert metric(await scrape(base), "livecdn_control_rejected_total", reason="edges_full") == 21


async def test_idle_control_connections_are_closed(autojump_clock, nursery) -> None:
    b, base, control = await start(nursery, control_idle_timeout=0.5)
    start_at = trio.current_time()
    silent = await open_connection("127.0.0.1", control)
    assert await closed_by_balancer(silent, within=3)
    assert trio.current_time() - start_at == pytest.approx(0.5)  # the idle timeout, virtual

    # bytes that never complete a frame do not count as messages
    dribbler = await open_connection("127.0.0.1", control)
    data = encode(hb("slow", 1000))
    start_at = trio.current_time()
    closed = False
    for byte in data[:-1]:
        try:
            await dribbler.send_all(bytes([byte]))
        except ConnClosed:
            closed = True
            break
        await trio.sleep(0.05)
        if dribbler.closed:
            break
    assert closed or await closed_by_balancer(dribbler, within=3)
    # closed by the idle timeout (+ one 50 ms step), long before the last byte would be sent
    assert trio.current_time() - start_at <= 0.55 + 1e-6 and "slow" not in b.edges

    # a node that keeps talking is kept
    async with trio.open_nursery() as inner:
        inner.start_soon(lambda: heartbeating(control, hb("chatty", 1000), every=0.1))
        await trio.sleep(1.5)
        assert "chatty" in b.edges
        assert b.control.connections == 1
        inner.cancel_scope.cancel()
    assert metric(await scrape(base), "livecdn_control_idle_total") >= 2


async def test_control_connections_are_capped(nursery) -> None:
    b, base, control = await start(nursery, control_max_connections=2, control_idle_timeout=30.0)
    first = await open_connection("127.0.0.1", control)
    second = await open_connection("127.0.0.1", control)
    with trio.fail_after(3):
        while b.control.connections < 2:
            await trio.sleep(0.05)
    third = await open_connection("127.0.0.1", control)
    assert await closed_by_balancer(third, within=2)
    first.close()
    with trio.fail_after(3):
        while b.control.connections > 1:
            await trio.sleep(0.05)
    fourth = await send(control, encode(hb("late", 1000)))
    with trio.fail_after(3):
        while "late" not in b.edges:
            await trio.sleep(0.05)
    second.close()
    fourth.close()
    text = await scrape(base)
    assert metric(text, "livecdn_control_rejected_total", reason="connection_limit") == 1


async def test_silent_edges_and_origins_are_forgotten(nursery, autojump_clock) -> None:
    b, base, _ = await start(nursery, heartbeat_timeout=1.0, forget_after=10.0)
    hear(b, Heartbeat("e1", "http://127.0.0.1:1"), "p")
    hear(b, Heartbeat("e2", "http://127.0.0.1:2"), "p")
    hear(b, StreamsAnnouncement("o1", (StreamInfo("live", "a", bitrate=3e5),)), "p")
    await trio.sleep(5)
    hear(b, Heartbeat("e2", "http://127.0.0.1:2"), "p")
    hear(b, StreamsAnnouncement("o1", (StreamInfo("live", "a", bitrate=3e5),)), "p")
    assert set(b.edges) == {"e1", "e2"} and b.table.bitrate("live/a") == 3e5
    views, excluded = b.router.eligible("live/a")
    assert [v.id for v in views] == ["e2"] and excluded["e1"].why is Exclusion.STALE
    await trio.sleep(8)  # e1 silent for 13 s, e2 for 8 s
    assert set(b.edges) == {"e2"} and b.table.bitrate("live/a") == 3e5
    await trio.sleep(5)
    assert b.edges == {} and b.table.origin_streams == {} and b.table.bitrate("live/a") == 0
    text = await scrape(base)
    assert metric(text, "livecdn_edges_forgotten_total") == 2
    assert metric(text, "livecdn_origins_forgotten_total") == 1
    # a forgotten edge that comes back simply joins again
    hear(b, Heartbeat("e1", "http://127.0.0.1:1"), "p")
    assert not isinstance(b.router.choose("live/a"), NoRoom)


async def test_a_full_table_first_forgets_the_silent(nursery, autojump_clock) -> None:
    b, _, _ = await start(nursery, max_edges=1, max_origins=1, heartbeat_timeout=1.0,
                          forget_after=1000.0)  # fmt: skip
    hear(b, Heartbeat("old", "http://127.0.0.1:1"), "p")
    hear(b, StreamsAnnouncement("o-old"), "p")
    with pytest.raises(ControlError, match="edge table full"):
        hear(b, Heartbeat("new", "http://127.0.0.1:2"), "p")
    with pytest.raises(ControlError, match="origin table full"):
        hear(b, StreamsAnnouncement("o-new"), "p")
    await trio.sleep(1001)
    # no waiting for the periodic sweep: a newcomer makes room at once
    b.edges["old"].last_heartbeat -= 1
    b.table.origin_seen["o-old"] -= 1
    hear(b, Heartbeat("new", "http://127.0.0.1:2"), "p")
    hear(b, StreamsAnnouncement("o-new"), "p")
    assert set(b.edges) == {"new"} and set(b.table.origin_streams) == {"o-new"}


async def test_admission_queue_is_bounded(autojump_clock, nursery) -> None:
    b, base, control = await start(nursery, overflow="queue", queue_max=2, queue_timeout=20.0)
    results: list[tuple[int, float, str]] = []
    t0 = trio.current_time()

    async def viewer() -> None:
        reply = await fetch("GET", f"{base}/live/x.flv", timeout=30)
        status, headers = reply.status, reply.headers
        results.append((status, trio.current_time() - t0, headers.get("location", "")))

    async with trio.open_nursery() as viewers:
        for _ in range(6):
            viewers.start_soon(viewer)
        with trio.fail_after(5):
            while len(results) < 4:
                await trio.sleep(0.05)
        await trio.sleep(0.5)
        assert len(results) == 4 and b.router.queued == 2, "two wait, the rest are refused"
        assert all(status == 503 and elapsed == 0 for status, elapsed, _ in results)
        body = (await fetch("GET", f"{base}/live/x.flv")).body  # still refused at once
        assert b"admission queue full" in body
        # room appears: the two waiting get it
        conn = await send(control, encode(hb("e1", 1000, capacity_viewers=10)))
    conn.close()
    assert [s for s, _, _ in results[4:]] == [302, 302]
    assert all(loc.startswith("http://127.0.0.1:1000/") for _, _, loc in results[4:])
    assert b.router.queued == 0
    assert metric(await scrape(base), "livecdn_rejects_total", reason="queue_full") == 5


async def test_balancer_routes_refuse_bad_stream_keys(nursery) -> None:
    b, base, control = await start(nursery)
    conn = await send(control, encode(hb("e1", 1000)))
    with trio.fail_after(3):
        while "e1" not in b.edges:
            await trio.sleep(0.05)
    assert (await fetch("GET", f"{base}/live/ok.flv")).status == 302
    for path in ("/live/.hidden.flv", "/live/a%2Fb.flv", "/li%20ve/x.m3u8", "/a/b/c.flv"):
        assert (await fetch("GET", base + path)).status == 404, path
    reply = await fetch("GET", f"{base}/api/route?app=live&name=a%0Ab&proto=rtmp")
    status, body = reply.status, reply.body
    assert status == 400 and b"name" in body
    conn.close()


def test_config_validates_the_new_keys() -> None:
    for bad in ({"max_edges": 0}, {"control_max_connections": 0}, {"queue_max": -1},
                {"forget_after": 1.0}, {"control_idle_timeout": 0.0},
                {"control_idle_timeout": math.inf}, {"forget_after": math.nan},
                {"hash_balance_factor": math.nan}, {"heartbeat_timeout": math.nan}):  # fmt: skip
        with pytest.raises(ConfigError):
            build(BalancerConfig, bad)
    cfg = build(BalancerConfig, {})
    assert (cfg.max_edges, cfg.control_max_connections, cfg.forget_after) == (1000, 256, 60.0)


# ---------------------------------------------------------------------- senders


async def test_reporter_survives_broken_messages_and_refusals(nursery, caplog) -> None:
    caplog.set_level(logging.DEBUG, "livecdn.reporter")
    b, _, control = await start(nursery, max_edges=1)
    hear(b, Heartbeat("squatter", "http://127.0.0.1:9"), "p")
    calls = 0

    def messages() -> list[Heartbeat]:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RuntimeError("a bug while building the heartbeat")
        if calls <= 5:
            return [Heartbeat("bad id!", "http://127.0.0.1:1")]  # raises ControlError
        return [Heartbeat("mine", "http://127.0.0.1:1000")]

    nursery.start_soon(lambda: report(f"127.0.0.1:{control}", messages, 0.05))
    with trio.fail_after(10):
        while calls < 8:
            await trio.sleep(0.05)
    assert set(b.edges) == {"squatter"}, "refused: the table is full"
    del b.edges["squatter"]
    with trio.fail_after(10):
        while "mine" not in b.edges:
            await trio.sleep(0.05)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.exc_info is not None for r in errors] == [True, True]  # once per failure, traced
    assert "RuntimeError" in errors[0].getMessage() and "ControlError" in errors[1].getMessage()


async def test_real_edge_and_origin_report_typed_messages(nursery) -> None:
    b, base, control = await start(nursery)
    origin, oaddr = await start_origin(nursery, balancer=f"127.0.0.1:{control}", node_id="o1")
    edge, eaddr = await start_edge(
        nursery,
        [f"rtmp://127.0.0.1:{oaddr.rtmp_port}"],
        hls_parents=[f"http://127.0.0.1:{oaddr.http_port}"],
        balancer=f"127.0.0.1:{control}",
        node_id="e1",
    )
    with trio.fail_after(5):
        while "e1" not in b.edges or "o1" not in b.table.origin_seen:
            await trio.sleep(0.05)
    assert b.edges["e1"].http == f"http://127.0.0.1:{eaddr.http_port}"
    # viewers asking for streams that do not exist never grow the heartbeat
    for i in range(30):
        await fetch("GET", f"http://127.0.0.1:{eaddr.http_port}/live/nope{i}.flv")
        await fetch("GET", f"http://127.0.0.1:{eaddr.http_port}/live/nope{i}.m3u8")
    (beat,) = edge.heartbeat()
    assert dict(beat.streams) == {}
    asked = trio.current_time()  # the balancer hears both nodes again after those requests
    with trio.fail_after(10):  # a hang guard: they report about once a second
        while b.edges["e1"].last_heartbeat <= asked or b.table.origin_seen["o1"] <= asked:
            await trio.sleep(0.05)
    assert dict(b.edges["e1"].beat.streams) == {} and b.table.origin_streams["o1"] == {}


@needs_ffmpeg
async def test_live_streams_are_reported(nursery, clip) -> None:
    b, base, control = await start(nursery)
    origin, oaddr = await start_origin(nursery, balancer=f"127.0.0.1:{control}", node_id="o1")
    edge, eaddr = await start_edge(nursery, [f"rtmp://127.0.0.1:{oaddr.rtmp_port}"],
                                   balancer=f"127.0.0.1:{control}", node_id="e1")  # fmt: skip
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{oaddr.rtmp_port}/live/x")
    await wait_for_stream(origin, "live", "x")
    (ann,) = origin.announcement()
    assert [s.key for s in ann.streams] == ["live/x"]

    async def viewer() -> None:
        with contextlib.suppress(trio.TooSlowError, OSError):
            await fetch("GET", f"http://127.0.0.1:{eaddr.http_port}/live/x.flv", timeout=20)

    def held() -> dict[str, int]:
        return dict(b.edges["e1"].beat.streams) if "e1" in b.edges else {}

    async with trio.open_nursery() as viewers:
        viewers.start_soon(viewer)
        with trio.fail_after(10):
            while held().get("live/x") != 1:
                await trio.sleep(0.1)
        viewers.cancel_scope.cancel()
    body = (await fetch("GET", f"{base}/api/streams")).body
    assert b'"live/x"' in body and b'"origin": "o1"' in body


async def test_an_edge_whose_control_connection_closes_is_out_of_rotation_at_once(
    nursery, caplog
) -> None:
    """A killed edge's kernel closes its control connection: the balancer takes it out of
    rotation then, not heartbeat_timeout later, and back in with its next heartbeat."""
    caplog.set_level(logging.INFO, "livecdn.balancer")
    b, base, control = await start(nursery, heartbeat_timeout=60.0)

    async def out_reason() -> str | None:
        edges = (await fetch("GET", f"{base}/api/edges")).body
        return json.loads(edges)["edges"][0]["out_reason"]

    conn = await send(control, encode(hb("e1", 1000)))
    with trio.fail_after(3):
        while "e1" not in b.edges:
            await trio.sleep(0.02)
    assert await out_reason() is None
    other = await send(control, b"")  # another connection (a stranger's) closing changes nothing
    other.close()
    await trio.sleep(0.2)
    assert await out_reason() is None
    conn.close()
    with trio.fail_after(1):
        while await out_reason() != "control connection closed":
            await trio.sleep(0.02)
    assert any("its control connection" in r.getMessage() for r in caplog.records)
    again = await send(control, encode(hb("e1", 1000)))
    with trio.fail_after(3):
        while await out_reason() is not None:
            await trio.sleep(0.02)
    again.close()

"""The parts of `workers = N` that need no processes: how the workers' /metrics and API
answers merge into the node's, who may use a private port, and an origin's refusal."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

from prometheus_client.parser import text_string_to_metric_families

from common.config import EdgeConfig, OriginConfig
from common.serve.workerctx import SECRET_HEADER, WorkerContext
from common.serve.workermerge import merge_metrics, merge_streams_api

CTX = WorkerContext(
    index=1, count=3, fds=[], private_fd=-1, private_ports=[40000, 40001, 40002], secret="s3cret"
)
PARENT = "rtmp://origin:1935"


def exposition(viewers_flv: float, bytes_out: float, pulls: float, draining: float) -> str:
    return f"""# HELP livecdn_viewers Connected viewers by protocol.
# TYPE livecdn_viewers gauge
livecdn_viewers{{protocol="flv"}} {viewers_flv}
livecdn_viewers{{protocol="rtmp"}} 1.0
# HELP livecdn_bytes_out_total Media bytes sent to viewers, by protocol.
# TYPE livecdn_bytes_out_total counter
livecdn_bytes_out_total{{protocol="flv"}} {bytes_out}
# HELP livecdn_draining 1 while the node drains.
# TYPE livecdn_draining gauge
livecdn_draining {draining}
# HELP livecdn_worker_sibling_pulls Upstreams fed by a sibling.
# TYPE livecdn_worker_sibling_pulls gauge
livecdn_worker_sibling_pulls {pulls}
"""


def samples(text: bytes) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_sum_by_name_and_labels_less_the_sibling_pulls() -> None:
    texts = {
        0: exposition(viewers_flv=5, bytes_out=100, pulls=0, draining=0),  # feeds worker 1
        1: exposition(viewers_flv=3, bytes_out=50, pulls=1, draining=1),
    }
    got = samples(merge_metrics(texts, {}))
    assert got[("livecdn_viewers", (("protocol", "flv"),))] == 5 + 3 - 1
    assert got[("livecdn_viewers", (("protocol", "rtmp"),))] == 2
    assert got[("livecdn_bytes_out_total", (("protocol", "flv"),))] == 150
    assert got[("livecdn_draining", ())] == 1  # the node's state: the largest
    assert got[("livecdn_workers", (("state", "answered"),))] == 2
    assert got[("livecdn_workers", (("state", "missing"),))] == 0
    assert got[("livecdn_worker_viewers", (("worker", "0"),))] == 6 - 1
    assert got[("livecdn_worker_viewers", (("worker", "1"),))] == 4


def test_a_silent_worker_is_counted_and_named() -> None:
    body = merge_metrics({1: exposition(2, 10, 0, 0)}, {0: "TooSlowError: "})
    assert body.startswith(b"# worker 0 did not answer: TooSlowError")
    got = samples(body)
    assert got[("livecdn_workers", (("state", "missing"),))] == 1
    assert got[("livecdn_viewers", (("protocol", "flv"),))] == 2


def stream(flv: int, parent: str) -> dict:
    return {
        "app": "live",
        "name": "a",
        "viewers": {"flv": flv, "rtmp": 0, "hls": 0, "total": flv},
        "upstream": {"parent": parent, "state": "live"},
    }


def test_api_viewers_summed_with_the_outside_upstream() -> None:
    docs = {
        0: {"parents": [PARENT], "streams": [stream(4, PARENT)]},  # one viewer is worker 1
        1: {"parents": [CTX.url(0), PARENT], "streams": [stream(2, CTX.url(0))]},
        2: {"parents": [CTX.url(0), PARENT], "streams": []},
    }
    doc, status = merge_streams_api(CTX, docs, {})
    assert status == 200
    assert doc["parents"] == [PARENT]  # worker 0's: the node's real parents
    [info] = doc["streams"]
    assert info["viewers"]["flv"] == 4 + 2 - 1
    assert info["viewers"]["total"] == 5
    assert info["upstream"]["parent"] == PARENT
    assert doc["workers"] == {"count": 3, "answered": [0, 1, 2], "missing": {}}


def test_api_one_stream_merged_or_404_everywhere() -> None:
    docs = {0: stream(1, PARENT), 1: stream(3, CTX.url(0))}
    doc, status = merge_streams_api(CTX, docs, {2: "ConnectionRefusedError"})
    assert status == 200
    assert doc["viewers"]["flv"] == 3
    assert doc["workers"]["missing"] == {"2": "ConnectionRefusedError"}
    absent = {i: {"error": "nothing for live/b on this edge"} for i in range(3)}
    doc, status = merge_streams_api(CTX, absent, {})
    assert status == 404


def test_a_private_port_wants_the_runs_secret() -> None:
    assert CTX.proves({SECRET_HEADER: "s3cret"})
    assert not CTX.proves({SECRET_HEADER: "guess"})
    assert not CTX.proves({"x-other": "s3cret"}) and not CTX.proves({})
    assert CTX.sibling_of("http://127.0.0.1:40000")
    assert not CTX.sibling_of("http://127.0.0.1:40003")


def test_a_context_round_trips_through_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("LIVECDN_WORKER", CTX.to_env())
    assert WorkerContext.from_env() == CTX
    monkeypatch.delenv("LIVECDN_WORKER")
    assert WorkerContext.from_env() is None


def test_a_worker_hands_the_runs_secret_to_no_child_process() -> None:
    code = (
        "import os; from common.serve import workerctx; "
        "assert workerctx.CURRENT.secret == 's3cret'; "
        "assert 'LIVECDN_WORKER' not in os.environ; print('ok')"
    )
    env = {**__import__("os").environ, "LIVECDN_WORKER": CTX.to_env()}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


async def test_strangers_on_a_private_port_are_refused_within_a_log_budget(caplog) -> None:
    from common.net.http import Request, Response
    from common.serve.workermerge import private_route

    async def local(req: Request) -> Response:
        raise AssertionError("a stranger got through")

    route = private_route(CTX, local)
    stranger = Request("GET", "/metrics", "/metrics", {}, {}, b"", "127.0.0.1:5555")
    for _ in range(100):
        assert (await route(stranger)).status == 403
    assert len([r for r in caplog.records if "refused GET" in r.getMessage()]) <= 20


def test_an_origin_takes_workers() -> None:
    # tests/origin/test_workers.py runs one; no node kind refuses workers > 1 now
    assert not OriginConfig.no_workers and not EdgeConfig.no_workers


def test_hls_viewers_on_several_workers_count_once() -> None:
    # HLS viewers in each worker's own numbers: 3 and 2, of whom 2 asked both workers
    texts = {
        i: exposition(viewers_flv=0, bytes_out=0, pulls=0, draining=0).replace(
            'protocol="rtmp"} 1.0\n',
            f'protocol="rtmp"}} 1.0\nlivecdn_viewers{{protocol="hls"}} {n}\n',
        )
        for i, n in ((0, 3), (1, 2))
    }
    node = {"live/a": 3}  # the union of their viewer keys
    got = samples(merge_metrics(texts, {}, node))
    assert got[("livecdn_viewers", (("protocol", "hls"),))] == 3
    assert samples(merge_metrics(texts, {}))[("livecdn_viewers", (("protocol", "hls"),))] == 5
    hls = {"app": "live", "name": "a", "upstream": None}
    docs = {
        0: {"streams": [{**hls, "viewers": {"total": 3, "hls": 3}}]},
        1: {"streams": [{**hls, "viewers": {"total": 2, "hls": 2}}]},
    }
    doc, _ = merge_streams_api(CTX, docs, {}, node)
    assert doc["streams"][0]["viewers"] == {"total": 3, "hls": 3}


def test_a_worker_lists_its_hls_viewers_bounded(monkeypatch) -> None:
    from common.serve import workersviewers
    from common.serve.hlsviewers import HlsViewers

    viewers = HlsViewers(window=6.0)
    for i in range(5):
        viewers.seen(("live", "a"), f"10.0.0.{i}|agent", 1.0)
    viewers.seen(("live", "b"), "10.0.0.9|agent", 1.0)
    doc = workersviewers.viewer_keys(viewers, 2.0)
    assert doc["complete"] is True
    assert len(doc["streams"]["live/a"]) == 5 and len(doc["streams"]["live/b"]) == 1
    monkeypatch.setattr(workersviewers, "MAX_KEYS", 3)
    assert workersviewers.viewer_keys(viewers, 2.0)["complete"] is False
    assert workersviewers.viewer_keys(viewers, 100.0)["streams"] == {}  # all expired


async def test_worker_1_asks_worker_0_then_the_parents_for_a_while(nursery, held_ports) -> None:
    import trio

    from common.serve.workershls import SIBLING_PAUSE, SiblingObjects
    from tests.hookserver import HookServer

    statuses = [200, 502]
    hooks = await nursery.start(HookServer(lambda _: statuses.pop(0)).run)
    ctx = WorkerContext(1, 2, [], -1, [hooks.port, 0], "s3cret")
    sibling = SiblingObjects(ctx, limit=1 << 20)
    got = await sibling.get("/live/a.m3u8?token=x")
    assert got is not None and got.status == 200
    assert await sibling.get("/live/a-1.ts") is None  # worker 0's parent failed: ask them
    assert (sibling.answered, sibling.passed) == (1, 1) and len(hooks.calls) == 2
    gone = held_ports.take()  # a port nobody listens on: worker 0 is gone
    sibling = SiblingObjects(replace(ctx, private_ports=[gone, 0]), limit=1 << 20)
    assert await sibling.get("/live/a.m3u8") is None
    assert sibling.down_until > trio.current_time() + SIBLING_PAUSE - 1
    assert await sibling.get("/live/a.m3u8") is None  # not asked again for a while
    assert sibling.passed == 2


async def test_a_sibling_pull_sends_the_secret_in_a_header_never_in_logged_urls(
    nursery, held_ports
) -> None:
    import pytest
    import trio

    from common.serve.feeds import ParentError
    from common.serve.workerspull import open_sibling_feed

    heads: list[bytes] = []

    async def refuse(stream: trio.SocketStream) -> None:  # a private port saying 403
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(4096)
        heads.append(data)
        await stream.send_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")

    listeners = await nursery.start(trio.serve_tcp, refuse, 0)
    port = listeners[0].socket.getsockname()[1]
    with pytest.raises(ParentError) as refused:
        await open_sibling_feed(f"http://127.0.0.1:{port}", "live", "x", "clock=1", "TOPSECRET")
    target = heads[0].split(b"\r\n")[0]
    assert b"TOPSECRET" not in target and b"x-livecdn-worker: TOPSECRET" in heads[0]
    assert "HTTP 403" in str(refused.value) and "TOPSECRET" not in str(refused.value)
    gone = held_ports.take()  # worker 0 gone: the failure's message names no secret
    with pytest.raises(ParentError) as broken:
        await open_sibling_feed(f"http://127.0.0.1:{gone}", "live", "x", "clock=1", "TOPSECRET")
    assert "TOPSECRET" not in str(broken.value)


def supervisor_with(monkeypatch, worker_0, worker_1):
    """A 2-worker Supervisor whose worker i's n-th start runs `worker_i[n]` instead: an async
    callable (sup) -> Python code to run (or raising OSError: it could not be started)."""
    import json
    import types

    import trio

    from common.serve import workers
    from common.serve.workerctx import ENV

    real = trio.lowlevel.open_process
    calls: list[int] = []
    programs = (list(worker_0), list(worker_1))

    async def fake_open_process(cmd, **kw):
        calls.append(index := json.loads(kw["env"][ENV])["index"])
        code = await programs[index].pop(0)(sup)
        return await real([sys.executable, "-c", code], **kw)

    monkeypatch.setattr(workers.trio.lowlevel, "open_process", fake_open_process)
    monkeypatch.setattr(workers, "FIRST_BACKOFF", 0.01)
    cfg = types.SimpleNamespace(host="127.0.0.1", workers=2, rtmp_port=0, http_port=0, tls_cert="")
    sup = workers.Supervisor("edge", cfg, [])
    return sup, calls


async def exits(sup) -> str:
    return "import sys; sys.exit(1)"


async def sleeps(sup) -> str:
    return "import time; time.sleep(60)"


async def cannot_fork(sup) -> str:
    raise OSError(12, "Cannot allocate memory")


async def test_a_worker_that_cannot_be_restarted_is_retried_and_the_others_keep_running(
    monkeypatch,
) -> None:
    import signal

    import trio

    sup, calls = supervisor_with(monkeypatch, [exits, cannot_fork, cannot_fork, sleeps], [sleeps])
    send, signals = trio.open_memory_channel(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.run, signals, False)
        with trio.fail_after(20):  # hang guard
            while len(calls) < 5 or sup.workers[0].proc.returncode is not None:
                await trio.sleep(0.01)
        assert sup.workers[1].restarts == 0 and sup.workers[1].proc.returncode is None
        await send.send(signal.SIGTERM)  # the node still stops as it should
    assert [w.proc.returncode for w in sup.workers] == [-signal.SIGTERM, -signal.SIGTERM]


async def test_a_worker_started_while_the_node_began_draining_is_told_to_drain(
    monkeypatch,
) -> None:
    import signal

    import trio

    send, signals = trio.open_memory_channel(1)

    async def sigterm_meanwhile(sup) -> str:  # SIGTERM comes while worker 0 restarts
        await send.send(signal.SIGTERM)
        while sup.stop_signal is None:
            await trio.sleep(0.01)
        return "import time; time.sleep(60)"

    sup, calls = supervisor_with(monkeypatch, [exits, sigterm_meanwhile], [sleeps])
    with trio.fail_after(20):  # hang guard: no second signal comes
        await sup.run(signals, False)
    assert sup.workers[0].proc.returncode == -signal.SIGTERM  # drained, not stopped (SIGINT)
    assert sup.workers[1].proc.returncode == -signal.SIGTERM


async def private_ports(nursery, asked: list[str]) -> WorkerContext:
    """Worker 0's context, both workers' private ports served by one test server that
    records what it is asked and answers after 0.2 s."""
    import json

    import trio

    from common.serve.workersviewers import HLS_VIEWERS_PATH

    async def worker_port(stream: trio.SocketStream) -> None:  # every worker's private port
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(4096)
        target = data.split(b" ")[1].decode()
        asked.append(target)
        await trio.sleep(0.2)  # the scrapes below all come while this is being answered
        doc = {"streams": {"live/a": ["k1"]}, "complete": True}
        body = json.dumps(doc).encode() if target == HLS_VIEWERS_PATH else b""
        if target == "/metrics":
            body = exposition(1, 10, 0, 0).encode()
        head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        await stream.send_all(head + body)

    listeners = await nursery.start(trio.serve_tcp, worker_port, 0)
    port = listeners[0].socket.getsockname()[1]
    return WorkerContext(0, 2, [], -1, [port, port], "s3cret")


async def test_concurrent_hls_counts_share_one(nursery) -> None:
    import trio

    from common.serve.workersviewers import HLS_VIEWERS_PATH, node_hls_viewers

    asked: list[str] = []
    ctx = await private_ports(nursery, asked)
    counts: list[dict | None] = []

    async def count() -> None:
        counts.append(await node_hls_viewers(ctx))

    async with trio.open_nursery() as counting:
        for _ in range(10):
            counting.start_soon(count)
    assert counts == [{"live/a": 1}] * 10
    assert asked.count(HLS_VIEWERS_PATH) == 2  # each worker listed its viewers once


async def test_concurrent_scrapes_share_one_merge_and_one_hls_count(nursery) -> None:
    import trio

    from common.net.http import Request, Response
    from common.serve.workermerge import merged_route
    from common.serve.workersviewers import HLS_VIEWERS_PATH

    asked: list[str] = []
    ctx = await private_ports(nursery, asked)

    async def local(req: Request) -> Response:
        return Response(200, exposition(2, 20, 0, 0).encode())

    route = merged_route(ctx, local)
    req = Request("GET", "/metrics", "/metrics", {}, {}, b"", "203.0.113.9:1234")
    bodies: list[bytes] = []

    async def scrape() -> None:
        bodies.append((await route(req)).body)

    async with trio.open_nursery() as scrapes:
        for _ in range(20):
            scrapes.start_soon(scrape)
    assert len(bodies) == 20 and len(set(bodies)) == 1
    assert b'livecdn_viewers{protocol="flv"} 3.0' in bodies[0]
    assert asked.count("/metrics") == 1  # one merge for 20 strangers' scrapes
    assert asked.count(HLS_VIEWERS_PATH) == 2  # each worker listed its HLS viewers once

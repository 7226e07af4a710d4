"""An edge with `--workers 2`, as real processes: one upstream at the origin for viewers on
both workers, /metrics and the API answering for the node as one, a worker killed with
SIGKILL while the other's viewers keep playing, the restarted worker taking viewers, and
SIGTERM draining every worker before the node stops."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import trio

from balancer.server import Balancer
from common.config import BalancerConfig, build
from common.net.httpclient import fetch, open_request
from tests.conftest import start_origin, wait_for_stream
from tests.edge.test_drain_process import NodeLog
from tests.edge.test_edge_real import FlvViewer
from tests.hookserver import HookServer
from tests.media import publish_synthetic, replay_clip
from tests.metrics import metric, scrape

pytestmark = pytest.mark.slow

HANG = 20  # seconds: only a guard against hangs
TRIES = 24  # viewers opened at most until both workers have one


class Playing:
    """A viewer running in its own task, and whether its play has ended."""

    def __init__(self, url: str) -> None:
        self.viewer = FlvViewer(url)
        self.ended = False

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.viewer.run(task_status=task_status)
        finally:
            self.ended = True


async def metrics(http: int) -> dict[str, float]:
    """The node's merged /metrics as {sample with labels: value}, once both workers answered
    (on a loaded machine a sibling may miss the merge's deadline: that scrape says so)."""
    with trio.fail_after(HANG):
        while True:
            got = await fetch("GET", f"http://127.0.0.1:{http}/metrics")
            assert got.status == 200, got
            out = {}
            for line in got.body.decode().splitlines():
                if line and not line.startswith("#"):
                    sample, value = line.rsplit(" ", 1)
                    out[sample] = float(value)
            if out.get('livecdn_workers{state="answered"}') == 2:
                return out
            await trio.sleep(0.1)


async def stream_api(http: int, key: str) -> dict:
    """The node's merged /api/streams/KEY, once both workers answered."""
    with trio.fail_after(HANG):
        while True:
            got = await fetch("GET", f"http://127.0.0.1:{http}/api/streams/{key}")
            info = json.loads(got.body)
            if got.status == 200 and info["workers"]["answered"] == [0, 1]:
                return info
            await trio.sleep(0.1)


def per_worker(m: dict[str, float]) -> tuple[float, float]:
    return tuple(m.get(f'livecdn_worker_viewers{{worker="{i}"}}', 0.0) for i in (0, 1))


async def open_until_both(nursery, url: str, http: int, plays: list[Playing]) -> None:
    """Open viewers one at a time until each worker has at least one."""
    for _ in range(TRIES):
        play = Playing(url)
        await nursery.start(play.run)
        await play.viewer.wait_frames(1)
        plays.append(play)
        if all(per_worker(await metrics(http))):
            return
    raise AssertionError(f"{TRIES} viewers all landed on one worker: {await metrics(http)}")


async def kill_worker(log: NodeLog, kind: str, i: int, plays: list[Playing], stay: int) -> None:
    """SIGKILL worker `i` of a `kind` ("edge", "origin") node: its viewers are cut off, and
    the `stay` viewers on the other workers play on; then wait until it is up again."""
    pid = int(re.findall(rf"{kind} worker {i} \(pid (\d+)\) up", log.text)[-1])
    os.kill(pid, signal.SIGKILL)
    await log.wait_for(f"{kind} worker {i} (pid {pid}) was killed by SIGKILL")
    with trio.fail_after(HANG):
        while sum(1 for p in plays if not p.ended) > stay:
            await trio.sleep(0.05)
    left = [p for p in plays if not p.ended]
    assert len(left) == stay >= 1
    for p in left:
        await p.viewer.wait_frames(len(p.viewer.video) + 25, HANG)
    assert all(not p.ended for p in left)
    with trio.fail_after(HANG):
        while len(re.findall(rf"{kind} worker {i} \(pid \d+\) up", log.text)) < 2:
            await trio.sleep(0.05)


async def balancer_view(http: int, node: str) -> dict | None:
    got = await fetch("GET", f"http://127.0.0.1:{http}/api/edges")
    return next((e for e in json.loads(got.body)["edges"] if e["id"] == node), None)


async def origin_viewers(oaddr, key: str) -> int:
    got = await fetch("GET", f"http://127.0.0.1:{oaddr.http_port}/api/streams")
    for info in json.loads(got.body)["streams"]:
        if f"{info['app']}/{info['name']}" == key:
            return info["viewers"]["total"]
    return 0


async def test_an_edge_with_two_workers_pulls_once_and_survives_a_killed_worker(nursery):
    balancer = Balancer(
        build(BalancerConfig, {"host": "127.0.0.1", "http_port": 0, "control_port": 0})
    )
    bhttp, control = await nursery.start(balancer.run)
    hooks = await nursery.start(HookServer().run)
    _, oaddr = await start_origin(nursery)
    await publish_synthetic(nursery, f"rtmp://127.0.0.1:{oaddr.rtmp_port}/live/w")
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "edge", "--host", "127.0.0.1", "--rtmp", "0", "--http", "0",
         "--parent", f"rtmp://127.0.0.1:{oaddr.rtmp_port}", "--workers", "2",
         "--balancer", f"127.0.0.1:{control}", "--node-id", "w2", "--on-play", hooks.url()],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    log = NodeLog(proc)
    nursery.start_soon(log.run)
    try:
        await log.wait_for("edge worker 0 (pid")
        await log.wait_for("edge worker 1 (pid")
        http = int(re.search(r"2 workers: .*http://127.0.0.1:(\d+)", log.text).group(1))
        private = int(re.search(r"edge parents: http://127.0.0.1:(\d+)", log.text).group(1))
        url = f"http://127.0.0.1:{http}/live/w.flv"

        # a stranger on a worker's private port is refused
        stranger = await fetch("GET", f"http://127.0.0.1:{private}/live/w.flv")
        assert stranger.status == 403, stranger

        plays: list[Playing] = []
        async with trio.open_nursery() as watching:
            await open_until_both(watching, url, http, plays)
            # one upstream at the origin, for viewers on both workers
            assert await origin_viewers(oaddr, "live/w") == 1
            # on_play asked once per viewer: the sibling pull is the node's own business
            played = hooks.of("on_play")
            assert len(played) == len(plays), played
            assert not any("worker" in call.get("query", {}) for call in played), played
            m = await metrics(http)
            assert m['livecdn_viewers{protocol="flv"}'] == len(plays), m
            assert sum(per_worker(m)) == len(plays), m
            assert m['livecdn_workers{state="answered"}'] == 2, m
            info = await stream_api(http, "live/w")
            assert info["viewers"]["flv"] == len(plays), info
            assert info["upstream"]["parent"] == f"rtmp://127.0.0.1:{oaddr.rtmp_port}", info
            on_worker_1 = per_worker(m)[1]
            # worker 0 reports for the node: the balancer sees every viewer, once
            with trio.fail_after(HANG):
                while (edge := await balancer_view(bhttp, "w2")) is None or (
                    edge["viewers"] != len(plays) or edge["streams"] != {"live/w": len(plays)}
                ):
                    await trio.sleep(0.1)

            # SIGKILL the worker that pulls: the other's viewers play on; it comes back
            await kill_worker(log, "edge", 0, plays, on_worker_1)

            # the restarted worker takes viewers again
            for _ in range(TRIES):
                play = Playing(url)
                await watching.start(play.run)
                await play.viewer.wait_frames(1)
                plays.append(play)
                if per_worker(await metrics(http))[0] >= 1:
                    break
            else:
                raise AssertionError(f"no viewer landed on the restarted worker: {log.text}")
            m = await metrics(http)
            live = sum(1 for p in plays if not p.ended)
            assert m['livecdn_viewers{protocol="flv"}'] == live, m
            assert m['livecdn_workers{state="answered"}'] == 2, m
            watching.cancel_scope.cancel()

        proc.send_signal(signal.SIGTERM)  # every worker drains (no viewers left), then stops
        with trio.fail_after(HANG):
            code = await proc.wait()
            await log.closed.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
    assert code == 0, log.text
    assert "every worker has stopped" in log.text and "edge stopped" in log.text
    assert log.text.count("drained: shutting down") == 2, log.text


async def get(url: str, agent: str) -> tuple[int, bytes]:
    """GET `url` on a new connection as the player `agent` (HLS viewers are told apart by
    address and agent)."""
    resp = await open_request("GET", url, user_agent=agent)
    try:
        return resp.status, await resp.body(4 * 1024 * 1024)
    finally:
        resp.close()


PLAYERS = 6
PLAY_SECONDS = 8.0


async def test_hls_cache_with_two_workers_fetches_each_object_once_for_the_node(nursery, clip):
    """hls_mode "cache": worker 1 asks worker 0, which alone fetches from the parent, so the
    origin serves each segment once for the node while players' requests land on both; the
    node counts each player once (merged metrics, API, heartbeats)."""
    balancer = Balancer(
        build(BalancerConfig, {"host": "127.0.0.1", "http_port": 0, "control_port": 0})
    )
    bhttp, control = await nursery.start(balancer.run)
    server, oaddr = await start_origin(nursery, hls_target_duration=1.0)
    nursery.start_soon(replay_clip, f"rtmp://127.0.0.1:{oaddr.rtmp_port}/live/h", clip)
    await wait_for_stream(server, "live", "h")
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "edge", "--host", "127.0.0.1", "--rtmp", "0", "--http", "0",
         "--parent", f"http://127.0.0.1:{oaddr.http_port}", "--workers", "2",
         "--balancer", f"127.0.0.1:{control}", "--node-id", "h2"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    log = NodeLog(proc)
    nursery.start_soon(log.run)
    try:
        await log.wait_for("edge worker 0 (pid")
        await log.wait_for("edge worker 1 (pid")
        http = int(re.search(r"2 workers: .*http://127.0.0.1:(\d+)", log.text).group(1))
        base = f"http://127.0.0.1:{http}/live/"
        with trio.fail_after(HANG):
            while (await get(base + "h.m3u8", "player-0"))[0] != 200:
                await trio.sleep(0.2)
        fetched: set[str] = set()
        got = [0] * PLAYERS

        async def player(i: int) -> None:
            agent = f"player-{i}"
            seen: set[str] = set()
            end = trio.current_time() + PLAY_SECONDS
            while trio.current_time() < end or not counted.is_set():
                status, body = await get(base + "h.m3u8", agent)
                assert status == 200 and body.startswith(b"#EXTM3U"), (status, body[:200])
                for line in body.decode().splitlines():
                    if line.endswith(".ts") and line not in seen:
                        seen.add(line)
                        status, data = await get(base + line, agent)
                        assert status == 200 and data[:1] == b"\x47", (line, status, data[:80])
                        got[i] += 1
                        fetched.add(line)
                await trio.sleep(0.5)

        counted = trio.Event()
        reported: list[tuple[int, dict]] = []

        async def balancer_counts_each_player_once() -> None:
            # once the players asked both workers (they do within a few requests), summed
            # counts would say up to twice as many; the heartbeats (worker 0 counts the
            # viewers seen on both every 2 s) come to one per player while they play on
            await trio.sleep(PLAY_SECONDS / 2)
            while True:
                if (edge := await balancer_view(bhttp, "h2")) is not None:
                    reported.append((edge["viewers"], edge["streams"]))
                    if reported[-1] == (PLAYERS, {"live/h": PLAYERS}):
                        counted.set()
                        return
                await trio.sleep(0.2)

        try:
            with trio.fail_after(HANG + PLAY_SECONDS):
                async with trio.open_nursery() as players:
                    for i in range(PLAYERS):
                        players.start_soon(player, i)
                    players.start_soon(balancer_counts_each_player_once)
        except trio.TooSlowError:
            raise AssertionError(f"the balancer's counts: {reported[-8:]}") from None
        assert min(got) >= 3, got
        m = await metrics(http)
        # the players' requests landed on both workers: each has HLS viewers
        assert all(per_worker(m)), m
        # worker 1 took every object from worker 0, none from the parent itself
        assert m['livecdn_worker_hls_from_sibling_total{outcome="answered"}'] > 0, m
        assert m['livecdn_worker_hls_from_sibling_total{outcome="passed"}'] == 0, m
        # the origin served each segment once for the node (the newest of the last
        # playlists may have been fetched ahead and asked for by no player)
        origin = await scrape(oaddr.http_port)
        segments = metric(origin, "livecdn_hls_requests_total", kind="segment")
        assert len(fetched) <= segments <= len(fetched) + 2, (segments, sorted(fetched))
        # each player is one HLS viewer of the node, whichever workers it asked (the
        # sum of the workers' own counts is more when a player asked both), and worker 1's
        # requests to worker 0 are none
        assert m['livecdn_viewers{protocol="hls"}'] == PLAYERS, m
        info = await stream_api(http, "live/h")
        assert info["viewers"]["hls"] == PLAYERS, info
        assert sum(per_worker(m)) >= PLAYERS, m
    finally:
        if proc.returncode is None:
            proc.kill()

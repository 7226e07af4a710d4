"""An origin with `--workers 2`, as real processes, published by ffmpeg: viewers (HTTP-FLV,
RTMP, HLS) on both workers, a second publish of the live name refused whichever worker it
lands on, the publisher counted once in the merged /metrics and API, the worker that does
not own the stream killed with SIGKILL while the owner's viewers play on, the restarted
worker serving the stream again, and SIGTERM draining the node."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
import trio

from balancer.server import Balancer
from common.config import BalancerConfig, build
from common.net.httpclient import fetch
from common.net.rtmpclient import RtmpClient, RtmpClientError
from common.proto.rtmp import session as rs
from tests.conftest import ffmpeg_publish
from tests.edge.test_drain_process import NodeLog
from tests.edge.test_edge_hls_identical import same_playlist, segment
from tests.edge.test_edge_hls_package import fetch_playlist, packaging_edge
from tests.edge.test_workers import Playing, kill_worker, metrics, per_worker, stream_api
from tests.hls_validator import parse
from tests.media import publish_synthetic

pytestmark = pytest.mark.slow

HANG = 20  # seconds: only a guard against hangs
TRIES = 24  # connections opened at most until both workers have one
IDLE = 0.05  # seconds between them: both workers are back waiting for the next


async def start_node(nursery, *args: str) -> tuple[trio.Process, NodeLog, int, int]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "origin", "--host", "127.0.0.1", "--rtmp", "0", "--http", "0",
         "--workers", "2", "--hls-target-duration", "1", "--pull-linger-seconds", "2", *args],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    log = NodeLog(proc)
    nursery.start_soon(log.run)
    await log.wait_for("origin worker 0 (pid")
    await log.wait_for("origin worker 1 (pid")
    found = re.search(r"2 workers: rtmp://127.0.0.1:(\d+)  http://127.0.0.1:(\d+)", log.text)
    return proc, log, int(found.group(1)), int(found.group(2))


def worker_pid(log: NodeLog, i: int, nth: int = -1) -> int:
    return int(re.findall(rf"origin worker {i} \(pid (\d+)\) up", log.text)[nth])


async def rtmp_frames(url: str, count: int) -> int:
    """Play `url` over RTMP until `count` media messages came; how many came."""
    client = await RtmpClient.connect(url)
    try:
        await client.play()
        got = 0
        with trio.fail_after(HANG):
            while got < count:
                got += sum(isinstance(e, rs.Media) for e in await client.next_events())
        return got
    finally:
        client.close()


async def hls_get(http: int, path: str, agent: str) -> tuple[int, bytes]:
    got = await fetch("GET", f"http://127.0.0.1:{http}{path}", headers=[("user-agent", agent)])
    return got.status, got.body


async def balancer_streams(http: int) -> list[dict]:
    got = await fetch("GET", f"http://127.0.0.1:{http}/api/streams")
    return json.loads(got.body)["streams"]


async def test_an_origin_with_two_workers_serves_one_publish_on_both(nursery, clip):
    balancer = Balancer(
        build(BalancerConfig, {"host": "127.0.0.1", "http_port": 0, "control_port": 0})
    )
    bhttp, control = await nursery.start(balancer.run)
    proc, log, rtmp, http = await start_node(
        nursery, "--balancer", f"127.0.0.1:{control}", "--node-id", "o2"
    )
    try:
        url = f"rtmp://127.0.0.1:{rtmp}/live/o"
        await ffmpeg_publish(nursery, clip, url)
        await log.wait_for("publish live/o from")
        owner = int(re.search(r"worker (\d) livecdn.origin: publish live/o", log.text).group(1))
        other = 1 - owner

        # HLS: whichever worker answers, the same playlist names the same segments, and each
        # segment's bytes are the same from either worker
        with trio.fail_after(HANG):
            while (await hls_get(http, "/live/o.m3u8", "probe"))[0] != 200:
                await trio.sleep(0.2)
        agents: list[str] = []
        segments: dict[str, set[bytes]] = {}
        for i in range(TRIES):  # new connections, until both workers have answered some
            agents.append(agent := f"hls-{i}")
            status, body = await hls_get(http, "/live/o.m3u8", agent)
            assert status == 200, body
            uris = [line for line in body.decode().splitlines() if line.endswith(".ts")]
            assert uris
            status, data = await hls_get(http, "/live/" + uris[0], agent)
            assert status == 200
            segments.setdefault(uris[0], set()).add(data)
            if i >= 3 and all(per_worker(m := await metrics(http))):
                break
        else:
            raise AssertionError(f"the HLS requests all landed on one worker: {m}")
        assert all(len(v) == 1 for v in segments.values()), {k: len(v) for k, v in segments.items()}
        # each distinct agent once (the probe too); the node's HLS count is made at most
        # every 1.5 s (workersviewers.COUNT_FRESH), shared with worker 0's balancer report
        with trio.fail_after(HANG):
            while m['livecdn_viewers{protocol="hls"}'] != len(agents) + 1:
                await trio.sleep(0.2)
                m = await metrics(http)

        # HTTP-FLV viewers on both workers, fed by the one publish
        plays: list[Playing] = []
        async with trio.open_nursery() as watching:
            before = per_worker(m)
            for _ in range(TRIES):
                play = Playing(f"http://127.0.0.1:{http}/live/o.flv")
                await watching.start(play.run)
                await play.viewer.wait_frames(1, HANG)
                plays.append(play)
                now = per_worker(await metrics(http))
                if all(now[i] > before[i] for i in (0, 1)):
                    break
            else:
                raise AssertionError(f"{TRIES} viewers all landed on one worker: {log.text}")
            for p in plays:
                await p.viewer.wait_frames(len(p.viewer.video) + 10, HANG)

            # RTMP viewers get media from either worker
            for _ in range(4):
                assert await rtmp_frames(url, 20) >= 20

            # a second publish of the live name is refused, on whichever worker it lands
            # (new connections until one lands on the worker that does not own it)
            for _ in range(TRIES):
                second = await RtmpClient.connect(url)
                with pytest.raises(RtmpClientError, match="live from another publisher"):
                    await second.publish()
                second.close()
                if "on another worker of this origin" in log.text:
                    break
                await trio.sleep(0.05)  # the node's log line may still be on its way
            await log.wait_for("on another worker of this origin")

            # the publisher and the stream counted once; viewers as the node has them
            m = await metrics(http)
            assert m["livecdn_publishers"] == 1, m
            assert m["livecdn_streams"] == 1, m
            assert m["livecdn_publishes_total"] == 1, m
            assert m['livecdn_viewers{protocol="flv"}'] == len(plays), m
            info = await stream_api(http, "live/o")
            assert info["publisher"] is not None, info
            assert info["viewers"]["flv"] == len(plays), info
            assert "upstream" not in info, info
            listing = json.loads((await fetch("GET", f"http://127.0.0.1:{http}/api/streams")).body)
            assert [s["name"] for s in listing["streams"]] == ["o"], listing
            # worker 0 reports the node to the balancer, whichever worker owns the stream
            with trio.fail_after(HANG):
                while not await balancer_streams(bhttp):
                    await trio.sleep(0.1)
            for _ in range(10):  # every report names it (not only the owner's)
                seen = await balancer_streams(bhttp)
                assert [(s["stream"], s["origin"]) for s in seen] == [("live/o", "o2")], seen
                await trio.sleep(0.3)

            # SIGKILL the worker that does not own the stream: the owner's viewers play on
            flv_on_owner = now[owner] - before[owner]  # the HLS viewers counted before too
            await kill_worker(log, "origin", other, plays, flv_on_owner)

            # the restarted worker serves the stream again (from the owner)
            for _ in range(TRIES):
                play = Playing(f"http://127.0.0.1:{http}/live/o.flv")
                await watching.start(play.run)
                await play.viewer.wait_frames(5, HANG)
                plays.append(play)
                if per_worker(await metrics(http))[other] >= 1:
                    break
            else:
                raise AssertionError(f"no viewer landed on the restarted worker: {log.text}")
            m = await metrics(http)
            assert m["livecdn_publishers"] == 1, m
            assert m['livecdn_viewers{protocol="flv"}'] == sum(1 for p in plays if not p.ended)

            # a kick with a ban, asked of any worker: the owner kicks, every worker bans
            kicked = await fetch("DELETE", f"http://127.0.0.1:{http}/api/streams/live/o?ban=60")
            assert kicked.status == 200, kicked
            assert json.loads(kicked.body) == {"kicked": "live/o", "ban_s": 60}
            for _ in range(6):
                again = await RtmpClient.connect(url)
                with pytest.raises(RtmpClientError, match="banned"):
                    await again.publish()
                again.close()
            watching.cancel_scope.cancel()

        proc.send_signal(signal.SIGTERM)  # every worker drains, then the node stops
        with trio.fail_after(HANG):
            code = await proc.wait()
            await log.closed.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
    assert code == 0, log.text
    assert "every worker has stopped" in log.text and "origin stopped" in log.text
    assert log.text.count("drained: shutting down") == 2, log.text


async def test_a_takeover_or_a_publisher_back_lands_on_either_worker(nursery):
    proc, log, rtmp, http = await start_node(nursery, "--on-republish", "takeover")
    try:
        url = f"rtmp://127.0.0.1:{rtmp}/live/t"
        pubs = []
        async with trio.open_nursery() as publishing:
            for _ in range(TRIES):  # each new publisher takes the name over, on any worker
                await trio.sleep(IDLE)
                pubs.append(await publish_synthetic(publishing, url))
                if "its publisher is taken over on another worker" in log.text:
                    break
            else:
                raise AssertionError(f"every publisher landed on one worker: {log.text}")
            play = Playing(f"http://127.0.0.1:{http}/live/t.flv")
            await publishing.start(play.run)
            await play.viewer.wait_frames(10, HANG)
            m = await metrics(http)
            assert m["livecdn_publishers"] == 1, m
            assert m["livecdn_streams"] == 1, m
            publishing.cancel_scope.cancel()
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(HANG):
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
    assert code == 0, log.text


async def test_edges_pulling_from_either_worker_package_the_same_hls(nursery, clip):
    proc, log, rtmp, http = await start_node(nursery)
    try:
        await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{rtmp}/live/same")
        await log.wait_for("publish live/same from")
        origin = f"http://127.0.0.1:{http}/live"
        await fetch_playlist(f"{origin}/same.m3u8")
        edges = []
        for _ in range(8):  # until an edge's pull lands on the worker that does not own it
            _, eaddr = await packaging_edge(nursery, SimpleNamespace(rtmp_port=rtmp))
            edges.append(f"http://127.0.0.1:{eaddr.http_port}/live")
            await fetch_playlist(f"{edges[-1]}/same.m3u8")
            m = await metrics(http)
            if any(k.startswith("livecdn_worker_sibling_pulls") and v for k, v in m.items()):
                break
        else:
            raise AssertionError(f"every edge's pull landed on the owner: {log.text}")
        text = await same_playlist([f"{u}/same.m3u8" for u in (origin, *edges)])
        for _, _, uri, _ in parse(text).segments[-2:]:
            bodies = {await segment(base, uri) for base in (origin, *edges)}
            assert len(bodies) == 1, f"{uri} differs between the nodes"
        proc.send_signal(signal.SIGINT)  # stops at once: every worker ends its streams
        with trio.fail_after(HANG):
            code = await proc.wait()
            await log.closed.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
    assert code == 0, log.text
    assert "Traceback" not in log.text, log.text


async def test_a_restarted_worker_leaves_the_owners_recording_alone(nursery, clip, tmp_path):
    proc, log, rtmp, http = await start_node(
        nursery, "--record-dir", str(tmp_path), "--record-apps", '["live"]'
    )
    try:
        await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{rtmp}/live/rec")
        await log.wait_for("publish live/rec from")
        owner = int(re.search(r"worker (\d) livecdn.origin: publish live/rec", log.text).group(1))
        other = 1 - owner
        with trio.fail_after(HANG):  # the owner writes its file
            while not list(tmp_path.glob("live/rec/*.part")):
                await trio.sleep(0.1)
        for _ in range(6):  # whichever worker answers, the node's one recording in progress
            got = await fetch("GET", f"http://127.0.0.1:{http}/api/recordings")
            active = json.loads(got.body)["active"]
            assert [(r["app"], r["name"]) for r in active] == [("live", "rec")], active
        pid = worker_pid(log, other)
        os.kill(pid, signal.SIGKILL)
        with trio.fail_after(HANG):
            while len(re.findall(rf"origin worker {other} \(pid \d+\) up", log.text)) < 2:
                await trio.sleep(0.05)
        # the restarted worker did not take the file being written for a left-over one
        await log.wait_for(f"origin worker {other} (pid")
        assert "recording left over" not in log.text, log.text
        assert list(tmp_path.glob("live/rec/*.part"))
        proc.send_signal(signal.SIGTERM)  # the owner finishes its file as it drains
        with trio.fail_after(HANG):
            code = await proc.wait()
            await log.closed.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
    assert code == 0, log.text
    assert "recording left over" not in log.text, log.text
    assert not list(tmp_path.glob("live/rec/*.part"))
    assert list(tmp_path.glob("live/rec/*.flv")), list(tmp_path.rglob("*"))

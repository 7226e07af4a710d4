"""Simulated players against real nodes: their numbers agree with the servers' own.

With ffmpeg publishing the clock is real, so only counts are asserted, no times or stalls
(machine load can cause those); the client-link test, which asserts stalls, runs in-process
on trio's MockClock."""

from __future__ import annotations

import json
import sys

import pytest
import trio

from common.net.httpclient import fetch
from common.net.rtmpclient import RtmpClient
from tests.conftest import ffmpeg_publish, start_edge, start_origin, wait_for_stream
from tests.media import synthetic_publish
from tests.metrics import metric, scrape
from topology.players.crowd import LoadSpec, make_crowd, run_crowd
from topology.players.player import SimPlayer, Target
from topology.players.profiles import ClientProfile
from topology.players.report import summarize

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("protocol", ["flv", "rtmp", "hls"])
async def test_players_agree_with_the_edge(nursery, clip, protocol):
    origin, o = await start_origin(nursery, clock_stamps=True, hls_target_duration=1.0)
    _, e = await start_edge(nursery, [f"http://127.0.0.1:{o.http_port}"])
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{o.rtmp_port}/live/x")
    await wait_for_stream(origin, "live", "x", keyframes=2)
    if protocol == "hls":
        await trio.sleep(3)  # a few segments in the playlist
    if protocol == "rtmp":
        target = Target("rtmp", url=f"rtmp://127.0.0.1:{e.rtmp_port}/live/x")
    else:
        target = Target(protocol, base=f"http://127.0.0.1:{e.http_port}", stream="live/x")
    spec = LoadSpec(players=20, duration=9.0, protocol=protocol, ramp_s=1.0,
                    start_s=2.0 if protocol == "hls" else 0.5)  # fmt: skip
    crowd = make_crowd(target, spec)
    served: dict = {}

    async def count() -> None:
        with trio.fail_after(spec.duration):  # a hang guard: all play long before the end
            while sum(p.result.state == "playing" for p in crowd.players) < 20:
                await trio.sleep(0.1)
        body = (await fetch("GET", f"http://127.0.0.1:{e.http_port}/api/streams")).body
        (stream,) = json.loads(body)["streams"]
        served["viewers"] = stream["viewers"]
        served["playing"] = sum(1 for p in crowd.players if p.result.state == "playing")

    async with trio.open_nursery() as n:
        n.start_soon(count)
        await run_crowd(crowd)
    players = [{**p.result.summary(), "latency_s": p.result.latency_s} for p in crowd.players]
    s = summarize(players, crowd.seconds)
    assert s["played"] == 20 and s["players_with_failures"] == 0, s
    assert all(p["media_s"] > 0 for p in players), "every player got media"
    assert s["viewers_per_edge"] == {
        f"127.0.0.1:{e.http_port if protocol != 'rtmp' else e.rtmp_port}": 20
    }
    assert s["ttff_s"][95] > 0
    if protocol != "hls":
        assert served["viewers"][protocol] == served["playing"] == 20, served
        assert s["latency_samples"] >= 20 * 5, "a clock stamp per keyframe (1 s GOP)"
        assert s["latency_s"][50] > 0, s["latency_s"]
        sent = metric(await scrape(e.http_port), "livecdn_bytes_out_total", protocol=protocol)
        # RTMP players count payload bytes, the edge counts chunk headers too
        assert s["bytes"] == pytest.approx(sent, rel=0.05), (s["bytes"], sent)
    else:
        assert abs(served["viewers"]["hls"] - 20) <= 1, served
        # from EXT-X-PROGRAM-DATE-TIME
        assert s["latency_samples"] >= 20 and s["latency_s"][50] > 0, s["latency_s"]


async def test_a_slow_client_link_stalls_and_a_fast_one_does_not(autojump_clock, nursery):
    _, o = await start_origin(nursery)
    _, e = await start_edge(nursery, [f"rtmp://127.0.0.1:{o.rtmp_port}"])
    pub = await RtmpClient.connect(f"rtmp://127.0.0.1:{o.rtmp_port}/live/s")
    await pub.publish()
    nursery.start_soon(lambda: synthetic_publish(pub, key_size=30000, inter_size=5000))
    await trio.sleep(1.5)  # ~1.2 Mbit/s
    target = Target("flv", base=f"http://127.0.0.1:{e.http_port}", stream="live/s")
    slow = SimPlayer(0, target, ClientProfile("slow", rate_kbps=600))
    fast = SimPlayer(1, target, ClientProfile("fast", rate_kbps=5000, delay_ms=50))
    until = trio.current_time() + 12
    async with trio.open_nursery() as n:
        n.start_soon(slow.run, until)
        n.start_soon(fast.run, until)
    assert slow.result.stalls >= 1 and slow.result.rebuffer > 0.1, slow.result.summary()
    assert fast.result.stalls == 0, fast.result.summary()
    assert slow.result.kbps < 700 < fast.result.kbps


async def test_procs_spread_players_and_merge_results(nursery, clip, tmp_path):
    """`python -m topology load --url ... --procs 2`: workers' players and timelines merge."""
    origin, o = await start_origin(nursery, clock_stamps=True)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{o.rtmp_port}/live/p")
    await wait_for_stream(origin, "live", "p")
    url = f"http://127.0.0.1:{o.http_port}/live/p.flv"
    proc = await trio.run_process(
        [sys.executable, "-m", "topology", "load", "--url", url, "--players", "30", "--procs",
         "2", "--duration", "6", "--ramp", "1", "--out", str(tmp_path)],
        capture_stdout=True, capture_stderr=True,
    )  # fmt: skip
    out = proc.stdout.decode()
    assert "players 30 for" in out and "played 30" in out, out
    data = json.loads((tmp_path / "load.json").read_text())
    assert sorted(p["id"] for p in data["players"]) == list(range(30))
    assert data["summary"]["latency_samples"] > 0
    assert max(row["playing"] for row in data["timeline"]) == 30
    assert b"joined 30/30" in proc.stderr, "the merged progress line counts both workers"

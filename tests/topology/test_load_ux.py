"""A load run a new user can trust: Ctrl-C keeps what ran, a short --duration shortens the
ramp, shares are normalised, and failures carry the server's reason."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter

import pytest
import trio

from common.net.httpclient import fetch
from common.net.rtmpclient import RtmpClient
from tests.conftest import QOS_SECRET, start_edge, start_origin
from tests.media import synthetic_publish
from topology.players.crowd import LoadSpec
from topology.players.player import SimPlayer, Target, body_reason
from topology.players.report import MAX_REASONS, OTHER_REASONS, grouped


def test_a_duration_shorter_than_the_ramp_shortens_the_ramp_and_says_so() -> None:
    spec, notes = LoadSpec(players=10, duration=6, ramp_s=10).fitted()
    assert spec.ramp_s == 3 and len(notes) == 1 and "3 s instead" in notes[0]
    spec.check()
    assert LoadSpec(players=10, duration=60, ramp_s=10).fitted()[1] == []


def test_profile_shares_not_adding_up_to_one_are_normalised_with_a_note() -> None:
    spec, notes = LoadSpec(players=10, duration=60, profiles="4g:3,3g:1").fitted()
    assert spec.profiles == "4g:0.75,3g:0.25"
    assert notes == ["note: the profile shares add up to 4, not 1: normalised to 4g:0.75,3g:0.25"]
    assert LoadSpec(players=10, duration=60, profiles="4g:0.8,3g:0.2").fitted()[1] == []
    with pytest.raises(ValueError, match="unknown client profile"):
        LoadSpec(players=10, duration=60, profiles="5g:1").fitted()
    with pytest.raises(ValueError, match="bad share"):
        LoadSpec(players=10, duration=60, profiles="4g:x,3g:1").fitted()


def test_a_refusal_reason_is_the_bodys_first_line_bounded_and_printable() -> None:
    assert body_reason(b"invalid token\nmore") == "invalid token"
    assert body_reason(b'{"error": "no edge can take it"}') == "no edge can take it"
    assert body_reason(b"a\x1bb") == "a?b"
    assert len(body_reason(b"x" * 10_000)) <= 123
    assert body_reason(b"") == ""


def test_failures_are_grouped_by_a_bounded_number_of_reasons() -> None:
    reasons = Counter({f"HTTP 403 reason {i}": 10 - i for i in range(MAX_REASONS + 2)})
    out = grouped(reasons)
    assert len(out) == MAX_REASONS + 1 and out[OTHER_REASONS] == 2 + 1
    assert sum(out.values()) == sum(reasons.values())


async def test_a_refused_player_reports_the_servers_reason(nursery) -> None:
    _, o = await start_origin(nursery)
    classes = {"basic": {"rate_mbps": 1, "ceil_mbps": 2}}
    _, e = await start_edge(nursery, [f"rtmp://127.0.0.1:{o.rtmp_port}"],
                            qos_secret=QOS_SECRET, classes=classes)  # fmt: skip
    target = Target("flv", base=f"http://127.0.0.1:{e.http_port}", stream="live/x")
    player = SimPlayer(0, target, klass="premium", qos_secret=QOS_SECRET, retry_s=5)
    await player.run(trio.current_time() + 1.0)
    assert [str(f) for f in player.result.failures] == [
        "HTTP 403 invalid or expired viewer class token"
    ]


async def viewers(port: int) -> int:
    got = await fetch("GET", f"http://127.0.0.1:{port}/api/streams/live/c")
    return json.loads(got.body)["viewers"]["total"] if got.status == 200 else 0


@pytest.mark.slow
async def test_ctrl_c_stops_the_players_and_keeps_their_results(nursery, tmp_path) -> None:
    _, o = await start_origin(nursery)
    pub = await RtmpClient.connect(f"rtmp://127.0.0.1:{o.rtmp_port}/live/c")
    await pub.publish()
    nursery.start_soon(synthetic_publish, pub)
    url = f"http://127.0.0.1:{o.http_port}/live/c.flv"
    argv = [sys.executable, "-m", "topology", "load", "--url", url, "--players", "3",
            "--duration", "60", "--ramp", "0.5", "--out", str(tmp_path)]  # fmt: skip
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with trio.fail_after(30):
            while await viewers(o.http_port) < 3:
                await trio.sleep(0.2)
        await trio.sleep(2)  # they play (the GOP cache fills their buffers at once)
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            await proc.wait()
        out = await proc.stdout.receive_some(1 << 20)
        err = await proc.stderr.receive_some(1 << 20)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert b"Traceback" not in err and b"interrupted" in err
    assert out.decode().rstrip().splitlines()[-1].startswith(f"  results: {tmp_path}/load.json")
    doc = json.loads((tmp_path / "load.json").read_text())
    assert doc["interrupted"] and doc["summary"]["interrupted"]
    assert doc["summary"]["played"] == 3 and doc["seconds"] < 60

"""The players' sans-IO parts: playback buffer, profiles, arrivals, summary."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qsl, urlsplit

import pytest

from common.proto import auth, playtoken
from topology.players.buffer import PlaybackBuffer
from topology.players.crowd import arrival_times
from topology.players.failures import Ending, SessionEnd, is_failure
from topology.players.player import PlayerResult, PlayerState, SimPlayer, Target
from topology.players.profiles import assign, parse_mix
from topology.players.report import pct, summarize


def feed(buf: PlaybackBuffer, start: float, end: float, fps: int, at, step: float) -> float:
    """Frames start..end (media s) arriving from wall time `at`, `step` s apart."""
    t = at
    ts = start
    while ts < end:
        buf.on_media(ts, t)
        ts += 1 / fps
        t += step
    return t


def test_starts_once_the_start_threshold_is_buffered() -> None:
    buf = PlaybackBuffer(start_s=0.5, resume_s=1.0)
    buf.on_media(0.0, 10.0)
    assert buf.first_media_at == 10.0 and not buf.playing
    feed(buf, 0.0, 2.0, 25, 10.0, 0.0)  # a GOP burst at once
    assert buf.playing and buf.started_at == 10.0
    assert buf.level(10.0) == pytest.approx(2.0 - 1 / 25, abs=0.01)


def test_real_time_delivery_never_stalls() -> None:
    buf = PlaybackBuffer(start_s=0.5)
    end = feed(buf, 0.0, 30.0, 25, 0.0, 1 / 25)
    assert buf.stalls == [] and buf.rebuffer_ratio(end) == 0.0
    assert buf.received_s == pytest.approx(30.0 - 1 / 25, abs=0.05)


def test_slow_delivery_stalls_and_resumes_at_the_resume_threshold() -> None:
    buf = PlaybackBuffer(start_s=0.5, resume_s=1.0)
    end = feed(buf, 0.0, 20.0, 25, 0.0, 1 / 20)  # media arrives at 0.8x real time
    assert len(buf.stalls) >= 2
    first = buf.stalls[0]
    # started at 0.5 s buffered (0.5 s media took 0.625 s); ran dry 2.5 s later
    assert first.at == pytest.approx(0.625 + 2.5, abs=0.1)
    assert first.seconds == pytest.approx(1.25, abs=0.1)  # 1 s of media arriving at 0.8x
    assert 0.15 < buf.rebuffer_ratio(end) < 0.25


def test_a_stall_still_running_counts_to_now() -> None:
    buf = PlaybackBuffer(start_s=0.5)
    feed(buf, 0.0, 1.0, 25, 0.0, 0.0)
    assert buf.stall_seconds(5.0) == pytest.approx(4.0, abs=0.05)


def test_a_big_timestamp_jump_is_a_discontinuity_not_a_huge_buffer() -> None:
    buf = PlaybackBuffer(start_s=0.5)
    feed(buf, 0.0, 2.0, 25, 0.0, 1 / 25)
    buf.on_media(5000.0, 2.0)
    assert buf.level(2.0) < 2.0


def test_hls_segments_advance_by_their_duration() -> None:
    buf = PlaybackBuffer(start_s=3.0)
    buf.on_media(0.0, 0.0, 2.0)
    assert not buf.playing
    buf.on_media(2.0, 0.5, 2.0)
    assert buf.playing and buf.level(0.5) == pytest.approx(4.0)


def test_profile_mix_is_interleaved_by_share() -> None:
    mix = parse_mix("4g:3,3g:1")
    names = [p.name for p in assign(mix, 8)]
    assert names.count("3g") == 2 and names[:4].count("3g") == 1
    with pytest.raises(ValueError, match="unknown client profile"):
        parse_mix("5g")
    with pytest.raises(ValueError, match="must be > 0"):
        parse_mix("4g:0")


def test_arrivals() -> None:
    assert arrival_times(4, "ramp", 8) == [0, 2, 4, 6]
    assert arrival_times(3, "flash", 8) == [0, 0, 0]
    poisson = arrival_times(2000, "poisson", 10)
    assert poisson == sorted(poisson) and 8 < poisson[-1] < 12


def test_percentiles_and_summary() -> None:
    assert pct([], 50) is None
    assert pct(list(range(1, 101)), 95) == 95
    player = {"ttff_s": 0.1, "join_s": 0.05, "playing_s": 0.2, "rebuffer": 0.1, "stalls": 2,
              "kbps": 1500.0, "bytes": 1000, "failures": ["HTTP 503", "stream ended"],
              "edges": ["a", "b"], "edge": "b", "profile": "lan", "latency_s": [0.5, 0.7]}  # fmt: skip
    s = summarize([player, {**player, "playing_s": None, "failures": [], "edges": ["a"],
                            "edge": "a"}], 10.0)  # fmt: skip
    assert s["played"] == 1 and s["never_played"] == 1
    assert s["failures"] == 1 and s["failure_reasons"] == {"HTTP 503": 1}
    assert s["reconnected"] == 1 and s["viewers_per_edge"] == {"b": 1, "a": 1}
    assert s["latency_s"][50] == 0.5 and s["latency_s"][99] == 0.7 and s["latency_samples"] == 4


def test_plots_are_written_when_matplotlib_is_there(tmp_path) -> None:
    pytest.importorskip("matplotlib", reason="plots are the optional [plot] extra")
    from topology.players.report import plot

    timeline = [{"t": float(t), "waiting": 0, "joining": 0, "playing": 10 - (t == 3),
                 "stalled": 0, "retrying": int(t == 3), "latency_p50_s": 0.5 if t % 2 else None,
                 "edges": {"edge1": 5, "edge2": 5}} for t in range(1, 8)]  # fmt: skip
    path = plot(tmp_path / "run.png", timeline, [])
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_players_state_and_p50s_reach_the_json_as_plain_values() -> None:
    r = PlayerResult(1, "flv", "lan", latency_s=[0.4, 0.1, 0.3, 0.2])
    assert r.state is PlayerState.WAITING
    d = json.loads(json.dumps(r.summary()))
    assert d["state"] == "waiting" and type(r.summary()["state"]) is str
    assert d["latency_p50_s"] == 0.2 and d["latency_samples"] == 4  # nearest rank
    assert d["delivery_p50_s"] is None


def test_session_ends_are_typed_and_reach_the_json_as_their_old_strings() -> None:
    ends = [SessionEnd(Ending.REFUSED, "HTTP 503"), SessionEnd(Ending.ENDED)]
    assert [end.failed for end in ends] == [True, False]
    r = PlayerResult(1, "flv", "lan", failures=ends)
    d = json.loads(json.dumps(r.summary()))
    assert d["failures"] == ["HTTP 503", "stream ended"]
    assert [is_failure(text) for text in d["failures"]] == [True, False]


def test_a_player_asks_for_its_class_with_a_signed_token() -> None:
    via_balancer = Target("flv", base="http://127.0.0.1:1", stream="live/a")
    url = SimPlayer(0, via_balancer, klass="gold", qos_secret="k")._http_url(".flv")
    query = dict(parse_qsl(urlsplit(url).query))
    assert auth.check_class("k", "live/a", query, time.time()) == "gold"
    direct = Target.direct("http://127.0.0.1:1/live/b.m3u8")
    query = SimPlayer(0, direct, klass="gold", qos_secret="k")._token_params()
    assert auth.check_class("k", "live/b", query, time.time()) == "gold"
    unsigned = SimPlayer(0, via_balancer, klass="gold")._http_url(".flv")
    assert unsigned.endswith("/live/a.flv?class=gold"), "no secret: ?class= (the default class)"
    assert "class" not in SimPlayer(0, via_balancer)._http_url(".flv")


def test_a_player_signs_its_play_url_when_the_deployment_requires_it() -> None:
    secret = "p" * 24
    via_balancer = Target("rtmp", base="http://127.0.0.1:1", stream="live/a")
    query = SimPlayer(0, via_balancer, play_secret=secret)._token_params()
    assert playtoken.check(secret, "live/a", query, time.time()) is None and "pcls" not in query
    # a class through the play token (the balancer grants it), or through a class token
    query = SimPlayer(0, via_balancer, klass="gold", play_secret=secret)._token_params()
    assert playtoken.check(secret, "live/a", query, time.time()) is None
    assert query["pcls"] == "gold" and "class" not in query
    both = SimPlayer(0, via_balancer, klass="gold", qos_secret="k", play_secret=secret)
    query = both._token_params()
    assert auth.check_class("k", "live/a", query, time.time()) == "gold" and "pcls" not in query
    assert playtoken.check(secret, "live/a", query, time.time()) is None
    direct = SimPlayer(0, Target.direct("rtmp://127.0.0.1:1/live/b"), play_secret=secret)
    url = direct._with_tokens(direct.target.url)
    assert (
        playtoken.check(secret, "live/b", dict(parse_qsl(urlsplit(url).query)), time.time()) is None
    )

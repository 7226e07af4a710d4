"""Load runs in shares (`load --shard I/N`) and their merge (`load merge`): the shares of a run
are its players, and merged they give the summary one process would have written."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace

import pytest
import trio

from tests.conftest import ffmpeg_publish, start_origin, wait_for_stream
from tests.topologies import origin as origin_table
from tests.topologies import publisher, table, topology
from topology.__main__ import main, parse_args
from topology.loadshard import MergeError, merged_doc, run_identity, shard_doc
from topology.loadworkers import player_dicts, run_workers
from topology.players.crowd import COUNTED, Crowd, LoadSpec, make_crowd
from topology.players.failures import Ending, SessionEnd
from topology.players.player import Target
from topology.players.report import summarize
from topology.players.shard import Shard

TARGET = Target("flv", base="http://127.0.0.1:1", stream="live/x")
SPEC = LoadSpec(players=50, duration=20, ramp_s=10, profiles="4g:0.7,3g:0.2,lan:0.1")


def arrivals(crowd: Crowd) -> list[tuple]:
    return [(p.result.id, at, p.profile.name)
            for p, at in zip(crowd.players, crowd.arrivals, strict=True)]  # fmt: skip


@pytest.mark.parametrize("arrival", ["ramp", "poisson"])
def test_the_shares_of_a_run_are_its_players(arrival):
    spec = replace(SPEC, arrival=arrival)
    whole = make_crowd(TARGET, spec)
    shares = [make_crowd(TARGET, spec, shard=Shard(i, 3)) for i in range(3)]
    assert sorted(row for c in shares for row in arrivals(c)) == arrivals(whole)
    assert [len(c.players) for c in shares] == [17, 17, 16]
    for c in shares:  # each share arrives over the whole ramp, as the run does
        assert max(c.arrivals) - min(c.arrivals) > 0.8 * spec.ramp_s
    # a share split again (--procs N with --shard) is that share
    parts = [make_crowd(TARGET, spec, shard=s) for s in Shard(1, 3).split(2)]
    assert sorted(row for c in parts for row in arrivals(c)) == arrivals(shares[1])


@pytest.mark.parametrize("text", ["2/2", "1", "a/2", "0/0", "1/-3"])
def test_a_bad_shard_is_refused(text, capsys):
    with pytest.raises(SystemExit):
        parse_args(["load", "--url", "http://h/a.flv", "--players", "3", "--shard", text])
    assert "--shard" in capsys.readouterr().err


def played(crowd: Crowd) -> Crowd:
    """What each player experienced, by its id alone (so a share's players match the run's)."""
    for p in crowd.players:
        r, i = p.result, p.result.id
        r.join_s, r.ttff_s, r.playing_s = 0.01 * i, 0.02 * i, 0.03 * i
        r.latency_s = [0.5 + 0.01 * ((i * 7 + k) % 13) for k in range(i % 4)]
        r.bytes, r.kbps, r.stalls, r.rebuffer = 1000 * i, 100.0 + i, i % 3, 0.001 * (i % 5)
        r.edge = f"e{i % 2}"
        r.edges = [r.edge] * (1 + i % 2)
        if i % 5 == 0:
            r.failures = [SessionEnd(Ending.NETWORK, "ConnectionResetError")]
        if i % 11 == 0:
            r.playing_s = None
    return crowd


def timeline(crowd: Crowd) -> list[dict]:
    return [{"t": t, **{k: len(crowd.players) for k in COUNTED}, "latency_p50_s": 0.5,
             "edges": {"e0": 1}} for t in range(5)]  # fmt: skip


def docs(spec: LoadSpec, n: int, label: str = "load", run_id: str = "") -> list[dict]:
    run = run_identity(TARGET, spec, label, run_id)
    out = []
    for i in range(n):
        crowd = played(make_crowd(TARGET, spec, shard=Shard(i, n)))
        out.append(shard_doc(run, Shard(i, n), player_dicts(crowd), timeline(crowd), 20.0 - i))
    return out


def test_merged_shares_give_the_runs_summary():
    whole = player_dicts(played(make_crowd(TARGET, SPEC)))
    merged = merged_doc(docs(SPEC, 4), [f"s{i}.json" for i in range(4)])
    assert merged["summary"] == summarize(whole, 20.0)
    assert merged["players"] == whole
    assert merged["summary"]["failure_reasons"] == {"ConnectionResetError": 10}
    assert merged["timeline"][0]["playing"] == 50 and merged["shards"] == 4


def test_merge_refuses_shares_that_are_not_one_run():
    four = docs(SPEC, 4)
    names = [f"s{i}.json" for i in range(4)]
    with pytest.raises(MergeError, match=r"missing shards 1/4, 3/4 \(have 2 of 4\)"):
        merged_doc([four[0], four[2]], [names[0], names[2]])
    with pytest.raises(MergeError, match="shard 2/4 given twice: s2.json and again.json"):
        merged_doc([*four, four[2]], [*names, "again.json"])
    other = docs(replace(SPEC, players=40), 4)
    with pytest.raises(MergeError, match="shards of different runs: s0.json and x.json "
                                         "differ in players 50 vs 40"):  # fmt: skip
        merged_doc([*four[:3], other[3]], [*names[:3], "x.json"])
    with pytest.raises(MergeError, match="s0.json and r.json differ in run_id '' vs 'b'"):
        merged_doc([*four[:3], docs(SPEC, 4, run_id="b")[3]], [*names[:3], "r.json"])
    with pytest.raises(MergeError, match="s0.json is of run '', not 'b'"):
        merged_doc(four, names, run_id="b")
    with pytest.raises(MergeError, match="different splits: s0.json is 0/4, y.json is 1/3"):
        merged_doc([four[0], docs(SPEC, 3)[1]], ["s0.json", "y.json"])
    with pytest.raises(MergeError, match="z.json is not a load shard"):
        merged_doc([four[0], {"summary": {}}], ["s0.json", "z.json"])
    four[1]["players"].pop()  # a worker that failed: its players are missing
    with pytest.raises(MergeError, match=r"s1.json: .* shard 1/4 \(1 missing"):
        merged_doc(four, names)


def test_load_merge_writes_the_runs_results(tmp_path, capsys):
    files = []
    for doc in docs(SPEC, 2, label="load2", run_id="r1"):
        files.append(tmp_path / f"load2-shard-{doc['shard']['index']}-of-2.json")
        files[-1].write_text(json.dumps(doc))
    assert main(["load", "merge", str(files[1])]) == 2
    assert "error: missing shard 0/2 (have 1 of 2)" in capsys.readouterr().err
    assert main(["load", "merge", "--run-id", "other", *map(str, files)]) == 2
    assert "is of run 'r1', not 'other'" in capsys.readouterr().err
    assert main(["load", "merge", *map(str, files), "--out", str(tmp_path / "m")]) == 0
    assert "2 shards merged:\nplayers 50 for 20.0 s" in capsys.readouterr().out
    merged = json.loads((tmp_path / "m" / "load2.json").read_text())
    assert merged["summary"]["players"] == 50 and merged["run"]["label"] == "load2"


async def test_a_workers_stray_output_is_skipped(tmp_path, monkeypatch, capsys):
    """Something in a worker printing to its stdout (here a sitecustomize) costs one warning
    line naming the worker, not the run: the workers' results still come back."""
    (tmp_path / "sitecustomize.py").write_text("print('hello'); print('[1]')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    spec = LoadSpec(players=2, duration=1, ramp_s=0.1)
    target = Target.direct("http://127.0.0.1:1/live/x.flv")  # refused: failures are results
    results = await run_workers(target, spec, Shard(), 2, None, "load")
    assert sorted(p["id"] for d in results for p in d["players"]) == [0, 1]
    err = capsys.readouterr().err
    assert "load worker 0/2 printed a line that is not its JSON, skipped: 'hello'" in err
    assert "load worker 1/2 printed a line that is not its JSON, skipped: '[1]'" in err


@pytest.mark.slow
async def test_two_shards_merged_are_one_run(nursery, clip, tmp_path):
    """One run (a topology file's [[load]] profile against a running server, --base), and
    the same run in two shares (the first in two worker processes) at the same time against
    a real origin: merged, the same players and summary."""
    origin, o = await start_origin(nursery, clock_stamps=True)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{o.rtmp_port}/live/s")
    await wait_for_stream(origin, "live", "s")
    profile = {"players": 12, "duration": "5s", "ramp": "1s", "profiles": "lan:3,wifi:1"}
    (tmp_path / "t.toml").write_text(topology(origin_table(), publisher(stream="live/s"),
                                              table("[[load]]", profile)))  # fmt: skip
    load = [sys.executable, "-m", "topology", "load"]
    base = f"http://127.0.0.1:{o.http_port}"
    shard = [*load, "--url", f"{base}/live/s.flv", "--players", "12",
             "--duration", "5", "--ramp", "1", "--profiles", "lan:3,wifi:1"]  # fmt: skip
    runs = {
        "whole": [*load, str(tmp_path / "t.toml"), "--base", base, "--out", str(tmp_path / "w")],
        "0": [*shard, "--shard", "0/2", "--procs", "2", "--out", str(tmp_path)],
        "1": [*shard, "--shard", "1/2", "--out", str(tmp_path)],
    }
    done = {}

    async def run(name: str) -> None:
        done[name] = await trio.run_process(runs[name], capture_stdout=True, capture_stderr=True)

    async with trio.open_nursery() as n:
        for name in runs:
            n.start_soon(run, name)
    assert b"joined 6/6" in done["0"].stderr, "the workers' progress lines merge"
    assert b"shard 1/2: players 6 for" in done["1"].stdout
    shards = [tmp_path / f"load-shard-{i}-of-2.json" for i in range(2)]
    assert main(["load", "merge", *map(str, shards)]) == 0
    merged = json.loads((tmp_path / "load.json").read_text())
    whole = json.loads((tmp_path / "w" / "load1.json").read_text())
    ms, ws = merged["summary"], whole["summary"]
    assert ms.keys() == ws.keys()
    assert ms["players"] == ws["players"] == ms["played"] == 12, ms
    assert ms["profiles"] == ws["profiles"] == {"lan": 9, "wifi": 3}
    assert ms["viewers_per_edge"] == ws["viewers_per_edge"]
    assert ms["latency_samples"] > 0
    started = [(p["id"], p["started"], p["profile"]) for p in merged["players"]]
    assert started == [(p["id"], p["started"], p["profile"]) for p in whole["players"]]
    assert max(row["playing"] for row in merged["timeline"]) == 12

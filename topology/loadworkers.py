"""The load run's worker processes: their command line, their JSON lines, merging their results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from functools import partial

import trio

from topology.players.crowd import (
    COUNTED,
    PLAY_SECRET_ENV,
    QOS_SECRET_ENV,
    Crowd,
    LoadSpec,
    make_crowd,
    progress_line,
    run_crowd,
)
from topology.players.player import Target
from topology.players.report import pct


def player_dicts(crowd: Crowd) -> list[dict]:
    """Each player's results as the JSON holds them: its summary plus `latency_s`."""
    return [{**p.result.summary(), "latency_s": p.result.latency_s} for p in crowd.players]


def worker_argv(target: Target, spec: LoadSpec, first_id: int, players: int) -> list[str]:
    """Command line of one worker process running `players` of the crowd."""
    argv = [sys.executable, "-m", "topology", "load", "--worker", "--first-id", str(first_id),
            "--players", str(players), "--duration", str(spec.duration),
            "--protocol", spec.protocol, "--arrival", spec.arrival, "--ramp", str(spec.ramp_s),
            "--profiles", spec.profiles]  # fmt: skip
    if spec.klass:
        argv += ["--class", spec.klass]
    if target.url:
        argv += ["--url", target.url]
    else:
        argv += ["--base", target.base, "--stream", target.stream]
    return argv


async def run_workers(target: Target, spec: LoadSpec, procs: int, show) -> tuple:
    """Split the crowd over `procs` worker processes; merge their players and timelines."""
    sizes = [spec.players // procs + (1 if i < spec.players % procs else 0) for i in range(procs)]
    latest: list[dict | None] = [None] * procs
    timelines: list[list[dict]] = [[] for _ in range(procs)]
    results: list[dict] = [{} for _ in range(procs)]

    # not on the command line
    env = {**os.environ, QOS_SECRET_ENV: spec.qos_secret, PLAY_SECRET_ENV: spec.play_secret}

    async def worker(i: int, first_id: int) -> None:
        argv = worker_argv(target, spec, first_id, sizes[i])
        async with trio.open_nursery() as nursery:
            proc = await nursery.start(
                partial(trio.run_process, argv, stdout=subprocess.PIPE, check=False, env=env)
            )
            buf = b""
            async for data in proc.stdout:
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    msg = json.loads(line)
                    if "sample" in msg:
                        latest[i] = msg["sample"]
                        timelines[i].append(msg["sample"])
                        if show is not None and all(latest):
                            show(_merged_line(latest, spec))
                    elif "result" in msg:
                        results[i] = msg["result"]
        if proc.returncode != 0 or not results[i]:
            print(f"warning: load worker {i} exited with {proc.returncode}; its "
                  f"{sizes[i]} players are missing from the results", file=sys.stderr)  # fmt: skip

    async with trio.open_nursery() as nursery:
        first = 0
        for i in range(procs):
            nursery.start_soon(worker, i, first)
            first += sizes[i]
    players = [p for r in results for p in r.get("players", [])]
    seconds = max((r.get("seconds", 0.0) for r in results), default=0.0)
    return players, _merge_timelines(timelines), seconds


def _merged_line(samples: list, spec: LoadSpec) -> str:
    counts: Counter[str] = Counter()
    for s in samples:
        for k in COUNTED:
            counts[k] += s.get(k, 0)
    return progress_line(samples[0]["t"], spec.duration, counts, spec.players)


def _merge_timelines(timelines: list[list[dict]]) -> list[dict]:
    out = []
    for rows in zip(*timelines, strict=False):
        merged = {"t": rows[0]["t"], "edges": {}}
        for k in COUNTED:
            merged[k] = sum(r.get(k, 0) for r in rows)
        merged["latency_p50_s"] = pct(
            [r["latency_p50_s"] for r in rows if r["latency_p50_s"] is not None], 50
        )
        for r in rows:
            for e, n in r["edges"].items():
                merged["edges"][e] = merged["edges"].get(e, 0) + n
        out.append(merged)
    return out


async def worker_main(target: Target, spec: LoadSpec, first_id: int) -> None:
    """A worker: samples as JSON lines on stdout while running, then all its players."""

    def emit(msg: dict) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    crowd = make_crowd(target, spec, first_id=first_id)
    done = len(crowd.timeline)

    def progress(_line: str) -> None:
        nonlocal done
        for row in crowd.timeline[done:]:
            emit({"sample": row})
        done = len(crowd.timeline)

    await run_crowd(crowd, progress=progress)
    emit({"result": {"players": player_dicts(crowd), "seconds": crowd.seconds}})

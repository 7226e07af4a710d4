"""`python -m topology load`: a crowd of simulated players against a topology or any URL,
spread over processes, with the servers' own counts beside the players' numbers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from functools import partial
from pathlib import Path

import trio

from common.net.httpclient import HttpClientError, fetch
from topology.players.crowd import (
    COUNTED,
    LoadSpec,
    make_crowd,
    progress_line,
    run_crowd,
    stderr_progress,
)
from topology.players.player import Target
from topology.players.report import pct, plot, summarize, table, write_json
from topology.schema import LoadProfileSpec, load_spec, load_stream, parse_duration


def target_for(dep, protocol: str, stream: str) -> Target:
    """Through the deployment's balancer, else its first edge (or origin) directly."""
    if "balancer" in dep.nodes:
        return Target(protocol, base=dep.url("balancer", "http"), stream=stream)
    edges = [e.name for e in dep.topo.edges if e.balanced] or [dep.topo.origins[0].name]
    if protocol == "rtmp":
        return Target("rtmp", url=f"{dep.url(edges[0], 'rtmp')}/{stream}")
    return Target(protocol, base=dep.url(edges[0], "http"), stream=stream)


async def server_counts(dep) -> dict:
    """Viewers each origin and edge reports now, and the edges' upstreams (back-to-source)."""
    out: dict[str, dict] = {}
    for name, node in dep.nodes.items():
        if node.kind not in ("origin", "edge"):
            continue
        try:
            _, _, body = await fetch("GET", f"{dep.url(name, 'http')}/api/streams", timeout=3)
        except (OSError, HttpClientError, trio.TooSlowError):
            out[name] = {"down": True}
            continue
        streams = json.loads(body)["streams"]
        info = {"viewers": sum(s["viewers"]["total"] for s in streams)}
        if node.kind == "edge":
            info["upstreams"] = sum(1 for s in streams if s.get("upstream"))
        out[name] = info
    return out


def _name_edges(dep, players: list[dict], timeline: list[dict]) -> None:
    """host:port -> node name in results, where the deployment knows the address."""
    names = {}
    for name, node in dep.nodes.items():
        names[f"127.0.0.1:{node.http_port}"] = name
        if node.rtmp_port:
            names[f"127.0.0.1:{node.rtmp_port}"] = name
    for p in players:
        p["edge"] = names.get(p["edge"], p["edge"])
        p["edges"] = [names.get(e, e) for e in p["edges"]]
    for row in timeline:
        row["edges"] = {names.get(e, e): n for e, n in row["edges"].items()}


def _player_dicts(crowd) -> list[dict]:
    return [{**p.result.summary(), "latency_s": p.result.latency_s} for p in crowd.players]


async def run_load(
    target: Target,
    spec: LoadSpec,
    *,
    out_dir: Path,
    dep=None,
    procs: int = 1,
    label: str = "load",
    quiet: bool = False,
) -> dict:
    """Run the crowd, print the summary table, write `label`.json (+ .png); the summary."""
    show = None if quiet else stderr_progress()
    servers: dict = {}

    async def count_servers() -> None:
        if dep is not None:
            await trio.sleep(max(spec.duration - 2.0, spec.duration * 0.8))
            servers.update(await server_counts(dep))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(count_servers)
        if procs > 1:
            players, timeline, seconds = await _run_procs(target, spec, procs, show)
        else:
            crowd = await run_crowd(make_crowd(target, spec), progress=show)
            players, timeline, seconds = _player_dicts(crowd), crowd.timeline, crowd.seconds
    if dep is not None:
        _name_edges(dep, players, timeline)
    if show is not None and sys.stderr.isatty():
        print(file=sys.stderr)
    summary = summarize(players, seconds)
    if servers:
        at_end = timeline[-3] if len(timeline) >= 3 else (timeline[-1] if timeline else {})
        summary["servers"] = servers
        summary["players_per_edge_at_count"] = at_end.get("edges", {})
    print(table(summary), flush=True)
    path, png = await trio.to_thread.run_sync(
        save_results, out_dir, label, summary, players, timeline
    )
    print(f"  results: {path}" + (f", plot: {png}" if png else
          " (plots: pip install -e .[plot])"), flush=True)  # fmt: skip
    return summary


def save_results(
    out_dir: Path, label: str, summary: dict, players: list[dict], timeline: list[dict]
) -> tuple[Path, Path | None]:
    """Write `label`.json and draw `label`.png (None without matplotlib) in `out_dir`; blocking
    (file writes, matplotlib): run it in a thread."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{label}.json"
    write_json(path, summary, players, timeline)
    with _PLOTTING:
        return path, plot(out_dir / f"{label}.png", timeline, players)


_PLOTTING = threading.Lock()  # pyplot's figures are global: one load run draws at a time


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


async def _run_procs(target: Target, spec: LoadSpec, procs: int, show) -> tuple:
    """Split the crowd over `procs` worker processes; merge their players and timelines."""
    sizes = [spec.players // procs + (1 if i < spec.players % procs else 0) for i in range(procs)]
    latest: list[dict | None] = [None] * procs
    timelines: list[list[dict]] = [[] for _ in range(procs)]
    results: list[dict] = [{} for _ in range(procs)]

    async def worker(i: int, first_id: int) -> None:
        argv = worker_argv(target, spec, first_id, sizes[i])
        async with trio.open_nursery() as nursery:
            proc = await nursery.start(
                partial(trio.run_process, argv, stdout=subprocess.PIPE, check=False)
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
    emit({"result": {"players": _player_dicts(crowd), "seconds": crowd.seconds}})


async def run_file_load(dep, i: int, load: LoadProfileSpec) -> None:
    """One [[load]] profile of the file: wait for its start, run it, print its summary."""
    await trio.sleep(parse_duration(load.start_at))
    spec = load_spec(load)
    stream = load_stream(dep.topo, load)
    print(f"  load #{i + 1}: {spec.players} {spec.protocol} players on {stream} for "
          f"{spec.duration:g} s ({spec.arrival}, profiles {spec.profiles})", flush=True)  # fmt: skip
    try:
        await run_load(target_for(dep, spec.protocol, stream), spec, out_dir=dep.run_dir,
                       dep=dep, label=f"load{i + 1}", quiet=len(dep.topo.loads) > 1)  # fmt: skip
    except Exception as exc:  # a load run's failure is not the deployment's
        print(f"  load #{i + 1} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

"""`python -m topology load`: a crowd of simulated players against a topology or any URL,
spread over processes, with the servers' own counts beside the players' numbers."""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import trio

from common.proto.streamkey import StreamKey
from topology.deployment import LoadRun, url_host
from topology.loadmetrics import CURRENT, LoadMetrics
from topology.loadshard import combine, run_identity, shard_doc
from topology.loadstop import current_stop, interruptible, stop_when
from topology.loadworkers import player_dicts, run_workers
from topology.players.crowd import (
    PLAY_SECRET_ENV,
    QOS_SECRET_ENV,
    Crowd,
    LoadSpec,
    make_crowd,
    run_crowd,
    stderr_progress,
)
from topology.players.player import SimPlayer, Target
from topology.players.qoe import merge_snapshots
from topology.players.report import pct, plot, table
from topology.players.shard import WHOLE, Shard
from topology.schema import LoadProfileSpec, load_spec, load_stream, parse_duration
from topology.servercounts import server_counts


def target_for(dep, protocol: str, stream: str) -> Target:
    """Through the deployment's balancer, else its first edge (or origin) directly."""
    if "balancer" in dep.nodes:
        return Target(protocol, base=dep.url("balancer", "http"), stream=stream)
    edges = [e.name for e in dep.topo.edges if e.balanced] or [dep.topo.origins[0].name]
    if protocol == "rtmp":
        return Target("rtmp", url=f"{dep.url(edges[0], 'rtmp')}/{stream}")
    return Target(protocol, base=dep.url(edges[0], "http"), stream=stream)


def _name_edges(dep, players: list[dict], timeline: list[dict]) -> None:
    """host:port -> node name in results, where the deployment knows the address."""
    names = {}
    for name, node in dep.nodes.items():
        host = url_host(node.host)
        names[f"{host}:{node.http_port}"] = name
        if node.rtmp_port:
            names[f"{host}:{node.rtmp_port}"] = name
    for p in players:
        p["edge"] = names.get(p["edge"], p["edge"])
        p["edges"] = [names.get(e, e) for e in p["edges"]]
    for row in timeline:
        row["edges"] = {names.get(e, e): n for e, n in row["edges"].items()}


async def run_load(
    target: Target,
    spec: LoadSpec,
    *,
    out_dir: Path,
    dep=None,
    procs: int = 1,
    shard: Shard = WHOLE,
    label: str = "load",
    quiet: bool = False,
    live: LoadRun | None = None,
    metrics: LoadMetrics | None = None,
    run_id: str = "",
    stop: trio.Event | None = None,
) -> dict:
    """Run the crowd (or its share `shard`), print the summary table, write `label`.json
    (+ .png; a share: `label`-shard-I-of-N.json); the summary. With `live` (and one
    process), the players' numbers go into `live`.samples each second. The players' QoE
    goes to `metrics` (default: loadmetrics.CURRENT's), as run `label`; `run_id` goes into
    the results (load merge refuses shares of different ids). Ctrl-C (or `stop` set) ends
    the run early: what ran is summarised and written, marked "interrupted"."""
    if stop is None:
        async with interruptible() as stop:
            return await run_load(target, spec, out_dir=out_dir, dep=dep, procs=procs,
                                  shard=shard, label=label, quiet=quiet, live=live,
                                  metrics=metrics, run_id=run_id, stop=stop)  # fmt: skip
    show = None if quiet else stderr_progress()
    metrics = metrics or CURRENT.get()
    servers: dict = {}
    if dep is not None and dep.topo.balancer is not None:
        # the players sign their class tokens and play URLs with the balancer's secrets
        b = dep.topo.balancer.config
        spec = replace(spec, qos_secret=spec.qos_secret or b["qos_secret"],
                       play_secret=spec.play_secret or b["play_secret"])  # fmt: skip

    async def count_servers() -> None:
        if dep is not None:
            await trio.sleep(max(spec.duration - 2.0, spec.duration * 0.8))
            servers.update(await server_counts(dep))

    interrupted = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(count_servers)
        if procs > 1:
            latest: dict[int, dict] = {}

            def note(i: int, snapshot: dict) -> None:
                nonlocal latest
                latest = {**latest, i: snapshot}  # replaced whole: scrapes read it

            if metrics is not None:
                metrics.add(label, shard, lambda: merge_snapshots(latest.values()))
            docs = await run_workers(target, spec, shard, procs, show, label, note, run_id, stop)
            players, timeline, seconds, _ = combine(docs)
            interrupted = stop.is_set() or any(d.get("interrupted") for d in docs)
        else:
            crowd = make_crowd(target, spec, shard=shard)
            if metrics is not None:
                metrics.add(label, shard, lambda: crowd.qoe.snapshot)
            async with trio.open_nursery() as sampling:
                if live is not None:
                    sampling.start_soon(sample_live, crowd, live)
                sampling.start_soon(stop_when, stop, crowd.stop)
                await run_crowd(crowd, progress=show)
                sampling.cancel_scope.cancel()
            players, timeline, seconds = player_dicts(crowd), crowd.timeline, crowd.seconds
            interrupted = crowd.interrupted
        nursery.cancel_scope.cancel()  # the servers' counts come too late for a short run
    if dep is not None:
        _name_edges(dep, players, timeline)
    if show is not None and sys.stderr.isatty():
        print(file=sys.stderr)
    run = run_identity(target, spec, label, run_id)
    doc = shard_doc(run, shard, players, timeline, seconds, servers, interrupted)
    if not shard.whole:
        print(f"shard {shard}:", end=" ")
    print(table(doc["summary"]), flush=True)
    saved = await trio.to_thread.run_sync(save_results, out_dir, shard.name(label), doc)
    print_saved(*saved)
    return doc["summary"]


def print_saved(path: Path, png: Path | None) -> None:
    """Where the results went."""
    print(f"  results: {path}" + (f", plot: {png}" if png else
          " (plots: pip install -e .[plot])"), flush=True)  # fmt: skip


def base_target(base: str, protocol: str, stream: str) -> Target:
    """Players that ask the balancer (or an edge) at `base` (http://HOST:PORT) for `stream`,
    as in a topology; ValueError naming what is wrong."""
    if not base.startswith("http://") or urlsplit(base).path not in ("", "/"):
        raise ValueError(f"--base {base!r}: expected http://HOST:PORT")
    if not stream:
        raise ValueError("--base needs --stream app/name (or a topology file's publisher)")
    return Target(protocol, base=base.rstrip("/"), stream=str(StreamKey.from_text(stream)))


async def run_profiles_at(
    topo, base: str, *, out_dir: Path, procs: int = 1, shard: Shard = WHOLE, run_id: str = ""
) -> None:
    """The file's [[load]] profiles (or their share `shard`), each at its start_at, through a
    deployment already running at `base` instead of one brought up; secrets from the
    environment (QOS_SECRET_ENV, PLAY_SECRET_ENV)."""

    runs = []
    for i, load in enumerate(topo.loads):
        spec = replace(load_spec(load), qos_secret=os.environ.get(QOS_SECRET_ENV, ""),
                       play_secret=os.environ.get(PLAY_SECRET_ENV, ""))  # fmt: skip
        runs.append((i, load, spec, base_target(base, spec.protocol, load_stream(topo, load))))

    async def one(
        i: int, load: LoadProfileSpec, spec: LoadSpec, target: Target, stop: trio.Event
    ) -> None:
        with trio.move_on_at(trio.current_time() + parse_duration(load.start_at)):
            await stop.wait()
        if stop.is_set():
            return  # interrupted before it started
        await run_load(target, spec, out_dir=out_dir, procs=procs, shard=shard,
                       label=f"load{i + 1}", quiet=len(runs) > 1, run_id=run_id,
                       stop=stop)  # fmt: skip

    async with interruptible() as stop, trio.open_nursery() as nursery:
        for run in runs:
            nursery.start_soon(one, *run, stop)


async def sample_live(crowd: Crowd, run: LoadRun, every: float = 1.0) -> None:
    """Each new row of the crowd's timeline (it samples once a second), as a live sample
    in `run`.samples, until cancelled (none skipped: a busy loop may see two rows at once)."""
    seen = 0
    while True:
        await trio.sleep(every)
        for row in crowd.timeline[seen:]:
            run.samples.append(live_sample(row, crowd.players))
        seen = len(crowd.timeline)


def live_sample(row: dict, players: list[SimPlayer]) -> dict:
    """What the console charts of a running load: seconds since its start, players arrived
    and playing, the median join time and latency (ms; None before any), stalls so far."""
    joins = [p.result.join_s for p in players if p.result.join_s is not None]
    join = pct(joins, 50)
    latency = row["latency_p50_s"]
    return {
        "t": row["t"],
        "players": len(players) - row["waiting"],
        "playing": row["playing"],
        "join_ms_p50": None if join is None else round(join * 1000, 1),
        "stalls": sum(len(p.buffer.stalls) for p in players),
        "latency_ms_p50": None if latency is None else round(latency * 1000, 1),
    }


def save_results(out_dir: Path, name: str, doc: dict) -> tuple[Path, Path | None]:
    """Write `name`.json and draw `name`.png (None without matplotlib) in `out_dir`; blocking
    (file writes, matplotlib): run it in a thread."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    part = out_dir / f".{name}.json.{os.getpid()}.part"  # never matches NAME*.json
    part.write_text(json.dumps(doc, indent=1))
    os.replace(part, path)  # whole or not there: a merge waiting for it never reads half
    with _PLOTTING:
        return path, plot(out_dir / f"{name}.png", doc["timeline"], doc["players"])


_PLOTTING = threading.Lock()  # pyplot's figures are global: one load run draws at a time


async def run_file_load(
    dep, i: int, load: LoadProfileSpec, *, now: bool = False, shard: Shard = WHOLE
) -> None:
    """One [[load]] profile of the file (or its share `shard`): wait for its start (unless
    `now`), run it, print its summary; its state and live samples in dep.loads[i] (when its
    time comes, a profile already running is left alone)."""
    run = dep.loads[i]
    if not now:
        await trio.sleep(parse_duration(load.start_at))
        if run.state == "running":  # started from the console meanwhile
            return
    run.state = "running"
    run.samples.clear()
    try:
        await _run_file_load(dep, i, load, run, shard)
    finally:
        run.state = "done"


async def _run_file_load(dep, i: int, load: LoadProfileSpec, run: LoadRun, shard: Shard) -> None:
    spec = load_spec(load)
    stream = load_stream(dep.topo, load)
    share = "" if shard.whole else f" (shard {shard})"
    print(f"  load #{i + 1}: {spec.players} {spec.protocol} players{share} on {stream} for "
          f"{spec.duration:g} s ({spec.arrival}, profiles {spec.profiles})", flush=True)  # fmt: skip
    try:
        await run_load(target_for(dep, spec.protocol, stream), spec, out_dir=dep.run_dir,
                       dep=dep, shard=shard, label=f"load{i + 1}",
                       quiet=len(dep.topo.loads) > 1, live=run, stop=current_stop())  # fmt: skip
    except Exception as exc:  # a load run's failure is not the deployment's
        print(f"  load #{i + 1} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

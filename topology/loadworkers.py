"""The load run's worker processes: each plays one share of the run (`--shard`), streams its
samples as JSON lines and ends with the same document a share writes; the parent combines
them as `load merge` does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from functools import partial

import trio

from topology.loadshard import shard_doc
from topology.loadstop import interruptible, stop_when
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
from topology.players.shard import Shard


def player_dicts(crowd: Crowd) -> list[dict]:
    """Each player's results as the JSON holds them: its summary plus `latency_s`."""
    return [{**p.result.summary(), "latency_s": p.result.latency_s} for p in crowd.players]


def worker_argv(
    target: Target, spec: LoadSpec, shard: Shard, label: str, run_id: str = ""
) -> list[str]:
    """Command line of one worker process playing share `shard` of the run."""
    argv = [sys.executable, "-m", "topology", "load", "--worker", "--shard", str(shard),
            "--label", label, "--players", str(spec.players), "--duration", str(spec.duration),
            "--protocol", spec.protocol, "--arrival", spec.arrival, "--ramp", str(spec.ramp_s),
            "--profiles", spec.profiles]  # fmt: skip
    if spec.klass:
        argv += ["--class", spec.klass]
    if run_id:
        argv += ["--run-id", run_id]
    if target.url:
        argv += ["--url", target.url]
    else:
        argv += ["--base", target.base, "--stream", target.stream]
    return argv


def worker_shards(shard: Shard, procs: int, players: int) -> list[Shard]:
    """`shard` split over `procs` workers (fewer when it has fewer players)."""
    return shard.split(max(1, min(procs, len(shard.ids(players)))))


async def run_workers(
    target: Target, spec: LoadSpec, shard: Shard, procs: int, show, label: str,
    on_qoe: Callable[[int, dict], None] | None = None, run_id: str = "",
    stop: trio.Event | None = None,
) -> list[dict]:  # fmt: skip
    """Play `shard` of the run in `procs` worker processes, each a share of it; their
    documents (a failed worker's missing, with a warning). Each worker's QoE snapshots
    (topology.players.qoe) go to `on_qoe(worker, snapshot)` as they come. When `stop` is
    set, each worker gets SIGINT: it stops its players and still sends its document."""
    stop = trio.Event() if stop is None else stop
    shards = worker_shards(shard, procs, spec.players)
    latest: list[dict | None] = [None] * len(shards)
    results: list[dict | None] = [None] * len(shards)
    total = len(shard.ids(spec.players))

    # not on the command line
    env = {**os.environ, QOS_SECRET_ENV: spec.qos_secret, PLAY_SECRET_ENV: spec.play_secret}

    async def worker(i: int) -> None:
        argv = worker_argv(target, spec, shards[i], label, run_id)
        async with trio.open_nursery() as nursery:
            proc = await nursery.start(
                partial(trio.run_process, argv, stdout=subprocess.PIPE, check=False, env=env)
            )
            nursery.start_soon(stop_when, stop, partial(_interrupt, proc))
            buf = b""
            async for data in proc.stdout:
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    msg = worker_message(shards[i], line)
                    if msg is None:
                        continue
                    if "qoe" in msg and on_qoe is not None:
                        on_qoe(i, msg["qoe"])
                    if "sample" in msg:
                        latest[i] = msg["sample"]
                        if show is not None and all(latest):
                            show(_merged_line(latest, spec, total))
                    elif "result" in msg:
                        results[i] = msg["result"]
            await proc.wait()
            nursery.cancel_scope.cancel()  # the stop_when task
        if proc.returncode != 0 or results[i] is None:
            print(f"warning: load worker {shards[i]} exited with {proc.returncode}; its "
                  f"{len(shards[i].ids(spec.players))} players are missing from the results",
                  file=sys.stderr)  # fmt: skip

    async with trio.open_nursery() as nursery:
        for i in range(len(shards)):
            nursery.start_soon(worker, i)
    return [r for r in results if r is not None]


def _interrupt(proc: trio.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)


def worker_message(shard: Shard, line: bytes) -> dict | None:
    """A worker's stdout line as its message; None, with one line on stderr naming the
    worker, for a line that is not one (something in the worker printed): it is skipped."""
    try:
        msg = json.loads(line)
    except ValueError:
        msg = None
    if isinstance(msg, dict):
        return msg
    if line.strip():
        text = line[:120].decode(errors="replace")
        print(f"warning: load worker {shard} printed a line that is not its JSON, skipped: "
              f"{text!r}", file=sys.stderr)  # fmt: skip
    return None


def _merged_line(samples: list, spec: LoadSpec, total: int) -> str:
    counts: Counter[str] = Counter()
    for s in samples:
        for k in COUNTED:
            counts[k] += s.get(k, 0)
    return progress_line(samples[0]["t"], spec.duration, counts, total)


async def worker_main(target: Target, spec: LoadSpec, shard: Shard, run: dict) -> None:
    """A worker: samples and QoE snapshots as JSON lines on stdout while running, then
    its last QoE snapshot and its share's document."""

    def emit(msg: dict) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    crowd = make_crowd(target, spec, shard=shard)
    done = len(crowd.timeline)

    def progress(_line: str) -> None:
        nonlocal done
        for row in crowd.timeline[done:]:
            emit({"sample": row})
        done = len(crowd.timeline)
        emit({"qoe": crowd.qoe.snapshot})

    async with interruptible(say=False) as stop, trio.open_nursery() as nursery:
        nursery.start_soon(stop_when, stop, crowd.stop)
        await run_crowd(crowd, progress=progress)
        nursery.cancel_scope.cancel()
    emit({"qoe": crowd.qoe.snapshot})
    emit({"result": shard_doc(run, shard, player_dicts(crowd), crowd.timeline, crowd.seconds,
                              interrupted=crowd.interrupted)})  # fmt: skip

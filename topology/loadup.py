"""`python -m topology load FILE`: a topology brought up for a load run, loaded, brought down."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import trio

from topology import launch, schema
from topology.loadrun import run_file_load, run_load, target_for
from topology.loadstop import interruptible
from topology.players.crowd import LoadSpec
from topology.players.shard import WHOLE, Shard

STOP_WAIT_S = 30.0
"""How long a Ctrl-C'd load waits for its running profiles to write their results."""


async def load_topology(
    topo: schema.Topology,
    spec: LoadSpec | None,
    *,
    stream: str | None = None,
    out: Path | None = None,
    procs: int = 1,
    shard: Shard = WHOLE,
) -> Path:
    """Bring `topo` up (origins stamp their clock for latency), run `spec`'s crowd on `stream`
    (default: the first publisher's), or without a spec the file's [[load]] profiles, then stop;
    with `shard`, only that share of each.

    Returns the directory the results went to. Raises `launch.StartFailed` (perhaps in a
    group) when a node does not start."""
    for o in topo.origins:
        o.config["clock_stamps"] = True
    async with trio.open_nursery() as nursery:
        dep = await nursery.start(lambda task_status: launch.up(
            topo, task_status=task_status, run_file_loads=spec is None and shard.whole))  # fmt: skip
        # opened after the launcher's: Ctrl-C stops the players first, keeping their results
        async with interruptible() as stop:
            if spec is not None:
                stream = stream or (topo.publishers[0].stream if topo.publishers else "")
                await run_load(target_for(dep, spec.protocol, stream), spec,
                               out_dir=out or dep.run_dir, dep=dep, procs=procs, shard=shard,
                               stop=stop)  # fmt: skip
            else:
                for i, load in enumerate(topo.loads if not shard.whole else []):
                    nursery.start_soon(partial(run_file_load, dep, i, load, shard=shard))
                with trio.move_on_after(max(schema.parse_duration(x.start_at)
                                            + schema.parse_duration(x.duration)
                                            for x in topo.loads) + 3):  # fmt: skip
                    await stop.wait()
                with trio.move_on_after(STOP_WAIT_S):  # the stopped runs write their results
                    while any(run.state == "running" for run in dep.loads):
                        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    return out or dep.run_dir

#!/usr/bin/env python3
"""Latency an emulated link adds: an origin and two edges run as processes, edge `far`
behind a link proxy of --delay-ms to the origin, edge `near` directly on it.

Plays HTTP-FLV from both edges at once and prints how much later each video frame arrived
from `far` than from `near`; runs simulated players on both and prints the delivery latency
they measured from the origin's clock stamps; then degrades the link to --degrade-ms (the
fault schedule's "degrade") and prints the frames' added delay again.

    .venv/bin/python bench/link_latency.py [--delay-ms 100] [--degrade-ms 300] [--seconds 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import trio
from edge_delay import arrivals  # bench/ is the script's directory

from topology.deployment import Deployment
from topology.faults import apply_fault
from topology.files import near_and_far
from topology.launch import start
from topology.players.crowd import LoadSpec, make_crowd, run_crowd
from topology.players.player import Target
from topology.players.report import pct, summarize
from topology.schema import FaultSpec


async def added_delay(dep: Deployment, seconds: float) -> list[float]:
    """Per video frame seen on both edges (past the join's GOP burst): far minus near, ms."""
    near: dict[int, float] = {}
    far: dict[int, float] = {}
    async with trio.open_nursery() as nursery:
        for name, out in (("near", near), ("far", far)):
            url = f"{dep.url(name, 'http')}/live/demo.flv"
            nursery.start_soon(arrivals, url, seconds, out)
    common = sorted(set(near) & set(far))[40:]
    return [(far[t] - near[t]) * 1000 for t in common]


def show(label: str, values: list[float]) -> None:
    print(
        f"{label}: added delay ms  p50 {pct(values, 50):6.1f}  p95 {pct(values, 95):6.1f}  "
        f"({len(values)} frames)"
    )


async def delivery_p50(dep: Deployment, players: int, seconds: float) -> dict[str, float]:
    """The players' median glass-to-viewer delivery latency per edge, in seconds."""
    spec = LoadSpec(players=players, duration=seconds, ramp_s=1)
    crowds = {
        name: make_crowd(Target("flv", base=dep.url(name, "http"), stream="live/demo"), spec)
        for name in ("near", "far")
    }
    async with trio.open_nursery() as nursery:
        for crowd in crowds.values():
            nursery.start_soon(run_crowd, crowd)
    out = {}
    for name, crowd in crowds.items():
        rows = [p.result.summary() | {"latency_s": p.result.latency_s} for p in crowd.players]
        out[name] = summarize(rows, crowd.seconds)["delivery_s"][50]
    return out


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="livecdn-link-") as tmp:
        async with trio.open_nursery() as nursery:
            text = near_and_far(args.delay_ms, clock_stamps=True)
            path = Path(tmp) / "topology.toml"
            path.write_text(text)
            dep = await start(nursery, path, Path(tmp) / "run")
            show(f"{args.delay_ms:g} ms link", await added_delay(dep, args.seconds))
            p50 = await delivery_p50(dep, args.players, 2 * args.seconds)
            print(
                f"players' delivery p50: near {p50['near']:.3f} s, far {p50['far']:.3f} s "
                f"(added {(p50['far'] - p50['near']) * 1000:.0f} ms)"
            )
            fault = FaultSpec(
                action="degrade", edge="far", parent="origin", delay_ms=args.degrade_ms
            )
            await apply_fault(dep, fault)
            await trio.sleep(1)
            show(
                f"degraded to {args.degrade_ms:g} ms", (await added_delay(dep, args.seconds))[-30:]
            )
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--delay-ms", type=float, default=100)
    ap.add_argument("--degrade-ms", type=float, default=300)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--players", type=int, default=8)
    trio.run(main, ap.parse_args())

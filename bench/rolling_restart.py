#!/usr/bin/env python3
"""A rolling restart of three edges under a crowd of simulated players.

Brings up a topology as processes (balancer, origin, three edges with --drain-timeout, the
built-in publisher), lets --players HTTP-FLV players join through the balancer, then
restarts the edges one by one (topology/rolling.py: drain, stop, start, back in rotation)
and keeps the crowd playing until every player plays again. Prints, per edge, how long its
drain and its return took and how many players it cut; how many of the cut players came
back, how long that took (from the end of the stream to the next edge's answer), and the
failed sessions (refusals, broken connections) by reason.

    .venv/bin/python bench/rolling_restart.py [--players 300] [--drain-timeout 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import trio

from topology import launch
from topology.files import balancer, edge, origin, publisher, topology
from topology.players.crowd import LoadSpec, make_crowd, run_crowd
from topology.players.player import PlayerState, SimPlayer, Target
from topology.players.report import pct
from topology.rolling import plan_restart, run_restart

EDGES = ("edge1", "edge2", "edge3")
HANG_GUARD = 120.0  # seconds: a step taking longer has hung


class Moves:
    """When each player's sessions ended and when it joined an edge again."""

    def __init__(self) -> None:
        self.cuts: list[tuple[int, float, str]] = []  # player, when, edge it was on
        self.back: list[float] = []  # seconds from a clean end to the next join
        self.failed: Counter[str] = Counter()

    def watch(self, player: SimPlayer) -> None:
        note, joined = player._note_failure, player._joined
        ended_at: list[float] = []

        def note_failure(end) -> None:
            now = trio.current_time()
            if end.failed:
                self.failed[str(end)[:80]] += 1
            else:
                self.cuts.append((player.result.id, now, player.result.edge))
                ended_at.append(now)
            note(end)

        def on_join(edge: str) -> None:
            if ended_at:
                self.back.append(trio.current_time() - ended_at.pop())
                ended_at.clear()
            joined(edge)

        player._note_failure, player._joined = note_failure, on_join


def all_playing(players: list[SimPlayer]) -> bool:
    return all(p.result.state is PlayerState.PLAYING for p in players)


async def wait_until(done, what: str) -> None:
    with trio.fail_after(HANG_GUARD):
        while not done():
            await trio.sleep(0.2)
    print(f"  {what}", flush=True)


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="rolling-"))
    path = work / "topology.toml"
    path.write_text(
        topology(
            balancer(policy="least_load"),
            origin(),
            *(edge(name, drain_timeout=args.drain_timeout) for name in EDGES),
            publisher(kbps=args.kbps),
        )
    )
    async with trio.open_nursery() as nursery:
        dep = await launch.start(nursery, path, work / "run")
        base = dep.url("balancer", "http")
        name_of = {f"127.0.0.1:{dep.nodes[e].http_port}": e for e in EDGES}
        spec = LoadSpec(players=args.players, duration=10 * HANG_GUARD, ramp_s=args.ramp)
        crowd = make_crowd(Target("flv", base=base, stream="live/demo"), spec)
        moves = Moves()
        for p in crowd.players:
            moves.watch(p)
        nursery.start_soon(run_crowd, crowd)
        await wait_until(lambda: all_playing(crowd.players), f"{args.players} players playing")
        before = Counter(name_of[p.result.edge] for p in crowd.players)
        run = plan_restart(dep)
        started = trio.current_time()
        await run_restart(dep, run)
        took = trio.current_time() - started
        with trio.move_on_after(HANG_GUARD):  # those not playing again by then are lost
            while not all_playing(crowd.players):
                await trio.sleep(0.2)
        lost = sum(1 for p in crowd.players if p.result.state is not PlayerState.PLAYING)
        nursery.cancel_scope.cancel()

    cut_by_edge = Counter(name_of.get(e, e) for _, _, e in moves.cuts)
    cut_players = {pid for pid, _, _ in moves.cuts}
    back = moves.back
    print(f"\nrolling restart of {len(EDGES)} edges under {args.players} HTTP-FLV players "
          f"(drain_timeout {args.drain_timeout:g} s): {run.state} in {took:.1f} s")  # fmt: skip
    print(f"{'edge':8} {'players before':>14} {'sessions cut':>12} {'drain s':>8} {'back s':>7}")
    for step in run.steps:
        print(f"{step.edge:8} {before[step.edge]:14d} {cut_by_edge[step.edge]:12d} "
              f"{step.stop_s or 0:8.2f} {step.back_s or 0:7.2f}")  # fmt: skip
    print(f"players cut: {len(cut_players)} ({len(moves.cuts)} sessions ended cleanly), "
          f"reconnected: {len(back)} of {len(moves.cuts)}, lost: {lost}")  # fmt: skip
    if back:
        print(f"time to reconnect (end of stream -> next edge's answer): "
              f"p50 {pct(back, 50):.2f} s, p95 {pct(back, 95):.2f} s, max {max(back):.2f} s")  # fmt: skip
    print(f"failed sessions: {sum(moves.failed.values())}"
          + "".join(f"\n  {n:5d}  {why}" for why, n in moves.failed.most_common()))  # fmt: skip


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--players", type=int, default=300)
    p.add_argument("--drain-timeout", type=float, default=5.0,
                   help="each edge's drain_timeout (s, default 5)")  # fmt: skip
    p.add_argument("--ramp", type=float, default=10.0, help="players' arrival ramp (s)")
    p.add_argument("--kbps", type=int, default=300, help="the stream's video bitrate")
    return p.parse_args(argv)


if __name__ == "__main__":
    trio.run(main, parse_args(sys.argv[1:]))

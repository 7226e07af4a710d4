#!/usr/bin/env python3
"""Added delay per edge tier: origin -> edge1 -> edge2 -> edge3, each its own process.

Starts an origin and a chain of edges (edge1's parent: the origin over RTMP; each next
edge's parent: the one before it, over HTTP-FLV or RTMP), publishes the built-in test
stream, and plays HTTP-FLV from every node at once. For each video frame it compares when
it arrived from each edge with when it arrived from the node before it (and from the
origin), and prints percentiles of the added delay per tier and end to end.

    .venv/bin/python bench/edge_delay.py [--seconds 20] [--tiers 3] [--parent-proto http|rtmp]
    .venv/bin/python bench/edge_delay.py --tree /tmp/old   # the nodes of another checkout
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import trio

from common.net.httpclient import open_request
from common.proto import flv
from common.proto.flv import FlvParser
from topology.players.report import pct
from topology.procs import stop_all, wait_healthy

PY = sys.executable
BASE = 29500


async def arrivals(url: str, seconds: float, out: dict[int, float], keys: list[int]) -> None:
    """Record the wall time each video timestamp arrives, and the keyframes' timestamps."""
    resp = await open_request("GET", url)
    parser = FlvParser()
    with trio.move_on_after(seconds):
        async for data in resp.chunks():
            now = trio.current_time()
            for tag in parser.feed(data):
                if tag.tag_type != flv.TAG_VIDEO:
                    continue
                info = flv.video_info(tag.body)
                if not info.sequence_header and tag.timestamp not in out:
                    out[tag.timestamp] = now
                    if info.keyframe:
                        keys.append(tag.timestamp)
    resp.close()


def commands(tiers: int, parent_proto: str) -> list[tuple[str, int, list[str]]]:
    """(name, HTTP port, command) of the origin and each edge, parents first."""
    ports = [(BASE + 2 * i, BASE + 2 * i + 1) for i in range(tiers + 1)]  # (rtmp, http)
    rtmp, http = ports[0]
    out = [("origin", http, ["-m", "origin", "--rtmp", str(rtmp), "--http", str(http)])]
    for i in range(1, tiers + 1):
        (prtmp, phttp), (rtmp, http) = ports[i - 1], ports[i]
        parent = (
            f"rtmp://127.0.0.1:{prtmp}"
            if i == 1 or parent_proto == "rtmp"
            else f"http://127.0.0.1:{phttp}"
        )
        cmd = ["-m", "edge", "--rtmp", str(rtmp), "--http", str(http), "--parent", parent]
        out.append((f"edge{i}", http, cmd))
    return [(n, p, [PY, *c, "--host", "127.0.0.1", "--log-level", "warning"]) for n, p, c in out]


def line(label: str, values: list[float]) -> str:
    """One row: p50, p95 and max of `values` (ms)."""
    return (
        f"{label:<18} p50 {pct(values, 50):6.1f}  p95 {pct(values, 95):6.1f}  "
        f"max {max(values):6.1f}"
    )


async def main(args: argparse.Namespace) -> None:
    nodes = commands(args.tiers, args.parent_proto)
    cwd = Path(args.tree).resolve() if args.tree else None
    origin_rtmp = BASE
    procs: list[tuple[str, trio.Process]] = []

    async def start(name: str, cmd: list[str]) -> trio.Process:
        proc = await trio.lowlevel.open_process(cmd, cwd=cwd, stderr=subprocess.DEVNULL)
        procs.append((name, proc))
        return proc

    try:
        for name, port, cmd in nodes:
            await wait_healthy(f"http://127.0.0.1:{port}", await start(name, cmd))
        publish = [PY, "-m", "topology", "publish", f"rtmp://127.0.0.1:{origin_rtmp}/live/delay"]
        await start("publisher", publish)
        await trio.sleep(3)
        seen: list[dict[int, float]] = [{} for _ in nodes]
        keys: list[list[int]] = [[] for _ in nodes]
        async with trio.open_nursery() as nursery:
            for (_, port, _), out, kf in zip(nodes, seen, keys, strict=True):
                url = f"http://127.0.0.1:{port}/live/delay.flv"
                nursery.start_soon(arrivals, url, args.seconds, out, kf)
        # a new player gets its GOP in a burst: compare from every node's second keyframe on
        live = max(kf[1] if len(kf) > 1 else float("inf") for kf in keys)
        common = sorted(t for t in set.intersection(*(set(s) for s in seen)) if t >= live)
        if not common:
            raise SystemExit("no frame reached every node")
        how = "origin -RTMP-> edge1" + "".join(
            f" -{args.parent_proto.upper()}-> edge{i}" for i in range(2, args.tiers + 1)
        )
        print(f"frames compared: {len(common)} ({how}); added delay, ms:")
        for i in range(1, len(nodes)):
            values = [(seen[i][t] - seen[i - 1][t]) * 1000 for t in common]
            print(line(f"{nodes[i - 1][0]} -> {nodes[i][0]}", values))
        total = [(seen[-1][t] - seen[0][t]) * 1000 for t in common]
        print(line(f"origin -> {nodes[-1][0]}", total))
    finally:
        with trio.CancelScope(shield=True):
            await stop_all(procs, timeout=10)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--tiers", type=int, default=3, help="edges in the chain (default 3)")
    ap.add_argument(
        "--parent-proto",
        choices=["rtmp", "http"],
        default="http",
        help="how edge2 and later pull from the edge before them (default http)",
    )
    ap.add_argument("--tree", help="run the nodes from this checkout (e.g. a git worktree)")
    trio.run(main, ap.parse_args())

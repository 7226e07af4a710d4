#!/usr/bin/env python3
"""Added delay per edge tier: origin -> edge1 -> edge2, each its own process.

Starts an origin, edge1 (parent: the origin over RTMP) and edge2 (parent: edge1 over
HTTP-FLV), publishes the built-in test stream, and plays HTTP-FLV from all three at once.
For each video frame it compares when it arrived from edge1 and edge2 with when it arrived
from the origin, and prints percentiles of the added delay per tier.

    .venv/bin/python bench/edge_delay.py [--seconds 20] [--parent-proto rtmp|http]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import trio

from common.net.httpclient import open_request
from common.proto import flv
from common.proto.flv import FlvParser
from topology.players.report import pct
from topology.procs import stop_all, wait_healthy

PY = sys.executable
BASE = 29500


async def arrivals(url: str, seconds: float, out: dict[int, float]) -> None:
    """Record the wall time each video timestamp arrives."""
    resp = await open_request("GET", url)
    parser = FlvParser()
    with trio.move_on_after(seconds):
        async for data in resp.chunks():
            now = trio.current_time()
            for tag in parser.feed(data):
                if tag.tag_type == flv.TAG_VIDEO and not flv.video_info(tag.body).sequence_header:
                    out.setdefault(tag.timestamp, now)
    resp.close()


async def main(args: argparse.Namespace) -> None:
    o_rtmp, o_http, e1_rtmp, e1_http, e2_rtmp, e2_http = range(BASE, BASE + 6)
    parent2 = (
        f"http://127.0.0.1:{e1_http}"
        if args.parent_proto == "http"
        else f"rtmp://127.0.0.1:{e1_rtmp}"
    )
    cmds = [
        [PY, "-m", "origin", "--host", "127.0.0.1", "--rtmp", str(o_rtmp), "--http", str(o_http)],
        [PY, "-m", "edge", "--host", "127.0.0.1", "--rtmp", str(e1_rtmp), "--http", str(e1_http),
         "--parent", f"rtmp://127.0.0.1:{o_rtmp}"],
        [PY, "-m", "edge", "--host", "127.0.0.1", "--rtmp", str(e2_rtmp), "--http", str(e2_http),
         "--parent", parent2],
        [PY, "-m", "topology", "publish", f"rtmp://127.0.0.1:{o_rtmp}/live/delay"],
    ]  # fmt: skip
    procs: list[tuple[str, trio.Process]] = []

    async def start(name: str, cmd: list[str]) -> trio.Process:
        procs.append((name, await trio.lowlevel.open_process(cmd, stderr=subprocess.DEVNULL)))
        return procs[-1][1]

    try:
        for name, port, cmd in zip(("origin", "edge1", "edge2"), (o_http, e1_http, e2_http),
                                   cmds[:3], strict=True):  # fmt: skip
            await wait_healthy(f"http://127.0.0.1:{port}", await start(name, cmd))
        await start("publisher", cmds[3])
        await trio.sleep(3)
        seen: list[dict[int, float]] = [{}, {}, {}]
        async with trio.open_nursery() as nursery:
            for port, out in zip((o_http, e1_http, e2_http), seen, strict=True):
                nursery.start_soon(
                    arrivals, f"http://127.0.0.1:{port}/live/delay.flv", args.seconds, out
                )
        origin, edge1, edge2 = seen
        common = sorted(set(origin) & set(edge1) & set(edge2))[30:]  # skip the GOP burst
        tier1 = [(edge1[t] - origin[t]) * 1000 for t in common]
        tier2 = [(edge2[t] - edge1[t]) * 1000 for t in common]
        print(f"frames compared: {len(common)} (parent of edge2: {args.parent_proto})")
        for label, values in (("origin -> edge1", tier1), ("edge1 -> edge2", tier2)):
            print(
                f"{label}: added delay ms  p50 {pct(values, 50):6.1f}  "
                f"p95 {pct(values, 95):6.1f}  max {max(values):6.1f}"
            )
    finally:
        with trio.CancelScope(shield=True):
            await stop_all(procs, timeout=10)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--parent-proto", choices=["rtmp", "http"], default="http")
    trio.run(main, ap.parse_args())

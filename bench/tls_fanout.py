#!/usr/bin/env python3
"""What TLS costs an edge's fan-out: N HTTP-FLV players over plain TCP, then N over HTTPS,
against the same edge process in one run.

Starts an origin and an edge with TLS listeners (a certificate made for the run with the
openssl CLI), publishes a real-time H.264/AAC clip with ffmpeg, and runs N players in worker
processes, first on http:// and then on https:// (verified against the run's CA). Only the
edge is measured: its CPU (% of one core, from /proc) and the bytes/s the players received,
over the steady part of each phase (after every player connected).

    .venv/bin/python bench/tls_fanout.py [-n 1000] [--seconds 20] [--procs 2] [--kbps 1500]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import trio

from common.net.httpclient import fetch, open_request
from common.net.tls import client_context
from topology.ports import PortBook
from topology.procs import stop_all, wait_healthy, wait_live

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test CA maker in tests/
from tests.tlscerts import make_certs  # noqa: E402

PY = sys.executable
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def player(url: str, ca: str, window: tuple[float, float], out: list[int]) -> None:
    """Read `url` until the window ends; add the bytes received inside it to out[0], and 1
    to out[1] if the player stayed connected through it."""
    tls = client_context(ca) if url.startswith("https") else None
    resp = await open_request("GET", url, tls=tls, timeout=30)
    start, end = window
    got = 0
    try:
        if resp.status != 200:
            return
        while (now := trio.current_time()) < end:
            data = await resp.conn.recv()
            if not data:
                return
            if now >= start:
                got += len(data)
        out[1] += 1
    finally:
        out[0] += got
        resp.close()


async def worker(url: str, n: int, ca: str, ramp: float, seconds: float) -> None:
    """One player process: `n` players started over `ramp` s, measured for `seconds`."""
    t0 = trio.current_time()
    window = (t0 + ramp + 2, t0 + ramp + 2 + seconds)
    out = [0, 0]
    with trio.move_on_after(ramp + seconds + 20):
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(player, url, ca, window, out)
                await trio.sleep(ramp / n)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    print(json.dumps({"bytes": out[0], "kept": out[1], "cpu_s": cpu}))


def counter(metrics: str, name: str) -> float:
    """The value of an unlabelled counter in a /metrics text."""
    line = next(x for x in metrics.splitlines() if x.startswith(f"livecdn_{name} "))
    return float(line.split()[1])


async def edge_drops(edge_http: str) -> tuple[float, float]:
    """The edge's dropped frames and slow-viewer disconnects so far."""
    text = (await fetch("GET", f"{edge_http}/metrics")).body.decode()
    return counter(text, "frames_dropped_total"), counter(text, "slow_viewer_disconnects_total")


async def phase(label: str, url: str, edge: trio.Process, args: argparse.Namespace, ca: str):
    """Run N players on `url`; print the edge's CPU, the received rate, and the frames the
    edge dropped and the viewers it cut off as too slow during the phase."""
    edge_http = args.edge_http
    drops_before = await edge_drops(edge_http)
    per = [args.n // args.procs + (i < args.n % args.procs) for i in range(args.procs)]
    results: list[dict] = []

    async def run(count: int) -> None:
        cmd = [PY, __file__, "--worker", url, str(count), ca, str(args.ramp), str(args.seconds)]
        done = await trio.run_process(cmd, capture_stdout=True, check=True)
        results.append(json.loads(done.stdout))

    async def measure() -> None:
        await trio.sleep(args.ramp + 2)
        before = cpu_seconds(edge.pid)
        await trio.sleep(args.seconds)
        cpu.append((cpu_seconds(edge.pid) - before) / args.seconds * 100)

    cpu: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(measure)
        for count in per:
            nursery.start_soon(run, count)
    dropped, cut = (a - b for a, b in zip(await edge_drops(edge_http), drops_before, strict=True))
    rate = sum(r["bytes"] for r in results) / args.seconds
    kept = sum(r["kept"] for r in results)
    print("player processes CPU s:", [round(r["cpu_s"], 1) for r in results])
    print(
        f"{label:<14} N {args.n:5d}  kept {kept:5d}  edge CPU {cpu[0]:5.1f} %  "
        f"received {rate * 8 / 1e6:7.1f} Mbit/s  CPU % per Gbit/s {cpu[0] / (rate * 8 / 1e9):6.1f}"
        f"  edge dropped {dropped:g} frames, cut off {cut:g} slow viewers"
    )


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tls_fanout_"))
    certs = make_certs(tmp)
    clip = tmp / "clip.flv"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "20",
         "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-b:v", f"{args.kbps}k",
         "-maxrate", f"{args.kbps}k", "-bufsize", f"{args.kbps}k", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "64k", "-f", "flv", str(clip)],
        check=True,
    )  # fmt: skip
    book = PortBook()  # held until the bench ends: nothing else is given them meanwhile
    o_rtmp, o_http, e_rtmp, e_http, e_rtmps, e_https = (book.take() for _ in range(6))
    args.edge_http = f"http://127.0.0.1:{e_http}"
    cmds = {
        "origin": [PY, "-m", "origin", "--host", "127.0.0.1", "--rtmp", str(o_rtmp),
                   "--http", str(o_http)],
        "edge": [PY, "-m", "edge", "--host", "127.0.0.1", "--rtmp", str(e_rtmp),
                 "--http", str(e_http), "--rtmps", str(e_rtmps), "--https", str(e_https),
                 "--tls-cert", certs.cert, "--tls-key", certs.key,
                 "--parent", f"http://127.0.0.1:{o_http}", "--log-level", "warning"],
    }  # fmt: skip
    publish = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
               "-i", str(clip), "-c", "copy", "-f", "flv",
               f"rtmp://127.0.0.1:{o_rtmp}/live/bench"]  # fmt: skip
    procs: list[tuple[str, trio.Process]] = []
    try:
        for name, port in (("origin", o_http), ("edge", e_http)):
            with open(tmp / f"{name}.log", "wb") as log:
                proc = await trio.lowlevel.open_process(cmds[name], stderr=log)
            procs.append((name, proc))
            await wait_healthy(f"http://127.0.0.1:{port}", proc)
        publisher = await trio.lowlevel.open_process(publish, stderr=subprocess.DEVNULL)
        procs.append(("publisher", publisher))
        if not await wait_live(f"http://127.0.0.1:{o_http}/api/streams/live/bench", 20):
            raise RuntimeError("the stream did not go live")
        edge = procs[1][1]
        print(
            f"{args.kbps} kbit/s H.264 + 64 kbit/s AAC; {args.seconds:g} s measured per phase; "
            f"logs in {tmp}"
        )
        await phase("HTTP-FLV", f"http://127.0.0.1:{e_http}/live/bench.flv", edge, args, "")
        await phase(
            "HTTPS-FLV", f"https://localhost:{e_https}/live/bench.flv", edge, args, certs.ca
        )
    finally:
        with trio.CancelScope(shield=True):
            await stop_all(procs, timeout=10)
        book.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        url, n, ca, ramp, seconds = sys.argv[2:7]
        trio.run(worker, url, int(n), ca, float(ramp), float(seconds))
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1000, help="players per phase")
    ap.add_argument("--seconds", type=float, default=20, help="measured time per phase")
    ap.add_argument("--ramp", type=float, default=10, help="time to connect the players")
    ap.add_argument("--procs", type=int, default=2, help="player processes")
    ap.add_argument("--kbps", type=int, default=1500, help="video bitrate of the clip")
    trio.run(main, ap.parse_args())

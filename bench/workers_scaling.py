#!/usr/bin/env python3
"""The scaling curve of an edge (or, with --node origin, an origin) with `workers = W`: for
each W and each N, one edge (pulling from an origin beside it) or one origin (published by
ffmpeg, played directly) under N players of ../shared/bench/players.py, one run after the
other on this machine; prints the CPU of each worker, the edge's total, the players' and the
origin's, how the viewers spread over the workers and whether they kept up.

The players run on the same machine and take cores too: on a machine with C cores, use
W < C and give the players --procs so they are not the bottleneck (see the table's players
column: when they fall behind, "stalled" rises and media/wall drops below 1 for every
player alike, and the row measures the machine, not the edge). Run under the shared lock on
a busy machine:

  flock /tmp/h16/bench.lock .venv/bin/python bench/workers_scaling.py --workers 1,2 --ns 1000
  .venv/bin/python bench/workers_scaling.py --workers 1,2,4,8 --ns 2000,4000,8000 --procs 4
  flock /tmp/h18/bench.lock .venv/bin/python bench/workers_scaling.py --node origin --workers 2,1

Needs ffmpeg (the publisher) and ../shared/bench (SHARED_BENCH to put it elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_BENCH", ROOT.parent / "shared" / "bench"))
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
HZ = os.sysconf("SC_CLK_TCK")
ORIGIN_RTMP, ORIGIN_HTTP, EDGE_RTMP, EDGE_HTTP = 29510, 29511, 29520, 29521


def ticks(pid: int) -> int | None:
    """CPU ticks (user + system) of process `pid` so far, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(rest[11]) + int(rest[12])


def children(pid: int) -> list[int]:
    """The direct children of `pid`."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                continue
    return out


def tree(pid: int) -> list[int]:
    """`pid` and every descendant."""
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children(p))
    return out


class Sampler(threading.Thread):
    """Samples the CPU ticks of named groups of processes every `interval` seconds."""

    def __init__(self, groups: dict[str, callable], interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.groups = groups  # name -> () -> pids
        self.interval = interval
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            row = {}
            for name, pids in self.groups.items():
                row[name] = sum(t for p in pids() if (t := ticks(p)) is not None)
            self.samples.append((time.monotonic(), row))
            self.stopped.wait(self.interval)

    def cpu(self, name: str, t_a: float, t_b: float) -> float | None:
        """% of one core used by group `name` between t_a and t_b."""
        pts = [(t, r[name]) for t, r in self.samples if t_a <= t <= t_b and name in r]
        if len(pts) < 2:
            return None
        (ta, a), (tb, b) = pts[0], pts[-1]
        return (b - a) / HZ / (tb - ta) * 100.0


def get(url: str, timeout: float = 3.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def wait_until(what: str, ok: callable, seconds: float = 30.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if ok():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"gave up waiting for {what}")


def worker_viewers(metrics: str) -> dict[str, float]:
    return dict(re.findall(r'livecdn_worker_viewers\{worker="(\d+)"\} ([0-9.e+]+)', metrics))


def start_publisher(rtmp: int) -> subprocess.Popen:
    """ffmpeg publishing live/test to the node at `rtmp` (../shared/bench/publish.sh)."""
    return subprocess.Popen(
        ["bash", str(SHARED / "publish.sh"), f"rtmp://127.0.0.1:{rtmp}/live/test"],
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def run_point(o: argparse.Namespace, workers: int, n: int, out_dir: Path) -> dict:
    """One edge (or origin) with `workers`, N players for the duration; the row."""
    if o.node == "origin":
        cmd = [PY, "-m", "origin", "--host", "127.0.0.1", "--rtmp", str(EDGE_RTMP),
               "--http", str(EDGE_HTTP), "--log-level", "warning", "--workers", str(workers),
               *o.edge_args.split()]  # fmt: skip
    else:
        cmd = [PY, "-m", "edge", "--host", "127.0.0.1", "--rtmp", str(EDGE_RTMP),
               "--http", str(EDGE_HTTP), "--parent", f"rtmp://127.0.0.1:{ORIGIN_RTMP}",
               "--log-level", "warning", "--workers", str(workers), *o.edge_args.split()]  # fmt: skip
    edge = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    publisher = None
    try:
        wait_until("the node", lambda: get(f"http://127.0.0.1:{EDGE_HTTP}/healthz"))
        if workers > 1:
            wait_until(f"{workers} workers", lambda: len(children(edge.pid)) >= workers)
        if o.node == "origin":
            publisher = start_publisher(EDGE_RTMP)
            wait_until(
                "the stream",
                lambda: b'"test"' in get(f"http://127.0.0.1:{EDGE_HTTP}/api/streams"),
                60,
            )
        workers_pids = children(edge.pid) if workers > 1 else [edge.pid]
        groups = {f"w{i}": (lambda p=p: [p]) for i, p in enumerate(sorted(workers_pids))}
        groups["supervisor"] = (lambda: [edge.pid]) if workers > 1 else (lambda: [])
        groups["origin"] = (lambda: tree(o.origin_pid)) if o.origin_pid else (lambda: [])
        players_pid: list[int] = []
        groups["players"] = lambda: tree(players_pid[0]) if players_pid else []
        sampler = Sampler(groups)
        sampler.start()
        ramp = max(2.0, round(n / o.ramp_rate, 1))
        url = (
            f"rtmp://127.0.0.1:{EDGE_RTMP}/live/test"
            if o.proto == "rtmp"
            else f"http://127.0.0.1:{EDGE_HTTP}/live/test.flv"
        )
        result = out_dir / f"players-w{workers}-n{n}.json"
        t0 = time.monotonic()
        players = subprocess.Popen(
            [sys.executable, str(SHARED / "players.py"), url, "-n", str(n), "-d",
             str(o.duration), "--ramp", str(ramp), "--procs", str(o.procs), "--quiet",
             "--json", str(result)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        players_pid.append(players.pid)
        time.sleep(ramp + o.duration / 2)  # all playing: how they spread
        try:
            spread = worker_viewers(get(f"http://127.0.0.1:{EDGE_HTTP}/metrics").decode())
        except OSError:
            spread = {}
        players.wait(timeout=ramp + o.duration + 120)
        sampler.stopped.set()
        sampler.join()
        wa, wb = t0 + ramp + 2.0, t0 + ramp + o.duration
        summary = json.loads(result.read_text())
        per_worker = [sampler.cpu(f"w{i}", wa, wb) or 0.0 for i in range(len(workers_pids))]
        sup = sampler.cpu("supervisor", wa, wb) or 0.0
        return {
            "workers": workers,
            "n": n,
            "proto": o.proto,
            "kept_up_frac": summary.get("kept_up_frac"),
            "stalled_frac": summary.get("stalled_frac"),
            "media_ratio_p50": (summary.get("media_ratio") or {}).get("p50"),
            "ok": summary.get("ok"),
            "per_worker_cpu_pct": [round(c, 1) for c in per_worker],
            "supervisor_cpu_pct": round(sup, 1),
            "edge_cpu_pct": round(sum(per_worker) + sup, 1),
            "players_cpu_pct": round(sampler.cpu("players", wa, wb) or 0.0, 1),
            "origin_cpu_pct": round(sampler.cpu("origin", wa, wb) or 0.0, 1),
            "viewers_per_worker": spread,
        }
    finally:
        if publisher is not None:
            os.killpg(publisher.pid, signal.SIGTERM)
        edge.send_signal(signal.SIGINT)
        try:
            edge.wait(timeout=20)
        except subprocess.TimeoutExpired:
            edge.kill()


def table(rows: list[dict]) -> str:
    lines = [
        "| workers | N | proto | kept up | stalled | media/wall p50 | CPU per worker (% of a core) "
        "| node total | per 1000 viewers | viewers per worker | players | origin |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = " / ".join(f"{c:.1f}" for c in r["per_worker_cpu_pct"])
        if r["workers"] > 1:
            per += f" (+ supervisor {r['supervisor_cpu_pct']:.1f})"
        spread = " / ".join(f"{float(v):.0f}" for _, v in sorted(r["viewers_per_worker"].items()))
        kept = r["kept_up_frac"]
        lines.append(
            f"| {r['workers']} | {r['n']} | {r['proto']} | "
            f"{100 * kept:.1f} % | {100 * (r['stalled_frac'] or 0):.1f} % | "
            f"{r['media_ratio_p50']} | {per} | {r['edge_cpu_pct']:.1f} % | "
            f"{1000 * r['edge_cpu_pct'] / r['n']:.1f} % | {spread or '-'} | "
            f"{r['players_cpu_pct']:.1f} % | {r['origin_cpu_pct']:.1f} % |"
            if kept is not None
            else f"| {r['workers']} | {r['n']} | {r['proto']} | - | - | - | {per} | - | - | - | - | - |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (1,2)")
    p.add_argument("--ns", default="1000", help="comma-separated player counts (1000)")
    p.add_argument("--proto", choices=("flv", "rtmp"), default="flv")
    p.add_argument("--duration", type=float, default=float(os.environ.get("DURATION", 15)))
    p.add_argument("--procs", type=int, default=2, help="players.py processes")
    p.add_argument("--ramp-rate", type=float, default=250.0, help="players started per second")
    p.add_argument("--edge-args", default="", help='more edge flags, e.g. "--batch-ms 20"')
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument(
        "--node",
        choices=("edge", "origin"),
        default="edge",
        help="the node with workers: an edge beside an origin, or the origin itself",
    )
    o = p.parse_args()
    out_dir = Path(tempfile.mkdtemp(prefix="workers-scaling-"))
    if o.node == "origin":
        o.origin_pid = None
        rows = [
            run_point(o, w, n, out_dir)
            for n in [int(x) for x in o.ns.split(",")]
            for w in [int(x) for x in o.workers.split(",")]
        ]
        return report(o, rows)
    origin = subprocess.Popen(
        [PY, "-m", "origin", "--host", "127.0.0.1", "--rtmp", str(ORIGIN_RTMP), "--http",
         str(ORIGIN_HTTP), "--log-level", "warning"], stdin=subprocess.DEVNULL,
    )  # fmt: skip
    o.origin_pid = origin.pid
    publisher = None
    rows: list[dict] = []
    try:
        wait_until("the origin", lambda: get(f"http://127.0.0.1:{ORIGIN_HTTP}/healthz"))
        publisher = start_publisher(ORIGIN_RTMP)
        wait_until(
            "the stream",
            lambda: b'"test"' in get(f"http://127.0.0.1:{ORIGIN_HTTP}/api/streams"),
            60,
        )
        for n in [int(x) for x in o.ns.split(",")]:
            for w in [int(x) for x in o.workers.split(",")]:
                print(f"workers={w} N={n} {o.proto} {o.duration:g} s ...", file=sys.stderr)
                rows.append(run_point(o, w, n, out_dir))
    finally:
        if publisher is not None:
            os.killpg(publisher.pid, signal.SIGTERM)
        origin.send_signal(signal.SIGINT)
        origin.wait(timeout=20)
    return report(o, rows)


def report(o: argparse.Namespace, rows: list[dict]) -> int:
    print(
        f"# {o.node} with workers = W: {os.cpu_count()} cores here, players.py --procs {o.procs} "
        f"on the same machine, 1.5 Mbit/s stream, {o.duration:g} s per point, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}"
    )
    print(f"# {' '.join([Path(sys.argv[0]).name and 'bench/workers_scaling.py', *sys.argv[1:]])}")
    print(table(rows))
    if o.json:
        Path(o.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

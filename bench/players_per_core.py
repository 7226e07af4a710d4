#!/usr/bin/env python3
"""Players per core of the simulated players (`python -m topology load`), per protocol.

Starts an origin (clock stamps on) and the built-in publisher (640x360 30 fps, 1.5 Mbit/s),
then, one after another, runs N players in one process for each protocol (HTTP-FLV, RTMP)
and samples that process's CPU from /proc over a steady window after the ramp. Prints per
run: players per core (N / CPU share), players that stalled, the share that kept up (media
received >= 0.95 x wall time since the first frame), and the players' received Mbit/s beside
the origin's bytes_out counter for that run (agreement %).

  --neutral        also runs ../shared/bench/players.py (no buffer model) at the same N
  --before DIR     also runs the players of another checkout (e.g. `git archive REV | tar -x
                   -C DIR`) at the same N, against the same origin: before/after in one run

Run it alone on the machine (it measures CPU):
  flock /tmp/h18/bench.lock .venv/bin/python bench/players_per_core.py -n 2000 --neutral
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
NEUTRAL = ROOT.parent / "shared" / "bench" / "players.py"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def bytes_out(http: int, protocol: str) -> float:
    """The origin's livecdn_bytes_out_total for `protocol`."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5).read().decode()
    m = re.search(rf'^livecdn_bytes_out_total{{protocol="{protocol}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def viewers(http: int) -> float:
    """The origin's connected viewers (livecdn_viewers, all protocols)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5).read().decode()
    return sum(float(v) for v in re.findall(r"^livecdn_viewers{[^}]*} (\S+)$", text, re.M))


def drained(http: int, limit: float = 20.0) -> None:
    """Wait (at most `limit` s) until the last run's viewers have left the origin, then 2 s
    more, so that a run does not pay for the previous one's goodbyes."""
    deadline = time.monotonic() + limit
    while viewers(http) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)


def measure(argv: list[str], cwd: Path, settle: float, window: float) -> tuple[float, str]:
    """Run `argv`; its CPU share over `window` s starting `settle` s in; its stdout."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.DEVNULL)
        time.sleep(settle)
        c0, t0 = cpu_s(proc.pid), time.monotonic()
        time.sleep(window)
        c1, t1 = cpu_s(proc.pid), time.monotonic()
        proc.wait()
        out.seek(0)
        return (c1 - c0) / (t1 - t0), out.read().decode(errors="replace")


def ours(cwd: Path, url: str, n: int, a: argparse.Namespace, out: Path) -> dict:
    """Our players at `url` from the checkout at `cwd`: CPU share and what they saw."""
    seconds = a.ramp + a.settle + a.window + 2
    argv = [PY, "-m", "topology", "load", "--url", url, "--players", str(n), "--duration",
            str(seconds), "--ramp", str(a.ramp), "--out", str(out)]  # fmt: skip
    share, _ = measure(argv, cwd, a.ramp + a.settle, a.window)
    doc = json.loads((out / "load.json").read_text())
    players, run_s = doc["players"], doc["seconds"]
    kept = 0
    for p in players:
        if p["ttff_s"] is not None:
            wall = run_s - p["started"] - p["ttff_s"]
            kept += p["media_s"] >= 0.95 * wall
    return {"cpu": share, "stalled": sum(1 for p in players if p["stalls"]),
            "kept": kept, "bytes": sum(p["bytes"] for p in players), "seconds": run_s}  # fmt: skip


def neutral(url: str, n: int, a: argparse.Namespace) -> dict:
    """../shared/bench/players.py at `url`: CPU share and what its players saw."""
    argv = [sys.executable, str(NEUTRAL), url, "-n", str(n), "-d", str(a.settle + a.window + 2),
            "--ramp", str(a.ramp), "--quiet"]  # fmt: skip
    share, text = measure(argv, ROOT, a.ramp + a.settle, a.window)
    s = json.loads(text.strip().splitlines()[-1])
    return {"cpu": share, "stalled": s["stalled"], "kept": s["kept_up"],
            "bytes": s["bytes_total"], "seconds": s.get("duration_s", 0) + a.ramp}  # fmt: skip


def row(label: str, proto: str, n: int, got: dict, server: float) -> str:
    cpu = got["cpu"]
    per_core = n / cpu if cpu > 0 else float("inf")
    mbps = got["bytes"] * 8 / 1e6 / max(got["seconds"], 1e-3)
    srv = server * 8 / 1e6 / max(got["seconds"], 1e-3)
    agree = 100 * got["bytes"] / server if server else float("nan")
    return (f"{label:10} {proto:5} {n:6} {cpu * 100:7.1f} % {per_core:8.0f} {got['stalled']:7} "
            f"{100 * got['kept'] / n:7.1f} % {mbps:9.1f} {srv:9.1f} {agree:7.1f} %")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--players", type=int, default=2000, help="players per run")
    ap.add_argument("--rtmp-players", type=int, help="players per RTMP run (default -n)")
    ap.add_argument("--protocols", default="flv,rtmp")
    ap.add_argument("--ramp", type=float, default=8.0, help="arrival period, s")
    ap.add_argument("--settle", type=float, default=3.0, help="s after the ramp before sampling")
    ap.add_argument("--window", type=float, default=12.0, help="CPU sampling window, s")
    ap.add_argument("--neutral", action="store_true", help="also ../shared/bench/players.py")
    ap.add_argument("--before", type=Path, help="also the players of this checkout")
    ap.add_argument("--port", type=int, default=29570, help="origin RTMP port (HTTP: +1)")
    a = ap.parse_args()
    rtmp, http = a.port, a.port + 1
    procs = []
    try:
        procs.append(subprocess.Popen([PY, "-m", "origin", "--host", "127.0.0.1", "--rtmp",
                                       str(rtmp), "--http", str(http), "--clock-stamps",
                                       "--log-level", "warning"], cwd=ROOT))  # fmt: skip
        time.sleep(1.5)
        procs.append(subprocess.Popen([PY, "-m", "topology", "publish",
                                       f"rtmp://127.0.0.1:{rtmp}/live/bench"], cwd=ROOT,
                                      stderr=subprocess.DEVNULL))  # fmt: skip
        time.sleep(6)  # a few GOPs
        urls = {"flv": f"http://127.0.0.1:{http}/live/bench.flv",
                "rtmp": f"rtmp://127.0.0.1:{rtmp}/live/bench"}  # fmt: skip
        out = Path(tempfile.mkdtemp(prefix="players-per-core-"))
        print(f"{'players':10} {'proto':5} {'N':>6} {'CPU':>9} {'per core':>8} {'stalled':>7} "
              f"{'kept up':>9} {'rx Mbit/s':>9} {'srv Mbit/s':>9} {'agree':>9}", flush=True)  # fmt: skip
        for proto in a.protocols.split(","):
            n = a.rtmp_players or a.players if proto == "rtmp" else a.players
            runs = [("livecdn", lambda d, p=proto, n=n: ours(ROOT, urls[p], n, a, d))]
            if a.before:
                runs.append(("before", lambda d, p=proto, n=n: ours(a.before.resolve(), urls[p],
                                                                     n, a, d)))  # fmt: skip
            if a.neutral:
                runs.append(("players.py", lambda d, p=proto, n=n: neutral(urls[p], n, a)))
            for label, run in runs:
                drained(http)  # the origin let the last run's players go
                b0 = bytes_out(http, proto)
                got = run(out / f"{label}-{proto}")
                time.sleep(1)
                print(row(label, proto, n, got, bytes_out(http, proto) - b0), flush=True)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A launcher killed with SIGKILL (no chance to stop its nodes) leaves no node running:
each node's standard input is a pipe from the launcher, and it stops when that closes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.topologies import edge, origin, topology

pytestmark = pytest.mark.slow


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_nodes_stop_when_their_launcher_is_killed(tmp_path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(topology(origin(), edge("e1")))
    launcher = subprocess.Popen(
        [sys.executable, "-m", "topology", "up", str(path)],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    nodes: list[int] = []
    try:
        assert launcher.stdout is not None
        deadline = time.monotonic() + 60
        seen = ""
        while "e1" not in seen or "http://" not in seen:  # the URL table is printed when up
            line = launcher.stdout.readline()
            assert line and time.monotonic() < deadline, f"launcher output: {seen}"
            seen += line
        nodes = children(launcher.pid)
        assert len(nodes) >= 2, f"node processes of the launcher: {nodes}"
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(10)
        deadline = time.monotonic() + 15
        while any(alive(p) for p in nodes) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in nodes if alive(p)], "nodes outlived their launcher"
    finally:
        for pid in [launcher.pid, *nodes]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        launcher.wait(10)

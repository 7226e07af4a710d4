"""`python -m topology`: validate, and up --detach / status / down as a user runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.topologies import edge, origin, publisher, topology

PY = sys.executable

SMALL = topology(origin(), edge("edge1"), publisher("live/cli", size="160x90", fps=10, kbps=100))


def run(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "topology", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_validate_names_the_file_and_the_key(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[origin]]\nname = "o"\nrtmp_prot = 1\n')
    proc = run("validate", str(bad), env=os.environ.copy())
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "unknown key 'rtmp_prot'" in proc.stderr
    for example in ("one-edge", "three-edge", "two-tier.toml"):
        assert run("validate", example, env=os.environ.copy()).returncode == 0


@pytest.mark.slow
def test_detach_status_down(tmp_path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    topo = tmp_path / "small.toml"
    topo.write_text(SMALL)
    up = run("up", str(topo), "--detach", env=env)
    assert up.returncode == 0, up.stderr + up.stdout
    assert "runs in the background" in up.stdout and "live/cli" in up.stdout
    assert "Ctrl-C" not in up.stdout  # the launcher is in the background: down stops it
    assert "stop: python -m topology down small" in up.stdout
    state = tmp_path / "livecdn-state"  # the log's URL table holds signed URLs
    assert state.stat().st_mode & 0o777 == 0o700
    assert (state / "small.log").stat().st_mode & 0o777 == 0o600
    status = run("status", "small", env=env)
    assert status.returncode == 0
    assert status.stdout.count("healthy") == 2, status.stdout
    down = run("down", str(topo), env=env)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert run("status", "small", env=env).returncode == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--url", "ftp://x/live/a", "--players", "3"], "give an rtmp:// or http:// URL"),
     (["--url", "http://127.0.0.1:1/a.flv"], "--url needs --players"),
     (["--players", "3"], "give a topology file"),
     (["--url", "http://127.0.0.1:1/a.flv", "--players", "2", "--profiles", "5g"],
      "unknown client profile")],
)  # fmt: skip
def test_load_refuses_bad_arguments_with_a_reason(args, message) -> None:
    proc = run("load", *args, env=dict(os.environ))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


@pytest.mark.slow
def test_demo_runs_an_origin_from_its_config_with_the_publisher(tmp_path, held_ports) -> None:
    """The demo's origin is started from a config file with the ports given; stray
    LIVECDN_ORIGIN_* variables do not move it."""
    rtmp, http = held_ports.take(), held_ports.take()
    env = {**os.environ, "TMPDIR": str(tmp_path), "LIVECDN_ORIGIN_HTTP_PORT": "1"}
    args = ["demo", "--rtmp", str(rtmp), "--http", str(http), "--seconds", "4",
            "--size", "160x90", "--fps", "10", "--kbps", "100"]  # fmt: skip
    proc = run(*args, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ffplay http://127.0.0.1:{http}/live/demo.flv" in proc.stdout
    assert f"publishing a 160x90 10 fps test pattern to rtmp://127.0.0.1:{rtmp}/live/demo" in (
        proc.stderr
    )
    assert "refused" not in proc.stderr and "cannot reach" not in proc.stderr, proc.stderr
    # the origin has its own publish_secret: the built-in publisher signs, and so does the
    # URL shown for the user's own stream
    assert "no publish_secret" not in proc.stderr, proc.stderr
    assert f"publish (signed, 24 h): rtmp://127.0.0.1:{rtmp}/live/yours?expires=" in proc.stdout


LIVECDN = Path(__file__).resolve().parents[2] / "livecdn"
COMMANDS = ("demo", "up", "load", "test", "origin", "edge", "balancer", "topology", "setup", "help")


@pytest.mark.parametrize("flag", ["--help", "-h", "help"])
def test_livecdn_help_lists_every_command(flag: str) -> None:
    proc = subprocess.run([LIVECDN, flag], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert tuple(listed) == COMMANDS
    cases = re.findall(r"^  ([a-z|-]+)\)", LIVECDN.read_text(), re.M)  # what the script runs
    assert {c for case in cases for c in case.split("|") if not c.startswith("-")} == set(COMMANDS)


def test_livecdn_unknown_command_prints_usage_and_exits_2() -> None:
    proc = subprocess.run([LIVECDN, "bogus"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "unknown command 'bogus'" in proc.stderr and "usage: ./livecdn" in proc.stderr
    assert proc.stdout == ""

"""`python -m origin` as a process: config errors, tokens, start-up and clean shutdown."""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import trio

from common.net.httpclient import fetch
from common.proto import auth, playtoken

PY = sys.executable
SECRET = "k" * 16


@pytest.mark.parametrize(
    ("config", "message"),
    [("rtmp_port = 1935\ngop_cahce = false\n", "unknown key(s) gop_cahce"),
     ('on_republish = "maybe"\n', "on_republish must be one of 'owner', 'takeover', 'reject'")],
)  # fmt: skip
def test_a_bad_config_file_is_a_clear_error(tmp_path, config, message):
    cfg = tmp_path / "origin.toml"
    cfg.write_text(config)
    proc = subprocess.run(
        [PY, "-m", "origin", "--config", str(cfg)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert message in proc.stderr


def test_environment_overrides_are_checked_and_named():
    env = {**os.environ, "LIVECDN_ORIGIN_HLS_WINDOW": "many"}
    proc = subprocess.run([PY, "-m", "origin"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "environment LIVECDN_ORIGIN_HLS_WINDOW: hls_window must be an integer" in proc.stderr


@pytest.mark.parametrize("node", ["origin", "edge", "balancer"])
def test_help_has_a_flag_for_every_config_key(node):
    from common.config import MODELS, keys

    proc = subprocess.run([PY, "-m", node, "--help"], capture_output=True, text=True, check=True)
    assert "--config FILE" in proc.stdout
    missing = [k.flag for k in keys(MODELS[node]).values() if k.flag not in proc.stdout]
    assert not missing, missing


def test_token_command_makes_a_valid_token():
    proc = subprocess.run(
        [PY, "-m", "origin", "token", "live/demo", "--secret", SECRET, "--ttl", "60"],
        capture_output=True,
        text=True,
        check=True,
    )
    stream, _, query = proc.stdout.strip().partition("?")
    params = dict(p.split("=") for p in query.split("&"))
    assert stream == "live/demo"
    assert auth.check(SECRET, "live", "demo", params, now=int(params["expires"]) - 30) is None


def test_token_command_makes_a_signed_play_url():
    proc = subprocess.run(
        [PY, "-m", "origin", "token", "live/demo", "--play", "--secret", SECRET, "--class", "gold"],
        capture_output=True,
        text=True,
        check=True,
    )
    stream, _, query = proc.stdout.strip().partition("?")
    params = dict(p.split("=") for p in query.split("&"))
    assert stream == "live/demo" and params["pcls"] == "gold"
    assert playtoken.check(SECRET, "live/demo", params, now=int(params["pexp"]) - 30) is None


def test_token_command_refuses_a_secret_no_node_would_take():
    proc = subprocess.run(
        [PY, "-m", "origin", "token", "live/demo", "--secret", "k"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "at least 16 characters" in proc.stderr, proc


@pytest.mark.parametrize("stream", ["live", "live/a b", "live/demo/x"])
def test_token_command_refuses_a_bad_stream_key(stream):
    proc = subprocess.run(
        [PY, "-m", "origin", "token", stream, "--secret", SECRET], capture_output=True, text=True
    )
    assert proc.returncode == 2 and not proc.stdout, proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_starts_serves_and_stops_cleanly_on_signal(sig):
    proc = await trio.lowlevel.open_process(
        [PY, "-m", "origin", "--host", "127.0.0.1", "--rtmp", "0", "--http", "0"],
        stderr=subprocess.PIPE,
    )
    log = b""
    try:
        with trio.fail_after(10):
            while b"origin up" not in log:
                log += await proc.stderr.receive_some()
        http_port = int(re.search(rb"http://127.0.0.1:(\d+)", log).group(1))
        status = (await fetch("GET", f"http://127.0.0.1:{http_port}/healthz")).status
        assert status == 200
        proc.send_signal(sig)
        with trio.fail_after(10):
            while chunk := await proc.stderr.receive_some():
                log += chunk
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
    assert code == 0, log.decode()
    stopping = b"drained: shutting down" if sig == signal.SIGTERM else b"SIGINT received: shutting"
    assert stopping in log  # SIGTERM drains first (ends the streams cleanly)
    assert b"origin stopped" in log


IN_USE = f"[Errno {errno.EADDRINUSE}] {os.strerror(errno.EADDRINUSE)}"


@pytest.fixture
def busy_port():
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("node", "args"),
    [("origin", ["--rtmp", "{port}", "--http", "0"]),
     ("origin", ["--rtmp", "0", "--http", "{port}"]),
     ("edge", ["--parent", "rtmp://127.0.0.1:1", "--rtmp", "0", "--http", "{port}"]),
     ("balancer", ["--http", "0", "--control", "{port}"])],
)  # fmt: skip
def test_a_busy_port_is_one_line_naming_it(busy_port, node, args):
    argv = [a.format(port=busy_port) for a in args]
    proc = subprocess.run(
        [PY, "-m", node, "--host", "127.0.0.1", *argv], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{busy_port}: {IN_USE}"
    ], proc.stderr


def test_a_port_taken_while_starting_is_one_line_too(busy_port):
    """Past the start-up check (a port taken in between), trio's exception groups are
    unwrapped into the same one line."""
    code = (
        "import sys, common.serve.cli; common.serve.cli.cannot_listen = lambda config: None\n"
        "from origin.__main__ import main\n"
        f"sys.exit(main(['--host', '127.0.0.1', '--rtmp', '0', '--http', '{busy_port}']))"
    )
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{busy_port}: {IN_USE}"
    ], proc.stderr

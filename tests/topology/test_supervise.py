"""`python -m topology up` as a process: it outlives dead nodes and kicked publishers, stops
(and reaps) every node it started, and fails in one line when a node cannot start."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
import trio

from common.net.httpclient import fetch, open_request
from common.net.rtmpclient import RtmpClientError
from common.proto import auth
from tests.topologies import edge, origin, publisher, table, topology
from topology import publisher as publisher_loop
from topology import schema
from topology.deployment import Deployment, Node
from topology.procs import start_node

PY = sys.executable


class Launcher:
    """`python -m topology up FILE` with TMPDIR in `tmp_path`; collects its output."""

    def __init__(self, tmp_path: Path, text: str, env: dict[str, str] | None = None) -> None:
        self.tmp_path = tmp_path
        self.env = env or {}
        self.topology = tmp_path / "topo.toml"
        self.topology.write_text(text)
        self.output = ""
        self.proc: trio.Process | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        self.proc = await trio.lowlevel.open_process(
            [PY, "-m", "topology", "up", str(self.topology)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(self.tmp_path), **self.env},
        )
        nursery.start_soon(self._read)

    async def _read(self) -> None:
        while data := await self.proc.stdout.receive_some():
            self.output += data.decode(errors="replace")

    async def wait_for(self, pattern: str, timeout: float = 30) -> re.Match:
        """The first match of `pattern` in the output, once there is one."""
        with trio.fail_after(timeout):
            while not (m := re.search(pattern, self.output, re.MULTILINE)):
                assert self.proc.poll() is None, f"launcher exited:\n{self.output}"
                await trio.sleep(0.1)
        return m

    def state(self) -> dict:
        return json.loads((self.tmp_path / "livecdn-state" / "topo.json").read_text())

    async def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        with trio.fail_after(30):
            return await self.proc.wait()


def exists(pid: int) -> bool:
    """Whether `pid` is a process, zombies included (a zombie keeps its /proc entry)."""
    return Path(f"/proc/{pid}").exists()


@pytest.fixture
async def launcher(nursery, tmp_path):
    made: list[Launcher] = []

    def make(text: str, env: dict[str, str] | None = None) -> Launcher:
        made.append(Launcher(tmp_path, text, env))
        return made[-1]

    yield make
    for launcher in made:
        if launcher.proc is not None and launcher.proc.poll() is None:
            launcher.proc.kill()


NODES = topology(
    origin(),
    edge("edge1"),
    edge("edge2"),
    table("[[fault]]", {"at": "1s", "action": "kill", "node": "edge2"}),
    table("[[fault]]", {"at": "2s", "action": "restart", "node": "edge2"}),
)


@pytest.mark.slow
async def test_dead_nodes_are_reported_and_every_node_is_stopped(launcher, nursery):
    up = launcher(NODES)
    await up.start(nursery)
    await up.wait_for(r"^  stop: Ctrl-C")
    pids = {name: int(pid) for name, pid in re.findall(r"(\w+)\s+up \(pid (\d+)\)", up.output)}
    assert set(pids) == {"origin", "edge1", "edge2"}, up.output

    # the fault schedule kills edge2 and starts it again: a new supervised process
    restarted = int((await up.wait_for(r"edge2\s+restarted \(pid (\d+)\)"))[1])
    assert exists(restarted) and not exists(pids["edge2"])
    assert up.state()["nodes"]["edge2"]["pid"] == restarted

    # kill -9 from outside: one report with the node, its signal and its log's last lines
    os.kill(pids["origin"], signal.SIGKILL)
    report = await up.wait_for(
        r"^node origin \(origin, pid (\d+)\) died: killed by SIGKILL; last lines of (.*):$"
    )
    assert int(report[1]) == pids["origin"]
    log_lines = [line for line in Path(report[2]).read_text().splitlines() if line.strip()]
    assert "origin up" in log_lines[0]
    tail = [f"  | {line}" for line in log_lines[-10:]]
    assert up.output[report.end() + 1 :].splitlines()[: len(tail)] == tail, up.output
    assert up.output.count("node origin ") == 1
    assert not exists(pids["origin"]), "reaped, not a zombie"
    assert up.proc.poll() is None, "the launcher keeps running"
    edge_http = up.state()["nodes"]["edge1"]["http_port"]
    assert (await fetch("GET", f"http://127.0.0.1:{edge_http}/healthz")).status == 200

    # Ctrl-C: every node it started, the restarted one included, is stopped and reaped
    assert await up.stop(signal.SIGINT) == 0, up.output
    assert "topology stopped" in up.output
    alive = [pid for pid in [*pids.values(), restarted] if exists(pid)]
    assert not alive, f"left running: {alive}\n{up.output}"


PUBLISHED = topology(origin(), publisher(size="160x90", fps=10, kbps=100))


@pytest.mark.slow
async def test_a_kicked_and_banned_publisher_publishes_again(launcher, nursery):
    up = launcher(PUBLISHED)
    await up.start(nursery)
    await up.wait_for(r"^  stop: Ctrl-C")
    api = f"http://127.0.0.1:{up.state()['nodes']['origin']['http_port']}/api/streams"
    token = run_secrets(up)["origin"]["admin_token"]
    assert (await fetch("DELETE", f"{api}/live/demo?ban=2")).status == 401
    auth_header = [("authorization", f"Bearer {token}")]
    reply = await fetch("DELETE", f"{api}/live/demo?ban=2", headers=auth_header)
    status, body = reply.status, reply.body
    assert status == 200, body
    await up.wait_for(r"publisher live/demo: connection closed by the server.*; retrying in")
    await up.wait_for(r"publisher live/demo: refused: NetStream\.Publish\.BadName.*banned")
    assert not json.loads((await fetch("GET", api)).body)["streams"]
    await up.wait_for(r"publishing a 160x90 10 fps test pattern(.|\n)*publishing a 160x90")
    with trio.fail_after(10):
        while not json.loads((await fetch("GET", api)).body)["streams"]:
            await trio.sleep(0.2)
    assert up.proc.poll() is None
    assert await up.stop(signal.SIGTERM) == 0, up.output


@pytest.mark.slow
async def test_an_origin_with_a_publish_secret_gets_its_publisher_and_plays(launcher, nursery):
    """The built-in publisher signs its URL with the origin's secret; stray LIVECDN_*
    variables of the launcher (a wrong secret, another node id) do not reach the nodes."""
    text = topology(origin(publish_secret="publish-secret-0123456789"), edge("edge1"),
                    publisher(size="160x90", fps=10, kbps=100))  # fmt: skip
    stray = {"LIVECDN_ORIGIN_PUBLISH_SECRET": "other", "LIVECDN_EDGE_NODE_ID": "stray"}
    up = launcher(text, stray)
    await up.start(nursery)
    await up.wait_for(r"^  stop: Ctrl-C")
    assert "not live" not in up.output and "refused" not in up.output, up.output
    nodes = up.state()["nodes"]
    await play_a_chunk(f"http://127.0.0.1:{nodes['edge1']['http_port']}/live/demo.flv")
    assert run_secrets(up)["origin"]["publish_secret"] == "publish-secret-0123456789"  # as set
    assert await up.stop(signal.SIGTERM) == 0, up.output


def run_secrets(up: Launcher) -> dict:
    """The secrets.toml of the run `up` started."""
    return tomllib.loads((Path(up.state()["run_dir"]) / "secrets.toml").read_text())


async def play_a_chunk(url: str) -> None:
    """GET `url` (HTTP-FLV) answers 200 and delivers data."""
    response = await open_request("GET", url)
    try:
        assert response.status == 200
        with trio.fail_after(10):
            async for data in response.chunks():
                if data:
                    break
    finally:
        response.close()


@pytest.mark.slow
async def test_a_topology_without_secrets_generates_and_uses_its_own(launcher, nursery):
    """Generated per run, kept in the run directory readable by the owner only (as the node
    config files that carry them), never printed; the built-in publisher signs with the
    origin's, a publish without a token is refused, and the table's publish URL is signed."""
    up = launcher(topology(origin(), edge("edge1"), publisher(size="160x90", fps=10, kbps=100)))
    await up.start(nursery)
    await up.wait_for(r"^  stop: Ctrl-C")
    assert "not live" not in up.output and "refused" not in up.output, up.output
    run_dir = Path(up.state()["run_dir"])
    found = run_secrets(up)
    secret = found["origin"]["publish_secret"]
    assert found["origin"]["admin_token"] and found["edge1"]["admin_token"]
    assert len({secret, found["origin"]["admin_token"], found["edge1"]["admin_token"]}) == 3
    for name in ("secrets.toml", "origin.toml", "edge1.toml"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o600, name
    origin_config = tomllib.loads((run_dir / "origin.toml").read_text())
    assert origin_config["publish_secret"] == secret
    edge_config = tomllib.loads((run_dir / "edge1.toml").read_text())
    assert edge_config["admin_token"] == found["edge1"]["admin_token"]
    assert f"{run_dir / 'secrets.toml'}" in up.output
    for value in (secret, found["origin"]["admin_token"], found["edge1"]["admin_token"]):
        assert value not in up.output

    nodes = up.state()["nodes"]
    await play_a_chunk(f"http://127.0.0.1:{nodes['edge1']['http_port']}/live/demo.flv")
    rtmp = f"rtmp://127.0.0.1:{nodes['origin']['rtmp_port']}"
    with pytest.raises(RtmpClientError, match="Unauthorized.*no token"):
        await publisher_loop.publish(f"{rtmp}/live/stranger", seconds=1)
    shown = re.search(r"publish live/demo \(signed, 24 h\)\s+(\S+)", up.output)
    assert shown and shown[1].startswith(f"{rtmp}/live/demo?"), up.output
    query = dict(parse_qsl(shown[1].partition("?")[2]))
    assert auth.check(secret, "live", "demo", query, time.time() + 23 * 3600) is None
    assert await up.stop(signal.SIGTERM) == 0, up.output


async def test_nodes_start_without_the_launchers_livecdn_variables(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LIVECDN_EDGE_HOST", "10.9.9.9")
    monkeypatch.setenv("LIVECDN_KEPT_OUT", "1")
    monkeypatch.setenv("OTHER_VARIABLE", "kept")
    show = "import os, sys; print(sorted(k for k in os.environ if 'LIVECDN' in k or k == 'OTHER_VARIABLE'), file=sys.stderr)"
    path = tmp_path / "t.toml"
    path.write_text(topology(origin()))
    dep = Deployment(schema.load(str(path)), tmp_path)
    node = Node("n", "edge", [PY, "-c", show], http_port=1)
    proc = await start_node(dep, node, supervise=False)
    with trio.fail_after(30):
        assert await proc.wait() == 0
    assert node.log_path is not None
    assert node.log_path.read_text().strip() == "['OTHER_VARIABLE']"


@pytest.mark.slow
async def test_a_node_on_a_busy_port_fails_up_in_one_line(launcher, nursery, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        up = launcher(topology(origin(), edge("edge1", rtmp_port=port)))
        await up.start(nursery)
        with trio.fail_after(60):
            code = await up.proc.wait()
    assert code == 1, up.output
    errors = [line for line in up.output.splitlines() if line.startswith("error:")]
    in_use = os.strerror(errno.EADDRINUSE)
    assert len(errors) == 1, up.output
    assert re.fullmatch(
        rf"error: edge1 \(edge, rtmp :{port}, http :\d+\) did not start: exited with status 1: "
        rf"cannot listen on 127\.0\.0\.1:{port}: \[Errno {errno.EADDRINUSE}\] {in_use} "
        r"\(log: .*edge1\.log\)",
        errors[0],
    ), errors[0]
    assert "Traceback" not in up.output
    origin_pid = int(re.search(r"origin\s+up \(pid (\d+)\)", up.output)[1])
    assert not exists(origin_pid), "the nodes already up are stopped"


async def test_publisher_backs_off_and_resets_after_a_live_stretch(
    monkeypatch, caplog, autojump_clock
):
    """Delays double from 0.5 s to 10 s; an attempt live for 10 s starts them over."""
    attempts = 0

    async def fake_publish(url, *, settings, on_live):
        nonlocal attempts
        attempts += 1
        if attempts == 8:
            on_live()
            await trio.sleep(15)
            raise RtmpClientError("connection closed by the server")
        if attempts == 9:
            raise ValueError("anything at all")
        raise RtmpClientError("NetStream.Publish.BadName: live/demo is banned", "BadName")

    monkeypatch.setattr(publisher_loop, "publish", fake_publish)
    caplog.set_level(logging.WARNING, "livecdn.publisher")
    with trio.move_on_after(200):
        await publisher_loop.keep_publishing("rtmp://127.0.0.1:1/live/demo")
    lines = [r.getMessage() for r in caplog.records if r.name == "livecdn.publisher"]
    delays = [float(re.search(r"retrying in ([\d.]+) s$", line)[1]) for line in lines]
    assert delays[:10] == [0.5, 1, 2, 4, 8, 10, 10, 0.5, 1, 2], lines
    assert lines[0] == (
        "publisher live/demo: refused: NetStream.Publish.BadName: live/demo is banned; "
        "retrying in 0.5 s"
    )
    assert lines[7].startswith("publisher live/demo: connection closed by the server (kicked")
    assert lines[8].startswith("publisher live/demo: ValueError: anything at all;")


async def test_publisher_signs_each_attempt_with_a_fresh_token(monkeypatch, autojump_clock):
    urls: list[tuple[str, float]] = []
    now = 1_000_000.0

    async def fake_publish(url, *, settings, on_live):
        nonlocal now
        urls.append((url, now))
        now += 100_000  # later than a token's validity: each attempt needs its own
        raise RtmpClientError("connection closed by the server")

    monkeypatch.setattr(publisher_loop, "publish", fake_publish)
    monkeypatch.setattr(publisher_loop.time, "time", lambda: now)
    with trio.move_on_after(5):
        await publisher_loop.keep_publishing("rtmp://h:1/live/demo", publish_secret="s3cret")
    assert len(urls) >= 3
    for url, at in urls:
        base, _, query = url.partition("?")
        assert base == "rtmp://h:1/live/demo"
        assert auth.check("s3cret", "live", "demo", dict(parse_qsl(query)), at) is None
    assert len({url for url, _ in urls}) == len(urls)

"""Relays against a real nginx-rtmp: the origin pushes to it (and reconnects when it dies and
comes back), and pulls from it (static and on demand); ffmpeg publishes, PyAV plays."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import trio

from common.net.httpclient import fetch
from common.proto.rtmp import session as rs
from common.serve.feeds import NotFound, ParentError, open_feed
from origin import relaystate
from tests.conftest import ffmpeg_publish, needs_ffmpeg, start_origin, wait_for_stream
from tests.edge.test_edge_real import FlvViewer
from tests.metrics import metric, scrape
from tests.origin.test_play_real_clients import read_with_pyav

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
RTMP_MODULES = [
    Path("/usr/lib/nginx/modules/ngx_rtmp_module.so"),
    Path("/usr/share/nginx/modules/ngx_rtmp_module.so"),
]
RTMP_MODULE = next((p for p in RTMP_MODULES if p.exists()), None)

pytestmark = [
    pytest.mark.slow,
    needs_ffmpeg,
    pytest.mark.skipif(
        NGINX is None or RTMP_MODULE is None,
        reason="nginx with its RTMP module is not installed (apt-get install nginx "
        "libnginx-mod-rtmp; ./livecdn setup does it)",
    ),
]

CONF = """
load_module {module};
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        idle_streams off;
        application live {{
            live on;
            record off;
        }}
        application closed {{
            live on;
            deny publish all;
        }}
    }}
}}
"""


class Nginx:
    """nginx-rtmp on `port` (nginx cannot report a port 0 it bound), started (and killed) by
    the test."""

    def __init__(self, directory: Path, port: int) -> None:
        self.dir = directory
        self.port = port
        self.proc: subprocess.Popen | None = None
        conf = CONF.format(module=RTMP_MODULE, dir=directory, port=self.port)
        (directory / "nginx.conf").write_text(conf)

    @property
    def url(self) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live"

    async def start(self) -> None:
        """Start and wait until it accepts connections."""
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.dir), "-e", str(self.dir / "error.log"),
             "-c", str(self.dir / "nginx.conf")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        with trio.fail_after(10):
            while True:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    log = (self.dir / "error.log").read_text(errors="replace")
                    raise RuntimeError(f"nginx exited: {err}\n{log[-2000:]}")
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                except OSError:
                    await trio.sleep(0.05)
                    continue
                await stream.aclose()
                return

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
async def nginx(tmp_path: Path, held_ports):
    server = Nginx(tmp_path, held_ports.take())
    await server.start()
    try:
        yield server
    finally:
        server.kill()


async def relays(http_port: int, token: str = "") -> dict:
    headers = [("authorization", f"Bearer {token}")] if token else []
    resp = await fetch("GET", f"http://127.0.0.1:{http_port}/api/relays", headers=headers)
    assert resp.status == 200
    return json.loads(resp.body)


async def wait_relay(http_port: int, kind: str, check, seconds: float = 20.0) -> dict:
    """Until the first relay of `kind` ("pushes" or "pulls") passes `check`."""
    with trio.fail_after(seconds):
        while True:
            listed = (await relays(http_port))[kind]
            if listed and check(listed[0]):
                return listed[0]
            await trio.sleep(0.1)


async def wait_published(nginx: Nginx, name: str) -> None:
    """Until nginx has media of live/`name` (ffmpeg takes a moment to start publishing)."""
    with trio.fail_after(30):
        while True:
            try:
                feed = await open_feed(f"rtmp://127.0.0.1:{nginx.port}", "live", name)
            except (ParentError, NotFound):
                await trio.sleep(0.2)
                continue
            try:
                with trio.move_on_after(5):
                    while not any(isinstance(e, rs.Media) for e in await feed.receive()):
                        pass
                    return
            except ParentError:
                await trio.sleep(0.2)
            finally:
                feed.close()


async def play(url: str, frames: int = 25) -> dict:
    return await trio.to_thread.run_sync(read_with_pyav, url, frames)


async def test_push_to_nginx(nursery, clip, nginx):
    origin, addr = await start_origin(nursery, push=[f"live={nginx.url}"])
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/cam")
    await wait_for_stream(origin, "live", "cam")
    push = await wait_relay(addr.http_port, "pushes", lambda p: p["state"] == "active")
    assert push["name"] == "cam"
    assert push["target"].startswith(f"rtmp://127.0.0.1:{nginx.port}/live")

    got = await play(f"{nginx.url}/cam")
    assert got["decoded"] >= 25
    assert got["first_video_key"] is True
    assert got["size"] == (320, 240)
    assert "audio" in got["kinds"]

    push = (await relays(addr.http_port))["pushes"][0]
    assert push["bytes"] > 10_000 and push["reconnects"] == 0
    text = await scrape(addr.http_port)
    assert metric(text, "livecdn_relay_push_bytes_total", target=f"{nginx.url}") > 10_000
    assert metric(text, "livecdn_relay_pushes", state="active") == 1


async def test_push_survives_nginx_restart(nursery, clip, nginx, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="livecdn.relay")
    # shorter times, the same rules: active is logged again after 3 s up (not 10), and the
    # reconnects back off up to 2 s (not 30), so the push is back soon after nginx is
    monkeypatch.setattr(relaystate, "STABLE", 3.0)
    monkeypatch.setattr(relaystate, "RETRY_MOST", 2.0)
    origin, addr = await start_origin(nursery, push=[f"live={nginx.url}"])
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/cam")
    await wait_for_stream(origin, "live", "cam")
    await wait_relay(addr.http_port, "pushes", lambda p: p["state"] == "active")
    viewer = FlvViewer(f"http://127.0.0.1:{addr.http_port}/live/cam.flv")
    await nursery.start(viewer.run)
    await viewer.wait_frames(10)

    nginx.kill()
    failed = await wait_relay(addr.http_port, "pushes", lambda p: p["state"] == "retrying")
    assert failed["last_error"]
    # a few reconnects fail meanwhile, and our own viewer plays on: 75 more frames arrive
    await wait_relay(addr.http_port, "pushes", lambda p: p["reconnects"] >= 2, seconds=60)
    await viewer.wait_frames(len(viewer.video) + 75, seconds=60)  # a hang guard only
    await nginx.start()
    back = await wait_relay(
        addr.http_port, "pushes", lambda p: p["state"] == "active" and p["reconnects"] >= 1
    )
    assert back["bytes"] > 0
    got = await play(f"{nginx.url}/cam", 10)
    assert got["decoded"] >= 10
    assert viewer.error is None and not viewer.ended_cleanly
    assert origin.registry.get("live", "cam") is not None

    def relay_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "livecdn.relay"]

    with trio.fail_after(30):  # active is logged again once it has lasted STABLE seconds
        while ": active" not in relay_lines()[-1]:
            await trio.sleep(0.2)
    lines = relay_lines()
    retrying = [line for line in lines if ": retrying" in line]
    assert len(retrying) == 1, lines  # one line for the failure, not one per attempt
    assert ": active" in lines[-1], lines
    text = await scrape(addr.http_port)
    assert metric(text, "livecdn_relay_push_reconnects_total", target=nginx.url) >= 1
    assert metric(text, "livecdn_relay_push_failures_total", reason="connect") >= 1


async def test_static_pull_from_nginx(nursery, clip, nginx):
    await ffmpeg_publish(nursery, clip, f"{nginx.url}/src")
    origin, addr = await start_origin(nursery, pull_static=[f"live/pulled={nginx.url}/src"])
    await wait_for_stream(origin, "live", "pulled", timeout=20)
    got = await play(f"http://127.0.0.1:{addr.http_port}/live/pulled.flv")
    assert got["decoded"] >= 25
    assert got["first_video_key"] is True
    assert got["size"] == (320, 240)
    pull = (await relays(addr.http_port))["pulls"][0]
    assert pull["mode"] == "static" and pull["state"] == "active" and pull["bytes"] > 10_000
    stream = (
        json.loads((await fetch("GET", f"http://127.0.0.1:{addr.http_port}/api/streams")).body)
    )["streams"][0]
    assert stream["name"] == "pulled" and stream["video"]["width"] == 320


async def test_on_demand_pull_from_nginx(nursery, clip, nginx):
    await ffmpeg_publish(nursery, clip, f"{nginx.url}/src")
    origin, addr = await start_origin(
        nursery, pull_on_demand=[f"ext={nginx.url}/{{name}}"], pull_linger_seconds=1.0
    )
    await wait_published(nginx, "src")
    assert origin.registry.get("ext", "src") is None  # nothing pulled before a viewer asks
    got = await play(f"http://127.0.0.1:{addr.http_port}/ext/src.flv")
    assert got["decoded"] >= 25
    assert got["first_video_key"] is True
    # the viewer left: the pull ends after the linger
    with trio.fail_after(15):
        while origin.registry.get("ext", "src") is not None:
            await trio.sleep(0.1)
    # a name nginx does not have: a 404, and no stream left behind
    resp = await fetch("GET", f"http://127.0.0.1:{addr.http_port}/ext/nothing.flv")
    assert resp.status == 404
    assert origin.registry.get("ext", "nothing") is None
    text = await scrape(addr.http_port)
    assert metric(text, "livecdn_relay_pull_bytes_total", source=f"{nginx.url}/...") > 10_000


async def test_local_publisher_wins_over_static_pull(nursery, clip, nginx):
    await ffmpeg_publish(nursery, clip, f"{nginx.url}/src")
    origin, addr = await start_origin(nursery, pull_static=[f"live/cam={nginx.url}/src"])
    pulled = await wait_for_stream(origin, "live", "cam", timeout=20)
    viewer = FlvViewer(f"http://127.0.0.1:{addr.http_port}/live/cam.flv")
    await nursery.start(viewer.run)
    await viewer.wait_frames(10)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/cam")
    with trio.fail_after(10):
        while origin.live[("live", "cam")].publisher is None:
            await trio.sleep(0.05)
    assert origin.registry.get("live", "cam") is pulled  # same stream: viewers kept
    pull = await wait_relay(addr.http_port, "pulls", lambda p: p["state"] == "waiting")
    assert "local publisher" in pull["last_error"]
    await viewer.wait_frames(len(viewer.video) + 25, seconds=30)  # it plays on (a hang guard)
    assert viewer.error is None


async def test_a_refusing_target_fails_alone(nursery, clip, nginx, caplog):
    caplog.set_level(logging.INFO, logger="livecdn.relay")
    closed = f"rtmp://127.0.0.1:{nginx.port}/closed"
    origin, addr = await start_origin(nursery, push=[f"live={closed}", f"live={nginx.url}"])
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/cam")
    await wait_for_stream(origin, "live", "cam")
    with trio.fail_after(20):
        while True:
            pushes = {p["target"][:-4]: p for p in (await relays(addr.http_port))["pushes"]}
            if (
                pushes.get(closed, {}).get("state") == "retrying"
                and pushes.get(nginx.url, {}).get("state") == "active"
            ):
                break
            await trio.sleep(0.1)
    # nginx-rtmp accepts the publish, then drops the connection
    assert "the target closed the connection" in pushes[closed]["last_error"]
    got = await play(f"{nginx.url}/cam", 10)  # the other target has the stream
    assert got["decoded"] >= 10
    text = await scrape(addr.http_port)
    assert metric(text, "livecdn_relay_push_failures_total", reason="broken") >= 1
    with trio.fail_after(20):  # several attempts, each accepted and dropped
        while not any(
            p["reconnects"] >= 2 and "/closed/" in p["target"]
            for p in (await relays(addr.http_port))["pushes"]
        ):
            await trio.sleep(0.1)
    lines = [m for r in caplog.records if "push of" in (m := r.getMessage()) and "/closed/" in m]
    assert len(lines) == 1 and ": retrying: " in lines[0], lines  # not one per attempt

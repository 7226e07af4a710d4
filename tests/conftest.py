"""Shared fixtures: a real test clip made with ffmpeg, origins started in-process on port 0."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
from hypothesis import settings

from common.config import OriginConfig, build
from origin.server import Origin, OriginAddress
from tests.tlscerts import Certs, make_certs
from topology.ports import PortBook

# CI replays the same examples every run (a red CI then means a change broke something, not a
# new draw); local runs keep exploring and remember failures in .hypothesis/.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")
QOS_SECRET = "qos-secret-for-tests-0123"
"""The qos_secret of tests with viewer classes (a config secret needs 16 characters)."""


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A test CA and server certificates it signs (tests/tlscerts.py), made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s of 320x240 25 fps H.264 (keyframe every second) + AAC 44.1 kHz stereo, as FLV."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    out = tmp_path_factory.mktemp("media") / "clip.flv"
    subprocess.run(
        [
            FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-t", "6", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
            "-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-ac", "2", "-b:a", "64k", "-f", "flv", str(out),
        ],
        check=True,
    )  # fmt: skip
    return out


async def start_origin(nursery: trio.Nursery, **overrides: object) -> tuple[Origin, OriginAddress]:
    """Start an origin in `nursery` on free ports; return it and where it listens."""
    values = {"host": "127.0.0.1", "rtmp_port": 0, "http_port": 0, **overrides}
    origin = Origin(build(OriginConfig, values))
    address = await nursery.start(origin.run)
    return origin, address


@pytest.fixture
def held_ports() -> Iterator[PortBook]:
    """Free ports for a process the test starts with fixed ports, held (bound, not listening)
    until the test ends, so that nothing else on the machine is given them first."""
    with PortBook() as book:
        yield book


@pytest.fixture
def inline_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run `trio.to_thread.run_sync` work inline. For tests on the autojumping MockClock:
    while a thread works every task looks blocked, so the clock would leap to the next
    deadline (a hang guard, a replay's next frame) in no real time."""

    async def inline(fn, *args, **_):
        return fn(*args)

    monkeypatch.setattr(trio.to_thread, "run_sync", inline)


@pytest.fixture
async def origin(nursery: trio.Nursery) -> tuple[Origin, OriginAddress]:
    """An origin with the default configuration."""
    return await start_origin(nursery)


async def ffmpeg_publish(
    nursery: trio.Nursery, clip: Path, url: str, *, loop: bool = True, seconds: float = 0
) -> trio.Process:
    """Publish `clip` in real time with ffmpeg (`-re`), looping (or its first `seconds`);
    killed with the nursery."""
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-re"]
    if loop:
        cmd += ["-stream_loop", "-1"]
    if seconds:
        cmd += ["-t", f"{seconds:g}"]
    cmd += ["-i", str(clip), "-c", "copy", "-f", "flv", url]
    return await nursery.start(
        partial(
            trio.run_process,
            cmd,
            check=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
    )


async def wait_for_stream(
    origin: Origin, app: str, name: str, *, keyframes: int = 1, timeout: float = 10.0
):
    """Wait until app/name is live and its ring holds `keyframes` keyframes."""
    with trio.fail_after(timeout):
        while True:
            stream = origin.registry.get(app, name)
            if stream is not None and sum(f.keyframe for f in stream.iter_frames()) >= keyframes:
                return stream
            await trio.sleep(0.05)


async def start_edge(nursery: trio.Nursery, parents: list[str], **overrides: object):
    """Start an edge in `nursery` on free ports; return it and where it listens."""
    from common.config import EdgeConfig
    from edge.server import Edge

    values = {"host": "127.0.0.1", "rtmp_port": 0, "http_port": 0, "parents": parents, **overrides}
    edge = Edge(build(EdgeConfig, values))
    address = await nursery.start(edge.run)
    return edge, address


async def start_killable(nursery: trio.Nursery, node) -> tuple[object, trio.CancelScope]:
    """Start `node.run` so that cancelling the returned scope kills just that node."""
    scope = trio.CancelScope()

    async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await node.run(task_status=task_status)

    address = await nursery.start(run)
    return address, scope


@pytest.fixture(autouse=True)
def fresh_relay_log_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's origins start with the relays' log budget full: the budget is per process
    (one origin in production), and a test's trio clock is not the previous test's."""
    from common.net.logbudget import LogBudget
    from origin import relaystate

    old = relaystate.budget
    fresh = LogBudget(old.log, old.what, burst=old.burst, window=old.window)
    monkeypatch.setattr(relaystate, "budget", fresh)

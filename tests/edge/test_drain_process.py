"""SIGTERM to a real `python -m edge` process: it drains (new plays refused, its viewer plays
on) and stops by itself, cleanly, once its last viewer has left."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import trio

from common.net.httpclient import fetch
from tests.conftest import start_origin
from tests.edge.test_edge_real import FlvViewer
from tests.media import publish_synthetic

HANG = 15  # seconds: only a guard against hangs


class NodeLog:
    """A node process's stderr (its log), read as it comes."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.text = ""
        self.closed = trio.Event()

    async def run(self) -> None:
        while data := await self.proc.stderr.receive_some():
            self.text += data.decode(errors="replace")
        self.closed.set()

    async def wait_for(self, line: str) -> None:
        with trio.fail_after(HANG):
            while line not in self.text:
                if self.closed.is_set():
                    raise AssertionError(f"{line!r} never came:\n{self.text}")
                await trio.sleep(0.05)


async def test_sigterm_drains_an_edge_process_which_stops_when_its_viewer_leaves(nursery):
    _, oaddr = await start_origin(nursery)
    await publish_synthetic(nursery, f"rtmp://127.0.0.1:{oaddr.rtmp_port}/live/p")
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "edge", "--host", "127.0.0.1", "--rtmp", "0", "--http", "0",
         "--parent", f"rtmp://127.0.0.1:{oaddr.rtmp_port}", "--drain-timeout", "600"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    log = NodeLog(proc)
    nursery.start_soon(log.run)
    try:
        await log.wait_for("edge up")
        http = int(re.search(r"http://127.0.0.1:(\d+)", log.text).group(1))
        url = f"http://127.0.0.1:{http}/live/p.flv"
        viewer = FlvViewer(url)
        async with trio.open_nursery() as watching:
            await watching.start(viewer.run)
            await viewer.wait_frames(3)
            proc.send_signal(signal.SIGTERM)
            await log.wait_for("draining: 1 viewers, new plays refused")
            refused = await fetch("GET", url)
            assert refused.status == 503, refused
            await viewer.wait_frames(len(viewer.video) + 3)  # still playing
            assert proc.poll() is None
            watching.cancel_scope.cancel()  # the viewer leaves: the edge may stop
        with trio.fail_after(HANG):
            code = await proc.wait()
            await log.closed.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
    assert code == 0, log.text
    assert "SIGTERM received: draining" in log.text
    assert "drained: shutting down" in log.text and "edge stopped" in log.text

"""`python -m edge --config FILE` reloads FILE on SIGHUP: a new parent list shows in its API at
once; a changed port refuses the reload in one log line and the edge keeps its config."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import trio

from common.net.httpclient import fetch

BASE = 'host = "127.0.0.1"\nhttp_port = 0\nrtmp_port = 0\n'


class Log:
    """A process's stderr, read as far as needed."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.text = ""

    async def until(self, pattern: str) -> re.Match:
        """Read until `pattern` matches the log from where the last match ended."""
        with trio.fail_after(10):
            while (found := re.search(pattern, self.text)) is None:
                self.text += (await self.proc.stderr.receive_some()).decode()
        self.text = self.text[found.end() :]
        return found


async def parents(http: str) -> list[str]:
    return json.loads((await fetch("GET", f"{http}/api/streams")).body)["parents"]


async def test_sighup_reloads_the_config_file(tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text(BASE + 'parents = ["rtmp://127.0.0.1:1"]\n')
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "edge", "--config", str(config)], stderr=subprocess.PIPE
    )
    try:
        log = Log(proc)
        port = (await log.until(r"http://127.0.0.1:(\d+)"))[1]
        http = f"http://127.0.0.1:{port}"
        await log.until("edge parents")
        assert await parents(http) == ["rtmp://127.0.0.1:1"]

        config.write_text(BASE + 'parents = ["rtmp://127.0.0.1:2", "rtmp://127.0.0.1:3"]\n')
        proc.send_signal(signal.SIGHUP)
        await log.until("SIGHUP received: config reloaded: applied parents\n")
        assert await parents(http) == ["rtmp://127.0.0.1:2", "rtmp://127.0.0.1:3"]

        config.write_text(BASE.replace("rtmp_port = 0", "rtmp_port = 1") + "parents = []\n")
        proc.send_signal(signal.SIGHUP)
        await log.until("config not reloaded, the node keeps its config: .*needs? at least one")
        config.write_text(
            BASE.replace("rtmp_port = 0", "rtmp_port = 1") + 'parents = ["rtmp://h:4"]\n'
        )
        proc.send_signal(signal.SIGHUP)
        await log.until("config not reloaded.*rtmp_port cannot change without a restart")
        assert await parents(http) == ["rtmp://127.0.0.1:2", "rtmp://127.0.0.1:3"]
    finally:
        proc.send_signal(signal.SIGINT)
        with trio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0

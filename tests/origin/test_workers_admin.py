"""An origin with `--workers 2` and no admin_token, as real processes: a remote (not
loopback) client's GET /api/relays never shows a relay's source in full (its key), whichever
worker gets it; before, the worker that got it asked its sibling over loopback and the sibling
took that for an admin's request, so the sibling's relays came back with their sources."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import trio

from common.net.httpclient import fetch
from tests.edge.test_drain_process import NodeLog

pytestmark = pytest.mark.slow

TRIES = 8  # new connections: either worker answers


def outside_address() -> str | None:
    """A non-loopback IPv4 address of this machine, if it has one."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    v4 = [a for a in out if "." in a and not a.startswith("127.")]
    return v4[0] if v4 else None


async def test_a_remote_non_admin_never_sees_a_relay_source_in_full(nursery):
    addr = outside_address()
    if addr is None:
        pytest.skip("no non-loopback address")
    secret_url = "rtmp://127.0.0.1:9/src/cam?key=TOPSECRET"
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "origin", "--host", "0.0.0.0", "--rtmp", "0", "--http", "0",
         "--workers", "2", "--pull", f"live/cam={secret_url}"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    log = NodeLog(proc)
    nursery.start_soon(log.run)
    try:
        await log.wait_for("origin worker 0 (pid")
        await log.wait_for("origin worker 1 (pid")
        http = int(re.search(r"2 workers: rtmp://[^:]+:\d+  http://[^:]+:(\d+)", log.text).group(1))
        leaked, answered = [], 0
        for _ in range(TRIES):
            got = await fetch("GET", f"http://{addr}:{http}/api/relays")
            assert got.status in (200, 403), got
            answered += got.status == 200
            if b"TOPSECRET" in got.body:
                leaked.append(json.loads(got.body))
        assert not leaked, f"a remote non-admin got the source in full: {leaked[0]}"
        local = await fetch("GET", f"http://127.0.0.1:{http}/api/relays")  # an admin's
        assert local.status == 200 and b"TOPSECRET" in local.body, local
    finally:
        proc.kill()

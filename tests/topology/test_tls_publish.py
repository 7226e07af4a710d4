"""`python -m topology publish rtmps://...` publishes the built-in test stream over TLS and
verifies the server with --tls-ca (a certificate made at test time)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio

from tests.conftest import wait_for_stream
from tests.origin.test_tls_origin import start_tls_origin
from tests.tlscerts import Certs

pytestmark = pytest.mark.slow


def publish_cmd(url: str, ca: str) -> list[str]:
    return [sys.executable, "-m", "topology", "publish", url, "--tls-ca", ca, "--seconds", "4",
            "--size", "160x90", "--fps", "10", "--kbps", "100"]  # fmt: skip


async def test_builtin_publisher_over_rtmps(nursery: trio.Nursery, tls_certs: Certs):
    origin, addr = await start_tls_origin(nursery, tls_certs)
    url = f"rtmps://localhost:{addr.rtmps_port}/live/tlspub"
    nursery.start_soon(
        lambda: trio.run_process(publish_cmd(url, tls_certs.ca), stdout=subprocess.DEVNULL)
    )
    await wait_for_stream(origin, "live", "tlspub", timeout=20)

    refused = await trio.run_process(
        publish_cmd(url.replace("tlspub", "other"), tls_certs.other_ca),
        check=False,
        capture_stderr=True,
        stdout=subprocess.DEVNULL,
    )
    assert refused.returncode == 1
    assert b"certificate verify failed" in refused.stderr, refused.stderr
    assert origin.registry.get("live", "other") is None

"""`python -m topology demo`: an origin process with the built-in publisher on live/demo."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import tempfile
import time
from functools import partial
from pathlib import Path

import trio

from common.config import OriginConfig
from topology.plan import node_command
from topology.procs import node_environ, stop_all, wait_healthy
from topology.publisher import SourceSettings, keep_publishing, signed_url

log = logging.getLogger("livecdn.topology")


async def run_demo(
    rtmp_port: int, http_port: int, settings: SourceSettings, seconds: float | None
) -> None:
    """Origin subprocess (started like the launcher's nodes: a config file written from its
    model) + built-in publisher, until Ctrl-C (or `seconds`); stops both. The origin gets a
    fresh publish_secret (written only to its config file, mode 0600), so only the built-in
    publisher and whoever is shown the signed URL can publish."""
    config_dir = Path(tempfile.mkdtemp(prefix="livecdn-demo-"))
    secret = secrets.token_urlsafe(24)
    values = {"rtmp_port": rtmp_port, "http_port": http_port, "publish_secret": secret}
    cmd = node_command(OriginConfig, values, config_dir / "origin.toml")
    async with trio.open_nursery() as nursery:
        origin = await nursery.start(partial(trio.run_process, cmd, env=node_environ(os.environ)))
        try:
            await wait_healthy(f"http://127.0.0.1:{http_port}", origin)
            nursery.start_soon(
                partial(
                    keep_publishing,
                    f"rtmp://127.0.0.1:{rtmp_port}/live/demo",
                    settings=settings,
                    publish_secret=secret,
                )
            )
            await trio.sleep(1)
            print(
                "\nlivecdn demo is up: an origin with the built-in publisher on live/demo\n"
                f"  watch:   ffplay http://127.0.0.1:{http_port}/live/demo.flv\n"
                f"           ffplay rtmp://127.0.0.1:{rtmp_port}/live/demo\n"
                f"  streams: curl http://127.0.0.1:{http_port}/api/streams\n"
                f"  metrics: curl http://127.0.0.1:{http_port}/metrics\n"
                "  publish (signed, 24 h): "
                f"{signed_url(f'rtmp://127.0.0.1:{rtmp_port}/live/yours', secret, time.time())}\n"
                "  stop:    Ctrl-C\n",
                flush=True,
            )
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                if seconds is not None:
                    with trio.move_on_after(seconds + 1):
                        async for _ in signals:
                            break
                else:
                    async for _ in signals:
                        break
        finally:
            log.info("stopping the demo")
            with trio.CancelScope(shield=True):
                await stop_all([("origin", origin)])
            shutil.rmtree(config_dir, ignore_errors=True)
            nursery.cancel_scope.cancel()

"""The balancer's config reload (what SIGHUP does): secrets, admission and policy change while
its table and control connections stay; a key needing a restart refuses the whole reload."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import trio

from balancer.policy import LeastLoad
from common.config import ConfigError
from common.net.conn import open_connection
from common.net.httpclient import fetch
from common.proto import playtoken
from tests.balancer.test_balancer import beat, start

PLAY_SECRET = "play-secret-for-reload-0123"


async def test_reload_changes_secrets_admission_and_policy_keeping_the_edges(nursery) -> None:
    b, base, control = await start(nursery, policy="round_robin", check_interval=60.0)
    ctl = await open_connection("127.0.0.1", control)
    await ctl.send_all(beat("e1", 1000, capacity_viewers=2))
    with trio.fail_after(5):
        while "e1" not in b.edges:
            await trio.sleep(0.02)
    assert (await fetch("GET", f"{base}/live/x.flv")).status == 302

    old = b.config
    with pytest.raises(ConfigError, match="control_port cannot change without a restart"):
        await b.controls.reload(replace(old, control_port=1, retry_after=9))
    assert b.config is old and b.router.config is old

    new = replace(old, play_secret=PLAY_SECRET, retry_after=9, policy="least_load")
    assert await b.controls.reload(new) == ["policy", "retry_after", "play_secret"]
    assert isinstance(b.router.policy, LeastLoad)
    # a redirect needs a signed URL now; the edge, full, makes the next one a 503 after 9 s
    assert (await fetch("GET", f"{base}/live/x.flv")).status == 403
    token = playtoken.play_query(PLAY_SECRET, "live/x", int(time.time()) + 60)
    assert (await fetch("GET", f"{base}/live/x.flv?{token}")).status == 302
    full = await fetch("GET", f"{base}/live/x.flv?{token}")
    assert full.status == 503 and full.headers["retry-after"] == "9"
    # the control connection opened before the reload still reports: room again
    await ctl.send_all(beat("e1", 1000, capacity_viewers=5))
    with trio.fail_after(5):
        while (await fetch("GET", f"{base}/live/x.flv?{token}")).status != 302:
            await trio.sleep(0.05)

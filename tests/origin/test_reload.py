"""An origin's config reload (what SIGHUP does): new publish and play secrets hold for the
next publish and play while the publisher and viewer connected go on; a reload changing a key
that needs a restart applies nothing."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import pytest

from common.config import ConfigError
from common.net.httpclient import fetch
from common.net.rtmpclient import RtmpClient, RtmpClientError
from common.proto import auth, playtoken
from tests.conftest import start_origin
from tests.edge.test_reload import Viewer
from tests.media import publish_synthetic

PUBLISH_SECRET = "publish-secret-reload-0123"
PLAY_SECRET = "play-secret-for-reload-0123"


async def test_reload_applies_secrets_to_new_publishes_and_plays_only(nursery):
    origin, addr = await start_origin(nursery)
    rtmp, http = f"rtmp://127.0.0.1:{addr.rtmp_port}", f"http://127.0.0.1:{addr.http_port}"
    await publish_synthetic(nursery, f"{rtmp}/live/a")
    viewer = await Viewer.open(f"{http}/live/a.flv")
    before = await viewer.video(5)

    old = origin.config
    with pytest.raises(ConfigError, match="hls_window, record_dir cannot change"):
        await origin.controls.reload(
            replace(old, hls_window=9, record_dir="/tmp/x", kick_ban_seconds=5)
        )
    assert origin.config is old

    new = replace(old, publish_secret=PUBLISH_SECRET, play_secret=PLAY_SECRET, hls_apps=["tv"])
    assert await origin.controls.reload(new) == ["play_secret", "publish_secret", "hls_apps"]

    # the publisher and viewer connected go on
    after = await viewer.video(25)
    assert before[-1] <= after[0] and after == sorted(after)
    # a new publish needs a token now, a new play a signed URL
    client = await RtmpClient.connect(f"{rtmp}/live/b")
    with pytest.raises(RtmpClientError, match="NetStream.Publish.BadName|token"):
        await client.publish()
    client.close()
    exp = int(time.time()) + 60
    await publish_synthetic(
        nursery, f"{rtmp}/live/b?{auth.token_query(PUBLISH_SECRET, 'live', 'b', exp)}"
    )
    assert (await fetch("GET", f"{http}/live/b.flv")).status == 403
    signed = await Viewer.open(
        f"{http}/live/b.flv?{playtoken.play_query(PLAY_SECRET, 'live/b', exp)}"
    )
    assert len(await signed.video(3)) == 3
    # HLS only for the apps hls_apps lists now: live/b, opened after the reload, is not packaged
    token = playtoken.play_query(PLAY_SECRET, "live/b", exp)
    assert (await fetch("GET", f"{http}/live/b.m3u8?{token}")).status == 404
    viewer.resp.close()
    signed.resp.close()


async def test_a_reload_that_opens_the_origin_warns_as_at_start_up(nursery, caplog):
    origin, addr = await start_origin(
        nursery, admin_token="admin-token-for-reload-0123", publish_secret=PUBLISH_SECRET
    )
    caplog.clear()
    caplog.set_level(logging.INFO, logger="livecdn")
    # closing surfaces warns of nothing; opening them warns of each, once
    assert await origin.controls.reload(replace(origin.config, kick_ban_seconds=7))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert await origin.controls.reload(replace(origin.config, admin_token="", publish_secret=""))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"no publish_secret: anyone who reaches :{addr.rtmp_port} can publish any name",
        "no admin_token: admin routes (kick/ban, publisher addresses) answer only on loopback",
    ]

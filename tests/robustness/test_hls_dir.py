"""An origin whose `hls_dir` cannot be written (a file, a read-only directory) keeps
running and keeps serving; publishers whose app or name tries to leave `hls_dir` write
nothing outside it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio

from common.net.rtmpclient import RtmpClient, RtmpUrl
from common.proto.rtmp import session as rs
from tests.robustness.conftest import Cluster, http_get, publisher_settings

pytestmark = pytest.mark.slow


def _cluster(hls_dir: str) -> Cluster:
    return Cluster(hls_dir=hls_dir, hls_target_duration=1.0).start()


def _segments_cut(cluster: Cluster) -> int:
    return cluster.node("origin").obj.hls.segments_made


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_unwritable_hls_dir(tmp_path: Path, kind: str) -> None:
    if kind == "file":
        target = tmp_path / "not-a-dir"
        target.write_text("x")
    else:
        if os.geteuid() == 0:
            # root ignores directory permissions: a directory under a file is unwritable for all
            (tmp_path / "blocker").write_text("x")
            target = tmp_path / "blocker" / "hls"
        else:
            target = tmp_path / "ro"
            target.mkdir()
            target.chmod(0o500)
    cluster = _cluster(str(target))
    try:
        since = time.monotonic()
        deadline = time.monotonic() + 8
        while _segments_cut(cluster) < 3 and time.monotonic() < deadline and not cluster.alive():
            time.sleep(0.2)
        cluster.wait_frames(1.0)
        cluster.check(since)
        status, _, body = http_get(cluster.node("origin").http_port, "/live/canary.m3u8")
        assert status == 200 and b"#EXTINF" in body, (status, body[:200])
    finally:
        cluster.stop()


async def _publish_app(port: int, app: str, name: str, seconds: float) -> None:
    """Publish real H.264 under a raw `app` (one a URL cannot carry, e.g. '../x')."""
    from topology.publisher import SyntheticSource

    url = RtmpUrl("127.0.0.1", port, app, name)
    conn = await __import__("common.net.conn", fromlist=["open_connection"]).open_connection(
        "127.0.0.1", port
    )
    client = RtmpClient(conn, rs.ClientSession(app, f"rtmp://127.0.0.1:{port}/{app}"), url)
    source = await trio.to_thread.run_sync(SyntheticSource, publisher_settings())
    try:
        with trio.move_on_after(seconds + 5):
            await client._flush()
            await client._wait_for(rs.Connected)
            await client.publish()
            start = trio.current_time()
            sent = 0
            while sent < seconds * 1000:
                for tag in await trio.to_thread.run_sync(source.next_tags, 0.5):
                    if tag.tag_type != 18:
                        await trio.sleep_until(start + tag.timestamp / 1000)
                    await client.send(tag.tag_type, tag.timestamp, tag.body)
                    sent = tag.timestamp
    except Exception:  # noqa: BLE001, S110 - a refused publish is the right answer
        pass
    finally:
        client.close()
        source.close()


def test_hls_dir_traversal(tmp_path: Path) -> None:
    """Apps and names like '..', '../escape' or with a NUL must not write outside hls_dir
    (or stop the origin)."""
    root = tmp_path / "hls" / "root"
    root.mkdir(parents=True)
    cluster = _cluster(str(root))
    try:
        since = time.monotonic()
        port = cluster.node("origin").rtmp_port

        async def all_of_them() -> None:
            async with trio.open_nursery() as nursery:
                for app, name in [("..", "escape1"), ("../escape2", "x"), ("live", "..x"),
                                  ("a\x00b", "x"), ("live", "n\x00ul")]:  # fmt: skip
                    nursery.start_soon(_publish_app, port, app, name, 3.0)

        trio.run(all_of_them)
        cluster.wait_frames(0.5)
        outside = [
            str(p)
            for p in tmp_path.rglob("*")
            if root not in p.parents and p != root and p.parent != tmp_path
        ]
        outside = [p for p in outside if not p.endswith(("/hls", "/hls/root"))]
        assert not outside, f"HLS files written outside hls_dir: {outside}"
        cluster.check(since)
    finally:
        cluster.stop()

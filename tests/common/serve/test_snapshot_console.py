"""The console shows each stream's thumbnail (its node's snapshot) in a real browser, at an
origin and at an edge, refreshed every few seconds, with no errors in the page."""

from __future__ import annotations

import pytest

from tests.browser import needs_chromium, open_page
from tests.conftest import ffmpeg_publish, needs_ffmpeg, start_edge, start_origin, wait_for_stream

pytestmark = [pytest.mark.slow, needs_ffmpeg, needs_chromium]

THUMB = "document.querySelector('#streams img.thumb')"


async def test_the_console_shows_fresh_thumbnails(nursery, clip, tmp_path) -> None:
    origin, o_addr = await start_origin(nursery)
    await ffmpeg_publish(nursery, clip, f"rtmp://127.0.0.1:{o_addr.rtmp_port}/live/thumb")
    await wait_for_stream(origin, "live", "thumb")
    _, e_addr = await start_edge(nursery, [f"rtmp://127.0.0.1:{o_addr.rtmp_port}"])
    async with open_page(tmp_path) as page:
        await page.navigate(f"http://127.0.0.1:{o_addr.http_port}/")
        await page.wait_for(f"{THUMB} && {THUMB}.complete && {THUMB}.naturalWidth > 0")
        assert await page.evaluate(f"{THUMB}.naturalWidth") == 160
        assert await page.evaluate(f"{THUMB}.naturalHeight") == 120
        first = await page.evaluate(f"{THUMB}.src")
        assert "/live/thumb.jpg?w=160&t=" in first
        await page.wait_for(f"{THUMB}.src !== {first!r} && {THUMB}.naturalWidth > 0", timeout=15)
        assert origin.snapshots.stats.served["jpeg"] >= 2
        await page.screenshot(tmp_path / "console-thumbnail.png")
        # at an edge: the stream is listed (with a thumbnail) while the edge holds it
        edge_base = f"http://127.0.0.1:{e_addr.http_port}"
        await page.play(edge_base, "live/thumb", "flv")
        await page.wait_for(f"{THUMB} && {THUMB}.naturalWidth === 160")
        assert "pull=0" in await page.evaluate(f"{THUMB}.src")
        assert page.errors == []

"""The console of a topology started as `topology up` starts it (topology/examples/three-edge.toml
as processes, with the launcher's control API): in a real browser (chromium) the balancer's
page, opened at the URL the table prints, draws the nodes by tier with their links, plays the
built-in publisher's 640x360 stream through the balancer over HTTP-FLV, WebSocket-FLV and HLS,
and is where the class exercise is run: killing the edge with the page's viewer from its button
shows it out of rotation within 3 s (the balancer sees its control connection close), and the
viewer moves to another edge;
its other buttons drain and undrain an edge, set, cut and restore a link (the graph follows),
start a load profile whose players show in the load charts, and restart the killed edge."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.browser import needs_chromium, open_page
from tests.conftest import needs_ffmpeg
from tests.topologies import start_topology
from topology.output import url_table

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).parents[2] / "topology" / "examples" / "three-edge.toml"
EDGES = ("edge1", "edge2", "edge3")
EXTRA = """
[[link]]
edge = "edge3"
parent = "origin"
delay_ms = 80

[[load]]
players = 4
duration = "20s"
ramp = "1s"
start_at = "1h"
"""


def three_edge() -> str:
    """The example on free ports, with an emulated 80 ms link from the origin to edge3 and a
    small load profile (started from the page)."""
    return re.sub(r"(?m)^(\w+_port) = \d+", r"\1 = 0", EXAMPLE.read_text()) + EXTRA


def cell(edge: str, column: int) -> str:
    """JavaScript: the text of `edge`'s cell in the edges table (2: state, 3: viewers the balancer
    heard of, 7: viewers by protocol and 9: HLS cache hits or streams packaged, from the edge's own
    feed)."""
    return f"document.querySelector('#edges tr[data-edge=\"{edge}\"] td:nth-child({column})')"


def button(edge: str, action: str) -> str:
    """JavaScript: `edge`'s button for `action` (kill, restart, drain, undrain)."""
    return (
        f'document.querySelector(\'#edges tr[data-edge="{edge}"] button[data-action="{action}"]\')'
    )


@needs_ffmpeg
@needs_chromium
async def test_the_console_shows_the_topology_plays_and_kills_an_edge(nursery, tmp_path) -> None:
    dep = await start_topology(nursery, tmp_path, three_edge())
    (row,) = [r for r in url_table(dep).splitlines() if r.lstrip().startswith("console")]
    url = row.split()[-1]
    assert "#launcher=http://127.0.0.1:" in url and "&token=" in url, row
    base, fragment = url.split("/?")[0], url.split("#", 1)[1]
    async with open_page(tmp_path) as page:
        # the three at once (the page's HTTP-FLV viewer stays; the others' windows are left)
        played = await page.play_each(base, "live/demo", ["ws", "hls", "flv"], fragment=fragment)
        for via, (width, status) in played.items():
            assert width == 640, (via, status)
        for node in ("balancer", "origin", *EDGES):
            await page.wait_for(
                f"document.querySelector('#graph g[data-node=\"{node}\"]') !== null"
            )
        assert await page.wait_for(  # the launcher's links, with their emulation
            "[...document.querySelectorAll('#graph text.link-label')]"
            ".map((t) => t.textContent).includes('80 ms')"
        )
        for edge in EDGES:
            await page.wait_for(f"{cell(edge, 2)}.textContent === 'up'")
        # the origin's feed gives the stream's media
        await page.wait_for(
            "document.querySelector('#streams td:nth-child(5)').textContent.includes('640x360')"
        )
        # the page's own HTTP-FLV viewer, on the one edge whose feed counts it
        by_protocol = f"[{', '.join(cell(e, 7) for e in EDGES)}].map((td) => td.textContent)"
        await page.wait_for(f"{by_protocol}.filter((t) => t.includes('flv 1')).length === 1")
        # the HLS play made an edge package the stream (its feed says so)
        hls = f"[{', '.join(cell(e, 9) for e in EDGES)}].map((td) => td.textContent)"
        await page.wait_for(f"{hls}.some((t) => t === 'packaged (1)')")
        texts = await page.evaluate(by_protocol)
        (watched,) = [e for e, text in zip(EDGES, texts, strict=True) if "flv 1" in text]
        others = [e for e in EDGES if e != watched]
        await page.wait_for(f"{cell(watched, 3)}.textContent !== '0'")  # and its heartbeats
        assert page.errors == []

        # the class exercise, from the page: kill the edge that has the viewer
        await page.evaluate(f"{button(watched, 'kill')}.click()")
        # the balancer sees the killed edge's control connection close: out of rotation in
        # the view within 3 s, not after heartbeat_timeout
        await page.wait_for(
            f"{cell(watched, 2)}.textContent.startsWith('out of rotation')", timeout=3
        )
        status = "document.getElementById('action-status').textContent"
        assert await page.wait_for(f"{status} === 'kill {watched}: done'", timeout=5)
        await page.wait_for(  # the player, routed anew, is counted on another edge
            f"[{', '.join(cell(e, 7) for e in others)}].some((td) => td.textContent.includes('flv 1'))"
        )
        assert await page.playback(timeout=20) == 640
        assert await page.evaluate(f"{button(watched, 'kill')}.disabled")  # it is stopped

        # drain and undrain another edge, from its buttons
        await page.evaluate(f"{button(others[0], 'drain')}.click()")
        await page.wait_for(f"{cell(others[0], 2)}.textContent === 'draining'", timeout=5)
        await page.evaluate(f"{button(others[0], 'undrain')}.click()")
        await page.wait_for(f"{cell(others[0], 2)}.textContent === 'up'", timeout=5)

        # the link's form: nothing filled in is said in the page; a delay, a cut, a restore
        link = "document.querySelector('#links tr')"
        labels = (
            "[...document.querySelectorAll('#graph text.link-label')].map((t) => t.textContent)"
        )
        await page.evaluate(f"{link}.querySelector('button[data-action=\"set\"]').click()")
        assert "fill in a delay" in await page.evaluate(status)
        await page.evaluate(
            f"{link}.querySelector('input[name=\"delay_ms\"]').value = '120';"
            f"{link}.querySelector('button[data-action=\"set\"]').click()"
        )
        await page.wait_for(f"{labels}.includes('120 ms')", timeout=5)
        await page.evaluate(f"{link}.querySelector('button[data-action=\"cut\"]').click()")
        await page.wait_for(f"{labels}.includes('cut (120 ms)')", timeout=5)
        assert await page.evaluate("document.querySelector('#graph line.cut') !== null")
        await page.evaluate(f"{link}.querySelector('button[data-action=\"restore\"]').click()")
        await page.wait_for(f"{labels}.includes('80 ms')", timeout=5)  # the file's settings

        # a load run started from the page: its players' samples in the load charts
        await page.evaluate(
            'document.querySelector(\'#loads tr[data-key="0"] button[data-action="start"]\')'
            ".click()"
        )
        await page.wait_for(f"{status} === 'load 0: done'", timeout=5)
        playing = "document.querySelector('#load-charts .legend span')?.textContent"
        await page.wait_for(f"/^load 0 [1-9]/.test({playing})", timeout=20)
        line = "document.querySelector('#load-charts path').getAttribute('d')"
        await page.wait_for(f"{line}.split('L').length > 4", timeout=20)  # a few seconds of it
        await page.screenshot(tmp_path / "console.png", full=True)

        await page.evaluate(f"{button(watched, 'restart')}.click()")  # and back it comes
        await page.wait_for(f"{cell(watched, 2)}.textContent === 'up'", timeout=20)
        assert await page.evaluate(f"{button(watched, 'restart')}.disabled")
        # every action went through with nothing in the console but what the killed edge's
        # cut connections say (the player's stream and the page's feed of that edge)
        killed = f"127.0.0.1:{dep.nodes[watched].http_port}/"
        unexpected = [e for e in page.errors if killed not in e and "Early-EOF" not in e]
        assert unexpected == [], unexpected

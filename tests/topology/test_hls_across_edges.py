"""One HLS viewer across edges, in a real browser: hls.js (the vendored build, in headless
chromium) plays http://BALANCER/live/NAME.m3u8 while its playlist reloads land on three
packaging edges in turn (round_robin), and plays on, with consecutive segment numbers and no
stall, because every edge cuts and numbers the segments as the origin does; and plays on
when the edge it was using is killed.

hls.js resolves the balancer's 302 once: a media playlist given directly becomes its single
level with the redirected URL, so every reload (and every segment) would go to that one
edge. So the page asks hls.js (`xhrSetup`) to reload the playlist from the balancer's URL;
the 302 each reload gets sends it to the next edge, and the segments that playlist lists
(relative URIs) come from that edge too."""

from __future__ import annotations

import json

import pytest
import trio

from balancer.server import Balancer
from common.config import BalancerConfig, EdgeConfig, build
from common.net.httpclient import fetch
from common.serve.console import static_files
from edge.server import Edge
from tests.browser import Page, needs_chromium, open_page
from tests.conftest import needs_ffmpeg, start_killable
from tests.edge.test_edge_hls_package import published

pytestmark = [pytest.mark.slow, needs_ffmpeg, needs_chromium]

EDGES = ("edge-a", "edge-b", "edge-c")
PLAYED = 8.0  # seconds of media the viewer must see advance

PLAYER = """window.play = async (hlsjs, source, rotate) => {
  if (!window.Hls) {
    const script = document.createElement("script");
    script.src = hlsjs;
    await new Promise((loaded, failed) => {
      script.onload = loaded;
      script.onerror = failed;
      document.head.append(script);
    });
  }
  const report = { playlists: [], fragments: [], errors: [], fatal: null, waiting: [], started: null };
  const video = document.createElement("video");
  Object.assign(video, { muted: true, autoplay: true, width: 320, height: 240 });
  document.body.append(video);
  const hls = new Hls({
    liveSyncDurationCount: 2,
    // `rotate`: every playlist reload asks the balancer's URL again
    xhrSetup: (xhr, url) => {
      if (rotate && new URL(url).pathname.endsWith(".m3u8")) xhr.open("GET", source, true);
    },
  });
  const host = (url) => new URL(url).host;
  hls.on(Hls.Events.LEVEL_LOADED, (_, d) => {
    report.playlists.push(host(d.networkDetails.responseURL));
  });
  hls.on(Hls.Events.FRAG_LOADED, (_, d) => report.fragments.push([d.frag.sn, host(d.frag.url)]));
  hls.on(Hls.Events.ERROR, (_, d) => {
    report.errors.push(d.details);
    if (d.fatal) report.fatal = `${d.type} ${d.details} ${d.reason ?? ""}`;
  });
  video.addEventListener("playing", () => { report.started ??= video.currentTime; });
  video.addEventListener("waiting", () => {
    if (report.started !== null) report.waiting.push(video.currentTime);
  });
  hls.loadSource(source);
  hls.attachMedia(video);
  return (window.players ??= []).push({ video, report }) - 1;
};
"""


def hlsjs_path() -> str:
    """The vendored hls.js under the nodes' /static/ route."""
    (path,) = [p for p in static_files() if p.startswith("/static/vendor/hls.")]
    return path


async def deployment(
    nursery, clip, name: str
) -> tuple[str, dict[str, tuple[str, trio.CancelScope]]]:
    """A round_robin balancer, an origin with ffmpeg publishing live/`name` (1 s segments)
    and three edges packaging HLS from rtmp:// pulls, reporting to the balancer: the
    balancer's URL once all edges are in rotation, and each edge's host:port and the scope
    that kills it."""
    values = {"host": "127.0.0.1", "http_port": 0, "control_port": 0, "check_interval": 0.5,
              "policy": "round_robin"}  # fmt: skip
    balancer = Balancer(build(BalancerConfig, values))
    http, control = await nursery.start(balancer.run)
    addr = await published(nursery, clip, name)
    edges = {}
    for edge_id in EDGES:
        values = {"host": "127.0.0.1", "rtmp_port": 0, "http_port": 0, "node_id": edge_id,
                  "balancer": f"127.0.0.1:{control}", "hls_mode": "package",
                  "hls_target_duration": 1.0, "parents": [f"rtmp://127.0.0.1:{addr.rtmp_port}"]}  # fmt: skip
        eaddr, scope = await start_killable(nursery, Edge(build(EdgeConfig, values)))
        edges[edge_id] = (f"127.0.0.1:{eaddr.http_port}", scope)
    base = f"http://127.0.0.1:{http}"
    with trio.fail_after(15):
        while True:
            listed = json.loads((await fetch("GET", f"{base}/api/edges")).body)["edges"]
            if len(listed) == len(EDGES) and all(e["in_rotation"] for e in listed):
                break
            await trio.sleep(0.2)
    await packaging_alike([f"http://{host}/live/{name}.m3u8" for host, _ in edges.values()])
    return base, edges


async def packaging_alike(urls: list[str], segments: int = 3) -> None:
    """Start every edge packaging, and wait until they all list the same `segments` or more
    (a viewer's reloads then find each edge warm, as they would with other viewers on it; an
    edge packaging since a moment ago lists only the segments from its join on, so a reload
    landing there may skip one, and hls.js stalls)."""
    with trio.fail_after(20):
        while True:
            texts = {(await fetch("GET", url)).body for url in urls}
            if len(texts) == 1 and texts.pop().count(b"#EXTINF") >= segments:
                return
            await trio.sleep(0.2)


async def open_players(page: Page, base: str, name: str, rotations: list[bool]) -> None:
    """Open a page of the balancer (/healthz: a page of a loopback origin may fetch from
    loopback, a data: URL's may not) and play `base`/live/`name`.m3u8 in it with the
    vendored hls.js, in one `<video>` per entry of `rotations` (True: each playlist reload
    asks the balancer again); wait until every video plays."""
    await page.navigate(f"{base}/healthz")
    await page.evaluate(PLAYER)
    for rotate in rotations:
        args = [base + hlsjs_path(), f"{base}/live/{name}.m3u8", rotate]
        await page.evaluate(f"play(...{json.dumps(args)})")
    await page.wait_for(
        "players.every(p => p.report.fatal !== null || p.report.started !== null)", timeout=30
    )


async def played_on(page: Page, seconds: float, timeout: float = 30) -> list[dict]:
    """Wait until every video's time has advanced `seconds` from now (or it failed); the
    players' reports."""
    start = await page.evaluate("players.map(p => p.video.currentTime)")
    await page.wait_for(
        f"players.every((p, i) => p.report.fatal !== null || "
        f"p.video.currentTime >= {json.dumps(start)}[i] + {seconds})",
        timeout=timeout,
    )
    return await page.evaluate("players.map(p => p.report)")


def consecutive(fragments: list[list]) -> None:
    """The segment numbers hls.js loaded follow each other, whichever edge served them."""
    numbers = [f[0] for f in fragments]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), fragments


async def test_hlsjs_plays_on_while_its_playlist_reloads_move_between_edges(
    nursery, clip, tmp_path
) -> None:
    base, edges = await deployment(nursery, clip, "across")
    async with open_page(tmp_path) as page:
        await open_players(page, base, "across", [True, False])
        moved, stayed = await played_on(page, PLAYED)
        errors = [e for e in page.errors if "/favicon.ico" not in e]  # /healthz has none
        assert errors == [], errors
    assert moved["fatal"] is None, moved
    hosts = {host for host, _ in edges.values()}
    assert set(moved["playlists"]) == hosts, moved["playlists"]  # round_robin: all three
    served = {host for _, host in moved["fragments"]}
    assert len(served) >= 2 and served <= hosts, moved["fragments"]
    consecutive(moved["fragments"])
    assert moved["waiting"] == [], f"stalls at {moved['waiting']}"
    assert moved["errors"] == [], moved["errors"]
    # hls.js alone keeps the edge of its first 302 (the reason for `rotate`)
    assert stayed["fatal"] is None, stayed
    assert len(set(stayed["playlists"])) == 1, stayed["playlists"]
    assert {host for _, host in stayed["fragments"]} == set(stayed["playlists"])


async def test_hlsjs_plays_on_when_the_edge_it_used_is_killed(nursery, clip, tmp_path) -> None:
    base, edges = await deployment(nursery, clip, "killed")
    async with open_page(tmp_path) as page:
        await open_players(page, base, "killed", [True])
        (before,) = await played_on(page, 2.0)
        _, last = before["fragments"][-1]
        (victim,) = [edge_id for edge_id, (host, _) in edges.items() if host == last]
        edges[victim][1].cancel()
        (report,) = await played_on(page, PLAYED)
    assert report["fatal"] is None, report
    after = report["fragments"][len(before["fragments"]) :]
    assert len(after) >= PLAYED - 1, report["fragments"]
    consecutive(report["fragments"])
    # the balancer took the edge out at once (one load may have been on its way already)
    assert last not in {host for _, host in after[1:]}, after
    reloads = report["playlists"][len(before["playlists"]) :]
    assert last not in reloads[1:] and len(set(reloads)) == 2, reloads
    assert report["waiting"] == [], f"stalls at {report['waiting']}"

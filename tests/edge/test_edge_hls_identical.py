"""The same HLS at every node: two edges that joined a live stream at different times (each
packaging it from its own rtmp:// pull) and the origin publish byte-identical playlists and
segments, so a viewer moved from one edge to the other continues its playlist, and what it
plays decodes with no continuity or timestamp warning."""

from __future__ import annotations

import subprocess

import pytest
import trio

from common.net.httpclient import fetch
from tests.conftest import needs_ffmpeg
from tests.edge.test_edge_hls_package import fetch_playlist, packaging_edge, published
from tests.hls_validator import parse

pytestmark = [pytest.mark.slow, needs_ffmpeg]

WARNINGS = ("continuity", "corrupt", "discontinuity", "non-monotonous", "non monotonically")


async def same_playlist(urls: list[str], seconds: float = 20.0) -> str:
    """The playlist text once every URL answers the same one, listing a full window (the
    nodes see each keyframe a few milliseconds apart, so it may take a reload or two)."""
    texts: list[str] = []
    try:
        with trio.fail_after(seconds):
            while True:
                texts = [await fetch_playlist(url) for url in urls]
                if len(set(texts)) == 1 and len(parse(texts[0]).segments) == 6:
                    return texts[0]
                await trio.sleep(0.1)
    except trio.TooSlowError:
        raise AssertionError("the nodes' playlists differ:\n" + "\n".join(texts)) from None


async def segment(base: str, uri: str) -> bytes:
    reply = await fetch("GET", f"{base}/{uri}")
    assert reply.status == 200, (base, uri, reply.status)
    return reply.body


async def test_edges_that_joined_at_different_times_serve_identical_hls(nursery, clip):
    addr = await published(nursery, clip, "same")
    origin = f"http://127.0.0.1:{addr.http_port}/live"
    _, a = await packaging_edge(nursery, addr)
    edge_a = f"http://127.0.0.1:{a.http_port}/live"
    await fetch_playlist(f"{edge_a}/same.m3u8")  # edge A pulls and packages from now
    await trio.sleep(2.3)  # edge B joins a couple of keyframes later
    _, b = await packaging_edge(nursery, addr)
    edge_b = f"http://127.0.0.1:{b.http_port}/live"
    text = await same_playlist([f"{u}/same.m3u8" for u in (origin, edge_a, edge_b)])
    playlist = parse(text)
    assert not any(disc for *_, disc in playlist.segments)
    for _, _, uri, _ in playlist.segments[-3:]:
        bodies = {await segment(base, uri) for base in (origin, edge_a, edge_b)}
        assert len(bodies) == 1, f"{uri} differs between the nodes"

    # a viewer plays from edge A, then (moved) from edge B: the numbers continue
    played: list[bytes] = []
    last = playlist.segments[-1][0]
    for base in (edge_a, edge_b, edge_a, edge_b):
        with trio.fail_after(15):
            while True:
                listed = parse(await fetch_playlist(f"{base}/same.m3u8"))
                later = [s for s in listed.segments if s[0] > last]
                if later:
                    break
                await trio.sleep(0.2)
        seq, _, uri, disc = later[0]
        assert seq == last + 1 and not disc, f"{base} continues at {seq} after {last}"
        played.append(await segment(base, uri))
        last = seq
    data = b"".join(played)
    probe = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            ["ffmpeg", "-hide_banner", "-v", "warning", "-i", "-", "-f", "null", "-"],
            input=data,
            capture_output=True,
            timeout=60,
        )
    )
    assert probe.returncode == 0, probe.stderr.decode()
    err = probe.stderr.decode().lower()
    assert not any(w in err for w in WARNINGS), err

"""Hostile onMetaData from a publisher (NaN, inf, huge strings, deep nesting, odd keys,
CR/LF, wrong types, truncated or lying AMF0), carried to both edges by viewers: every node's
/api/streams still answers valid JSON and every node lives."""

from __future__ import annotations

import itertools
import time

import pytest
import trio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from common.net.conn import ConnClosed
from common.net.httpclient import fetch, open_request
from common.net.rtmpclient import RtmpClient, RtmpClientError
from common.proto.errors import ProtocolError
from tests.media import aac_frame, aac_header, avc_header, interframe, keyframe
from tests.robustness.conftest import Cluster, strict_json
from tests.robustness.strategies import hostile_metadata, raw_amf

_names = itertools.count()


async def _publish_and_watch(
    cluster: Cluster, body: bytes, prefix: bool, video: bool = True
) -> list[str]:
    """Publish live/metaN with `body` as onMetaData (with video, or audio only so that
    nothing but the metadata describes the picture), play it on both edges, read every
    node's stream API; returns the problems seen."""
    origin = cluster.node("origin")
    name = f"meta{next(_names)}"
    problems: list[str] = []
    client = await RtmpClient.connect(f"rtmp://127.0.0.1:{origin.rtmp_port}/live/{name}")
    try:
        await client.publish()
        payload = (raw_amf("@setDataFrame") if prefix else b"") + raw_amf("onMetaData") + body
        client.session.send_message(18, client.stream_id, 0, payload)
        if video:
            await client.send(9, 0, avc_header())
        await client.send(8, 0, aac_header())

        async def media() -> None:
            for n in range(24):
                if video:
                    await client.send(9, n * 40, keyframe() if n % 10 == 0 else interframe())
                await client.send(8, n * 40, aac_frame())
                await trio.sleep(0.02)

        async def watch(port: int) -> None:
            try:
                resp = await open_request("GET", f"http://127.0.0.1:{port}/live/{name}.flv")
            except Exception as exc:  # noqa: BLE001
                problems.append(f"play on :{port}: {exc!r}")
                return
            try:
                with trio.move_on_after(0.6):
                    async for _ in resp.chunks():
                        pass
            except Exception:  # noqa: BLE001, S110 - the stream may end; that is fine
                pass
            finally:
                resp.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(media)
            await trio.sleep(0.1)
            for edge in ("edge-http", "edge-rtmp"):
                nursery.start_soon(watch, cluster.node(edge).http_port)
        await trio.sleep(0.3)
        for node in cluster.nodes.values():
            paths = ["/api/streams"]
            if node.name == "origin":
                paths.append(f"/api/streams/live/{name}")
            for path in paths:
                try:
                    reply = await fetch("GET", f"http://127.0.0.1:{node.http_port}{path}")
                    status, data = reply.status, reply.body
                    if status != 200:
                        problems.append(f"{node.name} {path}: HTTP {status} {data[:200]!r}")
                    else:
                        strict_json(data)
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"{node.name} {path}: {exc!r}")
    except* (OSError, ConnClosed, RtmpClientError, ProtocolError):
        pass  # the origin may close a publisher whose metadata it cannot read: that is fine
    finally:
        client.close()
    return problems


FIXED = [
    raw_amf({"width": float("nan"), "height": float("inf"), "framerate": float("nan")}),
    raw_amf({"videocodecid": 7.0, "width": -float("inf"), "height": 1e308, "fps": float("nan")}),
    raw_amf({"videocodecid": 7.0, "framerate": "fast", "width": "wide", "height": [1]}),
    raw_amf({"videocodecid": "avc1", "audiocodecid": {"x": 1}, "videodatarate": float("nan")}),
    raw_amf({"encoder": "e" * 65535, "title": "a\r\nb\r\nContent-Length: 0\r\n\r\n"}),
    raw_amf({"\r\n": "x", "": 1.0, "0": 2.0, "é": "é"}),
    raw_amf("x" * 200000),
    raw_amf([float("nan")] * 1000),
    b"\x03" + b"\x00\x01a\x03" * 63 + b"\x00\x00\x09" * 64,
    b"\x03" + b"\x00\x01a\x03" * 2000 + b"\x00\x00\x09" * 2001,
    b"\x08\xff\xff\xff\xff\x00\x00\x09",
    b"\x0a\xff\xff\xff\xff",
    b"\x0c\xff\xff\xff\xffabc",
    b"\x03\x00\x05width\x00",
]


async def _publish_each(cluster: Cluster, bodies: list[tuple[int, bytes]]) -> list[str]:
    """`_publish_and_watch` of each numbered body at once, audio only and with video (odd
    numbers without the @setDataFrame prefix); the problems, each with its body's number."""
    problems: list[str] = []

    async def one(i: int, body: bytes, video: bool) -> None:
        found = await _publish_and_watch(cluster, body, i % 2 == 0, video)
        problems.extend(f"metadata #{i} (video={video}): {p}" for p in found)

    async with trio.open_nursery() as nursery:
        for i, body in bodies:
            for video in (False, True):
                nursery.start_soon(one, i, body, video)
    return problems


def test_fixed_hostile_metadata(cluster: Cluster) -> None:
    """The classic bad values, each published live and pulled by both edges (seven bodies
    at a time: each stream mostly waits)."""
    since = time.monotonic()
    problems = []
    numbered = list(enumerate(FIXED))
    for group in (numbered[:7], numbered[7:]):
        problems += trio.run(_publish_each, cluster, group)
        dead = cluster.alive()
        assert not dead, (
            f"{dead} stopped after one of metadata #{group[0][0]}-#{group[-1][0]}:\n"
            + "\n".join(str(cluster.node(n).error) for n in dead)
        )
    cluster.check(since)
    assert not problems, "\n".join(problems[:20])


@pytest.mark.slow
def test_generated_hostile_metadata(cluster: Cluster) -> None:
    since = time.monotonic()
    problems: list[str] = []

    @settings(max_examples=12, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(body=hostile_metadata, video=st.booleans())
    def attack(body: bytes, video: bool) -> None:
        problems.extend(trio.run(_publish_and_watch, cluster, body, True, video))
        dead = cluster.alive()
        assert not dead, f"{dead} stopped after metadata {body[:80]!r}"

    attack()
    cluster.check(since)
    assert not problems, "\n".join(problems[:20])

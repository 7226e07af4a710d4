"""Viewer and API paths parsed in one place (common/proto/paths.py)."""

from __future__ import annotations

import pytest

from common.proto.paths import (
    EdgeAction,
    EdgeRequest,
    Media,
    api_edge_action,
    api_stream_key,
    hls_path,
    media_of,
    play_key,
)
from common.proto.streamkey import StreamKey, StreamKeyError


@pytest.mark.parametrize(
    ("path", "media"),
    [
        ("/live/a.flv", Media.FLV),
        ("/live/a.m3u8", Media.PLAYLIST),
        ("/live/a-18c2f-3.ts", Media.SEGMENT),
        ("/api/streams", None),
        ("/live/a.mp4", None),
    ],
)
def test_media_of(path: str, media: Media | None) -> None:
    assert media_of(path) is media


def test_play_keys() -> None:
    assert play_key("/live/cam.flv", Media.FLV) == StreamKey("live", "cam")
    assert play_key("/live/cam.m3u8", Media.PLAYLIST) == StreamKey("live", "cam")
    for bad, media in [
        ("/live/cam.m3u8", Media.FLV),
        ("live/cam.flv", Media.FLV),
        ("/a/b/c.flv", Media.FLV),
        ("/live/a b.flv", Media.FLV),
    ]:
        with pytest.raises(StreamKeyError):
            play_key(bad, media)


def test_hls_paths() -> None:
    assert hls_path("/live/cam.m3u8") == ("live", "cam", "cam.m3u8")
    assert hls_path("/live/my-cam-18c2f-12.ts") == ("live", "my-cam", "my-cam-18c2f-12.ts")
    assert hls_path("/live/cam.flv") is None and hls_path("/a/b/c.m3u8") is None


def test_api_paths() -> None:
    assert api_stream_key("/api/streams/live/cam") == StreamKey("live", "cam")
    assert api_stream_key("/api/streams") is None and api_stream_key("/live/cam.flv") is None
    with pytest.raises(StreamKeyError):
        api_stream_key("/api/streams/nokey")
    assert api_edge_action("/api/edges/e1/drain") == EdgeRequest("e1", EdgeAction.DRAIN)
    assert api_edge_action("/api/edges/e1/undrain") == EdgeRequest("e1", EdgeAction.UNDRAIN)
    assert api_edge_action("/api/edges/e1") == EdgeRequest("e1", None)
    assert api_edge_action("/api/edges/e1/reboot") == EdgeRequest("e1", None)
    assert api_edge_action("/api/edgesX/e1/drain") is None

"""What the edge holds of each stream (its upstream, HLS packaged or cached, and viewers),
for the streams API and the heartbeat."""

from __future__ import annotations

import trio

from common.serve.hlsviewers import HlsViewers
from edge.hls import HlsObjects, HlsProxy
from edge.hlspackage import HlsPackaged
from edge.pull import PullManager


class EdgeStreams:
    """The edge's streams, described from the pull manager and the HLS proxy."""

    def __init__(self, pull: PullManager, hls: HlsProxy, hls_viewers: HlsViewers) -> None:
        self.pull = pull
        self.hls = hls
        self.hls_viewers = hls_viewers

    def describe(self) -> dict[tuple[str, str], dict]:
        """JSON descriptions by (app, name): the upstream, the HLS packaged (`hls.mode`
        "package") or cached ("cache"), the viewers."""
        now = trio.current_time()
        out: dict[tuple[str, str], dict] = {}
        for key, up in self.pull.upstreams.items():
            out[key] = up.info()
        hls: dict[tuple[str, str], HlsObjects] | dict[tuple[str, str], HlsPackaged]
        hls = self.hls.packagers.describe() if self.hls.packagers else self.hls.objects()
        for key, what in hls.items():
            info = out.setdefault(
                key, {"app": key[0], "name": key[1], "viewers": {"total": 0}, "upstream": None}
            )
            info["hls"] = what
        for key, info in out.items():
            n = self.hls_viewers.count(key, now)
            info["viewers"]["hls"] = n
            info["viewers"]["total"] += n
        return out

    def held(self) -> dict[tuple[str, str], int]:
        """Viewers of the streams this edge really holds (a live upstream, or HLS objects
        the parent served): asking for streams that do not exist never grows it."""
        now = trio.current_time()
        upstreams = self.pull.upstreams
        out: dict[tuple[str, str], int] = {}
        for key in self.pull.held() | self.hls.objects().keys():
            up = upstreams.get(key)
            out[key] = (up.viewers if up is not None else 0) + self.hls_viewers.count(key, now)
        return out

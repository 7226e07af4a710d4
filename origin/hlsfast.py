"""The origin's HLS fast lane: a plain GET or HEAD of a playlist or segment its HLS store holds
now is answered with the store's shared response (head built once, a segment's body sent with
sendfile) before a Request is built, and on an idle keep-alive connection by the node's
keep-alive hub without waking the connection's task (`common.serve.node` asks it only while
no play check is configured). Anything else takes the full route."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.net.http import SharedResponse
from common.proto.paths import HlsTarget, hls_target
from common.proto.streamkey import StreamKeyError
from common.serve.hlsviewers import client_key

if TYPE_CHECKING:
    from origin.server import Origin

MAX_TARGETS = 4096
"""Request targets whose parse is kept (they come from viewers: emptied when full)."""


class OriginHlsFast:
    """`Origin.fast_http`: the node's fast lane for the origin's own HLS."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self._targets: dict[str, HlsTarget] = {}

    def __call__(
        self, method: str, target: str, headers: dict[str, str], peer: str
    ) -> SharedResponse | None:
        """The store's shared response to `method` `target`, or None: a query, an escape,
        another path, or an object not ready now (`HlsStore.respond` answers those); on a
        worker of a node, a stream this worker does not own (the route asks its owner)."""
        if (method != "GET" and method != "HEAD") or "?" in target or "%" in target:
            return None
        parsed = self._targets.get(target)
        if parsed is None:
            if not target.endswith((".m3u8", ".ts")) or target.startswith(("//", "/static/")):
                return None
            try:
                parsed = hls_target(target)
            except StreamKeyError:
                return None
            if len(self._targets) >= MAX_TARGETS:
                self._targets.clear()
            self._targets[target] = parsed
        origin = self.origin
        if origin.workers is not None and (parsed.key.app, parsed.key.name) not in origin.live:
            return None
        return origin.hls.shared(parsed, client_key(peer, headers.get("user-agent", "")))

"""What the servers say during a load run: viewers per origin and edge, the edges' upstreams."""

from __future__ import annotations

import json

import trio

from common.net.httpclient import HttpClientError, fetch


async def server_counts(dep) -> dict:
    """Viewers each origin and edge reports now, and the edges' upstreams (back-to-source)."""
    out: dict[str, dict] = {}
    for name, node in dep.nodes.items():
        if node.kind not in ("origin", "edge"):
            continue
        try:
            body = (await fetch("GET", f"{dep.url(name, 'http')}/api/streams", timeout=3)).body
        except (OSError, HttpClientError, trio.TooSlowError):
            out[name] = {"down": True}
            continue
        streams = json.loads(body)["streams"]
        info = {"viewers": sum(s["viewers"]["total"] for s in streams)}
        if node.kind == "edge":
            info["upstreams"] = sum(1 for s in streams if s.get("upstream"))
        out[name] = info
    return out

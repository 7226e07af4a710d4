"""The pages a node serves to browsers: its console at `/`, the static files under
`/static/` (read once from the package, never from a path a client names), and the live
feed `/api/events` (Server-Sent Events, one JSON snapshot a second)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from importlib import resources

import trio

from common.net.conn import Conn, ConnClosed
from common.net.http import Request, Response, StreamingResponse, chunk
from common.proto.peers import peer_host
from common.serve.metrics import NodeMetrics

log = logging.getLogger("livecdn.console")

EVENTS_API = "/api/events"
STATIC = "/static/"
MAX_EVENT_CLIENTS = 32
MAX_EVENT_CLIENTS_PER_HOST = 8
"""Browsers following a node's live feed at once (each is an open connection)."""

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}
IMMUTABLE = "public, max-age=31536000, immutable"
"""Vendored files carry their version in their name, so a name never changes content."""
REVALIDATE = "no-cache"
PAGE = "index.html"
NO_STORE = "no-store"
"""The page itself: a browser keeps no copy, so it also keeps no page that was left frozen in
its back/forward cache with its players' connections open."""
PAGE_POLICY = (
    "default-src 'self'; connect-src 'self' http: https: ws: wss:; media-src 'self' blob:; "
    "worker-src 'self' blob:; img-src 'self' data: http: https:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
"""The page runs only its own scripts; the players may fetch media from any node (the
balancer sends them to its edges) and play it from blob: URLs (MSE, the players' workers);
the balancer's page shows stream thumbnails from the nodes that hold the streams."""


def _load_static() -> dict[str, tuple[bytes, str, str]]:
    """Every file under static/ by its URL path: (body, content type, cache-control)."""
    files: dict[str, tuple[bytes, str, str]] = {}
    root = resources.files("common.serve") / "static"
    pending = [(root, STATIC)]
    while pending:
        folder, prefix = pending.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                pending.append((entry, f"{prefix}{entry.name}/"))
                continue
            ext = "." + entry.name.rsplit(".", 1)[-1]
            if ext in TYPES:
                cache = IMMUTABLE if prefix.endswith("/vendor/") else REVALIDATE
                if entry.name == PAGE:
                    cache = NO_STORE
                files[prefix + entry.name] = (entry.read_bytes(), TYPES[ext], cache)
    return files


_FILES: dict[str, tuple[bytes, str, str]] | None = None


def static_files() -> dict[str, tuple[bytes, str, str]]:
    """The static files, loaded on first use (a fixed set: a lookup, never a file path)."""
    global _FILES
    if _FILES is None:
        _FILES = _load_static()
    return _FILES


def page_response(req: Request) -> Response | None:
    """GET|HEAD `/` (the console, whose script shows the view of the node that serves it)
    and `/static/...`; None for other paths (and 404 for a static name that does not exist,
    405 for other methods)."""
    path = req.path
    if path == "/":
        path = STATIC + PAGE
    elif not path.startswith(STATIC):
        return None
    if req.method not in ("GET", "HEAD"):
        return Response.text(405, "the pages are read with GET", [("allow", "GET, HEAD")])
    found = static_files().get(path)
    if found is None:
        return Response.text(404, f"not found: {path}")
    body, content_type, cache = found
    headers = [("cache-control", cache), ("x-content-type-options", "nosniff")]
    if cache == NO_STORE:
        headers.append(("content-security-policy", PAGE_POLICY))
    return Response(200, body, content_type, headers)


Snapshot = Callable[[Request], Awaitable[object]]
"""What the feed sends each period, as the requesting client may see it."""


class Console:
    """A node's console: the page and its static files, and GET /api/events, a Server-Sent
    Events stream of `snapshot(req)` as JSON every `period` seconds, to at most
    MAX_EVENT_CLIENTS browsers at once; a client that does not take an event within
    `send_timeout` is closed."""

    def __init__(self, snapshot: Snapshot, *, period: float = 1.0, send_timeout: float = 10.0):
        self.snapshot = snapshot
        self.period = period
        self.send_timeout = send_timeout
        self.clients = 0
        self.per_host: Counter[str] = Counter()

    def route(self, req: Request) -> Response | StreamingResponse | None:
        """The console's routes (`page_response`, /api/events); None for other paths."""
        if req.path == EVENTS_API and req.method in ("GET", "HEAD"):
            return self.events(req)
        return page_response(req)

    def events(self, req: Request) -> Response | StreamingResponse:
        """The event stream, or a 503 when MAX_EVENT_CLIENTS already follow it, or
        MAX_EVENT_CLIENTS_PER_HOST from the request's address (so one stranger cannot hold
        every place)."""
        if self.clients >= MAX_EVENT_CLIENTS:
            return Response.text(503, f"{MAX_EVENT_CLIENTS} clients already follow the events")
        if self.per_host[peer_host(req.peer)] >= MAX_EVENT_CLIENTS_PER_HOST:
            return Response.text(
                503, f"{MAX_EVENT_CLIENTS_PER_HOST} clients of this address already follow"
            )
        return StreamingResponse(200, "text/event-stream", lambda conn: self._send(conn, req))

    async def _send(self, conn: Conn, req: Request) -> None:
        self.clients += 1  # here, not in respond(): a HEAD gets the head and no body
        host = peer_host(req.peer)
        self.per_host[host] += 1
        try:
            conn.write(chunk(b"retry: 2000\n\n"))
            while not conn.closed:
                data = json.dumps(await self.snapshot(req), separators=(",", ":"))
                conn.write(chunk(f"data: {data}\n\n".encode()))
                with trio.move_on_after(self.send_timeout) as scope:
                    await conn.drain()
                if scope.cancelled_caught:
                    log.info(
                        "closing events to %s: not taken within %g s", conn.peer, self.send_timeout
                    )
                    return
                await trio.sleep(self.period)
        except ConnClosed:
            pass
        finally:
            self.clients -= 1
            self.per_host[host] -= 1
            if not self.per_host[host]:
                del self.per_host[host]


async def api_json(
    handler: Callable[[Request], Awaitable[object]], req: Request, path: str
) -> dict:
    """What `handler` answers a GET of `path` from the client of `req` (the same peer and
    credentials, so the same admin view), parsed; {} unless it is a 200."""
    resp = await handler(replace(req, method="GET", target=path, path=path, query={}, body=b""))
    if not isinstance(resp, Response) or resp.status != 200:
        return {}
    return json.loads(resp.body)


HLS_CACHE = {"livecdn_hls_cache_hits": "hits", "livecdn_hls_cache_misses": "misses"}
"""The metric families (their names without _total) of an edge's HLS cache, by field."""


def hls_cache(metrics: NodeMetrics) -> dict[str, float]:
    """The HLS objects a node served from its cache and fetched from a parent, from its own
    metrics ({} on a node without an HLS cache: an origin)."""
    out = {}
    for family in metrics.collect():
        field = HLS_CACHE.get(family.name)
        if field is not None:
            out[field] = sum(s.value for s in family.samples if s.name.endswith("_total"))
            if len(out) == len(HLS_CACHE):
                break  # the rest (gauges computed by callbacks) is not needed
    return out

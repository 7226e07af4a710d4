"""What viewers ask the balancer: a 302 to an edge for /app/name.flv or .m3u8, or the
route API's URL (GET /api/route, for RTMP); 503 with Retry-After when no edge has room."""

from __future__ import annotations

import time

from balancer.routing import NoRoom, Router
from common.config import BalancerConfig
from common.net.http import Request, Response
from common.proto import auth
from common.proto.paths import Media, play_key
from common.proto.streamkey import StreamKey, StreamKeyError, shown


class ViewerRoutes:
    """Answers viewers' requests with the edge the router picks."""

    def __init__(self, config: BalancerConfig, router: Router) -> None:
        self.config = config
        self.router = router

    def _overflow(self, none: NoRoom) -> Response:
        resp = Response.text(503, f"no edge can take a viewer now: {none}")
        resp.headers.append(("retry-after", str(self.config.retry_after)))
        return resp

    async def redirect(self, req: Request, media: Media) -> Response:
        """GET|HEAD /app/name.flv or .m3u8: 302 to an edge."""
        try:
            key = play_key(req.path, media)
        except StreamKeyError as exc:
            return Response.text(404, f"not found: {shown(req.path)} ({exc})")
        routed = await self.router.admit(str(key))
        if isinstance(routed, NoRoom):
            return self._overflow(routed)
        location = routed.edge.http + req.target
        try:
            location += self._class_token(key, req.query, "&" if "?" in location else "?")
        except ValueError as exc:
            return Response.text(400, str(exc))
        return Response(302, b"", headers=[("location", location), ("cache-control", "no-store")])

    def _class_token(self, key: StreamKey, query: dict[str, str], sep: str) -> str:
        """The signed class parameters to append for `?class=`, or ""."""
        klass = query.get("class")
        if not klass:
            return ""
        if klass not in self.config.classes:
            known = ", ".join(self.config.classes) or "none configured"
            raise ValueError(f"unknown viewer class {klass!r} (classes: {known})")
        expires = int(time.time()) + self.config.token_ttl
        return sep + auth.class_query(self.config.qos_secret, str(key), klass, expires)

    async def route_api(self, req: Request) -> Response:
        """GET /api/route?app=&name=&proto=rtmp|flv|hls: the URL of an edge to play from."""
        app, name = req.query.get("app", ""), req.query.get("name", "")
        proto = req.query.get("proto", "rtmp")
        if not app or not name or proto not in ("rtmp", "flv", "hls"):
            return Response.json({"error": "need app, name and proto=rtmp|flv|hls"}, 400)
        try:
            key = StreamKey.parse(app, name)
        except StreamKeyError as exc:
            return Response.json({"error": str(exc)}, 400)
        routed = await self.router.admit(str(key))
        if isinstance(routed, NoRoom):
            resp = self._overflow(routed)
            return Response.json({"error": resp.body.decode().strip()}, 503)
        edge = routed.edge
        try:
            token = self._class_token(key, req.query, "?")
        except ValueError as exc:
            return Response.json({"error": str(exc)}, 400)
        url = {
            "rtmp": f"{edge.rtmp}/{app}/{name}",
            "flv": f"{edge.http}/{app}/{name}{Media.FLV}",
            "hls": f"{edge.http}/{app}/{name}{Media.PLAYLIST}",
        }[proto] + token
        return Response.json({"url": url, "edge": edge.id, "reason": routed.reason})

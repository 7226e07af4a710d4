"""What viewers ask the balancer: a 302 to an edge for /app/name.flv or .m3u8, or the
route API's URL (GET /api/route, for RTMP); 503 with Retry-After when no edge has room."""

from __future__ import annotations

import logging
import time

from balancer.routing import NoRoom, Router
from common.config import BalancerConfig, default_class
from common.net.http import Request, Response
from common.proto import auth, playtoken
from common.proto.paths import Media, play_key
from common.proto.streamkey import StreamKey, StreamKeyError, shown

log = logging.getLogger("livecdn.balancer")


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
        try:
            params = self._tokens(key, req)
        except PermissionError as exc:
            return Response.text(403, str(exc))
        routed = await self.router.admit(str(key))
        if isinstance(routed, NoRoom):
            return self._overflow(routed)
        location = routed.edge.base("http", req.secure) + req.target
        if params and "lc" not in req.query:  # a presented token is in the target already
            location += ("&" if "?" in location else "?") + params
        return Response(302, b"", headers=[("location", location), ("cache-control", "no-store")])

    def _tokens(self, key: StreamKey, req: Request) -> str:
        """The class token the edge gets (`_class_params`), checked before the viewer takes
        an edge's room: PermissionError for a bad class token or, with a play_secret, without
        a valid play token for `key` (each refusal logged)."""
        try:
            if self.config.play_secret:
                now = time.time()
                if refused := playtoken.check(self.config.play_secret, str(key), req.query, now):
                    raise PermissionError(refused)
            return self._class_params(key, req.query)
        except PermissionError as exc:
            log.info("route %s for %s refused: %s", key, req.peer, exc)
            raise

    def _class_params(self, key: StreamKey, query: dict[str, str]) -> str:
        """The class token the edge gets: a class is an entitlement, not a request
        (`?class=` grants nothing). A valid class token the viewer presents is carried as
        it is; else the class its play token grants (`pcls`, signed with play_secret and
        checked before this), as a fresh class token; else one of the default class (the
        lowest-rate one); PermissionError for a bad token or an unknown class; "" without
        classes."""
        if not self.config.classes:
            return ""
        secret = self.config.qos_secret
        if auth.presented_class(secret, self.config.classes, str(key), query, time.time()):
            return auth.class_params(query)
        klass = default_class(self.config.classes)
        if self.config.play_secret and query.get("pcls"):
            klass = query["pcls"]
            if klass not in self.config.classes:
                raise PermissionError(f"the play token's class is not offered here: {shown(klass)}")
        expires = int(time.time()) + self.config.token_ttl
        return auth.class_query(secret, str(key), str(klass), expires)

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
        try:
            params = self._tokens(key, req)
        except PermissionError as exc:
            return Response.json({"error": str(exc)}, 403)
        routed = await self.router.admit(str(key))
        if isinstance(routed, NoRoom):
            resp = self._overflow(routed)
            return Response.json({"error": resp.body.decode().strip()}, 503)
        edge = routed.edge
        rtmp, http = edge.base("rtmp", req.secure), edge.base("http", req.secure)
        url = {
            "rtmp": f"{rtmp}/{app}/{name}",
            "flv": f"{http}/{app}/{name}{Media.FLV}",
            "hls": f"{http}/{app}/{name}{Media.PLAYLIST}",
        }[proto]
        query = "&".join(q for q in (params, playtoken.carried(req.query)) if q)
        url += f"?{query}" if query else ""
        return Response.json({"url": url, "edge": edge.id, "reason": routed.reason})

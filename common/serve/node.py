"""What every node that serves viewers shares: listeners, HTTP routes for play, health and
metrics, fan-outs per stream, and the viewer metrics. Origin and edge each hold a `PlayNode`
and are its `NodeRole`."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import trio

from common.config import ServeConfig, connection_budget, fd_limit
from common.net.conn import Conn, Slots, accept_loop, listen_socket
from common.net.http import HttpLimits, Request, Response, StreamingResponse, serve_http
from common.net.supervise import supervise
from common.proto.paths import Media, play_key
from common.proto.streamkey import StreamKeyError
from common.serve.fanouts import Fanouts
from common.serve.hlsviewers import HlsViewers
from common.serve.metrics import CONTENT_TYPE, NodeMetrics
from common.serve.play import StreamSource, flv_response
from common.serve.refusal import Refusal
from common.serve.rtmpserver import Ingest, RtmpConnection, RtmpLimits

log = logging.getLogger("livecdn.node")


@dataclass(frozen=True)
class NodeAddress:
    """Where a started node listens (useful with port 0)."""

    rtmp_port: int
    http_port: int


class NodeRole(StreamSource, Protocol):
    """What a play node asks of the origin or edge it serves: its viewers' streams (pull on
    miss, or the live registry), their pacing, and the node's own HTTP routes."""

    async def route_api(self, req: Request) -> Response | StreamingResponse | None:
        """The node's own routes (HLS, API); None for 404."""
        ...


class PlayNode:
    """Listeners, HTTP-FLV and RTMP play, health and metrics, for the node `role` (its
    `kind`: 'origin' or 'edge'); `ingest` makes each RTMP connection's publishing side
    (None: the node only plays)."""

    def __init__(
        self,
        config: ServeConfig,
        kind: str,
        role: NodeRole,
        *,
        hls_viewers: HlsViewers,
        ingest: Callable[[], Ingest] | None = None,
    ) -> None:
        self.config = config
        self.kind = kind
        self.role = role
        self.ingest = ingest
        self.fanouts = Fanouts(config)
        self.hls_viewers = hls_viewers
        self.started = time.time()
        self.http_limits = HttpLimits(
            max_header_bytes=config.http_max_header_bytes,
            header_timeout=config.http_header_timeout,
            keepalive_timeout=config.http_keepalive_timeout,
            send_timeout=config.slow_timeout,
        )
        self.rtmp_limits = RtmpLimits.from_config(config)
        self.metrics = NodeMetrics(kind)
        self._play_metrics(self.metrics)
        self.nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ metrics

    def _play_metrics(self, mt: NodeMetrics) -> None:
        mt.gauge("viewers", "Connected viewers by protocol.", ("protocol",), self.viewers)
        mt.counter("connections_total", "Accepted connections.", ("protocol",))
        mt.counter(
            "task_restarts_total",
            "Background tasks (reporter, fan-out, packager) restarted after a failure.",
            ("task",),
        )
        mt.counter(
            "connections_refused_total", "Connections or requests refused, by reason.", ("reason",)
        )
        self.fanouts.register_metrics(mt)

    def viewers(self) -> dict[tuple[str, ...], float]:
        """Viewers by protocol (label tuples, for metrics)."""
        out = self.fanouts.viewers()
        out[("hls",)] = self.hls_viewers.total(trio.current_time())
        return out

    def start_supervised(self, what: str, task: str, fn: Callable[[], Awaitable[object]]) -> None:
        """Run `fn` in the node's nursery; a failure restarts it with backoff, counted in
        `livecdn_task_restarts_total{task}`, and never stops the node."""
        assert self.nursery is not None
        self.nursery.start_soon(
            partial(
                supervise,
                what,
                fn,
                on_restart=lambda: self.metrics.inc("task_restarts_total", labels=(task,)),
                logger=log,
            )
        )

    def refuse(self, reason: Refusal) -> None:
        """Count a refused connection or request."""
        self.metrics.inc("connections_refused_total", labels=(reason,))

    def refuse_connection(self) -> None:
        """Count a connection the accept loop refused at the connection limit."""
        self.refuse(Refusal.CONNECTION_LIMIT)

    # ------------------------------------------------------------------ HTTP

    async def handle_http(self, conn: Conn) -> None:
        """Serve one HTTP connection."""
        self.metrics.inc("connections_total", labels=("http",))
        await serve_http(conn, self.route, self.http_limits)

    async def route(self, req: Request) -> Response | StreamingResponse:
        """Dispatch one HTTP request: play, health, metrics, then the role's `route_api`; a
        bad stream key (in the path, or one a part such as the edge's pull manager checks
        again) is a 400."""
        try:
            return await self._route(req)
        except StreamKeyError as exc:
            self.refuse(Refusal.BAD_NAME)
            return Response.text(400, f"bad stream key: {exc}")

    async def _route(self, req: Request) -> Response | StreamingResponse:
        path = req.path
        if path == "/healthz":
            return Response.json(
                {
                    "status": "ok",
                    "node": self.kind,
                    "uptime_s": round(time.time() - self.started, 1),
                }
            )
        if path == "/metrics":
            return Response(200, self.metrics.render(), CONTENT_TYPE)
        if path.endswith(Media.FLV) and req.method in ("GET", "HEAD"):
            key = play_key(path, Media.FLV)
            try:
                pacer = self.role.pace_for(key.app, key.name, req.query)
            except PermissionError as exc:
                self.refuse(Refusal.BAD_CLASS_TOKEN)
                return Response.text(403, str(exc))
            return await flv_response(self.role, req, key, self.refuse, pacer)
        resp = await self.role.route_api(req)
        return resp if resp is not None else Response.text(404, f"not found: {path}")

    # ------------------------------------------------------------------ serve

    async def handle_rtmp(self, conn: Conn) -> None:
        """Serve one RTMP connection (play, and publish if the node takes streams)."""
        self.metrics.inc("connections_total", labels=("rtmp",))
        ingest = self.ingest() if self.ingest is not None else None
        await RtmpConnection(conn, self.role, self.rtmp_limits, self.refuse, ingest).run()

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on the RTMP and HTTP ports and serve until cancelled."""
        cfg = self.config
        rtmp_sock = listen_socket(cfg.host, cfg.rtmp_port)
        try:
            http_sock = listen_socket(cfg.host, cfg.http_port)
        except OSError:
            rtmp_sock.close()
            raise
        address = NodeAddress(rtmp_sock.getsockname()[1], http_sock.getsockname()[1])
        slots = Slots(cfg.max_connections)
        budget = connection_budget()
        if slots.limit > budget:
            slots.limit = budget
            log.warning(
                "max_connections %d is above this process's file-descriptor limit %d: "
                "using %d (raise the limit with ulimit -n)",
                cfg.max_connections,
                fd_limit(),
                slots.limit,
            )
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            for sock, handler in ((rtmp_sock, self.handle_rtmp), (http_sock, self.handle_http)):
                nursery.start_soon(
                    lambda s=sock, h=handler: accept_loop(
                        s, h, max_connections=slots, on_refused=self.refuse_connection
                    )
                )
            log.info(
                "%s up: rtmp://%s:%d  http://%s:%d",
                self.kind,
                cfg.host,
                address.rtmp_port,
                cfg.host,
                address.http_port,
            )
            task_status.started(address)

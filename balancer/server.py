"""The balancer: its parts wired together (node table, control plane, health checks, router,
viewer routes, operator API), its HTTP dispatch, and its listeners."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from functools import partial

import trio

from balancer import api
from balancer.console import console
from balancer.control import ControlServer
from balancer.health import check_health
from balancer.reload import reload_balancer
from balancer.routing import Router
from balancer.table import NodeTable
from balancer.viewers import ViewerRoutes
from common.config import BalancerConfig
from common.config.exposure import warn_open_surfaces
from common.net.conn import Conn, Slots, accept_loop, listen_sockets
from common.net.http import HttpLimits, Request, Response, StreamingResponse, not_a_read, serve_http
from common.net.supervise import supervise
from common.net.tls import server_context, tls_handler
from common.proto.cors import CorsPolicy
from common.proto.paths import EDGES_API, STREAMS_API, Media, api_edge_action, media_of
from common.serve.admin import admin_refusal
from common.serve.lifecycle import NodeControls, serve_node
from common.serve.metrics import CONTENT_TYPE, NodeMetrics
from common.serve.reload import Rerun

log = logging.getLogger("livecdn.balancer")


class Balancer:
    """State of one balancer; `run()` serves it."""

    def __init__(self, config: BalancerConfig) -> None:
        self.config = config
        self.controls = NodeControls()
        """Drain and reload, handed out by `serve()` (common.serve.lifecycle)."""
        self.started = time.time()
        self.metrics = NodeMetrics("balancer")
        self.table = NodeTable(config, self.metrics)
        self.edges = self.table.edges
        self.router = Router(config, self.table, self.metrics)
        self.table.on_forget = self.router.forget_edge
        self.control = ControlServer(config, self.table, self.metrics)
        self.viewers = ViewerRoutes(config, self.router)
        self.console = console(self.table, config)
        self.address: tuple[int, int] | None = None
        self.https_port: int | None = None
        """Where the HTTPS listener is (None: no tls_cert)."""
        self.slots: Slots | None = None
        """The HTTP and HTTPS connection slots (once listening)."""
        self.health = Rerun(lambda: check_health(self.table, self.config))
        """The health checks (started again when a reload changes their timing)."""
        self.controls = replace(self.controls, reload=partial(reload_balancer, self))

    # ------------------------------------------------------------------ HTTP

    async def handle_http(self, conn: Conn) -> None:
        """Serve one HTTP connection."""
        await serve_http(
            conn, self.route, HttpLimits(), CorsPolicy(tuple(self.config.cors_origins))
        )

    async def route(self, req: Request) -> Response | StreamingResponse:
        """Routing, API, health, metrics and the console."""
        path = req.path
        read_only = ("/healthz", "/readyz", "/metrics", EDGES_API, STREAMS_API, "/api/route")
        if path in read_only and (refused := not_a_read(req)):
            return refused
        if path == "/healthz":
            return Response.json({"status": "ok", "node": "balancer"})
        if path == "/readyz":  # the balancer does not drain: ready while it runs
            return Response.json({"status": "ready", "node": "balancer"})
        if path == "/metrics":
            return Response(200, self.metrics.render(), CONTENT_TYPE)
        if path == EDGES_API:
            return Response.json({"edges": api.edges_info(self.table, self.config)})
        if path == STREAMS_API:
            return Response.json({"streams": api.streams_info(self.table, self.config)})
        edge_request = api_edge_action(path)
        if edge_request is not None and req.method == "POST":
            if refused := admin_refusal(req, self.config.admin_token):
                return refused
            return api.drain(self.table, req, edge_request)
        if path == "/api/route":
            return await self.viewers.route_api(req)
        media = media_of(path)
        if media in (Media.FLV, Media.PLAYLIST) and req.method in ("GET", "HEAD"):
            return await self.viewers.redirect(req, media)
        if (page := self.console.route(req)) is not None:
            return page
        return Response.text(404, f"not found: {path}")

    # ------------------------------------------------------------------ serve

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Listen (HTTP, control, and HTTPS with a tls_cert) and serve until cancelled."""
        cfg = self.config
        context = server_context(cfg.tls_cert, cfg.tls_key) if cfg.tls_cert else None
        ports = [cfg.http_port, cfg.control_port] + ([cfg.https_port] if context else [])
        http_sock, ctl_sock, *tls_socks = listen_sockets(cfg.host, ports)
        self.address = (http_sock.getsockname()[1], ctl_sock.getsockname()[1])
        web = [(http_sock, self.handle_http)]
        if context is not None:
            self.https_port = tls_socks[0].getsockname()[1]
            web.append((tls_socks[0], tls_handler(self.handle_http, context)))
        slots = self.slots = Slots(cfg.max_connections)  # HTTP and HTTPS together
        async with trio.open_nursery() as nursery:
            for sock, handler in web:
                nursery.start_soon(
                    lambda s=sock, h=handler: accept_loop(s, h, max_connections=slots)
                )
            nursery.start_soon(
                lambda: accept_loop(
                    ctl_sock,
                    self.control.handle,
                    max_connections=cfg.control_max_connections,
                    on_refused=self.control.refuse_connection,
                )
            )
            for what, fn in (
                ("health checks", self.health),
                ("forgetting", self.control.forget_loop),
            ):
                nursery.start_soon(partial(supervise, what, fn, logger=log))
            tls = f" https://{cfg.host}:{self.https_port}" if self.https_port else ""
            log.info(
                "balancer up: http://%s:%d%s (policy %s), control %s:%d",
                cfg.host,
                self.address[0],
                tls,
                cfg.policy,
                cfg.host,
                self.address[1],
            )
            warn_open_surfaces(self.config, log, control_port=self.address[1])
            task_status.started(self.address)


async def serve(
    config: BalancerConfig, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a balancer until cancelled; `task_status.started` gets a Serving: its
    (http_port, control_port) and its controls (common.serve.lifecycle)."""
    await serve_node(Balancer(config), task_status=task_status)

"""What every node that serves viewers shares: listeners, HTTP routes for play, health and
metrics, fan-outs per stream, and the viewer metrics. Origin and edge each hold a `PlayNode`
and are its `NodeRole`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import astuple, dataclass
from functools import partial
from typing import Protocol

import trio

from common.config import ServeConfig, connection_budget, fd_limit
from common.net.conn import Conn, Slots, accept_loop, listen_sockets
from common.net.http import (
    FastLane,
    HttpLimits,
    Request,
    Response,
    SharedResponse,
    StreamingResponse,
    Upgrade,
    not_a_read,
    serve_http,
)
from common.net.httphub import KeepAliveHub
from common.net.supervise import supervise
from common.net.tls import server_context, tls_handler
from common.net.websocket import handshake, wants_websocket
from common.proto.clock import STAMPS_QUERY
from common.proto.cors import CorsPolicy
from common.proto.errors import ProtocolError
from common.proto.paths import STREAMS_API, Media, play_key
from common.proto.streamkey import StreamKeyError
from common.serve.console import Console, api_json, hls_cache
from common.serve.fanouts import Fanouts
from common.serve.hlsviewers import HlsViewers
from common.serve.lifecycle import RETRY_AFTER_S
from common.serve.metrics import CONTENT_TYPE, NodeMetrics
from common.serve.play import CLOCK_QUERY, StreamSource, flv_response
from common.serve.playgate import PlayDenied, PlayGate, PlayProtocol, PlayRequest
from common.serve.refusal import Refusal
from common.serve.rtmpserver import Ingest, RtmpConnection, RtmpLimits
from common.serve.workerctx import CURRENT
from common.serve.workermerge import exempt_siblings, merged_route, private_route

log = logging.getLogger("livecdn.node")


@dataclass(frozen=True)
class NodeAddress:
    """Where a started node listens (useful with port 0)."""

    rtmp_port: int
    http_port: int
    rtmps_port: int | None = None
    """None: no TLS listeners (no tls_cert)."""
    https_port: int | None = None


class NodeRole(StreamSource, Protocol):
    """What a play node asks of the origin or edge it serves: its viewers' streams (pull on
    miss, or the live registry), their pacing, and the node's own HTTP routes."""

    async def route_api(self, req: Request) -> Response | StreamingResponse | None:
        """The node's own routes (HLS, API); None for 404."""
        ...


class PlayNode:
    """Listeners, HTTP-FLV and RTMP play, health and metrics, for the node `role` (its
    `kind`: 'origin' or 'edge'); `ingest` makes each RTMP connection's publishing side
    (None: the node only plays); `gate` holds the checks a play must pass."""

    def __init__(
        self,
        config: ServeConfig,
        kind: str,
        role: NodeRole,
        *,
        hls_viewers: HlsViewers,
        ingest: Callable[[], Ingest] | None = None,
        gate: PlayGate | None = None,
    ) -> None:
        self.config = config
        self.gate = gate if gate is not None else PlayGate()
        """Who may play (every protocol asks it before a viewer gets media)."""
        self.kind = kind
        self.role = role
        self.ingest = ingest
        self.fanouts = Fanouts(config)
        self.hls_viewers = hls_viewers
        self.started = time.time()
        self.take_limits(config)
        self.metrics = NodeMetrics(kind)
        self._play_metrics(self.metrics)
        self.console = Console(self.snapshot, send_timeout=config.slow_timeout)
        self.nursery: trio.Nursery | None = None
        self.slots: Slots | None = None
        """The connection slots of every listener together (once listening)."""

    def take_limits(self, config: ServeConfig) -> None:
        """The HTTP and RTMP limits and the CORS policy of connections accepted from now on."""
        self.http_limits = HttpLimits(
            max_header_bytes=config.http_max_header_bytes,
            header_timeout=config.http_header_timeout,
            keepalive_timeout=config.http_keepalive_timeout,
            send_timeout=config.slow_timeout,
        )
        self.rtmp_limits = RtmpLimits.from_config(config)
        self.cors = CorsPolicy(tuple(config.cors_origins))

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

    _hub: KeepAliveHub | None = None
    """Where idle keep-alive HTTP connections wait (started with the first one)."""

    async def handle_http(self, conn: Conn) -> None:
        """Serve one HTTP connection; what the role's `fast_http` (if any) answers at once
        (cached objects) skips the routes, and while the connection is idle between such
        requests the keep-alive hub answers them without waking its task."""
        self.metrics.inc("connections_total", labels=("http",))
        role_fast = getattr(self.role, "fast_http", None)
        if role_fast is None:
            await serve_http(conn, self.route, self.http_limits, self.cors)
            return
        fast = partial(self._fast, role_fast)
        await serve_http(conn, self.route, self.http_limits, self.cors, fast, self._keepalive_hub())

    def _keepalive_hub(self) -> KeepAliveHub | None:
        """The node's keep-alive hub, started in its nursery on first use."""
        hub = self._hub
        if hub is None and self.nursery is not None:
            hub = self._hub = KeepAliveHub()
            self._hub_metrics(hub)
            self.start_supervised("HTTP keep-alive hub", "http_hub", hub.run)
        return hub

    def _hub_metrics(self, hub: KeepAliveHub) -> None:
        """The keep-alive hub's requests answered (cached objects on idle keep-alive
        connections, their tasks not woken), its wake-ups and its connections now."""
        mt = self.metrics
        mt.counter("http_hub_answers_total", "Requests the keep-alive hub answered.", (),
                   lambda: {(): hub.served})  # fmt: skip
        mt.counter("http_hub_rounds_total", "Times the keep-alive hub woke to serve.", (),
                   lambda: {(): hub.rounds})  # fmt: skip
        mt.gauge("http_hub_parked", "Idle keep-alive connections in the keep-alive hub.", (),
                 lambda: {(): hub.parked})  # fmt: skip

    def _fast(
        self, role_fast: FastLane, method: str, target: str, headers: dict[str, str], peer: str
    ) -> SharedResponse | None:
        """The role's fast lane, while no play check is configured (each request of a
        checked play goes through `route`, which asks the gate)."""
        if self.gate.checks:
            return None
        return role_fast(method, target, headers, peer)

    async def route(self, req: Request) -> Response | StreamingResponse | Upgrade:
        """Dispatch one HTTP request: play, health, metrics, then the role's `route_api`; a
        bad stream key (in the path, or one a part such as the edge's pull manager checks
        again) is a 400."""
        try:
            return await self._route(req)
        except StreamKeyError as exc:
            self.refuse(Refusal.BAD_NAME)
            return Response.text(400, f"bad stream key: {exc}")

    async def _route(self, req: Request) -> Response | StreamingResponse | Upgrade:
        path = req.path
        if path in ("/healthz", "/readyz", "/metrics") and (refused := not_a_read(req)):
            return refused
        if path == "/readyz":  # a draining node takes no new viewers; /healthz: still alive
            if self.gate.draining:
                return Response.json({"status": "draining", "node": self.kind}, 503)
            return Response.json({"status": "ready", "node": self.kind})
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
            protocol = PlayProtocol.WS if wants_websocket(req) else PlayProtocol.FLV
            play = PlayRequest(protocol, key, req.query, req.peer)
            try:
                pacer = self.role.pace_for(key.app, key.name, req.query)
            except PermissionError as exc:
                return self.refuse_play(play, Refusal.BAD_CLASS_TOKEN, exc)
            websocket = None
            if protocol is PlayProtocol.WS:
                if not self.cors.allows(origin := req.headers.get("origin")):
                    # CORS does not cover WebSockets: the server checks the page's origin
                    why = PermissionError(f"a page of {origin[:60]!r} is not in cors_origins")
                    return self.refuse_play(play, Refusal.ORIGIN, why)
                try:
                    websocket = handshake(req)
                except ProtocolError as exc:
                    self.refuse(Refusal.PROTOCOL_ERROR)
                    return Response.text(400, str(exc))
            denied = await self.admit(play)
            if denied is not None:
                return denied
            ended = partial(self.gate.ended, play)
            return await flv_response(
                self.role,
                req,
                key,
                self.refuse,
                pacer,
                ended=ended,
                websocket=websocket,
                clock=req.query.get(CLOCK_QUERY) == "1",
                stamps=req.query.get(STAMPS_QUERY) == "1",
            )
        if (page := self.console.route(req)) is not None:
            return page
        resp = await self.role.route_api(req)
        return resp if resp is not None else Response.text(404, f"not found: {path}")

    async def snapshot(self, req: Request) -> dict:
        """What the node's page shows, as the client of `req` may see it: the node, its
        viewers by protocol, its HLS cache's hits and misses (an edge's) and its streams API."""
        return {
            "node": self.kind,
            "uptime_s": round(time.time() - self.started, 1),
            "viewers": {labels[0]: n for labels, n in self.viewers().items()},
            "hls_cache": hls_cache(self.metrics),
            **await api_json(self.role.route_api, req, STREAMS_API),
        }

    async def admit(self, play: PlayRequest) -> Response | None:
        """None if the gate admits `play`; else the 403 to answer (counted and logged)."""
        try:
            await self.gate.admit(play)
        except PlayDenied as exc:
            return self.refuse_play(play, exc.reason, exc)
        return None

    def refuse_play(self, play: PlayRequest, reason: Refusal, why: Exception) -> Response:
        """The 403 that refuses `play` for `reason` (503 with Retry-After while the node
        drains: the play may go elsewhere), counted and logged."""
        self.refuse(reason)
        log.info("%s play of %s by %s refused: %s", play.protocol, play.key, play.peer, why)
        if reason is Refusal.DRAINING:
            return Response.text(503, str(why), [("retry-after", str(RETRY_AFTER_S))])
        return Response.text(403, str(why))

    # ------------------------------------------------------------------ serve

    async def handle_rtmp(self, conn: Conn) -> None:
        """Serve one RTMP connection (play, and publish if the node takes streams)."""
        self.metrics.inc("connections_total", labels=("rtmp",))
        ingest = self.ingest() if self.ingest is not None else None
        await RtmpConnection(
            conn, self.role, self.rtmp_limits, self.refuse, ingest, gate=self.gate
        ).run()

    async def handle_private(self, conn: Conn) -> None:
        """Serve one connection on this worker's private port (its siblings only)."""
        await serve_http(conn, self.private_route, self.http_limits, self.cors)

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on the RTMP and HTTP ports (and with tls_cert, RTMPS and HTTPS) and serve
        until cancelled."""
        cfg = self.config
        listeners = [(cfg.rtmp_port, self.handle_rtmp), (cfg.http_port, self.handle_http)]
        if cfg.tls_cert:
            context = server_context(cfg.tls_cert, cfg.tls_key)
            listeners += [
                (port, tls_handler(handler, context, timeout=cfg.handshake_timeout))
                for port, handler in (
                    (cfg.rtmps_port, self.handle_rtmp),
                    (cfg.https_port, self.handle_http),
                )
            ]
        worker = CURRENT
        if worker is None:
            socks = listen_sockets(cfg.host, [port for port, _ in listeners])
        else:  # bound once by the supervisor, shared by every worker
            socks = worker.public_sockets()
        address = NodeAddress(*(sock.getsockname()[1] for sock in socks))
        if worker is not None:  # its siblings' door; the public routes answer for the node
            listeners.append((0, self.handle_private))
            socks.append(worker.private_socket())
            self.private_route = private_route(worker, self.route)
            self.route = merged_route(worker, self.route)  # type: ignore[method-assign]
            exempt_siblings(self.gate)
        slots = self.slots = Slots(cfg.max_connections)
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
            for sock, (_, handler) in zip(socks, listeners, strict=True):
                nursery.start_soon(
                    lambda s=sock, h=handler: accept_loop(
                        s, h, max_connections=slots, on_refused=self.refuse_connection
                    )
                )
            urls = [
                f"{scheme}://{cfg.host}:{port}"
                for scheme, port in zip(
                    ("rtmp", "http", "rtmps", "https"), astuple(address), strict=True
                )
                if port is not None
            ]
            who = self.kind if worker is None else f"{self.kind} worker {worker.index}"
            if worker is not None:
                who += f" (pid {os.getpid()})"
            log.info("%s up: %s", who, "  ".join(urls))
            task_status.started(address)

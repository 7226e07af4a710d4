"""The balancer: edges' heartbeats and health checks, a policy, admission by capacity, and
302 redirects (HTTP-FLV, HLS) or a route API (RTMP) sending each new viewer to an edge."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import partial

import trio

from balancer.policy import EdgeView, make_policy
from common.config import BalancerConfig
from common.net.conn import Conn, accept_loop, listen_socket
from common.net.http import HttpLimits, Request, Response, serve_http
from common.net.httpclient import fetch
from common.net.supervise import supervise
from common.proto import auth
from common.proto.control import ControlDecoder, ControlError, ControlMessage, Heartbeat, StreamInfo
from common.proto.errors import ProtocolError
from common.proto.streamkey import StreamKey, StreamKeyError, shown
from common.serve.metrics import CONTENT_TYPE, NodeMetrics

log = logging.getLogger("livecdn.balancer")

QUEUE_POLL = 0.2  # seconds between a queued request's looks for room


def _reject_label(why: str) -> str:
    """The rejects_total label of a routing failure."""
    return "full" if "full" in why else "no_edge"


@dataclass
class EdgeState:
    """What the balancer knows about one edge: its latest (validated) heartbeat and the
    balancer's own view of it (health checks, drain, viewers sent since that heartbeat)."""

    id: str
    beat: Heartbeat
    last_heartbeat: float = -math.inf
    streams: frozenset[str] = frozenset()
    checks_ok: int = 0
    checks_failed: int = 0
    healthy: bool = True
    check_error: str = ""
    draining: bool = False
    assigned: int = 0  # viewers sent since the last heartbeat (not yet in its count)
    routed_total: int = 0

    def __post_init__(self) -> None:
        self.streams = frozenset(self.beat.streams)

    @property
    def http(self) -> str:
        """The edge's base HTTP URL (http://host:port)."""
        return self.beat.http

    @property
    def rtmp(self) -> str:
        """The edge's base RTMP URL (rtmp://host:port), or ""."""
        return self.beat.rtmp

    def heard(self, beat: Heartbeat, now: float) -> None:
        """A new heartbeat: it replaces what the edge said before."""
        self.beat = beat
        self.streams = frozenset(beat.streams)
        self.last_heartbeat = now
        self.assigned = 0

    def heartbeat_stale(self, now: float, timeout: float) -> bool:
        """True if the edge's heartbeats stopped more than `timeout` ago."""
        return now - self.last_heartbeat > timeout

    def out_reason(self, now: float, timeout: float) -> str | None:
        """Why the edge is out of rotation, or None if it is in."""
        if self.heartbeat_stale(now, timeout):
            return f"no heartbeat for {timeout:g} s"
        if not self.healthy:
            return f"health check failing: {self.check_error}"
        if self.draining or self.beat.draining:
            return "draining"
        return None

    def view(self) -> EdgeView:
        """The policy's view, counting viewers sent since the last heartbeat."""
        b = self.beat
        return EdgeView(
            id=self.id,
            weight=b.weight,
            viewers=b.viewers + self.assigned,
            capacity_viewers=b.capacity_viewers,
            egress_bps=b.egress_bps,
            capacity_bps=b.capacity_bps,
            streams=self.streams,
        )


class Balancer:
    """State of one balancer; `run()` serves it."""

    def __init__(self, config: BalancerConfig) -> None:
        self.config = config
        self.policy = make_policy(config.policy, hash_balance_factor=config.hash_balance_factor)
        self.edges: dict[str, EdgeState] = {}
        self.origin_streams: dict[str, dict[str, StreamInfo]] = {}  # origin -> "app/name" -> info
        self.origin_seen: dict[str, float] = {}
        self.queued = 0  # requests waiting in the admission queue
        self.control_connections = 0
        self.started = time.time()
        self.metrics = NodeMetrics("balancer")
        mt = self.metrics
        mt.counter("routes_total", "Viewers routed, by edge.", ("edge",))
        mt.counter("rejects_total", "Viewers refused (503), by reason.", ("reason",))
        mt.counter(
            "control_rejected_total",
            "Control connections closed for an invalid or refused message, by reason.",
            ("reason",),
        )
        mt.counter("control_idle_total", "Control connections closed for sending nothing.")
        mt.counter("edges_forgotten_total", "Edges forgotten after heartbeats stopped.")
        mt.counter("origins_forgotten_total", "Origins forgotten after announcements stopped.")
        mt.gauge("edges", "Edges by state.", ("state",), self._edge_states)
        mt.gauge("admission_queue", "Requests waiting for room.", (), lambda: {(): self.queued})
        mt.gauge(
            "control_connections",
            "Open control connections.",
            (),
            lambda: {(): self.control_connections},
        )
        self.address: tuple[int, int] | None = None

    # ------------------------------------------------------------------ state

    def _edge_states(self) -> dict[tuple[str, ...], float]:
        now = trio.current_time()
        out = {("in",): 0.0, ("out",): 0.0}
        for e in self.edges.values():
            out[("out",) if e.out_reason(now, self.config.heartbeat_timeout) else ("in",)] += 1
        return out

    def on_message(self, msg: ControlMessage, peer: str) -> None:
        """A validated control message from an edge or origin. ControlError (the connection
        is then closed) if it would grow a full edge or origin table."""
        now = trio.current_time()
        if isinstance(msg, Heartbeat):
            edge = self.edges.get(msg.node)
            if edge is None:
                if len(self.edges) >= self.config.max_edges:
                    self.forget(now)
                if len(self.edges) >= self.config.max_edges:
                    raise ControlError(
                        f"edge table full ({self.config.max_edges} edges): "
                        f"refusing new edge {msg.node}",
                        "edges_full",
                    )
                edge = self.edges[msg.node] = EdgeState(msg.node, msg)
                log.info("edge %s joined (%s) from %s", msg.node, msg.http, peer)
            elif edge.heartbeat_stale(now, self.config.heartbeat_timeout):
                log.info("edge %s is back (heartbeats resumed)", msg.node)
            edge.heard(msg, now)
        else:
            if msg.node not in self.origin_seen:
                if len(self.origin_seen) >= self.config.max_origins:
                    self.forget(now)
                if len(self.origin_seen) >= self.config.max_origins:
                    raise ControlError(
                        f"origin table full ({self.config.max_origins} origins): "
                        f"refusing new origin {msg.node}",
                        "origins_full",
                    )
                log.info("origin %s announced from %s", msg.node, peer)
            self.origin_streams[msg.node] = {s.key: s for s in msg.streams}
            self.origin_seen[msg.node] = now

    def forget(self, now: float) -> None:
        """Drop edges and origins silent for more than `forget_after` seconds."""
        limit = self.config.forget_after
        for node, edge in list(self.edges.items()):
            if now - edge.last_heartbeat > limit:
                del self.edges[node]
                self.metrics.inc("edges_forgotten_total")
                self.metrics.counters.pop(("routes_total", (node,)), None)
                log.info("edge %s forgotten: no heartbeat for %g s", node, limit)
        for node, seen in list(self.origin_seen.items()):
            if now - seen > limit:
                del self.origin_seen[node]
                self.origin_streams.pop(node, None)
                self.metrics.inc("origins_forgotten_total")
                log.info("origin %s forgotten: no announcement for %g s", node, limit)

    async def forget_loop(self) -> None:
        """Forget silent nodes, a few times per `forget_after`."""
        while True:
            await trio.sleep(min(self.config.forget_after / 4, 5.0))
            self.forget(trio.current_time())

    def bitrate(self, stream: str) -> float:
        """The stream's measured bitrate (from the origins), or 0 if unknown."""
        for streams in self.origin_streams.values():
            info = streams.get(stream)
            if info is not None:
                return info.bitrate
        return 0.0

    def eligible(self, stream: str) -> tuple[list[EdgeView], dict[str, str]]:
        """Edges that may take one more viewer of `stream`, and why the others may not."""
        now = trio.current_time()
        bitrate = self.bitrate(stream)
        views, excluded = [], {}
        for edge in self.edges.values():
            why = edge.out_reason(now, self.config.heartbeat_timeout)
            if why is None:
                v = edge.view()
                if v.capacity_viewers and v.viewers + 1 > v.capacity_viewers:
                    why = f"full: {v.viewers}/{v.capacity_viewers} viewers"
                elif v.capacity_bps and v.egress_bps + bitrate > v.capacity_bps:
                    why = f"full: {v.egress_bps / 1e6:.1f}+{bitrate / 1e6:.1f} of {v.capacity_bps / 1e6:.1f} Mbps"
                else:
                    views.append(v)
                    continue
            excluded[edge.id] = why
        return views, excluded

    def choose(self, stream: str, *, retry: bool = False) -> tuple[EdgeState | None, str]:
        """Pick an edge for one new viewer of `stream`; the reason is logged (a queued
        request's retries that still find no room only at debug level)."""
        views, excluded = self.eligible(stream)
        choice = self.policy.choose(stream, views)
        if choice is None:
            why = "; ".join(f"{k}: {v}" for k, v in sorted(excluded.items())) or "no edges known"
            log.log(
                logging.DEBUG if retry else logging.INFO,
                "route %s: no edge can take it (%s)",
                stream,
                why,
            )
            return None, why
        edge = self.edges[choice.edge.id]
        edge.assigned += 1
        edge.routed_total += 1
        self.metrics.inc("routes_total", labels=(edge.id,))
        log.info("route %s -> %s: %s", stream, edge.id, choice.reason)
        return edge, choice.reason

    # ------------------------------------------------------------------ health

    async def check_health(self) -> None:
        """Active /healthz checks with rise/fall thresholds."""
        cfg = self.config

        async def check(edge: EdgeState) -> None:
            if not edge.http:
                return
            try:
                status, _, _ = await fetch(
                    "GET", edge.http + "/healthz", timeout=cfg.check_interval, limit=4096
                )
                ok, error = status == 200, f"HTTP {status}"
            except (OSError, trio.TooSlowError, ProtocolError, Exception) as exc:
                ok, error = False, str(exc) or type(exc).__name__
            if ok:
                edge.checks_ok += 1
                edge.checks_failed = 0
                if not edge.healthy and edge.checks_ok >= cfg.rise:
                    edge.healthy = True
                    log.info("edge %s back in rotation (%d checks passed)", edge.id, cfg.rise)
            else:
                edge.checks_failed += 1
                edge.checks_ok = 0
                edge.check_error = error
                if edge.healthy and edge.checks_failed >= cfg.fall:
                    edge.healthy = False
                    log.warning("edge %s out of rotation: %s", edge.id, error)

        while True:
            async with trio.open_nursery() as nursery:
                for edge in list(self.edges.values()):
                    nursery.start_soon(check, edge)
            await trio.sleep(cfg.check_interval)

    # ------------------------------------------------------------------ control

    async def handle_control(self, conn: Conn) -> None:
        """One node's control connection (msgpack frames). An invalid or refused message
        closes it with one log line; so does `control_idle_timeout` without a message."""
        decoder = ControlDecoder()
        idle = self.config.control_idle_timeout
        self.control_connections += 1
        try:
            with trio.move_on_after(idle) as scope:
                while True:
                    data = await conn.recv()
                    if not data:
                        return
                    try:
                        messages = decoder.feed(data)
                        for msg in messages:
                            self.on_message(msg, conn.peer)
                    except ProtocolError as exc:
                        reason = getattr(exc, "code", "invalid")
                        self.metrics.inc("control_rejected_total", labels=(reason,))
                        log.info("closing control connection %s: %s", conn.peer, exc)
                        return
                    if messages:
                        scope.deadline = trio.current_time() + idle
            self.metrics.inc("control_idle_total")
            log.info("closing control connection %s: no message for %g s", conn.peer, idle)
        finally:
            self.control_connections -= 1

    # ------------------------------------------------------------------ HTTP

    async def handle_http(self, conn: Conn) -> None:
        """Serve one HTTP connection."""
        await serve_http(conn, self.route, HttpLimits())

    async def route(self, req: Request) -> Response:
        """Routing, API, health and metrics."""
        path = req.path
        if path == "/healthz":
            return Response.json({"status": "ok", "node": "balancer"})
        if path == "/metrics":
            return Response(200, self.metrics.render(), CONTENT_TYPE)
        if path == "/api/edges":
            return Response.json({"edges": self.edges_info()})
        if path == "/api/streams":
            return Response.json({"streams": self.streams_info()})
        if path.startswith("/api/edges/") and req.method == "POST":
            return self._drain(req, path[len("/api/edges/") :])
        if path == "/api/route":
            return await self._route_api(req)
        if path.endswith((".flv", ".m3u8")) and req.method in ("GET", "HEAD"):
            return await self._redirect(req)
        return Response.text(404, f"not found: {path}")

    def _drain(self, req: Request, rest: str) -> Response:
        node, _, action = rest.partition("/")
        edge = self.edges.get(node)
        if edge is None or action not in ("drain", "undrain"):
            return Response.json({"error": "POST /api/edges/{id}/drain or /undrain"}, 404)
        edge.draining = action == "drain"
        log.info(
            "edge %s %s on request of %s",
            node,
            "draining" if edge.draining else "undrained",
            req.peer,
        )
        return Response.json({"edge": node, "draining": edge.draining})

    async def _admit(self, stream: str) -> tuple[EdgeState | None, str, str]:
        """An edge for one new viewer, or None with the reason and its metrics label. With
        `overflow = "queue"` up to `queue_max` requests wait `queue_timeout` for room; any
        more are refused at once."""
        edge, why = self.choose(stream)
        if edge is not None or self.config.overflow != "queue":
            return edge, why, _reject_label(why)
        if self.queued >= self.config.queue_max:
            self.metrics.inc("rejects_total", labels=("queue_full",))
            return None, f"admission queue full ({self.queued} waiting); {why}", "queue_full"
        self.queued += 1
        try:
            with trio.move_on_after(self.config.queue_timeout):
                while edge is None:
                    await trio.sleep(QUEUE_POLL)
                    edge, why = self.choose(stream, retry=True)
        finally:
            self.queued -= 1
        if edge is None:
            log.info(
                "route %s: no edge could take it within %g s (%s)",
                stream,
                self.config.queue_timeout,
                why,
            )
        return edge, why, _reject_label(why)

    def _overflow(self, why: str, label: str) -> Response:
        if label != "queue_full":  # counted where it was refused
            self.metrics.inc("rejects_total", labels=(label,))
        resp = Response.text(503, f"no edge can take a viewer now: {why}")
        resp.headers.append(("retry-after", str(self.config.retry_after)))
        return resp

    async def _redirect(self, req: Request) -> Response:
        suffix = ".flv" if req.path.endswith(".flv") else ".m3u8"
        try:
            key = StreamKey.from_path(req.path, suffix)
        except StreamKeyError as exc:
            return Response.text(404, f"not found: {shown(req.path)} ({exc})")
        app, name = key.app, key.name
        edge, why, label = await self._admit(str(key))
        if edge is None:
            return self._overflow(why, label)
        location = edge.http + req.target
        try:
            location += self._class_token(app, name, req.query, "&" if "?" in location else "?")
        except ValueError as exc:
            return Response.text(400, str(exc))
        return Response(302, b"", headers=[("location", location), ("cache-control", "no-store")])

    def _class_token(self, app: str, name: str, query: dict[str, str], sep: str) -> str:
        """The signed class parameters to append for `?class=`, or ""."""
        klass = query.get("class")
        if not klass:
            return ""
        if klass not in self.config.classes:
            known = ", ".join(self.config.classes) or "none configured"
            raise ValueError(f"unknown viewer class {klass!r} (classes: {known})")
        expires = int(time.time()) + self.config.token_ttl
        return sep + auth.class_query(self.config.qos_secret, f"{app}/{name}", klass, expires)

    async def _route_api(self, req: Request) -> Response:
        app, name = req.query.get("app", ""), req.query.get("name", "")
        proto = req.query.get("proto", "rtmp")
        if not app or not name or proto not in ("rtmp", "flv", "hls"):
            return Response.json({"error": "need app, name and proto=rtmp|flv|hls"}, 400)
        try:
            key = StreamKey.parse(app, name)
        except StreamKeyError as exc:
            return Response.json({"error": str(exc)}, 400)
        edge, why, label = await self._admit(str(key))
        if edge is None:
            resp = self._overflow(why, label)
            return Response.json({"error": resp.body.decode().strip()}, 503)
        try:
            token = self._class_token(app, name, req.query, "?")
        except ValueError as exc:
            return Response.json({"error": str(exc)}, 400)
        url = {
            "rtmp": f"{edge.rtmp}/{app}/{name}",
            "flv": f"{edge.http}/{app}/{name}.flv",
            "hls": f"{edge.http}/{app}/{name}.m3u8",
        }[proto] + token
        return Response.json({"url": url, "edge": edge.id, "reason": why})

    def edges_info(self) -> list[dict]:
        """Every known edge with its state and load."""
        now = trio.current_time()
        out = []
        for e in sorted(self.edges.values(), key=lambda e: e.id):
            v = e.view()
            why = e.out_reason(now, self.config.heartbeat_timeout)
            out.append(
                {
                    "id": e.id,
                    "http": e.http,
                    "rtmp": e.rtmp,
                    "in_rotation": why is None,
                    "out_reason": why,
                    "viewers": v.viewers,
                    "egress_bps": v.egress_bps,
                    "capacity_viewers": v.capacity_viewers,
                    "capacity_bps": v.capacity_bps,
                    "load": round(v.load, 4),
                    "weight": v.weight,
                    "region": e.beat.region,
                    "streams": dict(e.beat.streams),
                    "draining": e.draining,
                    "last_heartbeat_s_ago": round(now - e.last_heartbeat, 2)
                    if e.last_heartbeat > -math.inf
                    else None,
                    "routed_total": e.routed_total,
                }
            )
        return out

    def streams_info(self) -> list[dict]:
        """Every live stream (from the origins) with its viewers across edges."""
        now = trio.current_time()
        live: dict[str, dict] = {}
        for node, streams in self.origin_streams.items():
            if now - self.origin_seen.get(node, -math.inf) > 3 * self.config.heartbeat_timeout:
                continue
            for key, info in streams.items():
                live[key] = {
                    "stream": key,
                    "origin": node,
                    "bitrate": info.bitrate,
                    "viewers": 0,
                    "edges": {},
                }
        for e in self.edges.values():
            if e.heartbeat_stale(now, self.config.heartbeat_timeout):
                continue
            for key, n in e.beat.streams.items():
                entry = live.setdefault(
                    key, {"stream": key, "origin": None, "bitrate": None, "viewers": 0, "edges": {}}
                )
                entry["edges"][e.id] = n
                entry["viewers"] += n
        return [live[k] for k in sorted(live)]

    # ------------------------------------------------------------------ serve

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Listen (HTTP and control) and serve until cancelled."""
        cfg = self.config
        http_sock = listen_socket(cfg.host, cfg.http_port)
        ctl_sock = listen_socket(cfg.host, cfg.control_port)
        self.address = (http_sock.getsockname()[1], ctl_sock.getsockname()[1])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: accept_loop(
                    http_sock, self.handle_http, max_connections=cfg.max_connections
                )
            )
            nursery.start_soon(
                lambda: accept_loop(
                    ctl_sock,
                    self.handle_control,
                    max_connections=cfg.control_max_connections,
                    on_refused=lambda reason: self.metrics.inc(
                        "control_rejected_total", labels=(reason,)
                    ),
                )
            )
            for what, fn in (
                ("health checks", self.check_health),
                ("forgetting", self.forget_loop),
            ):
                nursery.start_soon(partial(supervise, what, fn, logger=log))
            log.info(
                "balancer up: http://%s:%d (policy %s), control %s:%d",
                cfg.host,
                self.address[0],
                cfg.policy,
                cfg.host,
                self.address[1],
            )
            task_status.started(self.address)


async def serve(
    config: BalancerConfig, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a balancer until cancelled; `task_status.started` gets (http_port, control_port)."""
    await Balancer(config).run(task_status=task_status)

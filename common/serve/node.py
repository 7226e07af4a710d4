"""What every node that serves viewers shares: listeners, HTTP routes for play, health and
metrics, fan-outs per stream, and the viewer metrics. Origin and edge subclass `PlayNode`."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import trio

from common.config import ServeConfig, connection_budget, fd_limit
from common.media.stream import Stream
from common.net.conn import Conn, Slots, accept_loop, listen_socket
from common.net.http import HttpLimits, Request, Response, StreamingResponse, serve_http
from common.net.supervise import supervise
from common.proto.paths import Media, play_key
from common.proto.shaping import Pacer
from common.proto.streamkey import StreamKeyError
from common.serve.hlsviewers import HlsViewers
from common.serve.metrics import CONTENT_TYPE, NodeMetrics
from common.serve.play import Fanout, PlayStats, Subscription, flv_response
from common.serve.refusal import Refusal

log = logging.getLogger("livecdn.node")


@dataclass(frozen=True)
class NodeAddress:
    """Where a started node listens (useful with port 0)."""

    rtmp_port: int
    http_port: int


class PlayNode:
    """Base of origin and edge: subclasses provide `subscribe`, `handle_rtmp` and extra routes."""

    kind = "node"

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.play_stats = PlayStats()
        self.fanouts: dict[Stream, Fanout] = {}
        self.started = time.time()
        self.dropped_closed = 0
        self.http_limits = HttpLimits(
            max_header_bytes=config.http_max_header_bytes,
            header_timeout=config.http_header_timeout,
            keepalive_timeout=config.http_keepalive_timeout,
            send_timeout=config.slow_timeout,
        )
        self.hls_viewers = HlsViewers()
        self.metrics = NodeMetrics(self.kind)
        self._play_metrics(self.metrics)
        self.nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ streams

    def new_stream(self, app: str, name: str) -> Stream:
        """A Stream configured from this node's settings."""
        cfg = self.config
        return Stream(
            app,
            name,
            gop_cache=cfg.gop_cache,
            max_frames=cfg.gop_max_frames,
            max_bytes=cfg.gop_max_bytes,
            max_lag_ms=cfg.max_lag_ms,
        )

    def new_fanout(self, stream: Stream) -> Fanout:
        """A Fanout for `stream`, registered for metrics; the caller runs `fanout.run()`."""
        cfg = self.config
        fanout = Fanout(
            stream, self.play_stats, batch_ms=cfg.batch_ms, slow_timeout=cfg.slow_timeout
        )
        self.fanouts[stream] = fanout
        return fanout

    def drop_fanout(self, stream: Stream) -> None:
        """Forget a finished stream's fan-out (keeping its counters)."""
        if self.fanouts.pop(stream, None) is not None:
            self.dropped_closed += stream.stats.dropped_frames

    async def subscribe(self, app: str, name: str) -> Subscription | None:
        """StreamSource: the live stream app/name for a new viewer, or None."""
        raise NotImplementedError

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
        mt.counter(
            "frames_dropped_total",
            "Frames skipped for viewers that fell behind.",
            (),
            lambda: {(): self.dropped_closed + sum(s.stats.dropped_frames for s in self.fanouts)},
        )
        self.play_stats.register_metrics(mt)

    def viewers(self) -> dict[tuple[str, ...], float]:
        """Viewers by protocol (label tuples, for metrics)."""
        out: dict[tuple[str, ...], float] = {("flv",): 0, ("rtmp",): 0, ("hls",): 0}
        for fanout in self.fanouts.values():
            for proto, n in fanout.viewers().items():
                out[(proto,)] = out.get((proto,), 0) + n
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

    def refuse(self, reason: Refusal | str) -> None:
        """Count a refused connection or request (a plain string must be a Refusal's value:
        the accept loop names its own)."""
        self.metrics.inc("connections_refused_total", labels=(Refusal(reason),))

    # ------------------------------------------------------------------ HTTP

    async def handle_http(self, conn: Conn) -> None:
        """Serve one HTTP connection."""
        self.metrics.inc("connections_total", labels=("http",))
        await serve_http(conn, self.route, self.http_limits)

    async def route(self, req: Request) -> Response | StreamingResponse:
        """Dispatch one HTTP request: play, health, metrics, then `route_api`."""
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
            try:
                key = play_key(path, Media.FLV)
                pacer = self.pace_for(key.app, key.name, req.query)
            except StreamKeyError as exc:
                self.refuse(Refusal.BAD_NAME)
                return Response.text(400, f"bad stream key: {exc}")
            except PermissionError as exc:
                self.refuse(Refusal.BAD_CLASS_TOKEN)
                return Response.text(403, str(exc))
            return await flv_response(self, req, key, self.refuse, pacer)
        resp = await self.route_api(req)
        return resp if resp is not None else Response.text(404, f"not found: {path}")

    def pace_for(self, app: str, name: str, query: dict[str, str]) -> Pacer | None:
        """What paces a viewer of app/name (its class, from the token in `query`),
        None for no limit; PermissionError for an invalid class token."""
        return None

    async def route_api(self, req: Request) -> Response | None:
        """Node-specific routes; None for 404."""
        return None

    # ------------------------------------------------------------------ serve

    async def handle_rtmp(self, conn: Conn) -> None:
        """Serve one RTMP connection."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Called once when the node stops."""

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
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                for sock, handler in ((rtmp_sock, self.handle_rtmp), (http_sock, self.handle_http)):
                    nursery.start_soon(
                        lambda s=sock, h=handler: accept_loop(
                            s, h, max_connections=slots, on_refused=self.refuse
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
        finally:
            self.shutdown()

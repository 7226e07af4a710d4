"""The edge node: pull-on-miss from parents, serving the same HTTP-FLV and RTMP play as the origin."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from urllib.parse import urlencode

import trio

from common.config import EdgeConfig, class_rates
from common.net.conn import Conn
from common.net.http import LAST_CHUNK, Request, Response, StreamingResponse, chunk
from common.net.httpclient import HttpClientError, fetch
from common.net.reporter import report
from common.net.supervise import describe, log_failure
from common.proto import auth
from common.proto.control import MAX_STREAMS, ControlError, Heartbeat, check_stream_key
from common.proto.paths import hls_path, hls_target
from common.proto.shaping import Htb, Pacer
from common.proto.streamkey import StreamKey, StreamKeyError, shown
from common.serve.hlsviewers import client_key
from common.serve.node import NodeAddress, PlayNode
from common.serve.play import Subscription
from common.serve.rtmpserver import RtmpConnection, RtmpLimits
from edge.feeds import open_feed
from edge.objcache import FetchError, ObjectCache
from edge.pull import Connector, PullManager, PullSettings

log = logging.getLogger("livecdn.edge")

HLS_OBJECT_LIMIT = 32 * 1024 * 1024
"""The largest playlist or segment an edge takes from a parent."""


class Edge(PlayNode):
    """State of one edge node; `run()` serves it."""

    kind = "edge"

    def __init__(self, config: EdgeConfig, *, connector: Connector = open_feed) -> None:
        super().__init__(config)
        self.config: EdgeConfig = config
        settings = PullSettings(
            linger=config.linger_seconds,
            not_found_ttl=config.not_found_ttl,
            connect_timeout=config.connect_timeout,
            stall_timeout=config.stall_timeout,
            retry_seconds=config.retry_seconds,
        )
        self.pull = PullManager(
            config.parents,
            settings,
            make_stream=self.new_stream,
            make_fanout=self.new_fanout,
            drop_fanout=self.drop_fanout,
            connector=connector,
            max_streams=config.max_streams,
        )
        self.limits = RtmpLimits.from_config(config)  # slow_timeout bounds the RTMP drains too
        self.address: NodeAddress | None = None
        self.class_viewers: Counter[str] = Counter()
        self.htb = Htb(class_rates(config.classes), config.capacity_mbps * 125_000)
        self.hls_bytes_out = 0
        self._beat_at = 0.0
        self._beat_sent = 0
        self.hls_parents = config.hls_parents or [
            p for p in config.parents if p.startswith("http://")
        ]
        self._hls_parent = 0
        self.hls_cache = ObjectCache(
            self._fetch_hls, max_bytes=config.hls_cache_bytes, negative_ttl=config.not_found_ttl
        )
        cs = self.hls_cache.stats
        stats = self.pull.stats
        mt = self.metrics
        for name, help_text, attr in (
            ("hls_cache_hits_total", "HLS objects served from the cache.", "hits"),
            ("hls_cache_misses_total", "HLS objects fetched from a parent.", "misses"),
            (
                "hls_cache_coalesced_total",
                "HLS requests that waited on another's fetch.",
                "coalesced",
            ),
            ("hls_cache_negative_hits_total", "HLS 404s served from the cache.", "negative_hits"),
            ("hls_cache_evictions_total", "HLS objects evicted (LRU by bytes).", "evictions"),
            ("hls_cache_errors_total", "HLS fetches that failed (nothing cached).", "errors"),
            (
                "hls_bytes_from_parent_total",
                "HLS bytes received from parents.",
                "bytes_from_parent",
            ),
        ):
            mt.counter(name, help_text, (), lambda a=attr: {(): getattr(cs, a)})
        mt.counter(
            "class_viewers_total",
            "Viewers admitted with a viewer-class token, by class.",
            ("class",),
            lambda: {(k,): v for k, v in self.class_viewers.items()},
        )
        mt.counter(
            "class_bytes_total",
            "Bytes sent to viewers of each class after their join burst.",
            ("class",),
            lambda: {(k,): c.sent_bytes for k, c in self.htb.classes.items()},
        )
        mt.counter(
            "class_borrowed_bytes_total",
            "Of those, bytes beyond the class's assured rate, borrowed from the edge's link.",
            ("class",),
            lambda: {(k,): c.borrowed_bytes for k, c in self.htb.classes.items()},
        )
        mt.gauge(
            "hls_cache_bytes",
            "Bytes held by the HLS cache.",
            (),
            lambda: {(): self.hls_cache.size_bytes},
        )
        mt.gauge(
            "upstreams",
            "Open upstreams (pulls from parents).",
            (),
            lambda: {(): len(self.pull.upstreams)},
        )
        mt.counter(
            "pulls_started_total", "Upstream pulls started.", (), lambda: {(): stats.started}
        )
        mt.counter(
            "pulls_stopped_total",
            "Upstream pulls stopped, by reason.",
            ("reason",),
            lambda: {(k,): v for k, v in stats.stopped.items()},
        )
        mt.counter(
            "failovers_total",
            "Upstream switches to another parent.",
            (),
            lambda: {(): stats.failovers},
        )
        mt.counter(
            "back_to_source_bytes_total",
            "Bytes received from parents.",
            (),
            lambda: {
                (): stats.bytes_from_parents
                + sum(u.feed_bytes() for u in self.pull.upstreams.values())
            },
        )
        mt.counter(
            "not_found_cached_total",
            "Requests for missing streams answered from the short negative cache.",
            (),
            lambda: {(): stats.not_found_cached},
        )
        mt.counter(
            "not_found_total",
            "Requests for streams the parents do not have.",
            (),
            lambda: {(): stats.not_found},
        )
        mt.counter(
            "pull_failures_total",
            "Upstream connections that failed or broke, by reason (connect, refused, timeout, "
            "broken, bad_data, stalled, not_found, unexpected).",
            ("reason",),
            lambda: {(k,): v for k, v in stats.failures.items()},
        )
        mt.counter(
            "pulls_refused_total",
            "New pulls refused before reaching a parent, by reason (too_many_streams, bad_key).",
            ("reason",),
            lambda: {(k,): v for k, v in stats.refused.items()},
        )
        mt.gauge(
            "not_found_entries",
            "Streams remembered as missing at the parents (bounded negative cache).",
            (),
            lambda: {(): len(self.pull.not_found)},
        )
        mt.gauge(
            "hls_cache_negative_entries",
            "HLS 404s remembered by the object cache (bounded).",
            (),
            lambda: {(): self.hls_cache.negative_entries},
        )

    # ------------------------------------------------------------------ HLS

    async def _fetch_hls(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """GET `path` (canonical: built by `hls_target` from a validated key) from the HLS
        parents in failover order; errors and truncated bodies try the next parent, and
        raise FetchError when none answers."""
        errors = []
        parents = self.hls_parents
        for i in range(len(parents)):
            parent = parents[(self._hls_parent + i) % len(parents)]
            try:
                status, headers, body = await fetch(
                    "GET",
                    parent.rstrip("/") + path,
                    timeout=self.config.connect_timeout + 10,
                    limit=HLS_OBJECT_LIMIT,
                )
            except (OSError, HttpClientError, trio.TooSlowError) as exc:
                errors.append(f"{parent}: {exc or 'timed out'}")
                continue
            except Exception as exc:  # whatever else a parent provokes: try the next one
                log_failure(f"HLS fetch of {path} from {parent}", exc, log)
                errors.append(f"{parent}: {describe(exc)}")
                continue
            if status >= 500:
                errors.append(f"{parent}: HTTP {status}")
                continue
            if i:
                self._hls_parent = (self._hls_parent + i) % len(parents)
                self.pull.stats.failovers += 1
                log.warning("HLS: failover to parent %s", parent)
            return status, headers, body
        raise FetchError("; ".join(errors) or "no HLS parent configured")

    async def _hls(self, req: Request) -> Response | StreamingResponse:
        if req.method not in ("GET", "HEAD"):
            return Response.text(404, f"not found: {shown(req.path)}")
        try:
            key, path = hls_target(req.path)
        except StreamKeyError as exc:
            self.refuse("bad_name")
            return Response.text(400, f"bad HLS path: {exc}")
        app, name = key.app, key.name
        try:
            klass = self._class_of(app, name, req.query)
        except PermissionError as exc:
            self.refuse("bad_class_token")
            return Response.text(403, str(exc))
        if not self.hls_parents:
            return Response.text(404, "this edge has no http:// parent to pull HLS from")
        try:
            obj = await self.hls_cache.get(path)
        except FetchError as exc:
            log.warning("HLS %s for %s: upstream failed: %s", path, req.peer, exc)
            return Response.text(502, f"upstream failed: {exc}")
        except Exception as exc:  # never a crash: this request fails, the edge goes on
            log_failure(f"HLS {path} for {req.peer}", exc, log)
            return Response.text(502, f"upstream failed: {describe(exc)}")
        if obj.status != 200:
            return Response.text(404, f"not found at the parent: {path}")
        client = client_key(req.peer, req.headers.get("user-agent", ""))
        self.hls_viewers.seen((app, name), client, trio.current_time())
        self.hls_bytes_out += len(obj.body)
        headers = [("access-control-allow-origin", "*")]
        if obj.cache_control:
            headers.append(("cache-control", obj.cache_control))
        if klass is None or req.method == "HEAD":
            return Response(200, obj.body, obj.content_type, headers)
        token = urlencode({k: req.query[k] for k in ("lc", "lexp", "lsig")})
        if path.endswith(".m3u8"):
            # the segments inherit the viewer's class token
            return Response(200, with_query(obj.body, token), obj.content_type, headers)
        body = paced_body(
            obj.body,
            self.htb.classes[klass],
            timeout=self.config.slow_timeout,
            on_slow=self._slow_hls_viewer,
        )
        return StreamingResponse(200, obj.content_type, body, headers)

    def _slow_hls_viewer(self, conn: Conn) -> None:
        self.play_stats.slow_disconnects += 1
        log.warning(
            "disconnecting slow HLS viewer %s: a segment piece not taken in %g s",
            conn.peer,
            self.config.slow_timeout,
        )

    def _hls_objects(self) -> dict[tuple[str, str], dict]:
        out: dict[tuple[str, str], dict] = {}
        for path, obj in self.hls_cache.objects():
            target = hls_path(path)
            if target is None or obj.status != 200:  # negative entries hold no stream
                continue
            app, name, _ = target
            entry = out.setdefault((app, name), {"objects": 0, "bytes": 0, "paths": []})
            entry["objects"] += 1
            entry["bytes"] += len(obj.body)
            entry["paths"].append(path)
        return out

    # ------------------------------------------------------------------ play

    def pace_for(self, app: str, name: str, query: dict[str, str]) -> Pacer | None:
        """A viewer with a valid class token is paced by its class (shared on this edge)."""
        klass = self._class_of(app, name, query)
        if klass is None:
            return None
        self.class_viewers[klass] += 1
        return self.htb.classes[klass]

    def _class_of(self, app: str, name: str, query: dict[str, str]) -> str | None:
        """The viewer class in `query`'s token; PermissionError if the token is bad."""
        cfg = self.config
        if not cfg.classes or "lc" not in query:
            return None
        klass = auth.check_class(cfg.qos_secret, f"{app}/{name}", query, time.time())
        if klass is None or klass not in cfg.classes:
            raise PermissionError("invalid or expired viewer class token")
        return klass

    async def subscribe(self, app: str, name: str) -> Subscription | None:
        """StreamSource: pull on miss (Unavailable beyond `max_streams`)."""
        return await self.pull.subscribe(app, name)

    async def route(self, req: Request) -> Response | StreamingResponse:
        """The node's routes (a key the pull manager refuses: 400)."""
        try:
            return await super().route(req)
        except StreamKeyError as exc:  # the pull manager's own check (callers check first)
            self.refuse("bad_name")
            return Response.text(400, f"bad stream key: {exc}")

    async def handle_rtmp(self, conn: Conn) -> None:
        """Serve one RTMP connection (play only)."""
        self.metrics.inc("connections_total", labels=("rtmp",))
        await RtmpConnection(conn, self, self.limits, self.refuse).run()

    def _streams(self) -> dict[tuple[str, str], dict]:
        now = trio.current_time()
        out: dict[tuple[str, str], dict] = {}
        for key, up in self.pull.upstreams.items():
            out[key] = up.info()
        for key, hls in self._hls_objects().items():
            info = out.setdefault(
                key, {"app": key[0], "name": key[1], "viewers": {"total": 0}, "upstream": None}
            )
            info["hls"] = hls
        for key, info in out.items():
            n = self.hls_viewers.count(key, now)
            info["viewers"]["hls"] = n
            info["viewers"]["total"] += n
        return out

    async def route_api(self, req: Request) -> Response | None:
        """HLS, GET /api/streams and /api/streams/app/name."""
        if req.path.endswith((".m3u8", ".ts")):
            return await self._hls(req)
        if req.path == "/api/streams":
            streams = self._streams()
            return Response.json(
                {
                    "parents": self.pull.parents,
                    "hls_parents": self.hls_parents,
                    "streams": [streams[k] for k in sorted(streams)],
                }
            )
        if req.path.startswith("/api/streams/"):
            try:
                key = StreamKey.from_text(req.path[len("/api/streams/") :])
            except StreamKeyError as exc:
                self.refuse("bad_name")
                return Response.json({"error": f"bad stream key: {exc}"}, 400)
            info = self._streams().get((key.app, key.name))
            if info is None:
                return Response.json({"error": f"nothing for {key} on this edge"}, 404)
            return Response.json(info)
        return None

    # ------------------------------------------------------------------ control plane

    def heartbeat(self) -> list[Heartbeat]:
        """This second's heartbeat for the balancer. Its streams are only those this edge
        really holds (a live upstream, or HLS objects the parent served), the busiest
        MAX_STREAMS of them: asking for streams that do not exist never grows it."""
        cfg = self.config
        assert self.address is not None
        now = trio.current_time()
        sent = sum(self.play_stats.bytes_out.values()) + self.hls_bytes_out
        elapsed = max(now - self._beat_at, 1e-3)
        egress = max(0.0, (sent - self._beat_sent) * 8 / elapsed)
        self._beat_at, self._beat_sent = now, sent
        held = {k for k, up in self.pull.upstreams.items() if up.found and up.state != "closed"}
        streams: dict[str, int] = {}
        for key, info in self._streams().items():
            if key not in held and "hls" not in info:
                continue
            try:
                stream = check_stream_key(f"{key[0]}/{key[1]}")
            except ControlError:
                continue  # a name the balancer would refuse; it cannot be routed anyway
            streams[stream] = info["viewers"]["total"]
        if len(streams) > MAX_STREAMS:
            busiest = sorted(streams.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_STREAMS]
            streams = dict(busiest)
        host = cfg.public_host or ("127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address in a URL
        return [
            Heartbeat(
                node=cfg.node_id or f"edge-{self.address.http_port}",
                http=f"http://{host}:{self.address.http_port}",
                rtmp=f"rtmp://{host}:{self.address.rtmp_port}",
                viewers=sum(self.viewers().values()),
                egress_bps=egress,
                streams=streams,
                capacity_viewers=cfg.capacity_viewers,
                capacity_bps=cfg.capacity_mbps * 1e6,
                weight=cfg.weight,
                region=cfg.region,
                draining=False,
            )
        ]

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Run the pull manager and serve until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.pull.run)
            await nursery.start(self.hls_cache.run)
            address: NodeAddress = await nursery.start(super().run)
            self.address = address
            log.info("edge parents: %s", ", ".join(self.pull.parents))
            if self.config.balancer:
                self.start_supervised(
                    f"reports to the balancer {self.config.balancer}",
                    "reporter",
                    partial(report, self.config.balancer, self.heartbeat),
                )
            if self.htb.link is not None:
                self.start_supervised("link accounting", "link", self._charge_link)
            task_status.started(address)

    async def _charge_link(self) -> None:
        """Every 100 ms, charge the classes' link with what went out unshaped."""
        charged = 0
        while True:
            await trio.sleep(0.1)
            sent = sum(self.play_stats.bytes_out.values()) + self.hls_bytes_out
            unshaped = sent - sum(c.sent_bytes for c in self.htb.classes.values())
            if unshaped > charged:
                self.htb.charge_unshaped(unshaped - charged, trio.current_time())
                charged = unshaped


async def serve(
    config: EdgeConfig, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED
) -> None:
    """Run an edge node until cancelled; `task_status.started` gets its NodeAddress."""
    await Edge(config).run(task_status=task_status)


def with_query(playlist: bytes, query: str) -> bytes:
    """A media playlist whose segment URIs carry `query`."""
    lines = playlist.split(b"\n")
    extra = query.encode()
    for i, line in enumerate(lines):
        if line and not line.startswith(b"#"):
            lines[i] = line + (b"&" if b"?" in line else b"?") + extra
    return b"\n".join(lines)


HLS_PACED_SLICE = 16384
"""Bytes of a class-shaped HLS segment written per pacing step."""


def paced_body(
    body: bytes,
    pacer: Pacer,
    *,
    timeout: float = 10.0,
    on_slow: Callable[[Conn], None] | None = None,
):
    """A chunked response body that writes `body` as `pacer` allows (an HLS segment of a
    viewer with a class). A viewer that does not take a piece within `timeout` seconds is
    disconnected (`on_slow` is told)."""

    async def send(conn: Conn, data: bytes) -> bool:
        with trio.move_on_after(timeout) as scope:
            await conn.send_all(data)
        if not scope.cancelled_caught:
            return True
        if on_slow is not None:
            on_slow(conn)
        conn.close()
        return False

    async def write(conn: Conn) -> None:
        view = memoryview(body)
        for pos in range(0, len(body), HLS_PACED_SLICE):
            piece = view[pos : pos + HLS_PACED_SLICE]
            await trio.sleep(pacer.delay_for(len(piece), trio.current_time()))
            if not await send(conn, chunk(bytes(piece))):
                return
        await send(conn, LAST_CHUNK)

    return write

"""The edge node: pull-on-miss from parents, serving the same HTTP-FLV and RTMP play as the
origin, plus HLS (packaged here from the same upstream, or cached from its HTTP parents). This
module wires the parts together."""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial

import trio

from common.config import EdgeConfig
from common.config.exposure import warn_open_surfaces
from common.net.http import Request, Response, StreamingResponse, not_a_read
from common.net.httpclient import FetchResult
from common.net.reporter import report
from common.net.tls import client_context
from common.proto.clock import STAMPS_QUERY
from common.proto.paths import STREAMS_API, Media, api_stream_key, media_of, play_key
from common.proto.shaping import Pacer
from common.proto.streamkey import StreamKey, StreamKeyError
from common.serve.feeds import Feed, open_feed
from common.serve.hlsstore import HlsSettings, HlsStore
from common.serve.hlsviewers import HlsViewers
from common.serve.lifecycle import NodeControls, serve_node
from common.serve.node import NodeAddress, PlayNode
from common.serve.play import CLOCK_QUERY, Subscription
from common.serve.playauth import PullSigner, signed_urls
from common.serve.playgate import PlayGate
from common.serve.playhooks import node_hooks
from common.serve.refusal import Refusal
from common.serve.reload import Rerun
from common.serve.snapshot import IMAGE_TYPES, Snapshots
from common.serve.workerctx import CURRENT
from common.serve.workermerge import is_sibling
from common.serve.workershls import SiblingObjects, not_for_siblings
from common.serve.workersload import SiblingLoad
from common.serve.workerspull import open_sibling_feed
from common.serve.workersviewers import HLS_VIEWERS_PATH, viewer_keys
from edge.drain import EdgeDrain
from edge.failover import HLS_OBJECT_LIMIT, ParentFailover
from edge.heartbeat import EdgeHeartbeat
from edge.hls import HlsProxy
from edge.hlspackage import EdgePackagers
from edge.pull import Connector, PullManager, PullSettings, Upstream
from edge.qos import Qos
from edge.reload import reload_edge
from edge.streams import EdgeStreams

log = logging.getLogger("livecdn.edge")


class Edge:
    """One edge node: the pull manager, the HLS proxy and the viewer classes behind a
    PlayNode's listeners (the edge is its NodeRole); `run()` serves it."""

    def __init__(self, config: EdgeConfig, *, connector: Connector | None = None) -> None:
        config = worker_config(config)
        self.config = config
        self.controls = NodeControls(drain=self.drain)
        """Drain and reload, handed out by `serve()` (common.serve.lifecycle)."""
        # rtmps:// and https:// parents are verified against tls_ca (None: the system's trust)
        self.tls = client_context(config.tls_ca) if config.tls_ca else None
        self.signer = PullSigner(config.play_secret, config.cluster_secret)
        """Signs the edge's own pulls and HLS fetches (the parents may require play tokens,
        and an origin with edges_only pull tokens)."""
        self.hls_store = HlsStore(
            HlsSettings(
                target=config.hls_target_duration,
                window=config.hls_window,
                grace=config.hls_grace_seconds,
            )
        )
        """HLS packaged here (hls_mode "package"); its viewers are the edge's HLS viewers."""
        hls_viewers = self.hls_store.viewers
        self.node = PlayNode(
            config,
            "edge",
            self,
            hls_viewers=hls_viewers,
            gate=PlayGate(signed_urls(config.play_secret)),
        )
        self.hooks = node_hooks(self.node)
        self.snapshots = Snapshots(self.node, enabled=config.snapshots, wait=config.snapshot_wait)
        fanouts = self.node.fanouts
        self.pull = PullManager(
            config.parents,
            PullSettings.from_config(config),
            make_stream=fanouts.new_stream,
            make_fanout=fanouts.open,
            drop_fanout=fanouts.drop,
            connector=connector or self._open_feed,
            max_streams=config.max_streams,
        )
        self.packagers = EdgePackagers(
            self.hls_store,
            self.pull.subscribe,
            idle=self.hls_store.viewers.window + config.linger_seconds,
            max_streams=config.max_streams,
        )
        self.qos = Qos(config)
        self.hls = HlsProxy(
            config.hls_parents or config.http_parents(),
            qos=self.qos,
            viewers=hls_viewers,
            refuse=self.node.refuse,
            admit=self.node.admit,
            refuse_play=self.node.refuse_play,
            on_slow=self._slow_viewer,
            on_failover=self._hls_failover,
            cache_bytes=config.hls_cache_bytes,
            not_found_ttl=config.not_found_ttl,
            connect_timeout=config.connect_timeout,
            slow_timeout=config.slow_timeout,
            tls=self.tls,
            sign=self.signer.query if self.signer.signs else None,
            packagers=self.packagers if config.packages_hls() else None,
        )
        self.fast_http = self.hls.fast
        """Plain requests for cached HLS objects, answered before a Request is built."""
        self.hls_sibling: SiblingObjects | None = None
        """Worker i > 0 in hls_mode "cache": HLS objects from worker 0 first."""
        if CURRENT is not None:
            self._share_with_siblings(hls_viewers)
        self.streams = EdgeStreams(self.pull, self.hls, hls_viewers)
        self.address: NodeAddress | None = None
        self.heartbeat: EdgeHeartbeat | None = None
        """What the edge reports to the balancer (once it listens)."""
        self.reporter: Rerun | None = None
        """The reports to the balancer (started again when a reload changes its address or
        the cluster_secret)."""
        self.hls.register_metrics(self.node.metrics)
        self.packagers.register_metrics(self.node.metrics)
        self.qos.register_metrics(self.node.metrics)
        self.pull.register_metrics(self.node.metrics)
        self.node.metrics.gauge(
            "draining",
            "1 while the node drains before it stops (SIGTERM).",
            (),
            lambda: {(): float(self.node.gate.draining)},
        )
        if CURRENT is not None:
            self.node.metrics.gauge(
                "worker_sibling_pulls",
                "Upstreams of this worker fed by a sibling worker (each is an HTTP-FLV viewer "
                "there, which the node's merged viewers leave out).",
                (),
                lambda: {(): float(self._sibling_pulls())},
            )
        self.controls = replace(
            self.controls, reload=lambda new: reload_edge(self, worker_config(new))
        )

    def _share_with_siblings(self, hls_viewers: HlsViewers) -> None:
        """A worker of several: a sibling's HLS requests count as no viewer and its pulls
        belong to no viewer class; worker i > 0 caching HLS asks worker 0 first."""
        ctx = CURRENT
        assert ctx is not None
        hls_viewers.seen = not_for_siblings(hls_viewers.seen, None)  # type: ignore[method-assign]
        self.qos.class_of = not_for_siblings(self.qos.class_of, None)  # type: ignore[method-assign]
        if ctx.index > 0 and self.hls.packagers is None and self.hls.parents:
            self.hls_sibling = SiblingObjects(ctx, limit=HLS_OBJECT_LIMIT)
            self.hls.failover = SiblingFirst(self.hls_sibling, self.hls.failover)
            sibling = self.hls_sibling
            self.node.metrics.counter(
                "worker_hls_from_sibling_total",
                "HLS objects this worker asked worker 0 for, by outcome (answered, or left "
                "to the parents).",
                ("outcome",),
                lambda: {("answered",): sibling.answered, ("passed",): sibling.passed},
            )

    def _sibling_pulls(self) -> int:
        """Upstreams fed by a sibling worker now."""
        ctx = CURRENT
        if ctx is None:
            return 0
        return sum(
            1
            for up in self.pull.upstreams.values()
            if up.parent is not None and ctx.sibling_of(up.parent)
        )

    def _slow_viewer(self) -> None:
        self.node.fanouts.stats.slow_disconnects += 1

    def _hls_failover(self) -> None:
        self.pull.stats.failovers += 1  # one count of parent switches, FLV/RTMP or HLS

    async def drain(self) -> None:
        """Drain before stopping (edge.drain): tell the balancer, refuse new plays, give the
        viewers drain_timeout seconds, then close those left cleanly."""
        await EdgeDrain(
            self.config.drain_timeout,
            self.node.gate,
            viewers=lambda: int(sum(self.node.viewers().values())),
            connected=lambda: int(sum(self.node.fanouts.viewers().values())),
            pull=self.pull,
            heartbeat=self.heartbeat if self.config.balancer else None,
        ).run()

    def bytes_sent(self) -> int:
        """Bytes sent to viewers so far, every protocol."""
        return sum(self.node.fanouts.stats.bytes_out.values()) + self.hls.bytes_out

    async def _open_feed(self, parent: str, app: str, name: str) -> Feed:
        """Pull app/name from `parent`, signed with the edge's own play token."""
        # the parent's segment clock comes first, so that this edge's HLS (and its own
        # children's) continues the stream's segments; the clock stamps ride along for the
        # edge's players that ask for them
        marks = f"{CLOCK_QUERY}=1&{STAMPS_QUERY}=1"
        query = "&".join(q for q in (self.signer.query(app, name), marks) if q)
        if CURRENT is not None and CURRENT.sibling_of(parent):  # a sibling worker's port
            # the run's secret in a header: the URL shows up in failures' log lines
            return await open_sibling_feed(parent, app, name, query, CURRENT.secret)
        return await open_feed(parent, app, name, tls=self.tls, query=query)

    # ------------------------------------------------------------------ play

    def pace_for(self, app: str, name: str, query: dict[str, str]) -> Pacer | None:
        """With classes, a viewer is paced by its token's class, or the default class."""
        return self.qos.play_pacer(app, name, query)

    async def subscribe(self, app: str, name: str) -> Subscription | None:
        """StreamSource: pull on miss (Unavailable beyond `max_streams`)."""
        return await self.pull.subscribe(app, name)

    def _held(self, app: str, name: str) -> Upstream | None:
        """The upstream of app/name if the edge holds the stream (found, not ended)."""
        up = self.pull.upstreams.get((app, name))
        return up if up is not None and up.found and not up.stream.closed else None

    async def _snapshot_source(self, key: StreamKey, query: dict[str, str]) -> Subscription | None:
        """A held stream as it is (a snapshot adds no hold: a page polling thumbnails keeps
        no stream pulled); else, unless the query says pull=0, a pull held while it waits."""
        if (up := self._held(key.app, key.name)) is not None:
            return Subscription(up.fanout)
        return None if query.get("pull") == "0" else await self.subscribe(key.app, key.name)

    def _thumbnail(self, info: dict) -> dict:
        """A stream's description with the URL of its thumbnail (None unless held)."""
        up = self._held(info["app"], info["name"])
        info["thumbnail"] = self.snapshots.thumbnail(up.stream, "pull=0") if up else None
        return info

    async def route_api(self, req: Request) -> Response | StreamingResponse | None:
        """HLS, snapshots, GET /api/streams and /api/streams/app/name."""
        if (media := media_of(req.path)) in IMAGE_TYPES:
            key = play_key(req.path, media)
            return await self.snapshots.respond(req, key, media, self._snapshot_source)
        if media in (Media.PLAYLIST, Media.SEGMENT):
            return await self.hls.handle(req)
        if req.path == HLS_VIEWERS_PATH and is_sibling():  # on a worker's private port
            return Response.json(viewer_keys(self.hls_store.viewers, trio.current_time()))
        if req.path.startswith("/api/") and (refused := not_a_read(req)):
            return refused  # an edge's API only reads
        if req.path == STREAMS_API:
            streams = self.streams.describe()
            return Response.json(
                {
                    "parents": self.pull.parents,
                    "hls_parents": self.hls.parents,
                    "hls_mode": "package" if self.hls.packagers else "cache",
                    "streams": [self._thumbnail(streams[k]) for k in sorted(streams)],
                }
            )
        try:
            key = api_stream_key(req.path)
        except StreamKeyError as exc:
            self.node.refuse(Refusal.BAD_NAME)
            return Response.json({"error": f"bad stream key: {exc}"}, 400)
        if key is None:
            return None
        info = self.streams.describe().get((key.app, key.name))
        if info is None:
            return Response.json({"error": f"nothing for {key} on this edge"}, 404)
        return Response.json(self._thumbnail(info))

    # ------------------------------------------------------------------ serve

    async def _report(self) -> None:
        """Report to the balancer, with the config as it is now."""
        assert self.heartbeat is not None
        cfg = self.config
        await report(cfg.balancer, self.heartbeat, secret=cfg.cluster_secret)

    def start_link_accounting(self) -> None:
        """Charge the classes' link with what goes out unshaped (with capacity_mbps)."""
        self.node.start_supervised(
            "link accounting", "link", partial(self.qos.charge_link, self.bytes_sent)
        )

    def _heartbeat(self, address: NodeAddress, siblings: SiblingLoad | None) -> EdgeHeartbeat:
        """What this edge reports; with `siblings` (worker 0 of several), for the node."""

        def viewers() -> int:
            own = int(sum(self.node.viewers().values()))
            return own if siblings is None else siblings.viewers(own)

        def held() -> dict[tuple[str, str], int]:
            own = self.streams.held()
            return own if siblings is None else siblings.held(own)

        def sent() -> int:
            return self.bytes_sent() if siblings is None else siblings.sent(self.bytes_sent())

        return EdgeHeartbeat(self.config, address, held=held, viewers=viewers, sent=sent)

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Run the pull manager and the HLS cache, and serve until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.pull.run)
            await nursery.start(self.hls.run)
            await nursery.start(self.packagers.run)
            if self.hooks.active:
                await nursery.start(self.hooks.run)
            address: NodeAddress = await nursery.start(self.node.run)
            self.address = address
            log.info("edge parents: %s", ", ".join(self.pull.parents))
            log.info("HLS: %s", "packaged here" if self.hls.packagers else "cached from parents")
            siblings = None
            if self.config.balancer and CURRENT is not None and CURRENT.count > 1:
                # worker 0 reports for the node: the other workers' load counts too
                siblings = SiblingLoad(CURRENT)
                self.node.start_supervised("polls of the sibling workers", "siblings", siblings.run)
            self.heartbeat = self._heartbeat(address, siblings)
            if self.config.balancer:
                self.reporter = Rerun(self._report)
                self.node.start_supervised(
                    f"reports to the balancer {self.config.balancer}", "reporter", self.reporter
                )
            if self.qos.htb.link is not None:
                self.start_link_accounting()
            warn_open_surfaces(self.config, log)
            task_status.started(address)


class SiblingFirst(ParentFailover):
    """Worker i > 0's HLS fetches: worker 0 (which fetches each object from the parents
    once for the node), the parents when it does not answer."""

    def __init__(self, sibling: SiblingObjects, failover: ParentFailover) -> None:
        super().__init__(
            failover.parents,
            timeout=failover.timeout,
            on_failover=failover.on_failover,
            tls=failover.tls,
        )
        self.sibling = sibling

    async def fetch(self, path: str) -> FetchResult:
        got = await self.sibling.get(path)
        return got if got is not None else await super().fetch(path)


def worker_config(config: EdgeConfig) -> EdgeConfig:
    """The config of this process: as given, or for worker i > 0 of an edge with workers,
    worker 0 (its private port) as first parent, so the edge pulls each stream once, and the
    real parents after it (failover while worker 0 restarts). Only worker 0 reports to the
    balancer. HLS keeps the mode and parents the config gives (in "cache" mode, worker i > 0
    asks worker 0 before them: `SiblingFirst`)."""
    ctx = CURRENT
    if ctx is None or ctx.index == 0 or not config.parents:
        return config
    sibling = ctx.url(0)
    if config.parents[0] == sibling:
        return config
    return replace(
        config,
        parents=[sibling, *config.parents],
        hls_mode="package" if config.packages_hls() else "cache",
        hls_parents=config.hls_parents or config.http_parents(),
        balancer="",
    )


async def serve(
    config: EdgeConfig, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED
) -> None:
    """Run an edge node until cancelled; `task_status.started` gets a Serving: its
    NodeAddress and its controls (common.serve.lifecycle)."""
    await serve_node(Edge(config), task_status=task_status)

"""The edge node: pull-on-miss from parents, serving the same HTTP-FLV and RTMP play as the origin."""

from __future__ import annotations

import logging

import trio

from common.config import EdgeConfig
from common.conn import Conn
from common.http import Request, Response
from common.node import NodeAddress, PlayNode
from common.play import Subscription
from common.rtmpserver import RtmpConnection, RtmpLimits
from edge.feeds import open_feed
from edge.pull import Connector, PullManager, PullSettings

log = logging.getLogger("livecdn.edge")


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
        )
        self.limits = RtmpLimits(
            config.handshake_timeout, config.idle_timeout, config.max_message_size
        )
        stats = self.pull.stats
        mt = self.metrics
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

    async def subscribe(self, app: str, name: str) -> Subscription | None:
        """StreamSource: pull on miss."""
        return await self.pull.subscribe(app, name)

    async def handle_rtmp(self, conn: Conn) -> None:
        """Serve one RTMP connection (play only)."""
        self.metrics.inc("connections_total", labels=("rtmp",))
        await RtmpConnection(conn, self, self.limits, self.refuse).run()

    async def route_api(self, req: Request) -> Response | None:
        """GET /api/streams and /api/streams/app/name."""
        if req.path == "/api/streams":
            ups = sorted(self.pull.upstreams.values(), key=lambda u: (u.app, u.name))
            return Response.json({"parents": self.pull.parents, "streams": [u.info() for u in ups]})
        if req.path.startswith("/api/streams/"):
            app, _, name = req.path[len("/api/streams/") :].partition("/")
            up = self.pull.upstreams.get((app, name))
            if up is None:
                return Response.json({"error": f"no upstream for {app}/{name} on this edge"}, 404)
            return Response.json(up.info())
        return None

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Run the pull manager and serve until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.pull.run)
            address: NodeAddress = await nursery.start(super().run)
            log.info("edge parents: %s", ", ".join(self.pull.parents))
            task_status.started(address)


async def serve(
    config: EdgeConfig, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED
) -> None:
    """Run an edge node until cancelled; `task_status.started` gets its NodeAddress."""
    await Edge(config).run(task_status=task_status)

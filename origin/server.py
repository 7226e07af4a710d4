"""The origin node: RTMP ingest into Streams, HTTP-FLV and RTMP play (through its PlayNode),
HLS, the streams API and the announcements to the balancer."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from functools import partial

import trio

from common.config import MAX_BAN_SECONDS, OriginConfig
from common.config.exposure import warn_open_surfaces
from common.media.stream import Registry, Stream
from common.net.http import Request, Response, not_a_read
from common.net.reporter import report
from common.net.supervise import contained
from common.proto.control import MAX_STREAMS, ControlError, StreamInfo, StreamsAnnouncement
from common.proto.hooks import HookCall, HookEvent
from common.proto.numparse import parse_uint
from common.proto.paths import (
    STREAMS_API,
    Media,
    api_recording,
    api_stream_key,
    hls_target,
    media_of,
    play_key,
    recording_path,
)
from common.proto.peers import peer_host
from common.proto.rtmp import session as rs
from common.proto.shaping import Pacer
from common.proto.streamkey import StreamKey, StreamKeyError
from common.serve.admin import admin_refusal, is_admin
from common.serve.hlsstore import Continuation, HlsSettings, HlsStore
from common.serve.lifecycle import NodeControls, serve_node
from common.serve.node import NodeAddress, PlayNode
from common.serve.play import Subscription
from common.serve.playauth import carry_token, signed_urls
from common.serve.playgate import PlayGate, PlayProtocol, PlayRequest
from common.serve.playhooks import node_hooks
from common.serve.refusal import Refusal
from common.serve.reload import Rerun
from common.serve.rtmpserver import RtmpConnection, split_name
from common.serve.snapshot import IMAGE_TYPES, Snapshots
from common.serve.workerctx import CURRENT
from common.serve.workermerge import auth_headers, is_sibling
from common.serve.workershls import not_for_siblings
from common.serve.workersviewers import HLS_VIEWERS_PATH, viewer_keys
from origin.bans import Bans
from origin.drain import drain_origin
from origin.hlsfast import OriginHlsFast
from origin.info import describe
from origin.live import Live, Publisher, StreamEnd, StreamState
from origin.publish import (
    Accept,
    Decision,
    PublishCode,
    Publishers,
    PublishRequest,
    Reject,
    Takeover,
    decide,
)
from origin.recorder import Recorder
from origin.recordvod import Playback
from origin.relays import RELAYS_API, Relays
from origin.reload import reload_origin
from origin.rtmp import IngestBytes, OriginIngest
from origin.workers import OriginWorkers
from origin.workersapi import (
    YIELD_PATH,
    ban_here,
    claimed,
    hls_of_owner,
    kick_on_node,
    node_lists,
    yield_name,
)

log = logging.getLogger("livecdn.origin")


OriginAddress = NodeAddress


class Origin:
    """State of one origin node (its streams, publishers and bans), the NodeRole of the
    PlayNode that serves it; `run()` serves it."""

    def __init__(self, config: OriginConfig) -> None:
        self.config = config
        self.controls = NodeControls(drain=self.drain)
        """Drain and reload, handed out by `serve()` (common.serve.lifecycle)."""
        self.registry = Registry()
        self.live: dict[tuple[str, str], Live] = {}
        self.bans = Bans()
        self.ingest_bytes = IngestBytes()
        self.address: NodeAddress | None = None
        self.hls = HlsStore(
            HlsSettings(
                target=config.hls_target_duration,
                window=config.hls_window,
                grace=config.hls_grace_seconds,
                directory=config.hls_dir,
            )
        )
        self.node = PlayNode(
            config,
            "origin",
            self,
            hls_viewers=self.hls.viewers,
            ingest=partial(OriginIngest, self),
            gate=PlayGate(
                signed_urls(config.play_secret, config.cluster_secret if config.edges_only else "")
            ),
        )
        self.fanouts = self.node.fanouts
        self.workers = OriginWorkers(self, CURRENT) if CURRENT is not None else None
        """This worker's share of a node with `workers = N` (None: one process)."""
        if self.workers is not None:  # a sibling's HLS requests are not viewers
            viewers = self.hls.viewers
            viewers.seen = not_for_siblings(viewers.seen, None)  # type: ignore[method-assign]
        self.fast_http = OriginHlsFast(self)
        """The node's fast lane: the HLS store's objects, answered before a Request is built."""
        self.hooks = node_hooks(self.node)
        self.snapshots = Snapshots(self.node, enabled=config.snapshots, wait=config.snapshot_wait)
        self.recorder = Recorder(config, self.hooks.client, self.node.metrics)
        self.playback = Playback(config.record_dir, config.record_segment_seconds)
        mt = self.node.metrics
        self.hls.register_metrics(mt)
        mt.gauge("streams", "Live streams.", (), lambda: {(): self.stream_count()})
        if self.workers is not None:
            mt.gauge(
                "worker_sibling_pulls",
                "Mirrors of streams another worker owns, by owner (each a viewer there).",
                ("worker",),
                self.workers.sibling_pulls,
            )
        mt.gauge("publishers", "Connected publishers.", (), lambda: {(): self.publisher_count()})
        mt.counter(
            "bytes_in_total",
            "Bytes received from publishers.",
            (),
            lambda: {(): self.ingest_bytes.total()},
        )
        mt.counter("publishes_total", "Publishes accepted.", ())
        mt.counter(
            "publishers_resumed_total",
            "Publishers back within publisher_grace (viewers kept).",
            (),
        )
        self.relays = Relays(self)
        self.reporter: Rerun | None = None
        """The announcements to the balancer (started again when a reload changes its
        address or the cluster_secret)."""
        self.controls = replace(self.controls, reload=partial(reload_origin, self))

    # ------------------------------------------------------------------ streams

    def publisher_count(self) -> int:
        """Connected publishers."""
        return sum(1 for live in self.live.values() if live.publisher is not None)

    def stream_count(self) -> int:
        """Live streams this worker owns (its mirrors of other workers' left out)."""
        if self.workers is None:
            return len(self.registry)
        mirrored = sum(1 for m in self.workers.mirrors.values() if m.stream is not None)
        return len(self.registry) - mirrored  # a mirror still connecting has no stream yet

    def open_mirror(self, app: str, name: str) -> Stream:
        """A stream fed by another worker (origin.workers): served to viewers here, but
        not a publish (no hooks, recording, pushes, HLS packaging or publish counters)."""
        stream = self.fanouts.new_stream(app, name)
        fanout = self.fanouts.open(stream)
        self.registry.add(stream)
        self.node.start_supervised(f"fan-out of {app}/{name}", "fanout", fanout.run)
        return stream

    def close_mirror(self, stream: Stream, why: str) -> None:
        """End a mirror's stream (its viewers get a clean end)."""
        fanout = self.fanouts.get(stream)
        if fanout is not None:
            fanout.close()
        stream.close()
        self.registry.remove(stream)
        self.fanouts.drop(stream)
        log.info("mirror of %s/%s ended: %s", stream.app, stream.name, why)

    def local_viewers(self, stream: Stream) -> int:
        """Viewers of `stream` on this worker (every protocol, siblings' pulls included)."""
        fanout = self.fanouts.get(stream)
        flv = sum(fanout.viewers().values()) if fanout is not None else 0
        return int(flv + self.hls.viewers.count((stream.app, stream.name), trio.current_time()))

    def _open_stream(
        self,
        app: str,
        name: str,
        stream: Stream | None = None,
        continues: Continuation | None = None,
    ) -> Live:
        """A new published stream; `stream`: a mirror's (its fan-out running), which this
        worker takes over from the sibling that owned it (its viewers kept); `continues`:
        that sibling's HLS playlist, which this worker's continues."""
        key = f"{app}/{name}"
        if stream is None:
            stream = self.fanouts.new_stream(app, name)
            fanout = self.fanouts.open(stream)
            self.registry.add(stream)
            self.node.start_supervised(f"fan-out of {key}", "fanout", fanout.run)
        live = self.live[(app, name)] = Live(stream)
        cfg = self.config
        if cfg.hls and (not cfg.hls_apps or app in cfg.hls_apps):
            self.hls.prepare(stream, continues)  # before any frame: the packager starts later
            self.node.start_supervised(
                f"HLS packager of {key}", "packager", partial(self._package, live)
            )
        self.recorder.stream_opened(stream)
        self.relays.stream_opened(stream)
        return live

    async def _package(self, live: Live) -> None:
        """Package `live`'s stream for HLS until it ends or moves to another worker (then
        the new owner packages it, and this worker forgets its playlist)."""
        with live.packaging:
            await self.hls.package(live.stream)
        if live.packaging.cancelled_caught:
            self.hls.drop((live.stream.app, live.stream.name))

    def hand_off(self, live: Live, owner: int) -> None:
        """`live`'s stream moves to worker `owner` (its publisher came back, or took over,
        there): no longer a publish here (no HLS packaging, recording or pushes), it goes on
        as a mirror of the new owner's, so its viewers here are kept."""
        assert self.workers is not None
        stream = live.stream
        key = (stream.app, stream.name)
        if self.live.get(key) is live:
            del self.live[key]
        live.set_state(StreamState.ENDED)  # its grace timer, if any, stops
        live.packaging.cancel()
        self.recorder.stop(*key)
        self.relays.stream_moved(stream)
        self.workers.mirror_to(stream, owner)

    def _close_stream(self, stream: Stream, end: StreamEnd, detail: str = "") -> None:
        fanout = self.fanouts.get(stream)
        if fanout is not None:
            fanout.close()
        stream.close()
        self.registry.remove(stream)
        live = self.live.pop((stream.app, stream.name), None)
        if live is not None:
            live.set_state(StreamState.ENDED)
        self.fanouts.drop(stream)
        if self.workers is not None:  # the node's other workers may take the name now
            self.workers.release(stream.app, stream.name)
        log.info("stream %s/%s ended: %s%s", stream.app, stream.name, end, detail)

    def stream_info(self, stream: Stream) -> dict:
        """The JSON description of a live stream."""
        live = self.live.get((stream.app, stream.name))
        fanout = self.fanouts.get(stream)
        viewers = dict(fanout.viewers()) if fanout else {}
        viewers["hls"] = self.hls.viewers.count((stream.app, stream.name), trio.current_time())
        info = describe(stream, live.publisher if live is not None else None, viewers)
        info["thumbnail"] = self.snapshots.thumbnail(stream)
        if self.workers is not None and (mirror := self.workers.mirrored(stream)) is not None:
            info["upstream"] = {"parent": mirror.parent}  # the merge takes the owner's
        return info

    # ------------------------------------------------------------------ play and publish

    async def subscribe(self, app: str, name: str) -> Subscription | None:
        """StreamSource: the live stream for a new viewer."""
        stream = self.registry.get(app, name)
        if stream is None and self.workers is not None:  # owned by another worker?
            stream = await self.workers.mirror(app, name)
        if stream is None:
            await self.relays.demand(app, name)
            stream = self.registry.get(app, name)
            if stream is None and self.workers is not None:  # another worker pulled it
                stream = await self.workers.mirror(app, name)
        if stream is None or stream.closed:
            return None
        return Subscription(self.fanouts[stream])

    def pace_for(self, app: str, name: str, query: dict[str, str]) -> Pacer | None:
        """StreamSource: origin viewers are not paced."""
        return None

    async def publish(self, rtmp: RtmpConnection, event: rs.Publish) -> Publisher | Reject:
        """Act on a publish request as `decide` says, and then the on_publish hook (asked
        only about publishes the origin would accept): the accepted publisher, else the
        rejection (answered on the session; the connection counts it)."""
        session = rtmp.session
        name, query = split_name(event.name)
        peer = rtmp.conn.peer
        request = PublishRequest(session.app or "", name, query, peer_host(peer))
        decision = decide(request, self._publishers(), self.config, time.time())
        if self.node.gate.draining:
            decision = Reject(PublishCode.DENIED, Refusal.DRAINING, "the origin is stopping")
        if self.workers is not None and isinstance(decision, Accept) and not decision.resumed:
            key = decision.key
            with self.workers.reserving(key.app, key.name):  # the claim, then the hook
                decision = await claimed(self, request, decision)
                decision = await self._hook_publish(request, decision, peer, query)
            if isinstance(decision, Reject) and (key.app, key.name) not in self.live:
                self.workers.drop_adopted(key.app, key.name, decision.detail)
                self.workers.release(key.app, key.name)
        else:
            decision = await self._hook_publish(request, decision, peer, query)
        if isinstance(decision, Reject):
            session.reject_publish(event.stream_id, decision.code.value, decision.detail)
            return decision
        skey = decision.key
        live = self.live.get((skey.app, skey.name))
        if isinstance(decision, Takeover):
            assert live is not None and live.publisher is not None
            old = live.publisher
            log.info(
                "takeover: %s replaces %s as publisher of %s (%s)",
                peer,
                old.rtmp.conn.peer,
                skey,
                decision.why,
            )
            old.rtmp.cancel()
            self._unpublished(old)
        elif decision.resumed:
            assert live is not None
            if not self.relays.hand_over(skey.app, skey.name):
                self.node.metrics.inc("publishers_resumed_total")
                log.info("publisher of %s is back within the grace: viewers kept", skey)
        else:
            taken, continues = None, None
            if self.workers is not None:  # a stream moving here from a sibling is kept
                taken = self.workers.adopted.pop((skey.app, skey.name), None)
                self.workers.stop_mirror(skey.app, skey.name, "this worker took the stream")
                resumed, continues = self.workers.handover(skey.app, skey.name)
                if resumed:  # back within the grace, on another worker than before
                    self.node.metrics.inc("publishers_resumed_total")
            live = self._open_stream(skey.app, skey.name, taken, continues)
        live.stream.new_source()
        pub = Publisher(
            rtmp, live.stream, event.stream_id, time.time(), request.host, trio.current_time(),
            query,
        )  # fmt: skip
        live.publisher = pub
        live.set_state(StreamState.LIVE)
        session.accept_publish(event.stream_id, name)
        self.node.metrics.inc("publishes_total")
        log.info("publish %s from %s", skey, peer)
        return pub

    async def _hook_publish(
        self, request: PublishRequest, decision: Decision, peer: str, query: dict[str, str]
    ) -> Decision:
        """`decision` after the on_publish hook (asked only about a publish the origin would
        take), decided again on the origin as it is once the hook answered."""
        hooks = self.hooks.client
        if isinstance(decision, Reject) or not hooks.has(HookEvent.PUBLISH):
            return decision
        key = decision.key
        call = HookCall.of(HookEvent.PUBLISH, key.app, key.name, peer, "rtmp", query)
        if why := await hooks.allows(call):
            return Reject(PublishCode.DENIED, Refusal.HOOK, f"{key}: on_publish: {why}")
        return decide(request, self._publishers(), self.config, time.time())

    def _publishers(self) -> Publishers:
        """What the publish decision reads of this origin."""
        hosts, waiting, idle = {}, set(), {}
        now = trio.current_time()
        for key, live in self.live.items():
            if live.publisher is not None:
                hosts[key] = live.publisher.host
                idle[key] = now - live.publisher.last_media
            elif live.state is StreamState.WAITING or self.relays.pulled(*key):
                waiting.add(key)  # a local publisher takes a pulled stream over
        return Publishers(hosts, waiting, self.bans.until, len(self.registry), idle)

    def unpublish(
        self, pub: Publisher, end: StreamEnd, detail: str = "", *, grace: bool = False
    ) -> None:
        """The publisher left (`end`, `detail` appended to it in logs): end its stream unless
        another publisher took over; with `grace`, viewers wait `publisher_grace` seconds for
        the same name to come back."""
        key = (pub.stream.app, pub.stream.name)
        live = self.live.get(key)
        if live is None or live.publisher is not pub:
            return
        live.publisher = None
        self._unpublished(pub)
        wait = self.config.publisher_grace
        nursery = self.node.nursery
        if not grace or wait <= 0 or nursery is None:
            self._close_stream(pub.stream, end, detail)
            return
        live.grace_ends = trio.current_time() + wait
        live.set_state(StreamState.WAITING)
        log.info("%s/%s: %s%s; viewers wait %g s for it to come back", *key, end, detail, wait)
        nursery.start_soon(
            partial(
                contained,
                f"grace timer of {key[0]}/{key[1]}",
                partial(self._end_waiting, live, end, detail),
                logger=log,
            )
        )

    def _unpublished(self, pub: Publisher) -> None:
        """on_unpublish: `pub` no longer feeds its stream."""
        stream = pub.stream
        call = HookCall.of(
            HookEvent.UNPUBLISH, stream.app, stream.name, pub.rtmp.conn.peer, "rtmp", pub.query
        )
        self.hooks.client.notify(call)

    async def _end_waiting(self, live: Live, end: StreamEnd, detail: str) -> None:
        while live.state is StreamState.WAITING:
            if trio.current_time() >= live.grace_ends:
                grace = self.config.publisher_grace
                self._close_stream(live.stream, end, f"{detail} ({grace:g} s ago)")
                return
            await trio.sleep_until(live.grace_ends)

    # ------------------------------------------------------------------ HTTP

    async def route_api(self, req: Request) -> Response | None:
        """Recordings, HLS, snapshots, GET /api/streams, GET|DELETE /api/streams/app/name."""
        if (recording := await self._recordings(req)) is not None:
            return recording
        if (media := media_of(req.path)) in IMAGE_TYPES:
            key = play_key(req.path, media)
            return await self.snapshots.respond(
                req, key, media, lambda k, _: self.subscribe(k.app, k.name)
            )
        if media in (Media.PLAYLIST, Media.SEGMENT):
            try:
                target = hls_target(req.path)
            except StreamKeyError as exc:
                self.node.refuse(Refusal.BAD_NAME)
                return Response.text(400, f"bad stream key: {exc}")
            if req.method in ("GET", "HEAD"):
                play = PlayRequest(PlayProtocol.HLS, target.key, req.query, req.peer)
                denied = await self.node.admit(play)
                if denied is not None:
                    return denied
            resp = None
            if self.workers is not None and not is_sibling():
                resp = await hls_of_owner(self, req, target)
            if resp is None:
                resp = await self.hls.respond(req, target)
            if target.media is Media.PLAYLIST and resp is not None and resp.status == 200:
                resp.body = carry_token(resp.body, req.query)
            return resp
        if req.path == HLS_VIEWERS_PATH and is_sibling():  # on a worker's private port
            return Response.json(viewer_keys(self.hls.viewers, trio.current_time()))
        if req.path.startswith(YIELD_PATH + "/") and is_sibling() and req.method == "POST":
            skey = StreamKey.parse(*req.path[len(YIELD_PATH) + 1 :].partition("/")[::2])
            try:
                doc = json.loads(req.body)
            except ValueError:
                doc = None
            return await yield_name(self, skey.app, skey.name, doc, req.peer)
        if req.path == RELAYS_API:
            return await node_lists(self, req, self.relays.respond(req), ("pushes", "pulls"))
        if req.path == STREAMS_API:
            if refused := not_a_read(req):
                return refused
            admin = is_admin(req, self.config.admin_token)
            return Response.json(
                {"streams": [self._shown(self.stream_info(s), admin) for s in self.registry]}
            )
        try:
            skey = api_stream_key(req.path)
        except StreamKeyError as exc:
            return Response.json({"error": f"bad stream key: {exc}"}, 400)
        if skey is None:
            return None
        if self.workers is not None and req.method == "DELETE" and not is_sibling():
            if refused := admin_refusal(req, self.config.admin_token):
                return refused
            return await kick_on_node(self, req, skey)
        return self._api_stream(req, skey)

    def _api_stream(self, req: Request, skey: StreamKey) -> Response:
        app, name = skey.app, skey.name
        if req.method == "DELETE" and (refused := admin_refusal(req, self.config.admin_token)):
            return refused  # before the lookup: a stranger learns nothing about which names live
        stream = self.registry.get(app, name)
        mirror = stream is not None and self.workers is not None and self.workers.mirrored(stream)
        if req.method == "DELETE" and self.workers is not None and (stream is None or mirror):
            return ban_here(self, req, skey)  # owned by another worker, which kicks
        if stream is None:
            return Response.json({"error": f"no live stream {skey}"}, 404)
        if req.method == "GET":
            admin = is_admin(req, self.config.admin_token)
            return Response.json(self._shown(self.stream_info(stream), admin))
        if req.method == "DELETE":
            ban = self.kick_ban(req)
            if ban is None:
                return Response.json(
                    {"error": f"ban must be whole seconds in 0..{MAX_BAN_SECONDS}"}, 400
                )
            live = self.live.get((app, name))
            if ban > 0 and not self.bans.ban((app, name), ban, time.time()):
                return Response.json({"error": f"{self.bans.max_bans} bans in force already"}, 503)
            pub = live.publisher if live is not None else None
            if pub is not None:
                pub.rtmp.cancel()
                self.unpublish(pub, StreamEnd.KICKED, f" by {req.peer}")
            elif live is not None and live.state is StreamState.WAITING:
                self._close_stream(stream, StreamEnd.KICKED, f" by {req.peer}")
            log.info("kicked %s (ban %d s) on request of %s", skey, ban, req.peer)
            return Response.json({"kicked": str(skey), "ban_s": ban})
        return Response.json({"error": f"method {req.method} not allowed"}, 405)

    async def _recordings(self, req: Request) -> Response | None:
        """Playback (/app/name/recordings/...) and /api/recordings[/app/name[/start|/stop]];
        None for other paths. StreamKeyError for a malformed key."""
        if (target := recording_path(req.path)) is not None:
            if refused := not_a_read(req):
                return refused
            play = PlayRequest(PlayProtocol.HLS, target.key, req.query, req.peer)
            if (denied := await self.node.admit(play)) is not None:
                return denied
            resp = await self.playback.respond(req, target)
            if not target.file and resp.status == 200:
                resp.body = carry_token(resp.body, req.query)
            return resp
        if (api := api_recording(req.path)) is None:
            return None
        skey, action = api
        if not action:
            if refused := not_a_read(req):
                return refused
            app, name = (skey.app, skey.name) if skey is not None else ("", "")
            admin = is_admin(req, self.config.admin_token)
            mine = Response.json(await self.recorder.listing(app, name, admin=admin))
            return await node_lists(self, req, mine, ("active",))
        assert skey is not None
        if req.method != "POST":
            return Response.json({"error": f"method {req.method} not allowed"}, 405)
        if refused := admin_refusal(req, self.config.admin_token):
            return refused
        if self.workers is not None and not is_sibling():  # the owner records its stream
            owner = await self.workers.lookup(skey.app, skey.name)
            if owner is not None and owner != self.workers.index:
                got = await self.workers.forward(owner, "POST", req.target, auth_headers(req))
                if got is None:
                    return Response.json({"error": f"worker {owner} did not answer"}, 502)
                status, body, headers = got
                return Response(status, body, headers.get("content-type", "application/json"))
        if action == "stop":
            stopped = self.recorder.stop(skey.app, skey.name)
            if stopped is None:
                return Response.json({"error": f"{skey} is not being recorded"}, 404)
            log.info("recording of %s stopped on request of %s", skey, req.peer)
            return Response.json({"stopped": stopped.as_json(True)})
        stream = self.registry.get(skey.app, skey.name)
        if stream is None or stream.closed:
            return Response.json({"error": f"no live stream {skey}"}, 404)
        started = self.recorder.start(stream, "api")
        if isinstance(started, str):
            return Response.json({"error": started}, 409)
        return Response.json({"started": started.as_json(True)})

    def kick_ban(self, req: Request) -> int | None:
        """A kick's ban in seconds: its `ban` query (None if that is no whole number of
        seconds up to MAX_BAN_SECONDS), else the configured `kick_ban_seconds`."""
        return parse_uint(req.query.get("ban", str(int(self.config.kick_ban_seconds))),
                          MAX_BAN_SECONDS)  # fmt: skip

    @staticmethod
    def _shown(info: dict, admin: bool) -> dict:
        """A stream's description as a request may see it: the publisher's address only
        for admin requests (common.proto.admin)."""
        if not admin and info.get("publisher"):
            info["publisher"] = {k: v for k, v in info["publisher"].items() if k != "address"}
        return info

    def announcement(self) -> list[StreamsAnnouncement]:
        """The origin's live streams, for the balancer (sent every second; a node's worker 0
        sends the whole node's, with what its siblings said last)."""
        streams = []
        infos = (self.stream_info(stream) for stream in self.registry)  # built up to the cap
        if self.workers is not None:
            infos = self.workers.node_streams(list(infos))
        for info in infos:
            if len(streams) >= MAX_STREAMS:
                break
            try:
                streams.append(
                    StreamInfo(
                        app=info["app"],
                        name=info["name"],
                        bitrate=float(info["bitrate_in"] or 0),
                        viewers=info["viewers"]["total"],
                        since=info["publisher"]["since"] if info["publisher"] else None,
                    )
                )
            except (ControlError, KeyError, TypeError, ValueError) as exc:
                log.debug("not announcing %s/%s: %s", info.get("app"), info.get("name"), exc)
        node = self.config.node_id or f"origin-{self.address.http_port if self.address else 0}"
        return [StreamsAnnouncement(node, tuple(streams))]

    async def _report(self) -> None:
        """Announce streams to the balancer, with the config as it is now."""
        cfg = self.config
        await report(cfg.balancer, self.announcement, secret=cfg.cluster_secret)

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Serve; also announce streams to the balancer if one is configured. When it
        stops, every stream is closed (viewers get a clean end)."""
        try:
            async with trio.open_nursery() as nursery:
                if self.hooks.active:
                    await nursery.start(self.hooks.run)
                if self.recorder.enabled:
                    await nursery.start(self.recorder.run)
                self.address = await nursery.start(self.node.run)
                if self.relays.configured:
                    await nursery.start(self.relays.run)
                if self.config.balancer and (self.workers is None or self.workers.index == 0):
                    if self.workers is not None:  # worker 0 reports for the node
                        self.node.start_supervised(
                            "the siblings' streams", "reporter", self.workers.poll_siblings
                        )
                    self.reporter = Rerun(self._report)
                    self.node.start_supervised(
                        f"reports to the balancer {self.config.balancer}", "reporter", self.reporter
                    )
                warn_open_surfaces(self.config, log, rtmp_port=self.address.rtmp_port)
                task_status.started(self.address)
        finally:
            self.end_streams()

    def end_streams(self) -> None:
        """End every stream (the origin stops): publishers are closed, viewers get the end."""
        for stream in list(self.registry):
            if self.workers is not None and self.workers.mirrored(stream) is not None:
                self.workers.stop_mirror(stream.app, stream.name, "the origin stops")
                continue
            live = self.live.get((stream.app, stream.name))
            if live is not None and (pub := live.publisher) is not None:
                pub.rtmp.cancel()
                self.unpublish(pub, StreamEnd.SHUTDOWN)
            if self.registry.get(stream.app, stream.name) is stream:  # no publisher ended it
                self._close_stream(stream, StreamEnd.SHUTDOWN)

    async def drain(self) -> None:
        """Drain before stopping (origin.drain): end every stream cleanly."""
        await drain_origin(self)


async def serve(
    config: OriginConfig, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED
) -> None:
    """Run an origin node until cancelled; `task_status.started` gets a Serving: its
    OriginAddress and its controls (common.serve.lifecycle)."""
    await serve_node(Origin(config), task_status=task_status)

"""The origin's relays: pushes of its live streams to other RTMP servers (config `push`) and
pulls of external sources into origin streams (`pull_static`, `pull_on_demand`), their
/api/relays and their metrics. Targets and sources come only from the config."""

from __future__ import annotations

from collections import Counter, OrderedDict
from functools import partial
from typing import TYPE_CHECKING

import trio

from common.config.relayspec import (
    PushTarget,
    RelaySpecError,
    pull_template,
    push_target,
    static_pull,
)
from common.media.stream import Stream
from common.net.http import Request, Response, not_a_read
from common.net.supervise import contained
from common.net.tls import client_context
from common.proto.streamkey import StreamKey
from common.serve.admin import is_admin
from common.serve.feeds import Failure
from origin.live import StreamEnd, StreamState
from origin.relaypull import Puller
from origin.relaypush import Pusher
from origin.relaystate import CONNECT_TIMEOUT, log, shown_url

if TYPE_CHECKING:
    from origin.server import Origin

RELAYS_API = "/api/relays"
FAILED_TTL = 2.0
"""An on-demand source that failed is not asked again for the same name this long..."""
NOT_FOUND_TTL = 10.0
"""... or this long if it said it has no such stream (viewers cannot make a node ask a
source again and again for names it does not have)."""
MAX_REMEMBERED = 1024
"""Bound of that memory of failures."""
MAX_STARTING = 4
"""On-demand pulls of one app connecting at once (each one outbound connection a viewer
caused); a viewer of yet another name gets a 404 meanwhile."""
READY_WAIT = CONNECT_TIMEOUT + 5.0
"""A viewer of an on-demand stream waits at most this long for its first media."""


class Relays:
    """Every push and pull of one origin (`run` starts the static pulls)."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        cfg = origin.config
        self.targets: dict[str, list[PushTarget]] = {}
        for target in map(push_target, cfg.push):
            self.targets.setdefault(target.app, []).append(target)
        self.static = [static_pull(item) for item in cfg.pull_static]
        if origin.workers is not None and origin.workers.index != 0:
            self.static = []  # a node's static pulls are its worker 0's
        self.templates = {t.app: t for t in map(pull_template, cfg.pull_on_demand)}
        self.tls = client_context(cfg.relay_tls_ca) if cfg.relay_tls_ca else None
        self.pushers: dict[tuple[str, str, str], Pusher] = {}
        self.pulls: dict[StreamKey, Puller] = {}
        self.failed: OrderedDict[StreamKey, float] = OrderedDict()  # until when (trio clock)
        self.nursery: trio.Nursery | None = None
        mt = origin.node.metrics
        self.metrics = mt
        mt.counter("relay_push_bytes_total", "Bytes pushed to relay targets.", ("target",))
        mt.counter("relay_push_reconnects_total", "Reconnects of pushes.", ("target",))
        mt.counter("relay_push_failures_total", "Push connections that failed.", ("reason",))
        mt.counter("relay_pull_bytes_total", "Bytes pulled from relay sources.", ("source",))
        mt.counter("relay_pull_reconnects_total", "Reconnects of pulls.", ("source",))
        mt.counter("relay_pull_failures_total", "Pull connections that failed.", ("reason",))
        mt.gauge("relay_pushes", "Pushes by state.", ("state",), partial(self._states, True))
        mt.gauge("relay_pulls", "Pulls by state.", ("state",), partial(self._states, False))

    @property
    def configured(self) -> bool:
        """Whether the config asks for any relay."""
        return bool(self.targets or self.static or self.templates)

    def _states(self, pushes: bool) -> dict[tuple[str, ...], float]:
        relays = self.pushers.values() if pushes else self.pulls.values()
        counts = Counter(r.status.state.value for r in relays)
        return {(state,): n for state, n in counts.items()}

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Say what is relayed, start the static pulls, and hold the relays' tasks."""
        for app, targets in self.targets.items():
            for t in targets:
                log.info("relay: streams of app %s are pushed to %s/NAME", app, t.url)
        for pull in self.static:
            log.info("relay: %s is pulled from %s", pull.key, shown_url(pull.source.url, False))
        for app, t in self.templates.items():
            log.info(
                "relay: streams of app %s are pulled on demand from %s (linger %g s)",
                app,
                shown_url(t.template, False),
                self.origin.config.pull_linger_seconds,
            )
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                for pull in self.static:
                    label = shown_url(pull.source.url, False)
                    self._start_pull(
                        Puller(pull.key, pull.source, label, self, self.metrics, tls=self.tls)
                    )
                task_status.started()
                await trio.sleep_forever()
        finally:
            self.nursery = None

    # ------------------------------------------------------------------ push

    def stream_opened(self, stream: Stream) -> None:
        """Push a new live stream to its app's targets."""
        if self.nursery is None:
            return
        for target in self.targets.get(stream.app, ()):
            url = target.url_for(stream.name)
            key = (stream.app, stream.name, target.url)
            if key in self.pushers:
                continue
            label = shown_url(target.url, False)
            pusher = Pusher(stream, url, label, self.metrics, self.tls)
            self.pushers[key] = pusher
            self.nursery.start_soon(self._run_push, key, pusher)

    def stream_moved(self, stream: Stream) -> None:
        """`stream` moved to another worker of the node, which pushes it now: stop here."""
        for pusher in self.pushers.values():
            if pusher.stream is stream:
                pusher.scope.cancel()

    async def _run_push(self, key: tuple[str, str, str], pusher: Pusher) -> None:
        try:
            with pusher.scope:
                await contained(pusher.status.what, pusher.run, logger=log)
        finally:
            if self.pushers.get(key) is pusher:
                del self.pushers[key]

    # ------------------------------------------------------------------ pull

    def _start_pull(self, puller: Puller) -> None:
        assert self.nursery is not None
        self.pulls[puller.key] = puller
        self.nursery.start_soon(self._run_pull, puller)

    async def _run_pull(self, puller: Puller) -> None:
        try:
            await contained(puller.status.what, puller.run, logger=log)
        finally:
            if self.pulls.get(puller.key) is puller:
                del self.pulls[puller.key]
            if puller.on_demand and puller.status.bytes == 0:
                not_found = puller.status.error_kind == Failure.NOT_FOUND.value
                ttl = NOT_FOUND_TTL if not_found else FAILED_TTL
                self.failed.pop(puller.key, None)
                self.failed[puller.key] = trio.current_time() + ttl
                while len(self.failed) > MAX_REMEMBERED:
                    self.failed.popitem(last=False)

    async def demand(self, app: str, name: str) -> None:
        """A viewer asks for app/name, which is not live: start its on-demand pull (if the
        app has one) and wait until media flows or the pull fails (bounded)."""
        template = self.templates.get(app)
        if template is None or self.nursery is None:
            return
        key = StreamKey(app, name)  # validated by the play path
        puller = self.pulls.get(key)
        if puller is None:
            until = self.failed.get(key)
            if until is not None and trio.current_time() < until:
                return
            self.failed.pop(key, None)
            most = self.origin.config.max_streams  # pulls still connecting count too
            if len(self.origin.registry) >= most or len(self.pulls) >= most:
                return
            if self.starting(app) >= MAX_STARTING:
                log.debug("no on-demand pull of %s yet: %d of app %s connecting", key,
                          MAX_STARTING, app)  # fmt: skip
                return
            try:
                source = template.source(name)
            except RelaySpecError as exc:
                log.info("no on-demand pull of %s: %s", key, exc)
                return
            linger = self.origin.config.pull_linger_seconds
            label = shown_url(template.template, False)
            puller = Puller(key, source, label, self, self.metrics, tls=self.tls, linger=linger)
            self._start_pull(puller)
        with trio.move_on_after(READY_WAIT):
            await puller.ready.wait()

    def starting(self, app: str) -> int:
        """On-demand pulls of `app` that have not had media yet."""
        return sum(
            1
            for p in self.pulls.values()
            if p.on_demand and p.key.app == app and not p.ready.is_set()
        )

    def pulled(self, app: str, name: str) -> bool:
        """Whether a pull feeds stream app/name now."""
        puller = self.pulls.get(StreamKey(app, name))
        return puller is not None and puller.stream is not None

    def hand_over(self, app: str, name: str) -> bool:
        """A local publisher was accepted for app/name: a pull feeding it stops (True)."""
        puller = self.pulls.get(StreamKey(app, name))
        if puller is None or puller.stream is None:
            return False
        puller.hand_over()
        log.info("publisher of %s/%s replaces its pull (viewers kept)", app, name)
        return True

    # PullHost

    def pull_blocked(self, key: StreamKey) -> bool:
        live = self.origin.live.get((key.app, key.name))
        if live is None:
            return False
        puller = self.pulls.get(key)
        ours = puller is not None and puller.stream is live.stream
        return not ours and (live.publisher is not None or live.state is StreamState.WAITING)

    async def claim(self, key: StreamKey) -> bool:
        workers = self.origin.workers
        return workers is None or await workers.claim(key.app, key.name) == workers.index

    def let_go(self, key: StreamKey) -> None:
        if self.origin.workers is not None:
            self.origin.workers.release(key.app, key.name)

    def open_pulled(self, key: StreamKey) -> Stream | None:
        origin = self.origin
        if (key.app, key.name) in origin.live or len(origin.registry) >= origin.config.max_streams:
            return None
        return origin._open_stream(key.app, key.name).stream

    def close_pulled(self, stream: Stream, why: str) -> None:
        live = self.origin.live.get((stream.app, stream.name))
        if live is not None and live.stream is stream and live.publisher is None:
            self.origin._close_stream(stream, StreamEnd.UNPULLED, f" ({why})")

    def viewers(self, stream: Stream) -> int:
        origin = self.origin
        fanout = origin.fanouts.get(stream)
        flv = sum(fanout.viewers().values()) if fanout is not None else 0
        hls = origin.hls.viewers.count((stream.app, stream.name), trio.current_time())
        return flv + hls

    @property
    def grace(self) -> float:
        return self.origin.config.publisher_grace

    # ------------------------------------------------------------------ API

    def respond(self, req: Request) -> Response:
        """GET /api/relays: every push and pull with its state and counters (full URLs for
        admin requests only)."""
        if refused := not_a_read(req):
            return refused
        admin = is_admin(req, self.origin.config.admin_token)
        return Response.json(
            {
                "pushes": [p.as_json(admin) for p in self.pushers.values()],
                "pulls": [p.as_json(admin) for p in self.pulls.values()],
            }
        )

"""An origin worker's share of a node with `workers = N` (common.serve.workers): the node's
stream ownership (a publish or relay pull claims its name from the supervisor; a name owned
by another worker is refused), and the mirrors that feed this worker's viewers of a stream
another worker owns: one HTTP-FLV pull per stream from the owner's private port (the run's
secret in a header), with the owner's segment clock, so edges pulling from any worker cut
the same HLS segments. A mirror is not a publish: no hooks, recording, pushes, HLS packaging
or publish counters; it ends with the owner's stream, or `linger` after its last viewer."""

from __future__ import annotations

import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING

import trio

from common.media.segclock import CLOCK_PREFIX, ClockState
from common.media.stream import Stream
from common.net.httpclient import fetch
from common.net.supervise import contained, describe
from common.proto.clock import STAMPS_QUERY
from common.proto.errors import ConnClosed, ProtocolError
from common.proto.paths import STREAMS_API, hls_target
from common.proto.rtmp import messages as m
from common.proto.rtmp import session as rs
from common.proto.streamkey import StreamKeyError
from common.serve.feeds import End, NotFound, ParentError, Tracks
from common.serve.hlsstore import Continuation
from common.serve.play import CLOCK_QUERY
from common.serve.workerctx import SECRET_HEADER, WorkerContext
from common.serve.workermerge import each_sibling, json_docs, merge_streams_api
from common.serve.workersowners import OwnerClient
from common.serve.workerspull import open_sibling_feed
from common.serve.workersviewers import node_hls_viewers

if TYPE_CHECKING:
    from origin.server import Origin

log = logging.getLogger("livecdn.origin")

CONNECT_TIMEOUT = 5.0
"""Seconds the owner has to answer a mirror's pull."""
READY_AFTER = 1.0
"""Viewers waiting for a new mirror get the stream at its first video keyframe, or this long
after its first media (an audio-only stream)."""
READY_WAIT = CONNECT_TIMEOUT + 5.0
"""A viewer waits at most this long for a new mirror's first media."""
STALL = 10.0
"""A mirror whose owner sends nothing this long (a stream waiting for its publisher sends
nothing) asks the owner again."""
RETRY = 0.5
"""Seconds before a broken mirror asks again (while the owner still owns the stream)."""
MOVE_POLL = 0.02
"""Seconds between two looks at the table while a stream moves to another worker."""
OBJECTS_KEPT = 64
"""HLS objects of other workers' streams kept by a worker (the latest used)."""
PLAYLIST_FRESH = 0.5
"""Seconds a worker answers with a playlist fetched from the owner before asking again."""
HlsAnswer = tuple[int, bytes, str, str]
"""An HLS object from its owner: status, body, content type, cache-control."""
POLL_S = 1.0
"""Seconds between two polls of the siblings' streams (the balancer's report period)."""
MAX_HANDED = 1024
"""Yielded names' handovers kept at most, waiting for their publishes to open them."""
FORWARD_TIMEOUT = 5.0
FORWARD_LIMIT = 32 * 1024 * 1024
"""Bytes of an answer forwarded from the owner at most (an HLS segment, an API answer)."""


class Mirror:
    """This worker's copy of stream `key`, owned by worker `owner` (`run`)."""

    def __init__(
        self,
        workers: OriginWorkers,
        key: tuple[str, str],
        owner: int,
        stream: Stream | None = None,
    ) -> None:
        self.workers = workers
        self.key = key
        self.owner = owner
        self.stream = stream
        """Its stream; given: this worker's own until now, moving to `owner` (`mirror_to`)."""
        self.moved = stream is not None
        self.ready = trio.Event()
        if stream is not None:
            self.ready.set()
        self.pulling = False
        """Whether its pull from the owner is connected (one viewer of the owner)."""
        self.scope = trio.CancelScope()
        self.why = "the origin stops"

    @property
    def parent(self) -> str:
        return self.workers.ctx.url(self.owner)

    async def run(self) -> None:
        origin = self.workers.origin
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_viewers)
                    await self._pull()
                    nursery.cancel_scope.cancel()
        finally:
            self.ready.set()
            self.pulling = False
            if self.workers.mirrors.get(self.key) is self:
                del self.workers.mirrors[self.key]
            if self.stream is not None:
                origin.close_mirror(self.stream, self.why)
                self.stream = None

    async def _watch_viewers(self) -> None:
        """End once the stream has had no viewer for `linger` seconds."""
        linger = self.workers.origin.config.pull_linger_seconds
        unwatched = trio.current_time()
        while True:
            await trio.sleep(min(1.0, max(linger, 0.05)))
            now = trio.current_time()
            if self.stream is not None and self.workers.origin.local_viewers(self.stream) > 0:
                unwatched = now
            elif self.ready.is_set() and now - unwatched >= linger:
                self.why = f"no viewer for {linger:g} s"
                self.scope.cancel()
                return

    async def _pull(self) -> None:
        away_since: float | None = None
        grace = self.workers.origin.config.publisher_grace
        if self.moved and not await self._owner_took_it():
            self.why = f"worker {self.owner} did not take the stream"
            return
        while True:
            try:
                await self._connection()
                self.why = "the owner ended the stream"
                return  # the owner's stream ended: so does this one
            except NotFound:
                self.why = "the owner has no such stream"
                return
            except (ParentError, OSError, ConnClosed, ProtocolError, trio.TooSlowError) as exc:
                why = describe(exc)
            finally:
                self.pulling = False
            if not self.ready.is_set():
                log.info("mirror of %s/%s from worker %d failed: %s", *self.key, self.owner, why)
                self.why = why
                return
            now = trio.current_time()
            away_since = now if away_since is None else away_since
            owner = await self.workers.lookup(*self.key)
            if owner != self.owner or now - away_since > grace:
                self.why = f"{why} (the stream's owner is gone)"
                return
            await trio.sleep(RETRY)

    async def _owner_took_it(self) -> bool:
        """Wait (CONNECT_TIMEOUT at most) until the table says the new owner claimed the
        stream: it stopped its own mirror of this worker's by then (no loop of two mirrors)."""
        deadline = trio.current_time() + CONNECT_TIMEOUT
        while trio.current_time() < deadline:
            owner = await self.workers.lookup(*self.key)
            if owner == self.owner:
                return True
            if owner is not None:
                return False
            await trio.sleep(MOVE_POLL)
        return False

    async def _connection(self) -> None:
        ctx = self.workers.ctx
        query = f"{CLOCK_QUERY}=1&{STAMPS_QUERY}=1"
        with trio.fail_after(CONNECT_TIMEOUT):
            feed = await open_sibling_feed(self.parent, *self.key, query, ctx.secret)
        self.pulling = True
        try:
            await self._relay(feed)
        finally:
            feed.close()

    async def _relay(self, feed) -> None:  # type: ignore[no-untyped-def]
        """Copy the owner's stream until it ends (returns) or breaks (raises)."""
        stream = self.stream
        first_media: float | None = None
        last = trio.current_time()
        if stream is not None:
            stream.new_source()
        while True:
            events = None
            with trio.move_on_at(last + STALL):
                events = await feed.receive()
            if events is None:
                raise ParentError(f"nothing from the owner for {STALL:g} s")
            last = trio.current_time()
            for event in events:
                if stream is None:
                    stream = self.stream = self.workers.origin.open_mirror(*self.key)
                    stream.new_source()
                if isinstance(event, rs.Media):
                    if event.type_id == m.DATA_AMF0 and event.payload.startswith(CLOCK_PREFIX):
                        self._anchor(stream, event.payload)
                        continue
                    frame = stream.push(event.type_id, event.timestamp, event.payload)
                    if first_media is None:
                        first_media = last
                    if not self.ready.is_set() and (
                        (frame is not None and frame.keyframe) or last - first_media >= READY_AFTER
                    ):
                        self.ready.set()
                elif isinstance(event, rs.Metadata):
                    stream.set_metadata(event.payload, event.values)
                elif isinstance(event, Tracks):
                    stream.tracks = (event.audio, event.video)
                elif isinstance(event, End):
                    return

    def _anchor(self, stream: Stream, payload: bytes) -> None:
        """Continue the owner's segment clock (a bad one is ignored)."""
        try:
            stream.take_clock(ClockState.decode(payload))
        except ValueError as exc:
            log.warning("mirror of %s/%s: bad segment clock from the owner: %s", *self.key, exc)


def hls_key(path: str) -> tuple[str, str] | None:
    """The stream of an HLS path (/app/name.m3u8, /app/name-session-seq.ts)."""
    try:
        target = hls_target(path)
    except StreamKeyError:
        return None
    return target.key.app, target.key.name


class OriginWorkers:
    """Ownership and mirrors of one origin worker (`origin.workers`; None when the origin
    runs in one process)."""

    def __init__(self, origin: Origin, ctx: WorkerContext) -> None:
        self.origin = origin
        self.ctx = ctx
        self.client = (
            OwnerClient(ctx.owners_fd, ctx.index, held=self._holds) if ctx.owners_fd >= 0 else None
        )
        self.claiming: dict[tuple[str, str], int] = {}
        """Names this worker is asking the table for now (how many asks): not to be yielded
        as unused (`workersapi.yield_name`) while a granted claim is on its way here."""
        self.mirrors: dict[tuple[str, str], Mirror] = {}
        self.adopted: dict[tuple[str, str], Stream] = {}
        """Mirrors' streams whose owner let their name go to a publish here (`take_mirror`),
        until the publish opens them as its own (or is refused: they end)."""
        self.handed: dict[tuple[str, str], tuple[bool, Continuation | None]] = {}
        """What the worker that yielded a name to a publish here said of it (whether its
        publisher resumed, where its HLS playlist stands), until the publish opens the
        stream (or is refused)."""
        self.sibling_docs: dict[int, dict] = {}
        self.node_hls: dict[str, int] | None = None
        """HLS viewers by "app/name" for the node, as counted last (None: unknown)."""
        """The siblings' streams API answers, as polled last (worker 0, for the balancer)."""
        self.objects: OrderedDict[str, tuple[float, HlsAnswer]] = OrderedDict()
        """HLS objects fetched from their owners (when, what), the latest used last."""
        self.fetching: dict[str, trio.Event] = {}
        """HLS objects being fetched from their owners (set when done)."""

    @property
    def index(self) -> int:
        return self.ctx.index

    async def claim(self, app: str, name: str, host: str = "") -> int | None:
        """Claim app/name for this worker, under its max_streams now (and for a publisher
        from `host`, its max_publishers_per_ip), node-wide: the owner (this worker's index
        when granted), None (the node's max_streams reached), or workersowners' BANNED,
        HOST_LIMIT or UNANSWERED."""
        if self.client is None:
            return self.index
        config = self.origin.config
        with self.reserving(app, name):
            return await self.client.claim(
                app, name, config.max_streams, host, config.max_publishers_per_ip
            )

    @contextlib.contextmanager
    def reserving(self, app: str, name: str) -> Iterator[None]:
        """While this worker claims app/name (and decides on the publish after): the name
        is not yielded as unused (`workersapi.yield_name`)."""
        key = (app, name)
        self.claiming[key] = self.claiming.get(key, 0) + 1
        try:
            yield
        finally:
            if (left := self.claiming.pop(key) - 1) > 0:
                self.claiming[key] = left

    def _holds(self, key: str) -> bool:
        """Whether this worker has a stream of "app/name" (published or pulled)."""
        app, _, name = key.partition("/")
        return (app, name) in self.origin.live

    async def lookup(self, app: str, name: str) -> int | None:
        if self.client is None:
            return None
        return await self.client.lookup(app, name)

    def release(self, app: str, name: str) -> None:
        """Give app/name up (in the background) unless this worker has a stream of it again
        by the time the supervisor is asked."""
        nursery = self.origin.node.nursery
        if self.client is None or nursery is None:
            return
        # once the worker stops (its nursery closed), the supervisor drops its claims at exit
        with contextlib.suppress(RuntimeError):
            nursery.start_soon(
                partial(contained, f"release of {app}/{name}",
                        partial(self._release, app, name), logger=log)
            )  # fmt: skip

    async def _release(self, app: str, name: str) -> None:
        assert self.client is not None
        async with self.client.lock:  # after the asks before it (a claim of the name again)
            pass
        if (app, name) not in self.origin.live:
            await self.client.release(app, name)

    def sibling_pulls(self) -> dict[tuple[str, ...], float]:
        """Connected mirrors by owner: each is one viewer of that worker (the merged viewers
        leave them out)."""
        out: dict[tuple[str, ...], float] = {}
        for mirror in self.mirrors.values():
            if mirror.pulling:
                out[(str(mirror.owner),)] = out.get((str(mirror.owner),), 0) + 1
        return out

    def mirrored(self, stream: Stream) -> Mirror | None:
        mirror = self.mirrors.get((stream.app, stream.name))
        return mirror if mirror is not None and mirror.stream is stream else None

    async def mirror(self, app: str, name: str) -> Stream | None:
        """The stream app/name for a viewer of this worker when another worker owns it (a
        mirror of it, started if needed); None if no other worker owns it."""
        key = (app, name)
        mirror = self.mirrors.get(key)
        if mirror is None:
            owner = await self.lookup(app, name)
            if owner is None or owner == self.index:
                return None
            mirror = self.mirrors.get(key)  # another viewer started it meanwhile
            nursery = self.origin.node.nursery
            if mirror is None and nursery is not None:
                mirror = self.mirrors[key] = Mirror(self, key, owner)
                nursery.start_soon(
                    partial(contained, f"mirror of {app}/{name}", mirror.run, logger=log)
                )
            if mirror is None:
                return None
        with trio.move_on_after(READY_WAIT):
            await mirror.ready.wait()
        stream = mirror.stream
        return stream if stream is not None and not stream.closed else None

    def take_mirror(self, app: str, name: str) -> None:
        """The owner let app/name go to a publish on this worker: the mirror stops pulling
        (before the owner mirrors this worker's) and its stream, viewers and all, waits in
        `adopted` for the publish."""
        mirror = self.mirrors.pop((app, name), None)
        if mirror is None:
            return
        mirror.why = "this worker took the stream"
        mirror.scope.cancel()
        stream, mirror.stream = mirror.stream, None
        if stream is not None and not stream.closed:
            self.adopted[(app, name)] = stream

    def take_handover(self, app: str, name: str, body: bytes) -> None:
        """Keep what the owner that yielded app/name answered (`workersapi.yield_name`) for
        the publish that opens the stream here (`handover`); a bad answer is ignored."""
        try:
            doc = json.loads(body)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        while len(self.handed) >= MAX_HANDED:  # publishes that neither opened nor failed
            del self.handed[next(iter(self.handed))]
        hls = Continuation.from_json(doc.get("hls"))
        self.handed[(app, name)] = (doc.get("resumed") is True, hls)

    def handover(self, app: str, name: str) -> tuple[bool, Continuation | None]:
        """What the owner that yielded app/name said of it: whether its publisher resumed
        here, and where its HLS playlist stands (False, None: nothing was yielded)."""
        return self.handed.pop((app, name), (False, None))

    def drop_adopted(self, app: str, name: str, why: str) -> None:
        """The publish that was to take app/name's mirrored stream was refused: it ends."""
        self.handed.pop((app, name), None)
        stream = self.adopted.pop((app, name), None)
        if stream is not None:
            self.origin.close_mirror(stream, why)

    def mirror_to(self, stream: Stream, owner: int) -> None:
        """This worker's `stream` moved to worker `owner`: it goes on as a mirror of it."""
        key = (stream.app, stream.name)
        nursery = self.origin.node.nursery
        self.stop_mirror(*key, "the stream moves here")  # none: the stream was this worker's
        if nursery is None:
            self.origin.close_mirror(stream, "the origin stops")
            return
        mirror = self.mirrors[key] = Mirror(self, key, owner, stream)
        nursery.start_soon(
            partial(contained, f"mirror of {key[0]}/{key[1]}", mirror.run, logger=log)
        )
        log.info("%s/%s moved to worker %d: its viewers here are kept, fed from there", *key, owner)

    def stop_mirror(self, app: str, name: str, why: str) -> None:
        """End the mirror of app/name, if any (this worker took the name, or it stops)."""
        mirror = self.mirrors.pop((app, name), None)
        if mirror is not None:
            mirror.why = why
            mirror.scope.cancel()
            if mirror.stream is not None:
                self.origin.close_mirror(mirror.stream, mirror.why)
                mirror.stream = None

    async def hls_object(self, path: str, segment: bool) -> HlsAnswer | None:
        """Playlist or segment `path` of a stream another worker owns, from that worker:
        status, body, content type and cache-control; None if no other worker owns it or it
        did not answer. A segment is kept once fetched, a playlist for PLAYLIST_FRESH
        seconds (OBJECTS_KEPT at most), and the requests that come while one is fetched
        wait for it: each object is asked of the owner about once per worker."""
        now = trio.current_time()
        kept = self.objects.get(path)
        if kept is not None and (segment or now - kept[0] < PLAYLIST_FRESH):
            self.objects.move_to_end(path)
            return kept[1]
        if (pending := self.fetching.get(path)) is not None:
            await pending.wait()
            if (kept := self.objects.get(path)) is not None:
                return kept[1]
        elif len(self.fetching) < OBJECTS_KEPT:
            self.fetching[path] = done = trio.Event()
            try:
                answer = await self._owner_object(path)
            finally:
                del self.fetching[path]
                done.set()
            if answer is not None and answer[0] == 200:
                self.objects[path] = (trio.current_time(), answer)
                self.objects.move_to_end(path)
                while len(self.objects) > OBJECTS_KEPT:
                    self.objects.popitem(last=False)
            return answer
        return await self._owner_object(path)

    async def _owner_object(self, path: str) -> HlsAnswer | None:
        key = hls_key(path)
        owner = await self.lookup(*key) if key is not None else None
        if owner is None or owner == self.index:
            return None
        got = await self.forward(owner, "GET", path, [])
        if got is None:
            return None
        status, body, headers = got
        answer = (
            status,
            body,
            headers.get("content-type", "application/octet-stream"),
            headers.get("cache-control", ""),
        )
        return answer

    async def forward_all(
        self, method: str, target: str, headers: list[tuple[str, str]]
    ) -> dict[int, tuple[int, bytes, dict[str, str]]]:
        """`forward` to every sibling at once: the answers by worker index."""
        return await each_sibling(self.ctx, lambda i: self.forward(i, method, target, headers))

    async def poll_siblings(self) -> None:
        """Keep what the siblings say of their streams (`node_streams`) and the node's HLS
        viewers (each once), every POLL_S."""
        while True:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._count_hls)
                answers = await self.forward_all("GET", STREAMS_API, [])
            ok = {i: body for i, (status, body, _) in answers.items() if status == 200}
            self.sibling_docs = json_docs(ok)
            await trio.sleep(POLL_S)

    async def _count_hls(self) -> None:
        self.node_hls = await node_hls_viewers(self.ctx)

    def node_streams(self, own: list[dict]) -> list[dict]:
        """The node's streams (each once, described by its owner, viewers summed, an HLS
        viewer seen on several workers once), from this worker's `own` descriptions and what
        the siblings said last."""
        docs = {**self.sibling_docs, self.index: {"streams": own}}
        doc, _ = merge_streams_api(self.ctx, docs, {}, self.node_hls)
        return [s for s in doc.get("streams", []) if isinstance(s, dict)]

    async def forward(
        self,
        owner: int,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        *,
        body: bytes = b"",
    ) -> tuple[int, bytes, dict[str, str]] | None:
        """`method` `target` asked of worker `owner`'s private port (with the run's secret
        and `headers`): status, body and headers, or None if it did not answer."""
        try:
            got = await fetch(
                method,
                self.ctx.url(owner) + target,
                timeout=FORWARD_TIMEOUT,
                limit=FORWARD_LIMIT,
                headers=[(SECRET_HEADER, self.ctx.secret), *headers],
                body=body,
            )
        except Exception as exc:  # any failure: the caller answers for itself
            log.warning("worker %d did not answer %s %s: %s", owner, method, target.partition("?")[0],
                        f"{type(exc).__name__}: {exc}"[:200])  # fmt: skip
            return None
        return got.status, got.body, dict(got.headers)

"""The edge's HLS: answers playlist and segment requests from the object cache (misses
pulled from the HTTP parents) or, in hls_mode "package", from the edge's own packagers;
class-paced to viewers with a token."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TypedDict
from urllib.parse import unquote

import trio

from common.net.conn import Conn
from common.net.http import Request, Response, SharedResponse, StreamingResponse
from common.net.httpclient import FetchResult
from common.net.supervise import describe, log_failure
from common.proto import auth, playtoken
from common.proto.errors import Unavailable
from common.proto.hlsplaylist import with_query
from common.proto.paths import HlsTarget, Media, hls_path, hls_target
from common.proto.streamkey import StreamKeyError, shown
from common.serve.hlsviewers import HlsViewers, client_key
from common.serve.metrics import NodeMetrics
from common.serve.playgate import PlayProtocol, PlayRequest
from common.serve.refusal import Refusal
from common.serve.workermerge import is_sibling
from edge.failover import ParentFailover
from edge.hlspackage import EdgePackagers
from edge.objcache import FetchError, ObjectCache
from edge.pacedbody import paced_body
from edge.qos import Qos

log = logging.getLogger("livecdn.edge")


class HlsObjects(TypedDict):
    """What the HLS cache holds of one stream (the streams API's `hls` in cache mode)."""

    mode: str
    objects: int
    bytes: int
    paths: list[str]


MAX_MEMO = 4096
"""Request targets (and clients) whose parse the fast lane keeps; the table is emptied when
full (the targets come from viewers)."""
MAX_MEMO_AGENT = 512
"""User agents longer than this are keyed each time, not memoized (memo bounded small)."""

PREFETCH_TIMEOUT = 2.0
"""Seconds a playlist's refresh waits for its newest segment to be cached."""


def newest_uri(playlist: bytes) -> str | None:
    """The last URI line of a media playlist (its newest segment), None if it has none."""
    for line in reversed(playlist.split(b"\n")):
        line = line.strip()
        if line and not line.startswith(b"#"):
            return line.decode("ascii", "replace")
    return None


HLS_FETCH_SLACK = 10.0
"""Seconds an HLS fetch from a parent may take beyond connect_timeout."""


class ClientMemo:
    """`client_key`, memoized (a viewer asks again and again): at most `MAX_MEMO` keys,
    none with an agent longer than `MAX_MEMO_AGENT`, so the memo stays a few MB whatever
    agents clients send."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], str] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __call__(self, peer: str, agent: str) -> str:
        if len(agent) > MAX_MEMO_AGENT:
            return client_key(peer, agent)
        client = self._keys.get((peer, agent))
        if client is None:
            if len(self._keys) >= MAX_MEMO:
                self._keys.clear()
            client = self._keys[(peer, agent)] = client_key(peer, agent)
        return client


class HlsProxy:
    """Answers GET/HEAD of /app/name.m3u8 and .ts from the cache, pulling misses from the
    HLS parents, or from `packagers`; counts HLS viewers and the bytes sent to them."""

    def __init__(
        self,
        parents: list[str],
        *,
        qos: Qos,
        viewers: HlsViewers,
        refuse: Callable[[Refusal], None],
        admit: Callable[[PlayRequest], Awaitable[Response | None]],
        refuse_play: Callable[[PlayRequest, Refusal, Exception], Response],
        on_slow: Callable[[], None],
        on_failover: Callable[[], None],
        cache_bytes: int,
        not_found_ttl: float,
        connect_timeout: float,
        slow_timeout: float,
        tls: ssl.SSLContext | None = None,
        sign: Callable[[str, str], str] | None = None,
        packagers: EdgePackagers | None = None,
    ) -> None:
        self.parents = parents
        self.packagers = packagers
        """hls_mode "package": HLS cut here (None: "cache", from the parents)."""
        self.sign = sign
        """The edge's own play token query for app, name (fetches from the parents)."""
        self.qos = qos
        self.viewers = viewers
        self.refuse = refuse
        self.admit = admit
        """The node's play gate: None to go on, else the refusal to answer."""
        self.refuse_play = refuse_play
        """The node's 403 for a refused play (counted and logged)."""
        self.on_slow = on_slow
        self.slow_timeout = slow_timeout
        self.bytes_out = 0
        """Bytes of playlists and segments sent to viewers."""
        self.failover = ParentFailover(
            parents, timeout=connect_timeout + HLS_FETCH_SLACK, on_failover=on_failover, tls=tls
        )
        self.cache = ObjectCache(self._fetch, max_bytes=cache_bytes, negative_ttl=not_found_ttl)
        self._targets: dict[str, tuple[str, tuple[str, str], HlsTarget]] = {}
        """Fast lane: request target -> (cache path, stream, parsed)."""
        self._client = ClientMemo()
        """Fast lane: (peer, user agent) -> HLS viewer key."""

    def fast(
        self, method: str, target: str, headers: dict[str, str], peer: str
    ) -> SharedResponse | None:
        """The cached object a plain request (GET or HEAD of a playlist or segment, no query
        and no escapes) gets, answered without building a Request; None when it takes more
        (a token, viewer classes, not cached or not packaged yet): `handle` answers those.
        The node asks only while no play check is configured."""
        if (
            self.qos.classes
            or (method != "GET" and method != "HEAD")
            or "?" in target
            or "%" in target
            or "#" in target
        ):
            return None
        known = self._targets.get(target)
        if known is None:
            if not target.startswith("/") or target.startswith(("//", "/static/")):
                return None
            try:
                parsed = hls_target(target)
            except StreamKeyError:
                return None
            if len(self._targets) >= MAX_MEMO:
                self._targets.clear()
            known = self._targets[target] = (
                parsed.path,
                (parsed.key.app, parsed.key.name),
                parsed,
            )
        if self.packagers is not None:
            return self._fast_packaged(method, known[1], known[2], headers, peer)
        if not self.parents:
            return None
        obj = self.cache.peek(known[0], negative=False)
        if obj is None or obj.response is None:
            return None
        client = self._client(peer, headers.get("user-agent", ""))
        self.viewers.seen(known[1], client, trio.current_time())
        if method == "GET":
            self.bytes_out += len(obj.body)
        return obj.response

    def _fast_packaged(
        self,
        method: str,
        key: tuple[str, str],
        target: HlsTarget,
        headers: dict[str, str],
        peer: str,
    ) -> SharedResponse | None:
        """hls_mode "package": the fast lane's answer from this edge's own store, while the
        stream is being packaged here (else `_packaged` starts it)."""
        packagers = self.packagers
        assert packagers is not None
        entry = packagers.live(key)
        if entry is None:
            return None
        shared = packagers.store.shared(target, self._client(peer, headers.get("user-agent", "")))
        if shared is None:
            return None
        entry.asked = trio.current_time()  # its packager goes on
        if method == "GET":
            self.bytes_out += len(shared.body)
        return shared

    async def _fetch(self, path: str) -> FetchResult:
        """A parent's copy of `path` (cached under `path`), asked for with the edge's own
        play token when it has a play_secret."""
        target = hls_path(path) if self.sign is not None else None
        query = self.sign(target[0], target[1]) if self.sign and target else ""
        got = await self.failover.fetch(f"{path}?{query}" if query else path)
        if got.status == 200 and path.endswith(".m3u8"):
            await self._prefetch_newest(path, got.body)
        return got

    async def _prefetch_newest(self, playlist: str, body: bytes) -> None:
        """Fetch the playlist's newest segment into the cache before the playlist is
        served: every viewer asks for it next, and finds it cached. Bounded by
        PREFETCH_TIMEOUT; a failure only means viewers fetch it on demand."""
        uri = newest_uri(body)
        if uri is None or "/" in uri or ":" in uri:
            return
        app = playlist[1:].partition("/")[0]
        try:
            seg = hls_target(unquote(f"/{app}/{uri.partition('?')[0]}"))
        except StreamKeyError:
            return
        if seg.media is not Media.SEGMENT or self.cache.holds(seg.path):
            return
        with trio.move_on_after(PREFETCH_TIMEOUT):
            try:
                await self.cache.get(seg.path)
            except Exception as exc:  # the viewers will ask for it themselves
                log.info("HLS prefetch of %s failed: %s", seg.path, describe(exc))

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Run the cache's fetches until cancelled."""
        await self.cache.run(task_status=task_status)

    async def handle(self, req: Request) -> Response | StreamingResponse:
        """Answer one request for a playlist or segment."""
        if req.method not in ("GET", "HEAD"):
            return Response.text(404, f"not found: {shown(req.path)}")
        try:
            target = hls_target(req.path)
        except StreamKeyError as exc:
            self.refuse(Refusal.BAD_NAME)
            return Response.text(400, f"bad HLS path: {exc}")
        key, path = target.key, target.path
        play = PlayRequest(PlayProtocol.HLS, key, req.query, req.peer)
        try:
            klass = self.qos.class_of(key.app, key.name, req.query)
        except PermissionError as exc:
            return self.refuse_play(play, Refusal.BAD_CLASS_TOKEN, exc)
        denied = await self.admit(play)
        if denied is not None:
            return denied
        if self.packagers is not None:
            return await self._packaged(req, target, klass)
        if not self.parents:
            return Response.text(404, "this edge has no http:// parent to pull HLS from")
        try:
            obj = await self.cache.get(path)
        except FetchError as exc:
            log.warning("HLS %s for %s: upstream failed: %s", path, req.peer, exc)
            return Response.text(502, f"upstream failed: {exc}")
        except Exception as exc:  # never a crash: this request fails, the edge goes on
            log_failure(f"HLS {path} for {req.peer}", exc, log)
            return Response.text(502, f"upstream failed: {describe(exc)}")
        if obj.status != 200:
            return Response.text(404, f"not found at the parent: {path}")
        client = self._client(req.peer, req.headers.get("user-agent", ""))
        self.viewers.seen((key.app, key.name), client, trio.current_time())
        shared = obj.response
        assert shared is not None  # every 200 has one
        if is_sibling():  # worker i > 0 keeps it: tell it how old this copy is
            sibling = shared.as_response()
            sibling.headers.append(("age", str(obj.age_at(trio.current_time()))))
            return sibling
        if klass is None and not req.query:  # nothing to add or pace: the shared answer
            if req.method == "GET":
                self.bytes_out += len(shared.body)
            return shared
        return self._deliver(req, target, klass, shared.as_response())

    async def _packaged(
        self, req: Request, target: HlsTarget, klass: str | None
    ) -> Response | StreamingResponse:
        """hls_mode "package": the playlist (which starts packaging) or a segment, from
        this edge's own store."""
        packagers = self.packagers
        assert packagers is not None
        key = target.key
        if target.media is Media.PLAYLIST:
            try:
                found = await packagers.ensure(key.app, key.name)
            except Unavailable as exc:
                return Response.text(503, str(exc))
            except Exception as exc:  # never a crash: this request fails, the edge goes on
                log_failure(f"HLS {target.path} for {req.peer}", exc, log)
                return Response.text(502, f"upstream failed: {describe(exc)}")
            if not found:
                return Response.text(404, f"no such stream at the parents: {key}")
        else:
            packagers.asked((key.app, key.name))
        resp = await packagers.store.respond(req, target)  # counts the viewer
        if resp is None or resp.status != 200:
            return resp or Response.text(404, f"not found: {target.path}")
        return self._deliver(req, target, klass, resp)

    def _deliver(
        self, req: Request, target: HlsTarget, klass: str | None, resp: Response
    ) -> Response | StreamingResponse:
        """A playlist or segment to a viewer: a playlist carries the viewer's tokens into
        its segment URIs, a segment is paced by the viewer's class."""
        self.bytes_out += len(resp.body)
        if target.media is Media.PLAYLIST:
            # the segments inherit the viewer's class token (without one: the default class)
            # and play token (in place of the edge's own, from its parent)
            tokens = (auth.class_params(req.query) if klass else "", playtoken.carried(req.query))
            query = "&".join(t for t in tokens if t)
            if query:
                resp.body = with_query(resp.body, query)
            return resp
        if klass is None or req.method == "HEAD":
            return resp
        paced = paced_body(
            resp.body, self.qos.pacer(klass), timeout=self.slow_timeout, on_slow=self._slow
        )
        return StreamingResponse(200, resp.content_type, paced, resp.headers)

    def _slow(self, conn: Conn) -> None:
        self.on_slow()
        log.warning(
            "disconnecting slow HLS viewer %s: a segment piece not taken in %g s",
            conn.peer,
            self.slow_timeout,
        )

    def objects(self) -> dict[tuple[str, str], HlsObjects]:
        """What the cache holds, by stream (negative entries hold no stream)."""
        out: dict[tuple[str, str], HlsObjects] = {}
        for path, obj in self.cache.objects():
            target = hls_path(path)
            if target is None or obj.status != 200:
                continue
            app, name, _ = target
            entry = out.setdefault(
                (app, name), {"mode": "cache", "objects": 0, "bytes": 0, "paths": []}
            )
            entry["objects"] += 1
            entry["bytes"] += len(obj.body)
            entry["paths"].append(path)
        return out

    def register_metrics(self, mt: NodeMetrics) -> None:
        """Export the HLS cache's numbers."""
        stats = self.cache.stats
        for name, help_text, attr in (
            ("hls_cache_hits_total", "HLS objects served from the cache.", "hits"),
            ("hls_cache_misses_total", "HLS objects fetched from a parent.", "misses"),
            (
                "hls_cache_coalesced_total",
                "HLS requests that waited on another's fetch.",
                "coalesced",
            ),
            ("hls_cache_negative_hits_total", "HLS 404s served from the cache.", "negative_hits"),
            (
                "hls_cache_stale_total",
                "HLS requests answered with a stale object while it was refreshed.",
                "stale",
            ),
            ("hls_cache_evictions_total", "HLS objects evicted (LRU by bytes).", "evictions"),
            ("hls_cache_errors_total", "HLS fetches that failed (nothing cached).", "errors"),
            (
                "hls_bytes_from_parent_total",
                "HLS bytes received from parents.",
                "bytes_from_parent",
            ),
        ):
            mt.counter(name, help_text, (), lambda a=attr: {(): getattr(stats, a)})
        mt.gauge(
            "hls_cache_bytes",
            "Bytes held by the HLS cache.",
            (),
            lambda: {(): self.cache.size_bytes},
        )
        mt.gauge(
            "hls_cache_negative_entries",
            "HLS 404s remembered by the object cache (bounded).",
            (),
            lambda: {(): self.cache.negative_entries},
        )

"""The edge's HLS object cache: pull-on-miss from the parent, one fetch per path at a time.

Playlists and segments are fetched from the parent only when a viewer asks for one that is
not cached (or no longer fresh), or when the HLS proxy asks ahead (a playlist's newest
segment). A stale object within the parent's `stale-while-revalidate` is answered at once
while one refresh runs. Concurrent requests for the same path share one in-flight
fetch; the fetch runs in the cache's own nursery, so a viewer that disconnects mid-fetch
cancels only its own wait, never the fetch the other viewers are waiting on.

Freshness follows the parent's Cache-Control (`s-maxage`/`max-age`; `no-store`, `no-cache`
and `private` mean "serve to this fetch's waiters, do not keep"), less the `Age` the parent
says it had already spent in caches; a parent 404 becomes a
short negative entry. Bodies are kept in an LRU bounded by bytes (and by entry count);
negative entries are bounded by their own count and each costs `NEGATIVE_ENTRY_BYTES` (plus
its path) of the byte budget, since their paths come from viewers. Fetches in flight are
bounded too; whatever a fetch does wrong fails that fetch's requests (502), never the cache.

`ObjectCache.run` must be running (e.g. `await nursery.start(cache.run)`) for `get` to work.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from common.net.http import SharedResponse
from common.net.httpclient import FetchResult
from common.proto.httpcache import age_of, freshness_lifetime, stale_while_revalidate

log = logging.getLogger("livecdn.edge")

Fetcher = Callable[[str], Awaitable[FetchResult]]
"""path -> (status, lower-case headers, complete body). Raises FetchError (or OSError /
trio.TooSlowError, which the cache treats the same) when the upstream fails or the body is
truncated."""

DEFAULT_CONTENT_TYPE = "application/octet-stream"
NEGATIVE_ENTRY_BYTES = 256
"""What one negative (404) entry costs in the byte budget, beside its path."""


class FetchError(Exception):
    """The parent could not deliver an object (connection failure, truncation, bad status)."""


@dataclass(frozen=True)
class CachedObject:
    """One object as received from the parent (or a negative entry for a 404)."""

    status: int  # 200, or 404 for a negative entry
    body: bytes
    content_type: str
    cache_control: str  # the parent's Cache-Control, passed on to viewers ("" if none)
    fetched_at: float  # trio.current_time()
    expires_at: float
    stale_until: float = 0.0
    """Past `expires_at` and until then, served while one refresh runs (the parent's
    stale-while-revalidate)."""
    response: SharedResponse | None = field(default=None, compare=False, repr=False)
    """The 200 as viewers get it: head built once, body shared (None for a 404)."""
    age: float = 0.0
    """Seconds it had spent in caches when fetched (the parent's `Age`)."""

    def fresh(self, now: float) -> bool:
        """Whether the object may still be served from the cache at `now`."""
        return now < self.expires_at

    def age_at(self, now: float) -> int:
        """Its `Age` at `now`: seconds since its parent's origin made it, as far as known."""
        return int(self.age + max(0.0, now - self.fetched_at))


@dataclass
class CacheStats:
    """Counters of the object cache, for metrics."""

    hits: int = 0
    misses: int = 0
    coalesced: int = 0  # requests that joined a fetch already in flight
    stale: int = 0  # requests answered with a stale object while it was refreshed
    negative_hits: int = 0
    bytes_from_parent: int = 0
    evictions: int = 0
    errors: int = 0


class _InFlight:
    """One fetch in progress: its waiters block on `done`, then read `result` or `error`."""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: CachedObject | None = None
        self.error: BaseException | None = None


def _safe_header(value: str | None) -> str | None:
    """A parent's header value as it may be passed on to viewers: printable ASCII of at most
    256 characters (tabs become spaces), else None."""
    if not value:
        return None
    value = value.replace("\t", " ").strip()
    if len(value) > 256 or not value.isascii() or not value.isprintable():
        return None
    return value


class ObjectCache:
    """HTTP object cache with request coalescing and a byte-bounded LRU.

    `run` must be running: fetches are tasks of the cache's nursery, independent of the
    request that started them.
    """

    def __init__(
        self,
        fetch: Fetcher,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        negative_ttl: float = 2.0,
        default_ttl: float = 0.0,
        max_entries: int = 100_000,
        max_negative: int = 10_000,
        max_inflight: int = 1024,
        fetch_timeout: float = 30.0,
    ) -> None:
        if min(max_bytes, max_entries, max_negative, max_inflight) < 0:
            raise ValueError(
                "max_bytes, max_entries, max_negative and max_inflight must not be negative"
            )
        self._fetch = fetch
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.max_negative = max_negative
        self.max_inflight = max_inflight
        self.negative_ttl = negative_ttl
        self.default_ttl = default_ttl
        self.fetch_timeout = fetch_timeout
        self.stats = CacheStats()
        self._entries: OrderedDict[str, CachedObject] = OrderedDict()
        self._size = 0
        self._negative: OrderedDict[str, None] = OrderedDict()  # negative paths, oldest first
        self._inflight: dict[str, _InFlight] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def size_bytes(self) -> int:
        """Bytes of cached bodies (and what negative entries are charged)."""
        return self._size

    @property
    def negative_entries(self) -> int:
        """Negative (404) entries held."""
        return len(self._negative)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the fetches until cancelled; start with `nursery.start(cache.run)`."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def holds(self, path: str) -> bool:
        """Whether `path` is cached (fresh or not) or being fetched."""
        return path in self._entries or path in self._inflight

    def peek(self, path: str, *, negative: bool = True) -> CachedObject | None:
        """The object at `path` if it can be answered now: fresh, or stale but within its
        stale-while-revalidate (a refresh is started); None otherwise (use `get`), and for
        a 404 unless `negative`."""
        entry = self._entries.get(path)
        if entry is None or (not negative and entry.status != 200):
            return None
        now = trio.current_time()
        if now < entry.expires_at:
            self._entries.move_to_end(path)
            if entry.status == 404:
                self.stats.negative_hits += 1
            else:
                self.stats.hits += 1
            return entry
        if now < entry.stale_until and self._refresh(path):
            self._entries.move_to_end(path)
            self.stats.stale += 1
            return entry
        return None

    def _refresh(self, path: str) -> bool:
        """Start a fetch of `path` unless one runs; False if none could start."""
        if path in self._inflight:
            return True
        if self._nursery is None or len(self._inflight) >= self.max_inflight:
            return False
        self.stats.misses += 1
        flight = self._inflight[path] = _InFlight()
        self._nursery.start_soon(self._fetch_into, path, flight)
        return True

    async def get(self, path: str) -> CachedObject:
        """The object at `path`: from the cache if fresh (or stale within its
        stale-while-revalidate: then refreshed meanwhile), else from the parent (shared
        with concurrent requests for the same path). A 404 is returned as a negative entry;
        any other failure raises FetchError."""
        entry = self.peek(path)
        if entry is not None:
            return entry
        if path in self._entries:
            self._remove(path)  # stale; a successful fetch replaces it, a failure leaves none
        flight = self._inflight.get(path)
        if flight is not None:
            self.stats.coalesced += 1
        else:
            if self._nursery is None:
                raise RuntimeError("ObjectCache.run() is not running")
            if len(self._inflight) >= self.max_inflight:
                self.stats.errors += 1
                raise FetchError(f"{self.max_inflight} fetches in flight already")
            self.stats.misses += 1
            flight = self._inflight[path] = _InFlight()
            self._nursery.start_soon(self._fetch_into, path, flight)
        await flight.done.wait()
        if flight.result is not None:
            return flight.result
        # A fresh exception per waiter: one instance raised in many tasks would share (and
        # keep growing) a single traceback.
        error = flight.error
        why = str(error) or type(error).__name__
        raise FetchError(f"fetching {path} from the parent failed: {why}") from error

    def objects(self) -> list[tuple[str, CachedObject]]:
        """Cached entries (fresh or not yet evicted stale ones), least recently used first."""
        return list(self._entries.items())

    def purge(self, prefix: str) -> int:
        """Drop the entries whose path starts with `prefix`; return how many were dropped.

        Fetches in flight for such paths still answer their waiters but are not stored.
        """
        paths = [path for path in self._entries if path.startswith(prefix)]
        for path in paths:
            self._remove(path)
        for path in [path for path in self._inflight if path.startswith(prefix)]:
            del self._inflight[path]
        return len(paths)

    # ------------------------------------------------------------------ internals

    async def _fetch_into(self, path: str, flight: _InFlight) -> None:
        try:
            with trio.fail_after(self.fetch_timeout):
                got = await self._fetch(path)
            self.stats.bytes_from_parent += len(got.body)
            obj = self._make_object(got)
            if obj is None:
                self.stats.errors += 1
                flight.error = FetchError(f"parent answered {got.status} for {path}")
                log.warning("object cache: parent answered %d for %s", got.status, path)
                return
            flight.result = obj
            if self._inflight.get(path) is flight:  # not purged meanwhile
                self._store(path, obj)
        except (FetchError, OSError, trio.TooSlowError) as exc:
            flight.error = exc
            self.stats.errors += 1
            log.warning("object cache: fetching %s failed: %r", path, exc)
        except Exception as exc:  # a bug or a parent's oddity must not take the node down
            flight.error = exc
            self.stats.errors += 1
            log.exception("object cache: fetching %s failed unexpectedly", path)
        finally:
            if flight.result is None and flight.error is None:
                flight.error = FetchError("the object cache is shutting down")
            if self._inflight.get(path) is flight:
                del self._inflight[path]
            flight.done.set()

    def _make_object(self, got: FetchResult) -> CachedObject | None:
        status, body = got.status, got.body
        headers = {name.lower(): value for name, value in got.headers.items()}
        content_type = _safe_header(headers.get("content-type")) or DEFAULT_CONTENT_TYPE
        cache_control = _safe_header(headers.get("cache-control"))
        now = trio.current_time()
        age = 0.0
        if status == 200:
            ttl = freshness_lifetime(cache_control, self.default_ttl)
            age = age_of(_safe_header(headers.get("age")))
            body = bytes(body)
        elif status == 404:
            ttl = self.negative_ttl
            body = b""
        else:
            return None
        left = ttl - age  # an older copy (e.g. from worker 0) is fresh for less
        expires_at = now + left if left > 0 else now
        if status != 200:
            return CachedObject(status, body, content_type, cache_control or "", now, expires_at)
        headers = [("cache-control", cache_control)] if cache_control else []
        return CachedObject(
            status,
            body,
            content_type,
            cache_control or "",
            now,
            expires_at,
            stale_until=expires_at + stale_while_revalidate(cache_control, ttl),
            response=SharedResponse(200, body, content_type, headers),
            age=age,
        )

    @staticmethod
    def _cost(path: str, obj: CachedObject) -> int:
        """Bytes an entry is charged: its body, or a fixed amount (and its path) for a 404."""
        return len(obj.body) if obj.status == 200 else NEGATIVE_ENTRY_BYTES + len(path)

    def _store(self, path: str, obj: CachedObject) -> None:
        self._remove(path)
        negative = obj.status != 200
        if not obj.fresh(obj.fetched_at) or self._cost(path, obj) > self.max_bytes:
            return
        if negative and self.max_negative <= 0:
            return
        self._entries[path] = obj
        self._size += self._cost(path, obj)
        if negative:
            self._negative[path] = None
            while len(self._negative) > self.max_negative:
                self._evict(next(iter(self._negative)))
        while self._size > self.max_bytes or len(self._entries) > self.max_entries:
            self._evict(next(iter(self._entries)))

    def _evict(self, path: str) -> None:
        self._remove(path)
        self.stats.evictions += 1

    def _remove(self, path: str) -> None:
        old = self._entries.pop(path, None)
        if old is not None:
            self._size -= self._cost(path, old)
            if old.status != 200:
                del self._negative[path]

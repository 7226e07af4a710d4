"""HLS viewers of a node with `workers = N`, counted once: a player whose requests land on
several workers is an HLS viewer of each, so the merged numbers take, per stream, the union
of the workers' viewer keys (asked over the private ports, which need the run's secret)
instead of the sum. Bounded: a worker lists at most MAX_KEYS keys; when one has more, or a
worker does not answer, the merge keeps the sum (an over-count, as before). Listing MAX_KEYS
keys holds a worker's loop for some milliseconds, so a worker counts at most once every
COUNT_FRESH seconds, one count at a time: the /metrics and API requests and the heartbeats
that come meanwhile wait for that count and share it (any stranger may GET /metrics)."""

from __future__ import annotations

import json

import trio

from common.net.httpclient import fetch
from common.serve.hlsviewers import HlsViewers
from common.serve.workerctx import SECRET_HEADER, WorkerContext

HLS_VIEWERS_PATH = "/_workers/hls-viewers"
"""What a worker's private port answers with its HLS viewer keys (siblings only)."""
MAX_KEYS = 20_000
"""Viewer keys a worker lists at most (~30 bytes each)."""
ASK_TIMEOUT = 2.0
COUNT_FRESH = 1.5
"""Seconds a node-wide count is reused for."""


def viewer_keys(viewers: HlsViewers, now: float) -> dict:
    """This worker's HLS viewers as {"streams": {"app/name": [key, ...]}, "complete"}, at
    most MAX_KEYS keys in all (address and agent digest: `client_key`)."""
    streams: dict[str, list[str]] = {}
    listed = 0
    complete = True
    # the table's own clients by stream (HlsViewers keeps them in `_seen`; count() expires)
    for key in list(viewers._seen):
        if not viewers.count(key, now):
            continue
        clients = viewers._seen.get(key, {})
        if listed + len(clients) > MAX_KEYS:
            complete = False
            break
        listed += len(clients)
        streams[f"{key[0]}/{key[1]}"] = list(clients)
    return {"streams": streams, "complete": complete}


async def node_hls_viewers(ctx: WorkerContext) -> dict[str, int] | None:
    """HLS viewers by "app/name" for the whole node (each viewer once), asked of every
    worker at once (this one too, over its own private port); None when a worker did not
    answer or listed only part of its viewers (the caller keeps its sum)."""
    counted = await _count(ctx)
    return None if counted is None else {key: once for key, (once, _) in counted.items()}


async def hls_overlap(ctx: WorkerContext) -> dict[tuple[str, str], int]:
    """By stream, how many more HLS viewers the workers' counts add up to than the node has
    (viewers counted on several workers); empty when unknown (`node_hls_viewers`)."""
    counted = await _count(ctx)
    out: dict[tuple[str, str], int] = {}
    for key, (once, summed) in (counted or {}).items():
        app, _, name = key.partition("/")
        if summed > once:
            out[(app, name)] = summed - once
    return out


class _Shared:
    """The last count and when it was made; one count at a time."""

    run: object = None
    lock = trio.Lock()
    at = float("-inf")
    counted: dict[str, tuple[int, int]] | None = None


async def _count(ctx: WorkerContext) -> dict[str, tuple[int, int]] | None:
    """By "app/name": (viewers once, the sum of the workers' counts); None if unknown. The
    last count while it is fresh; else one count, which those asking meanwhile share."""
    if _Shared.run is not (run := trio.lowlevel.current_trio_token()):  # (a test's new run)
        _Shared.run, _Shared.lock, _Shared.at = run, trio.Lock(), float("-inf")
    async with _Shared.lock:
        if trio.current_time() - _Shared.at >= COUNT_FRESH:
            _Shared.counted = await _count_now(ctx)
            _Shared.at = trio.current_time()
        return _Shared.counted


async def _count_now(ctx: WorkerContext) -> dict[str, tuple[int, int]] | None:
    docs: dict[int, dict] = {}

    async def ask(i: int) -> None:
        try:
            got = await fetch(
                "GET",
                ctx.url(i) + HLS_VIEWERS_PATH,
                timeout=ASK_TIMEOUT,
                headers=[(SECRET_HEADER, ctx.secret)],
            )
            doc = json.loads(got.body) if got.status == 200 else None
        except Exception:  # noqa: BLE001 -- a silent worker: the caller keeps its sum
            return
        if isinstance(doc, dict) and doc.get("complete") is True:
            docs[i] = doc

    async with trio.open_nursery() as nursery:
        for i in range(ctx.count):
            nursery.start_soon(ask, i)
    if len(docs) < ctx.count:
        return None
    union: dict[str, set[str]] = {}
    summed: dict[str, int] = {}
    for doc in docs.values():
        streams = doc.get("streams")
        if not isinstance(streams, dict):
            return None
        for key, digests in streams.items():
            union.setdefault(str(key), set()).update(str(d) for d in digests)
            summed[str(key)] = summed.get(str(key), 0) + len(digests)
    return {key: (len(digests), summed[key]) for key, digests in union.items()}

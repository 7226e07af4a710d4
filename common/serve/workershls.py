"""HLS among the workers of an edge with `workers = N` in hls_mode "cache": worker i > 0
asks worker 0's private port for playlists and segments first, so worker 0 fetches each
object from the parents once for the node (and caches it); the parents are asked only
while worker 0 does not answer. A sibling's requests are not viewers of worker 0."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import trio

from common.net.httpclient import FetchResult, fetch
from common.serve.workerctx import SECRET_HEADER, WorkerContext
from common.serve.workermerge import is_sibling

log = logging.getLogger("livecdn.workers")

SIBLING_TIMEOUT = 3.0
"""Seconds worker 0 has to answer one HLS request before the parents are asked instead
(while worker 0 restarts its private port still accepts, so a request would wait)."""
SIBLING_PAUSE = 5.0
"""Seconds the parents are asked directly after worker 0 did not answer."""

P = ParamSpec("P")
R = TypeVar("R")


class SiblingObjects:
    """Worker i > 0's HLS requests to worker 0 (its private port, with the run's secret)."""

    def __init__(self, ctx: WorkerContext, *, limit: int) -> None:
        self.ctx = ctx
        self.limit = limit
        """The largest object taken, as from a parent."""
        self.down_until = -math.inf
        self.answered = 0
        """Requests worker 0 answered (200 or 404)."""
        self.passed = 0
        """Requests left to the parents (worker 0 failed, or did not answer in time)."""

    async def get(self, path: str) -> FetchResult | None:
        """Worker 0's answer for `path` (200 or 404), or None: ask the parents. The query
        (the edge's own play token) is left out: a sibling passes worker 0's play gate,
        and worker 0 answers with the object as its parent gave it."""
        if trio.current_time() < self.down_until:
            self.passed += 1
            return None
        try:
            got = await fetch(
                "GET",
                self.ctx.url(0) + path.partition("?")[0],
                timeout=SIBLING_TIMEOUT,
                limit=self.limit,
                headers=[(SECRET_HEADER, self.ctx.secret)],
            )
        except Exception as exc:  # any failure: the parents, for a while
            self.passed += 1
            self.down_until = trio.current_time() + SIBLING_PAUSE
            why = f"{type(exc).__name__}: {exc}"[:200]
            log.warning(
                "HLS %s from worker 0 failed (%s): asking the parents for %g s",
                path.partition("?")[0],
                why,
                SIBLING_PAUSE,
            )
            return None
        if got.status == 200 or got.status == 404:
            self.answered += 1
            return got
        self.passed += 1  # worker 0's parents failed it: the parents decide for this one
        return None


def not_for_siblings(fn: Callable[P, R], instead: R) -> Callable[P, R]:
    """`fn`, except in a sibling's request on a private port, where it is `instead`: e.g. a
    sibling's HLS requests are not viewers, its pulls belong to no viewer class."""

    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        return instead if is_sibling() else fn(*args, **kwargs)

    return wrapped

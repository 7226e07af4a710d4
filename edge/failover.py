"""GETs of HLS objects from a list of HTTP(S) parents, failing over to the next when one fails."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

import trio

from common.net.httpclient import FetchResult, HttpClientError, fetch
from common.net.supervise import describe, log_failure
from edge.objcache import FetchError

log = logging.getLogger("livecdn.edge")

HLS_OBJECT_LIMIT = 32 * 1024 * 1024
"""The largest playlist or segment an edge takes from a parent."""


class ParentFailover:
    """GETs from a list of HTTP(S) parents, the last one that answered first; https://
    parents are verified with `tls` (default: the system's trust)."""

    def __init__(
        self,
        parents: list[str],
        *,
        timeout: float,
        on_failover: Callable[[], None],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.parents = parents
        self.timeout = timeout
        self.tls = tls
        self.on_failover = on_failover
        self._current = 0

    async def fetch(self, path: str) -> FetchResult:
        """GET `path` (canonical: built by `hls_target` from a validated key) from the
        parents in failover order; errors, 5xx and truncated bodies try the next parent,
        and FetchError says why when none answers."""
        errors = []
        parents = self.parents
        for i in range(len(parents)):
            parent = parents[(self._current + i) % len(parents)]
            try:
                got = await fetch(
                    "GET",
                    parent.rstrip("/") + path,
                    timeout=self.timeout,
                    limit=HLS_OBJECT_LIMIT,
                    tls=self.tls,
                )
            except (OSError, HttpClientError, trio.TooSlowError) as exc:
                errors.append(f"{parent}: {exc or 'timed out'}")
                continue
            except Exception as exc:  # whatever else a parent provokes: try the next one
                log_failure(f"HLS fetch of {path} from {parent}", exc, log)
                errors.append(f"{parent}: {describe(exc)}")
                continue
            if got.status >= 500:
                errors.append(f"{parent}: HTTP {got.status}")
                continue
            if i:
                self._current = (self._current + i) % len(parents)
                self.on_failover()
                log.warning("HLS: failover to parent %s", parent)
            return got
        raise FetchError("; ".join(errors) or "no HLS parent configured")

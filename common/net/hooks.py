"""The HTTP hook client: POSTs a hook's JSON to its URL; a decision (on_publish, on_play) is
allowed by a 2xx within the timeout and refused otherwise, notifications (on_unpublish,
on_play_done) are sent in the background, a bounded number at once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial

import trio

from common.net.httpclient import HttpClientError, fetch
from common.net.supervise import contained
from common.proto.errors import ConnClosed
from common.proto.hooks import DecisionCache, HookCall, HookEvent

log = logging.getLogger("livecdn.hooks")

MAX_NOTIFICATIONS = 256
"""Notifications in flight at once; more are dropped (a dead hook server piles up nothing)."""
MAX_ANSWER = 64 * 1024
"""Largest hook answer read (its body is not used)."""


class HookResult:
    """Labels of livecdn_hook_calls_total{result}."""

    OK = "ok"  # 2xx
    REFUSED = "refused"  # another status
    TIMEOUT = "timeout"
    ERROR = "error"  # no connection, a broken answer
    CACHED = "cached"  # a decision answered from the cache, no call
    DROPPED = "dropped"  # a notification not sent: MAX_NOTIFICATIONS in flight


class HookClient:
    """Calls the hooks configured in `urls`; `count(event, result)` sees every outcome."""

    def __init__(
        self,
        urls: Mapping[HookEvent, str],
        *,
        timeout: float,
        cache_seconds: float = 0.0,
        count: Callable[[HookEvent, str], None] = lambda event, result: None,
        max_notifications: int = MAX_NOTIFICATIONS,
    ) -> None:
        self.urls = {event: url for event, url in urls.items() if url}
        self.timeout = timeout
        self.cache = DecisionCache(cache_seconds)
        self.count = count
        self.max_notifications = max_notifications
        self.in_flight = 0
        self.nursery: trio.Nursery | None = None
        """Where notifications run (set by the hooks' runner; None: none are sent)."""

    def has(self, event: HookEvent) -> bool:
        """True if `event`'s hook is configured."""
        return event in self.urls

    async def allows(self, call: HookCall) -> str | None:
        """None if the hook allows `call` (or none is configured); else why it refused.
        Answers the hook gave are cached; timeouts and errors are not."""
        if call.event not in self.urls:
            return None
        key = call.cache_key()
        allowed = self.cache.get(key, trio.current_time())
        if allowed is not None:
            self.count(call.event, HookResult.CACHED)
            return None if allowed else "refused by the hook (cached answer)"
        result, why = await self._post(call)
        if result in (HookResult.OK, HookResult.REFUSED):
            self.cache.put(key, result == HookResult.OK, trio.current_time())
        return None if result == HookResult.OK else why

    def notify(self, call: HookCall) -> None:
        """Send `call` in the background (never waits, never raises)."""
        if call.event not in self.urls or self.nursery is None:
            return
        if self.in_flight >= self.max_notifications:
            self.count(call.event, HookResult.DROPPED)
            log.warning(
                "hook %s for %s %s/%s not sent: %d notifications in flight",
                call.event, call.peer, call.app, call.name, self.in_flight,
            )  # fmt: skip
            return
        self.in_flight += 1
        self.nursery.start_soon(self._notify, call)

    async def _notify(self, call: HookCall) -> None:
        what = f"hook {call.event} for {call.peer} {call.app}/{call.name}"
        try:
            await contained(what, partial(self._post, call), logger=log)  # never ends the node
        finally:
            self.in_flight -= 1

    async def _post(self, call: HookCall) -> tuple[str, str]:
        """POST `call`: (result, why for the log); one log line unless the hook said 2xx."""
        url = self.urls[call.event]
        result, why = HookResult.OK, ""
        try:
            with trio.fail_after(self.timeout):
                answer = await fetch(
                    "POST", url, body=call.body(), timeout=self.timeout, limit=MAX_ANSWER,
                    headers=[("content-type", "application/json")],
                )  # fmt: skip
        except trio.TooSlowError:
            result, why = HookResult.TIMEOUT, f"{url} did not answer within {self.timeout:g} s"
        except (HttpClientError, ConnClosed, OSError, ValueError) as exc:
            result, why = HookResult.ERROR, f"{url} failed: {exc or type(exc).__name__}"
        else:
            if not 200 <= answer.status < 300:
                result, why = HookResult.REFUSED, f"{url} answered {answer.status}"
        self.count(call.event, result)
        if result != HookResult.OK:
            log.info("hook %s for %s %s/%s: %s", call.event, call.peer, call.app, call.name, why)
        return result, why

"""HTTP hooks, pure: the request a hook gets (JSON), hook URL validation, the bounded cache of
hook decisions and the table of HLS viewers a hook admitted (an HLS play has no end event)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from common.proto.peers import peer_host

MAX_URL_LENGTH = 2048


class HookEvent(StrEnum):
    """A hook, named as its config key (and the request's "action")."""

    PUBLISH = "on_publish"
    UNPUBLISH = "on_unpublish"
    PLAY = "on_play"
    PLAY_DONE = "on_play_done"
    RECORD_DONE = "on_record_done"


DECISIONS = frozenset({HookEvent.PUBLISH, HookEvent.PLAY})
"""Hooks whose answer allows or refuses; the others are notifications."""

Query = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class HookCall:
    """One hook request: `event` for stream app/name by the client `peer` ("host:port")
    over `protocol` (rtmp, flv, ws, hls or snapshot), with its URL's query parameters (sorted)."""

    event: HookEvent
    app: str
    name: str
    peer: str
    protocol: str
    query: Query = ()
    details: tuple[tuple[str, str | int | float], ...] = ()
    """More fields of the body (on_record_done: the file's path, start, duration, bytes)."""

    @classmethod
    def of(
        cls, event: HookEvent, app: str, name: str, peer: str, protocol: str,
        query: Mapping[str, str],
    ) -> HookCall:  # fmt: skip
        """A call with `query` in a canonical order."""
        return cls(event, app, name, peer, protocol, tuple(sorted(query.items())))

    def as_event(self, event: HookEvent) -> HookCall:
        """The same subject for another hook (on_play -> on_play_done)."""
        return HookCall(event, self.app, self.name, self.peer, self.protocol, self.query)

    @property
    def addr(self) -> str:
        """The client's address, without port."""
        return peer_host(self.peer)

    def body(self) -> bytes:
        """The JSON body POSTed to the hook (README, Security, Hooks)."""
        return json.dumps(
            {
                "action": self.event.value,
                "app": self.app,
                "name": self.name,
                "addr": self.addr,
                "client_id": self.peer,
                "protocol": self.protocol,
                "query": dict(self.query),
                **dict(self.details),
            },
            separators=(",", ":"),
        ).encode()

    def cache_key(self) -> tuple[str, str, str, str, str, Query]:
        """What a decision depends on: the body less client_id (a connection's port)."""
        return (self.event, self.app, self.name, self.addr, self.protocol, self.query)


def check_hook_url(url: str) -> str:
    """`url` if it is an http:// or https:// URL with a host and no fragment or user info;
    else ValueError saying why."""
    if len(url) > MAX_URL_LENGTH or not url.isprintable() or " " in url:
        raise ValueError(f"not a usable URL (printable, no spaces, at most {MAX_URL_LENGTH})")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} must be an http:// or https:// URL with a host")
    if parts.fragment or parts.username or parts.password:
        raise ValueError(f"{url!r}: no #fragment or user:password@ in a hook URL")
    return url


class DecisionCache:
    """Hook answers (allowed or not) kept `ttl` seconds, at most `max_entries` (oldest go
    first); with ttl 0 nothing is kept."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[tuple, tuple[bool, float]] = {}  # key -> (allowed, until), oldest first

    def get(self, key: tuple, now: float) -> bool | None:
        """The cached answer for `key`, or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry[1]:
            del self._entries[key]
            return None
        return entry[0]

    def put(self, key: tuple, allowed: bool, now: float) -> None:
        """Remember an answer the hook gave."""
        if self.ttl <= 0:
            return
        entries = self._entries
        entries.pop(key, None)
        entries[key] = (allowed, now + self.ttl)
        while entries:
            oldest = next(iter(entries))
            if len(entries) <= self.max_entries and entries[oldest][1] > now:
                break
            del entries[oldest]

    def __len__(self) -> int:
        return len(self._entries)


class HlsSessions:
    """HLS viewers an on_play hook admitted: one per (app, name, address), over when none of
    its requests came for `window` seconds. Players drop the playlist's query on segment
    URIs (or keep only a token carried into them), so a request whose query parameters are
    all among its session's rides on it; one with another parameter is a new viewer. At
    most `max_sessions` (the oldest are over first)."""

    def __init__(self, window: float, max_sessions: int = 100_000) -> None:
        self.window = window
        self.max_sessions = max_sessions
        self._sessions: dict[tuple[str, str, str], tuple[HookCall, float]] = {}  # oldest first

    @staticmethod
    def _key(call: HookCall) -> tuple[str, str, str]:
        return (call.app, call.name, call.addr)

    def covers(self, call: HookCall, now: float) -> bool:
        """True (and the session is seen now) if a live session admits `call`."""
        key = self._key(call)
        entry = self._sessions.get(key)
        if entry is None or now - entry[1] > self.window:
            return False
        if not set(call.query) <= set(entry[0].query):
            return False
        del self._sessions[key]
        self._sessions[key] = (entry[0], now)
        return True

    def start(self, call: HookCall, now: float) -> list[HookCall]:
        """A viewer admitted by `call`; the sessions over because of it (the one it replaces,
        the oldest beyond the bound)."""
        key = self._key(call)
        ended = [self._sessions.pop(key)[0]] if key in self._sessions else []
        self._sessions[key] = (call, now)
        while len(self._sessions) > self.max_sessions:
            ended.append(self._sessions.pop(next(iter(self._sessions)))[0])
        return ended

    def expire(self, now: float) -> list[HookCall]:
        """The sessions over by now (each returned once)."""
        ended = []
        while self._sessions:
            key = next(iter(self._sessions))
            call, seen = self._sessions[key]
            if now - seen <= self.window:
                break
            del self._sessions[key]
            ended.append(call)
        return ended

    def __len__(self) -> int:
        return len(self._sessions)

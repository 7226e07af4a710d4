"""Counting HLS viewers: clients told apart by address and agent, seen within a window."""

from __future__ import annotations

import hashlib
from collections import Counter

from common.proto.peers import peer_host


def client_key(peer: str, user_agent: str) -> str:
    """How an HLS viewer is told apart from others: its address (without port) and a short
    digest of its agent (so a key is small whatever the agent string)."""
    digest = hashlib.blake2b(user_agent.encode("utf-8", "replace"), digest_size=8).hexdigest()
    return f"{peer_host(peer)}|{digest}"


class HlsViewers:
    """Counts HLS viewers per stream: distinct clients seen within `window` seconds.

    Clients are keyed by what requests say (address and agent), so the table is bounded:
    each stream's clients are kept oldest first and expire from the front; at most
    `max_per_address` clients of one address count for a stream (one host cannot inflate a
    stream's viewers, and so an edge's load, without limit), `max_clients` per stream and
    `max_streams` streams are held (the oldest go first).
    """

    def __init__(
        self,
        window: float = 6.0,
        *,
        max_clients: int = 100_000,
        max_streams: int = 10_000,
        max_per_address: int = 4096,
    ) -> None:
        self.window = window
        self.max_clients = max_clients
        self.max_streams = max_streams
        self.max_per_address = max_per_address
        self._seen: dict[tuple[str, str], dict[str, float]] = {}
        self._per_address: dict[tuple[str, str], Counter[str]] = {}

    def seen(self, key: tuple[str, str], client: str, now: float) -> None:
        """A client fetched the playlist or a segment of `key`."""
        clients = self._seen.pop(key, None)
        if clients is None:
            clients = {}
            while len(self._seen) >= self.max_streams:
                oldest = next(iter(self._seen))
                del self._seen[oldest]
                self._per_address.pop(oldest, None)
        self._seen[key] = clients  # most recently seen stream last
        per_address = self._per_address.get(key)
        if per_address is None:  # (setdefault would build a Counter each call)
            per_address = self._per_address[key] = Counter()
        self._expire(key, clients, now)
        if client in clients:
            del clients[client]
        else:
            address = client.rsplit("|", 1)[0]
            if per_address[address] >= self.max_per_address:
                return
            per_address[address] += 1
        clients[client] = now  # oldest first
        while len(clients) > self.max_clients:
            self._drop(key, clients, next(iter(clients)))

    def _drop(self, key: tuple[str, str], clients: dict[str, float], client: str) -> None:
        del clients[client]
        per_address = self._per_address.get(key)
        if per_address is not None:
            address = client.rsplit("|", 1)[0]
            per_address[address] -= 1
            if per_address[address] <= 0:
                del per_address[address]

    def _expire(self, key: tuple[str, str], clients: dict[str, float], now: float) -> None:
        while clients:
            oldest = next(iter(clients))
            if now - clients[oldest] <= self.window:
                return
            self._drop(key, clients, oldest)

    def count(self, key: tuple[str, str], now: float) -> int:
        """Clients of `key` seen recently (forgetting older ones)."""
        clients = self._seen.get(key)
        if clients is None:
            return 0
        self._expire(key, clients, now)
        if not clients:
            del self._seen[key]
            self._per_address.pop(key, None)
        return len(clients)

    def total(self, now: float) -> int:
        """All HLS viewers."""
        return sum(self.count(k, now) for k in list(self._seen))

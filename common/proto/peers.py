"""A connection's peer as nodes name it ("host:port"): its host, for per-address rules."""

from __future__ import annotations


def peer_host(peer: str) -> str:
    """The address of a "host:port" peer (IPv6 hosts may be bracketed)."""
    host = peer.rsplit(":", 1)[0] if ":" in peer else peer
    return host.strip("[]")

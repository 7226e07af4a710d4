"""Who may use a node's admin routes (kick/ban, drain/undrain, publisher addresses): pure.

With an `admin_token` configured, a request must carry `Authorization: Bearer <token>`;
with none, admin routes answer only to loopback peers (127.0.0.0/8, ::1) that name the node
by a loopback host and are not sent by a page of another origin: a browser on the node's
host must not let any web page it shows kick, ban or drain (cross-site requests), nor one
that rebinds its own name to 127.0.0.1 (DNS rebinding).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from common.proto.peers import peer_host


@dataclass(frozen=True)
class AdminVerdict:
    """The answer to one admin request: allowed, or the HTTP status and reason to refuse with."""

    allowed: bool
    status: int = 200
    reason: str = ""


ALLOWED = AdminVerdict(True)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (and IPv4-mapped loopback); False for anything unparsable."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def is_loopback_name(host: str) -> bool:
    """True for "localhost" (and *.localhost) and loopback addresses, as a Host header or a
    URL names them (with or without a port, IPv6 in brackets)."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    return name == "localhost" or name.endswith(".localhost") or is_loopback(name)


def _local_request(headers: Mapping[str, str]) -> str | None:
    """None if a loopback peer's request is the node's own host's doing; else why not."""
    host = headers.get("host")
    if host is not None and not is_loopback_name(host):
        return f"Host {host[:60]!r} is not a loopback name"
    origin = headers.get("origin")
    if origin is not None:
        try:
            origin_host = urlsplit(origin).netloc
        except ValueError:
            origin_host = ""
        if not is_loopback_name(origin_host) or (host is not None and origin_host != host):
            # a page of another origin, a loopback one on another port included
            return f"sent by a page of {origin[:60]!r}"
    if headers.get("sec-fetch-site", "").lower() == "cross-site":
        return "a cross-site request"
    return None


def check_admin(token: str, headers: Mapping[str, str], peer: str) -> AdminVerdict:
    """May this request use admin routes? `token`: the configured admin_token ("" for none);
    `headers`: the request's (lower-case names); `peer`: "host:port"."""
    if not token:
        if not is_loopback(peer_host(peer)):
            return AdminVerdict(
                False, 403, "admin routes answer only on loopback when no admin_token is configured"
            )
        if (why := _local_request(headers)) is not None:
            return AdminVerdict(False, 403, f"without an admin_token, admin routes refuse {why}")
        return ALLOWED
    authorization = headers.get("authorization")
    if not authorization:
        return AdminVerdict(False, 401, "admin routes need Authorization: Bearer <admin_token>")
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        return AdminVerdict(False, 403, "wrong admin token")
    return ALLOWED

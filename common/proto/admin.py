"""Who may use a node's admin routes (kick/ban, drain/undrain, publisher addresses): pure.

With an `admin_token` configured, a request must carry `Authorization: Bearer <token>`;
with none, admin routes answer only to loopback peers (127.0.0.0/8, ::1).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

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


def check_admin(token: str, authorization: str | None, peer: str) -> AdminVerdict:
    """May this request use admin routes? `token`: the configured admin_token ("" for none);
    `authorization`: the request's Authorization header (None if absent); `peer`: "host:port".
    """
    if not token:
        if is_loopback(peer_host(peer)):
            return ALLOWED
        return AdminVerdict(
            False, 403, "admin routes answer only on loopback when no admin_token is configured"
        )
    if not authorization:
        return AdminVerdict(False, 401, "admin routes need Authorization: Bearer <admin_token>")
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        return AdminVerdict(False, 403, "wrong admin token")
    return ALLOWED

"""Signed play URLs: HMAC-SHA256 with play_secret over "play|app/name|expires[|class]",
carried as ?pexp=EXPIRES&psig=SIG (and &pcls=CLASS when the token grants a viewer class); and
nodes' pull tokens: HMAC-SHA256 with cluster_secret over "pull|app/name|expires", carried as
?nexp=EXPIRES&nsig=SIG (an origin with edges_only plays only to them)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlencode

from common.proto.auth import MAX_EXPIRES
from common.proto.numparse import parse_uint

PARAMS = ("pexp", "psig", "pcls")
"""The query parameters of a play token (none clash with publish or class tokens)."""

MAX_CLASS = 64
"""The longest class name a play token may carry."""

PULL_PARAMS = ("nexp", "nsig")
"""The query parameters of a node's pull token (none clash with any other token's)."""


def _sig(secret: str, path: str, expires: int, klass: str, domain: str = "play") -> str:
    parts = [domain, path, str(expires)] + ([klass] if klass else [])
    msg = "|".join(parts).encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()[:32]


def play_query(secret: str, path: str, expires: int, klass: str = "") -> str:
    """The query that lets whoever holds it play `path` ("app/name") until `expires` (Unix
    seconds); with `klass`, the token also grants that viewer class at the balancer."""
    params = {"pexp": str(expires), "psig": _sig(secret, path, expires, klass)}
    if klass:
        params["pcls"] = klass
    return urlencode(params)


def check(secret: str, path: str, query: Mapping[str, str], now: float) -> str | None:
    """None if `query` carries a valid, unexpired play token for `path`; else why not."""
    sig, expires, klass = query.get("psig"), query.get("pexp"), query.get("pcls", "")
    if not sig or not expires:
        return "no play token in the URL (expected ?pexp=..&psig=..)"
    expiry = parse_uint(expires, MAX_EXPIRES)
    if expiry is None:
        return f"pexp={expires[:20]!r} is not a Unix time in plain digits"
    if len(klass) > MAX_CLASS:
        return "pcls is too long"
    return _verify(secret, path, (sig, expiry, klass), "play", now)


def _verify(
    secret: str, path: str, token: tuple[str, int, str], domain: str, now: float
) -> str | None:
    """None if `token` (signature, expiry, class) is `domain`'s valid, unexpired token for
    `path`; else why not."""
    sig, expiry, klass = token
    if not hmac.compare_digest(sig.encode(), _sig(secret, path, expiry, klass, domain).encode()):
        return f"{domain} token does not match this stream"
    if expiry < now:
        return f"{domain} token expired {int(now - expiry)} s ago"
    return None


def pull_query(secret: str, path: str, expires: int) -> str:
    """The query with which a node holding cluster_secret `secret` pulls `path` ("app/name")
    until `expires` (Unix seconds)."""
    return urlencode({"nexp": str(expires), "nsig": _sig(secret, path, expires, "", "pull")})


def check_pull(secret: str, path: str, query: Mapping[str, str], now: float) -> str | None:
    """None if `query` carries a valid, unexpired pull token for `path`; else why not."""
    sig, expires = query.get("nsig"), query.get("nexp")
    if not sig or not expires:
        return "no pull token in the URL: only edges holding cluster_secret play here"
    expiry = parse_uint(expires, MAX_EXPIRES)
    if expiry is None:
        return f"nexp={expires[:20]!r} is not a Unix time in plain digits"
    return _verify(secret, path, (sig, expiry, ""), "pull", now)


def carried(query: Mapping[str, str]) -> str:
    """A request's play token parameters, to pass on as they are (segment URIs, redirects)."""
    return urlencode({k: query[k] for k in PARAMS if k in query})

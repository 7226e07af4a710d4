"""Publish tokens: HMAC-SHA256 over "app/name:expires", carried as ?expires=..&token=..;
viewer class tokens: HMAC-SHA256 over "app/name|class|expires", carried as
?lc=CLASS&lexp=..&lsig=.. (the balancer issues them, or whoever holds qos_secret)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection
from urllib.parse import urlencode

from common.proto.numparse import parse_uint

MAX_EXPIRES = 1 << 40
"""The latest expiry a token may carry (Unix seconds; year ~36800)."""


def sign(secret: str, app: str, name: str, expires: int) -> str:
    """The token for publishing app/name until `expires` (Unix seconds)."""
    msg = f"{app}/{name}:{expires}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def token_query(secret: str, app: str, name: str, expires: int) -> str:
    """The query string to append to a publish URL."""
    return urlencode({"expires": expires, "token": sign(secret, app, name, expires)})


def check(secret: str, app: str, name: str, query: dict[str, str], now: float) -> str | None:
    """None if the query carries a valid, unexpired token; else the reason it is refused."""
    token = query.get("token")
    expires = query.get("expires")
    if not token or not expires:
        return "no token in the publish URL (expected ?expires=..&token=..)"
    expiry = parse_uint(expires, MAX_EXPIRES)
    if expiry is None:
        return f"expires={expires[:20]!r} is not a Unix time in plain digits"
    if not hmac.compare_digest(token.encode(), sign(secret, app, name, expiry).encode()):
        return "token does not match"
    if expiry < now:
        return f"token expired {int(now - expiry)} s ago"
    return None


def _class_sig(secret: str, path: str, klass: str, expires: int | str) -> str:
    """The signature of a class token: HMAC-SHA256 over "app/name|class|expires"."""
    msg = f"{path}|{klass}|{expires}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()[:32]


def class_query(secret: str, path: str, klass: str, expires: int) -> str:
    """Query parameters that carry a viewer class, signed, on a redirect to an edge."""
    sig = _class_sig(secret, path, klass, expires)
    return urlencode({"lc": klass, "lexp": expires, "lsig": sig})


def class_params(query: dict[str, str]) -> str:
    """The class token parameters of a request's query, to pass on as they are."""
    return urlencode({k: query[k] for k in ("lc", "lexp", "lsig") if k in query})


def check_class(secret: str, path: str, query: dict[str, str], now: float) -> str | None:
    """The viewer class of a request if its token is valid and unexpired, else None."""
    klass, expires, sig = query.get("lc"), query.get("lexp"), query.get("lsig")
    expiry = parse_uint(expires, MAX_EXPIRES)
    if not klass or not sig or expiry is None or expiry < now:
        return None
    good = _class_sig(secret, path, klass, expires)
    return klass if hmac.compare_digest(sig.encode(), good.encode()) else None


def presented_class(
    secret: str, classes: Collection[str], path: str, query: dict[str, str], now: float
) -> str | None:
    """The class a request's class token grants: None if it presents none; PermissionError
    if the token is bad or expired or its class is not one of `classes`."""
    if "lc" not in query:
        return None
    klass = check_class(secret, path, query, now)
    if klass is None or klass not in classes:
        raise PermissionError("invalid or expired viewer class token")
    return klass

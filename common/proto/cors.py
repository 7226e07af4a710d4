"""Cross-origin answers (CORS): the headers every response carries so that a page from
another origin may play and read it, and the answer to a preflight (OPTIONS)."""

from __future__ import annotations

import re
from dataclasses import dataclass

ANY = "*"
NULL = "null"
"""The Origin a browser sends after a cross-origin redirect (the balancer's 302)."""

METHODS = "GET, HEAD, POST, DELETE, OPTIONS"
HEADERS = "range, authorization, content-type"
PREFLIGHT_MAX_AGE = 600
_ANY_HEADERS = (("access-control-allow-origin", ANY),)

_ORIGIN = re.compile(
    r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
)


def check_origin(value: object) -> str | None:
    """None if `value` is an allowed-origins entry ("*", "null" or scheme://host[:port]),
    else what is wrong with it."""
    if not isinstance(value, str):
        return f"{value!r} is not a string"
    if value in (ANY, NULL) or _ORIGIN.fullmatch(value):
        return None
    return f"{value!r} is not *, null or an origin such as https://example.com:8443"


@dataclass(frozen=True)
class CorsPolicy:
    """Which page origins may read a node's responses: `origins` holds "*" (any page),
    or the allowed origins ("null" among them to allow pages redirected across origins)."""

    origins: tuple[str, ...] = (ANY,)

    def headers(self, origin: str | None) -> list[tuple[str, str]]:
        """The CORS headers of a response to a request with this Origin header."""
        if ANY in self.origins:
            return [("access-control-allow-origin", ANY)]
        if origin is not None and origin in self.origins:
            return [("access-control-allow-origin", origin), ("vary", "origin")]
        return [("vary", "origin")]

    def header_tuple(self, origin: str | None) -> tuple[tuple[str, str], ...]:
        """`headers` as a tuple (a key for heads built once), without building a list when
        any page may read."""
        if ANY in self.origins:
            return _ANY_HEADERS
        return tuple(self.headers(origin))

    def allows(self, origin: str | None) -> bool:
        """Whether a page of `origin` may use the node (None: no page sent the request)."""
        return origin is None or ANY in self.origins or origin in self.origins

    def preflight(self, origin: str | None) -> list[tuple[str, str]]:
        """The headers of the answer to an OPTIONS preflight."""
        return [
            *self.headers(origin),
            ("access-control-allow-methods", METHODS),
            ("access-control-allow-headers", HEADERS),
            ("access-control-max-age", str(PREFLIGHT_MAX_AGE)),
            ("allow", METHODS),
        ]

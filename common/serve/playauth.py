"""Signed play URLs on a node: the play check (every protocol, checked locally with
play_secret), the token carried into an HLS playlist's segment URIs, the node's own signed
pull URLs, and an origin's edges_only check of them (cluster_secret)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from common.proto import playtoken
from common.proto.hlsplaylist import with_query
from common.serve.playgate import PlayCheck, PlayDenied, PlayRequest
from common.serve.refusal import Refusal

PULL_TOKEN_TTL = 60
"""Seconds a node's own pull URL is valid (checked once, when the parent admits the pull)."""


TokenCheck = Callable[[str, str, Mapping[str, str], float], str | None]
"""A token check of `playtoken`: (secret, "app/name", query, now) -> None, or why not."""


class SignedUrls:
    """Admits a play only with a valid token for its stream: a play token (`playtoken.check`,
    play_secret), or at an origin with edges_only a node's pull token (`playtoken.check_pull`,
    cluster_secret)."""

    def __init__(self, secret: str, check: TokenCheck, refusal: Refusal) -> None:
        self.secret = secret
        self.check = check
        self.refusal = refusal

    async def admit(self, req: PlayRequest) -> None:
        """PlayDenied(`refusal`) unless `req` carries a valid token for its stream."""
        reason = self.check(self.secret, str(req.key), req.query, time.time())
        if reason is not None:
            raise PlayDenied(self.refusal, reason)

    def ended(self, req: PlayRequest) -> None:
        """Nothing to release."""


def signed_urls(secret: str, edges_only: str = "") -> list[PlayCheck]:
    """The play checks for a node's play_secret (none without one: play is public) and, first,
    with `edges_only` (an origin's cluster_secret when it serves only edges), the pull token's."""
    checks: list[PlayCheck] = []
    if edges_only:
        checks.append(SignedUrls(edges_only, playtoken.check_pull, Refusal.NOT_AN_EDGE))
    if secret:
        checks.append(SignedUrls(secret, playtoken.check, Refusal.PLAY_TOKEN))
    return checks


def carry_token(playlist: bytes, query: dict[str, str]) -> bytes:
    """`playlist` with the request's play token on its segment URIs, so a player given a
    signed playlist URL can fetch the segments (unchanged without a token)."""
    token = playtoken.carried(query)
    return with_query(playlist, token) if token else playlist


class PullSigner:
    """Signs a node's own requests to its parents with the shared play_secret (a play token)
    and cluster_secret (a pull token, for origins with edges_only): a short expiry, between
    `ttl` and 1.5 `ttl` ahead (the parent checks it once, when it admits the pull or
    fetch)."""

    def __init__(self, secret: str, cluster_secret: str = "", ttl: int = PULL_TOKEN_TTL) -> None:
        self.secret = secret
        self.cluster_secret = cluster_secret
        self.ttl = ttl

    @property
    def signs(self) -> bool:
        """Whether the node's pulls carry any token."""
        return bool(self.secret or self.cluster_secret)

    def query(self, app: str, name: str) -> str:
        """The query of a pull of app/name ("" without a secret)."""
        if not self.signs:
            return ""
        # rounded up to a step of half the ttl, so that a stream's fetches carry the same
        # query for a while: the parent's on_play hook and its cache see one HLS viewer
        step = max(1, self.ttl // 2)
        expires = -(-(int(time.time()) + self.ttl) // step) * step
        path = f"{app}/{name}"
        tokens = (
            playtoken.play_query(self.secret, path, expires) if self.secret else "",
            playtoken.pull_query(self.cluster_secret, path, expires) if self.cluster_secret else "",
        )
        return "&".join(t for t in tokens if t)

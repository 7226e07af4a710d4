"""Signed play URLs on a node: the play check (every protocol, checked locally with
play_secret), the token carried into an HLS playlist's segment URIs, and the node's own
signed pull URLs."""

from __future__ import annotations

import time

from common.proto import playtoken
from common.proto.hlsplaylist import with_query
from common.serve.playgate import PlayCheck, PlayDenied, PlayRequest
from common.serve.refusal import Refusal

PULL_TOKEN_TTL = 60
"""Seconds a node's own pull URL is valid (checked once, when the parent admits the pull)."""


class SignedPlayUrls:
    """Admits a play only with a valid play token for its stream (`playtoken.check`)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    async def admit(self, req: PlayRequest) -> None:
        """PlayDenied(PLAY_TOKEN) unless `req` carries a valid token for its stream."""
        reason = playtoken.check(self.secret, str(req.key), req.query, time.time())
        if reason is not None:
            raise PlayDenied(Refusal.PLAY_TOKEN, reason)

    def ended(self, req: PlayRequest) -> None:
        """Nothing to release."""


def signed_urls(secret: str) -> list[PlayCheck]:
    """The play check for a node's play_secret (none without one: play is public)."""
    return [SignedPlayUrls(secret)] if secret else []


def carry_token(playlist: bytes, query: dict[str, str]) -> bytes:
    """`playlist` with the request's play token on its segment URIs, so a player given a
    signed playlist URL can fetch the segments (unchanged without a token)."""
    token = playtoken.carried(query)
    return with_query(playlist, token) if token else playlist


class PullSigner:
    """Signs a node's own requests to its parents with the shared play_secret (a short
    expiry, between `ttl` and 1.5 `ttl` ahead: the parent checks it once, when it admits the
    pull or fetch)."""

    def __init__(self, secret: str, ttl: int = PULL_TOKEN_TTL) -> None:
        self.secret = secret
        self.ttl = ttl

    def query(self, app: str, name: str) -> str:
        """The query of a pull of app/name ("" without a secret)."""
        if not self.secret:
            return ""
        # rounded up to a step of half the ttl, so that a stream's fetches carry the same
        # query for a while: the parent's on_play hook and its cache see one HLS viewer
        step = max(1, self.ttl // 2)
        expires = -(-(int(time.time()) + self.ttl) // step) * step
        return playtoken.play_query(self.secret, f"{app}/{name}", expires)

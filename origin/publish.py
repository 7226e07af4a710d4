"""The origin's publish decision, pure: a request, the origin's publishers and the config in,
accept / take over / reject (with the RTMP status code and the refusal reason) out."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from common.config import OriginConfig
from common.proto import auth
from common.proto.streamkey import StreamKey, StreamKeyError
from common.serve.refusal import Refusal


class PublishCode(StrEnum):
    """The NetStream status code a refused publisher gets."""

    BAD_NAME = "NetStream.Publish.BadName"
    UNAUTHORIZED = "NetStream.Publish.Unauthorized"
    DENIED = "NetStream.Publish.Denied"


@dataclass(frozen=True)
class PublishRequest:
    """A publish as the origin received it."""

    app: str  # the connection's application
    name: str  # the stream name, without its query
    query: dict[str, str]  # the name's query (the publish token)
    host: str  # the publisher's address, without port


@dataclass(frozen=True)
class Publishers:
    """What the decision reads of the origin: live publishers' hosts by stream, streams
    waiting for their publisher (within `publisher_grace`), bans (wall-clock ends), the
    number of live streams, and how long each live publisher has sent no media (seconds;
    a stream missing from `idle` counts as just active)."""

    hosts: Mapping[tuple[str, str], str]
    waiting: Collection[tuple[str, str]]
    bans: Mapping[tuple[str, str], float]
    streams: int
    idle: Mapping[tuple[str, str], float] = field(default_factory=dict)


@dataclass(frozen=True)
class Accept:
    """Publish `key`: a new stream, or (`resumed`) the one waiting for its publisher."""

    key: StreamKey
    resumed: bool = False


@dataclass(frozen=True)
class Takeover:
    """Publish `key` in place of its current publisher (`why`, for the log)."""

    key: StreamKey
    why: str = field(default="", compare=False)


@dataclass(frozen=True)
class Reject:
    """Refuse: `code` to the publisher, `reason` to the metrics, `detail` for both logs."""

    code: PublishCode
    reason: Refusal
    detail: str


Decision = Accept | Takeover | Reject


def decide(
    request: PublishRequest, publishers: Publishers, config: OriginConfig, now: float
) -> Decision:
    """Decide on a publish request: name, auth, bans, per-address and stream limits, and
    the republish policy; `now` is the wall clock (tokens and bans use it)."""
    try:
        key = StreamKey.parse(request.app, request.name)
    except StreamKeyError as exc:
        return Reject(PublishCode.BAD_NAME, Refusal.BAD_NAME, f"bad stream key: {exc}")
    pair = (key.app, key.name)
    if config.publish_secret:
        why = auth.check(config.publish_secret, key.app, key.name, request.query, now)
        if why:
            return Reject(PublishCode.UNAUTHORIZED, Refusal.AUTH, f"{key}: {why}")
    until = publishers.bans.get(pair, 0)
    if until > now:
        return Reject(
            PublishCode.BAD_NAME, Refusal.BANNED, f"{key} is banned ({until - now:.0f} s)"
        )
    mine = sum(1 for host in publishers.hosts.values() if host == request.host)
    if mine >= config.max_publishers_per_ip:
        return Reject(
            PublishCode.DENIED,
            Refusal.PUBLISHER_LIMIT,
            f"{request.host} already publishes {mine} streams (max_publishers_per_ip)",
        )
    if pair in publishers.hosts:
        return _republish(key, publishers.idle.get(pair, 0.0), config)
    if pair in publishers.waiting:
        return Accept(key, resumed=True)
    if publishers.streams >= config.max_streams:
        return Reject(
            PublishCode.DENIED,
            Refusal.STREAM_LIMIT,
            f"this origin already has {config.max_streams} streams (max_streams)",
        )
    return Accept(key)


def _republish(key: StreamKey, idle: float, config: OriginConfig) -> Decision:
    """A publish of a live name, as `on_republish` says: "owner" lets it take over if it
    proves it owns the name (a valid publish token, checked before this, when a secret is
    set; else its current publisher has sent no media for `takeover_idle_seconds`)."""
    policy = config.on_republish
    if policy == "reject":
        return Reject(
            PublishCode.BAD_NAME, Refusal.ALREADY_PUBLISHING, f"{key} is already published"
        )
    if policy == "takeover":
        return Takeover(key, 'on_republish = "takeover"')
    if config.publish_secret:
        return Takeover(key, "it holds a valid publish token")
    if idle >= config.takeover_idle_seconds:
        return Takeover(key, f"the current publisher sent no media for {idle:.1f} s")
    return Reject(
        PublishCode.BAD_NAME,
        Refusal.NOT_OWNER,
        f"{key} is live from another publisher (media {idle:.1f} s ago, takeover after "
        f"{config.takeover_idle_seconds:g} s of silence or with a publish token)",
    )

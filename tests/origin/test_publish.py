"""The origin's publish decision, table-driven: request and publishers in, decision out."""

from __future__ import annotations

import dataclasses

import pytest

from common.config import OriginConfig
from common.proto import auth
from common.proto.streamkey import StreamKey
from common.serve.refusal import Refusal
from origin.publish import (
    Accept,
    Decision,
    PublishCode,
    Publishers,
    PublishRequest,
    Reject,
    Takeover,
    decide,
)

NOW = 1_700_000_000.0
SECRET = "s3cret"
KEY = ("live", "cam")


def token(expires: float, name: str = "cam") -> dict[str, str]:
    """A publish query signed for live/`name` until `expires`."""
    return {"expires": str(int(expires)), "token": auth.sign(SECRET, "live", name, int(expires))}


def request(name: str = "cam", query: dict[str, str] | None = None, host: str = "10.0.0.1"):
    return PublishRequest("live", name, query or {}, host)


def publishers(hosts=None, waiting=(), bans=None, streams=0) -> Publishers:
    return Publishers(hosts or {}, set(waiting), bans or {}, streams)


def config(**values) -> OriginConfig:
    return dataclasses.replace(OriginConfig(), **values)


def rejected(code: PublishCode, reason: Refusal):
    return lambda d: isinstance(d, Reject) and (d.code, d.reason) == (code, reason)


CASES = [
    # (what, request, publishers, config, expected decision or predicate)
    ("new stream", request(), publishers(), config(), Accept(StreamKey(*KEY))),
    (
        "back within the grace",
        request(),
        publishers(waiting=[KEY], streams=1),
        config(max_streams=1),
        Accept(StreamKey(*KEY), resumed=True),
    ),
    (
        "republish takes over",
        request(),
        publishers(hosts={KEY: "10.0.0.9"}, streams=1),
        config(),
        Takeover(StreamKey(*KEY)),
    ),
    (
        "republish refused",
        request(),
        publishers(hosts={KEY: "10.0.0.9"}, streams=1),
        config(on_republish="reject"),
        rejected(PublishCode.BAD_NAME, Refusal.ALREADY_PUBLISHING),
    ),
    (
        "bad name",
        request(name="a b"),
        publishers(),
        config(),
        rejected(PublishCode.BAD_NAME, Refusal.BAD_NAME),
    ),
    (
        "no token",
        request(),
        publishers(),
        config(publish_secret=SECRET),
        rejected(PublishCode.UNAUTHORIZED, Refusal.AUTH),
    ),
    (
        "expired token",
        request(query=token(NOW - 1)),
        publishers(),
        config(publish_secret=SECRET),
        rejected(PublishCode.UNAUTHORIZED, Refusal.AUTH),
    ),
    (
        "token for another name",
        request(query=token(NOW + 60, name="other")),
        publishers(),
        config(publish_secret=SECRET),
        rejected(PublishCode.UNAUTHORIZED, Refusal.AUTH),
    ),
    (
        "valid token",
        request(query=token(NOW + 60)),
        publishers(),
        config(publish_secret=SECRET),
        Accept(StreamKey(*KEY)),
    ),
    (
        "banned",
        request(),
        publishers(bans={KEY: NOW + 10}),
        config(),
        rejected(PublishCode.BAD_NAME, Refusal.BANNED),
    ),
    ("ban over", request(), publishers(bans={KEY: NOW}), config(), Accept(StreamKey(*KEY))),
    (
        "per-address limit",
        request(),
        publishers(hosts={("live", "a"): "10.0.0.1", ("live", "b"): "10.0.0.1"}, streams=2),
        config(max_publishers_per_ip=2),
        rejected(PublishCode.DENIED, Refusal.PUBLISHER_LIMIT),
    ),
    (
        "other addresses do not count",
        request(),
        publishers(hosts={("live", "a"): "10.0.0.2", ("live", "b"): "10.0.0.3"}, streams=2),
        config(max_publishers_per_ip=2),
        Accept(StreamKey(*KEY)),
    ),
    (
        "stream limit",
        request(),
        publishers(streams=2),
        config(max_streams=2),
        rejected(PublishCode.DENIED, Refusal.STREAM_LIMIT),
    ),
    (
        "a takeover needs no room",
        request(),
        publishers(hosts={KEY: "10.0.0.9"}, streams=2),
        config(max_streams=2),
        Takeover(StreamKey(*KEY)),
    ),
    (
        "a ban beats a takeover",
        request(),
        publishers(hosts={KEY: "10.0.0.9"}, bans={KEY: NOW + 10}, streams=1),
        config(),
        rejected(PublishCode.BAD_NAME, Refusal.BANNED),
    ),
]


@pytest.mark.parametrize(
    ("what", "req", "pubs", "cfg", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_publish_decision(what, req, pubs, cfg, expected) -> None:
    decision: Decision = decide(req, pubs, cfg, NOW)
    if callable(expected):
        assert expected(decision), decision
    else:
        assert decision == expected


def test_a_refusal_says_why() -> None:
    decision = decide(request(), publishers(bans={KEY: NOW + 42}), config(), NOW)
    assert isinstance(decision, Reject) and decision.detail == "live/cam is banned (42 s)"
    decision = decide(request(name="a b"), publishers(), config(), NOW)
    assert isinstance(decision, Reject) and decision.detail.startswith("bad stream key: ")

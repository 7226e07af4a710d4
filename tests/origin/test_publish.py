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
SECRET = "publish-secret-0123456789"
KEY = ("live", "cam")


def token(expires: float, name: str = "cam") -> dict[str, str]:
    """A publish query signed for live/`name` until `expires`."""
    return {"expires": str(int(expires)), "token": auth.sign(SECRET, "live", name, int(expires))}


def request(name: str = "cam", query: dict[str, str] | None = None, host: str = "10.0.0.1"):
    return PublishRequest("live", name, query or {}, host)


def publishers(hosts=None, waiting=(), bans=None, streams=0, idle=None) -> Publishers:
    return Publishers(hosts or {}, set(waiting), bans or {}, streams, idle or {})


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
        config(on_republish="takeover"),
        Takeover(StreamKey(*KEY)),
    ),
    (
        "a stranger cannot take a live name by default",
        request(),
        publishers(hosts={KEY: "10.0.0.9"}, streams=1, idle={KEY: 0.5}),
        config(),
        rejected(PublishCode.BAD_NAME, Refusal.NOT_OWNER),
    ),
    (
        "a stranger from the publisher's own address is no owner either",
        request(host="10.0.0.9"),
        publishers(hosts={KEY: "10.0.0.9"}, streams=1, idle={KEY: 2.9}),
        config(),
        rejected(PublishCode.BAD_NAME, Refusal.NOT_OWNER),
    ),
    (
        "a publisher silent for takeover_idle_seconds is replaced",
        request(),
        publishers(hosts={KEY: "10.0.0.9"}, streams=1, idle={KEY: 3.0}),
        config(),
        Takeover(StreamKey(*KEY)),
    ),
    (
        "takeover_idle_seconds is configurable",
        request(),
        publishers(hosts={KEY: "10.0.0.9"}, streams=1, idle={KEY: 3.0}),
        config(takeover_idle_seconds=10),
        rejected(PublishCode.BAD_NAME, Refusal.NOT_OWNER),
    ),
    (
        "the owner's token takes over a live publisher",
        request(query=token(NOW + 60)),
        publishers(hosts={KEY: "10.0.0.9"}, streams=1, idle={KEY: 0.0}),
        config(publish_secret=SECRET),
        Takeover(StreamKey(*KEY)),
    ),
    (
        "a stranger without the token is refused before the policy",
        request(),
        publishers(hosts={KEY: "10.0.0.9"}, streams=1, idle={KEY: 60.0}),
        config(publish_secret=SECRET),
        rejected(PublishCode.UNAUTHORIZED, Refusal.AUTH),
    ),
    (
        "takeover needs no proof",
        request(),
        publishers(hosts={KEY: "10.0.0.9"}, streams=1, idle={KEY: 0.0}),
        config(on_republish="takeover"),
        Takeover(StreamKey(*KEY)),
    ),
    (
        "reject refuses even a silent publisher's owner",
        request(query=token(NOW + 60)),
        publishers(hosts={KEY: "10.0.0.9"}, streams=1, idle={KEY: 60.0}),
        config(on_republish="reject", publish_secret=SECRET),
        rejected(PublishCode.BAD_NAME, Refusal.ALREADY_PUBLISHING),
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
        publishers(hosts={KEY: "10.0.0.9"}, streams=2, idle={KEY: 5.0}),
        config(max_streams=2),
        Takeover(StreamKey(*KEY)),
    ),
    (
        "a ban beats a takeover",
        request(),
        publishers(hosts={KEY: "10.0.0.9"}, bans={KEY: NOW + 10}, streams=1),
        config(on_republish="takeover"),
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


def test_a_refused_republish_and_a_takeover_say_why() -> None:
    live = publishers(hosts={KEY: "10.0.0.9"}, streams=1, idle={KEY: 1.25})
    decision = decide(request(), live, config(), NOW)
    assert isinstance(decision, Reject)
    assert decision.detail == (
        "live/cam is live from another publisher (media 1.2 s ago, takeover after 3 s of "
        "silence or with a publish token)"
    )
    decision = decide(request(), live, config(takeover_idle_seconds=1), NOW)
    assert isinstance(decision, Takeover)
    assert decision.why == "the current publisher sent no media for 1.2 s"
    decision = decide(request(query=token(NOW + 60)), live, config(publish_secret=SECRET), NOW)
    assert isinstance(decision, Takeover) and decision.why == "it holds a valid publish token"


def test_the_default_policy_is_owner() -> None:
    assert OriginConfig().on_republish == "owner"
    assert OriginConfig().takeover_idle_seconds == 3.0

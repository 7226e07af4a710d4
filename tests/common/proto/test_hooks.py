"""The pure parts of HTTP hooks: the request body, URL checks, the decision cache and the
HLS session table."""

from __future__ import annotations

import json

import pytest

from common.config import ConfigError, OriginConfig, build
from common.proto.hooks import DecisionCache, HlsSessions, HookCall, HookEvent, check_hook_url


def call(query: dict[str, str] | None = None, peer: str = "203.0.113.7:5000", name: str = "s"):
    return HookCall.of(HookEvent.PLAY, "live", name, peer, "hls", query or {})


def test_the_body_says_who_plays_what_with_which_parameters() -> None:
    c = HookCall.of(HookEvent.PUBLISH, "live", "cam", "[2001:db8::1]:4000", "rtmp",
                    {"z": "1", "token": "abc"})  # fmt: skip
    assert json.loads(c.body()) == {
        "action": "on_publish", "app": "live", "name": "cam", "addr": "2001:db8::1",
        "client_id": "[2001:db8::1]:4000", "protocol": "rtmp",
        "query": {"token": "abc", "z": "1"},
    }  # fmt: skip
    assert c.as_event(HookEvent.UNPUBLISH).body() == c.body().replace(
        b"on_publish", b"on_unpublish"
    )


def test_the_cache_key_is_the_request_less_its_port() -> None:
    assert call(peer="1.2.3.4:1").cache_key() == call(peer="1.2.3.4:2").cache_key()
    assert call(peer="1.2.3.4:1").cache_key() != call(peer="1.2.3.5:1").cache_key()
    assert call({"a": "1"}).cache_key() != call({"a": "2"}).cache_key()
    assert call(name="x").cache_key() != call(name="y").cache_key()
    assert call().cache_key() != call().as_event(HookEvent.PUBLISH).cache_key()


@pytest.mark.parametrize(
    "url", ["ftp://h/x", "http://", "/hook", "http://h/x#f", "http://u:p@h/x", "http://h:99999/",
            "http://h/a b", "http://h/" + "x" * 3000],
)  # fmt: skip
def test_bad_hook_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_hook_url(url)


def test_hook_urls_are_checked_at_config_load() -> None:
    assert check_hook_url("https://auth.example:8443/on_play?site=1")
    assert build(OriginConfig, {"on_publish": "http://127.0.0.1:9/p"}).on_publish
    with pytest.raises(ConfigError, match="on_play"):
        build(OriginConfig, {"on_play": "file:///etc/passwd"})


def test_the_cache_keeps_answers_for_ttl_and_is_bounded() -> None:
    cache = DecisionCache(ttl=5, max_entries=3)
    cache.put(("a",), True, now=0)
    cache.put(("b",), False, now=1)
    assert cache.get(("a",), 4.9) is True and cache.get(("b",), 4.9) is False
    assert cache.get(("a",), 5.0) is None  # expired
    for i in range(10):
        cache.put((i,), True, now=2)
    assert len(cache) == 3 and cache.get((9,), 2) is True and cache.get((0,), 2) is None
    off = DecisionCache(ttl=0)
    off.put(("a",), True, now=0)
    assert off.get(("a",), 0) is None and len(off) == 0


def test_an_hls_session_covers_its_address_requests_until_it_goes_quiet() -> None:
    s = HlsSessions(window=6, max_sessions=2)
    first = call({"t": "1", "u": "x"})
    assert not s.covers(first, 0)
    assert s.start(first, 0) == []
    assert s.covers(call(peer="203.0.113.7:6000"), 5)  # a segment: no query, another port
    assert s.covers(call({"t": "1"}), 10)  # a token carried into segment URIs
    assert not s.covers(call({"t": "2"}), 10)  # another parameter: another viewer
    assert not s.covers(call(peer="198.51.100.1:1"), 10)  # another address
    assert s.expire(16) == []
    assert s.expire(16.5) == [first]
    assert not s.covers(first, 17)


def test_hls_sessions_are_bounded_and_replaced_ones_end() -> None:
    s = HlsSessions(window=6, max_sessions=2)
    a, b, c = call(name="a"), call(name="b"), call(name="c")
    s.start(a, 0)
    s.start(b, 1)
    assert s.start(c, 2) == [a]  # the oldest ends beyond the bound
    again = call({"t": "new"}, name="b")
    assert s.start(again, 3) == [b]  # a new viewer on the same address replaces it
    assert len(s) == 2

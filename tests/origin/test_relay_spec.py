"""The relay settings' parsing (common.config.relayspec) and their config checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.config import ConfigError, OriginConfig, build
from common.config.relayspec import (
    RelaySpecError,
    pull_template,
    push_target,
    source,
    static_pull,
)
from common.proto.streamkey import StreamKey
from origin.relaystate import shown_url


def test_push_target_urls_per_stream() -> None:
    t = push_target("live=rtmp://cdn.example:1936/app/")
    assert t.app == "live"
    assert t.url_for("cam 1") == "rtmp://cdn.example:1936/app/cam%201"
    assert push_target("live=rtmps://x.example/a/b").url_for("n") == "rtmps://x.example/a/b/n"


@pytest.mark.parametrize(
    "item",
    [
        "rtmp://host/app",  # no app=
        "live=",
        "=rtmp://host/app",
        "live=http://host/app",  # not RTMP
        "live=rtmp:///app",  # no host
        "live=rtmp://host",  # no app
        "live=rtmp://host/app?key=1",  # a query would end up before the name
        "live=rtmp://host:99999/app",
        "bad app=rtmp://host/app",
        "live=rtmp://host/a pp",
        "live=rtmp://host/app\x00",
    ],
)
def test_bad_push_targets(item: str) -> None:
    with pytest.raises(RelaySpecError):
        push_target(item)


def test_sources() -> None:
    s = source("rtmp://nginx.example/live/cam?token=abc")
    assert (s.parent, s.app, s.name, s.query) == (
        "rtmp://nginx.example:1935",
        "live",
        "cam",
        "token=abc",
    )
    s = source("https://cdn.example/edge/1/live/cam.flv")
    assert (s.parent, s.app, s.name) == ("https://cdn.example:443/edge/1", "live", "cam")
    s = source("http://[::1]:8080/live/cam.flv")
    assert s.parent == "http://[::1]:8080"
    for bad in (
        "rtmp://h/live",  # no name
        "rtmp://h/a/b/c",  # RTMP: app/name only
        "http://h/live/cam",  # not .flv
        "http://h/cam.flv",  # no app
        "ftp://h/a/b.flv",
        "rtmp://h/a/b%2Fc",  # a name outside the stream-key grammar
    ):
        with pytest.raises(RelaySpecError):
            source(bad)


def test_static_pulls_and_templates() -> None:
    p = static_pull("live/copy=rtmp://h/app/src")
    assert p.key == StreamKey("live", "copy") and p.source.name == "src"
    t = pull_template("ext=rtmp://h/live/{name}")
    assert t.app == "ext" and t.source("a~b").name == "a~b"
    assert t.source("cam").url == "rtmp://h/live/cam"
    for bad in ("ext=rtmp://h/live/cam", "ext=rtmp://h/{name}/{name}", "ext=rtmp://h/l/{x}{name}"):
        with pytest.raises(RelaySpecError):
            pull_template(bad)
    with pytest.raises(RelaySpecError):
        static_pull("live=rtmp://h/app/src")  # not app/name


def test_config_checks() -> None:
    cfg = build(
        OriginConfig,
        {
            "push": ["live=rtmp://a/live", "live=rtmp://b/live"],  # one app, two targets
            "pull_static": ["live/x=rtmp://h/app/x"],
            "pull_on_demand": ["ext=http://h/live/{name}.flv"],
        },
    )
    assert len(cfg.push) == 2
    for bad in (
        {"push": ["live=udp://h/a"]},
        {"pull_static": ["live/x=rtmp://h/a/x", "live/x=rtmp://h/a/y"]},  # one name, two sources
        {"pull_on_demand": ["ext=rtmp://h/a/{name}", "ext=rtmp://g/a/{name}"]},
        {"pull_linger_seconds": -1.0},
    ):
        with pytest.raises(ConfigError):
            build(OriginConfig, bad)


def test_shown_urls() -> None:
    url = "rtmp://user:pw@live.example:1935/live2/secret-key?x=1"
    assert shown_url(url, True) == url
    assert shown_url(url, False) == "rtmp://live.example:1935/live2/..."
    assert shown_url("rtmp://h/app", False) == "rtmp://h/app"


TEXT = st.text(st.characters(codec="utf-8"), max_size=80)
URLISH = st.builds(
    lambda scheme, rest: f"{scheme}{rest}",
    st.sampled_from(["rtmp://", "rtmps://", "http://", "https://", "", "rtmp:/"]),
    TEXT,
)


@given(st.builds(lambda left, url: f"{left}={url}", TEXT, URLISH))
def test_any_item_parses_or_says_why(item: str) -> None:
    for parse in (push_target, static_pull, pull_template):
        try:
            parsed = parse(item)
        except RelaySpecError:
            continue
        if parse is pull_template:
            assert parsed.source("x").app  # a template that parses gives sources

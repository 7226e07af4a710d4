"""Each node kind's open surfaces, from its config alone (logged as warnings at start-up)."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import trio

from balancer.server import serve as serve_balancer
from common.config import BalancerConfig, EdgeConfig, OriginConfig, build
from common.config.exposure import (
    balancer_open_surfaces,
    edge_open_surfaces,
    open_surfaces,
    origin_open_surfaces,
)
from edge.server import serve as serve_edge
from origin.server import serve as serve_origin
from tests.conftest import QOS_SECRET

CLASSES = {"gold": {"rate_mbps": 4, "ceil_mbps": 8}}
SECRET = "publish-secret-0123456789"
TOKEN = "admin-token-0123456789"


def test_a_default_origin_names_publishing_and_admin():
    lines = origin_open_surfaces(build(OriginConfig, {"rtmp_port": 1935}))
    assert any(line.startswith("no publish_secret: anyone who reaches :1935") for line in lines)
    assert any(line.startswith("no admin_token:") for line in lines)


def test_an_origin_with_every_option_set_is_closed():
    config = build(
        OriginConfig,
        {"publish_secret": SECRET, "admin_token": TOKEN, "on_republish": "reject"},
    )
    assert origin_open_surfaces(config) == []


def test_takeover_is_named_as_an_open_surface():
    lines = origin_open_surfaces(build(OriginConfig, {"on_republish": "takeover"}))
    assert any("replace a live stream" in line for line in lines)
    secured = build(
        OriginConfig, {"on_republish": "takeover", "publish_secret": SECRET, "admin_token": TOKEN}
    )
    assert [line.split(":")[0] for line in origin_open_surfaces(secured)] == [
        "on_republish = takeover"
    ]


def test_an_edge_has_nothing_open_of_its_own_with_or_without_classes():
    assert edge_open_surfaces(build(EdgeConfig, {"parents": ["rtmp://127.0.0.1:1/"]})) == []
    with_classes = build(
        EdgeConfig,
        {"parents": ["rtmp://127.0.0.1:1/"], "classes": CLASSES, "qos_secret": QOS_SECRET},
    )
    assert edge_open_surfaces(with_classes) == []  # no token: the default class


def test_the_balancer_names_its_control_plane_and_admin():
    lines = balancer_open_surfaces(build(BalancerConfig, {"control_port": 8091}))
    assert any(
        line.startswith("control plane has no authentication: anyone who reaches :8091")
        for line in lines
    )
    assert any(line.startswith("no admin_token:") for line in lines)
    closed = build(BalancerConfig, {"admin_token": TOKEN})
    assert not any("admin_token" in line for line in balancer_open_surfaces(closed))
    classes = build(
        BalancerConfig, {"admin_token": TOKEN, "classes": CLASSES, "qos_secret": QOS_SECRET}
    )
    assert not any("class" in line for line in open_surfaces(classes))  # signed tokens only


@pytest.mark.parametrize(
    ("serve", "model", "values", "bound"),
    [(serve_origin, OriginConfig, {"rtmp_port": 0}, lambda s: {"rtmp_port": s.address.rtmp_port}),
     (serve_edge, EdgeConfig, {"rtmp_port": 0, "parents": ["rtmp://127.0.0.1:1/"],
                               "classes": CLASSES, "qos_secret": QOS_SECRET,
                               "balancer": "127.0.0.1:1"}, lambda a: {}),
     (serve_balancer, BalancerConfig, {"control_port": 0}, lambda s: {"control_port": s.address[1]})],
)  # fmt: skip
def test_serve_logs_one_warning_per_open_surface(caplog, serve, model, values, bound):
    """Each open surface once, naming the port the node listens on (not the configured 0)."""
    config = build(model, {"host": "127.0.0.1", "http_port": 0, **values})
    started = []

    async def main():
        async with trio.open_nursery() as nursery:
            started.append(await nursery.start(serve, config))
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.WARNING, logger="livecdn"):
        trio.run(main)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    lines = open_surfaces(dataclasses.replace(config, **bound(started[0])))
    assert lines
    for line in lines:
        assert warned.count(line) == 1, (line, warned)
    assert not any(" :0 " in line for line in warned), warned

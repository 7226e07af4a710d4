"""What a node leaves open with its config: one line per open surface, logged as a warning
at start-up (pure: a config in, sentences out)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

NO_ADMIN_TOKEN = "no admin_token: admin routes ({what}) answer only on loopback"


def origin_open_surfaces(config: Any) -> list[str]:
    """The open surfaces of an origin (an OriginConfig)."""
    out = []
    if not config.publish_secret:
        out.append(
            f"no publish_secret: anyone who reaches :{config.rtmp_port} can publish any name"
        )
        if config.on_republish == "takeover":
            out.append(
                "no publish_secret and on_republish = takeover: anyone who can publish can "
                "replace a live stream"
            )
    elif config.on_republish == "takeover":
        out.append(
            "on_republish = takeover: any holder of a name's publish token replaces its "
            "live publisher unconditionally"
        )
    if not config.admin_token:
        out.append(NO_ADMIN_TOKEN.format(what="kick/ban, publisher addresses"))
    return out + unauthenticated_reports(config, "stream announcements")


def unauthenticated_reports(config: Any, what: str) -> list[str]:
    """The line of a node that reports to a balancer without a cluster_secret."""
    if not config.balancer or config.cluster_secret:
        return []
    return [
        f"no cluster_secret: the {what} to the balancer {config.balancer} are unauthenticated "
        "(its control plane must be open, so anyone who reaches it can report too)"
    ]


def edge_open_surfaces(config: Any) -> list[str]:
    """The open surfaces of an edge (an EdgeConfig): unauthenticated heartbeats. Viewer
    classes are none: a viewer without a valid class token is shaped as the default class."""
    return unauthenticated_reports(config, "heartbeats")


def balancer_open_surfaces(config: Any) -> list[str]:
    """The open surfaces of a balancer (a BalancerConfig)."""
    out = []
    if not config.cluster_secret:
        out.append(
            f"control plane has no authentication: anyone who reaches :{config.control_port} "
            "can register an edge (and get viewers) or announce streams (set cluster_secret)"
        )
    if not config.admin_token:
        out.append(NO_ADMIN_TOKEN.format(what="drain/undrain"))
    return out


def open_surfaces(config: Any) -> list[str]:
    """The open surfaces of any node's config, by its kind."""
    by_kind = {
        "origin": origin_open_surfaces,
        "edge": edge_open_surfaces,
        "balancer": balancer_open_surfaces,
    }
    return by_kind[config.kind](config)


def warn_open_surfaces(config: Any, log: logging.Logger, **bound: int) -> None:
    """Log one warning per open surface of `config` (each node's serve() does, at start-up);
    `bound`: the ports the node listens on (e.g. rtmp_port=1935), named in place of the
    configured ones (0: any free port)."""
    for line in open_surfaces(dataclasses.replace(config, **bound)):
        log.warning("%s", line)

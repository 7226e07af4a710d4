"""An origin's config reload (SIGHUP): publish and play secrets, hooks, limits and what it
tells the balancer change while its publishers and viewers go on."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from common.config import OriginConfig
from common.serve.playauth import signed_urls
from common.serve.reload import Steps, reload_plan, reload_play_node, warn_newly_open

if TYPE_CHECKING:
    from origin.server import Origin

log = logging.getLogger("livecdn.origin")


async def reload_origin(origin: Origin, config: OriginConfig) -> list[str]:
    """Apply `config` to the running `origin` and return the keys that changed; ConfigError
    (nothing applied) if one of them cannot change without a restart, PartlyApplied if a
    step failed unexpectedly. Publishers and viewers connected keep going; what is decided
    per publish, play or stream (secrets, limits, HLS and recording of new streams) follows
    the new config from now on."""
    old = origin.config
    why = []
    if bool(old.balancer) != bool(config.balancer):
        why.append("balancer can change, but not be set or unset without a restart")
    changed = reload_plan(old, config, why)
    if not changed:
        return []
    signed = signed_urls(config.play_secret, config.cluster_secret if config.edges_only else "")
    steps = Steps()
    with steps("config"):
        origin.config = origin.recorder.config = config
    reload_play_node(origin.node, config, changed, origin.hooks, signed, origin.snapshots, steps)
    if {"balancer", "cluster_secret"} & set(changed) and origin.reporter is not None:
        with steps("reports to the balancer"):
            origin.reporter.again()
    bound = {"rtmp_port": origin.address.rtmp_port} if origin.address else {}
    warn_newly_open(old, config, log, **bound)
    return changed

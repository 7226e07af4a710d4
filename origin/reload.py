"""An origin's config reload (SIGHUP): publish and play secrets, hooks, limits and what it
tells the balancer change while its publishers and viewers go on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.config import OriginConfig
from common.serve.playauth import signed_urls
from common.serve.reload import reload_plan, reload_play_node

if TYPE_CHECKING:
    from origin.server import Origin


def reload_origin(origin: Origin, config: OriginConfig) -> list[str]:
    """Apply `config` to the running `origin` and return the keys that changed; ConfigError
    (nothing applied) if one of them cannot change without a restart. Publishers and
    viewers connected keep going; what is decided per publish, play or stream (secrets,
    limits, HLS and recording of new streams) follows the new config from now on."""
    old = origin.config
    why = []
    if bool(old.balancer) != bool(config.balancer):
        why.append("balancer can change, but not be set or unset without a restart")
    changed = reload_plan(old, config, why)
    if not changed:
        return []
    signed = signed_urls(config.play_secret, config.cluster_secret if config.edges_only else "")
    origin.config = origin.recorder.config = config
    reload_play_node(origin.node, config, changed, origin.hooks, signed, origin.snapshots)
    if {"balancer", "cluster_secret"} & set(changed) and origin.reporter is not None:
        origin.reporter.again()
    return changed

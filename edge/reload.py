"""An edge's config reload (SIGHUP): parents, viewer classes, secrets, limits and what it
reports to the balancer change while its viewers keep playing."""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING

from common.config import ConfigError, EdgeConfig, class_rates, default_class
from common.net.tls import TlsError, client_context
from common.serve.playauth import signed_urls
from common.serve.reload import (
    Steps,
    read_off_loop,
    reload_plan,
    reload_play_node,
    warn_newly_open,
)
from edge.hls import HLS_FETCH_SLACK
from edge.pull import PullSettings

if TYPE_CHECKING:
    from edge.server import Edge

log = logging.getLogger("livecdn.edge")


def refusals(old: EdgeConfig, new: EdgeConfig) -> list[str]:
    """Why reloadable keys cannot change from `old` to `new` as they stand."""
    why = []
    if old.packages_hls() != new.packages_hls():
        why.append(
            "the new parents would change where HLS comes from (hls_mode "
            f'"{"package" if new.packages_hls() else "cache"}")'
        )
    if bool(old.balancer) != bool(new.balancer):
        why.append("balancer can change, but not be set or unset without a restart")
    return why


def parent_tls(config: EdgeConfig) -> ssl.SSLContext | None:
    """The context rtmps:// and https:// parents are verified with (tls_ca; None: the
    system's trust); ConfigError if tls_ca cannot be read."""
    try:
        return client_context(config.tls_ca) if config.tls_ca else None
    except TlsError as exc:
        raise ConfigError(str(exc)) from None


async def reload_edge(edge: Edge, config: EdgeConfig) -> list[str]:
    """Apply `config` to the running `edge` and return the keys that changed; ConfigError
    (nothing applied) if one of them cannot change without a restart or tls_ca cannot be
    read (it is read in a thread, bounded), PartlyApplied if a step failed unexpectedly.

    New parents (and tls_ca) are used by every next connection to a parent; an upstream
    relaying from a parent that is no longer listed moves to the new ones at once, as a
    failover (its viewers stay); pull timings hold for pulls started from then on. Classes
    change their rates in place (viewers keep playing, paced by the new rates); a removed
    class takes no new viewers.
    """
    old = edge.config
    changed = reload_plan(old, config, refusals(old, config))
    if not changed:
        return []
    tls = edge.tls
    if "tls_ca" in changed:
        tls = await read_off_loop(f"tls_ca {config.tls_ca}", parent_tls, config)
    # all that can fail, before the first step
    signed = signed_urls(config.play_secret)
    settings = PullSettings.from_config(config)
    class_rates(config.classes)  # what edge.qos.reload takes: checked here
    default_class(config.classes)
    hls_parents = config.hls_parents or config.http_parents()
    steps = Steps()
    with steps("config and secrets"):
        edge.config = config
        if edge.heartbeat is not None:
            edge.heartbeat.config = config
        edge.signer.secret, edge.signer.cluster_secret = config.play_secret, config.cluster_secret
        edge.hls.sign = edge.signer.query if edge.signer.signs else None
    reload_play_node(edge.node, config, changed, edge.hooks, signed, edge.snapshots, steps)
    with steps("pull and HLS settings"):
        edge.pull.max_streams = edge.packagers.max_streams = config.max_streams
        edge.pull.settings = settings
        edge.packagers.idle = edge.hls_store.viewers.window + config.linger_seconds
        edge.hls.slow_timeout = config.slow_timeout
        edge.hls.failover.timeout = config.connect_timeout + HLS_FETCH_SLACK
        edge.hls.cache.negative_ttl = config.not_found_ttl
        edge.hls.cache.max_bytes = config.hls_cache_bytes
    with steps("parents and tls_ca"):
        if "parents" in changed and (moved := edge.pull.set_parents(config.parents)):
            log.info("reload: %d upstream(s) move off removed parents", moved)
        edge.hls.parents = edge.hls.failover.parents = hls_parents
        edge.tls = edge.hls.failover.tls = tls
    with steps("classes"):
        if edge.qos.reload(config):
            edge.start_link_accounting()
    if {"balancer", "cluster_secret"} & set(changed) and edge.reporter is not None:
        with steps("reports to the balancer"):
            edge.reporter.again()
    warn_newly_open(old, config, log)
    return changed

"""The balancer's config reload (SIGHUP): policy, limits, secrets, classes and timings change
while its table of edges and origins, its queue and its connections stay."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from balancer.console import console
from balancer.policy import make_policy
from common.config import BalancerConfig
from common.serve.reload import Steps, apply_log_level, reload_plan, warn_newly_open

if TYPE_CHECKING:
    from balancer.server import Balancer

log = logging.getLogger("livecdn.balancer")

HEALTH_KEYS = {"check_interval", "rise", "fall"}


async def reload_balancer(balancer: Balancer, config: BalancerConfig) -> list[str]:
    """Apply `config` to the running `balancer` and return the keys that changed;
    ConfigError (nothing applied) if one of them cannot change without a restart,
    PartlyApplied if a step failed unexpectedly. A new policy starts fresh (a hash
    policy's spread of streams may move); control sessions already authenticated keep
    going, new ones need the new cluster_secret."""
    old = balancer.config
    changed = reload_plan(old, config)
    if not changed:
        return []
    policy = balancer.router.policy
    if {"policy", "hash_balance_factor"} & set(changed):
        policy = make_policy(config.policy, hash_balance_factor=config.hash_balance_factor)
    page = console(balancer.table, config)
    steps = Steps()
    with steps("config"):
        for part in (balancer, balancer.table, balancer.router, balancer.control, balancer.viewers):
            part.config = config
    with steps("policy, console and limits"):
        balancer.router.policy = policy
        balancer.console = page
        if balancer.slots is not None:
            balancer.slots.limit = config.max_connections
    if HEALTH_KEYS & set(changed):
        with steps("health checks"):
            balancer.health.again()
    if "log_level" in changed:
        with steps("log_level"):
            apply_log_level(config)
    bound = {"control_port": balancer.address[1]} if balancer.address else {}
    warn_newly_open(old, config, log, **bound)
    return changed

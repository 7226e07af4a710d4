"""The balancer's config reload (SIGHUP): policy, limits, secrets, classes and timings change
while its table of edges and origins, its queue and its connections stay."""

from __future__ import annotations

from typing import TYPE_CHECKING

from balancer.console import console
from balancer.policy import make_policy
from common.config import BalancerConfig
from common.serve.reload import apply_log_level, reload_plan

if TYPE_CHECKING:
    from balancer.server import Balancer

HEALTH_KEYS = {"check_interval", "rise", "fall"}


def reload_balancer(balancer: Balancer, config: BalancerConfig) -> list[str]:
    """Apply `config` to the running `balancer` and return the keys that changed;
    ConfigError (nothing applied) if one of them cannot change without a restart. A new
    policy starts fresh (a hash policy's spread of streams may move); control sessions
    already authenticated keep going, new ones need the new cluster_secret."""
    changed = reload_plan(balancer.config, config)
    if not changed:
        return []
    policy = balancer.router.policy
    if {"policy", "hash_balance_factor"} & set(changed):
        policy = make_policy(config.policy, hash_balance_factor=config.hash_balance_factor)
    for part in (balancer, balancer.table, balancer.router, balancer.control, balancer.viewers):
        part.config = config
    balancer.router.policy = policy
    balancer.console = console(balancer.table, config)
    if balancer.slots is not None:
        balancer.slots.limit = config.max_connections
    if HEALTH_KEYS & set(changed):
        balancer.health.again()
    if "log_level" in changed:
        apply_log_level(config)
    return changed

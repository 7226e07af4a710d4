"""Node configs: one model per node kind (common.config.nodes), loaded from TOML, environment
and command line (common.config.sources), with generated flags and README tables."""

from common.config.model import ConfigError, build, keys, setting
from common.config.nodes import (
    BALANCER_POLICIES,
    FD_RESERVE,
    MAX_BAN_SECONDS,
    MODELS,
    BalancerConfig,
    EdgeConfig,
    OriginConfig,
    ServeConfig,
    check_classes,
    class_rates,
    connection_budget,
    default_class,
    default_max_connections,
    fd_limit,
)
from common.config.sources import env_name, load

__all__ = [
    "BALANCER_POLICIES",
    "FD_RESERVE",
    "MAX_BAN_SECONDS",
    "MODELS",
    "BalancerConfig",
    "ConfigError",
    "EdgeConfig",
    "OriginConfig",
    "ServeConfig",
    "build",
    "check_classes",
    "class_rates",
    "default_class",
    "connection_budget",
    "default_max_connections",
    "env_name",
    "fd_limit",
    "keys",
    "load",
    "setting",
]

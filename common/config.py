"""Node configurations: frozen dataclasses loaded from TOML and CLI overrides, with clear errors."""

from __future__ import annotations

import dataclasses
import math
import re
import resource
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from common.proto import control

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid."""


FD_RESERVE = 64
"""File descriptors kept back from connections (listeners, upstreams, files, the runtime)."""


def fd_limit() -> int:
    """This process's soft limit on open file descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_budget() -> int:
    """The most connections this process can hold: its descriptor limit less a reserve
    (FD_RESERVE, or a quarter of a small limit), so a refusal comes before EMFILE."""
    limit = fd_limit()
    return max(8, limit - min(FD_RESERVE, limit // 4))


def default_max_connections() -> int:
    """Connections a node accepts by default: the budget, at most 20000."""
    return min(20000, connection_budget())


_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]|[0-9A-Fa-f:.]{2,45}")


def check_reporting(cfg: Any) -> None:
    """What an origin or edge tells the balancer must pass the balancer's checks."""
    try:
        if cfg.balancer:
            control.parse_address(cfg.balancer)
        if cfg.node_id:
            control.check_node_id(cfg.node_id)
    except (ValueError, control.ControlError) as exc:
        raise ConfigError(str(exc)) from exc
    public_host = getattr(cfg, "public_host", "")
    if public_host and not _HOST.fullmatch(public_host):
        raise ConfigError(f"public_host {public_host!r} is not a host name or IP address")
    region = getattr(cfg, "region", "")
    if len(region) > 256 or not region.isprintable():
        raise ConfigError("region must be at most 256 printable characters")
    for name, limit in (("weight", 1e6), ("capacity_mbps", 1e9), ("capacity_viewers", 1e9)):
        value = getattr(cfg, name, 0)
        if not (math.isfinite(value) and 0 <= value <= limit):
            raise ConfigError(f"{name} must be a finite number in 0..{limit:g}")


@dataclass(frozen=True)
class ServeConfig:
    """Settings every node that serves viewers has (origin and edge)."""

    host: str = "0.0.0.0"
    rtmp_port: int = 1935
    http_port: int = 8080
    gop_cache: bool = True
    gop_max_frames: int = 2048
    gop_max_bytes: int = 16 * 1024 * 1024
    max_message_size: int = 8 * 1024 * 1024
    handshake_timeout: float = 10.0
    idle_timeout: float = 30.0
    slow_timeout: float = 10.0
    max_lag_ms: int = 5000
    batch_ms: float = 50.0
    max_connections: int = field(default_factory=default_max_connections)
    max_streams: int = 1000
    http_header_timeout: float = 10.0
    http_keepalive_timeout: float = 30.0
    http_max_header_bytes: int = 16 * 1024
    log_level: str = "info"

    def validate(self) -> None:
        """Raise ConfigError for values that cannot work."""
        for name in ("rtmp_port", "http_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"{name} {port} is not a TCP port")
        for name in (
            "gop_max_frames",
            "gop_max_bytes",
            "max_message_size",
            "max_connections",
            "max_streams",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive")
        for name in (
            "handshake_timeout",
            "idle_timeout",
            "slow_timeout",
            "batch_ms",
            "http_header_timeout",
            "http_keepalive_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        if self.max_message_size > 0xFFFFFF:
            raise ConfigError("max_message_size cannot exceed 16777215 (RTMP's 24-bit length)")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"log_level {self.log_level!r} is not debug/info/warning/error")


MAX_BAN_SECONDS = 30 * 86400
"""The longest ban a kick can set (30 days): a ban is always finite."""


@dataclass(frozen=True)
class OriginConfig(ServeConfig):
    """Settings of one origin node (keys of origin.toml)."""

    on_republish: str = "takeover"
    publish_secret: str = ""
    kick_ban_seconds: float = 0.0
    publisher_grace: float = 3.0  # below the edges' stall_timeout (5 s): they see the end
    max_publishers_per_ip: int = 32
    max_ingest_mbps: float = 100.0
    hls: bool = True
    hls_apps: list[str] = field(default_factory=list)
    hls_target_duration: float = 2.0
    hls_window: int = 6
    hls_grace_seconds: float = 30.0
    hls_dir: str = ""
    balancer: str = ""
    node_id: str = ""
    clock_stamps: bool = False

    def validate(self) -> None:
        """Raise ConfigError for values that cannot work."""
        super().validate()
        if not 0 <= self.kick_ban_seconds <= MAX_BAN_SECONDS:
            raise ConfigError(f"kick_ban_seconds must be in 0..{MAX_BAN_SECONDS}")
        if not 0 <= self.publisher_grace <= 600:
            raise ConfigError("publisher_grace must be in 0..600 s")
        if self.max_publishers_per_ip < 1 or self.max_ingest_mbps <= 0:
            raise ConfigError("max_publishers_per_ip must be >= 1 and max_ingest_mbps > 0")
        check_reporting(self)
        if self.hls_target_duration < 0.5 or self.hls_window < 1:
            raise ConfigError("hls_target_duration must be >= 0.5 s and hls_window >= 1")
        if self.on_republish not in ("takeover", "reject"):
            raise ConfigError(
                f"on_republish must be 'takeover' or 'reject', not {self.on_republish!r}"
            )


@dataclass(frozen=True)
class EdgeConfig(ServeConfig):
    """Settings of one edge node (keys of edge.toml)."""

    rtmp_port: int = 1936
    http_port: int = 8081
    parents: list[str] = field(default_factory=list)
    linger_seconds: float = 10.0
    not_found_ttl: float = 2.0
    connect_timeout: float = 5.0
    stall_timeout: float = 5.0
    retry_seconds: float = 10.0
    hls_parents: list[str] = field(default_factory=list)
    hls_cache_bytes: int = 256 * 1024 * 1024
    balancer: str = ""
    node_id: str = ""
    public_host: str = ""
    capacity_viewers: int = 0
    capacity_mbps: float = 0.0
    weight: float = 1.0
    region: str = ""
    qos_secret: str = ""
    classes: dict[str, dict] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ConfigError for values that cannot work."""
        super().validate()
        if not self.parents:
            raise ConfigError("an edge needs at least one parent (--parent rtmp://host:port)")
        for parent in self.parents:
            if not parent.startswith(("rtmp://", "http://")):
                raise ConfigError(f"parent {parent!r} must be an rtmp:// or http:// URL")
        for parent in self.hls_parents:
            if not parent.startswith("http://"):
                raise ConfigError(f"hls parent {parent!r} must be an http:// URL")
        for name in ("connect_timeout", "stall_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        for name in ("linger_seconds", "not_found_ttl", "retry_seconds"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        check_reporting(self)
        check_classes(self.classes, self.qos_secret)
        assured = sum(rate for rate, _ in class_rates(self.classes).values()) / 125_000
        if self.capacity_mbps and assured > self.capacity_mbps + 1e-9:
            raise ConfigError(
                f"the classes' rate_mbps add up to {assured:g}, more than capacity_mbps "
                f"{self.capacity_mbps:g} (HTB: the assured rates must fit the link)"
            )


def _check_type(cls_name: str, key: str, value: Any, annotation: Any) -> Any:
    hint = annotation
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        options = typing.get_args(hint)
    else:
        options = (hint,)
    for opt in options:
        if typing.get_origin(opt) is dict:
            if isinstance(value, dict):
                return dict(value)
            continue
        if typing.get_origin(opt) is list:
            (item,) = typing.get_args(opt)
            if isinstance(value, list) and all(isinstance(v, item) for v in value):
                return list(value)
            continue
        if opt is type(None) and value is None:
            return value
        if opt is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if opt is int and isinstance(value, bool):
            continue
        if isinstance(opt, type) and isinstance(value, opt):
            return value
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{cls_name}: {key} must be {names}, got {value!r}")


def build(cls: type[T], values: dict[str, Any], *, source: str = "config") -> T:
    """Build and validate a config dataclass from a dict, rejecting unknown keys."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
        )
    checked = {k: _check_type(source, k, v, hints[k]) for k, v in values.items()}
    config = cls(**checked)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def load(cls: type[T], path: str | Path | None, overrides: dict[str, Any]) -> T:
    """Load `path` (TOML) if given, apply non-None `overrides`, validate."""
    values: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as f:
                values = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build(cls, values, source=source)


BALANCER_POLICIES = ("round_robin", "least_load", "p2c", "consistent_hash", "bounded_hash")


@dataclass(frozen=True)
class BalancerConfig:
    """Settings of the balancer (keys of balancer.toml)."""

    host: str = "0.0.0.0"
    http_port: int = 8090
    control_port: int = 8091
    policy: str = "least_load"
    hash_balance_factor: float = 1.25
    heartbeat_timeout: float = 2.5
    check_interval: float = 1.0
    rise: int = 2
    fall: int = 2
    overflow: str = "reject"
    queue_max: int = 100
    queue_timeout: float = 5.0
    retry_after: int = 5
    max_connections: int = 20000
    qos_secret: str = ""
    classes: dict[str, dict] = field(default_factory=dict)
    token_ttl: int = 300
    log_level: str = "info"
    control_max_connections: int = 256
    control_idle_timeout: float = 5.0
    forget_after: float = 60.0
    max_edges: int = 1000
    max_origins: int = 64

    def validate(self) -> None:
        """Raise ConfigError for values that cannot work."""
        if self.policy not in BALANCER_POLICIES:
            raise ConfigError(
                f"policy must be one of {', '.join(BALANCER_POLICIES)}, not {self.policy!r}"
            )
        if self.overflow not in ("reject", "queue"):
            raise ConfigError(f"overflow must be 'reject' or 'queue', not {self.overflow!r}")
        if not 1.0 <= self.hash_balance_factor < float("inf"):
            raise ConfigError("hash_balance_factor must be a finite number >= 1.0")
        for name in ("http_port", "control_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"{name} is not a TCP port")
        if (
            self.rise < 1
            or self.fall < 1
            or self.heartbeat_timeout <= 0
            or self.check_interval <= 0
        ):
            raise ConfigError("rise/fall must be >= 1 and the intervals > 0")
        for name in ("max_connections", "control_max_connections", "max_edges", "max_origins"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        for name in ("queue_max", "retry_after", "token_ttl"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        for name in (
            "heartbeat_timeout",
            "check_interval",
            "queue_timeout",
            "control_idle_timeout",
            "forget_after",
        ):
            value = getattr(self, name)
            if not 0 < value < float("inf"):  # NaN fails too
                raise ConfigError(f"{name} must be a finite number of seconds > 0")
        if self.forget_after < self.heartbeat_timeout:
            raise ConfigError(
                f"forget_after ({self.forget_after:g} s) must be at least heartbeat_timeout "
                f"({self.heartbeat_timeout:g} s): an edge is forgotten only after it is out"
            )
        check_classes(self.classes, self.qos_secret)


def class_rates(classes: dict[str, dict]) -> dict[str, tuple[float, float]]:
    """{class: (rate, ceil)} in bytes/s from validated class specs."""
    return {
        name: (spec["rate_mbps"] * 125_000, spec.get("ceil_mbps", spec["rate_mbps"]) * 125_000)
        for name, spec in classes.items()
    }


def check_classes(classes: dict[str, dict], secret: str) -> None:
    """Viewer classes: {name: {rate_mbps, ceil_mbps}}, which need a qos_secret."""
    if classes and not secret:
        raise ConfigError("viewer classes need a qos_secret (shared by balancer and edges)")
    for name, spec in classes.items():
        if not isinstance(spec, dict) or set(spec) - {"rate_mbps", "ceil_mbps"}:
            raise ConfigError(f"class {name!r}: expected rate_mbps and ceil_mbps")
        rate, ceil = spec.get("rate_mbps", 0), spec.get("ceil_mbps", spec.get("rate_mbps", 0))
        if not all(isinstance(v, (int, float)) and v > 0 for v in (rate, ceil)) or ceil < rate:
            raise ConfigError(f"class {name!r}: need 0 < rate_mbps <= ceil_mbps")

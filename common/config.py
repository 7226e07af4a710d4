"""Node configurations: frozen dataclasses loaded from TOML and CLI overrides, with clear errors."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid."""


@dataclass(frozen=True)
class OriginConfig:
    """Settings of one origin node (keys of origin.toml)."""

    host: str = "0.0.0.0"
    rtmp_port: int = 1935
    http_port: int = 8080
    gop_cache: bool = True
    gop_max_frames: int = 2048
    gop_max_bytes: int = 16 * 1024 * 1024
    on_republish: str = "takeover"
    publish_secret: str = ""
    max_message_size: int = 8 * 1024 * 1024
    handshake_timeout: float = 10.0
    idle_timeout: float = 30.0
    slow_timeout: float = 10.0
    max_lag_ms: int = 5000
    batch_ms: float = 50.0
    max_connections: int = 20000
    kick_ban_seconds: float = 0.0
    http_header_timeout: float = 10.0
    http_keepalive_timeout: float = 30.0
    http_max_header_bytes: int = 16 * 1024
    log_level: str = "info"

    def validate(self) -> None:
        """Raise ConfigError for values that cannot work."""
        if self.on_republish not in ("takeover", "reject"):
            raise ConfigError(
                f"on_republish must be 'takeover' or 'reject', not {self.on_republish!r}"
            )
        for name in ("rtmp_port", "http_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"{name} {port} is not a TCP port")
        for name in ("gop_max_frames", "gop_max_bytes", "max_message_size", "max_connections"):
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


def _check_type(cls_name: str, key: str, value: Any, annotation: Any) -> Any:
    hint = annotation
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        options = typing.get_args(hint)
    else:
        options = (hint,)
    for opt in options:
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

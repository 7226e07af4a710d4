"""Where config values come from, lowest first: defaults, a TOML file, the environment
(LIVECDN_<KIND>_<KEY>), the command line; `load` layers them."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from common.config.model import ConfigError, Layer, build_layers, keys, layer, parse_text
from common.config.toml import dumps

T = TypeVar("T")


def from_file(cls: type, path: str | Path) -> Layer:
    """The keys of TOML file `path`, checked against `cls`."""
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return layer(cls, values, str(path))


ENV_PREFIX = "LIVECDN_"
"""The prefix of every environment override."""


def env_name(cls: type, key: str) -> str:
    """The environment variable that sets `key` of `cls`, e.g. LIVECDN_EDGE_BATCH_MS."""
    return f"{ENV_PREFIX}{cls.kind.upper()}_{key.upper()}"


def from_env(cls: type, environ: Mapping[str, str]) -> Layer:
    """The keys set by LIVECDN_<KIND>_<KEY> variables; one naming no key is an error."""
    known = keys(cls)
    names = {env_name(cls, k): k for k in known}
    prefix = env_name(cls, "")
    out: Layer = {}
    for var, text in environ.items():
        if not var.startswith(prefix):
            continue
        if var not in names:
            raise ConfigError(
                f"environment: {var} names no {cls.kind} key; "
                f"known keys: {', '.join(sorted(known))}"
            )
        key = known[names[var]]
        source = f"environment {var}"
        out[key.name] = (parse_text(key.name, text, key.type, source), source)
    return out


def from_cli(cls: type, values: Mapping[str, Any]) -> Layer:
    """The keys given on the command line (parsed by the generated flags; None: not given)."""
    known = keys(cls)
    return {
        k: (v, f"command line {known[k].flag}")
        for k, v in values.items()
        if v is not None and k in known
    }


def load(
    cls: type[T],
    path: str | Path | None = None,
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    """The config of `cls`: defaults < TOML file `path` < environment < `cli` values."""
    file_layer = from_file(cls, path) if path is not None else {}
    env_layer = from_env(cls, os.environ if environ is None else environ)
    return build_layers(cls, file_layer, env_layer, from_cli(cls, cli or {}))


def save(cls: type, values: Mapping[str, Any], path: Path) -> Path:
    """Write `values` (checked: they must make a valid `cls` config) as TOML file `path`."""
    build_layers(cls, layer(cls, values, str(path)))
    path.write_text(dumps(values))
    return path

"""Config fields declared once: `setting()` carries help, unit, default and check, and `build`
turns layers of values (TOML file, environment, command line) into a validated config."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

Check = Callable[[str, Any], "str | None"]
"""A field's check: (key, value) -> what is wrong with the value, or None."""


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid."""


@dataclass(frozen=True)
class Setting:
    """What a config field says about itself (kept in the dataclass field's metadata)."""

    help: str
    unit: str = ""
    check: Check | None = None
    flags: tuple[str, ...] = ()  # more command-line names, e.g. "--rtmp" for rtmp_port
    item_flag: str = ""  # list keys: a repeatable flag adding one item, e.g. "--parent"
    default_text: str = ""  # for a default computed at start-up
    reloadable: bool = False  # a running node applies a new value on SIGHUP (no restart)


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    unit: str = "",
    check: Check | None = None,
    flags: Iterable[str] = (),
    item_flag: str = "",
    factory: Callable[[], Any] | None = None,
    default_text: str = "",
    reloadable: bool = False,
) -> Any:
    """A config field: its default (or `factory`), help text, unit and check; `reloadable`:
    a running node takes a new value on SIGHUP (common.serve.reload), else only at start."""
    meta = {
        "setting": Setting(help, unit, check, tuple(flags), item_flag, default_text, reloadable)
    }
    if factory is None and isinstance(default, (list, dict)):
        factory = default.copy
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Key:
    """One key of a config model: name, type, default and its Setting."""

    name: str
    type: Any
    setting: Setting
    field: dataclasses.Field

    @property
    def default(self) -> Any:
        """The default value (computed now for a default_factory)."""
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        return self.field.default

    @property
    def flag(self) -> str:
        """The key's own command-line flag, e.g. --batch-ms."""
        return "--" + self.name.replace("_", "-")


def keys(cls: type) -> dict[str, Key]:
    """The keys of config model `cls`, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: Key(f.name, hints[f.name], f.metadata["setting"], f)
        for f in dataclasses.fields(cls)
    }


def reloadable_keys(cls: type) -> set[str]:
    """The keys of `cls` a running node takes a new value of (SIGHUP) without a restart."""
    return {name for name, key in keys(cls).items() if key.setting.reloadable}


def own_keys(cls: type) -> dict[str, Key]:
    """The keys `cls` declares itself (not only inherits)."""
    own = cls.__dict__.get("__annotations__", {})
    return {name: key for name, key in keys(cls).items() if name in own}


def default(cls: type, name: str) -> Any:
    """The default value of key `name` of `cls`."""
    return keys(cls)[name].default


SECRET_SUFFIXES = ("_secret", "_token")
"""Keys whose name ends so hold secrets: their values are never shown in a message."""


def is_secret(name: str) -> bool:
    """Whether key `name` holds a secret (its value is never shown)."""
    return name.endswith(SECRET_SUFFIXES)


def shown(key: str, value: Any) -> str:
    """`value` of key `key` as an error message may show it: a secret's is hidden."""
    if is_secret(key):
        return f"a value of type {type(value).__name__} (hidden: {key} is a secret)"
    return repr(value)


def type_name(hint: Any) -> str:
    """A key's type in words (for errors and help)."""
    origin = typing.get_origin(hint)
    if origin is list:
        return "a list of strings"
    if origin is dict:
        return "a table"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]


def coerce(key: str, value: Any, hint: Any, source: str) -> Any:
    """`value` as `hint` (an int is a float too); ConfigError naming key and source if it is not."""
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        ok = isinstance(value, list) and all(isinstance(v, item) for v in value)
        value = list(value) if ok else value
    elif origin is dict:
        ok = isinstance(value, dict)
        value = dict(value) if ok else value
    elif hint is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise ConfigError(f"{source}: {key} must be {type_name(hint)}, got {shown(key, value)}")
    return value


TRUE = ("true", "1", "yes", "on")
FALSE = ("false", "0", "no", "off")


def parse_text(key: str, text: str, hint: Any, source: str) -> Any:
    """A value given as text (environment, command line) as `hint`: lists and tables in JSON
    or TOML inline syntax, booleans as true/false (1/0, yes/no, on/off)."""
    try:
        if hint is str:
            return text
        if hint is bool:
            word = text.strip().lower()
            if word in TRUE or word in FALSE:
                return word in TRUE
            raise ValueError(text)
        if hint in (int, float):
            return coerce(key, hint(text.strip()), hint, source)
        try:
            value = json.loads(text)
        except ValueError:
            value = tomllib.loads(f"v = {text}")["v"]
        return coerce(key, value, hint, source)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(
            f"{source}: {key} must be {type_name(hint)}, got {shown(key, text)}"
        ) from None


Layer = dict[str, tuple[Any, str]]
"""Values of one source: {key: (value, where it was given)}."""


def layer(cls: type, values: Mapping[str, Any], source: str) -> Layer:
    """Check `values` (typed, e.g. from TOML) against `cls`: unknown keys and wrong types are
    errors naming the key and `source`."""
    known = keys(cls)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
        )
    return {k: (coerce(k, v, known[k].type, source), source) for k, v in values.items()}


def check_value(key: Key, value: Any, source: str = "") -> None:
    """Run `key`'s own check on `value`; ConfigError naming the source if it fails."""
    if key.setting.check is not None and (problem := key.setting.check(key.name, value)):
        raise ConfigError(f"{source}: {problem}" if source else problem)


def build_layers(cls: type[T], *layers: Layer) -> T:
    """The config from `layers` (later ones win over earlier ones and the defaults): every
    given key checked (errors name its source), then the model's `validate()`."""
    merged: Layer = {}
    for values in layers:
        merged.update(values)
    known = keys(cls)
    for name, (value, source) in merged.items():
        check_value(known[name], value, source)
    config = cls(**{name: value for name, (value, _) in merged.items()})
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def build(cls: type[T], values: Mapping[str, Any], *, source: str = "config") -> T:
    """Build and validate a config from one dict, rejecting unknown keys."""
    return build_layers(cls, layer(cls, values, source))

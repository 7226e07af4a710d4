"""Command-line flags generated from a config model: `--KEY-NAME` for every key, plus its
aliases (`--rtmp`, `--parent`, ...); help texts from the keys' help, unit and default."""

from __future__ import annotations

import argparse
import typing
from typing import Any

from common.config.model import ConfigError, Key, keys, parse_text
from common.config.toml import value_text


def default_text(key: Key) -> str:
    """A key's default as a user writes it (TOML), or its description when computed."""
    return key.setting.default_text or value_text(key.default)


def help_text(key: Key) -> str:
    """--help text of a key: its help, unit and default."""
    unit = f"{key.setting.unit}; " if key.setting.unit else ""
    return f"{key.setting.help} ({unit}default {default_text(key)})".replace("%", "%%")


def _parser_of(key: Key, flag: str) -> Any:
    def parse(text: str) -> Any:
        try:
            return parse_text(key.name, text, key.type, f"command line {flag}")
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


class _AppendItem(argparse.Action):
    """A repeatable flag adding one item to a list key (e.g. --parent URL)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), values])


METAVARS = {int: "N", float: "N", str: "TEXT"}


def add_config_arguments(p: argparse.ArgumentParser, cls: type) -> None:
    """--config FILE, and a flag for every key of config model `cls` (default None: not given)."""
    p.add_argument(
        "--config", metavar="FILE", help=f"TOML file of {cls.kind}.toml keys (see README)"
    )
    for key in keys(cls).values():
        names = [key.flag, *key.setting.flags]
        if key.type is bool:
            p.add_argument(*names, dest=key.name, action=argparse.BooleanOptionalAction,
                           default=None, help=help_text(key))  # fmt: skip
            continue
        metavar = METAVARS.get(key.type) or "JSON"
        if key.setting.unit:
            metavar = key.setting.unit.upper().replace("/", "")
        p.add_argument(*names, dest=key.name, type=_parser_of(key, key.flag), metavar=metavar,
                       help=help_text(key))  # fmt: skip
        if key.setting.item_flag:
            (item,) = typing.get_args(key.type)
            p.add_argument(key.setting.item_flag, dest=key.name, action=_AppendItem,
                           metavar=key.setting.item_flag.lstrip("-").upper(), type=item, help=f"one item of {key.flag}; repeat it")  # fmt: skip


def config_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The keys of `cls` given on the command line."""
    return {k: v for k, v in vars(args).items() if k in keys(cls) and v is not None}

"""The README's tables of config keys, generated from the models (between
`<!-- config:KIND -->` and `<!-- /config:KIND -->` markers)."""

from __future__ import annotations

import re

from common.config.flags import default_text
from common.config.model import keys, own_keys
from common.config.nodes import BalancerConfig, EdgeConfig, OriginConfig, ServeConfig

SECTIONS: dict[str, tuple[type, bool]] = {
    "serve": (ServeConfig, False),
    "origin": (OriginConfig, True),
    "edge": (EdgeConfig, True),
    "balancer": (BalancerConfig, False),
}
"""Each table: its model, and whether it lists only the keys the model adds to ServeConfig."""

REGENERATE = "python -m common.config --write README.md"


def table(cls: type, own_only: bool) -> str:
    """A Markdown table of `cls`'s keys: key, default (with unit), whether a running node
    reloads it (SIGHUP), meaning."""
    rows = ["| key | default | SIGHUP | meaning |", "|---|---|---|---|"]
    for key in (own_keys(cls) if own_only else keys(cls)).values():
        unit = f" {key.setting.unit}" if key.setting.unit else ""
        shown = key.setting.default_text or f"`{default_text(key)}`"
        default = f"{shown}{unit}".replace("|", "\\|")
        also = ", ".join(f"`{f}`" for f in (*key.setting.flags, key.setting.item_flag) if f)
        meaning = (key.setting.help + (f" (flag also {also})" if also else "")).replace("|", "\\|")
        reload = "reloads" if key.setting.reloadable else "restart"
        rows.append(f"| `{key.name}` | {default} | {reload} | {meaning} |")
    return "\n".join(rows)


def marked(name: str) -> str:
    """Section `name` between its markers."""
    cls, own_only = SECTIONS[name]
    return f"<!-- config:{name} -->\n{table(cls, own_only)}\n<!-- /config:{name} -->"


def update(text: str) -> str:
    """`text` (the README) with every marked section regenerated."""
    for name in SECTIONS:
        pattern = re.compile(rf"<!-- config:{name} -->\n.*?<!-- /config:{name} -->", re.S)
        if not pattern.search(text):
            raise ValueError(f"no <!-- config:{name} --> ... <!-- /config:{name} --> section")
        text = pattern.sub(lambda _m, n=name: marked(n), text)
    return text

"""Topology files written from code: the node and other tables as TOML (for tests,
benchmarks and scripts that build a deployment)."""

from __future__ import annotations

from typing import Any

from common.config.toml import key_text, value_text

PORTS = {"rtmp_port": 0, "http_port": 0}  # free ports, chosen by the launcher


def table(header: str, keys: dict[str, Any]) -> str:
    """A TOML table (`[balancer]`, `[[edge]]`, ...) of `keys`; None values are left out."""
    rows = [f"{key_text(k)} = {value_text(v)}" for k, v in keys.items() if v is not None]
    return "\n".join([header, *rows]) + "\n"


def balancer(**keys: Any) -> str:
    """The balancer on free ports."""
    return table("[balancer]", {"http_port": 0, "control_port": 0, **keys})


def origin(name: str = "origin", **keys: Any) -> str:
    """An origin on free ports."""
    return table("[[origin]]", {"name": name, **PORTS, **keys})


def edge(name: str, parent: str = "origin", **keys: Any) -> str:
    """An edge pulling from `parent`, on free ports."""
    return table("[[edge]]", {"name": name, "parents": [parent], **PORTS, **keys})


def publisher(stream: str = "live/demo", size: str = "320x180", fps: int = 25, **keys: Any) -> str:
    """The built-in test pattern published to the origin."""
    values = {"origin": "origin", "stream": stream, "size": size, "fps": fps, **keys}
    return table("[[publisher]]", values)


def topology(*tables: str) -> str:
    """A topology file of `tables`."""
    return "\n".join(tables)


def near_and_far(delay_ms: float, **origin_keys: Any) -> str:
    """An origin, edge `near` on it, edge `far` behind a link of `delay_ms`, and a 300 kbit/s
    publisher of live/demo."""
    return topology(
        origin(**origin_keys),
        edge("near"),
        edge("far"),
        table("[[link]]", {"edge": "far", "parent": "origin", "delay_ms": delay_ms}),
        publisher(kbps=300),
    )

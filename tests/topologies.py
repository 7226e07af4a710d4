"""Topology files for tests and benchmarks: the node tables they share, written as TOML, and
a topology brought up as processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from common.config.toml import key_text, value_text
from topology import launch, schema
from topology.deployment import Deployment

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


async def start_topology(nursery: trio.Nursery, directory: Path, text: str) -> Deployment:
    """Write `text` as a topology file in `directory`, bring it up as processes (`launch.up`)
    in `nursery`, return the Deployment once every node is healthy; its run dir is
    directory/run."""
    path = directory / "topology.toml"
    path.write_text(text)
    topo = schema.load(str(path))
    return await nursery.start(
        lambda task_status: launch.up(topo, run_dir=directory / "run", task_status=task_status)
    )

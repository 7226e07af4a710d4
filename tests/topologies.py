"""Topology files for tests (written by topology.files) and a topology brought up as
processes."""

from __future__ import annotations

from pathlib import Path

import trio

from topology import launch
from topology.deployment import Deployment
from topology.files import balancer, edge, near_and_far, origin, publisher, table, topology

__all__ = ["balancer", "edge", "near_and_far", "origin", "publisher", "start_topology", "table",
           "topology"]  # fmt: skip


async def start_topology(nursery: trio.Nursery, directory: Path, text: str) -> Deployment:
    """Write `text` as a topology file in `directory`, bring it up as processes (`launch.up`)
    in `nursery`, return the Deployment once every node is healthy; its run dir is
    directory/run."""
    path = directory / "topology.toml"
    path.write_text(text)
    return await launch.start(nursery, path, directory / "run")

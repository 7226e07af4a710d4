"""A running topology: its nodes, their processes and link proxies."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import trio

from topology.linkproxy import LinkProxy
from topology.schema import Topology


def url_host(host: str) -> str:
    """`host` as it goes in a URL or host:port (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass
class Node:
    """One node's process (`proc` is the latest one started)."""

    name: str
    kind: str
    cmd: list[str]
    http_port: int
    rtmp_port: int = 0
    proc: trio.Process | None = None
    log_path: Path | None = None
    control_port: int = 0
    host: str = "127.0.0.1"  # the address the launcher, other nodes and viewers reach it at

    def ports(self) -> str:
        """Its listening ports, e.g. 'rtmp :1935, http :8080'."""
        named = (("rtmp", self.rtmp_port), ("http", self.http_port), ("control", self.control_port))
        return ", ".join(f"{what} :{port}" for what, port in named if port)


MAX_LOAD_SAMPLES = 600
"""Live samples kept per load run (one a second: its last ten minutes)."""


@dataclass
class LoadRun:
    """A [[load]] profile's run as the console sees it: "idle", "running" or "done", and
    the players' numbers sampled once a second while it runs."""

    state: str = "idle"
    samples: deque[dict] = field(default_factory=lambda: deque(maxlen=MAX_LOAD_SAMPLES))


@dataclass
class Deployment:
    """A running topology."""

    topo: Topology
    run_dir: Path
    nodes: dict[str, Node] = field(default_factory=dict)
    proxies: dict[tuple[str, str], LinkProxy] = field(default_factory=dict)
    started: list[tuple[str, trio.Process]] = field(default_factory=list)  # restarted ones too
    supervisor: trio.Nursery | None = field(default=None, repr=False)
    is_up: bool = False  # every node started, the URL table printed
    loads: list[LoadRun] = field(default_factory=list)  # one per [[load]] profile
    control_port: int = 0  # the launcher's control API (topology/controlapi.py), 0 for none
    console_token: str = field(default="", repr=False)  # its bearer token

    def __post_init__(self) -> None:
        self.loads = self.loads or [LoadRun() for _ in self.topo.loads]

    def url(self, name: str, scheme: str) -> str:
        """`scheme`://host:port of node `name` (scheme "http" or "rtmp")."""
        node = self.nodes[name]
        port = node.http_port if scheme == "http" else node.rtmp_port
        return f"{scheme}://{url_host(node.host)}:{port}"

    def processes(self) -> list[tuple[str, trio.Process]]:
        """Every process it started, each once, the latest first (edges before origins)."""
        out: list[tuple[str, trio.Process]] = []
        for name, proc in reversed(
            [*self.started, *((n.name, n.proc) for n in self.nodes.values())]
        ):
            if proc is not None and all(proc is not p for _, p in out):
                out.append((name, proc))
        return out

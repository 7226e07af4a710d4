"""What a worker process of a node with `workers = N` gets from its supervisor: its own
public listening sockets (in the ports' SO_REUSEPORT groups), its own private loopback listener, its siblings'
private ports and the run's secret. A worker finds it in its environment."""

from __future__ import annotations

import hmac
import json
import os
import socket
from dataclasses import asdict, dataclass
from typing import Any

ENV = "LIVECDN_WORKER"
"""The environment variable that carries a worker's context (JSON)."""
SECRET_HEADER = "x-livecdn-worker"
"""Request header of a sibling's request on a private port: the run's secret. Only a header:
a URL (query) ends up in log lines and error messages."""
PRIVATE_HOST = "127.0.0.1"


def public_ports(config: Any) -> list[int]:
    """The node's public listening ports in the order the node serves them: RTMP, HTTP, and
    with tls_cert RTMPS and HTTPS."""
    ports = [config.rtmp_port, config.http_port]
    if config.tls_cert:
        ports += [config.rtmps_port, config.https_port]
    return ports


@dataclass(frozen=True)
class WorkerContext:
    """One worker's share of a node: `index` of `count`; `fds`: its public listening
    sockets (in `public_ports` order); `private_fd`: its own loopback listener, at
    `private_ports[index]`; `secret`: what siblings prove themselves with."""

    index: int
    count: int
    fds: list[int]
    private_fd: int
    private_ports: list[int]
    secret: str
    owners_fd: int = -1
    """Its end of the socket pair to the supervisor's stream ownership table
    (`common.serve.workersowners`); -1: none."""

    def to_env(self) -> str:
        """The value of `ENV` for the worker process."""
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> WorkerContext | None:
        """This process's context, or None if it is not a worker."""
        text = os.environ.get(ENV)
        return cls(**json.loads(text)) if text else None

    def public_sockets(self) -> list[socket.socket]:
        """This worker's public listeners (its own in each port's SO_REUSEPORT group),
        nonblocking."""
        return [_adopt(fd) for fd in self.fds]

    def private_socket(self) -> socket.socket:
        """This worker's private loopback listener, nonblocking."""
        return _adopt(self.private_fd)

    def url(self, index: int) -> str:
        """The private HTTP address of worker `index`."""
        return f"http://{PRIVATE_HOST}:{self.private_ports[index]}"

    def siblings(self) -> list[int]:
        """The other workers' indexes."""
        return [i for i in range(self.count) if i != self.index]

    def sibling_of(self, url: str) -> bool:
        """Whether `url` is a worker's private address (a pull from a sibling)."""
        return any(url == self.url(i) for i in range(self.count))

    def proves(self, headers: dict[str, str]) -> bool:
        """Whether a request carries the run's secret (in its header)."""
        given = headers.get(SECRET_HEADER) or ""
        return hmac.compare_digest(given.encode(), self.secret.encode())


def _adopt(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


CURRENT = WorkerContext.from_env()
"""This process's worker context (None: not a worker, the node runs in one process)."""
os.environ.pop(ENV, None)  # the run's secret is handed to no process this one starts

"""What a worker process of a node with `workers = N` gets from its supervisor: the public
listening sockets (bound once, passed down), its own private loopback listener, its siblings'
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
    """One worker's share of a node: `index` of `count`; `fds`: the public listening
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
        """The public listeners passed down, nonblocking, each taking at most ACCEPT_BURST
        connections at a time (`TakeTurns`)."""
        return [TakeTurns(_adopt(fd)) for fd in self.fds]  # type: ignore[misc]

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


ACCEPT_BURST = 8
"""Connections a worker accepts from the shared queue before it lets the others take some."""


class TakeTurns:
    """A listening socket shared by the workers whose `accept` says "nothing pending" after
    ACCEPT_BURST connections: the accept loop then waits for the socket to be readable again
    (at once, if more are queued), and meanwhile the other workers, woken by the same
    connections, take their share; without it the first worker awake drains a whole burst."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.taken = 0

    def accept(self) -> tuple[socket.socket, Any]:
        if self.taken >= ACCEPT_BURST:
            self.taken = 0
            raise BlockingIOError
        self.taken += 1
        try:
            return self.sock.accept()
        except BlockingIOError:
            self.taken = 0
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)  # fileno, getsockname, close, ...


def _adopt(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


CURRENT = WorkerContext.from_env()
"""This process's worker context (None: not a worker, the node runs in one process)."""
os.environ.pop(ENV, None)  # the run's secret is handed to no process this one starts

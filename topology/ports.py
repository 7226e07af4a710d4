"""Ports the launcher picks for nodes given port 0, held while the deployment runs."""

from __future__ import annotations

import socket
from types import TracebackType

from common.net.conn import hold_socket

LOCAL = "127.0.0.1"


class PortBook:
    """Free ports picked for other processes to listen on, each held until `close`.

    A port is held by a socket of ours that is bound (SO_REUSEADDR) but never listens: no other
    program's port-0 bind or outgoing connection can be given it between the pick and the
    node's listen, nor while a killed node is down, yet the node's own listener (which sets
    SO_REUSEADDR too) binds beside it, and with no node listening the port refuses
    connections as a free one would. Picking a port and letting it go before the node bound it
    let a busy machine hand it to someone else first ("Address already in use")."""

    def __init__(self) -> None:
        self._held: list[socket.socket] = []

    def take(self) -> int:
        """A port of 127.0.0.1 free now and held from now on."""
        sock = hold_socket(LOCAL, 0)
        self._held.append(sock)
        return sock.getsockname()[1]

    def close(self) -> None:
        """Let every held port go."""
        for sock in self._held:
            sock.close()
        self._held.clear()

    def __enter__(self) -> PortBook:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

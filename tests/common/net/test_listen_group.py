"""A port held with SO_REUSEPORT and listeners of their own in its group (how `workers = N`
gives each worker process its public listeners): the kernel spreads new connections among
the listeners, the hold takes none, and a closed listener's share goes to the others."""

from __future__ import annotations

import socket

import pytest

from common.net.conn import ListenError, hold_socket, listen_socket

CONNECTIONS = 64


def accepted(listener: socket.socket) -> int:
    """Connections waiting in `listener`'s queue (taken and closed)."""
    n = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


def connect_many(port: int, n: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]


def test_new_connections_spread_over_a_groups_listeners() -> None:
    hold = hold_socket("127.0.0.1", 0, reuse_port=True)
    port = hold.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):  # held, not listening
        socket.create_connection(("127.0.0.1", port))
    first = listen_socket("127.0.0.1", port, reuse_port=True)
    second = listen_socket("127.0.0.1", port, reuse_port=True)
    clients = connect_many(port, CONNECTIONS)
    try:
        counts = [accepted(first), accepted(second)]
        # spread by address: all on one listener would be a 1 in 2**63 chance
        assert sum(counts) == CONNECTIONS and min(counts) > 0, counts
        second.close()  # a worker's process gone: the others take every new connection
        clients += connect_many(port, CONNECTIONS)
        assert accepted(first) == CONNECTIONS
    finally:
        for sock in [*clients, first, second, hold]:
            sock.close()


def test_a_stranger_cannot_listen_beside_the_groups_listeners() -> None:
    hold = hold_socket("127.0.0.1", 0, reuse_port=True)
    port = hold.getsockname()[1]
    mine = listen_socket("127.0.0.1", port, reuse_port=True)
    try:
        with pytest.raises(ListenError):
            listen_socket("127.0.0.1", port)  # without SO_REUSEPORT
    finally:
        mine.close()
        hold.close()

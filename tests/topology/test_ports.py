"""PortBook: ports picked for nodes stay theirs from the pick until the launcher stops, though a
node's own listener binds them, and they refuse connections while no node listens."""

from __future__ import annotations

import errno
import socket

import pytest

from common.net.conn import listen_socket
from topology.ports import PortBook


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_held_port_is_given_to_no_one_else_but_the_node_listens_on_it() -> None:
    with PortBook() as book:
        port = book.take()
        others = []
        try:
            for _ in range(2000):  # port-0 binds and outgoing connections skip it
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                others.append(s)
            assert port not in {s.getsockname()[1] for s in others}
        finally:
            for s in others:
                s.close()
        with socket.socket() as stranger, pytest.raises(OSError) as taken:
            stranger.bind(("127.0.0.1", port))
        assert taken.value.errno == errno.EADDRINUSE
        assert refused(port)  # held, not listening
        node = listen_socket("127.0.0.1", port)  # the node's listener binds beside the hold
        try:
            with pytest.raises(OSError):
                listen_socket("127.0.0.1", port)  # but a second listener does not
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        finally:
            node.close()
        assert refused(port)  # a killed node's port refuses, as a free one would
        listen_socket("0.0.0.0", port).close()  # and is there for its restart
    with socket.socket() as anyone:  # closed: the port is free again
        anyone.bind(("127.0.0.1", port))

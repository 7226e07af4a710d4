"""The exception families a peer can cause: protocol errors and closed connections."""


class ProtocolError(Exception):
    """Malformed or out-of-order input from a peer; the connection should be closed."""


class ConnClosed(Exception):
    """The connection is closed (by us or the peer)."""


class Unavailable(Exception):
    """A node cannot take this request now (e.g. its stream limit): 503 / Play.Failed."""

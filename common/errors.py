"""The one exception family raised by livecdn's sans-IO protocol parsers."""


class ProtocolError(Exception):
    """Malformed or out-of-order input from a peer; the connection should be closed."""

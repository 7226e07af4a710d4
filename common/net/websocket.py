"""WebSocket on our HTTP server: the opening handshake of an upgrade request, and what the
client sends afterwards (pings, close), read with wsproto; media goes out as binary frames
(`common.proto.wsframe`)."""

from __future__ import annotations

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Ping
from wsproto.utilities import LocalProtocolError, RemoteProtocolError, generate_accept_token

from common.net.http import Request
from common.proto.errors import ProtocolError

VERSION = "13"


def wants_websocket(req: Request) -> bool:
    """Whether `req` asks to upgrade its connection to a WebSocket."""
    upgrade = req.headers.get("upgrade", "").lower()
    connection = req.headers.get("connection", "").lower()
    return upgrade == "websocket" and "upgrade" in connection


def handshake(req: Request) -> list[tuple[str, str]]:
    """The 101 answer's headers to a valid opening handshake; ProtocolError with the
    reason otherwise (the request is answered 400)."""
    if req.method != "GET":
        raise ProtocolError(f"a WebSocket opens with GET, not {req.method}")
    if req.headers.get("sec-websocket-version", "") != VERSION:
        raise ProtocolError(f"only WebSocket version {VERSION} is spoken")
    key = req.headers.get("sec-websocket-key", "")
    if not 16 <= len(key) <= 64 or not key.isascii():
        raise ProtocolError("no valid Sec-WebSocket-Key")
    return [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-accept", generate_accept_token(key.encode()).decode()),
    ]


class Inbound:
    """What a WebSocket client sends to a server that only sends: pings are answered,
    messages are ignored, a close is answered and ends the connection."""

    def __init__(self) -> None:
        self._ws = Connection(ConnectionType.SERVER)
        self.closed = False

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the client; the bytes to send back (pongs, the close reply).
        ProtocolError if the client breaks the protocol (e.g. an unmasked frame)."""
        try:
            self._ws.receive_data(data)
            out = b""
            for event in self._ws.events():
                if isinstance(event, Ping):
                    out += self._ws.send(event.response())
                elif isinstance(event, CloseConnection):
                    out += self._ws.send(event.response())
                    self.closed = True
            return out
        except (LocalProtocolError, RemoteProtocolError) as exc:
            raise ProtocolError(f"WebSocket: {exc}") from None

    def close(self) -> bytes:
        """The close frame that ends the stream (1000: normal closure); nothing if the
        client already closed."""
        if self._ws.state is not ConnectionState.OPEN:
            return b""
        return self._ws.send(CloseConnection(code=1000))

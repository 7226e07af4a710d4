"""A trio RTMP client (publish or play, rtmp:// or verified rtmps://) driving the sans-IO
`ClientSession`.

Used by edges (pulling from a parent), the synthetic publisher and tests.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import trio

from common.net.conn import Conn
from common.net.tls import TlsConn, connect, context_for
from common.proto.rtmp import session as rs
from common.proto.rtmpscan import ChunkStream, Handover

MAX_QUEUED_EVENTS = 4096
"""Media/metadata events a client keeps while it waits for a reply (play, publish): a
server that floods them before answering is refused rather than buffered without bound."""

PLAY_END_CODES = (
    "NetStream.Play.Stop",
    "NetStream.Play.UnpublishNotify",
    "NetStream.Play.Complete",
)


def ends_play(event: rs.Event) -> bool:
    """Whether a player's event means the server ended the stream it plays."""
    return isinstance(event, rs.StreamEOF) or (
        isinstance(event, rs.Status) and event.code in PLAY_END_CODES
    )


class RtmpClientError(Exception):
    """The server refused or ended what we asked, or the connection broke."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RtmpUrl:
    """rtmp://host[:port]/app/name[?query] (or rtmps://, port 443 by default as ffmpeg's)"""

    host: str
    port: int
    app: str
    name: str
    scheme: str = "rtmp"

    @classmethod
    def parse(cls, url: str) -> RtmpUrl:
        """Parse an RTMP URL; app and name are percent-decoded, the name keeps its query."""
        parts = urlsplit(url)
        if parts.scheme not in ("rtmp", "rtmps") or not parts.hostname:
            raise ValueError(f"not an rtmp:// or rtmps:// URL: {url!r}")
        path = parts.path.lstrip("/")
        app, _, name = path.partition("/")
        app, name = unquote(app), unquote(name)
        if parts.query:
            name = f"{name}?{parts.query}"
        default_port = 443 if parts.scheme == "rtmps" else 1935
        return cls(parts.hostname, parts.port or default_port, app, name, parts.scheme)

    @property
    def tc_url(self) -> str:
        """The tcUrl sent in connect."""
        return f"{self.scheme}://{self.host}:{self.port}/{self.app}"


class RtmpClient:
    """One client connection; use `connect()`, then `publish()` or `play()`."""

    def __init__(self, conn: Conn | TlsConn, session: rs.ClientSession, url: RtmpUrl) -> None:
        self.conn = conn
        self.session = session
        self.url = url
        self.stream_id = 0
        self._queued: list[rs.Event] = []

    @classmethod
    async def connect(
        cls, url: str, *, timeout: float = 10.0, tls: ssl.SSLContext | None = None
    ) -> RtmpClient:
        """Open the TCP connection (TLS for rtmps://, the server verified with `tls`, default
        the system's trust), handshake and connect to the app."""
        u = RtmpUrl.parse(url)
        with trio.fail_after(timeout):
            conn = await connect(u.host, u.port, context_for(u.scheme, tls))
            client = cls(conn, rs.ClientSession(u.app, u.tc_url), u)
            try:
                await client._flush()
                await client._wait_for(rs.Connected)
            except BaseException:
                conn.close()
                raise
        return client

    async def _flush(self) -> None:
        data = self.session.data_to_send()
        if data:
            await self.conn.send_all(data)

    async def _receive(self) -> list[rs.Event]:
        data = await self.conn.recv()
        if not data:
            raise RtmpClientError("connection closed by the server")
        events = self.session.receive_data(data)
        await self._flush()
        return events

    async def _wait_for(self, kind: type) -> rs.Event:
        while True:
            for i, event in enumerate(self._queued):
                if isinstance(event, rs.Status) and event.level == "error":
                    del self._queued[: i + 1]
                    raise RtmpClientError(f"{event.code}: {event.description}", event.code)
                if isinstance(event, kind):
                    del self._queued[: i + 1]
                    return event
            self._queued = [e for e in self._queued if isinstance(e, (rs.Media, rs.Metadata))]
            if len(self._queued) > MAX_QUEUED_EVENTS:
                raise RtmpClientError(
                    f"more than {MAX_QUEUED_EVENTS} messages before the answer to a command"
                )
            self._queued += await self._receive()

    async def _wait_status(self, code: str) -> None:
        while True:
            event = await self._wait_for(rs.Status)
            if event.code == code:
                return

    async def publish(self, name: str | None = None, *, timeout: float = 10.0) -> None:
        """createStream + publish; returns once NetStream.Publish.Start arrives."""
        await self._start(self.session.publish, name, "NetStream.Publish.Start", timeout)

    async def play(self, name: str | None = None, *, timeout: float = 10.0) -> None:
        """createStream + play; returns once NetStream.Play.Start arrives."""
        await self._start(self.session.play, name, "NetStream.Play.Start", timeout)

    async def start_play(self, name: str | None = None, *, timeout: float = 10.0) -> None:
        """createStream + play, without waiting for the answer to play: for a reader that
        takes the connection over at once (`handover`) and watches for NetStream.Play.Start
        itself, so that the stream's first burst is not parsed by the session."""
        await self._start(self.session.play, name, None, timeout)

    async def _start(self, command, name: str | None, code: str | None, timeout: float) -> None:
        """createStream, then `command` on it; then, unless `code` is None, wait for it."""
        with trio.fail_after(timeout):
            self.session.create_stream()
            await self._flush()
            created = await self._wait_for(rs.StreamCreated)
            self.stream_id = created.stream_id
            command(self.stream_id, name or self.url.name)
            await self._flush()
            if code is not None:
                await self._wait_status(code)

    async def send(self, type_id: int, timestamp: int, payload: bytes) -> None:
        """Send one audio/video/data message on the published stream."""
        self.session.send_message(type_id, self.stream_id, timestamp, payload)
        await self._flush()

    async def send_metadata(self, values: dict) -> None:
        """Send @setDataFrame onMetaData."""
        self.session.send_metadata(self.stream_id, values)
        await self._flush()

    async def next_events(self) -> list[rs.Event]:
        """The next events (media, metadata, status, EOF) from the server."""
        if self._queued:
            events, self._queued = self._queued, []
            return events
        return await self._receive()

    def handover(self) -> tuple[Handover, list[rs.Event]]:
        """Where the chunk stream stands, for a reader that takes the connection over from
        here (`RtmpPlayScanner`), and the events received but not taken yet. The session
        must not be used after."""
        session = self.session
        reader = session._reader
        streams = {
            csid: ChunkStream(
                st.timestamp,
                st.delta,
                st.length,
                st.type_id,
                st.stream_id,
                st.extended,
                st.received,
                None if st.parts is None else b"".join(st.parts),
            )  # fmt: skip
            for csid, st in reader._states.items()
        }
        flow = session._flow
        start = Handover(reader.chunk_size, streams, bytes(reader._buf), reader.bytes_received,
                         flow.ack_window, flow.last_ack, flow.window_sent, session.chunk_size)  # fmt: skip
        events, self._queued = self._queued, []
        return start, events

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

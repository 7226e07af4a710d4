"""What a `Hub` drives for a playing player: its socket's reads, scanned in place (tag
headers only) and handed to the player once per read. A reader that ends keeps why in
`error` (None: the server ended the stream), for the player's task to raise."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

from common.net.httpclient import HttpClientError, HttpResponse, MalformedResponse
from common.net.rtmpclient import RtmpClient, RtmpClientError
from common.proto.errors import ProtocolError
from common.proto.flv import FlvError
from common.proto.flvscan import ChunkedFlvScanner, FlvScanner
from common.proto.rtmp import session as rs
from common.proto.rtmpscan import RtmpPlayScanner

if TYPE_CHECKING:
    from topology.players.player import SimPlayer

CLOSED = "connection closed in the middle of the body"


def _give(player: SimPlayer, flv: FlvScanner, now: float) -> None:
    """Hand `player` what `flv` walked in one read: media only (the common case) as its
    span of header words, anything else as a whole `Scan`."""
    if flv.first is not None and not flv.scripts and flv.keyframe_ts is None:
        player._span(flv.first, flv.last, now)
        flv.first = None
    else:
        player._scanned(flv.take(), now)


class FlvReader:
    """An HTTP-FLV response body after its head."""

    __slots__ = ("sock", "player", "flv", "body", "error")

    def __init__(self, player: SimPlayer, resp: HttpResponse) -> None:
        self.sock = resp.conn.sock
        self.player = player
        self.flv = FlvScanner()
        chunked, length = resp.framing
        self.body = ChunkedFlvScanner(self.flv, chunked=chunked, length=length)
        self.error: Exception | None = None

    def start(self, data: bytes, closed: bool, now: float) -> bool:
        """What came with the head; True when that already ended the play."""
        return (bool(data) and self._take(data, len(data), now)) or (closed and self._eof())

    def on_readable(self, buf: bytearray, now: float) -> bool:
        try:
            n = self.sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            n = 0  # as a reset: the connection broke
        if not n:
            return self._eof()
        return self._take(buf, n, now)

    def _take(self, data, n: int, now: float) -> bool:
        try:
            got = self.body.feed(data, 0, n)
        except FlvError as exc:
            self.error = exc
            return True
        except ProtocolError as exc:
            self.error = MalformedResponse(f"malformed chunked body: {exc}")
            return True
        if got:
            self.player.result.bytes += got
            _give(self.player, self.flv, now)
        return self.body.done

    def _eof(self) -> bool:
        try:
            self.body.eof()
        except ProtocolError:
            self.error = HttpClientError(CLOSED)
        return True


class RtmpReader:
    """An RTMP play from the moment play was asked for (`RtmpClient.start_play`), taken
    over from the client's session: it notes NetStream.Play.Start (the player has joined;
    `waiting`, the deadline for that, is lifted) or an error status before it (the play
    was refused), then scans the stream."""

    __slots__ = ("sock", "conn", "player", "flv", "rtmp", "error", "edge", "waiting",
                 "playing", "_events", "_pending")  # fmt: skip

    def __init__(self, player: SimPlayer, client: RtmpClient, flv: FlvScanner, edge: str) -> None:
        start, self._events = client.handover()
        self._pending, start.pending = start.pending, b""  # after the events, in `start`
        self.conn = client.conn
        self.sock = client.conn.sock
        self.player = player
        self.flv = flv
        self.edge = edge
        self.error: Exception | None = None
        self.waiting: trio.CancelScope | None = None
        self.playing = False
        self.rtmp = RtmpPlayScanner(flv, start)

    def start(self, now: float) -> bool:
        """Take what came before the handover: the events the session parsed, then the
        bytes it had not; True when that already ended the play."""
        rtmp, media = self.rtmp, []
        for ev in self._events:
            if isinstance(ev, rs.Media):
                media.append((ev.type_id, ev.timestamp, ev.payload))
            elif isinstance(ev, rs.Status):
                rtmp.status(ev.level, ev.code, ev.description)
            elif isinstance(ev, rs.StreamEOF):
                rtmp.ended = "StreamEOF"
        self._events = []
        if media:
            self._joins()
            player = self.player
            player.result.bytes += sum(len(m[2]) for m in media if m[0] != 18)
            player._scanned(self.flv.scan_tags(media), now)
        got = rtmp._media  # a message the session had begun
        if self._pending:
            try:
                got += rtmp.feed(self._pending, 0, len(self._pending), count=False)
            except ProtocolError as exc:
                self.error = exc
                return True
            self._pending = b""
        return self._after(got, now)

    def on_readable(self, buf: bytearray, now: float) -> bool:
        try:
            n = self.sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            n = 0
        if not n:
            self.error = RtmpClientError("connection closed by the server")
            return True
        try:
            media = self.rtmp.feed(buf, 0, n)
        except ProtocolError as exc:
            self.error = exc
            return True
        return self._after(media, now)

    def _joins(self) -> None:
        """The play started: the player has joined."""
        if not self.playing:
            self.playing = True
            self.player._joined(self.edge)
            if self.waiting is not None:
                self.waiting.deadline = math.inf

    def _after(self, media: int, now: float) -> bool:
        rtmp = self.rtmp
        if rtmp._out:
            self.conn.write(rtmp.replies())
        if not self.playing and rtmp.started:
            self._joins()
        self.player.result.bytes += media  # also of a message not complete yet
        flv = self.flv
        if flv.first is not None or flv.scripts:
            _give(self.player, flv, now)
        if rtmp.ended:
            if rtmp.refused:
                self.error = RtmpClientError(rtmp.refused, rtmp.ended)
            return True
        return False

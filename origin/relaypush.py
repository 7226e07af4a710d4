"""Push (nginx-rtmp's `push`, SRS's `forward`): one live stream republished to another RTMP
server, reconnecting with backoff while the stream lives.

The pusher is a reader of the stream like any player: it never holds the stream up. A slow
target makes it lag; the stream's reader then skips to the newest keyframe (counted as
dropped frames), and a target that takes nothing for STALL_TIMEOUT fails the connection.
"""

from __future__ import annotations

import ssl

import trio

from common.media.stream import Frame, Stream
from common.net.rtmpclient import RtmpClient, RtmpClientError
from common.net.supervise import leaves
from common.proto.errors import ConnClosed, ProtocolError
from common.proto.rtmp import messages as m
from common.proto.rtmp import session as rs
from common.serve.metrics import NodeMetrics
from origin.relaystate import CONNECT_TIMEOUT, STALL_TIMEOUT, RelayState, RelayStatus, shown_url

BATCH = 16
"""Frames sent between looks at the stream (a lagging pusher skips ahead between batches)."""


class PushFailed(Exception):
    """The target refused, broke or stalled; `reason` labels the failure metric."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Pusher:
    """Publishes `stream` to `url` (the target's URL/NAME) until the stream ends."""

    def __init__(
        self,
        stream: Stream,
        url: str,
        label: str,
        metrics: NodeMetrics,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.stream = stream
        self.url = url
        self.label = label  # the configured target, shown (the metrics' label)
        self.metrics = metrics
        self.tls = tls
        self.status = RelayStatus(f"push of {stream.app}/{stream.name} to {shown_url(url, False)}")
        self.scope = trio.CancelScope()
        """Cancelled when the stream moves to another worker of the node (which pushes it)."""

    def as_json(self, admin: bool) -> dict:
        """The API's view."""
        return {
            "app": self.stream.app,
            "name": self.stream.name,
            "target": shown_url(self.url, admin),
            **self.status.as_json(admin),
        }

    async def run(self) -> None:
        """Push, and reconnect after each failure (with backoff) until the stream ends."""
        status, stream = self.status, self.stream
        try:
            while not stream.closed:
                status.set(RelayState.CONNECTING)
                started = trio.current_time()
                try:
                    await self._connection()
                    break
                except PushFailed as exc:
                    error, reason = str(exc), exc.reason
                self.metrics.inc("relay_push_failures_total", labels=(reason,))
                # a target that took nothing in the end failed, however long it seemed to
                # take (the first megabytes fill socket buffers, read or not)
                ran = 0.0 if reason == "stalled" else trio.current_time() - started
                delay = status.backoff.failed(ran)
                status.set(RelayState.RETRYING, error, f" (next try in {delay:g} s)", reason)
                await self._sleep(delay)
                if not stream.closed:
                    status.reconnects += 1
                    self.metrics.inc("relay_push_reconnects_total", labels=(self.label,))
        finally:
            status.set(RelayState.ENDED)

    async def _sleep(self, delay: float) -> None:
        """Wait `delay` seconds, or less if the stream ends."""
        stream = self.stream
        with trio.move_on_after(delay):
            while not stream.closed:
                await stream.wait_beyond(stream.head)

    async def _connection(self) -> None:
        """One connection: connect, publish, send the stream until it ends."""
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                client = await RtmpClient.connect(self.url, tls=self.tls, timeout=CONNECT_TIMEOUT)
        except (OSError, ConnClosed) as exc:
            raise PushFailed(f"cannot connect: {exc or 'closed'}", "connect") from exc
        except trio.TooSlowError as exc:
            raise PushFailed("no answer to connect", "timeout") from exc
        except RtmpClientError as exc:
            raise PushFailed(f"refused the connection: {exc}", "refused") from exc
        except ProtocolError as exc:
            raise PushFailed(f"broke the handshake: {exc}", "bad_data") from exc
        try:
            try:
                await client.publish(timeout=CONNECT_TIMEOUT)
            except trio.TooSlowError as exc:
                raise PushFailed("no answer to publish", "timeout") from exc
            except RtmpClientError as exc:
                raise PushFailed(f"refused publish: {exc}", "refused") from exc
            except (OSError, ConnClosed) as exc:
                raise PushFailed(f"broke during publish: {exc or 'closed'}", "broken") from exc
            except ProtocolError as exc:
                raise PushFailed(f"sent garbage during publish: {exc}", "bad_data") from exc
            self.status.set(RelayState.ACTIVE)
            lock = trio.Lock()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._listen, client, lock)
                    await self._send(client, lock)
                    nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                failure = _failure(group)
                if failure is None:
                    raise
                raise failure from group
        finally:
            self._count(client)
            self._counted = 0
            client.close()

    _counted = 0  # bytes of this connection already counted

    def _count(self, client: RtmpClient) -> None:
        sent = client.conn.bytes_out
        self.status.bytes += sent - self._counted
        self.metrics.inc("relay_push_bytes_total", sent - self._counted, (self.label,))
        self._counted = sent

    async def _listen(self, client: RtmpClient, lock: trio.Lock) -> None:
        """Read what the target says (acknowledgements, pings, errors) and answer it."""
        while True:
            data = await client.conn.recv()
            if not data:
                raise RtmpClientError("the target closed the connection")
            for event in client.session.receive_data(data):
                if isinstance(event, rs.Status) and event.level == "error":
                    raise RtmpClientError(f"{event.code}: {event.description}", event.code)
            out = client.session.data_to_send()
            if out:
                async with lock:
                    await client.conn.send_all(out)

    async def _send(self, client: RtmpClient, lock: trio.Lock) -> None:
        """The stream from its newest keyframe on, with timestamps from 0, until it ends."""
        stream = self.stream
        reader = stream.add_reader("relay")
        base: int | None = None
        try:
            frames = stream.header_frames(stream.start_timestamp(reader))
            while True:
                dropped = reader.dropped
                for i in range(0, len(frames), BATCH):
                    for frame in frames[i : i + BATCH]:
                        if base is None and not frame.header:
                            base = frame.timestamp
                        self._queue(client, frame, base)
                    async with lock:
                        await self._drain(client)
                    self._count(client)
                self.status.settle()
                if stream.closed and reader.cursor >= stream.head:
                    return
                await stream.wait_beyond(reader.cursor)
                frames = stream.pending(reader)
                self.status.dropped_frames += reader.dropped - dropped
        finally:
            stream.remove_reader(reader)

    async def _drain(self, client: RtmpClient) -> None:
        """Send what the session holds; PushFailed if the target takes nothing for
        STALL_TIMEOUT (a slow target that takes some is waited for: bytes leaving the
        kernel's send queue count, though the socket may not take more meanwhile)."""
        conn = client.conn
        data = client.session.data_to_send()
        if data:
            conn.write(data)
        while conn.backlog_bytes:
            sent, held = conn.bytes_out, conn.kernel_unsent()
            with trio.move_on_after(STALL_TIMEOUT):
                await conn.drain()
            if conn.backlog_bytes and conn.bytes_out == sent and conn.kernel_unsent() >= held:
                raise PushFailed(f"took nothing for {STALL_TIMEOUT:g} s", "stalled")

    def _queue(self, client: RtmpClient, frame: Frame, base: int | None) -> None:
        session, sid = client.session, client.stream_id
        if frame.type_id == m.DATA_AMF0 and frame.header:
            session.send_metadata(sid, self.stream.metadata_values)
            return
        ts = max(0, frame.timestamp - base) if base is not None else 0
        session.send_message(frame.type_id, sid, ts, frame.payload)


def _failure(group: BaseExceptionGroup) -> PushFailed | None:
    """What ended a connection's tasks, as a PushFailed (None: something else, a bug)."""
    for exc in leaves(group):
        if isinstance(exc, PushFailed):
            return exc
        if isinstance(exc, (OSError, RtmpClientError, ConnClosed)):
            return PushFailed(f"connection broke: {exc}", "broken")
        if isinstance(exc, ProtocolError):
            return PushFailed(f"sent garbage: {exc}", "bad_data")
    return None

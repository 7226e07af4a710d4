"""One task serves every idle keep-alive HTTP connection whose requests the fast lane
answers (cached playlists and segments), so that a request costs no task wake-up and no
epoll registration of its own.

A connection's task parks here after a response (`KeepAliveHub.park`). The hub holds one
epoll set in which a parked socket is registered once (level-triggered: input not read yet
is reported again, whatever cut a receive short). When a parked connection's next request
arrives, the hub reads it, asks the fast lane and sends the answer itself (the head and,
for a large body, sendfile from the body's memory file; when the socket is full it waits
for room instead of input, then goes on); the connection stays parked. The hub wakes the
connection's task (which then goes on as `serve_http` always did) for anything else: a
request the fast lane declines, a partial or bad request head, pipelined requests, the end
of the connection, an answer that waits in the connection's backlog, the hub stopping; and
for an end: an answer with `Connection: close` sent, the idle or send timeout passed, the
connection broken.

While requests keep coming (its last round was at most 2 GATHER ago) the hub lets them gather
for GATHER between rounds, so one round answers several; a request to an idle hub is answered
at once.

Timeouts of parked connections are kept by the hub (one sweep a few times a second, not a
deadline per request): the idle keep-alive timeout and the send timeout of an answer the
hub sends, as `serve_http` keeps them (`HttpLimits`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import select
from collections.abc import Callable
from typing import TYPE_CHECKING

import outcome
import trio

from common.net.conn import Conn, ConnClosed
from common.net.sendfile import MemFile, send_some
from common.proto.http1 import HttpError, RequestHead, RequestParser
from common.proto.streamkey import shown

if TYPE_CHECKING:
    from common.net.http import FastLane, SharedResponse

log = logging.getLogger("livecdn.http")

RECV_SIZE = 8192
"""Bytes asked of the kernel per receive of a request (here and in `serve_http`)."""
MAX_EVENTS = 256
"""Ready connections served per round; the rest wait for the next round (other tasks run
between rounds)."""
GATHER = 0.005
"""Seconds the hub lets requests gather between rounds while it is busy (its last round was at
most 2 GATHER ago), looking again without asking trio to watch its epoll set. Each round costs
a scheduler turn and two epoll_ctl calls: at N = 2000 HLS players the hub served 1.7 requests a
round, and gathering for 2 ms took the edge's CPU from 28.4 / 26.4 to 25.2 / 24.2 %, 5 ms to
22.9 %. A request then waits up to this long (an HLS player waits seconds for each segment);
one that comes to an idle hub is answered at once."""
MAX_SWEEP = 1.0
"""At most this many seconds between two timeout sweeps."""

_INPUT = select.EPOLLIN | select.EPOLLRDHUP
"""What a parked connection waits for between requests (errors and hang-ups always count)."""
_ROOM = select.EPOLLOUT
"""What it waits for while the socket is too full for the answer under way."""

# why a parked task is woken
GONE = 0
"""The connection is done (answered with close, timed out, broken, the peer gone quiet)."""
READ = 1
"""The parser holds bytes (a partial head, more requests, the end) or the hub stopped:
go on as usual."""
TAKE = 2
"""A complete request the fast lane declined is in `Parked.taken`: answer it as usual."""
SEND = 3
"""An answer is under way: `Parked.file` from `Parked.offset` (-1: its head is in the
connection's backlog), or the connection's backlog; then close if `Parked.close`."""

Answer = Callable[[Conn, "SharedResponse", RequestHead], tuple[MemFile | None, int, bool]]
"""Begin sending a shared response to a request (http.py's `_start_shared`): (file, offset)
of a body still to send by sendfile, or (None, 0, all sent)."""


class Parked:
    """One connection's place in the hub (made once per connection, parked many times)."""

    __slots__ = (
        "conn",
        "parser",
        "fast",
        "answer",
        "keepalive_timeout",
        "send_timeout",
        "task",
        "taken",
        "file",
        "offset",
        "close",
        "deadline",
        "fd",
        "registered",
    )

    def __init__(
        self,
        conn: Conn,
        parser: RequestParser,
        fast: FastLane,
        answer: Answer,
        keepalive_timeout: float,
        send_timeout: float,
    ) -> None:
        self.conn = conn
        self.parser = parser
        self.fast = fast
        self.answer = answer
        self.keepalive_timeout = keepalive_timeout
        self.send_timeout = send_timeout
        self.task: trio.lowlevel.Task | None = None
        """The connection's task while it is parked."""
        self.taken: tuple[RequestHead, bytes] | None = None
        self.file: MemFile | None = None
        """The body being sent by the hub (or left to the task, with SEND)."""
        self.offset = 0
        self.close = False
        """Close once the answer under way is sent."""
        self.deadline = math.inf
        self.fd = -1
        self.registered = False


class KeepAliveHub:
    """Serves the parked keep-alive connections of one node (see the module docstring).
    `run` must be running for `park` to park; otherwise `park` returns READ at once."""

    def __init__(self) -> None:
        self._epoll: select.epoll | None = None
        self._parked: dict[int, Parked] = {}
        """Registered sockets' descriptors -> their places."""
        self._sweep_every = MAX_SWEEP
        self.served = 0
        """Requests answered by the hub itself."""
        self.rounds = 0
        """Times the hub woke to serve."""

    @property
    def running(self) -> bool:
        """The hub is serving (parking is worth it)."""
        return self._epoll is not None

    @property
    def parked(self) -> int:
        """Connections registered with the hub now."""
        return len(self._parked)

    async def run(self) -> None:
        """Serve parked connections until cancelled; then wake them all to go on alone."""
        if self._epoll is not None:
            raise RuntimeError("the keep-alive hub is already running")
        epoll = self._epoll = select.epoll()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sweep)
                ready: list[tuple[int, int]] = []
                last = -math.inf
                while True:
                    if not ready:
                        await trio.lowlevel.wait_readable(epoll)
                    self.rounds += 1
                    now = trio.current_time()
                    ready = epoll.poll(0, MAX_EVENTS)
                    for fd, events in ready:
                        place = self._parked.get(fd)
                        if place is not None and place.task is not None:
                            self._ready(place, events, now)
                    busy, last = now - last <= 2 * GATHER, now
                    if len(ready) == MAX_EVENTS:
                        await trio.lowlevel.checkpoint()  # more are waiting: no gathering
                    elif ready and busy:
                        await trio.sleep(GATHER)
                    else:
                        ready = []  # wait for the next request
        finally:
            log.info(
                "keep-alive hub stops: it answered %d requests in %d rounds",
                self.served,
                self.rounds,
            )
            self._epoll = None
            for place in list(self._parked.values()):
                place.registered = False
                self._wake(place, SEND if place.file is not None else READ)
            self._parked.clear()
            trio.lowlevel.notify_closing(epoll)
            epoll.close()

    async def park(self, place: Parked) -> int:
        """Wait (in the connection's task) for what the task must do next: GONE, READ,
        TAKE or SEND (see those). The hub answers the requests it can meanwhile."""
        epoll = self._epoll
        if epoll is None or place.conn.closed:
            return READ
        place.deadline = trio.current_time() + place.keepalive_timeout
        if not place.registered:
            fd = place.fd = place.conn.sock.fileno()
            try:
                epoll.register(fd, _INPUT)
            except OSError:
                return READ
            place.registered = True
            self._parked[fd] = place
            timeout = min(place.keepalive_timeout, place.send_timeout)
            self._sweep_every = min(self._sweep_every, max(timeout / 16, 0.001))
        place.task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            place.task = None
            self._unregister(place)
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)  # type: ignore[no-any-return]

    def forget(self, place: Parked) -> None:
        """The connection's task is done with the hub (it ends, or goes on elsewhere)."""
        self._unregister(place)

    # ------------------------------------------------------------------ serving

    def _ready(self, place: Parked, events: int, now: float) -> None:
        """A parked connection has input, room to send, or an error."""
        try:
            if place.file is None:
                self._read(place, now)
            elif self._send_more(place, now) and place.registered and self._epoll is not None:
                self._epoll.modify(place.fd, _INPUT)  # sent: wait for the next request
        except Exception:
            log.exception("keep-alive hub failed serving %s", place.conn.peer)
            place.conn.close()
            self._wake(place, GONE)

    def _read(self, place: Parked, now: float) -> None:
        """Read a request and answer it, or give the connection to its task. One receive:
        input left unread (a request head larger than a receive) is reported again."""
        conn = place.conn
        parser = place.parser
        data = conn.recv_now(RECV_SIZE)
        if data is None:
            return  # reported but gone (another reader), or not yet
        parser.feed(data)
        if not data:
            self._wake(place, READ)  # the task sees the end (or a request cut short)
            return
        try:
            got = parser.next_request()
        except HttpError:
            self._wake(place, READ)  # the task meets it again and answers it
            return
        if got is None:
            self._wake(place, READ)  # a partial head: the task reads it with its timeouts
            return
        head = got[0]
        try:
            shared = place.fast(head.method, head.target, head.headers, conn.peer)
        except Exception:
            log.exception("fast lane failed for %s from %s", shown(head.target), conn.peer)
            shared = None
        if shared is None:
            place.taken = got
            self._wake(place, TAKE)
            return
        self.served += 1
        place.close = not head.keep_alive
        file, offset, sent_all = place.answer(conn, shared, head)
        if file is not None:
            place.file = file
            place.offset = offset
            if offset < 0 or parser.buffered:
                # the head waits in the backlog, or requests follow (pipelined): the task
                # sends the rest, then answers them in order
                self._wake(place, SEND)
                return
            place.deadline = now + place.send_timeout
            if not self._send_more(place, now):
                if place.file is not None and self._epoll is not None:
                    self._epoll.modify(place.fd, _ROOM)  # go on when there is room
                return
        elif not sent_all:
            self._wake(place, SEND)  # the task drains the backlog
            return
        elif place.close or conn.closed:
            self._wake(place, GONE)
            return
        if parser.buffered:
            self._wake(place, READ)  # pipelined: the task answers in order
            return
        place.deadline = now + place.keepalive_timeout

    def _send_more(self, place: Parked, now: float) -> bool:
        """Go on sending the body under way; True when it is all sent and the connection
        stays parked for its next request (False: more to send, or its task was woken)."""
        file = place.file
        assert file is not None
        try:
            place.offset = send_some(place.conn, file, place.offset)
        except ConnClosed:
            place.file = None
            self._wake(place, GONE)
            return False
        if place.offset < file.size:
            return False
        place.file = None
        if place.close or place.conn.closed:
            self._wake(place, GONE)
            return False
        place.deadline = now + place.keepalive_timeout
        return True

    # ------------------------------------------------------------------ waking

    def _wake(self, place: Parked, why: int) -> None:
        """Give the connection back to its task, which learns `why`."""
        task = place.task
        if task is None:
            return
        place.task = None
        self._unregister(place)  # the task serves it now (it may park again after)
        trio.lowlevel.reschedule(task, outcome.Value(why))

    def _unregister(self, place: Parked) -> None:
        if not place.registered:
            return
        place.registered = False
        if self._parked.get(place.fd) is place:
            del self._parked[place.fd]
        if self._epoll is not None and not place.conn.closed:
            with contextlib.suppress(OSError):  # closed meanwhile: the kernel forgot it
                self._epoll.unregister(place.fd)

    async def _sweep(self) -> None:
        """Close parked connections idle past their keep-alive timeout, or whose peer has
        not taken an answer within the send timeout."""
        while True:
            await trio.sleep(self._sweep_every)
            now = trio.current_time()
            late = [p for p in self._parked.values() if p.task is not None and p.deadline <= now]
            for place in late:
                if place.file is not None:
                    log.info(
                        "closing HTTP %s: response not taken within %g s",
                        place.conn.peer,
                        place.send_timeout,
                    )
                    place.file = None
                place.conn.close()
                self._wake(place, GONE)

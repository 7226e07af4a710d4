"""One task reads the sockets of many playing players: a player that got its stream going
hands its socket to the crowd's `Hub`, which polls all of them (one epoll, level-triggered)
in rounds every `tick` seconds, reads each ready socket once into one reused buffer and
lets the player's reader scan what came; the player's own task just waits for its end.

So a player costs one recv and a scan of tag headers per round it has data in, not a
task switch, an allocation per read or a wait per frame; its playback buffer is updated
once per read. Arrival times are those of the round (plus the scan before it), at most
`tick` late."""

from __future__ import annotations

import contextlib
import select
from typing import Protocol

import trio

READ_SIZE = 256 * 1024
"""Bytes read from a socket at once (the reused buffer's size)."""
TICK = 0.02
"""Seconds between rounds: data that waits in a socket meanwhile is read in one go. A
player's arrival times (delivery, latency, when its buffer refills) are its round's, so
up to a tick (plus the round's own work) late; a stall's start is computed from the
buffer, not sampled, so only its end (the refill) moves by up to a tick. 20 ms: at 30 fps
+ audio a read carries ~1.5 frames instead of ~1, about a third fewer reads."""
CLOCK_EVERY = 64
"""The arrival clock is read again after this many sockets of a round."""
YIELD_EVERY = 256
"""A round lets other tasks run (players joining) after this many sockets, so that a long
round does not hold joins back for all of its length."""


class Reader(Protocol):
    """What a hub drives: a nonblocking socket, read when it has data."""

    sock: object

    def on_readable(self, buf: bytearray, now: float) -> bool:
        """Read once from the socket into `buf` and handle it; True when the play ended
        (the reader has recorded why; the hub stops polling it)."""
        ...


class Hub:
    """Reads every registered player's socket; `run` in a nursery, `play` from players."""

    def __init__(self, tick: float = TICK, read_size: int = READ_SIZE) -> None:
        self.tick = tick
        self._ep = select.epoll()
        self._readers: dict[int, Reader] = {}
        self._ended: dict[int, trio.Event] = {}
        self.buf = bytearray(read_size)
        """The reused read buffer (also for a player's own reads before it joins the hub:
        nothing awaits between a read and its scan)."""
        self.rounds = 0
        self.reads = 0

    @property
    def playing(self) -> int:
        """Players whose sockets are polled now."""
        return len(self._readers)

    async def run(self) -> None:
        """Poll, read, sleep a tick; until cancelled."""
        ep, readers, buf = self._ep, self._readers, self.buf
        fileno = ep.fileno()
        clock = trio.current_time
        try:
            while True:
                await trio.lowlevel.wait_readable(fileno)
                events = ep.poll(0, max(len(readers), 1))
                self.rounds += 1
                self.reads += len(events)
                now = clock()
                for i, (fd, _) in enumerate(events):
                    if i % CLOCK_EVERY == CLOCK_EVERY - 1:
                        if i % YIELD_EVERY == YIELD_EVERY - 1:
                            await trio.lowlevel.checkpoint()  # a reader may go meanwhile
                        now = clock()
                    reader = readers.get(fd)
                    if reader is not None and reader.on_readable(buf, now):
                        self._drop(fd)
                await trio.sleep(self.tick)
        finally:
            for fd in list(readers):
                self._drop(fd)
            ep.close()

    async def play(self, reader: Reader) -> None:
        """Poll `reader`'s socket until its play ends (or this task is cancelled)."""
        fd = reader.sock.fileno()
        ended = trio.Event()
        self._ep.register(fd, select.EPOLLIN)
        self._readers[fd] = reader
        self._ended[fd] = ended
        try:
            await ended.wait()
        finally:
            if self._readers.get(fd) is reader:
                self._drop(fd)

    def _drop(self, fd: int) -> None:
        del self._readers[fd]
        self._ended.pop(fd).set()
        with contextlib.suppress(OSError):  # already closed
            self._ep.unregister(fd)

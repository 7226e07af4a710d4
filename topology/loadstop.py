"""Ctrl-C during a load run: the players stop and what ran is kept, marked interrupted."""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

EXIT_INTERRUPTED = 130
"""`load`'s exit code after Ctrl-C (128 + SIGINT, as shells report it)."""


async def stop_when(event: trio.Event, stop: Callable[[], None]) -> None:
    """Call `stop()` once `event` is set."""
    await event.wait()
    stop()


_active: list[trio.Event] = []  # the `load` command's interruptible(), while inside it
_interrupts = [0]  # Ctrl-Cs seen by this process's load runs (load_main's exit code)


def current_stop() -> trio.Event:
    """The event of the interruptible() a `load` command runs in, else one never set (a
    load started under `up` leaves Ctrl-C to the launcher, which stops everything)."""
    return _active[-1] if _active else trio.Event()


def was_interrupted() -> bool:
    """True once Ctrl-C stopped a load run of this process."""
    return _interrupts[0] > 0


@asynccontextmanager
async def interruptible(say: bool = True) -> AsyncIterator[trio.Event]:
    """An event set at Ctrl-C (SIGINT) while inside, instead of KeyboardInterrupt: load
    runs stop their players on it and keep their results (`say`: with a line saying so).
    Inside another, the same event."""
    if _active:
        yield _active[-1]
        return
    stop = trio.Event()

    async def watch(signals) -> None:
        async for _ in signals:
            _interrupts[0] += 1
            if say and not stop.is_set():
                print("\ninterrupted: stopping the players", file=sys.stderr, flush=True)
            stop.set()

    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, signals)
            _active.append(stop)
            try:
                yield stop
            finally:
                _active.remove(stop)
            nursery.cancel_scope.cancel()

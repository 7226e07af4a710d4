"""Containment: a failure ends only its own unit (connection, pull, packager, report).

`contained` runs one unit and turns any failure into one log line (a traceback only for
unexpected errors); `supervise` restarts a long-lived task with backoff. Cancellation always
passes through: only `Exception`s are caught, never trio's Cancelled or KeyboardInterrupt.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from common.proto.backoff import Backoff
from common.proto.errors import ConnClosed, ProtocolError

log = logging.getLogger("livecdn.supervise")

EXPECTED: tuple[type[BaseException], ...] = (
    ConnClosed,
    ProtocolError,
    OSError,
    trio.TooSlowError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)
"""What peers and the network do: one log line, no traceback."""


def leaves(exc: BaseException) -> list[BaseException]:
    """The non-group exceptions inside `exc` (itself if it is not a group)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def is_expected(exc: BaseException) -> bool:
    """True if every exception in `exc` is one a peer or the network can cause."""
    return all(isinstance(leaf, EXPECTED) for leaf in leaves(exc))


def describe(exc: BaseException) -> str:
    """A short reason: the first leaf's type and message."""
    leaf = leaves(exc)[0]
    text = str(leaf)
    return f"{type(leaf).__name__}: {text}" if text else type(leaf).__name__


def log_failure(what: str, exc: BaseException, logger: logging.Logger = log) -> None:
    """One line for an expected failure, a traceback for an unexpected one."""
    if is_expected(exc):
        logger.info("%s ended: %s", what, describe(exc))
    else:
        logger.error("%s failed: %s", what, describe(exc), exc_info=exc)


async def contained(
    what: str,
    fn: Callable[[], Awaitable[object]],
    *,
    on_failure: Callable[[BaseException], None] | None = None,
    logger: logging.Logger = log,
) -> None:
    """Run `fn()`; a failure is logged (and passed to `on_failure`), never raised."""
    try:
        await fn()
    except Exception as exc:
        log_failure(what, exc, logger)
        if on_failure is not None:
            on_failure(exc)


async def supervise(
    what: str,
    fn: Callable[[], Awaitable[object]],
    *,
    on_restart: Callable[[], None] | None = None,
    backoff: float = 0.5,
    max_backoff: float = 30.0,
    stable: float = 60.0,
    logger: logging.Logger = log,
) -> None:
    """Run `fn()` until it returns; when it fails, log it and restart it after a backoff
    that doubles up to `max_backoff` (and resets once a run lasted `stable` seconds)."""
    delays = Backoff(backoff, max_backoff, stable)
    while True:
        started = trio.current_time()
        try:
            await fn()
            return
        except Exception as exc:
            delay = delays.failed(trio.current_time() - started)
            if is_expected(exc):
                logger.warning("%s failed: %s; restarting in %g s", what, describe(exc), delay)
            else:
                logger.error(
                    "%s failed: %s; restarting in %g s", what, describe(exc), delay, exc_info=exc
                )
            if on_restart is not None:
                on_restart()
        await trio.sleep(delay)

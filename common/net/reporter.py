"""Sends a node's control messages (heartbeats, stream announcements) to the balancer,
once a second, reconnecting quietly when the balancer is away; each connection first
authenticates with the cluster_secret (common.proto.controlauth).

It runs in the node's nursery, so it never raises: a message that cannot be built or sent,
and a balancer that refuses the node, are logged (an unexpected error with its traceback,
the first time) and retried after a backoff.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

from common.net.conn import Conn, ConnClosed, open_connection
from common.proto.backoff import Backoff
from common.proto.control import parse_address
from common.proto.controlauth import NONCE_BYTES, AuthError, ClientSession

log = logging.getLogger("livecdn.reporter")

MAX_BACKOFF = 5.0


class Message(Protocol):
    """A typed control message (common.proto.control)."""

    node: str

    def to_wire(self) -> dict[str, Any]:
        """The msgpack map."""
        ...


class _Failures:
    """Logs an unexpected failure with its traceback once; repeats of it only at debug."""

    def __init__(self) -> None:
        self.last: str | None = None

    def log(self, what: str, exc: BaseException) -> None:
        key = f"{type(exc).__name__}: {exc}"
        if key != self.last:
            self.last = key
            trace = None if isinstance(exc, AuthError) else exc
            log.error("%s failed (will keep retrying): %s", what, key, exc_info=trace)
        else:
            log.debug("%s failed again: %s", what, key)

    def ok(self) -> None:
        self.last = None


async def handshake(conn: Conn, secret: str, node: str, timeout: float) -> ClientSession:
    """Read the balancer's hello (and welcome), sending the node's answers, until the
    session is ready. AuthError if the balancer refuses, the secrets disagree or it takes
    longer than `timeout`; ConnClosed if the balancer closes the connection first."""
    session = ClientSession(secret, node, secrets.token_bytes(NONCE_BYTES))
    with trio.move_on_after(timeout):
        while not session.ready:
            data = await conn.recv()
            if not data:
                raise ConnClosed
            session.feed(data)
            reply = session.take_outgoing()
            if reply:
                await conn.send_all(reply)
        return session
    raise AuthError(f"no hello and welcome in {timeout:g} s")


async def report(
    address: str,
    messages: Callable[[], Sequence[Message]],
    interval: float = 1.0,
    *,
    secret: str = "",
    send_timeout: float = 10.0,
) -> None:
    """Forever: connect to `address`, authenticate as the node of the first message with
    `secret` (the cluster_secret; "" for a balancer without one) and send `messages()`
    every `interval` seconds.

    Never raises (except Cancelled): unreachable balancers, lost connections, a balancer
    that stops reading or refuses the node (whose reason is logged), and any error building
    or encoding the messages are retried with a backoff of up to MAX_BACKOFF seconds.
    """
    try:
        host, port = parse_address(address)
    except ValueError as exc:
        log.error("not reporting to the balancer: %s", exc)
        return
    delays = Backoff(interval, MAX_BACKOFF)
    connected_once = False
    failures = _Failures()
    while True:
        try:
            with trio.fail_after(send_timeout):
                conn = await open_connection(host, port)
        except (OSError, trio.TooSlowError) as exc:
            if connected_once:
                why = exc if isinstance(exc, OSError) else f"no answer in {send_timeout:g} s"
                log.warning("balancer %s unreachable: %s; retrying", address, why)
                connected_once = False
            await trio.sleep(delays.failed())
            continue
        except Exception as exc:
            failures.log(f"connecting to the balancer {address}", exc)
            await trio.sleep(delays.failed())
            continue
        connected_once = True
        session: ClientSession | None = None
        try:
            while not conn.closed:
                try:
                    batch = messages()
                    if session is None and batch:
                        session = await handshake(conn, secret, batch[0].node, send_timeout)
                        how = "authenticated" if session.authenticated else "unauthenticated"
                        log.info("reporting to balancer %s (%s)", address, how)
                    data = b"".join(session.seal(m.to_wire()) for m in batch) if session else b""
                except AuthError as exc:
                    failures.log(f"authenticating to the balancer {address}", exc)
                    break
                except ConnClosed:
                    raise
                except Exception as exc:
                    failures.log("building the control messages", exc)
                    await trio.sleep(delays.failed())
                    continue
                failures.ok()
                delays.reset()
                if data:
                    with trio.move_on_after(send_timeout) as scope:
                        await conn.send_all(data)
                    if scope.cancelled_caught:
                        log.warning(
                            "balancer %s took no data for %g s; reconnecting", address, send_timeout
                        )
                        break
                await trio.sleep(interval)
        except ConnClosed:
            log.warning("lost the balancer %s; reconnecting", address)
        except Exception as exc:
            failures.log(f"sending to the balancer {address}", exc)
        finally:
            conn.close()
        await trio.sleep(interval if session else delays.failed())

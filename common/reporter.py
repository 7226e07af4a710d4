"""Sends a node's control messages (heartbeats, stream announcements) to the balancer,
once a second, reconnecting quietly when the balancer is away."""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from common.conn import ConnClosed, open_connection
from common.wire import encode

log = logging.getLogger("livecdn.reporter")


def parse_address(address: str) -> tuple[str, int]:
    """'host:port' -> (host, port)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"balancer address {address!r} is not host:port")
    return host, int(port)


async def report(address: str, messages: Callable[[], list[dict]], interval: float = 1.0) -> None:
    """Forever: connect to `address` and send `messages()` every `interval` seconds."""
    host, port = parse_address(address)
    backoff = interval
    connected_once = False
    while True:
        try:
            conn = await open_connection(host, port)
        except OSError as exc:
            if connected_once:
                log.warning("balancer %s unreachable: %s; retrying", address, exc)
                connected_once = False
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            continue
        log.info("reporting to balancer %s", address)
        connected_once = True
        backoff = interval
        try:
            while not conn.closed:
                data = b"".join(encode(m) for m in messages())
                if data:
                    await conn.send_all(data)
                await trio.sleep(interval)
        except ConnClosed:
            log.warning("lost the balancer %s; reconnecting", address)
        finally:
            conn.close()
        await trio.sleep(interval)

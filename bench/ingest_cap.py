#!/usr/bin/env python3
"""Per-publisher ingest cap: one publisher floods an origin (run in-process on free ports)
as fast as it can; prints the rate the origin took against `max_ingest_mbps`.

    .venv/bin/python bench/ingest_cap.py [--cap-mbps 20] [--seconds 10]
"""

from __future__ import annotations

import argparse
import contextlib

import trio

from common.config import OriginConfig, build
from common.net.conn import ConnClosed
from common.net.rtmpclient import RtmpClient
from origin.server import Origin

FRAME = bytes([0x17, 0x01, 0, 0, 0]) + bytes(200_000)


async def flood(url: str) -> None:
    client = await RtmpClient.connect(url)
    await client.publish()
    with contextlib.suppress(ConnClosed):
        await client.send(9, 0, bytes([0x17, 0x00, 0, 0, 0]) + bytes(30))
        ts = 0
        while True:
            ts += 1
            await client.send(9, ts, FRAME)


async def main(args: argparse.Namespace) -> None:
    config = build(
        OriginConfig,
        {"host": "127.0.0.1", "rtmp_port": 0, "http_port": 0, "max_ingest_mbps": args.cap_mbps},
    )
    origin = Origin(config)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(origin.run)
        nursery.start_soon(flood, f"rtmp://127.0.0.1:{address.rtmp_port}/live/flood")
        while origin.registry.get("live", "flood") is None:
            await trio.sleep(0.01)
        stream = origin.registry.get("live", "flood")
        await trio.sleep(args.warmup)  # the first second's burst
        start, before = trio.current_time(), stream.stats.bytes_in
        await trio.sleep(args.seconds)
        rate = (stream.stats.bytes_in - before) * 8 / (trio.current_time() - start) / 1e6
        print(f"cap {args.cap_mbps:g} Mbit/s: took {rate:.2f} Mbit/s over {args.seconds:g} s")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cap-mbps", type=float, default=20)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=2)
    trio.run(main, ap.parse_args())

"""livecdn_bytes_in_total counts a publisher's bytes while it is live, once."""

from __future__ import annotations

import trio

from tests.conftest import start_origin
from tests.media import publish_synthetic
from tests.metrics import metric, scrape


async def bytes_in_above(http_port: int, floor: float) -> float:
    """Scrape until livecdn_bytes_in_total is above `floor`; its value."""
    with trio.fail_after(10):
        while (value := metric(await scrape(http_port), "livecdn_bytes_in_total")) <= floor:
            await trio.sleep(0.05)
    return value


async def test_bytes_in_grows_while_publishing_and_counts_once(nursery):
    origin, addr = await start_origin(nursery)
    async with trio.open_nursery() as sending:
        pub = await publish_synthetic(sending, f"rtmp://127.0.0.1:{addr.rtmp_port}/live/bytes")
        first = await bytes_in_above(addr.http_port, 0)
        second = await bytes_in_above(addr.http_port, first)
        assert origin.publisher_count() == 1  # both scrapes while it was on air
        sending.cancel_scope.cancel()
    pub.close()
    with trio.fail_after(10):
        while origin.ingest_bytes.live:
            await trio.sleep(0.05)
    total = metric(await scrape(addr.http_port), "livecdn_bytes_in_total")
    assert second <= total <= pub.conn.bytes_out  # counted once, not again at the end

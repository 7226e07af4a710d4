"""The load of a node's sibling workers, polled by the worker that reports to the balancer
(worker 0), so that its heartbeats count the whole node: viewers, the streams held and the
bytes sent."""

from __future__ import annotations

import json
import logging

import trio
from prometheus_client.parser import text_string_to_metric_families

from common.net.httpclient import fetch
from common.proto.paths import STREAMS_API
from common.serve.workerctx import SECRET_HEADER, WorkerContext
from common.serve.workermerge import ASK_TIMEOUT
from common.serve.workersviewers import hls_overlap

log = logging.getLogger("livecdn.workers")

POLL_S = 1.0
"""Seconds between two polls (the heartbeat's period)."""
HLS_EVERY = 2
"""Polls between two counts of the HLS viewers seen by more than one worker (each lists
its viewer keys: `workersviewers`)."""


class SiblingLoad:
    """What the other workers said last: each one's streams (viewers by stream key, sibling
    pulls left out), its viewers and the bytes it has sent; and the HLS viewers counted on
    more than one worker, left out once. A worker that does not answer counts for nothing
    until it does."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.streams: dict[int, dict[tuple[str, str], int]] = {}
        self.viewers_by: dict[int, float] = {}
        self.sent_by: dict[int, float] = {}
        self.pulls_by: dict[int, dict[tuple[str, str], int]] = {}
        """Streams each sibling pulls from this worker (a viewer here to leave out)."""
        self.hls_overlap: dict[tuple[str, str], int] = {}
        """By stream, HLS viewers counted on more than one worker (`hls_overlap`)."""

    def held(self, own: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
        """Viewers by stream for the node, from this worker's `own`."""
        out = dict(own)
        for streams in self.streams.values():
            for key, n in streams.items():
                out[key] = out.get(key, 0) + n
        for table in (*self.pulls_by.values(), self.hls_overlap):
            for key, n in table.items():
                if key in out:
                    out[key] = max(0, out[key] - n)
        return out

    def viewers(self, own: int) -> int:
        """Viewers of the node, from this worker's `own`."""
        pulls = sum(sum(p.values()) for p in self.pulls_by.values())
        twice = sum(self.hls_overlap.values())
        return max(0, own + int(sum(self.viewers_by.values())) - pulls - twice)

    def sent(self, own: int) -> int:
        """Bytes the node has sent to viewers (the siblings' as they said last)."""
        return own + int(sum(self.sent_by.values()))

    async def run(self) -> None:
        """Poll every sibling every POLL_S seconds, until cancelled."""
        polls = 0
        while True:
            async with trio.open_nursery() as nursery:
                for i in self.ctx.siblings():
                    nursery.start_soon(self._poll, i)
                if polls % HLS_EVERY == 0:
                    nursery.start_soon(self._poll_hls)
            polls += 1
            await trio.sleep(POLL_S)

    async def _poll_hls(self) -> None:
        self.hls_overlap = await hls_overlap(self.ctx)

    async def _poll(self, i: int) -> None:
        base = self.ctx.url(i)
        headers = [(SECRET_HEADER, self.ctx.secret)]
        try:
            api = await fetch("GET", base + STREAMS_API, timeout=ASK_TIMEOUT, headers=headers)
            metrics = await fetch("GET", base + "/metrics", timeout=ASK_TIMEOUT, headers=headers)
            if api.status != 200 or metrics.status != 200:
                raise OSError(f"HTTP {api.status}/{metrics.status}")
            doc = json.loads(api.body)
            families = list(text_string_to_metric_families(metrics.body.decode()))
        except Exception as exc:  # a silent or broken sibling counts for nothing for now
            if i in self.streams:
                log.warning("worker %d's load unknown (%s: %s)", i, type(exc).__name__, exc)
            for table in (self.streams, self.viewers_by, self.sent_by, self.pulls_by):
                table.pop(i, None)
            return
        streams: dict[tuple[str, str], int] = {}
        pulls: dict[tuple[str, str], int] = {}
        for info in doc.get("streams", []):
            key = (str(info.get("app")), str(info.get("name")))
            streams[key] = int((info.get("viewers") or {}).get("total", 0))
            up = info.get("upstream")
            if isinstance(up, dict) and self.ctx.sibling_of(str(up.get("parent"))):
                pulls[key] = 1
        values = {
            fam.name: sum(s.value for s in fam.samples if not s.name.endswith("_created"))
            for fam in families
        }
        self.streams[i] = streams
        self.pulls_by[i] = pulls
        self.viewers_by[i] = values.get("livecdn_viewers", 0.0)
        self.sent_by[i] = values.get("livecdn_bytes_out_total", 0.0)

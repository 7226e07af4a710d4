"""A node's fan-outs, one per live stream: made from the node's settings, and counted (viewers,
frames dropped, bytes sent) for its metrics."""

from __future__ import annotations

import time

from common.config import ServeConfig
from common.media.stream import Stream
from common.serve.metrics import NodeMetrics
from common.serve.play import Fanout, PlayStats


def new_session() -> str:
    """A short id that makes segment URIs unique across restarts of a stream."""
    return format(int(time.time() * 1000) & 0xFFFFFFFFFF, "x")


def wall_ms() -> int:
    """The wall clock in milliseconds (segment dates)."""
    return int(time.time() * 1000)


class Fanouts:
    """The fan-outs of the streams a node serves, by stream; `stats` counts their players."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.stats = PlayStats()
        self._by_stream: dict[Stream, Fanout] = {}
        self._dropped_closed = 0  # frames dropped by streams already forgotten

    def new_stream(self, app: str, name: str) -> Stream:
        """A Stream configured from the node's settings."""
        cfg = self.config
        return Stream(
            app,
            name,
            gop_cache=cfg.gop_cache,
            max_frames=cfg.gop_max_frames,
            max_bytes=cfg.gop_max_bytes,
            max_lag_ms=cfg.max_lag_ms,
            # an edge's pulls take their parent's segment clock, target included
            segment_ms=round(1000 * getattr(cfg, "hls_target_duration", 2.0)),
            session=new_session(),
            wall_ms=wall_ms,
        )

    def open(self, stream: Stream) -> Fanout:
        """A Fanout for `stream`, registered here; the caller runs `fanout.run()`."""
        cfg = self.config
        fanout = Fanout(stream, self.stats, batch_ms=cfg.batch_ms, slow_timeout=cfg.slow_timeout)
        self._by_stream[stream] = fanout
        return fanout

    def drop(self, stream: Stream) -> None:
        """Forget a finished stream's fan-out (keeping its counters)."""
        if self._by_stream.pop(stream, None) is not None:
            self._dropped_closed += stream.stats.dropped_frames

    def get(self, stream: Stream) -> Fanout | None:
        """The fan-out of `stream`, None if it has none (any more)."""
        return self._by_stream.get(stream)

    def __getitem__(self, stream: Stream) -> Fanout:
        return self._by_stream[stream]

    def viewers(self) -> dict[tuple[str, ...], float]:
        """Players by protocol (label tuples, for metrics): 'flv', 'ws' and 'rtmp' always."""
        out: dict[tuple[str, ...], float] = {("flv",): 0, ("ws",): 0, ("rtmp",): 0}
        for fanout in self._by_stream.values():
            for proto, n in fanout.viewers().items():
                out[(proto,)] = out.get((proto,), 0) + n
        return out

    def dropped_frames(self) -> int:
        """Frames skipped for players that fell behind, forgotten streams included."""
        return self._dropped_closed + sum(s.stats.dropped_frames for s in self._by_stream)

    def register_metrics(self, mt: NodeMetrics) -> None:
        """Export the frames dropped and the players' counters."""
        mt.counter(
            "frames_dropped_total",
            "Frames skipped for viewers that fell behind.",
            (),
            lambda: {(): self.dropped_frames()},
        )
        self.stats.register_metrics(mt)

"""The players' quality of experience as running totals (a "QoE snapshot"): players by
state, time to first frame and latency histograms, stalls, reconnects, failures and bytes,
grouped by protocol and client profile. Snapshots are plain JSON-ready dicts, so that a
worker process can send its own and a parent add them up (`merge_snapshots`)."""

from __future__ import annotations

from collections.abc import Iterable

from common.serve.metrics import new_histogram, observe
from topology.players.failures import Ending
from topology.players.player import PlayerState, SimPlayer

TTFF_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0)
"""Upper bounds (seconds) of the time to first frame histogram (then +Inf)."""
LATENCY_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0, 20.0)
"""Upper bounds (seconds) of the latency histogram (ingest to on screen; then +Inf)."""
STATES = tuple(s.value for s in PlayerState)
FAILURE_KINDS = tuple(e.value for e in Ending if e is not Ending.ENDED)
COUNTERS = ("stalls", "stall_s", "reconnects", "bytes")


def new_group(protocol: str, profile: str) -> dict:
    """An empty group of a snapshot."""
    return {
        "protocol": protocol,
        "profile": profile,
        "states": dict.fromkeys(STATES, 0),
        "ttff": new_histogram(TTFF_BUCKETS),
        "latency": new_histogram(LATENCY_BUCKETS),
        **dict.fromkeys(COUNTERS, 0),
        "failures": dict.fromkeys(FAILURE_KINDS, 0),
    }


class QoeTally:
    """Running QoE totals of `players`: `update(now)` (once a second) folds in what changed;
    `snapshot` is the latest, replaced whole each time (safe to read from another thread)."""

    def __init__(self, players: list[SimPlayer]) -> None:
        self.players = players
        self.snapshot: dict[str, dict] = {}
        self._seen = [0] * len(players)  # latency samples already counted, per player
        self._stall_s = [0.0] * len(players)  # never less than reported before (a counter)
        self._latency: dict[str, dict] = {}  # group key -> histogram (incremental)
        self.update(0.0)  # every player waiting: nothing depends on the time yet

    def update(self, now: float) -> dict[str, dict]:
        """Totals at `now` (trio time); the new snapshot."""
        groups: dict[str, dict] = {}
        for i, p in enumerate(self.players):
            r = p.result
            key = f"{r.protocol} {r.profile}"
            g = groups.get(key)
            if g is None:
                g = groups[key] = new_group(r.protocol, r.profile)
                g["latency"] = self._latency.setdefault(key, new_histogram(LATENCY_BUCKETS))
            g["states"][p.live_state(now).value] += 1
            if r.ttff_s is not None:
                observe(g["ttff"], TTFF_BUCKETS, r.ttff_s)
            for value in r.latency_s[self._seen[i] :]:
                observe(g["latency"], LATENCY_BUCKETS, value)
            self._seen[i] = len(r.latency_s)
            ended = r.state in (PlayerState.DONE, PlayerState.FAILED)
            stall_s = r.stall_s if ended else p.buffer.stall_seconds(now)
            self._stall_s[i] = max(self._stall_s[i], stall_s)
            g["stalls"] += r.stalls if ended else len(p.buffer.stalls)
            g["stall_s"] += self._stall_s[i]
            g["reconnects"] += max(0, len(r.edges) - 1)
            g["bytes"] += r.bytes
            for end in r.failures:
                if end.failed:
                    g["failures"][end.kind.value] += 1
        for g in groups.values():  # a copy: the live histogram keeps counting
            g["latency"] = {"counts": list(g["latency"]["counts"]), "sum": g["latency"]["sum"]}
        self.snapshot = groups
        return groups


def merge_snapshots(snapshots: Iterable[dict[str, dict]]) -> dict[str, dict]:
    """Snapshots of several shares (worker processes) added up, group by group."""
    out: dict[str, dict] = {}
    for snap in snapshots:
        for key, g in snap.items():
            m = out.get(key)
            if m is None:
                m = out[key] = new_group(g["protocol"], g["profile"])
            for name in ("states", "failures"):
                for k, n in g[name].items():
                    m[name][k] = m[name].get(k, 0) + n
            for name in ("ttff", "latency"):
                m[name]["counts"] = [a + b for a, b in zip(m[name]["counts"],
                                                           g[name]["counts"], strict=True)]  # fmt: skip
                m[name]["sum"] += g[name]["sum"]
            for name in COUNTERS:
                m[name] += g[name]
    return out

"""Load-run results: the summary numbers, the printed table and the plots."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from topology.players.failures import is_failure


def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of `values`, None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def summarize(players: list[dict], seconds: float) -> dict:
    """Summary over per-player dicts (PlayerResult.summary() plus `latency_s`)."""
    n = len(players)
    ttff = [p["ttff_s"] for p in players if p["ttff_s"] is not None]
    joins = [p["join_s"] for p in players if p["join_s"] is not None]
    latency = [x for p in players for x in p.get("latency_s", [])]
    played = [p for p in players if p["playing_s"] is not None]
    reasons = Counter(r for p in players for r in p["failures"] if is_failure(r))
    return {
        "players": n,
        "seconds": round(seconds, 1),
        "played": len(played),
        "never_played": n - len(played),
        "join_s": {q: pct(joins, q) for q in (50, 95, 99)},
        "ttff_s": {q: pct(ttff, q) for q in (50, 95, 99)},
        "latency_s": {q: pct(latency, q) for q in (50, 95, 99)},
        "latency_samples": len(latency),
        "delivery_s": {
            q: pct([p["delivery_p50_s"] for p in players if p.get("delivery_p50_s") is not None], q)
            for q in (50, 95, 99)
        },
        "rebuffer_ratio_mean": _mean([p["rebuffer"] for p in played]),
        "rebuffer_ratio_p95": pct([p["rebuffer"] for p in played], 95),
        "stalls_per_player": _mean([p["stalls"] for p in played]),
        "players_with_stalls": sum(1 for p in played if p["stalls"]),
        "kbps_mean": _mean([p["kbps"] for p in played]),
        "bytes": sum(p["bytes"] for p in players),
        "failures": sum(reasons.values()),
        "failure_reasons": grouped(reasons),
        "players_with_failures": sum(
            1 for p in players if any(is_failure(r) for r in p["failures"])
        ),
        "reconnected": sum(1 for p in players if len(p["edges"]) > 1),
        "viewers_per_edge": dict(Counter(p["edge"] for p in players if p["edge"]).most_common()),
        "profiles": dict(Counter(p["profile"] for p in players)),
    }


MAX_REASONS = 8
"""Distinct failure reasons a summary lists; the rest are counted as OTHER_REASONS."""
OTHER_REASONS = "(other reasons)"


def grouped(reasons: Counter[str]) -> dict[str, int]:
    """Failures by reason, the most common first, at most MAX_REASONS (+ the rest)."""
    top = dict(reasons.most_common(MAX_REASONS))
    if rest := sum(reasons.values()) - sum(top.values()):
        top[OTHER_REASONS] = rest
    return top


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def table(summary: dict) -> str:
    """The summary as text for the terminal (with what the servers said, when it has it)."""
    s = summary
    lines = [
        f"players {s['players']} for {s['seconds']} s: played {s['played']}, "
        f"never played {s['never_played']}"
        + ("  (interrupted: Ctrl-C stopped the run)" if s.get("interrupted") else ""),
        "",
        "                     p50      p95      p99   (ms)",
    ]
    for label, key in (("join", "join_s"), ("first frame", "ttff_s"), ("latency", "latency_s"),
                       ("delivery", "delivery_s")):  # fmt: skip
        v = s[key]
        lines.append(f"  {label:15} {_ms(v[50]):>8} {_ms(v[95]):>8} {_ms(v[99]):>8}")
    rb = s["rebuffer_ratio_mean"]
    lines += [
        "",
        f"  rebuffer ratio   mean {0 if rb is None else rb * 100:.2f} %   "
        f"p95 {(s['rebuffer_ratio_p95'] or 0) * 100:.2f} %",
        f"  stalls/player    {s['stalls_per_player'] or 0:.2f}   "
        f"({s['players_with_stalls']} players stalled)",
        f"  received         {s['kbps_mean'] or 0:.0f} kbit/s per player, "
        f"{s['bytes'] / 1e6:.1f} MB in all",
        f"  failures         {s['failures']} ({s['players_with_failures']} players; "
        f"{s['reconnected']} moved to another edge)",
    ]
    for reason, count in s["failure_reasons"].items():
        lines.append(f"      {count:6}  {reason}")
    lines.append("  viewers per edge " + (", ".join(
        f"{e} {n}" for e, n in s["viewers_per_edge"].items()) or "-"))  # fmt: skip
    servers = summary.get("servers")
    if servers:
        parts = []
        for name, info in servers.items():
            if info.get("down"):
                parts.append(f"{name} down")
            elif "upstreams" in info:
                parts.append(f"{name} {info['viewers']} ({info['upstreams']} upstream)")
            else:
                parts.append(f"{name} {info['viewers']}")
        lines.append("  servers say      " + ", ".join(parts) + "  viewers")
        upstreams = sum(i.get("upstreams", 0) for i in servers.values())
        lines.append(f"  back-to-source   {upstreams} edge upstream connection(s)")
    return "\n".join(lines)


def plot(path: Path, timeline: list[dict], players: list[dict]) -> Path | None:
    """PNG: viewers, latency and stalls over time, and load per edge (needs matplotlib:
    pip install -e .[plot]). None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    t = [p["t"] for p in timeline]
    fig, axes = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    ax = axes[0]
    ax.plot(t, [p["playing"] for p in timeline], label="playing")
    ax.plot(t, [p["joining"] + p["waiting"] for p in timeline], label="waiting/joining")
    ax.plot(t, [p["retrying"] for p in timeline], label="retrying")
    ax.set_ylabel("players")
    ax.legend()
    ax = axes[1]
    lat = [(p["t"], p["latency_p50_s"] * 1000) for p in timeline if p["latency_p50_s"] is not None]
    ax.plot([x for x, _ in lat], [y for _, y in lat], marker=".")  # stamps come once a GOP
    ax.set_ylabel("latency p50 (ms)")
    ax.set_ylim(bottom=0)
    ax = axes[2]
    ax.plot(t, [p["stalled"] for p in timeline], color="tab:red", label="stalled")
    ax.plot(t, [p["retrying"] for p in timeline], color="tab:orange", label="cut off, retrying")
    ax.set_ylabel("players not playing")
    ax.legend()
    ax = axes[3]
    edges = sorted({e for p in timeline for e in p["edges"]})
    for e in edges:
        ax.plot(t, [p["edges"].get(e, 0) for p in timeline], label=e)
    ax.set_ylabel("viewers per edge")
    ax.set_xlabel("seconds")
    if edges:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path

"""Shares of a load run as documents: what each share writes (its players' raw results),
and how shares of one run combine into that run's results."""

from __future__ import annotations

import json
from pathlib import Path

from topology.players.crowd import COUNTED, LoadSpec
from topology.players.player import Target
from topology.players.report import pct, summarize
from topology.players.shard import Shard


class MergeError(ValueError):
    """Shares that do not make one run; the message says which and why."""


def run_identity(target: Target, spec: LoadSpec, label: str, run_id: str = "") -> dict:
    """What every share of one run agrees on (no secrets): shares whose identities differ
    are of different runs. `run_id` (load --run-id) tells apart runs with the same options."""
    return {
        "run_id": run_id,
        "label": label,
        "target": target.url or f"{target.base}/{target.stream}",
        "protocol": spec.protocol,
        "players": spec.players,
        "duration": spec.duration,
        "arrival": spec.arrival,
        "ramp_s": spec.ramp_s,
        "profiles": spec.profiles,
        "class": spec.klass,
    }


def shard_doc(
    run: dict, shard: Shard, players: list[dict], timeline: list[dict], seconds: float,
    servers: dict | None = None, interrupted: bool = False,
) -> dict:  # fmt: skip
    """What a share writes: its summary and timeline, every player's raw results (with its
    latency samples, so that merged percentiles are exact), the run and the share; marked
    `interrupted` when Ctrl-C stopped it before its end."""
    doc = results_doc(run, players, timeline, seconds, servers, interrupted)
    doc["shard"] = {"index": shard.index, "count": shard.count}
    return doc


def results_doc(
    run: dict, players: list[dict], timeline: list[dict], seconds: float,
    servers: dict | None, interrupted: bool,
) -> dict:  # fmt: skip
    """The results of `run`'s `players` (a share's or the merged run's): summary, timeline,
    every player's raw results, marked `interrupted` when Ctrl-C stopped it before its end."""
    return {
        "summary": finish_summary(players, timeline, seconds, servers, interrupted),
        "interrupted": interrupted,
        "timeline": timeline,
        "players": players,
        "seconds": seconds,
        "run": run,
    }


def finish_summary(
    players: list[dict], timeline: list[dict], seconds: float, servers: dict | None,
    interrupted: bool = False,
) -> dict:  # fmt: skip
    """The summary of a run's players, with the servers' own counts when it has them."""
    summary = summarize(players, seconds)
    if interrupted:
        summary["interrupted"] = True
    if servers:
        at_end = timeline[-3] if len(timeline) >= 3 else (timeline[-1] if timeline else {})
        summary["servers"] = servers
        summary["players_per_edge_at_count"] = at_end.get("edges", {})
    return summary


def shard_of(doc: dict) -> Shard:
    """The share a document holds."""
    return Shard(doc["shard"]["index"], doc["shard"]["count"])


def combine(docs: list[dict]) -> tuple[list[dict], list[dict], float, dict]:
    """Shares' players (by id), merged timeline, longest run time and the servers' counts
    (the first share's that has them: every share asked the same servers)."""
    players = sorted((p for d in docs for p in d["players"]), key=lambda p: p["id"])
    seconds = max((d["seconds"] for d in docs), default=0.0)
    servers = next((d["summary"]["servers"] for d in docs if d["summary"].get("servers")), {})
    return players, merge_timelines([d["timeline"] for d in docs]), seconds, servers


def merge_timelines(timelines: list[list[dict]]) -> list[dict]:
    """Per-second samples of shares side by side: counts added, the latency median the
    median of the shares' medians; a share whose run ended a sample sooner counts as in
    its last sample."""
    out = []
    timelines = [t for t in timelines if t]
    for i in range(max(map(len, timelines), default=0)):
        rows = [t[min(i, len(t) - 1)] for t in timelines]
        merged = {"t": rows[0]["t"], "edges": {}}
        for k in COUNTED:
            merged[k] = sum(r.get(k, 0) for r in rows)
        merged["latency_p50_s"] = pct(
            [r["latency_p50_s"] for r in rows if r["latency_p50_s"] is not None], 50
        )
        for r in rows:
            for e, n in r["edges"].items():
                merged["edges"][e] = merged["edges"].get(e, 0) + n
        out.append(merged)
    return out


def check_shares(docs: list[dict], names: list[str], run_id: str | None = None) -> Shard:
    """That `docs` (read from `names`) are all the shares of one run (of id `run_id`, if
    given), each once, each with its own players; the share count. MergeError saying what is
    wrong otherwise."""
    if not docs:
        raise MergeError("no shard files given")
    for doc, name in zip(docs, names, strict=True):
        if not isinstance(doc, dict) or not {"run", "shard", "players"} <= doc.keys():
            raise MergeError(f"{name} is not a load shard (written by load --shard I/N)")
        if run_id is not None and doc["run"].get("run_id", "") != run_id:
            raise MergeError(f"{name} is of run {doc['run'].get('run_id', '')!r}, not {run_id!r}")
    first, name0 = docs[0], names[0]
    for doc, name in zip(docs, names, strict=True):
        diff = [k for k in first["run"].keys() | doc["run"].keys()
                if first["run"].get(k) != doc["run"].get(k)]  # fmt: skip
        if diff:
            what = ", ".join(f"{k} {first['run'].get(k)!r} vs {doc['run'].get(k)!r}"
                             for k in sorted(diff))  # fmt: skip
            raise MergeError(f"shards of different runs: {name0} and {name} differ in {what}")
        if doc["shard"]["count"] != first["shard"]["count"]:
            raise MergeError(f"shards of different splits: {name0} is {shard_of(first)}, "
                             f"{name} is {shard_of(doc)}")  # fmt: skip
    count = first["shard"]["count"]
    seen: dict[int, str] = {}
    for doc, name in zip(docs, names, strict=True):
        shard = shard_of(doc)
        if shard.index in seen:
            raise MergeError(f"shard {shard} given twice: {seen[shard.index]} and {name}")
        seen[shard.index] = name
        ids, want = [p["id"] for p in doc["players"]], list(shard.ids(doc["run"]["players"]))
        if ids != want:
            lost = len(set(want) - set(ids))
            raise MergeError(f"{name}: its players are not those of shard {shard}"
                             + (f" ({lost} missing: a worker failed?)" if lost else ""))  # fmt: skip
    missing = [f"{i}/{count}" for i in range(count) if i not in seen]
    if missing:
        raise MergeError(f"missing shard{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(missing)} (have {len(seen)} of {count})")  # fmt: skip
    return Shard(0, count)


def merged_doc(docs: list[dict], names: list[str], run_id: str | None = None) -> dict:
    """All the shares of one run (checked; of id `run_id` if given) as that run's results:
    the same summary as one process running it would write."""
    check_shares(docs, names, run_id)
    players, timeline, seconds, servers = combine(docs)
    interrupted = any(d.get("interrupted") for d in docs)
    doc = results_doc(docs[0]["run"], players, timeline, seconds, servers, interrupted)
    doc["shards"] = len(docs)
    return doc


def read_docs(paths: list[Path]) -> list[dict]:
    """Shard files as documents; MergeError naming a file that cannot be read."""
    docs = []
    for path in paths:
        try:
            docs.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise MergeError(f"cannot read {path}: {exc}") from None
    return docs

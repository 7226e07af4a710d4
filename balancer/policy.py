"""How the balancer picks an edge for a new viewer: pure policies, no I/O and no clocks.

Each policy gets the eligible edges (healthy, not draining, not full) for every call; the
list may change between calls, so any state a policy keeps is keyed by edge id.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Protocol

POLICIES = ("round_robin", "least_load", "p2c", "consistent_hash", "bounded_hash")

VNODES_PER_WEIGHT = 100
MAX_VNODES = 10_000  # per edge, so a huge weight cannot make the ring huge
_TINY = 1e-9
_RING_CACHE_SIZE = 8


@dataclass(frozen=True)
class EdgeView:
    """What a policy knows about one eligible edge (healthy, not draining, not full)."""

    id: str
    weight: float = 1.0
    viewers: int = 0
    capacity_viewers: int = 0  # 0 = unknown/unlimited
    egress_bps: float = 0.0
    capacity_bps: float = 0.0  # 0 = unknown/unlimited
    streams: frozenset[str] = frozenset()  # streams the edge already holds ("app/name")

    @property
    def load(self) -> float:
        """Fraction of capacity in use (the larger of viewers and egress over the known
        capacities); with no capacity known, viewers per unit of weight."""
        parts = []
        if self.capacity_viewers > 0:
            parts.append(self.viewers / self.capacity_viewers)
        if self.capacity_bps > 0:
            parts.append(self.egress_bps / self.capacity_bps)
        if parts:
            return max(parts)
        return self.viewers / max(self.weight, _TINY)


@dataclass(frozen=True)
class Choice:
    """The edge a policy picked and one human-readable line saying why."""

    edge: EdgeView
    reason: str


class Policy(Protocol):
    """Picks an edge for one new viewer of a stream."""

    name: str

    def choose(self, stream: str, edges: Sequence[EdgeView]) -> Choice | None:
        """The edge for one new viewer of `stream`; None only when `edges` is empty."""
        ...


def _load_key(e: EdgeView) -> tuple[float, int, str]:
    return (e.load, e.viewers, e.id)


def _describe(e: EdgeView) -> str:
    """The edge's load in words, e.g. "load 0.40, 12/30 viewers"."""
    viewers = f"{e.viewers}/{e.capacity_viewers}" if e.capacity_viewers > 0 else f"{e.viewers}"
    text = f"load {e.load:.2f}, {viewers} viewers"
    if e.capacity_bps > 0:
        text += f", {e.egress_bps / 1e6:.1f}/{e.capacity_bps / 1e6:.1f} Mbps"
    return text


def _holds(e: EdgeView, stream: str) -> str:
    return "already holds it" if stream in e.streams else "will pull it"


# ---------------------------------------------------------------------- round robin


class RoundRobin:
    """Smooth weighted round robin (nginx): each call every edge's `current` grows by its
    weight, the largest is picked and loses the total weight."""

    name = "round_robin"

    def __init__(self) -> None:
        self.current: dict[str, float] = {}

    def choose(self, stream: str, edges: Sequence[EdgeView]) -> Choice | None:
        if not edges:
            return None
        weights = [max(e.weight, 0.0) for e in edges]
        total = sum(weights)
        if total <= 0:
            weights, total = [1.0] * len(edges), float(len(edges))
        present = {e.id for e in edges}
        for gone in self.current.keys() - present:
            del self.current[gone]  # a returning edge starts afresh
        best, best_cur = edges[0], -math.inf
        for e, w in zip(edges, weights, strict=True):
            cur = self.current.get(e.id, 0.0) + w
            self.current[e.id] = cur
            if cur > best_cur:
                best, best_cur = e, cur
        self.current[best.id] -= total
        return Choice(
            best,
            f"round_robin: {best.id} (weight {best.weight:g}) has the highest current "
            f"{best_cur:g} of {len(edges)} edges (total weight {total:g})",
        )


# ---------------------------------------------------------------------- least load


class LeastLoad:
    """The edge with the lowest load; ties go to fewer viewers, then the smaller id."""

    name = "least_load"

    def choose(self, stream: str, edges: Sequence[EdgeView]) -> Choice | None:
        if not edges:
            return None
        ranked = sorted(edges, key=_load_key)
        best = ranked[0]
        reason = f"least_load: {best.id} has the lowest load ({_describe(best)})"
        if len(ranked) > 1:
            nxt = ranked[1]
            reason += f"; next {nxt.id} ({_describe(nxt)})"
        return Choice(best, reason + f" of {len(edges)} edges")


# ---------------------------------------------------------------------- p2c


class PowerOfTwo:
    """Power of two choices: sample two distinct edges uniformly, keep the less loaded."""

    name = "p2c"

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)

    def choose(self, stream: str, edges: Sequence[EdgeView]) -> Choice | None:
        if not edges:
            return None
        if len(edges) == 1:
            e = edges[0]
            return Choice(e, f"p2c: {e.id} is the only edge ({_describe(e)})")
        i, j = self.rng.sample(range(len(edges)), 2)
        # An exact tie goes to the first sampled, so equal edges share evenly.
        a, b = sorted((edges[i], edges[j]), key=lambda e: (e.load, e.viewers))
        return Choice(
            a,
            f"p2c: sampled {a.id} (load {a.load:.2f}, {a.viewers} viewers) and "
            f"{b.id} (load {b.load:.2f}, {b.viewers} viewers) of {len(edges)}; picked {a.id}",
        )


# ---------------------------------------------------------------------- hashing


def _point(key: str) -> int:
    """A stable 64-bit position on the ring (not Python's per-process salted hash())."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class HashRing:
    """A consistent-hash ring with VNODES_PER_WEIGHT virtual nodes per unit of weight."""

    def __init__(self, members: frozenset[tuple[str, float]]) -> None:
        points: list[tuple[int, str]] = []
        for edge_id, weight in members:
            n = min(MAX_VNODES, max(1, round(VNODES_PER_WEIGHT * weight)))
            points.extend((_point(f"{edge_id}#{i}"), edge_id) for i in range(n))
        points.sort()
        self.points = [p for p, _ in points]
        self.owners = [o for _, o in points]
        self.n_members = len(members)

    def walk(self, key: str) -> Iterator[str]:
        """Distinct edge ids clockwise from `key`'s point, starting with its owner."""
        if not self.points:
            return
        start = bisect.bisect_right(self.points, _point(key))
        seen: set[str] = set()
        n = len(self.points)
        for k in range(n):
            owner = self.owners[(start + k) % n]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == self.n_members:
                    return


class _HashPolicy:
    """Shared ring cache: rebuilt only when the set of (id, weight) changes."""

    def __init__(self) -> None:
        self._rings: dict[frozenset[tuple[str, float]], HashRing] = {}

    def ring(self, edges: Sequence[EdgeView]) -> HashRing:
        """The ring of exactly these edges (cached)."""
        key = frozenset((e.id, e.weight) for e in edges)
        ring = self._rings.pop(key, None)
        if ring is None:
            ring = HashRing(key)
            while len(self._rings) >= _RING_CACHE_SIZE:
                del self._rings[next(iter(self._rings))]  # oldest first
        self._rings[key] = ring  # most recently used last
        return ring

    def order(self, stream: str, edges: Sequence[EdgeView]) -> list[str]:
        """Edge ids in the order the ring offers them to `stream`."""
        return list(self.ring(edges).walk(stream))


class ConsistentHash(_HashPolicy):
    """Each stream maps to the first edge clockwise of its point on the ring, so its
    viewers gather on one edge (one upstream) and only a departed edge's streams move."""

    name = "consistent_hash"

    def choose(self, stream: str, edges: Sequence[EdgeView]) -> Choice | None:
        if not edges:
            return None
        by_id = {e.id: e for e in edges}
        e = by_id[next(self.ring(edges).walk(stream))]
        return Choice(
            e,
            f"consistent_hash: {stream} hashes to {e.id} ({_holds(e, stream)}; "
            f"{_describe(e)}; {len(edges)} edges on the ring)",
        )


RATIONAL_DENOMINATOR = 1_000_000


@functools.lru_cache(maxsize=4096)
def rational(x: float) -> Fraction:
    """`x` as the nearest fraction with a denominator of at most a million (1.1 -> 11/10),
    so load caps are computed exactly, never at the mercy of float rounding."""
    return Fraction(x).limit_denominator(RATIONAL_DENOMINATOR)


def weighted_cap(total: int, weight: Fraction, sum_weight: Fraction, factor: Fraction) -> int:
    """ceil(factor * total * weight / sum_weight), exactly: the most viewers an edge of
    `weight` may hold when `total` viewers share edges of `sum_weight`."""
    return math.ceil(factor * total * weight / sum_weight)


def bounded_cap(total: int, n_edges: int, factor: float) -> int:
    """The bounded-load cap of each of `n_edges` equal edges holding `total` viewers:
    ceil(factor * total / n_edges) with `factor` taken as `rational(factor)`. BoundedHash
    keeps every edge at or below it (for `total` counting the viewer being placed)."""
    return weighted_cap(total, Fraction(1), Fraction(n_edges), rational(factor))


class BoundedHash(_HashPolicy):
    """Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2016; HAProxy's
    hash-balance-factor): walk clockwise from the stream's point to the first edge that stays
    within ceil(factor * (viewers + 1) * w_i / sum_w) after taking the new viewer.

    The cap is computed on exact fractions (`weighted_cap`, `bounded_cap`): with factor >= 1
    the caps add up to at least the viewers plus one, so some edge always fits."""

    name = "bounded_hash"

    def __init__(self, factor: float = 1.25) -> None:
        super().__init__()
        self.factor = factor
        self._factor = rational(factor)

    def limit(self, edge: EdgeView, total_viewers: int, sum_weight: Fraction) -> int:
        """Most viewers `edge` may hold once the new viewer is counted (`sum_weight` is
        the sum of the edges' `rational` weights)."""
        return weighted_cap(total_viewers + 1, rational(edge.weight), sum_weight, self._factor)

    def choose(self, stream: str, edges: Sequence[EdgeView]) -> Choice | None:
        if not edges:
            return None
        if not all(math.isfinite(e.weight) and rational(e.weight) > 0 for e in edges):
            # Weights must be positive to share the limit; treat all as equal instead.
            edges = [replace(e, weight=1.0) for e in edges]
        by_id = {e.id: e for e in edges}
        total = sum(e.viewers for e in edges)
        sum_w = sum((rational(e.weight) for e in edges), Fraction(0))
        order = list(self.ring(edges).walk(stream))
        home = by_id[order[0]]
        home_limit = self.limit(home, total, sum_w)
        fits = (
            i
            for i, eid in enumerate(order)
            if by_id[eid].viewers + 1 <= self.limit(by_id[eid], total, sum_w)
        )
        steps = next(fits, -1)
        if steps >= 0:
            e = by_id[order[steps]]
        else:
            # Unreachable for factor >= 1 (the limits sum to more than the viewers);
            # kept so a viewer is never left without an edge.
            e = min(edges, key=lambda x: (x.viewers / self.limit(x, total, sum_w), x.id))
        lim = self.limit(e, total, sum_w)
        bound = f"limit {lim} = {self.factor:g} x average"
        if steps == 0:
            detail = f"{e.id} ({e.viewers} viewers, {bound}; {_holds(e, stream)})"
            return Choice(e, f"bounded_hash: {stream} hashes to {detail}")
        spill = "every edge at its limit, least full" if steps < 0 else f"spilled {steps} step(s)"
        return Choice(
            e,
            f"bounded_hash: {stream} hashes to {home.id} ({home.viewers} viewers, "
            f"at its limit {home_limit}), {spill} to {e.id} ({e.viewers} viewers, {bound}; {_holds(e, stream)})",
        )


# ---------------------------------------------------------------------- factory


def make_policy(name: str, *, hash_balance_factor: float = 1.25, seed: int | None = None) -> Policy:
    """A fresh policy by name (one of POLICIES); `seed` drives p2c's sampling and
    `hash_balance_factor` (>= 1) bounds bounded_hash's per-edge load."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}")
    if not (math.isfinite(hash_balance_factor) and hash_balance_factor >= 1.0):
        raise ValueError(
            f"hash_balance_factor must be a finite number >= 1, not {hash_balance_factor!r}"
        )
    if name == "round_robin":
        return RoundRobin()
    if name == "least_load":
        return LeastLoad()
    if name == "p2c":
        return PowerOfTwo(seed)
    if name == "consistent_hash":
        return ConsistentHash()
    return BoundedHash(hash_balance_factor)

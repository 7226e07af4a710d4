"""A crowd of simulated players: arrivals, a live progress line, a sampled timeline."""

from __future__ import annotations

import gc
import random
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import trio

from common.serve.gctune import tune_gc
from topology.players.hub import Hub
from topology.players.player import LIVE_STATES, PROTOCOLS, PlayerState, SimPlayer, Target
from topology.players.profiles import assign, parse_mix
from topology.players.qoe import QoeTally
from topology.players.report import pct
from topology.players.shard import WHOLE, Shard

ARRIVALS = ("ramp", "poisson", "flash")
COUNTED = (*(s.value for s in LIVE_STATES), "failures")
"""What each timeline sample counts: players in each live state, and failures so far."""


QOS_SECRET_ENV = "LIVECDN_QOS_SECRET"
"""Where `topology load` reads the secret its players sign class tokens with (not an
argument: a command line is visible to every user of the machine)."""

PLAY_SECRET_ENV = "LIVECDN_PLAY_SECRET"
"""Where `topology load` reads the secret its players sign play URLs with (a deployment
with a play_secret; not an argument, as QOS_SECRET_ENV)."""


@dataclass(frozen=True)
class LoadSpec:
    """How many players, for how long, arriving how, over which client links."""

    players: int
    duration: float
    protocol: str = "flv"
    arrival: str = "ramp"
    ramp_s: float = 10.0
    profiles: str = "lan"
    klass: str = ""
    start_s: float = 0.5
    resume_s: float = 1.0
    qos_secret: str = field(default="", repr=False)
    """Signs the players' class tokens (without it they ask ?class=, the default class)."""
    play_secret: str = field(default="", repr=False)
    """Signs the players' play URLs (a deployment that requires them)."""

    def check(self) -> None:
        """ValueError naming what is wrong."""
        if self.players < 1 or self.duration <= 0:
            raise ValueError("players must be >= 1 and duration > 0")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}")
        if self.arrival not in ARRIVALS:
            raise ValueError(f"arrival must be one of {', '.join(ARRIVALS)}")
        if self.ramp_s < 0:
            raise ValueError("ramp must be >= 0 s")
        if self.ramp_s >= self.duration and self.arrival != "flash":
            raise ValueError(
                f"ramp ({self.ramp_s:g} s) must be shorter than the duration "
                f"({self.duration:g} s), or some players would never start"
            )
        parse_mix(self.profiles)

    def fitted(self) -> tuple[LoadSpec, list[str]]:
        """This spec made runnable, and a line for each change: a ramp not shorter than
        the duration shortened to half of it; profile shares that do not add up to 1
        normalised (ValueError for a mix that cannot be read)."""
        spec, notes = self, []
        if self.arrival != "flash" and self.duration > 0 and self.ramp_s >= self.duration:
            spec = replace(spec, ramp_s=self.duration / 2)
            notes.append(f"note: the ramp ({self.ramp_s:g} s) is not shorter than the duration "
                         f"({self.duration:g} s): players arrive over {spec.ramp_s:g} s instead")  # fmt: skip
        mix = parse_mix(self.profiles)  # first: it names a bad share
        weights = [float(w) if w else 1.0 for _, _, w in
                   (part.strip().partition(":") for part in self.profiles.split(",") if part.strip())]  # fmt: skip
        if len(mix) > 1 and abs(sum(weights) - 1) > 1e-6:
            shares = ",".join(f"{p.name}:{w:.3g}" for p, w in mix)
            spec = replace(spec, profiles=shares)
            notes.append(f"note: the profile shares add up to {sum(weights):g}, not 1: "
                         f"normalised to {shares}")  # fmt: skip
        return spec, notes


def arrival_times(n: int, arrival: str, ramp_s: float, seed: int = 1) -> list[float]:
    """Seconds after the start at which each of `n` players arrives."""
    if arrival == "flash" or ramp_s == 0:
        return [0.0] * n
    if arrival == "ramp":
        return [i * ramp_s / n for i in range(n)]
    rng = random.Random(seed)
    rate = n / ramp_s
    out, t = [], 0.0
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


@dataclass
class Crowd:
    """Players of one load run (or of one share of it) and what was sampled while they
    played; `arrivals`: when each player arrives, seconds after the start."""

    spec: LoadSpec
    players: list[SimPlayer]
    arrivals: list[float]
    shard: Shard = WHOLE
    timeline: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    qoe: QoeTally = field(init=False)
    """The players' QoE totals, updated with each timeline sample and at the end."""
    interrupted: bool = False
    """Stopped before its end (`stop`, at Ctrl-C)."""
    _playing: trio.CancelScope = field(default_factory=trio.CancelScope, repr=False)

    def __post_init__(self) -> None:
        self.qoe = QoeTally(self.players)

    def stop(self) -> None:
        """End the run now: the players stop and `run_crowd` returns what ran."""
        self.interrupted = True
        self._playing.cancel()

    def counts(self, now: float) -> Counter[str]:
        return Counter(p.live_state(now) for p in self.players)


def make_crowd(target: Target, spec: LoadSpec, *, shard: Shard = WHOLE) -> Crowd:
    """The players of `spec`, or of its share `shard`: each with the id, profile
    (interleaved by their shares) and arrival time it has in the whole run."""
    ids = shard.ids(spec.players)
    profiles = assign(parse_mix(spec.profiles), spec.players)
    arrivals = arrival_times(spec.players, spec.arrival, spec.ramp_s)
    players = [
        SimPlayer(
            i,
            target,
            profiles[i],
            start_s=spec.start_s,
            resume_s=spec.resume_s,
            klass=spec.klass,
            qos_secret=spec.qos_secret,
            play_secret=spec.play_secret,
        )  # fmt: skip
        for i in ids
    ]
    return Crowd(spec, players, [arrivals[i] for i in ids], shard)


def progress_line(elapsed: float, duration: float, counts: Counter[str], total: int) -> str:
    """`[ 12s/60s] joined 480/2000  playing 470  stalled 3  joining 5  retrying 2
    failures 4` (failures: so far, of every player)."""
    joined = total - counts["waiting"]
    return (
        f"[{elapsed:4.0f}s/{duration:.0f}s] joined {joined}/{total}  playing {counts['playing']}"
        f"  stalled {counts['stalled']}  joining {counts['joining']}"
        f"  retrying {counts['retrying']}  failures {counts['failures']}"
    )


async def run_crowd(
    crowd: Crowd,
    *,
    progress: Callable[[str], None] | None = None,
    sample_every: float = 1.0,
) -> Crowd:
    """Start the players at their arrival times, sample every second, stop at the end."""
    spec = crowd.spec
    t0 = trio.current_time()
    until = t0 + spec.duration

    async def one(player: SimPlayer, at: float) -> None:
        await trio.sleep_until(t0 + at)
        await player.run(until, started=at)

    async def sample() -> None:
        seen = [0] * len(crowd.players)
        while True:
            await trio.sleep(sample_every)
            now = trio.current_time()
            counts = crowd.counts(now)
            counts["failures"] = sum(
                sum(1 for end in p.result.failures if end.failed) for p in crowd.players
            )
            fresh: list[float] = []
            for i, p in enumerate(crowd.players):
                lat = p.result.latency_s
                fresh += lat[seen[i] :]
                seen[i] = len(lat)
            edges = Counter(p.result.edge for p in crowd.players if p.live_state(now) in
                            (PlayerState.PLAYING, PlayerState.STALLED))  # fmt: skip
            crowd.timeline.append({
                "t": round(now - t0, 2),
                **{k: counts[k] for k in COUNTED},
                "latency_p50_s": pct(fresh, 50),
                "edges": dict(edges),
            })  # fmt: skip
            crowd.qoe.update(now)
            if progress is not None:
                progress(progress_line(now - t0, spec.duration, counts, len(crowd.players)))

    hub = Hub()
    for player in crowd.players:
        player.hub = hub
    thresholds = gc.get_threshold()
    tune_gc()  # the players exist: out of the collector's sight, and it runs less often
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            nursery.start_soon(hub.run)
            with crowd._playing:
                async with trio.open_nursery() as players:
                    for player, at in zip(crowd.players, crowd.arrivals, strict=True):
                        players.start_soon(one, player, at)
            nursery.cancel_scope.cancel()
    finally:
        gc.unfreeze()  # as it was (a process may run crowds one after another)
        gc.set_threshold(*thresholds)
    crowd.seconds = trio.current_time() - t0
    crowd.qoe.update(trio.current_time())
    return crowd


def stderr_progress() -> Callable[[str], None]:
    """Progress on stderr: one rewritten line on a terminal, a line per 5 s otherwise."""
    tty = sys.stderr.isatty()
    state = {"n": 0}

    def show(line: str) -> None:
        state["n"] += 1
        if tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif state["n"] % 5 == 1:
            print(line, file=sys.stderr, flush=True)

    return show

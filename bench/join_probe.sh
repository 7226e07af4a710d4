#!/usr/bin/env bash
# Whose time is a new viewer's first keyframe? One edge (pulling from an origin beside it) under
# the neutral load of ../shared/bench/players.py (N players, 2 processes, ramped over RAMP s),
# and meanwhile PROBES players in a process of their own that does nothing else, joining one
# by one through the ramp. Prints both groups' first keyframe and the edge's own
# livecdn_play_join_seconds (accept to first frames queued, as bucket bounds): a probe's
# first keyframe is the node's and the machine's share, the loaded players' also their own
# processes' (a join waits for them at each round trip: RTMP has five, HTTP-FLV two).
#   bench/join_probe.sh                 # RTMP, N = 2000, 100 probes
#   PROTO=flv N=1000 bench/join_probe.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PROTO="${PROTO:-rtmp}"
N="${N:-2000}"
PROBES="${PROBES:-100}"
RAMP="${RAMP:-8}"
source bench/lib.sh

origin_beside 29430 29431
"$PY" -m edge --host 127.0.0.1 --rtmp 29440 --http 29441 --parent rtmp://127.0.0.1:29430 \
  --log-level warning &
EDGE_PID=$!
trap 'kill $PUB_PID $EDGE_PID $ORIGIN_PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:29441/healthz && break; sleep 0.2; done
"$SHARED/publish.sh" rtmp://127.0.0.1:29430/live/test 2>/dev/null &
PUB_PID=$!
sleep 3
url=http://127.0.0.1:29441/live/test.flv
[ "$PROTO" = rtmp ] && url=rtmp://127.0.0.1:29440/live/test
python3 "$SHARED/players.py" "$url" -n "$N" -d 12 --ramp "$RAMP" --procs 2 --quiet \
  --json "$OUT/results/join-load-$STAMP.json" >/dev/null &
LOAD_PID=$!
sleep 1
python3 "$SHARED/players.py" "$url" -n "$PROBES" -d 4 --ramp "$((RAMP + 4))" --procs 1 --quiet \
  --json "$OUT/results/join-probe-$STAMP.json" >/dev/null
wait $LOAD_PID
curl -sf http://127.0.0.1:29441/metrics >"$OUT/results/join-metrics-$STAMP.txt"
"$PY" - "$PROTO" "$OUT/results" "$STAMP" <<'PY'
import json, sys
from prometheus_client.parser import text_string_to_metric_families

proto, where, stamp = sys.argv[1:]
print(f"{proto}: first keyframe ms from each player's start (TCP connect included)")
for what in ("load", "probe"):
    s = json.load(open(f"{where}/join-{what}-{stamp}.json"))
    kf = s["first_kf_ms"]
    print(f"  {what:6} {s['players']:5} players  p50 {kf['p50']:6.1f}  p95 {kf['p95']:6.1f}  "
          f"p99 {kf['p99']:6.1f}  (player tool CPU {s['tool_cpu_pct']:.0f} %)")
text = open(f"{where}/join-metrics-{stamp}.txt").read()
rows = [
    (float(s.labels["le"]), s.value)
    for fam in text_string_to_metric_families(text)
    for s in fam.samples
    if s.name == "livecdn_play_join_seconds_bucket" and s.labels.get("protocol") == proto
]
total = rows[-1][1] if rows else 0
def upto(q: float) -> str:
    bound = next(le for le, n in rows if n >= q * total)
    return f"<= {bound * 1000:g} ms"
if total:
    print(f"  the edge's own join (accept to first frames), {total:.0f} joins: "
          f"p50 {upto(0.5)}, p95 {upto(0.95)}, p99 {upto(0.99)}")
PY

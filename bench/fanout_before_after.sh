#!/usr/bin/env bash
# Did a change slow the fan-out? One edge of this tree and one of REV (a git worktree), each
# pulling from the same origin, under the same neutral load (../shared/bench/players.py),
# HTTP-FLV then RTMP, the two trees one after the other for each protocol; prints the table.
#   bench/fanout_before_after.sh REV            # N = 2000, 2 player processes, 20 s per point
#   NS=500 DURATION=10 bench/fanout_before_after.sh HEAD~3
# On a shared machine the neutral harness waits (up to MAX_WAIT s, default 30) for the load
# average to fall below MAX_LOAD (0.7) before each point; both trees meet the same load.
# PROTOS="flv" measures HTTP-FLV only; AFTER_ARGS="--batch-ms 80" gives this tree's edge flags.
set -euo pipefail
cd "$(dirname "$0")/.."
REV="${1:?usage: bench/fanout_before_after.sh REV}"
NS="${NS:-2000}"
PROCS="${PROCS:-2000:2}"
export SHARED_BENCH="${SHARED_BENCH:-$(cd ../shared/bench && pwd)}"
source bench/lib.sh
ours() {
  python3 "$SHARED/compare.py" custom --name "$1" --server-cmd "$2" \
    --publish-url "$3" --play-url "$4" --max-load "${MAX_LOAD:-0.7}" --max-wait "${MAX_WAIT:-30}" \
    --ns "$NS" --duration "$DURATION" --procs "$PROCS" --out "$OUT/results/$1-$STAMP.json"
}
HERE="$(pwd)"
BEFORE="$(mktemp -d)/before"
git worktree add -q --detach "$BEFORE" "$REV"
trap 'kill $ORIGIN_PID 2>/dev/null || true; git -C "$HERE" worktree remove --force "$BEFORE"' EXIT
origin_beside 29410 29411
trap 'kill $ORIGIN_PID 2>/dev/null || true; git -C "$HERE" worktree remove --force "$BEFORE"' EXIT
EDGE="$PY -m edge --host 127.0.0.1 --rtmp 29420 --http 29421 --parent rtmp://127.0.0.1:29410 --log-level warning"
for proto in ${PROTOS:-flv rtmp}; do
  play=http://127.0.0.1:29421/live/test.flv
  [ "$proto" = rtmp ] && play=rtmp://127.0.0.1:29420/live/test
  (cd "$BEFORE" && ours "edge-$proto-before" "$EDGE" rtmp://127.0.0.1:29410/live/test "$play")
  ours "edge-$proto-after" "$EDGE ${AFTER_ARGS:-}" rtmp://127.0.0.1:29410/live/test "$play"
done
report
# per viewer: CPU per 1000 viewers, RSS above the idle edge (stream pulled, no viewers)
"$PY" - "$OUT"/results/edge-*-"$STAMP".json <<'PY'
import json, sys
print(f"{'run':<18} {'cpu%/1000':>9} {'KB/viewer':>9} {'kf p50':>7} {'kf p95':>7} {'kept%':>6} {'load':>5}")
for path in sorted(sys.argv[1:]):
    for r in json.load(open(path))["runs"]:
        n, s, kf = r["n"], r["server"], r["summary"]["first_kf_ms"]
        per = (s["rss_mb_end"] - r["server_idle_before"]["rss_mb_end"]) * 1024 / n
        name = path.rsplit("/", 1)[-1].rsplit("-", 2)[0]
        print(f"{name:<18} {s['cpu_pct'] * 1000 / n:9.1f} {per:9.1f} {kf['p50']:7.1f} "
              f"{kf['p95']:7.1f} {100 * r['summary']['kept_up_frac']:6.1f} {r['load_before']:5.2f}")
PY

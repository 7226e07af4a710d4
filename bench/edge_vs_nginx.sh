#!/usr/bin/env bash
# Reproduce the edge fan-out table: one edge process (pulling from an origin running beside
# it) under the neutral load of ../shared/bench/players.py, HTTP-FLV and RTMP, then
# nginx-rtmp (RTMP, 1 worker) under the same load, one after the other on this machine.
# Only the edge's process is measured (the origin serves it one upstream).
# Needs ./livecdn setup; for the reference apt-get install -y nginx libnginx-mod-rtmp.
#   bench/edge_vs_nginx.sh              # N = 500,1000,2000, 20 s per point
#   NS=100 DURATION=10 bench/edge_vs_nginx.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SHARED_BENCH:-../shared/bench}"
OUT="${BENCH_OUT:-/tmp/bench}"
NS="${NS:-500,1000,2000}"
DURATION="${DURATION:-20}"
PROCS="${PROCS:-1000:2,2000:2}"
PY="$(pwd)/.venv/bin/python"
STAMP="$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/results"
export BENCH_OUT="$OUT"

"$PY" -m origin --host 127.0.0.1 --rtmp 29410 --http 29411 --log-level warning &
ORIGIN=$!
trap 'kill $ORIGIN 2>/dev/null || true' EXIT
sleep 1

edge() {  # $1 = flv|rtmp
  local play
  if [ "$1" = flv ]; then play="http://127.0.0.1:29421/live/test.flv"; else play="rtmp://127.0.0.1:29420/live/test"; fi
  python3 "$SHARED/compare.py" custom --name "livecdn-edge-$1" \
    --server-cmd "$PY -m edge --host 127.0.0.1 --rtmp 29420 --http 29421 --parent rtmp://127.0.0.1:29410 --log-level warning" \
    --publish-url rtmp://127.0.0.1:29410/live/test --play-url "$play" \
    --ns "$NS" --duration "$DURATION" --procs "$PROCS" --out "$OUT/results/edge-$1-$STAMP.json"
}

edge flv
edge rtmp
python3 "$SHARED/compare.py" nginx-rtmp --proto rtmp --workers 1 \
  --ns "$NS" --duration "$DURATION" --procs "$PROCS" --out "$OUT/results/nginx-rtmp-edge-$STAMP.json"
python3 "$SHARED/report.py" "$OUT"/results/*-"$STAMP".json
"$PY" bench/edge_delay.py --seconds 20

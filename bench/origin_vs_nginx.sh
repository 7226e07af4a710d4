#!/usr/bin/env bash
# Reproduce the origin performance table: our origin (HTTP-FLV and RTMP play) and nginx-rtmp
# (RTMP, 1 worker) under the same neutral load (../shared/bench/players.py), one after the
# other in one run on this machine.  Needs: ./livecdn setup, and Debian nginx +
# libnginx-mod-rtmp for the reference (apt-get install -y nginx libnginx-mod-rtmp).
#   bench/origin_vs_nginx.sh            # N = 500,1000,2000, 20 s per point
#   NS=100,300 DURATION=10 bench/origin_vs_nginx.sh
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

ours() {  # $1 = flv|rtmp
  local play
  if [ "$1" = flv ]; then play="http://127.0.0.1:29401/live/test.flv"; else play="rtmp://127.0.0.1:29400/live/test"; fi
  python3 "$SHARED/compare.py" custom --name "livecdn-origin-$1" \
    --server-cmd "$PY -m origin --host 127.0.0.1 --rtmp 29400 --http 29401 --log-level warning" \
    --publish-url rtmp://127.0.0.1:29400/live/test --play-url "$play" \
    --ns "$NS" --duration "$DURATION" --procs "$PROCS" --out "$OUT/results/origin-$1-$STAMP.json"
}

ours flv
ours rtmp
python3 "$SHARED/compare.py" nginx-rtmp --proto rtmp --workers 1 \
  --ns "$NS" --duration "$DURATION" --procs "$PROCS" --out "$OUT/results/nginx-rtmp-$STAMP.json"
python3 "$SHARED/report.py" "$OUT"/results/*-"$STAMP".json

#!/usr/bin/env bash
# Reproduce the HLS table: HLS players through one edge (its process measured; the origin
# beside it packages) and nginx-rtmp's HLS served by nginx, same load, one run.
# Needs ./livecdn setup; for the reference apt-get install -y nginx libnginx-mod-rtmp.
#   bench/hls_vs_nginx.sh               # N = 500,2000, 20 s per point
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SHARED_BENCH:-../shared/bench}"
OUT="${BENCH_OUT:-/tmp/bench}"
NS="${NS:-500,2000}"
DURATION="${DURATION:-20}"
PROCS="${PROCS:-2000:2}"
PY="$(pwd)/.venv/bin/python"
STAMP="$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/results"
export BENCH_OUT="$OUT"

"$PY" -m origin --host 127.0.0.1 --rtmp 29440 --http 29441 --log-level warning &
ORIGIN=$!
trap 'kill $ORIGIN 2>/dev/null || true' EXIT
sleep 1

python3 "$SHARED/compare.py" custom --name livecdn-edge-hls \
  --server-cmd "$PY -m edge --host 127.0.0.1 --rtmp 29450 --http 29451 --parent http://127.0.0.1:29441 --log-level warning" \
  --publish-url rtmp://127.0.0.1:29440/live/test --play-url http://127.0.0.1:29451/live/test.m3u8 \
  --ns "$NS" --duration "$DURATION" --procs "$PROCS" --out "$OUT/results/edge-hls-$STAMP.json"
python3 "$SHARED/compare.py" nginx-rtmp --proto hls --workers 1 \
  --ns "$NS" --duration "$DURATION" --procs "$PROCS" --out "$OUT/results/nginx-hls-$STAMP.json"
python3 "$SHARED/report.py" "$OUT"/results/*-"$STAMP".json

#!/usr/bin/env bash
# The same simulated players (python -m topology load --url) against our origin and against
# nginx-rtmp, side by side in one run: RTMP, HTTP-FLV (ours only) and HLS. Same built-in
# publisher (640x360 30 fps, 1.5 Mbit/s, 2 s GOP) into each server.
# Needs ./livecdn setup and apt-get install -y nginx libnginx-mod-rtmp.
#   bench/load_vs_nginx.sh                       # N=500 players, 30 s per run
#   N=2000 PROCS=2 DURATION=60 bench/load_vs_nginx.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$(pwd)/.venv/bin/python"
N="${N:-500}"
PROCS="${PROCS:-1}"
DURATION="${DURATION:-30}"
OUT="${BENCH_OUT:-/tmp/bench}/load-$(date +%Y%m%d-%H%M%S)"
SHARED="${SHARED_BENCH:-../shared/bench}"
mkdir -p "$OUT" /tmp/nginx-bench/hls /tmp/nginx-bench/sock
chmod 1777 /tmp/nginx-bench/hls /tmp/nginx-bench/sock
rm -f /tmp/nginx-bench/hls/*

PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
"$PY" -m origin --host 127.0.0.1 --rtmp 29460 --http 29461 --clock-stamps --log-level warning &
PIDS+=($!)
nginx -c "$(realpath "$SHARED/peers/nginx-rtmp.conf")" -p /tmp/nginx-bench &
PIDS+=($!)
sleep 1
"$PY" -m topology publish rtmp://127.0.0.1:29460/live/demo 2>/dev/null &
PIDS+=($!)
"$PY" -m topology publish rtmp://127.0.0.1:29350/live/demo 2>/dev/null &
PIDS+=($!)
sleep 8  # a few GOPs, and nginx's first HLS fragments

run() {  # LABEL URL
  echo "== $1: $2 ($N players, $DURATION s)"
  "$PY" -m topology load --url "$2" --players "$N" --duration "$DURATION" --ramp 5 \
    --procs "$PROCS" --out "$OUT/$1" 2>/dev/null
  echo
}
run livecdn-rtmp rtmp://127.0.0.1:29460/live/demo
run nginx-rtmp rtmp://127.0.0.1:29350/live/demo
run livecdn-flv http://127.0.0.1:29461/live/demo.flv
run livecdn-hls http://127.0.0.1:29461/live/demo.m3u8
run nginx-hls http://127.0.0.1:29380/hls/demo.m3u8
echo "results: $OUT"

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

ORIGIN_PID=${PIDS[0]}
NGINX_PID=${PIDS[1]}
ticks() {  # CPU ticks (user+system) of a process and its children
  local total=0 p
  for p in "$1" $(pgrep -P "$1"); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}
run() {  # LABEL SERVER_PID URL
  echo "== $1: $3 ($N players, $DURATION s)"
  local t0 s0
  t0=$(ticks "$2"); s0=$(date +%s.%N)
  "$PY" -m topology load --url "$3" --players "$N" --duration "$DURATION" --ramp 5 \
    --procs "$PROCS" --out "$OUT/$1" 2>/dev/null
  python3 -c "import sys; t, s = float(sys.argv[1]), float(sys.argv[2]); \
print(f'  server CPU       {t / $(getconf CLK_TCK) / s * 100:.1f} % of one core (whole run)')" \
    "$(( $(ticks "$2") - t0 ))" "$(python3 -c "import time; print(time.time() - $s0)")"
  echo
}
run livecdn-rtmp "$ORIGIN_PID" rtmp://127.0.0.1:29460/live/demo
run nginx-rtmp "$NGINX_PID" rtmp://127.0.0.1:29350/live/demo
run livecdn-flv "$ORIGIN_PID" http://127.0.0.1:29461/live/demo.flv
run livecdn-hls "$ORIGIN_PID" http://127.0.0.1:29461/live/demo.m3u8
run nginx-hls "$NGINX_PID" http://127.0.0.1:29380/hls/demo.m3u8
echo "results: $OUT"

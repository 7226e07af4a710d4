#!/usr/bin/env bash
# Edge CPU for HLS players: an edge packaging HLS itself from its RTMP upstream (hls_mode
# package) against an edge caching the origin's HLS (hls_mode cache), same stream, one run.
# Both edges are warm (their playlists polled once a second from the start) before the
# players come, so both playlists hold a full window; the edges' processes are measured one
# after the other, the origin beside them is not.
#   bench/hls_edge_modes.sh             # N = 2000, 20 s per point
#   MAX_LOAD=50 bench/hls_edge_modes.sh # on a busy machine: do not wait for a quiet one
set -euo pipefail
cd "$(dirname "$0")/.."
NS="${NS:-2000}"
PROCS="${PROCS:-2000:2}"
MAX_LOAD="${MAX_LOAD:-0.7}"
WARM="${WARM:-20}"
source bench/lib.sh

PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
"$PY" -m origin --host 127.0.0.1 --rtmp 29580 --http 29581 --log-level warning &
PIDS+=($!)
sleep 1
"$SHARED/publish.sh" rtmp://127.0.0.1:29580/live/test 2>/dev/null &
PIDS+=($!)

# edge HTTP_PORT ARGS...: an edge in the background, its playlist polled once a second
edge() {
  local http=$1
  shift
  "$PY" -m edge --host 127.0.0.1 --rtmp $((http - 1)) --http "$http" "$@" --log-level warning &
  EDGE_PID=$!
  PIDS+=("$EDGE_PID")
  (while sleep 1; do curl -s -o /dev/null "http://127.0.0.1:$http/live/test.m3u8" || true; done) &
  PIDS+=($!)
}

# measure NAME HTTP_PORT PID: sweep the running edge with compare.py custom
measure() {
  python3 "$SHARED/compare.py" custom --name "$1" --attach-pid "$3" --no-publish \
    --play-url "http://127.0.0.1:$2/live/test.m3u8" --proto hls --ns "$NS" \
    --duration "$DURATION" --procs "$PROCS" --max-load "$MAX_LOAD" \
    --out "$OUT/results/$1-$STAMP.json"
}

edge 29583 --parent rtmp://127.0.0.1:29580 --hls-mode package
PACKAGE_PID=$EDGE_PID
edge 29585 --parent http://127.0.0.1:29581 --hls-mode cache
CACHE_PID=$EDGE_PID
sleep "$WARM"
measure livecdn-edge-hls-package 29583 "$PACKAGE_PID"
measure livecdn-edge-hls-cache 29585 "$CACHE_PID"
report

#!/usr/bin/env bash
# Reproduce the HLS table: HLS players through one edge (its process measured; the origin
# beside it packages) and nginx-rtmp's HLS served by nginx, same load, one run.
# Needs ./livecdn setup; for the reference apt-get install -y nginx libnginx-mod-rtmp.
#   bench/hls_vs_nginx.sh               # N = 500,2000, 20 s per point
set -euo pipefail
cd "$(dirname "$0")/.."
NS="${NS:-500,2000}"
PROCS="${PROCS:-2000:2}"
source bench/lib.sh

origin_beside 29440 29441

EDGE="$PY -m edge --host 127.0.0.1 --rtmp 29450 --http 29451 --parent http://127.0.0.1:29441 --log-level warning"
ours livecdn-edge-hls "$EDGE" rtmp://127.0.0.1:29440/live/test http://127.0.0.1:29451/live/test.m3u8
nginx_rtmp hls
report

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
NS="${NS:-500,1000,2000}"
PROCS="${PROCS:-1000:2,2000:2}"
source bench/lib.sh

origin_beside 29410 29411

EDGE="$PY -m edge --host 127.0.0.1 --rtmp 29420 --http 29421 --parent rtmp://127.0.0.1:29410 --log-level warning"
ours livecdn-edge-flv "$EDGE" rtmp://127.0.0.1:29410/live/test http://127.0.0.1:29421/live/test.flv
ours livecdn-edge-rtmp "$EDGE" rtmp://127.0.0.1:29410/live/test rtmp://127.0.0.1:29420/live/test
nginx_rtmp rtmp
report
"$PY" bench/edge_delay.py --seconds 20

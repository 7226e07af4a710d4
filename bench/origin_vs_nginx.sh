#!/usr/bin/env bash
# Reproduce the origin performance table: our origin (HTTP-FLV and RTMP play) and nginx-rtmp
# (RTMP, 1 worker) under the same neutral load (../shared/bench/players.py), one after the
# other in one run on this machine.  Needs: ./livecdn setup, and Debian nginx +
# libnginx-mod-rtmp for the reference (apt-get install -y nginx libnginx-mod-rtmp).
#   bench/origin_vs_nginx.sh            # N = 500,1000,2000, 20 s per point
#   NS=100,300 DURATION=10 bench/origin_vs_nginx.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NS="${NS:-500,1000,2000}"
PROCS="${PROCS:-1000:2,2000:2}"
source bench/lib.sh

ORIGIN="$PY -m origin --host 127.0.0.1 --rtmp 29400 --http 29401 --log-level warning"
ours livecdn-origin-flv "$ORIGIN" rtmp://127.0.0.1:29400/live/test http://127.0.0.1:29401/live/test.flv
ours livecdn-origin-rtmp "$ORIGIN" rtmp://127.0.0.1:29400/live/test rtmp://127.0.0.1:29400/live/test
nginx_rtmp rtmp
report

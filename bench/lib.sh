# Shared by the bench/*.sh scripts: settings (overridable by the environment) and runners.
# shellcheck shell=bash
SHARED="${SHARED_BENCH:-../shared/bench}"
OUT="${BENCH_OUT:-/tmp/bench}"
DURATION="${DURATION:-20}"
# The harness waits before each point for the load average to fall below MAX_LOAD, at most
# MAX_WAIT seconds (a shared machine may never get that quiet).
MAX_LOAD="${MAX_LOAD:-0.7}"
MAX_WAIT="${MAX_WAIT:-60}"
PY="$(pwd)/.venv/bin/python"
STAMP="$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/results"
export BENCH_OUT="$OUT"

# ours NAME SERVER_CMD PUBLISH_URL PLAY_URL: sweep one of our servers with compare.py custom
ours() {
  python3 "$SHARED/compare.py" custom --name "$1" --server-cmd "$2" \
    --publish-url "$3" --play-url "$4" \
    --ns "$NS" --duration "$DURATION" --procs "$PROCS" --max-load "$MAX_LOAD" --max-wait "$MAX_WAIT" \
    --out "$OUT/results/$1-$STAMP.json"
}

# nginx PROTO: the same sweep against nginx-rtmp (1 worker)
nginx_rtmp() {
  python3 "$SHARED/compare.py" nginx-rtmp --proto "$1" --workers 1 \
    --ns "$NS" --duration "$DURATION" --procs "$PROCS" --max-load "$MAX_LOAD" --max-wait "$MAX_WAIT" \
    --out "$OUT/results/nginx-$1-$STAMP.json"
}

# origin_beside RTMP_PORT HTTP_PORT: an origin in the background, stopped when the script exits
origin_beside() {
  "$PY" -m origin --host 127.0.0.1 --rtmp "$1" --http "$2" --log-level warning &
  ORIGIN_PID=$!
  trap 'kill $ORIGIN_PID 2>/dev/null || true' EXIT
  sleep 1
}

report() {
  python3 "$SHARED/report.py" "$OUT"/results/*-"$STAMP".json
}

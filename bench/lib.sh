# Shared by the bench/*.sh scripts: settings (overridable by the environment) and runners.
# shellcheck shell=bash
SHARED="${SHARED_BENCH:-../shared/bench}"
OUT="${BENCH_OUT:-/tmp/bench}"
DURATION="${DURATION:-20}"
PY="$(pwd)/.venv/bin/python"
STAMP="$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/results"
export BENCH_OUT="$OUT"

# ours NAME SERVER_CMD PUBLISH_URL PLAY_URL: sweep one of our servers with compare.py custom
ours() {
  python3 "$SHARED/compare.py" custom --name "$1" --server-cmd "$2" \
    --publish-url "$3" --play-url "$4" \
    --ns "$NS" --duration "$DURATION" --procs "$PROCS" --out "$OUT/results/$1-$STAMP.json"
}

# nginx PROTO: the same sweep against nginx-rtmp (1 worker)
nginx_rtmp() {
  python3 "$SHARED/compare.py" nginx-rtmp --proto "$1" --workers 1 \
    --ns "$NS" --duration "$DURATION" --procs "$PROCS" --out "$OUT/results/nginx-$1-$STAMP.json"
}

report() {
  python3 "$SHARED/report.py" "$OUT"/results/*-"$STAMP".json
}

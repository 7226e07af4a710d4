#!/usr/bin/env bash
# Origin HLS serving, this tree against REV (a git worktree): HLS players straight at an
# origin that packages the stream itself, the same neutral load (../shared/bench/players.py,
# keep-alive playlist polls and segment fetches) for each tree, one after the other; prints
# the table and the CPU ratio after/before.
#   bench/hls_origin_before_after.sh REV            # N = 2000, 2 player processes, 20 s
#   NS=1000 DURATION=15 bench/hls_origin_before_after.sh HEAD~1
#   NGINX=1 bench/hls_origin_before_after.sh REV  # and nginx-rtmp's HLS, same load, same run
# On a shared machine the neutral harness waits (up to MAX_WAIT s, default 30) for the load
# average to fall below MAX_LOAD (0.7) before each point; both trees meet the same load.
set -euo pipefail
cd "$(dirname "$0")/.."
REV="${1:?usage: bench/hls_origin_before_after.sh REV}"
NS="${NS:-2000}"
PROCS="${PROCS:-2000:2}"
export SHARED_BENCH="${SHARED_BENCH:-$(cd ../shared/bench && pwd)}"
source bench/lib.sh
ours() {
  python3 "$SHARED/compare.py" custom --name "$1" --server-cmd "$2" \
    --publish-url rtmp://127.0.0.1:29600/live/test --play-url http://127.0.0.1:29601/live/test.m3u8 \
    --max-load "${MAX_LOAD:-0.7}" --max-wait "${MAX_WAIT:-30}" \
    --ns "$NS" --duration "$DURATION" --procs "$PROCS" --out "$OUT/results/$1-$STAMP.json"
}
HERE="$(pwd)"
BEFORE="$(mktemp -d)/before"
git worktree add -q --detach "$BEFORE" "$REV"
trap 'git -C "$HERE" worktree remove --force "$BEFORE"' EXIT
ORIGIN="$PY -m origin --host 127.0.0.1 --rtmp 29600 --http 29601 --log-level warning"
(cd "$BEFORE" && ours origin-hls-before "$ORIGIN")
ours origin-hls-after "$ORIGIN"
[ -n "${NGINX:-}" ] && nginx_rtmp hls
report
"$PY" - "$OUT"/results/*hls-*"$STAMP".json <<'PY'
import json, sys
rows = {}
for path in sorted(sys.argv[1:]):
    name = path.rsplit("/", 1)[-1].rsplit("-", 2)[0]
    for r in json.load(open(path))["runs"]:
        rows.setdefault(r["n"], {})[name] = r["server"]["cpu_pct"]
for n, cpu in sorted(rows.items()):
    b, a = cpu.get("origin-hls-before"), cpu.get("origin-hls-after")
    if a is not None and b:
        print(f"N={n}: origin HLS CPU before {b:.1f} %, after {a:.1f} % of a core: {a / b:.2f}x")
    if a is not None and (ng := cpu.get("nginx-hls")):
        print(f"N={n}: nginx-rtmp HLS {ng:.1f} %: the origin after is {a / ng:.2f}x nginx")
PY

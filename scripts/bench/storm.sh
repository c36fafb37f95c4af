#!/bin/bash
# storm.sh: the connection storm of BRIEF.md section 3 against the stack of
# scripts/stack.sh (nginx in front of the broker): N WebSocket connections
# at concurrency C, plain and TLS, and the broker alone for reference.
#
#   scripts/bench/storm.sh [N] [C]        defaults 10000 100
#
# Starts its own stack on free ports in a temporary STACK_DIR and stops it at
# the end. Results (one JSON file per run) go to $OUT (default
# var/bench/storm-<time>/), and a table to stdout. Needs build/broker and
# build/loadgen (make) and node >= 20.
#
# Runs:
#   broker-loadgen  build/loadgen straight to the broker: the reference
#   nginx-loadgen   build/loadgen through nginx, plain
#   nginx-plain     storm.mjs through nginx, plain (connect, upgrade, subscribe, ack, close)
#   nginx-tls       storm.mjs through nginx, TLS, a full handshake each
#   nginx-tls-resume  the same, resuming the previous TLS session
#   nginx-tls-hold  TLS, all N held open at once: nginx's memory then
# loadgen holds its connections; storm.mjs closes each after its ack (as
# Thor did) except in the -hold run.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
N=${1:-10000}
C=${2:-100}
OUT=${OUT:-var/bench/storm-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
STACK_DIR=$(mktemp -d /tmp/broker-storm-XXXXXX)
export STACK_DIR
export STACK_REDIS_PORT=$(free_port) STACK_BROKER_PORT=$(free_port)
export STACK_HTTPS_PORT=$(free_port) STACK_HTTP_PORT=$(free_port)
cleanup() {
    scripts/stack.sh stop >/dev/null 2>&1 || true
    rm -rf "$STACK_DIR"
}
trap cleanup EXIT
scripts/stack.sh start >/dev/null

nginx_rss_kb() {
    local pid total=0 p
    pid=$(cat "$STACK_DIR/nginx/logs/nginx.pid")
    for p in $pid $(pgrep -P "$pid"); do
        total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status")))
    done
    echo $total
}

settle() { sleep 3; }  # let TIME_WAIT and the previous run's closes drain

echo "storm: $N connections, concurrency $C; results in $OUT" >&2
build/loadgen --url "ws://127.0.0.1:$STACK_BROKER_PORT/ws" -n "$N" -c "$C" -k 100 --prefix storm \
    --duration 1 -q --json "$OUT/broker-loadgen.json"
settle
build/loadgen --url "ws://127.0.0.1:$STACK_HTTP_PORT/ws" -n "$N" -c "$C" -k 100 --prefix storm \
    --duration 1 -q --json "$OUT/nginx-loadgen.json"
settle
node scripts/bench/storm.mjs --url "ws://127.0.0.1:$STACK_HTTP_PORT/ws" -n "$N" -c "$C" --json "$OUT/nginx-plain.json"
settle
node scripts/bench/storm.mjs --url "wss://127.0.0.1:$STACK_HTTPS_PORT/ws" -n "$N" -c "$C" --json "$OUT/nginx-tls.json"
settle
node scripts/bench/storm.mjs --url "wss://127.0.0.1:$STACK_HTTPS_PORT/ws" -n "$N" -c "$C" --resume \
    --json "$OUT/nginx-tls-resume.json"
settle
idle_kb=$(nginx_rss_kb)
node scripts/bench/storm.mjs --url "wss://127.0.0.1:$STACK_HTTPS_PORT/ws" -n "$N" -c "$C" --hold --linger 4 \
    --json "$OUT/nginx-tls-hold.json" &
storm=$!
peak_kb=$idle_kb
while kill -0 $storm 2>/dev/null; do
    kb=$(nginx_rss_kb)
    [ "$kb" -gt "$peak_kb" ] && peak_kb=$kb
    sleep 0.5
done
wait $storm
echo "{\"nginx_rss_idle_kb\": $idle_kb, \"nginx_rss_peak_kb\": $peak_kb}" > "$OUT/nginx-memory.json"

/usr/bin/python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
print("%-18s %7s %6s %10s %10s %10s %10s %9s" % ("run", "ok", "fail", "upg mean", "upg p99", "rdy mean", "rdy p99", "total s"))
for name in ("broker-loadgen", "nginx-loadgen", "nginx-plain", "nginx-tls", "nginx-tls-resume", "nginx-tls-hold"):
    d = json.load(open(os.path.join(out, name + ".json")))
    if d.get("tool") == "loadgen":
        h = d["handshake"]
        row = (d["connections"]["opened"], d["connections"]["failed"], h["upgrade"], h["ready"], h["all_connected_s"])
    else:
        row = (d["ok"], d["failed"], d["upgrade"], d["ready"], d["total_s"])
    ok, fail, up, rd, total = row
    print("%-18s %7d %6d %8.2fms %8.2fms %8.2fms %8.2fms %9.3f" % (
        name, ok, fail, up["mean_ms"], up["p99_ms"], rd["mean_ms"], rd["p99_ms"], total))
m = json.load(open(os.path.join(out, "nginx-memory.json")))
print("nginx RSS (master + workers): %.1f MB idle, %.1f MB peak with the TLS connections held"
      % (m["nginx_rss_idle_kb"] / 1024, m["nginx_rss_peak_kb"] / 1024))
EOF

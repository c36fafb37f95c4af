#!/bin/sh
# run.sh (`make run`): a local demo. Starts redis-server on 127.0.0.1:6379
# when nothing answers there, then the broker in the foreground with
# broker.conf.example. Ctrl-C stops the broker, and the redis-server this
# script started.
set -eu
cd "$(dirname "$0")/.."

EXAMPLE=${CONF:-broker.conf.example}
BROKER=${BROKER:-build/broker}
STATE=var/run
REDIS_PID=""

mkdir -p "$STATE"
cleanup() {
    if [ -n "$REDIS_PID" ]; then
        kill "$REDIS_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "run: using the redis-server already answering on 127.0.0.1:6379"
else
    echo "run: starting redis-server on 127.0.0.1:6379 (log: $STATE/redis.log)"
    redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no \
        --logfile "$PWD/$STATE/redis.log" --dir "$PWD/$STATE" &
    REDIS_PID=$!
    i=0
    until redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -gt 50 ]; then
            echo "run: redis-server did not start; see $STATE/redis.log" >&2
            exit 1
        fi
        sleep 0.1
    done
fi

# The example configuration, with the demo page served at /.
CONF=$STATE/broker.conf
sed "s#^static_dir\$#static_dir $PWD/protocol/demo#" "$EXAMPLE" > "$CONF"

listen=$(sed -n 's/^listen[ \t]\{1,\}//p' "$CONF" | tail -n 1)
path=$(sed -n 's/^ws_path[ \t]\{1,\}//p' "$CONF" | tail -n 1)
listen=${listen:-127.0.0.1:8080}
path=${path:-/ws}

cat <<MSG

  Demo page:           http://$listen/
  WebSocket endpoint:  ws://$listen$path
  Subscribe by URL:    ws://$listen$path?channels=demo
  or send a frame:     {"action":"subscribe","channel":"demo","rid":1}
  Try it:              /usr/bin/python3 -m websockets 'ws://$listen$path?channels=demo'
  Publish:             redis-cli -p 6379 PUBLISH demo "{\"ts\":\$(date +%s%3N),\"hello\":\"world\"}"
  Health:              curl http://$listen/healthz

  Ctrl-C stops the broker.

MSG
"$BROKER" -c "$CONF"

#!/bin/sh
# upstream-health.sh: active health checks for nginx in front of several
# broker nodes (open-source nginx has only passive ones, max_fails).
#
#   scripts/upstream-health.sh [-i SECONDS] [-o FILE] [-r RELOAD-CMD] HOST:PORT...
#
# Every SECONDS (default 2) it asks GET /healthz of each broker node and
# writes FILE (default upstream.conf), the `server` lines of nginx's
# upstream block: healthy nodes as they are, failing ones marked `down`, so
# new clients go only to nodes whose Redis link is up (least_conn spreads
# them). When the file changes it runs RELOAD-CMD (default `nginx -s reload`;
# give the -p/-c your nginx runs with). Existing WebSocket connections are
# untouched by a reload: nginx's old workers keep them until they close.
# With -1 it checks once, writes, and exits (for scripts and tests).
set -eu

interval=2
out=upstream.conf
reload="nginx -s reload"
once=0
while getopts "i:o:r:1" opt; do
    case $opt in
    i) interval=$OPTARG ;;
    o) out=$OPTARG ;;
    r) reload=$OPTARG ;;
    1) once=1 ;;
    *) sed -n '2,16p' "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "upstream-health.sh: name at least one HOST:PORT" >&2; exit 2; }

check() {
    tmp=$out.tmp.$$
    : > "$tmp"
    up=0
    for node in "$@"; do
        if curl -fsS -m 1 -o /dev/null "http://$node/healthz" 2>/dev/null; then
            echo "server $node max_fails=3 fail_timeout=5s;" >> "$tmp"
            up=$((up + 1))
        else
            echo "server $node down;" >> "$tmp"
        fi
    done
    # nginx refuses an upstream whose servers are all down: keep them all
    # then, so that clients at least get the broker's own 503s.
    if [ $up -eq 0 ]; then
        sed -i 's/ down;$/ max_fails=3 fail_timeout=5s;/' "$tmp"
    fi
    if [ -f "$out" ] && cmp -s "$tmp" "$out"; then
        rm -f "$tmp"
        return 0
    fi
    mv "$tmp" "$out"
    echo "upstream-health.sh: $up of $# nodes healthy; $out rewritten" >&2
    [ $once -eq 1 ] || sh -c "$reload" || echo "upstream-health.sh: reload failed" >&2
}

while :; do
    check "$@"
    [ $once -eq 1 ] && exit 0
    sleep "$interval"
done

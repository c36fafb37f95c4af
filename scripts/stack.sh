#!/bin/bash
# stack.sh: the production topology on loopback, from Debian packages, without
# Docker: redis-server, the broker (build/broker) and nginx terminating TLS
# in front of it with docker/nginx.conf, the same file docker-compose uses.
#
#   scripts/stack.sh start           start what is not running, wait until it
#                                    answers, print the URLs (one per line)
#   scripts/stack.sh stop            stop what start started (by pid files)
#   scripts/stack.sh status          what runs; exit 0 all, 1 some, 3 none
#   scripts/stack.sh restart-broker  stop the broker (clients get 1001) and
#                                    start it again
#   scripts/stack.sh prepare         write the configuration, certificate and
#                                    nginx prefix, start nothing
#
# Environment (read by start and prepare; the others use what start saved):
#   STACK_DIR          state directory              default var/stack
#   STACK_REDIS_PORT   redis-server                 default 6390
#   STACK_BROKER_PORT  the broker (plain ws://)     default 18080
#   STACK_HTTPS_PORT   nginx, TLS (wss://, https://) default 8443
#   STACK_HTTP_PORT    nginx, plain (benchmarks)    default 8880
#   STACK_WORKERS      broker workers               default auto (CPUs - 1)
#   STACK_UPSTREAM     how nginx reaches the broker default unix
#                      unix: a Unix socket per broker worker (no ephemeral
#                      port per client: no ~28,000-client cap), balanced with
#                      least_conn; tcp: the broker's loopback port
#   BROKER_BIN         the broker binary            default build/broker
#
# Layout of STACK_DIR:
#   stack.env                the ports start used
#   redis.pid redis.log      redis-server
#   broker.conf broker.pid broker.log
#   run/broker.sock.N        the broker's Unix sockets, one per worker
#   nginx/                   nginx's prefix: nginx.conf -> docker/nginx.conf,
#                            upstream.conf, listen-*.conf, certs/, www/, logs/
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

STACK_DIR=${STACK_DIR:-var/stack}
mkdir -p "$STACK_DIR"
STACK_DIR=$(cd "$STACK_DIR" && pwd)
PREFIX=$STACK_DIR/nginx
ENV_FILE=$STACK_DIR/stack.env

BROKER_BIN=${BROKER_BIN:-build/broker}
case $BROKER_BIN in /*) ;; *) BROKER_BIN=$ROOT/$BROKER_BIN ;; esac
NGINX=${NGINX:-nginx}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}
HOST=127.0.0.1

# What this `start` started, stopped again if a later step fails.
STARTED=""

say() { echo "stack: $*" >&2; }
die() {
    echo "stack: $*" >&2
    rollback
    exit 1
}

load_ports() {
    # A running stack keeps the ports it was started with.
    if [ -f "$ENV_FILE" ]; then
        # shellcheck disable=SC1090
        . "$ENV_FILE"
    fi
    REDIS_PORT=${STACK_REDIS_PORT:-${SAVED_REDIS_PORT:-6390}}
    BROKER_PORT=${STACK_BROKER_PORT:-${SAVED_BROKER_PORT:-18080}}
    HTTPS_PORT=${STACK_HTTPS_PORT:-${SAVED_HTTPS_PORT:-8443}}
    HTTP_PORT=${STACK_HTTP_PORT:-${SAVED_HTTP_PORT:-8880}}
    WORKERS=${STACK_WORKERS:-${SAVED_WORKERS:-auto}}
    UPSTREAM=${STACK_UPSTREAM:-${SAVED_UPSTREAM:-unix}}
    case $UPSTREAM in unix|tcp) ;; *) die "STACK_UPSTREAM must be unix or tcp" ;; esac
}

# The number of broker workers, as the broker counts them (auto: CPUs - 1).
worker_count() {
    local n
    if [ "$WORKERS" = auto ]; then
        n=$(($(nproc) - 1))
        [ $n -ge 1 ] || n=1
        echo $n
    else
        echo "$WORKERS"
    fi
}

save_ports() {
    cat > "$ENV_FILE" <<EOF
SAVED_REDIS_PORT=$REDIS_PORT
SAVED_BROKER_PORT=$BROKER_PORT
SAVED_HTTPS_PORT=$HTTPS_PORT
SAVED_HTTP_PORT=$HTTP_PORT
SAVED_WORKERS=$WORKERS
SAVED_UPSTREAM=$UPSTREAM
EOF
}

# --- processes, by pid file ---------------------------------------------

# pid_of NAME FILE: the pid in FILE when that process is alive and its
# command line mentions NAME (a stale file or a reused pid gives nothing).
pid_of() {
    local name=$1 file=$2 pid
    [ -s "$file" ] || return 1
    pid=$(tr -dc 0-9 < "$file")
    [ -n "$pid" ] && alive "$pid" || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name" || return 1
    echo "$pid"
}

children_of() {
    local pid=$1 p stat
    for p in /proc/[0-9]*; do
        stat=$(cat "$p/stat" 2>/dev/null) || continue
        stat=${stat##*) }
        set -- $stat
        [ "$2" = "$pid" ] && echo "${p#/proc/}"
    done
    return 0
}

alive() {
    local p
    for p in "$@"; do
        kill -0 "$p" 2>/dev/null && [ "$(cut -d' ' -f3 "/proc/$p/stat" 2>/dev/null)" != Z ] && return 0
    done
    return 1
}

# stop_pid NAME PID GRACE: SIGTERM to PID, up to GRACE seconds for it and the
# children it had to exit, then SIGKILL to whatever of them is left.
stop_pid() {
    local name=$1 pid=$2 grace=$3 kids i
    kids=$(children_of "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        # shellcheck disable=SC2086
        alive "$pid" $kids || break
        sleep 0.1
    done
    for p in $pid $kids; do
        if alive "$p"; then
            say "$name: pid $p still running after ${grace}s, SIGKILL"
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    for ((i = 0; i < 50; i++)); do
        # shellcheck disable=SC2086
        alive "$pid" $kids || return 0
        sleep 0.1
    done
    say "$name: pid $pid did not go away"
    return 1
}

# port_busy PORT: something accepts connections on 127.0.0.1:PORT.
port_busy() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# wait_for WHAT SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_for() {
    local what=$1 secs=$2 i
    shift 2
    WAIT_ABORT=0
    for ((i = 0; i < secs * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        if [ "$WAIT_ABORT" = 1 ]; then
            say "$what exited"
            return 1
        fi
        sleep 0.1
    done
    say "$what did not answer within ${secs}s"
    return 1
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$@"; }

# --- configuration ----------------------------------------------------------

prepare() {
    [ -x "$BROKER_BIN" ] || die "$BROKER_BIN is not built (run make)"
    mkdir -p "$PREFIX/logs" "$PREFIX/tmp" "$PREFIX/certs" "$PREFIX/www" "$PREFIX/internal-allow.d"

    # The broker: docker/broker.conf with loopback addresses: its port for
    # operators (and STACK_UPSTREAM=tcp), its Unix sockets in run/.
    mkdir -p "$STACK_DIR/run"
    chmod a+rx "$STACK_DIR" "$STACK_DIR/run"
    # Started by root, nginx's workers run as nobody:nogroup: the sockets
    # are theirs to connect to through the group.
    local group=""
    [ "$(id -u)" = 0 ] && group=nogroup
    sed -e "s#^listen [0-9].*#listen $HOST:$BROKER_PORT#" \
        -e "s#^listen unix:.*#listen unix:$STACK_DIR/run/broker.sock#" \
        -e "s#^listen_socket_mode .*#listen_socket_mode 0660#" \
        -e "s#^listen_socket_group.*#listen_socket_group $group#" \
        -e "s#^redis_url .*#redis_url redis://$HOST:$REDIS_PORT#" \
        -e "s#^workers .*#workers $WORKERS#" \
        -e "s#^static_dir .*#static_dir $PREFIX/www#" \
        -e "s#^pid_file.*#pid_file $STACK_DIR/broker.pid#" \
        docker/broker.conf > "$STACK_DIR/broker.conf"
    "$BROKER_BIN" -t -c "$STACK_DIR/broker.conf" >/dev/null || die "broker.conf rejected"

    # nginx: the same nginx.conf as docker, the stack's prefix files beside it.
    ln -sfn "$ROOT/docker/nginx.conf" "$PREFIX/nginx.conf"
    if [ "$UPSTREAM" = unix ]; then
        local i n
        n=$(worker_count)
        : > "$PREFIX/upstream.conf"
        for ((i = 1; i <= n; i++)); do
            echo "server unix:$STACK_DIR/run/broker.sock.$i;" >> "$PREFIX/upstream.conf"
        done
    else
        echo "server $HOST:$BROKER_PORT;" > "$PREFIX/upstream.conf"
    fi
    echo "listen $HOST:$HTTPS_PORT ssl reuseport;" > "$PREFIX/listen-https.conf"
    echo "listen $HOST:$HTTP_PORT reuseport;" > "$PREFIX/listen-http.conf"
    docker/gen-cert.sh "$PREFIX/certs" >&2
    # Copies, not links: nginx's workers may run as nobody.
    cp protocol/demo/index.html protocol/demo/demo.js protocol/broker-client.js "$PREFIX/www/"
    chmod a+rx "$STACK_DIR" "$PREFIX" "$PREFIX/www"
    chmod a+r "$PREFIX"/www/*
    # Started by root, nginx's workers run as nobody, and must reach www/.
    if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null &&
        ! setpriv --reuid=nobody --regid=nogroup --clear-groups test -r "$PREFIX/www/index.html"; then
        die "nginx's workers (user nobody) cannot read $PREFIX/www: a directory above it is not" \
            "world-searchable; choose another STACK_DIR"
    fi
    save_ports
}

# --- components ---------------------------------------------------------------

start_redis() {
    local pid
    if pid=$(pid_of redis-server "$STACK_DIR/redis.pid"); then
        say "redis-server already running (pid $pid)"
        return 0
    fi
    port_busy "$REDIS_PORT" && die "port $REDIS_PORT (STACK_REDIS_PORT) is taken by another process"
    rm -f "$STACK_DIR/redis.pid"
    "$REDIS_SERVER" --port "$REDIS_PORT" --bind "$HOST" --save '' --appendonly no \
        --daemonize yes --pidfile "$STACK_DIR/redis.pid" --logfile "$STACK_DIR/redis.log" \
        --dir "$STACK_DIR" </dev/null >/dev/null 2>&1 || die "redis-server failed; see $STACK_DIR/redis.log"
    STARTED="redis $STARTED"
    wait_for redis-server 10 redis_up || die "see $STACK_DIR/redis.log"
}

# The broker answers /healthz with 200 once its Redis link is up; one that
# exited (a bad configuration, a port it could not bind) ends the wait.
broker_up() {
    alive "$BROKER_STARTED" || { WAIT_ABORT=1; return 1; }
    http_ok "http://$HOST:$BROKER_PORT/healthz"
}

redis_up() { [ "$("$REDIS_CLI" -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

start_broker() {
    local pid
    if pid=$(pid_of broker "$STACK_DIR/broker.pid"); then
        say "broker already running (pid $pid)"
        return 0
    fi
    # The broker's listening sockets use SO_REUSEPORT: a second broker on
    # the port would share it silently, so look first.
    port_busy "$BROKER_PORT" && die "port $BROKER_PORT (STACK_BROKER_PORT) is taken by another process"
    rm -f "$STACK_DIR/broker.pid"
    setsid "$BROKER_BIN" -c "$STACK_DIR/broker.conf" </dev/null >>"$STACK_DIR/broker.log" 2>&1 &
    BROKER_STARTED=$!
    STARTED="broker $STARTED"
    wait_for broker 15 broker_up ||
        { tail -n 5 "$STACK_DIR/broker.log" >&2; die "see $STACK_DIR/broker.log"; }
    pid_of broker "$STACK_DIR/broker.pid" >/dev/null || die "broker.pid missing; see $STACK_DIR/broker.log"
}

start_nginx() {
    local pid
    if pid=$(pid_of nginx "$PREFIX/logs/nginx.pid"); then
        say "nginx already running (pid $pid)"
        return 0
    fi
    for p in "$HTTPS_PORT" "$HTTP_PORT"; do
        port_busy "$p" && die "port $p (STACK_HTTPS_PORT/STACK_HTTP_PORT) is taken by another process"
    done
    rm -f "$PREFIX/logs/nginx.pid"
    "$NGINX" -q -t -p "$PREFIX/" -c "$PREFIX/nginx.conf" || die "nginx -t failed"
    "$NGINX" -p "$PREFIX/" -c "$PREFIX/nginx.conf" </dev/null >>"$PREFIX/logs/error.log" 2>&1 ||
        die "nginx failed; see $PREFIX/logs/error.log"
    STARTED="nginx $STARTED"
    wait_for nginx 10 http_ok -k "https://$HOST:$HTTPS_PORT/healthz" ||
        { tail -n 5 "$PREFIX/logs/error.log" >&2; die "see $PREFIX/logs/error.log"; }
}

rollback() {
    local what=$STARTED
    STARTED=""
    for w in $what; do
        case $w in
            nginx) stop_one nginx "$PREFIX/logs/nginx.pid" 10 || true ;;
            broker) stop_one broker "$STACK_DIR/broker.pid" 15 || true ;;
            redis) stop_one redis-server "$STACK_DIR/redis.pid" 10 || true ;;
        esac
    done
}

stop_one() {
    local name=$1 file=$2 grace=$3 pid
    if pid=$(pid_of "$name" "$file"); then
        say "stopping $name (pid $pid)"
        stop_pid "$name" "$pid" "$grace" || return 1
    fi
    rm -f "$file"
}

print_urls() {
    say "running in $STACK_DIR"
    say "WebSocket endpoint, demo page and Redis for publishers:"
    echo "wss://$HOST:$HTTPS_PORT/ws"
    echo "https://$HOST:$HTTPS_PORT/"
    echo "redis://$HOST:$REDIS_PORT"
    say "also: ws://$HOST:$HTTP_PORT/ws (nginx, plain, for benchmarks), ws://$HOST:$BROKER_PORT/ws (the broker)"
    say "nginx reaches the broker over $([ "$UPSTREAM" = unix ] && echo "Unix sockets $STACK_DIR/run/broker.sock.N" || echo "TCP $HOST:$BROKER_PORT")"
    say "publish: $REDIS_CLI -p $REDIS_PORT PUBLISH demo '{\"hello\":\"world\"}'"
    say "the certificate is self-signed: $PREFIX/certs/stack.crt"
}

status() {
    local n=0 pid
    if pid=$(pid_of redis-server "$STACK_DIR/redis.pid"); then
        echo "redis-server: running, pid $pid, redis://$HOST:$REDIS_PORT"; n=$((n + 1))
    else
        echo "redis-server: stopped"
    fi
    if pid=$(pid_of broker "$STACK_DIR/broker.pid"); then
        echo "broker: running, pid $pid (workers: $(children_of "$pid" | tr '\n' ' ')), ws://$HOST:$BROKER_PORT/ws"
        n=$((n + 1))
    else
        echo "broker: stopped"
    fi
    if pid=$(pid_of nginx "$PREFIX/logs/nginx.pid"); then
        echo "nginx: running, pid $pid (workers: $(children_of "$pid" | tr '\n' ' ')), wss://$HOST:$HTTPS_PORT/ws, ws://$HOST:$HTTP_PORT/ws"
        n=$((n + 1))
    else
        echo "nginx: stopped"
    fi
    [ $n = 3 ] && return 0
    [ $n = 0 ] && return 3
    return 1
}

# A running stack refuses other ports: they would describe processes that
# are not there.
check_same_ports() {
    local running=0
    pid_of redis-server "$STACK_DIR/redis.pid" >/dev/null && running=1
    pid_of broker "$STACK_DIR/broker.pid" >/dev/null && running=1
    pid_of nginx "$PREFIX/logs/nginx.pid" >/dev/null && running=1
    [ $running = 1 ] && [ -f "$ENV_FILE" ] || return 0
    (
        . "$ENV_FILE"
        [ "$SAVED_REDIS_PORT/$SAVED_BROKER_PORT/$SAVED_HTTPS_PORT/$SAVED_HTTP_PORT" = \
          "$REDIS_PORT/$BROKER_PORT/$HTTPS_PORT/$HTTP_PORT" ]
    ) || die "already running in $STACK_DIR with other ports (see stack.env); stop it first"
}

load_ports
case ${1:-} in
    start)
        check_same_ports
        prepare
        start_redis
        start_broker
        start_nginx
        print_urls
        ;;
    stop)
        rc=0
        # nginx first (no new clients), then the broker (clients get 1001
        # and up to shutdown_timeout_s), then Redis.
        stop_one nginx "$PREFIX/logs/nginx.pid" 10 || rc=1
        stop_one broker "$STACK_DIR/broker.pid" 15 || rc=1
        stop_one redis-server "$STACK_DIR/redis.pid" 10 || rc=1
        [ $rc = 0 ] && say "stopped"
        exit $rc
        ;;
    restart-broker)
        pid_of redis-server "$STACK_DIR/redis.pid" >/dev/null ||
            die "redis-server is not running in $STACK_DIR: use start"
        pid_of broker "$STACK_DIR/broker.pid" >/dev/null || say "broker was not running"
        stop_one broker "$STACK_DIR/broker.pid" 15
        start_broker
        say "broker restarted (pid $(cat "$STACK_DIR/broker.pid"))"
        ;;
    status)
        status
        ;;
    prepare)
        check_same_ports
        prepare
        say "prepared $STACK_DIR (nginx prefix $PREFIX/)"
        ;;
    *)
        echo "usage: scripts/stack.sh start|stop|status|restart-broker|prepare" >&2
        exit 2
        ;;
esac

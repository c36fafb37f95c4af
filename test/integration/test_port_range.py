"""The stack at scale (SCALING.md): nginx reaches the broker over Unix
sockets, so the clients a node holds are not capped by the ephemeral port
range. In a network namespace of its own whose net.ipv4.ip_local_port_range
has 200 ports, 600 WebSocket clients go through nginx to the broker (clients
bind four loopback source addresses: 4 x 200 ports for their own side), all
connect and all receive a published message. Over the TCP hop the same run
stops at the port range: that is the cap this design removes."""
import json
import os
import shutil
import subprocess
import tempfile

import pytest

import helpers

LOADGEN = os.path.join(os.path.dirname(helpers.BROKER_BIN), "loadgen")
CLEANUP = []


@pytest.fixture(autouse=True)
def _cleanup():
    yield
    while CLEANUP:
        shutil.rmtree(CLEANUP.pop(), ignore_errors=True)

# Runs inside the namespace: loopback up, 200 ephemeral ports, the stack,
# loadgen with a publisher, the stack stopped again. Prints loadgen's JSON.
SCRIPT = r'''
set -eu
ip link set lo up
sysctl -qw net.ipv4.ip_local_port_range="40000 40199"
export STACK_DIR="$1" STACK_UPSTREAM="$2" STACK_WORKERS=2
cd "$REPO"
trap 'scripts/stack.sh stop >/dev/null 2>&1 || true' EXIT
scripts/stack.sh start > /dev/null
. "$STACK_DIR/stack.env"
"$LOADGEN" --url "ws://127.0.0.1:$SAVED_HTTP_PORT/ws" -n 600 -c 50 --source-ips 4 \
    -k 1 --prefix portrange --duration 8 --timeout 15 -q --json "$STACK_DIR/lg.json" &
LG=$!
# Publish once every client that will get in is subscribed (the broker's
# count stops growing), while loadgen still runs.
last=-1
for i in $(seq 1 40); do
    n=$(curl -fsS "http://127.0.0.1:$SAVED_BROKER_PORT/metrics" |
        awk '$1 == "broker_subscriptions" {print $2}')
    [ "$n" = 600 ] && break
    [ "$n" = "$last" ] && [ "$i" -gt 20 ] && break
    last=$n
    sleep 0.25
done
for i in 1 2 3 4 5 6 7 8; do
    redis-cli -p "$SAVED_REDIS_PORT" PUBLISH portrange0 "{\"n\":$i}" >/dev/null
    sleep 0.5
done
wait $LG || true
cat "$STACK_DIR/lg.json"
'''


def run_in_namespace(upstream):
    # Not under the suite's private temp root: nginx's workers (nobody) must
    # reach the stack's www/ and sockets.
    d = tempfile.mkdtemp(prefix="broker-portrange-")
    os.chmod(d, 0o755)
    CLEANUP.append(d)
    env = dict(os.environ, REPO=helpers.REPO, LOADGEN=LOADGEN, BROKER_BIN=helpers.BROKER_BIN,
               STACK_REDIS_PORT="6390", STACK_BROKER_PORT="18080", STACK_HTTPS_PORT="8443",
               STACK_HTTP_PORT="8880")
    p = subprocess.Popen(["unshare", "-n", "bash", "-c", SCRIPT, "x", os.path.join(d, "stack"),
                          upstream], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    helpers.LIVE.add(p)
    try:
        out, err = p.communicate(timeout=120 * helpers.SLOW)
    finally:
        helpers.kill_proc(p)
    assert p.returncode == 0, err[-3000:]
    return json.loads(out[out.index("{"):]), d


def namespaces_available():
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.mark.timeout(300)
def test_600_clients_through_200_ports(redis):
    if not namespaces_available():
        pytest.skip("cannot create a network namespace here (needs root and unshare -n)")
    if helpers.BROKER_WRAPPER:
        pytest.skip("the stack does not run under valgrind")
    res, _ = run_in_namespace("unix")
    conns = res["connections"]
    assert conns["opened"] == 600 and conns["failed"] == 0, json.dumps(conns)
    # Every client got every message (eight of them, one channel).
    assert res["received"]["messages"] == 600 * 8, res["received"]
    print("unix upstream: %d of 600 connected, %d messages"
          % (conns["opened"], res["received"]["messages"]))

    # The TCP hop: one ephemeral port per proxied client, 200 in all.
    res, d = run_in_namespace("tcp")
    conns = res["connections"]
    assert conns["opened"] <= 210 and conns["failed"] >= 390, json.dumps(conns)
    log = open(os.path.join(d, "stack", "nginx", "logs", "error.log")).read()
    assert "Cannot assign requested address" in log, log[-2000:]
    print("tcp upstream: %d of 600 connected" % conns["opened"])

"""The stack of scripts/stack.sh: redis-server, the broker and nginx (TLS
terminator, docker/nginx.conf) on free loopback ports in a temporary
STACK_DIR. nginx -t accepts the configuration with the prefix stack.sh
prepares (and with docker's prefix files); a WebSocket client through wss://
subscribes and receives a PUBLISHed message; stop leaves none of the
processes running. scripts/loadgen measures through wss:// (trusting the
stack's certificate with --ca, resuming TLS sessions) and counts a
certificate it cannot verify as a failed connection."""
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request

import pytest

import helpers

STACK_SH = os.path.join(helpers.REPO, "scripts", "stack.sh")
NGINX_CONF = os.path.join(helpers.REPO, "docker", "nginx.conf")
# The tools are built beside the broker (build/ or build/asan/).
LOADGEN = os.path.join(os.path.dirname(helpers.BROKER_BIN), "loadgen")

pytestmark = pytest.mark.skipif(
    bool(helpers.BROKER_WRAPPER), reason="stack.sh runs the broker without BROKER_WRAPPER")


def stack(cmd, env, timeout=60):
    return subprocess.run([STACK_SH, cmd], env=env, capture_output=True, text=True,
                          timeout=timeout * helpers.SLOW)


def stack_env(tmp):
    env = dict(os.environ)
    env.update(STACK_DIR=tmp, BROKER_BIN=helpers.BROKER_BIN,
               STACK_REDIS_PORT=str(helpers.free_port()),
               STACK_BROKER_PORT=str(helpers.free_port()),
               STACK_HTTPS_PORT=str(helpers.free_port()),
               STACK_HTTP_PORT=str(helpers.free_port()))
    return env


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def alive(pid):
    """A live process, not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(d))
    return out


def stack_pids(tmp):
    """Every process the stack runs: masters from the pid files, and their
    workers."""
    masters = {
        "redis": read_pid(os.path.join(tmp, "redis.pid")),
        "broker": read_pid(os.path.join(tmp, "broker.pid")),
        "nginx": read_pid(os.path.join(tmp, "nginx", "logs", "nginx.pid")),
    }
    pids = {}
    for name, pid in masters.items():
        if pid:
            pids[name] = pid
            for i, c in enumerate(children(pid)):
                pids["%s worker %d" % (name, i)] = c
    return pids


@pytest.fixture
def stack_dir():
    # Not under helpers.TMP_ROOT (mode 0700): nginx started by root runs its
    # workers as nobody, and they must reach www/.
    tmp = tempfile.mkdtemp(prefix="broker-stack-")
    env = stack_env(tmp)
    yield tmp, env
    # Whatever the test did: stop what runs, and kill by PID what stop left.
    left = stack_pids(tmp)
    stack("stop", env)
    for pid in left.values():
        if alive(pid):
            os.kill(pid, 9)
    shutil.rmtree(tmp, ignore_errors=True)


def nginx_t(prefix):
    return subprocess.run(["nginx", "-t", "-p", prefix + "/", "-c", os.path.join(prefix, "nginx.conf")],
                          capture_output=True, text=True, timeout=30)


def test_nginx_t_accepts_the_prefix_stack_sh_prepares(stack_dir):
    tmp, env = stack_dir
    r = stack("prepare", env)
    assert r.returncode == 0, r.stderr
    prefix = os.path.join(tmp, "nginx")
    # nginx resolves include and ssl_certificate against the -c file's
    # directory: the prefix holds a link to the one nginx.conf.
    assert os.path.realpath(os.path.join(prefix, "nginx.conf")) == os.path.realpath(NGINX_CONF)
    r = nginx_t(prefix)
    assert r.returncode == 0, r.stderr
    assert "test is successful" in r.stderr
    for f in ("index.html", "demo.js", "broker-client.js"):
        assert os.path.isfile(os.path.join(prefix, "www", f))
    # The broker's configuration is docker's, with loopback addresses.
    r = subprocess.run([helpers.BROKER_BIN, "-t", "-c", os.path.join(tmp, "broker.conf")],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(tmp, "broker.conf")) as f:
        conf = f.read()
    assert "listen 127.0.0.1:%s\n" % env["STACK_BROKER_PORT"] in conf
    assert "redis_url redis://127.0.0.1:%s\n" % env["STACK_REDIS_PORT"] in conf


def test_nginx_t_accepts_dockers_prefix_files(stack_dir):
    """docker/prefix/ with a certificate and the demo, as the image builds
    it; the upstream host `broker` only resolves inside compose, so it is
    replaced by a loopback address."""
    tmp, env = stack_dir
    prefix = os.path.join(tmp, "docker-prefix")
    shutil.copytree(os.path.join(helpers.REPO, "docker", "prefix"), prefix)
    os.makedirs(os.path.join(prefix, "logs"))
    os.makedirs(os.path.join(prefix, "tmp"))
    os.symlink(NGINX_CONF, os.path.join(prefix, "nginx.conf"))
    subprocess.run([os.path.join(helpers.REPO, "docker", "gen-cert.sh"), os.path.join(prefix, "certs")],
                   check=True, capture_output=True, timeout=30)
    with open(os.path.join(prefix, "upstream.conf")) as f:
        assert "server broker:8080;" in f.read()
    with open(os.path.join(prefix, "upstream.conf"), "w") as f:
        f.write("server 127.0.0.1:8080;\n")
    r = nginx_t(prefix)
    assert r.returncode == 0, r.stderr


async def wss_roundtrip(wss_url, cafile, redis_port, channel):
    ctx = ssl.create_default_context(cafile=cafile)
    async with helpers.websockets.connect(wss_url, ssl=ctx, ping_interval=None,
                                          open_timeout=10 * helpers.SLOW) as ws:
        await ws.send(json.dumps({"action": "subscribe", "channel": channel, "rid": "s1"}))
        ack = json.loads(await helpers.recv_text(ws))
        assert ack == {"type": "ack", "action": "subscribe", "channel": channel, "rid": "s1"}
        helpers.wait_subscribed(redis_port, channel)
        payload = '{"ts":1,"via":"nginx"}'
        assert helpers.publish(redis_port, channel, payload) >= 1
        frame = await helpers.recv_text(ws)
        assert helpers.parse_batch(frame) == (channel, [payload])


def test_stack_start_delivers_through_wss_and_stop_leaves_nothing(stack_dir):
    tmp, env = stack_dir
    r = stack("start", env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    https_port, redis_port = env["STACK_HTTPS_PORT"], env["STACK_REDIS_PORT"]
    wss_url = "wss://127.0.0.1:%s/ws" % https_port
    demo_url = "https://127.0.0.1:%s/" % https_port
    assert wss_url in lines and demo_url in lines, r.stdout
    assert "redis://127.0.0.1:%s" % redis_port in lines, r.stdout

    pids = stack_pids(tmp)
    assert {"redis", "broker", "nginx", "broker worker 0", "nginx worker 0"} <= set(pids), pids
    assert stack("status", env).returncode == 0

    # Started again: nothing new.
    r = stack("start", env)
    assert r.returncode == 0, r.stderr
    assert stack_pids(tmp) == pids

    cafile = os.path.join(tmp, "nginx", "certs", "stack.crt")
    channel = helpers.uniq("stack")
    helpers.run(wss_roundtrip(wss_url, cafile, int(redis_port), channel))

    # The demo page and the client module over https; health from loopback.
    ctx = ssl.create_default_context(cafile=cafile)
    with urllib.request.urlopen(demo_url, context=ctx, timeout=10) as resp:
        assert resp.status == 200 and b"demo.js" in resp.read()
    with urllib.request.urlopen(demo_url + "broker-client.js", context=ctx, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/javascript")
    with urllib.request.urlopen(demo_url + "healthz", context=ctx, timeout=10) as resp:
        assert resp.read() == b"ok\n"

    # Another stack on the same ports is refused.
    env2 = dict(env, STACK_DIR=os.path.join(tmp, "second"))
    r = stack("start", env2)
    assert r.returncode != 0 and "taken" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(env2["STACK_DIR"], "redis.pid"))

    r = stack("stop", env)
    assert r.returncode == 0, r.stderr
    running = {name: pid for name, pid in pids.items() if alive(pid)}
    assert running == {}, "still running after stop: %r" % running
    assert stack("status", env).returncode == 3
    with open(os.path.join(tmp, "broker.log")) as f:
        log = f.read()
    assert not any(m in log for m in helpers.SANITIZER_MARKERS), log[-3000:]


def test_restart_broker_keeps_nginx_and_redis(stack_dir):
    tmp, env = stack_dir
    r = stack("start", env)
    assert r.returncode == 0, r.stderr
    before = stack_pids(tmp)
    r = stack("restart-broker", env)
    assert r.returncode == 0, r.stderr
    after = stack_pids(tmp)
    assert after["redis"] == before["redis"] and after["nginx"] == before["nginx"]
    assert after["broker"] != before["broker"]
    assert not alive(before["broker"]) and not alive(before["broker worker 0"])
    channel = helpers.uniq("restart")
    helpers.run(wss_roundtrip("wss://127.0.0.1:%s/ws" % env["STACK_HTTPS_PORT"],
                              os.path.join(tmp, "nginx", "certs", "stack.crt"),
                              int(env["STACK_REDIS_PORT"]), channel))


def test_docker_files_agree_with_each_other():
    """Docker cannot run here: check what can be checked without it. The
    broker accepts docker/broker.conf; compose, the Dockerfile's stages, the
    prefix files and the broker's configuration name the same ports."""
    docker = os.path.join(helpers.REPO, "docker")
    # -t opens static_dir: the image's path (where the Dockerfile copies the
    # demo) stands for the demo in the tree here.
    with open(os.path.join(docker, "broker.conf")) as f:
        text = f.read()
    assert "static_dir /usr/share/broker/demo\n" in text
    local = os.path.join(helpers.tmpdir("docker-conf-"), "broker.conf")
    with open(local, "w") as f:
        f.write(text.replace("/usr/share/broker/demo",
                             os.path.join(helpers.REPO, "protocol", "demo")))
    r = subprocess.run([helpers.BROKER_BIN, "-t", "-c", local],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(docker, "broker.conf")) as f:
        lines = [line.split(None, 1) for line in f.read().splitlines()
                 if line.strip() and not line.startswith("#") and len(line.split(None, 1)) == 2]
    conf = dict(lines)
    listens = [v for k, v in lines if k == "listen"]
    # The port for checks and other nodes, the Unix sockets (in the volume
    # nginx mounts too) for nginx.
    assert listens == ["0.0.0.0:8080", "unix:/run/broker/broker.sock"], listens
    assert conf["redis_url"] == "redis://redis:6379"
    with open(os.path.join(docker, "Dockerfile")) as f:
        dockerfile = f.read()
    stages = {line.split()[-1] for line in dockerfile.splitlines() if line.startswith("FROM ")}
    assert {"build", "nginx", "broker"} <= stages
    assert dockerfile.rstrip().splitlines()[-1].startswith("CMD"), "broker must be the last (default) stage"
    for f in ("upstream.conf", "listen-https.conf", "listen-http.conf"):
        assert os.path.isfile(os.path.join(docker, "prefix", f))
    with open(os.path.join(docker, "prefix", "upstream.conf")) as f:
        assert "server broker:8080;" in f.read()
    with open(os.path.join(docker, "prefix", "listen-https.conf")) as f:
        assert "listen 8443 ssl" in f.read()
    yaml = pytest.importorskip("yaml")
    with open(os.path.join(docker, "docker-compose.yml")) as f:
        compose = yaml.safe_load(f)
    services = compose["services"]
    assert set(services) == {"redis", "broker", "nginx"}
    for name in ("broker", "nginx"):
        build = services[name]["build"]
        assert build["context"] == ".." and build["dockerfile"] == "docker/Dockerfile"
        assert build["target"] == name
    assert services["broker"]["expose"] == ["8080"]
    for name in ("broker", "nginx"):
        assert "broker-run:/run/broker" in services[name]["volumes"], services[name]
    assert "broker-run" in compose["volumes"]
    with open(os.path.join(docker, "nginx-entrypoint.sh")) as f:
        assert "/run/broker/broker.sock." in f.read()
    assert any(p.endswith(":8443") for p in services["nginx"]["ports"])
    assert services["nginx"]["depends_on"]["broker"]["condition"] == "service_healthy"


# ---------------------------------------------------------------------------
# loadgen over wss://

needs_loadgen = pytest.mark.skipif(not os.access(LOADGEN, os.X_OK),
                                   reason="%s is not built (make)" % LOADGEN)


def loadgen_start(args, out_dir, name):
    """Starts loadgen with args; its summary goes to OUT_DIR/NAME.json, its
    stderr to NAME.log. Returns (Popen, json path, log path)."""
    js, log = os.path.join(out_dir, name + ".json"), os.path.join(out_dir, name + ".log")
    with open(log, "w") as err:
        p = subprocess.Popen([LOADGEN, "--json", js, "--interval", "600"] + args,
                             stdout=subprocess.DEVNULL, stderr=err)
    helpers.LIVE.add(p)
    return p, js, log


def loadgen_wait(p, js, log, timeout):
    try:
        rc = p.wait(timeout=timeout * helpers.SLOW)
    finally:
        helpers.kill_proc(p)
    with open(log) as f:
        text = f.read()
    assert not any(m in text for m in helpers.SANITIZER_MARKERS), text[-3000:]
    with open(js) as f:
        return rc, json.load(f), text


def loadgen_run(args, out_dir, name, timeout=30):
    p, js, log = loadgen_start(args, out_dir, name)
    return loadgen_wait(p, js, log, timeout)


@needs_loadgen
@pytest.mark.timeout(120)
def test_loadgen_through_wss_with_ca_counts_messages_latency_and_resumption(stack_dir):
    tmp, env = stack_dir
    r = stack("start", env)
    assert r.returncode == 0, r.stderr
    url = "wss://127.0.0.1:%s/ws" % env["STACK_HTTPS_PORT"]
    cafile = os.path.join(tmp, "nginx", "certs", "stack.crt")
    redis_port = int(env["STACK_REDIS_PORT"])
    prefix = helpers.uniq("lgtls") + "-"
    n, k, conc, per_channel = 40, 4, 10, 5

    p, js, log = loadgen_start(["--url", url, "-n", str(n), "-c", str(conc), "-k", str(k),
                                "--prefix", prefix, "--ca", cafile, "--tls-resume",
                                "--duration", "3"], tmp, "lg")
    # Publish once every connection is ready (subscribed and acked).
    helpers.wait_until(lambda: "connections ready" in open(log).read() or p.poll() is not None,
                       20 * helpers.SLOW, what="loadgen's connections")
    helpers.wait_subscribed(redis_port, *["%s%d" % (prefix, i) for i in range(k)])
    items = []
    for seq in range(k * per_channel):
        payload = json.dumps({"ts": int(time.time() * 1e6), "seq": seq})
        items.append(("%s%d" % (prefix, seq % k), payload))
    assert all(x >= 1 for x in helpers.publish_many(redis_port, items))
    rc, d, text = loadgen_wait(p, js, log, 30)
    assert rc == 0, text

    c = d["connections"]
    assert (c["opened"], c["failed"], c["open_at_end"]) == (n, 0, n), c
    assert d["config"]["tls"] and d["config"]["tls_verify"] and d["config"]["tls_ca"] == cafile
    # Every message reaches the n/k clients of its channel, each with a
    # latency sample timed by the kernel.
    rec = d["received"]
    assert rec["messages"] == k * per_channel * (n // k), rec
    assert d["latency"]["count"] == rec["messages"]
    assert rec["bad_frames"] == 0 and rec["messages_without_ts"] == 0
    assert rec["sampled_frames"] > 0 and rec["kernel_timestamps"] == rec["sampled_frames"]
    # bytes are what TLS gave us; the wire carried more (records, handshakes).
    assert 0 < rec["bytes"] < rec["wire_bytes"]
    # Handshakes: those started before the first session was kept are full
    # (at most --concurrency), every later one resumes the kept session.
    t = d["tls"]
    assert t["handshakes"] == n and t["full"] + t["resumed"] == n, t
    assert 1 <= t["full"] <= conc and t["resumed"] == t["offered"] == n - t["full"], t
    assert t["negotiated"].startswith("TLSv1."), t
    assert t["established"]["full"]["count"] == t["full"]
    assert t["established"]["resumed"]["count"] == t["resumed"]
    assert t["upgrade"]["resumed"]["count"] == t["resumed"]
    h = d["handshake"]
    assert h["tcp"]["count"] == h["tls"]["count"] == h["upgrade"]["count"] == h["ready"]["count"] == n
    # connect() < TLS established < 101, per connection, hence in the means.
    assert h["tcp"]["mean_ms"] <= h["tls"]["mean_ms"] <= h["upgrade"]["mean_ms"]
    assert d["errors"] == {"protocol": 0, "io": 0, "tls": 0}
    assert d["client_memory"]["rss_end_kib"] > 0

    # Two such processes merge into one summary.
    merged = os.path.join(tmp, "merged.json")
    r = subprocess.run([LOADGEN, "--merge", js, js, "--json", merged], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    with open(merged) as f:
        m = json.load(f)
    assert m["processes"] == 2 and m["received"]["messages"] == 2 * rec["messages"]
    assert m["tls"]["resumed"] == 2 * t["resumed"]
    assert m["received"]["wire_bytes"] == 2 * rec["wire_bytes"]


@needs_loadgen
@pytest.mark.timeout(120)
def test_loadgen_counts_an_unverified_certificate_as_a_failed_connection(stack_dir):
    tmp, env = stack_dir
    r = stack("start", env)
    assert r.returncode == 0, r.stderr
    url = "wss://127.0.0.1:%s/ws" % env["STACK_HTTPS_PORT"]
    other = os.path.join(tmp, "other-ca")
    subprocess.run([os.path.join(helpers.REPO, "docker", "gen-cert.sh"), other],
                   check=True, capture_output=True, timeout=30)
    common = ["--url", url, "-n", "5", "--duration", "0.5", "--timeout", "10"]

    # Another self-signed certificate, and the system's trust store (the
    # default), both refuse the stack's.
    for name, extra in (("wrong-ca", ["--ca", os.path.join(other, "stack.crt")]),
                        ("system-store", [])):
        rc, d, text = loadgen_run(common + extra, tmp, name)
        assert rc == 2, text
        c = d["connections"]
        assert (c["opened"], c["failed"], c["failures"]["tls_verify"]) == (0, 5, 5), c
        why = c["first_failure"]["tls_verify"]
        assert "certificate verify failed" in why and "self-signed" in why, why
        assert "tls_verify" in text and "certificate verify failed" in text
        assert d["tls"]["handshakes"] == 0

    # --insecure does not check.
    rc, d, text = loadgen_run(common + ["--insecure"], tmp, "insecure")
    assert rc == 0, text
    assert d["connections"]["opened"] == 5 and d["config"]["tls_verify"] is False

    # TLS options need a wss:// URL.
    r = subprocess.run([LOADGEN, "--url", "ws://127.0.0.1:%s/ws" % env["STACK_HTTP_PORT"],
                        "--ca", os.path.join(other, "stack.crt")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "wss://" in r.stderr, r.stderr

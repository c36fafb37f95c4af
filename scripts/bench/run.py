#!/usr/bin/env python3
"""Benchmarks: the broker, the floor (peers/floor.c) and what users build
instead (peers/), side by side in one run. BENCHMARKS.md describes the
scenarios, the method and the results.

    scripts/bench/run.py                       # make bench: broker and floor
    scripts/bench/run.py --compare             # make bench-compare: every system
    scripts/bench/run.py --systems broker --scenarios ingest --quick

Pinning: every process of the system under test runs on CPU 0 (taskset);
redis-server, publish and the load clients on CPU 1. CPU is utime+stime from
/proc/PID/stat of the system's processes (the broker's worker, not its idle
master), RSS is VmRSS from /proc/PID/status.

Writes OUT/results.json, OUT/results.md and OUT/*.png (report.py), and keeps
every tool's own summary and log under var/bench/run-*/.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(ROOT, "build")
PEERS = os.path.join(HERE, "peers")
LOADGEN = os.path.join(BUILD, "loadgen")
PUBLISH = os.path.join(BUILD, "publish")
BROKER = os.path.join(BUILD, "broker")
FLOOR = os.path.join(BUILD, "bench", "floor")
NCHAN_SO = "/usr/lib/nginx/modules/ngx_nchan_module.so"
CLK = os.sysconf("SC_CLK_TCK")
SYS_CPU, LOAD_CPU = "0", "1"

ALL_SYSTEMS = ["broker", "floor", "ws-buffer", "ws-string", "socketio", "nchan"]
# The stack as deployed, through nginx with TLS (make bench-stack): ours over
# Unix sockets, over the loopback TCP hop, and over Unix sockets with 16 KB
# proxy buffers, and nginx + nchan terminating TLS itself with the same TLS
# settings.
STACK_SYSTEMS = ["stack-unix", "stack-tcp", "stack-unix-16k", "nchan-tls"]
STACK_SCENARIOS = ["seed003", "fanout", "idle", "storm"]
ALL_SCENARIOS = ["seed003", "fanout", "storm", "ingest", "filters", "idle", "history", "idle100k",
                 "stack100k"]

# Durations: the full run fits in about 15 minutes with every system.
FULL = dict(seed003_s=30, fanout_s=8, fanout_rates=[2000, 10000, 20000], ingest_s=10,
            filters_s=6, storm_reps=3, idle_n=19900, idle100k_n=100000, stack_idle_n=9000,
            stack100k_n=100000, history_reps=3, history_pub_n=200000)
QUICK = dict(seed003_s=6, fanout_s=4, fanout_rates=[2000, 20000], ingest_s=4,
             filters_s=3, storm_reps=1, idle_n=5000, idle100k_n=20000, stack_idle_n=3000,
             stack100k_n=10000, history_reps=1, history_pub_n=50000)


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Processes: every one we start is recorded, and only those are stopped, by PID.

STARTED = []


def spawn(cmd, cpu, out=None, err=None, cwd=None):
    cmd = ["taskset", "-c", cpu] + [str(c) for c in cmd]
    p = subprocess.Popen(cmd, stdout=out or subprocess.DEVNULL, stderr=err or subprocess.DEVNULL,
                         cwd=cwd, start_new_session=True)
    STARTED.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=15):
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(sig)
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


def stop_all():
    for p in reversed(STARTED):
        if p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except Exception:
                pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=15):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def ticks(pids):
    """utime + stime of pids, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])
        except (OSError, IndexError):
            pass
    return total


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_busy():
    """(busy, total) jiffies of CPU 0 and CPU 1, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(("cpu0 ", "cpu1 ")):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                out[line[3]] = (sum(v) - idle, sum(v))
    return out


def busy_pct(a, b, cpu):
    (ba, ta), (bb, tb) = a[cpu], b[cpu]
    return 100.0 * (bb - ba) / (tb - ta) if tb > ta else None


def ksoftirqd0():
    """PID of ksoftirqd/0: softirq work the kernel defers to it is not
    charged to the process that caused it."""
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == "ksoftirqd/0":
                        return int(d)
            except OSError:
                pass
    return None


KSOFTIRQD0 = ksoftirqd0()


def median(xs):
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------------
# Systems under test


class System:
    name = "?"
    client = "loadgen"      # or "sio" (peers/sio-load.js)
    query_only = False      # subscribes only in the URL (nchan)
    filters = False
    history = False         # has the broker's history (FCALL broker_publish)
    path = "/ws"
    tls_opts = []           # loadgen's TLS options (wss:// systems)

    def __init__(self, ctx):
        self.ctx = ctx
        self.port = free_port()
        self.procs = []

    def url(self):
        return f"ws://127.0.0.1:{self.port}{self.path}"

    def pids(self):
        return [p.pid for p in self.procs]

    def alive(self):
        return all(p.poll() is None for p in self.procs)

    def logfile(self, what):
        return open(os.path.join(self.ctx.dir, f"{self.name}-{what}-{self.ctx.seq()}.log"), "w")

    def stop(self):
        for p in reversed(self.procs):
            stop(p)
        self.procs = []

    def restart(self):
        self.stop()
        self.port = free_port()
        self.start()


class Broker(System):
    name = "broker"
    filters = True
    history = True

    def __init__(self, ctx, workers=1):
        super().__init__(ctx)
        self.workers = workers
        if workers > 1:
            self.name = f"broker-w{workers}"

    def start(self):
        conf = os.path.join(self.ctx.dir, f"{self.name}.conf")
        with open(conf, "w") as f:
            f.write(f"listen 127.0.0.1:{self.port}\nredis_url redis://127.0.0.1:{self.ctx.redis_port}\n"
                    f"workers {self.workers}\nstats_interval_s 0\nlog_level warn\n")
        p = spawn([BROKER, "-c", conf], SYS_CPU, err=self.logfile("log"))
        self.procs = [p]
        end = time.monotonic() + 15
        while time.monotonic() < end:
            if p.poll() is not None:
                raise RuntimeError(f"broker exited with {p.returncode}")
            if len(children(p.pid)) == self.workers and self.healthy():
                return
            time.sleep(0.05)
        raise RuntimeError("broker workers not ready")

    def healthy(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                return r.status == 200
        except Exception:
            return False

    def pids(self):  # the workers: the master does no client I/O
        return children(self.procs[0].pid) if self.procs else []

    def metric(self, name):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None


class Floor(System):
    name = "floor"

    def start(self):
        p = spawn([FLOOR, "--listen", f"127.0.0.1:{self.port}", "--redis",
                   f"127.0.0.1:{self.ctx.redis_port}"], SYS_CPU, err=self.logfile("log"))
        self.procs = [p]
        wait_port(self.port, p)


class NodePeer(System):
    script = None

    def start(self):
        p = spawn(["node", os.path.join(PEERS, self.script), "--port", self.port, "--redis",
                   f"127.0.0.1:{self.ctx.redis_port}"], SYS_CPU, err=self.logfile("log"))
        self.procs = [p]
        wait_port(self.port, p)


class WsBuffer(NodePeer):
    name, script = "ws-buffer", "ws-buffer.js"


class WsString(NodePeer):
    name, script = "ws-string", "ws-string.js"


class SocketIO(NodePeer):
    name, script, client, path = "socketio", "socketio.js", "sio", ""


NGINX_CONF = """load_module {so};
daemon off;
master_process on;
user root;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 40000; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_body_buffer_size 1m;
    client_max_body_size 4m;
    keepalive_requests 10000000;
    nchan_shared_memory_size 512m;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /ws {{
            nchan_subscriber websocket;
            nchan_channel_id $arg_channels;
        }}
        location = /pub {{
            nchan_publisher http;
            nchan_channel_id $arg_channel;
            nchan_message_buffer_length 1;
            nchan_message_timeout 10s;
        }}
    }}
}}
"""


class Nchan(System):
    """nginx + nchan (one worker) and nchan-bridge.js, which batches what Redis
    publishes and POSTs it to nchan's publisher endpoint."""
    name, query_only = "nchan", True

    pub_port = None  # nchan-tls: the bridge publishes over plain HTTP here

    def conf_text(self, d):
        return NGINX_CONF.format(so=NCHAN_SO, dir=d, port=self.port)

    def start(self):
        d = os.path.join(self.ctx.dir, f"nginx-{self.port}")
        os.makedirs(d, exist_ok=True)
        if self.tls_opts:
            self.pub_port = free_port()
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(self.conf_text(d))
        ng = spawn(["nginx", "-c", conf, "-p", d], SYS_CPU, err=self.logfile("nginx"))
        self.procs = [ng]
        wait_port(self.port, ng)
        br = spawn(["node", os.path.join(PEERS, "nchan-bridge.js"), "--redis",
                    f"127.0.0.1:{self.ctx.redis_port}", "--nchan",
                    f"127.0.0.1:{self.pub_port or self.port}"],
                   SYS_CPU, err=self.logfile("bridge"))
        self.procs.append(br)
        time.sleep(0.5)
        if br.poll() is not None:
            raise RuntimeError("nchan-bridge exited")

    def pids(self):  # the nginx worker(s) and the bridge, not the idle master
        if not self.procs:
            return []
        return children(self.procs[0].pid) + [p.pid for p in self.procs[1:]]

    def stop(self):
        if self.procs:
            workers = children(self.procs[0].pid)
            for p in reversed(self.procs):
                stop(p, signal.SIGTERM)
            for w in workers:  # nginx's workers follow their master; make sure
                try:
                    os.kill(w, 0)
                    os.kill(w, signal.SIGKILL)
                except OSError:
                    pass
        self.procs = []


# The TLS settings of docker/nginx.conf, for nchan-tls to match them.
TLS_CONF = """
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;
    ssl_prefer_server_ciphers off;
    ssl_ecdh_curve X25519:prime256v1:secp384r1;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 1d;
    ssl_session_tickets on;
    ssl_certificate {certs}/stack.crt;
    ssl_certificate_key {certs}/stack.key;
"""


def certs(ctx):
    """The run's self-signed ECDSA certificate (docker/gen-cert.sh), made once."""
    d = os.path.join(ctx.dir, "certs")
    if not os.path.exists(os.path.join(d, "stack.crt")):
        subprocess.run([os.path.join(ROOT, "docker", "gen-cert.sh"), d], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return d


class Stack(System):
    """The production topology of scripts/stack.sh and docker/: nginx with
    docker/nginx.conf (unchanged but for the worker count of the scale run)
    terminating TLS, in front of the broker, reached over a Unix socket per
    broker worker (stack-unix) or over loopback TCP (stack-tcp). CPU and
    memory are those of every nginx worker and every broker worker."""
    name, upstream = "stack-unix", "unix"
    filters = True
    tls_opts = ["--insecure"]
    proxy_buffer = None  # docker/nginx.conf's proxy_buffer_size, or this

    def __init__(self, ctx, workers=1, nginx_workers=None):
        super().__init__(ctx)
        self.workers = workers
        self.nginx_workers = nginx_workers
        self.bport = free_port()

    def url(self):
        return f"wss://127.0.0.1:{self.port}{self.path}"

    def start(self):
        d = os.path.join(self.ctx.dir, f"{self.name}-{self.port}")
        prefix, run = os.path.join(d, "nginx"), os.path.join(d, "run")
        for sub in ("logs", "tmp", "www", "internal-allow.d"):
            os.makedirs(os.path.join(prefix, sub), exist_ok=True)
        os.makedirs(run, exist_ok=True)
        # Started by root, nginx's workers run as nobody: they must reach the
        # sockets (and the prefix).
        for x in (self.ctx.dir, d, prefix, run):
            os.chmod(x, 0o755)
        group = "nogroup" if os.geteuid() == 0 else ""
        conf = os.path.join(d, "broker.conf")
        with open(conf, "w") as f:
            f.write(f"listen 127.0.0.1:{self.bport}\nlisten unix:{run}/broker.sock\n"
                    f"listen_socket_group {group}\nredis_url redis://127.0.0.1:{self.ctx.redis_port}\n"
                    f"workers {self.workers}\nstats_interval_s 0\nlog_level warn\n")
        br = spawn([BROKER, "-c", conf], SYS_CPU, err=self.logfile("broker"))
        self.procs = [br]
        end = time.monotonic() + 15
        while time.monotonic() < end:
            if br.poll() is not None:
                raise RuntimeError(f"broker exited with {br.returncode}")
            if len(children(br.pid)) == self.workers and self.healthy():
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("broker workers not ready")
        with open(os.path.join(ROOT, "docker", "nginx.conf")) as f:
            text = f.read()
        if self.proxy_buffer:
            text = text.replace("proxy_buffer_size 4k;", f"proxy_buffer_size {self.proxy_buffer};\n"
                                f"            proxy_busy_buffers_size {self.proxy_buffer};")
        if self.nginx_workers:
            # The scale run: more workers, each with all the connections its
            # 20,000 descriptors allow (a proxied WebSocket takes two), so
            # that reuseport's uneven spread does not make nginx close
            # handshakes in progress ("worker_connections are not enough").
            text = text.replace("worker_processes auto;", f"worker_processes {self.nginx_workers};")
            text = text.replace("worker_connections 16384;", "worker_connections 19500;")
        with open(os.path.join(prefix, "nginx.conf"), "w") as f:
            f.write(text)
        with open(os.path.join(prefix, "upstream.conf"), "w") as f:
            if self.upstream == "unix":
                f.write("".join(f"server unix:{run}/broker.sock.{i};\n"
                                for i in range(1, self.workers + 1)))
            else:
                f.write(f"server 127.0.0.1:{self.bport};\n")
        with open(os.path.join(prefix, "listen-https.conf"), "w") as f:
            f.write(f"listen 127.0.0.1:{self.port} ssl reuseport backlog=4096;\n")
        with open(os.path.join(prefix, "listen-http.conf"), "w") as f:
            f.write(f"listen 127.0.0.1:{free_port()} reuseport;\n")
        shutil.copytree(certs(self.ctx), os.path.join(prefix, "certs"), dirs_exist_ok=True)
        ng = spawn(["nginx", "-p", prefix + "/", "-c", os.path.join(prefix, "nginx.conf"),
                    "-g", "daemon off;"], SYS_CPU, err=self.logfile("nginx"))
        self.procs.append(ng)
        wait_port(self.port, ng)

    def healthy(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.bport}/healthz", timeout=1) as r:
                return r.status == 200
        except Exception:
            return False

    def pids(self):  # broker and nginx workers, not their idle masters
        return [c for p in self.procs for c in children(p.pid)]

    def metric(self, name):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.bport}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None

    def stop(self):
        kids = self.pids()
        for p in reversed(self.procs):
            stop(p, signal.SIGTERM)
        for w in kids:
            try:
                os.kill(w, signal.SIGKILL)
            except OSError:
                pass
        self.procs = []


class StackTcp(Stack):
    name, upstream = "stack-tcp", "tcp"


class Stack16k(Stack):
    """stack-unix with proxy_buffer_size 16k: nginx reads the broker's
    batches in 16 KB pieces and sends 16 KB TLS records (the memory against
    CPU trade of docker/nginx.conf's comment)."""
    name, proxy_buffer = "stack-unix-16k", "16k"


class NchanTls(Nchan):
    """nginx + nchan terminating TLS itself, with docker/nginx.conf's TLS
    settings and certificate, and the same bridge as nchan."""
    name = "nchan-tls"
    tls_opts = ["--insecure"]

    def url(self):
        return f"wss://127.0.0.1:{self.port}{self.path}"

    def conf_text(self, d):
        text = NGINX_CONF.format(so=NCHAN_SO, dir=d, port=self.port)
        text = text.replace(f"listen 127.0.0.1:{self.port} backlog=4096;",
                            f"listen 127.0.0.1:{self.port} ssl backlog=4096;\n"
                            f"        listen 127.0.0.1:{self.pub_port} backlog=4096;")
        return text.replace("    server {", TLS_CONF.format(certs=certs(self.ctx)) + "    server {", 1)


SYSTEM_CLASSES = {"broker": Broker, "floor": Floor, "ws-buffer": WsBuffer, "ws-string": WsString,
                  "socketio": SocketIO, "nchan": Nchan, "stack-unix": Stack, "stack-tcp": StackTcp,
                  "stack-unix-16k": Stack16k,
                  "nchan-tls": NchanTls}


# ---------------------------------------------------------------------------
# Load clients (loadgen, or sio-load.js for socket.io) and the publisher


class Clients:
    """n connections over `procs` client processes on CPU 1; each process
    subscribes its client i to PREFIX<i % k>."""

    def __init__(self, ctx, system, n, k, prefix, procs=1, sample=1, idle=False, source_ips=1,
                 concurrency=100, filt=None, mode=None, interval=1, extra=()):
        self.ctx, self.system, self.files = ctx, system, []
        self.procs = []
        mode = mode or ("query" if system.query_only else "frame")
        per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        for i, m in enumerate(per):
            tag = f"{system.name}-{prefix}-{i}-{ctx.seq()}"
            js, er = os.path.join(ctx.dir, tag + ".json"), os.path.join(ctx.dir, tag + ".err")
            if system.client == "sio":
                cmd = ["node", os.path.join(PEERS, "sio-load.js"), "--url", system.url()]
            else:
                cmd = [LOADGEN, "--url", system.url()]
            cmd += ["-n", m, "-k", k, "--prefix", prefix, "--sample", sample, "--interval", interval,
                    "--json", js, "-c", concurrency, "--subscribe-mode", mode]
            if source_ips > 1:
                cmd += ["--source-ips", source_ips]
            cmd += system.tls_opts
            if idle:
                cmd += ["--idle"]
            if filt is not None:
                cmd += ["--filter", filt]
            cmd += list(extra)
            self.files.append((js, er))
            self.procs.append(spawn(cmd, LOAD_CPU, err=open(er, "w")))

    def wait_ready(self, timeout=120):
        end = time.monotonic() + timeout
        pending = set(range(len(self.procs)))
        while pending and time.monotonic() < end:
            for i in list(pending):
                with open(self.files[i][1]) as f:
                    if "connections ready in" in f.read():
                        pending.discard(i)
                if i in pending and self.procs[i].poll() is not None:
                    raise RuntimeError(f"client exited early: {open(self.files[i][1]).read()[-500:]}")
            time.sleep(0.1)
        if pending:
            raise RuntimeError("clients not ready in time")

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def result(self):
        files = [js for js, _ in self.files if os.path.exists(js) and os.path.getsize(js) > 0]
        if not files:
            raise RuntimeError("no client summary")
        if len(files) == 1:
            with open(files[0]) as f:
                return json.load(f)
        out = os.path.join(self.ctx.dir, f"merged-{self.ctx.seq()}.json")
        subprocess.run([LOADGEN, "--merge"] + files + ["--json", out], check=True,
                       stderr=subprocess.DEVNULL)
        with open(out) as f:
            return json.load(f)

    def rates(self):
        """msgs/s of each progress line, per process."""
        out = []
        for _, er in self.files:
            with open(er) as f:
                out.append([float(x) for x in re.findall(r"^t=\S+ conns=\d+ frames/s=\d+ msgs/s=(\d+)",
                                                          f.read(), re.M)])
        return out


def steady(rates):
    """The median of the per-second rates while traffic flowed, the first and
    last (partial) seconds left out."""
    xs = [r for r in rates if r > 0]
    if len(xs) > 2:
        xs = xs[1:-1]
    return median(xs)


def publish(ctx, pids, prefix, k, duration, rate=0, size=None, mix=None, pipeline=100, tail=0.5,
            metric=None, history=False, count=0):
    """Runs publish on CPU 1 while sampling the CPU ticks and RSS of pids every
    second. Returns (publish summary, samples [(t, ticks, rss_kb, metric)])."""
    js = os.path.join(ctx.dir, f"publish-{prefix}-{ctx.seq()}.json")
    cmd = [PUBLISH, "--redis", f"127.0.0.1:{ctx.redis_port}", "-k", k, "--prefix", prefix,
           "-r", rate, "-d", duration, "-p", pipeline, "-q", "--json", js]
    cmd += ["--mix", mix] if mix else ["-s", size or 250]
    cmd += ["--history"] if history else []
    cmd += ["-n", count] if count else []

    def sample():
        return (time.monotonic(), ticks(pids), rss_kb(pids), metric() if metric else None, cpu_busy(),
                ticks([KSOFTIRQD0]) if KSOFTIRQD0 else 0)

    samples = [sample()]
    p = spawn(cmd, LOAD_CPU)
    nxt = samples[0][0] + 1.0
    while p.poll() is None:
        time.sleep(max(0.0, min(0.05, nxt - time.monotonic())))
        if time.monotonic() >= nxt:
            samples.append(sample())
            nxt += 1.0
    end = time.monotonic()
    samples.append(sample())
    if tail:
        time.sleep(tail)  # the last batches are flushed 200 ms after their first message
        samples.append(sample())
    with open(js) as f:
        summary = json.load(f)
    summary["window_s"] = end - samples[0][0]
    return summary, samples


def cpu_pct(a, b):
    return 100.0 * (b[1] - a[1]) / CLK / (b[0] - a[0]) if b[0] > a[0] else None


def core_busy(samples):
    """Median per-second busy % of CPU 0 (system under test, plus whatever
    else the machine runs there) and CPU 1 (Redis, publisher, clients): a CPU 1
    near 100% means the load side, not the system, set the pace."""
    s = samples[:-1] if len(samples) > 2 else samples
    out = {}
    for cpu in ("0", "1"):
        xs = [busy_pct(s[i][4], s[i + 1][4], cpu) for i in range(len(s) - 1)]
        xs = [x for x in xs if x is not None]
        out["cpu" + cpu + "_busy_pct"] = median(xs[1:-1] if len(xs) > 3 else xs)
    out["ksoftirqd0_pct"] = 100.0 * (s[-1][5] - s[0][5]) / CLK / (s[-1][0] - s[0][0]) \
        if s[-1][0] > s[0][0] else None
    return out


def cpu_windows(samples, width):
    """CPU % over consecutive windows of `width` samples (about `width` s),
    the last (partial, flush tail) sample excluded."""
    s = samples[:-1]
    return [cpu_pct(s[i], s[i + width]) for i in range(0, len(s) - width, width)]


def hist(h):
    return {k: h.get(k) for k in ("count", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")}


# ---------------------------------------------------------------------------
# Scenarios. Each takes the running system and returns a dict of results.


def sc_seed003(ctx, sysm):
    n, d = 500, ctx.p["seed003_s"]
    cl = Clients(ctx, sysm, n, 1, "seed", sample=1)
    cl.wait_ready()
    time.sleep(0.5)
    ph = perf_start(ctx, sysm, "seed003", max(1, d - 2))
    pub, s = publish(ctx, sysm.pids(), "seed", 1, d, rate=200, mix="3000:99,30000:1")
    perf_finish(ctx, ph)
    time.sleep(0.5)
    cl.stop()
    r = cl.result()
    wins = cpu_windows(s, 5) if len(s) > 7 else [cpu_pct(s[0], s[-1])]
    msgs = r["received"]["messages"]
    return {
        "clients": n, "opened": r["connections"]["opened"],
        "published": pub["messages"], "publish_rate": pub["rate"],
        "cpu_pct": median(wins), "cpu_pct_windows": wins, "cpu_pct_total": cpu_pct(s[0], s[-1]),
        "rss_kb_max": max(x[2] for x in s), "rss_kb_end": s[-1][2],
        "delivered": msgs, "delivered_frac": msgs / (pub["messages"] * n) if pub["messages"] else None,
        "delivered_per_s": msgs / pub["window_s"], "latency": hist(r["latency"]),
        "client_lag": hist(r["client_lag"]), "closed": r["connections"]["closed"],
        **core_busy(s),
    }


def sc_fanout(ctx, sysm):
    n, k, steps = 10000, 100, []
    for rate in ctx.p["fanout_rates"]:
        if not sysm.alive():
            steps.append({"rate": rate, "error": "system not running"})
            continue
        prefix = f"fan{rate}x"
        cl = Clients(ctx, sysm, n, k, prefix, procs=2, sample=10, source_ips=4)
        try:
            cl.wait_ready()
            time.sleep(1.0)
            ph = perf_start(ctx, sysm, f"fanout{rate}", max(1, ctx.p["fanout_s"] - 2))
            pub, s = publish(ctx, sysm.pids(), prefix, k, ctx.p["fanout_s"], rate=rate, size=250)
            perf_finish(ctx, ph)
            time.sleep(1.0)
        finally:
            cl.stop()
        r = cl.result()
        wins = cpu_windows(s, 1)
        wins = wins[1:-1] if len(wins) > 3 else wins
        expect = pub["messages"] * (n // k)
        msgs = r["received"]["messages"]
        frac = msgs / expect if expect else None
        p99 = r["latency"]["p99_ms"]
        steps.append({
            "rate": rate, "deliveries_per_s": rate * (n // k), "published": pub["messages"],
            "publish_rate": pub["rate"], "opened": r["connections"]["opened"],
            "closed": r["connections"]["closed"], "delivered": msgs, "delivered_frac": frac,
            "latency": hist(r["latency"]), "cpu_pct": median(wins), "cpu_pct_windows": wins,
            "cpu_pct_total": cpu_pct(s[0], s[-1]), "rss_kb_max": max(x[2] for x in s),
            "holds": bool(frac is not None and frac >= 0.99 and p99 < 1000 and
                          r["connections"]["opened"] == n),
            **core_busy(s),
        })
        log(f"  fanout {rate}/s: delivered {frac and frac * 100:.2f}% p99 {p99} ms "
            f"cpu {steps[-1]['cpu_pct']}%")
    return {"clients": n, "channels": k, "steps": steps}


def sc_storm(ctx, sysm):
    reps = []
    for i in range(ctx.p["storm_reps"]):
        a = (time.monotonic(), ticks(sysm.pids()), cpu_busy())
        cl = Clients(ctx, sysm, 10000, 100, f"storm{i}x", concurrency=100, mode="query",
                     source_ips=4, interval=5)
        try:
            cl.wait_ready()
            b = (time.monotonic(), ticks(sysm.pids()), cpu_busy())
            time.sleep(0.2)
        finally:
            cl.stop()
        r = cl.result()
        reps.append({"all_connected_s": r["handshake"]["all_connected_s"],
                     "tcp": hist(r["handshake"].get("tcp", {})),
                     "upgrade": hist(r["handshake"]["upgrade"]), "ready": hist(r["handshake"]["ready"]),
                     "opened": r["connections"]["opened"], "failed": r["connections"]["failed"],
                     # the system's CPU per handshake, and how busy the clients' core was
                     "cpu_us_per_conn": (b[1] - a[1]) / CLK * 1e6 / 10000,
                     "cpu1_busy_pct": busy_pct(a[2], b[2], "1")})
        time.sleep(0.5)
    return {
        "connections": 10000, "concurrency": 100, "subscribe_mode": "query", "runs": reps,
        "all_connected_s": median([x["all_connected_s"] for x in reps]),
        "handshake_mean_ms": median([x["upgrade"]["mean_ms"] for x in reps]),
        "handshake_p99_ms": median([x["upgrade"]["p99_ms"] for x in reps]),
        "opened": min(x["opened"] for x in reps),
        "cpu_us_per_conn": median([x["cpu_us_per_conn"] for x in reps]),
        "cpu1_busy_pct": median([x["cpu1_busy_pct"] for x in reps if x["cpu1_busy_pct"] is not None]),
    }


def ingest_once(ctx, sysm, size, prefix, duration, filt=None, others=()):
    """One client on PREFIX0 (with filter filt; `others`, already started,
    also subscribe there), publish as fast as Redis takes it; the system's
    rate from the client (and from the broker's counter)."""
    cl = Clients(ctx, sysm, 1, 1, prefix, sample=20, filt=filt)
    cl.wait_ready()
    for c in others:
        c.wait_ready()
    time.sleep(0.5)
    metric = None
    if isinstance(sysm, Broker):
        metric = lambda: sysm.metric("broker_redis_messages_total")  # noqa: E731
    ph = perf_start(ctx, sysm, prefix, max(1, duration - 2))
    pub, s = publish(ctx, sysm.pids(), prefix, 1, duration, rate=0, size=size, pipeline=1000,
                     metric=metric, tail=0)
    perf_finish(ctx, ph)
    s.append(s[-1])  # no flush tail here: keep every window
    # Wait for the backlog (in Redis or in the system) to drain, up to 15 s.
    for _ in range(30):
        time.sleep(0.5)
        rr = cl.rates()[0]
        if len(rr) >= 2 and rr[-1] == 0 and rr[-2] == 0:
            break
    cl.stop()
    r = cl.result()
    rate = steady(cl.rates()[0])
    wins = cpu_windows(s, 1)
    wins = wins[1:-1] if len(wins) > 3 else wins
    cpu = median(wins)
    res = {"size": size, "publish_rate": pub["rate"], "published": pub["messages"],
           "client_rate": rate, "received": r["received"]["messages"],
           "received_frac": r["received"]["messages"] / pub["messages"] if pub["messages"] else None,
           "cpu_pct": cpu, "cpu_pct_windows": wins,
           "per_core": rate / (cpu / 100.0) if rate and cpu else None,
           "latency": hist(r["latency"]), **core_busy(s)}
    if metric:
        res["broker_rate"] = (s[-1][3] - s[0][3]) / (s[-1][0] - s[0][0])
    return res


def sc_ingest(ctx, sysm):
    out = {}
    for size in (250, 3000):
        sysm.restart()  # no backlog or heap left over from the previous run
        out[str(size)] = ingest_once(ctx, sysm, size, f"ing{size}x", ctx.p["ingest_s"])
        o = out[str(size)]
        log(f"  ingest {size} B: client {o['client_rate']} msgs/s, publisher {o['publish_rate']}, "
            f"cpu {o['cpu_pct']}%")
    return out


def sc_filters(ctx, sysm):
    """N distinct filters on one channel of 3 KB payloads: one matches every
    message ({"seq":{"$gte":0}}), N-1 match none ({"seq":{"$lt":-j}}); each
    filter is one loadgen process (loadgen sends one filter for all its
    connections), so the broker evaluates N filters per message and sends one
    stream."""
    out = {}
    for nf in (1, 10, 100):
        sysm.restart()
        prefix = f"filt{nf}x"
        others = [Clients(ctx, sysm, 1, 1, prefix, filt=json.dumps({"seq": {"$lt": -j}}), interval=5)
                  for j in range(1, nf)]
        try:
            res = ingest_once(ctx, sysm, 3000, prefix, ctx.p["filters_s"],
                              filt=json.dumps({"seq": {"$gte": 0}}), others=others)
        finally:
            for c in others:
                c.stop()
        res["filters"] = nf
        out[str(nf)] = res
        log(f"  filters {nf}: client {res['client_rate']} msgs/s, broker {res.get('broker_rate')}, "
            f"cpu {res['cpu_pct']}%")
    return out


def redis_cli(ctx, *args):
    r = subprocess.run(["redis-cli", "-p", str(ctx.redis_port)] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=30, check=True)
    return r.stdout


def commandstats(ctx):
    """calls per command, from INFO commandstats."""
    out = {}
    for m in re.finditer(r"^cmdstat_([a-z_|]+):calls=(\d+)", redis_cli(ctx, "INFO", "commandstats"), re.M):
        out[m.group(1)] = int(m.group(2))
    return out


def sc_history(ctx, sysm):
    """History (PROTOCOL.md section 7), alternating plain PUBLISH and FCALL
    broker_publish: Redis CPU per published message; the broker's live-path
    CPU on the same fanout; then 10,000 clients of 10 channels resuming 50
    messages each through one worker: time to all recovered, and the history
    reads Redis served (INFO commandstats)."""
    out = {"publish": {"publish": [], "fcall": []}, "live": {"publish": [], "fcall": []}}
    n, k, rate, d = 10000, 100, 10000, ctx.p["fanout_s"]
    for rep_i in range(ctx.p["history_reps"]):
        for kind in ("publish", "fcall"):
            hist = kind == "fcall"
            # Redis's CPU per message, publishing as fast as one pipelined
            # connection goes, to channels the broker holds (one subscriber
            # link each).
            prefix = f"hp{rep_i}{kind}x"
            cl = Clients(ctx, sysm, k, k, prefix, sample=100)
            try:
                cl.wait_ready()
                time.sleep(0.3)
                t0 = ticks([ctx.redis_pid])
                pub, _ = publish(ctx, sysm.pids(), prefix, k, 0, count=ctx.p["history_pub_n"],
                                 history=hist, tail=0.3)
                t1 = ticks([ctx.redis_pid])
            finally:
                cl.stop()
            out["publish"][kind].append({
                "messages": pub["messages"], "rate": pub["rate"], "errors": pub["errors"],
                "redis_us_per_msg": (t1 - t0) / CLK * 1e6 / max(1, pub["messages"])})
            # The broker's live path: fanout at 10,000 msgs/s.
            prefix = f"hl{rep_i}{kind}x"
            cl = Clients(ctx, sysm, n, k, prefix, procs=2, sample=10, source_ips=4)
            try:
                cl.wait_ready()
                time.sleep(1.0)
                pub, smp = publish(ctx, sysm.pids(), prefix, k, d, rate=rate, size=250, history=hist)
                time.sleep(1.0)
            finally:
                cl.stop()
            r = cl.result()
            wins = cpu_windows(smp, 1)
            wins = wins[1:-1] if len(wins) > 3 else wins
            expect = pub["messages"] * (n // k)
            out["live"][kind].append({
                "published": pub["messages"], "errors": pub["errors"], "cpu_pct": median(wins),
                "delivered_frac": r["received"]["messages"] / expect if expect else None,
                "p99_ms": r["latency"]["p99_ms"]})
    for part in ("publish", "live"):
        key = "redis_us_per_msg" if part == "publish" else "cpu_pct"
        for kind in ("publish", "fcall"):
            out[part][kind + "_median"] = median([x[key] for x in out[part][kind]])
        out[part]["ratio"] = out[part]["fcall_median"] / out[part]["publish_median"]
    # Resume: 100 messages on each of 10 channels, then 10,000 clients come
    # back from 50 messages before the end.
    kr, behind, nres = 10, 50, 10000
    publish(ctx, [], "hr", kr, 0, count=kr * 100, history=True, tail=0)
    since = os.path.join(ctx.dir, "since.txt")
    with open(since, "w") as f:
        for i in range(kr):
            m = redis_cli(ctx, "HMGET", f"broker:{{hr{i}}}:m", "o", "e").split()
            f.write(f"hr{i} {int(m[0]) - behind} {m[1]}\n")
    before = commandstats(ctx)
    cl = Clients(ctx, sysm, nres, kr, "hr", sample=1000, extra=["--since", since, "--expect", behind])
    try:
        cl.wait_ready()
        time.sleep(3.0)  # the recovered messages follow the acks within milliseconds
    finally:
        cl.stop()
    r = cl.result()
    after = commandstats(ctx)
    reads = {c: after[c] - before.get(c, 0) for c in after
             if c.startswith(("fcall", "xrange", "xrevrange")) and after[c] != before.get(c, 0)}
    out["resume"] = {
        "clients": nres, "channels": kr, "behind": behind,
        "opened": r["connections"]["opened"], "recovered": r["resume"]["recovered"],
        "not_recovered": r["resume"]["not_recovered"],
        "complete": r["resume"]["complete"]["count"], "all_complete_s": r["resume"]["all_complete_s"],
        "complete_ms": hist(r["resume"]["complete"]), "ready_ms": hist(r["handshake"]["ready"]),
        "all_connected_s": r["handshake"]["all_connected_s"],
        "messages": r["received"]["messages"], "redis_calls": reads,
        "history_reads": reads.get("fcall_ro", 0)}
    return out


def sockets(pid):
    """Open sockets of a process."""
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
            except OSError:
                pass
    except OSError:
        pass
    return n


def broker_workers(sysm):
    return children(sysm.procs[0].pid) if isinstance(sysm, (Broker, Stack)) and sysm.procs else []


def idle_run(ctx, sysm, n, procs, source_ips):
    time.sleep(1.0)
    before = rss_kb(sysm.pids())
    socks0 = [sockets(w) for w in broker_workers(sysm)]
    cl = Clients(ctx, sysm, n, 100, "idle", procs=procs, idle=True, source_ips=source_ips,
                 interval=5)
    try:
        cl.wait_ready(timeout=300)
        time.sleep(3.0)
        after = rss_kb(sysm.pids())
        conns = None
        if isinstance(sysm, (Broker, Stack)):
            conns = sysm.metric("broker_connections")
        # How the connections spread over the broker's workers: each one's
        # sockets now, less those it had before.
        spread = [sockets(w) - b for w, b in zip(broker_workers(sysm), socks0)]
    finally:
        cl.stop()
    r = cl.result()
    held = r["connections"]["open_at_end"]
    return {"connections": n, "held": held, "failed": r["connections"]["failed"],
            "broker_connections": conns, "per_worker": spread,
            "rss_kb_before": before, "rss_kb_after": after,
            "bytes_per_conn": (after - before) * 1024.0 / held if held else None,
            "all_connected_s": r["handshake"]["all_connected_s"], "processes": procs}


def sc_idle(ctx, sysm):
    # loadgen, the peers and nginx each hold up to 20,000 open files: one
    # client process and one server process. Through a proxy every client
    # costs the proxy two descriptors: fewer clients there.
    if sysm.tls_opts:
        return idle_run(ctx, sysm, ctx.p["stack_idle_n"], 1, 4)
    return idle_run(ctx, sysm, ctx.p["idle_n"], 1, 4)


def sc_idle100k(ctx, sysm):
    n = ctx.p["idle100k_n"]
    return idle_run(ctx, sysm, n, 6, 8)


def sc_stack100k(ctx):
    """100,000 wss connections held through the whole stack: nginx with 16
    workers (each proxied WebSocket takes two of a worker's 20,000
    descriptors), the broker with 6, over Unix sockets, and 6 loadgen
    processes on 8 source addresses; memory per connection of every nginx
    and broker process."""
    n = ctx.p["stack100k_n"]
    sysm = Stack(ctx, workers=6, nginx_workers=16)
    t0 = time.monotonic()
    try:
        sysm.start()
        r = idle_run(ctx, sysm, n, 6, 8)
    except Exception as e:
        log(f"stack100k failed: {e}")
        r = {"error": str(e)}
    finally:
        sysm.stop()
    r["elapsed_s"] = round(time.monotonic() - t0, 1)
    return r


# ---------------------------------------------------------------------------


class Ctx:
    def __init__(self, d, params):
        self.dir, self.p, self._seq = d, params, 0
        self.redis_port = self.redis_pid = None
        self.perf = False

    def seq(self):
        self._seq += 1
        return self._seq


def perf_start(ctx, sysm, tag, seconds):
    """With --perf: `perf record -g` of the system's processes (the broker's
    workers; every nginx worker and broker worker of a stack) for `seconds`
    (call-graph profile; it costs CPU, so --perf runs are not for the tables)."""
    if not ctx.perf or not isinstance(sysm, (Broker, Stack, Nchan)) or shutil.which("perf") is None:
        return None
    tag = f"{sysm.name}-{tag}"
    data = os.path.join(ctx.dir, f"perf-{tag}.data")
    pids = ",".join(str(p) for p in sysm.pids())
    p = subprocess.Popen(["perf", "record", "-g", "-p", pids, "-o", data, "--", "sleep", str(seconds)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    STARTED.append(p)
    return (p, data, tag)


def perf_finish(ctx, h):
    if h is None:
        return None
    p, data, tag = h
    p.wait(60)
    txt = os.path.join(ctx.dir, f"perf-{tag}.txt")
    with open(txt, "w") as f:
        for args in (["--sort", "dso", "-g", "none"], ["--sort", "sym", "-g", "none", "--percent-limit", "0.4"],
                     ["--sort", "sym", "-g", "caller,0.5,callee,function,percent", "--percent-limit", "3"]):
            r = subprocess.run(["perf", "report", "-i", data, "--no-children", "--stdio"] + args,
                               capture_output=True, text=True)
            f.write(r.stdout + "\n")
    log(f"  perf profile: {txt}")
    return txt


def versions():
    def cmd(c):
        try:
            r = subprocess.run(c, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except Exception:
            return None

    def npm_version(pkg):
        try:
            with open(os.path.join(PEERS, "node_modules", pkg, "package.json")) as f:
                return json.load(f)["version"]
        except OSError:
            return None

    cpu = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = None
    with open("/proc/meminfo") as f:
        mem = f.readline().split()[1]
    try:
        git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
    except Exception:
        git = None
    return {
        "broker": cmd([BROKER, "--version"]), "git": git, "node": cmd(["node", "--version"]),
        "socket.io": npm_version("socket.io"), "engine.io": npm_version("engine.io"),
        "ws": npm_version("ws"), "ioredis": npm_version("ioredis"),
        "nginx": cmd(["nginx", "-v"]),
        "nchan": cmd(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-nchan"]),
        "redis": cmd(["redis-server", "--version"]), "kernel": os.uname().release,
        "cpu": cpu, "cpus": os.cpu_count(), "mem_gib": round(int(mem) / 1048576, 1),
        "nofile": cmd(["sh", "-c", "ulimit -Hn"]), "gnuplot": cmd(["gnuplot", "--version"]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def build(systems):
    subprocess.run(["make", "-C", ROOT, "-s", "build/broker", "build/loadgen", "build/publish"],
                   check=True)
    src = os.path.join(PEERS, "floor.c")
    if not os.path.exists(FLOOR) or os.path.getmtime(FLOOR) < os.path.getmtime(src):
        os.makedirs(os.path.dirname(FLOOR), exist_ok=True)
        subprocess.run(["cc", "-std=c11", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-Wshadow",
                        "-D_GNU_SOURCE", src, "-o", FLOOR, "-lcrypto"], check=True)
    if any(s in ("ws-buffer", "ws-string", "socketio", "nchan", "nchan-tls") for s in systems):
        if shutil.which("node") is None:
            raise SystemExit("node is missing: scripts/deps.sh nodejs")
        if not os.path.isdir(os.path.join(PEERS, "node_modules")):
            if shutil.which("npm") is None:  # Debian's nodejs comes without it
                raise SystemExit("npm is missing: apt-get install npm (NodeSource's nodejs has it)")
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEERS,
                           check=True)
    if ("nchan" in systems or "nchan-tls" in systems) and not os.path.exists(NCHAN_SO):
        raise SystemExit(f"{NCHAN_SO} is missing: scripts/deps.sh libnginx-mod-nchan")


SCENARIO_FUNCS = {"seed003": sc_seed003, "fanout": sc_fanout, "storm": sc_storm,
                  "ingest": sc_ingest, "filters": sc_filters, "idle": sc_idle, "history": sc_history}
# Scenarios whose CPU figures decide a target: the broker and the floor run
# them --reps times, alternating, and the median of each number is kept.
REPEATED = ("seed003", "fanout")
PAIRED = ("broker", "floor")


def combine(runs):
    """The median of every number over repeated runs of one scenario (lists
    and strings from the first run); fanout's "holds" is decided again from
    the medians."""
    if len(runs) == 1:
        return runs[0]

    def med(vals):
        v0 = vals[0]
        if isinstance(v0, bool) or not isinstance(v0, (int, float, dict)):
            return v0
        if isinstance(v0, dict):
            return {k: med([v.get(k) for v in vals if isinstance(v, dict)]) for k in v0}
        nums = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return median(nums) if nums else v0

    if any("error" in r for r in runs):
        ok = [r for r in runs if "error" not in r]
        if not ok:
            return runs[0]
        runs = ok
    out = med(runs)
    if "steps" in runs[0]:
        out["steps"] = []
        for k in range(len(runs[0]["steps"])):
            steps = [r["steps"][k] for r in runs if k < len(r["steps"])]
            good = [st for st in steps if "error" not in st]
            if not good:
                out["steps"].append(steps[0])
                continue
            st = med(good)
            st["holds"] = bool(st["delivered_frac"] is not None and st["delivered_frac"] >= 0.99 and
                               st["latency"]["p99_ms"] < 1000 and st["opened"] == runs[0]["clients"])
            st["reps"] = [{"cpu_pct": x.get("cpu_pct"), "delivered_frac": x.get("delivered_frac"),
                           "p99_ms": x.get("latency", {}).get("p99_ms")} for x in steps]
            out["steps"].append(st)
    else:
        out["reps"] = [{k: r.get(k) for k in ("cpu_pct", "rss_kb_max", "delivered_per_s")
                        if k in r} or {sz: {"client_rate": r[sz].get("client_rate"),
                                            "cpu_pct": r[sz].get("cpu_pct")}
                                       for sz in r if isinstance(r[sz], dict) and "cpu_pct" in r[sz]}
                       for r in runs]
    out["runs"] = len(runs)
    return out


def run_one(ctx, name, sc):
    """Starts a fresh `name`, runs scenario sc on it, stops it."""
    sysm = SYSTEM_CLASSES[name](ctx)
    t0 = time.monotonic()
    try:
        sysm.start()
        r = SCENARIO_FUNCS[sc](ctx, sysm)
    except Exception as e:
        log(f"{name}: {sc} failed: {e}")
        r = {"error": str(e)}
    r["elapsed_s"] = round(time.monotonic() - t0, 1)
    r["system_alive"] = sysm.alive()
    sysm.stop()
    time.sleep(0.5)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", action="store_true", help="every system (make bench-compare)")
    ap.add_argument("--stack", action="store_true",
                    help="the whole stack through nginx TLS (make bench-stack): "
                         f"{','.join(STACK_SYSTEMS)} in {','.join(STACK_SCENARIOS)}, and stack100k")
    ap.add_argument("--systems", help=f"comma-separated, of {','.join(ALL_SYSTEMS)}")
    ap.add_argument("--scenarios", help=f"comma-separated, of {','.join(ALL_SCENARIOS)}")
    ap.add_argument("--reps", type=int, default=None,
                    help="runs of seed003 and fanout for the broker and the floor, "
                         "alternating (default 3; the medians are reported)")
    ap.add_argument("--quick", action="store_true", help="short runs, for debugging the suite")
    ap.add_argument("--perf", action="store_true",
                    help="perf record -g the broker's workers during seed003, fanout, ingest and "
                         "filters (profiles in the run directory; the CPU figures of such a run are "
                         "inflated by perf)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="results directory")
    a = ap.parse_args()

    if a.stack:
        systems = a.systems.split(",") if a.systems else STACK_SYSTEMS
        scenarios = a.scenarios.split(",") if a.scenarios else STACK_SCENARIOS + ["stack100k"]
        global PAIRED
        PAIRED = ("stack-unix", "stack-unix-16k", "nchan-tls")
    else:
        systems = a.systems.split(",") if a.systems else (ALL_SYSTEMS if a.compare else
                                                          ["broker", "floor"])
        scenarios = [x for x in (a.scenarios.split(",") if a.scenarios else ALL_SCENARIOS)
                     if x != "stack100k" or a.scenarios]
    reps = a.reps if a.reps is not None else (1 if a.quick else 3)
    for s in systems:
        if s not in SYSTEM_CLASSES:
            ap.error(f"unknown system {s}")
    for s in scenarios:
        if s not in ALL_SCENARIOS:
            ap.error(f"unknown scenario {s}")
    build(systems)
    run_dir = os.path.join(ROOT, "var", "bench", time.strftime("run-%Y%m%d-%H%M%S"))
    os.makedirs(run_dir, exist_ok=True)
    os.makedirs(a.out, exist_ok=True)
    ctx = Ctx(run_dir, QUICK if a.quick else FULL)
    ctx.perf = a.perf
    results = {"meta": versions(), "params": dict(ctx.p, reps=reps), "quick": a.quick,
               "systems": systems, "scenarios": {s: {} for s in scenarios}, "run_dir": run_dir}
    t_start = time.monotonic()

    def save():
        results["meta"]["duration_s"] = round(time.monotonic() - t_start)
        with open(os.path.join(a.out, "results.json"), "w") as f:
            json.dump(results, f, indent=1)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        ctx.redis_port = free_port()
        redis = spawn(["redis-server", "--port", ctx.redis_port, "--bind", "127.0.0.1", "--save", "",
                       "--appendonly", "no", "--client-output-buffer-limit", "pubsub 2gb 2gb 0"],
                      LOAD_CPU, out=open(os.path.join(run_dir, "redis.log"), "w"))
        wait_port(ctx.redis_port, redis)
        ctx.redis_pid = redis.pid
        # Scenario by scenario, so that the systems compared in a table ran
        # minutes apart at most on this shared machine.
        for sc in scenarios:
            if sc in ("idle100k", "stack100k"):
                continue
            names = [n for n in systems if (sc != "filters" or SYSTEM_CLASSES[n].filters) and
                     (sc != "history" or SYSTEM_CLASSES[n].history)]
            runs = {n: [] for n in names}
            for rep in range(reps if sc in REPEATED else 1):
                for name in names:
                    if rep > 0 and name not in PAIRED:
                        continue
                    log(f"{sc}: {name}" + (f" (run {rep + 1})" if rep else ""))
                    runs[name].append(run_one(ctx, name, sc))
                    results["scenarios"][sc][name] = combine(runs[name])
                    save()
        if "idle100k" in scenarios and "broker" in systems:
            sysm = Broker(ctx, workers=6)
            log("idle100k: broker, 6 workers")
            t0 = time.monotonic()
            try:
                sysm.start()
                r = sc_idle100k(ctx, sysm)
            except Exception as e:
                log(f"idle100k failed: {e}")
                r = {"error": str(e)}
            r["elapsed_s"] = round(time.monotonic() - t0, 1)
            results["scenarios"]["idle100k"]["broker"] = r
            sysm.stop()
        if "stack100k" in scenarios:
            log("stack100k: nginx 16 workers, broker 6 workers, Unix sockets")
            results["scenarios"]["stack100k"]["stack-unix"] = sc_stack100k(ctx)
            save()
        stop(redis)
    finally:
        stop_all()
        save()
    sys.path.insert(0, HERE)
    import report
    report.write(results, a.out)
    log(f"done in {round(time.monotonic() - t_start)} s: {a.out}/results.md")


if __name__ == "__main__":
    main()

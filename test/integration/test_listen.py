"""Listeners (listen.h): several `listen` lines, Unix sockets (one per
worker, mode and group, a stale file replaced, a running broker's refused,
files removed at exit), and the client address behind trusted proxies with
max_connections_per_ip (peer.h)."""
import asyncio
import grp
import os
import socket
import stat
import subprocess
import time

import pytest
import websockets

import helpers
from helpers import (SLOW, http_request, metric_sum, numsub, publish, recv_batch, run,
                     subscribe, tmpdir, uniq, wait_until, ws_connect)


def unix_http(path, data, timeout=5.0):
    """One request over a Unix socket; the raw answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


def ws_request(xff=None, real_ip=None):
    extra = ""
    if xff is not None:
        extra += "X-Forwarded-For: %s\r\n" % xff
    if real_ip is not None:
        extra += "X-Real-IP: %s\r\n" % real_ip
    return helpers.upgrade_request(extra=extra)


class Held:
    """Raw upgraded connections kept open (over TCP or a Unix socket)."""

    def __init__(self):
        self.socks = []

    def open(self, target, xff=None, real_ip=None):
        if isinstance(target, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5 * SLOW)
            s.connect(target)
        else:
            s = socket.create_connection(("127.0.0.1", target), timeout=5 * SLOW)
        s.sendall(ws_request(xff, real_ip))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
        self.socks.append(s)
        return int(head.split(b" ", 2)[1]) if head else None

    def close(self):
        for s in self.socks:
            s.close()
        self.socks = []


def sock_path(d):
    return os.path.join(d, "broker.sock")


def test_unix_and_tcp_listeners_serve_alike(redis, make_broker):
    """A Unix socket per worker (PATH.1, PATH.2) and a TCP port at once:
    every one answers /healthz and carries WebSockets; each worker has its
    own socket (two clients on .1 and .2 are two Redis subscribers); the
    files get listen_socket_mode and listen_socket_group, and go at exit."""
    d = tmpdir("unix-")
    path = sock_path(d)
    b = helpers.Broker(redis.port, workers=2, listen_socket_mode="0660",
                       listen_socket_group="www-data")
    b.cfg_lines = ["listen unix:%s" % path]
    start_multi(b)
    try:
        for i in (1, 2):
            p = "%s.%d" % (path, i)
            st = os.stat(p)
            assert stat.S_ISSOCK(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
            assert st.st_gid == grp.getgrnam("www-data").gr_gid
            assert unix_http(p, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").startswith(
                b"HTTP/1.1 200")
        assert b.healthz()[0] == 200
        ch = uniq("unix")

        async def body():
            a = await websockets.unix_connect(path + ".1", "ws://broker/ws")
            c = await websockets.unix_connect(path + ".2", "ws://broker/ws")
            t = await ws_connect(b.port)
            try:
                for w in (a, c, t):
                    await subscribe(w, ch)
                # Two workers: two subscriptions in Redis, at most.
                assert 1 <= numsub(redis.port, ch) <= 2
                assert publish(redis.port, ch, '"x"') >= 1
                for w in (a, c, t):
                    assert helpers.parse_batch(await asyncio.wait_for(w.recv(), 5 * SLOW)) == (ch, ['"x"'])
            finally:
                for w in (a, c, t):
                    await w.close()
        run(body(), timeout=60)
        # Worker 1 accepts on .1 and worker 2 on .2: a client on each makes
        # two subscribers.
        async def two():
            a = await websockets.unix_connect(path + ".1", "ws://broker/ws")
            c = await websockets.unix_connect(path + ".2", "ws://broker/ws")
            ch2 = uniq("per-worker")
            try:
                await subscribe(a, ch2)
                await subscribe(c, ch2)
                assert numsub(redis.port, ch2) == 2
            finally:
                await a.close()
                await c.close()
        run(two(), timeout=30)
    finally:
        b.stop()
    assert not os.path.exists(path + ".1") and not os.path.exists(path + ".2")


def start_multi(b, wait="healthz"):
    """Starts b with b.lines after its keys (a `listen` line more)."""
    b.lines = getattr(b, "cfg_lines", [])
    return b.start(wait=wait)


def test_stale_socket_replaced_running_one_refused(redis):
    d = tmpdir("stale-")
    path = sock_path(d)
    # A file left by a broker that died: bound, never accepted on, not removed.
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path + ".1")
    dead.close()
    a = helpers.Broker(redis.port)
    a.cfg_lines = ["listen unix:%s" % path]
    start_multi(a)
    try:
        assert "replaced a stale socket" in a.log()
        assert unix_http(path + ".1", b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").startswith(
            b"HTTP/1.1 200")
        # A second broker on the same socket (and a free port) is refused.
        b2 = helpers.Broker(redis.port)
        b2.cfg_lines = ["listen unix:%s" % path]
        start_multi(b2, wait=None)
        try:
            rc = b2.proc.wait(timeout=10 * SLOW)
        finally:
            helpers.kill_proc(b2.proc)
        assert rc == 1
        assert "a process accepts on it (is another broker running?)" in b2.log(), b2.log()
        # The first one is untouched: its file is still there and answers.
        assert unix_http(path + ".1", b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").startswith(
            b"HTTP/1.1 200")
        # A file that is no socket is never replaced.
        other = sock_path(tmpdir("notsock-"))
        open(other + ".1", "w").close()
        b3 = helpers.Broker(redis.port)
        b3.cfg_lines = ["listen unix:%s" % other]
        start_multi(b3, wait=None)
        try:
            assert b3.proc.wait(timeout=10 * SLOW) == 1
        finally:
            helpers.kill_proc(b3.proc)
        assert "is not a socket" in b3.log()
        assert os.path.isfile(other + ".1")
        # SIGHUP with the same listeners: still serving.
        os.kill(a.proc.pid, 1)
        wait_until(lambda: "configuration reloaded" in a.log(), 10 * SLOW, what="reload")
        assert unix_http(path + ".1", b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").startswith(
            b"HTTP/1.1 200")
    finally:
        a.stop()
    assert not os.path.exists(path + ".1")


@pytest.mark.parametrize("lines,word", [
    (["listen unix:relative.sock"], "unix:/absolute/path"),
    (["listen unix:/" + "x" * 120], "unix:/absolute/path"),
    (["listen 127.0.0.1:1", "listen 127.0.0.1:1"], "listed twice"),
    (["listen unix:/tmp/a.sock", "listen unix:/tmp/a.sock"], "listed twice"),
    (["listen 127.0.0.1:%d" % (9000 + i) for i in range(9)], "at most 8"),
    (["listen_socket_mode 0999"], "octal"),
    (["listen_socket_mode 1777"], "octal"),
    (["trusted_proxies 10.0.0.0/33"], "not a network"),
    (["trusted_proxies 10.0.0.0/8, bogus"], "'bogus' is not a network"),
    (["max_connections_per_ip -1"], "integer"),
])
def test_check_refuses_bad_listen_keys(lines, word):
    d = tmpdir("badconf-")
    conf = os.path.join(d, "b.conf")
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    r = subprocess.run([helpers.BROKER_BIN, "-t", "-c", conf], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 1, r.stdout
    assert conf + ":" in r.stderr and word in r.stderr, r.stderr


def test_check_accepts_good_listen_keys():
    d = tmpdir("goodconf-")
    conf = os.path.join(d, "b.conf")
    with open(conf, "w") as f:
        f.write("listen unix:/run/broker/broker.sock\nlisten 127.0.0.1:8081\n"
                "listen_socket_mode 0600\nlisten_socket_group www-data\n"
                "trusted_proxies 127.0.0.1, 10.0.0.0/8, ::1, fd00::/8\n"
                "max_connections_per_ip 50\n")
    r = subprocess.run([helpers.BROKER_BIN, "-t", "-c", conf], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr


def test_max_connections_per_ip_and_trusted_proxies(redis):
    """Per client address, 2 sessions per worker. A direct TCP client is its
    own address whatever X-Forwarded-For says (an untrusted peer is not
    believed); Unix-socket peers (nginx) are trusted, so X-Forwarded-For
    names the client, read from the right past trusted proxies; X-Real-IP
    is the fallback."""
    d = tmpdir("perip-")
    path = sock_path(d)
    b = helpers.Broker(redis.port, max_connections_per_ip=2, trusted_proxies="10.0.0.0/8")
    b.cfg_lines = ["listen unix:%s" % path]
    start_multi(b)
    held = Held()
    try:
        # Direct: all 127.0.0.1, the header ignored.
        assert held.open(b.port, xff="1.1.1.1") == 101
        assert held.open(b.port, xff="2.2.2.2") == 101
        assert held.open(b.port, xff="3.3.3.3") == 503
        # Through the Unix socket: the header names the client.
        s1 = path + ".1"
        assert held.open(s1, xff="203.0.113.7") == 101
        assert held.open(s1, xff="198.51.100.1, 203.0.113.7") == 101
        assert held.open(s1, xff="203.0.113.7") == 503
        # Read from the right, past trusted proxies (10/8): the client is .9.
        assert held.open(s1, xff="203.0.113.9, 10.1.2.3") == 101
        assert held.open(s1, xff="203.0.113.9, 10.9.9.9, 10.1.2.3") == 101
        assert held.open(s1, xff="203.0.113.9,10.0.0.1") == 503
        # X-Real-IP when there is no X-Forwarded-For.
        assert held.open(s1, real_ip="192.0.2.5") == 101
        assert held.open(s1, real_ip="192.0.2.5") == 101
        assert held.open(s1, real_ip="192.0.2.5") == 503
        # Nothing usable named: unknown, not limited.
        for _ in range(3):
            assert held.open(s1, xff="not-an-address") == 101
        assert metric_sum(b.port, "broker_client_errors_total", kind="ip_limit") == 4
        # Leaving frees the place.
        held.close()
        wait_until(lambda: metric_sum(b.port, "broker_connections") == 0, 10 * SLOW,
                   what="sessions gone")
        assert held.open(s1, xff="203.0.113.7") == 101
        assert held.open(s1, xff="203.0.113.7") == 101
    finally:
        held.close()
        b.stop()
    assert "over max_connections_per_ip" in b.log()

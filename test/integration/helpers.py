"""Helpers for the broker's integration tests: real redis-server and broker
processes, a raw RESP client, raw HTTP and WebSocket clients over plain
sockets (for malformed input), and small asyncio helpers around the
`websockets` library.

Everything talks to 127.0.0.1 on ports chosen free at runtime. Every process
started here is tracked in LIVE and killed by PID if a test leaves it behind.
"""
import asyncio
import base64
import hashlib
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid

import websockets

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
BROKER_BIN = os.path.abspath(os.environ.get("BROKER_BIN") or os.path.join(REPO, "build", "broker"))
REDIS_BIN = os.environ.get("REDIS_SERVER", "redis-server")
# The ASan+UBSan build is several times slower: stretch the waits (never the
# bounds the broker must keep, only how long we wait for things to happen).
# BROKER_WRAPPER runs the broker under a tool, e.g. valgrind (make test-valgrind).
BROKER_WRAPPER = os.environ.get("BROKER_WRAPPER", "").split()
SLOW = 6.0 if BROKER_WRAPPER else 3.0 if "asan" in BROKER_BIN else 1.0
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")
# Under valgrind --quiet, any line valgrind writes (==PID== ...) is a report:
# an invalid access, an uninitialised value, a definite leak, in any process.
VALGRIND_ERRORS = re.compile(r"^==\d+== \S", re.M)

LIVE = set()  # Popen objects not yet reaped
# Every temporary file of the session lives under here; conftest removes it.
TMP_ROOT = tempfile.mkdtemp(prefix="broker-it-")


def tmpdir(prefix):
    return tempfile.mkdtemp(prefix=prefix, dir=TMP_ROOT)


def uniq(prefix="ch"):
    """A channel name no other test uses."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Polls pred() until it returns a true value (returned), or fails the
    test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def kill_proc(p):
    """Kills one process we started, by its PID, and reaps it."""
    if p.poll() is None:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    LIVE.discard(p)


def kill_all_live():
    for p in list(LIVE):
        kill_proc(p)


def port_accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# RESP (Redis protocol), binary safe.

class RedisError(Exception):
    pass


def resp_encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, (bytes, bytearray)) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class RespConn:
    """One blocking connection to Redis. Replies: int, bytes, str (simple
    strings), list, None; error replies are returned as RedisError."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, *args):
        self.sock.sendall(resp_encode(*args))

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("redis closed the connection")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def read_reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RedisError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read_reply() for _ in range(n)]
        raise ValueError("bad RESP type %r" % line)

    def command(self, *args):
        self.send(*args)
        r = self.read_reply()
        if isinstance(r, RedisError):
            raise r
        return r


def redis_command(port, *args, timeout=5.0):
    with RespConn(port, timeout) as c:
        return c.command(*args)


def publish(port, channel, payload):
    """PUBLISH with binary-safe arguments; returns Redis's integer reply (the
    number of subscribed connections that got it)."""
    r = redis_command(port, "PUBLISH", channel, payload)
    assert isinstance(r, int), r
    return r


def publish_many(port, items):
    """Pipelines PUBLISH for each (channel, payload) in one write; returns
    the integer replies."""
    items = list(items)
    with RespConn(port, timeout=30) as c:
        c.sock.sendall(b"".join(resp_encode("PUBLISH", ch, p) for ch, p in items))
        out = [c.read_reply() for _ in items]
    assert all(isinstance(r, int) for r in out), out[:5]
    return out


class Monitor:
    """A MONITOR connection: the commands Redis executes, in order."""

    def __init__(self, port):
        self.port = port
        self.conn = RespConn(port, timeout=10 * SLOW)
        assert self.conn.command("MONITOR") == "OK"

    def close(self):
        self.conn.close()

    def until_marker(self):
        """Runs a marker command and returns every command seen before it,
        as lists of str arguments."""
        marker = "marker-%s" % uuid.uuid4().hex
        redis_command(self.port, "ECHO", marker)
        seen = []
        while True:
            line = self.conn.read_reply()
            assert isinstance(line, str), line
            # e.g. 1700000000.123456 [0 127.0.0.1:5555] "SUBSCRIBE" "ch"
            args = [a for a in line.split('"')[1::2]]
            if args[:2] == ["ECHO", marker] or args[:2] == ["echo", marker]:
                return seen
            seen.append(args)


def numsub(port, channel):
    r = redis_command(port, "PUBSUB", "NUMSUB", channel)
    return int(r[1])


def wait_subscribed(port, *channels, timeout=10.0):
    """Waits until the broker has SUBSCRIBEd to every channel in Redis (the
    ack to a client does not wait for Redis)."""
    for ch in channels:
        wait_until(lambda: numsub(port, ch) >= 1, timeout * SLOW,
                   what="broker subscribed to %r in redis" % ch)


class RedisServer:
    def __init__(self, port=None):
        self.port = port or free_port()
        self.proc = None
        self.dir = tmpdir("redis-")
        self.log_path = os.path.join(self.dir, "redis.log")

    def start(self, timeout=10.0):
        assert self.proc is None
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        LIVE.add(self.proc)
        wait_until(self._ready, timeout, what="redis-server on port %d" % self.port)
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("redis-server exited with %s:\n%s"
                                 % (self.proc.returncode, open(self.log_path).read()))
        try:
            return redis_command(self.port, "PING", timeout=1) == "PONG"
        except OSError:
            return False

    def stop(self):
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        kill_proc(p)

    def restart(self):
        self.stop()
        self.start()


# ---------------------------------------------------------------------------
# The broker.

_KEYS = []


def broker_keys():
    """The configuration keys `broker --help` lists."""
    if not _KEYS:
        p = subprocess.Popen([BROKER_BIN, "--help"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        LIVE.add(p)
        try:
            out = p.communicate(timeout=10 * SLOW)[0]
        finally:
            kill_proc(p)
        _KEYS.extend(re.findall(r"^  ([a-z_]+) +default ", out.decode(), re.M))
    return _KEYS


class Broker:
    def __init__(self, redis_port, port=None, **cfg):
        self.port = port or free_port()
        self.redis_port = redis_port
        self.dir = tmpdir("broker-")
        self.conf_path = os.path.join(self.dir, "broker.conf")
        self.log_path = os.path.join(self.dir, "broker.log")
        self.cfg = {"listen": "127.0.0.1:%d" % self.port,
                    "redis_url": "redis://127.0.0.1:%d" % redis_port}
        if "workers" in broker_keys():
            # One worker, one Redis connection: PUBSUB NUMSUB and PUBLISH
            # replies count subscribers exactly, whatever the CPU count.
            self.cfg["workers"] = "1"
        self.cfg.update({k: str(v) for k, v in cfg.items()})
        # More lines after cfg's, for keys given several times (listen).
        self.lines = []
        self.proc = None
        # A tool this one broker runs under (outside BROKER_WRAPPER), e.g.
        # strace, and the environment it gets (None: ours).
        self.wrapper = []
        self.env = None

    def start(self, wait="healthz", timeout=15.0):
        """wait: "healthz" (until /healthz answers 200), "port" (until the
        port accepts, for a broker whose Redis is down) or None."""
        with open(self.conf_path, "w") as f:
            for k, v in self.cfg.items():
                f.write("%s %s\n" % (k, v))
            for line in self.lines:
                f.write(line + "\n")
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.wrapper + BROKER_WRAPPER + [BROKER_BIN, "-c", self.conf_path],
                                     stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env)
        logf.close()
        LIVE.add(self.proc)
        if wait == "healthz":
            wait_until(lambda: self._alive() and self.healthz()[0] == 200, timeout * SLOW,
                       what="broker /healthz 200")
        elif wait == "port":
            wait_until(lambda: self._alive() and port_accepts(self.port), timeout * SLOW,
                       what="broker accepting on its port")
        return self

    def _alive(self):
        if self.proc.poll() is not None:
            raise AssertionError("broker exited early with %s; log:\n%s"
                                 % (self.proc.returncode, self.log()))
        return True

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def healthz(self, method="GET"):
        try:
            r = http_request(self.port, ("%s /healthz HTTP/1.1\r\nHost: t\r\n\r\n" % method).encode(),
                             timeout=5)
        except OSError:
            return (None, b"")
        return (r.status, r.body)

    def url(self, path="/ws"):
        return "ws://127.0.0.1:%d%s" % (self.port, path)

    def stop(self, timeout=12.0):
        """SIGTERM; asserts a 0 exit within `timeout` s and a log free of
        sanitizer reports. Safe to call twice."""
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        try:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
            try:
                rc = p.wait(timeout=timeout * (3 if BROKER_WRAPPER else 1))
            except subprocess.TimeoutExpired:
                rc = None
        finally:
            kill_proc(p)
        log = self.log()
        assert rc is not None, "broker did not exit within %s s of SIGTERM; log:\n%s" % (timeout, log[-4000:])
        assert_clean_log(log)
        assert rc == 0, "broker exited with %s after SIGTERM; log:\n%s" % (rc, log[-4000:])


def assert_clean_log(log):
    for m in SANITIZER_MARKERS:
        assert m not in log, "sanitizer report in broker log:\n%s" % log[-8000:]
    if BROKER_WRAPPER:
        m = VALGRIND_ERRORS.search(log)
        assert m is None, "valgrind report in broker log:\n%s" % log[-8000:]


# ---------------------------------------------------------------------------
# Raw HTTP.

class HttpResponse:
    def __init__(self, raw, closed):
        self.raw = raw
        self.closed = closed  # the peer closed the connection after it
        head, sep, self.body = raw.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError("no complete HTTP response head in %r" % raw[:300])
        lines = head.split(b"\r\n")
        self.status_line = lines[0].decode("latin-1")
        parts = self.status_line.split(" ", 2)
        assert parts[0] == "HTTP/1.1", self.status_line
        self.status = int(parts[1])
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.decode("latin-1").partition(":")
            self.headers.setdefault(k.strip().lower(), []).append(v.strip())

    def header(self, name):
        v = self.headers.get(name.lower())
        return None if v is None else ", ".join(v)

    def __repr__(self):
        return "<HttpResponse %r closed=%s>" % (self.raw[:400], self.closed)


def http_exchange(port, data, timeout=5.0, chunks=None):
    """Sends `data`, then reads until the peer closes or `timeout` passes.
    Returns (bytes received, closed)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out, False
            s.settimeout(left)
            try:
                d = s.recv(65536)
            except socket.timeout:
                return out, False
            except ConnectionResetError:
                return out, True
            if not d:
                return out, True
            out += d
    finally:
        s.close()


def http_request(port, data, timeout=5.0):
    raw, closed = http_exchange(port, data, timeout)
    return HttpResponse(raw, closed)


def upgrade_response(port, data, timeout=10.0):
    """Sends a request and returns the head of the answer, without waiting
    for the connection to close (a 101 keeps it open)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    try:
        s.sendall(data)
        got = b""
        while b"\r\n\r\n" not in got:
            d = s.recv(65536)
            if not d:
                break
            got += d
        return HttpResponse(got.split(b"\r\n\r\n")[0] + b"\r\n\r\n", False)
    finally:
        s.close()


def upgrade_status(port, data, timeout=10.0):
    return upgrade_response(port, data, timeout).status


def ws_key():
    return base64.b64encode(os.urandom(16)).decode()


def ws_accept(key):
    return base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
                            .digest()).decode()


def upgrade_request(path="/ws", key=None, extra="", version="13", host="t", proto="HTTP/1.1",
                    method="GET", upgrade="websocket", connection="Upgrade"):
    lines = ["%s %s %s" % (method, path, proto)]
    if host is not None:
        lines.append("Host: %s" % host)
    if upgrade is not None:
        lines.append("Upgrade: %s" % upgrade)
    if connection is not None:
        lines.append("Connection: %s" % connection)
    if key is not False:
        lines.append("Sec-WebSocket-Key: %s" % (ws_key() if key is None else key))
    if version is not None:
        lines.append("Sec-WebSocket-Version: %s" % version)
    head = "\r\n".join(lines) + "\r\n" + extra + "\r\n"
    return head.encode()


# ---------------------------------------------------------------------------
# Raw WebSocket client.

OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def xor_mask(data, key):
    if not data:
        return b""
    k = (key * (len(data) // 4 + 1))[:len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(len(data), "big")


def build_frame(opcode, payload=b"", fin=True, mask=True, rsv=0, mask_key=None, len_form=None):
    """A client frame; len_form (7, 16 or 64) forces a length encoding, so
    that non-minimal encodings can be sent."""
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    n = len(payload)
    mbit = 0x80 if mask else 0
    if len_form is None:
        len_form = 7 if n < 126 else 16 if n < 65536 else 64
    if len_form == 7:
        hdr = bytes([b0, mbit | n])
    elif len_form == 16:
        hdr = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        hdr = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if mask:
        key = mask_key or os.urandom(4)
        return hdr + key + xor_mask(payload, key)
    return hdr + payload


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


class Frame:
    def __init__(self, fin, rsv, opcode, payload, masked):
        self.fin, self.rsv, self.opcode, self.payload, self.masked = fin, rsv, opcode, payload, masked

    @property
    def close_code(self):
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def text(self):
        return self.payload.decode("utf-8")

    def __repr__(self):
        return "<Frame op=%d fin=%d len=%d %r>" % (self.opcode, self.fin, len(self.payload),
                                                    self.payload[:80])


class Closed(Exception):
    """The peer closed the TCP connection (EOF or reset)."""

    def __init__(self, reset):
        super().__init__("connection reset" if reset else "EOF")
        self.reset = reset


class RawWS:
    """A WebSocket client over a plain socket: the handshake by hand, frames
    with any opcode/fin/mask/rsv/length, and frame parsing of what comes back."""

    def __init__(self, port, path="/ws", rcvbuf=None, timeout=10.0, extra=""):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        key = ws_key()
        self.sock.sendall(upgrade_request(path, key=key, extra=extra))
        while b"\r\n\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise AssertionError("broker closed during the handshake: %r" % self.buf)
            self.buf += d
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.response = HttpResponse(head + b"\r\n\r\n", False)
        assert self.response.status == 101, head
        assert self.response.header("Sec-WebSocket-Accept") == ws_accept(key), head

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, opcode, payload=b"", **kw):
        self.sock.sendall(build_frame(opcode, payload, **kw))

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no frame in time")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(262144)
        except ConnectionResetError:
            raise Closed(True)
        if not d:
            raise Closed(False)
        self.buf += d

    def _need(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)

    def recv_frame(self, timeout=10.0):
        """The next frame; raises Closed on EOF/reset, socket.timeout."""
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            self._need(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            pos = 4
        elif n == 127:
            self._need(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            pos = 10
        masked = bool(b1 & 0x80)
        key = None
        if masked:
            self._need(pos + 4, deadline)
            key = self.buf[pos:pos + 4]
            pos += 4
        self._need(pos + n, deadline)
        payload = self.buf[pos:pos + n]
        self.buf = self.buf[pos + n:]
        if masked:
            payload = xor_mask(payload, key)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, payload, masked)

    def recv_data(self, timeout=10.0):
        """The next text frame's text, skipping pings."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if f.opcode == OP_PING:
                continue
            assert f.opcode == OP_TEXT, f
            return f.text

    def recv_json(self, timeout=10.0):
        return json.loads(self.recv_data(timeout))

    def expect_close(self, timeout=10.0):
        """Reads frames until a close frame and returns it (data frames and
        pings before it are skipped); then asserts the broker closes the TCP
        connection."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            except Closed as e:
                raise AssertionError("TCP closed (%s) without a close frame" % e)
            if f.opcode == OP_CLOSE:
                break
        assert not f.masked, "server frames must not be masked"
        assert self.wait_eof(max(1.0, deadline - time.monotonic())), \
            "the broker did not close the TCP connection after its close frame"
        return f

    def wait_eof(self, timeout=10.0):
        """True when the peer closes (EOF or reset) within timeout; data that
        arrives meanwhile is discarded."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(262144)
            except socket.timeout:
                return False
            except ConnectionResetError:
                return True
            if not d:
                return True

    def is_open(self):
        """Non-blocking check that the peer has not closed (data is kept)."""
        r, _, _ = select.select([self.sock], [], [], 0)
        if not r:
            return True
        try:
            self.sock.settimeout(0.5)
            d = self.sock.recv(262144)
        except ConnectionResetError:
            return False
        if not d:
            return False
        self.buf += d
        return True


# ---------------------------------------------------------------------------
# Raw JSON spans: byte-for-byte checks of what the broker forwards.

_DEC = json.JSONDecoder()
_WS = " \t\r\n"


def _skip_ws(s, i):
    while i < len(s) and s[i] in _WS:
        i += 1
    return i


def raw_members(text):
    """The members of a JSON object text as {key: raw value text}; the last
    occurrence of a key wins."""
    i = _skip_ws(text, 0)
    assert text[i] == "{", text[:100]
    i = _skip_ws(text, i + 1)
    out = {}
    if text[i] == "}":
        return out
    while True:
        key, i = _DEC.raw_decode(text, i)
        i = _skip_ws(text, i)
        assert text[i] == ":", text[:200]
        i = _skip_ws(text, i + 1)
        _, j = _DEC.raw_decode(text, i)
        out[key] = text[i:j]
        i = _skip_ws(text, j)
        if text[i] == "}":
            return out
        assert text[i] == ",", text[:200]
        i = _skip_ws(text, i + 1)


def raw_array_elements(text):
    """The raw texts of the elements of a JSON array text, each with the
    whitespace around it (everything between the brackets and commas)."""
    i = _skip_ws(text, 0)
    assert text[i] == "[", text[:100]
    start = i + 1
    i = _skip_ws(text, start)
    out = []
    if text[i] == "]":
        return out
    while True:
        _, j = _DEC.raw_decode(text, i)
        k = _skip_ws(text, j)
        out.append(text[start:k])
        if text[k] == "]":
            return out
        assert text[k] == ",", text[:200]
        start = k + 1
        i = _skip_ws(text, start)


def parse_batch(text):
    """Checks a batch frame's shape; returns (channel, [raw message texts])."""
    obj = json.loads(text)
    assert obj.get("type") == "batch", text[:200]
    assert isinstance(obj.get("channel"), str), text[:200]
    assert isinstance(obj.get("messages"), list) and obj["messages"], text[:200]
    raw = raw_members(text)
    return obj["channel"], raw_array_elements(raw["messages"])


# ---------------------------------------------------------------------------
# asyncio helpers around `websockets`.

def run(coro, timeout=50.0):
    """Runs a coroutine to completion, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def ws_connect(port, path="/ws", **kw):
    kw.setdefault("ping_interval", None)
    kw.setdefault("max_size", None)
    kw.setdefault("max_queue", None)
    kw.setdefault("compression", None)
    kw.setdefault("open_timeout", 10 * SLOW)
    return await asyncio.wait_for(
        websockets.connect("ws://127.0.0.1:%d%s" % (port, path), **kw), 15 * SLOW)


async def recv_text(ws, timeout=5.0):
    msg = await asyncio.wait_for(ws.recv(), timeout * SLOW)
    assert isinstance(msg, str), "broker sent a binary frame: %r" % msg[:100]
    return msg


async def recv_json(ws, timeout=5.0):
    text = await recv_text(ws, timeout)
    return text, json.loads(text)


async def send_json(ws, obj):
    await ws.send(json.dumps(obj, separators=(",", ":")))


async def subscribe(ws, channel, rid=None, action="subscribe", timeout=5.0):
    """Sends a subscribe (or unsubscribe) and asserts the ack is the next
    frame; returns the ack text."""
    req = {"action": action, "channel": channel}
    if rid is not None:
        req["rid"] = rid
    await send_json(ws, req)
    text, obj = await recv_json(ws, timeout)
    assert obj.get("type") == "ack", text
    assert obj.get("action") == action, text
    assert obj.get("channel") == channel, text
    assert ("rid" in obj) == (rid is not None), text
    if rid is not None:
        assert obj["rid"] == rid, text
    return text


async def recv_batch(ws, timeout=5.0):
    text = await recv_text(ws, timeout)
    ch, msgs = parse_batch(text)
    return text, ch, msgs


async def collect(ws, n, timeout=10.0, channel=None):
    """Receives batch frames until n messages arrived; returns (frames,
    messages) where frames are (text, channel, raw messages)."""
    frames, msgs = [], []
    deadline = time.monotonic() + timeout * SLOW
    while len(msgs) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("got %d of %d messages in time: %r" % (len(msgs), n, msgs[-5:]))
        text = await asyncio.wait_for(ws.recv(), left)
        ch, m = parse_batch(text)
        if channel is not None:
            assert ch == channel, "unexpected frame for %r: %s" % (ch, text[:200])
        frames.append((text, ch, m))
        msgs.extend(m)
    assert len(msgs) == n, "more messages than published: %r" % msgs
    return frames, msgs


async def sync_marker(ws, redis_port, marker, rounds=2, timeout=10.0):
    """Publishes on `marker` (a channel the client is subscribed to) and
    waits for it, `rounds` times; returns every other frame seen meanwhile.
    Two rounds make sure anything the broker flushed together with the first
    marker has arrived."""
    others = []
    for r in range(rounds):
        token = '"sync-%s"' % uuid.uuid4().hex
        assert publish(redis_port, marker, token) >= 1
        deadline = time.monotonic() + timeout * SLOW
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("marker frame never arrived")
            text = await asyncio.wait_for(ws.recv(), left)
            obj = json.loads(text)
            if obj.get("type") == "batch" and obj.get("channel") == marker:
                if token in raw_array_elements(raw_members(text)["messages"]):
                    break
                continue
            others.append(text)
    return others


# ---------------------------------------------------------------------------
# Processes (/proc) and GET /metrics (test_process.py, test_security.py).

def child_pids(pid):
    """PIDs of the live (not zombie) children of `pid`, from /proc/*/stat."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d, "rb") as f:
                st = f.read()
        except OSError:
            continue
        rest = st[st.rindex(b")") + 2:].split()
        if int(rest[1]) == pid and rest[0] not in (b"Z", b"X"):
            out.append(int(d))
    return sorted(out)


def proc_cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        st = f.read()
    rest = st[st.rindex(b")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / float(os.sysconf("SC_CLK_TCK"))


def proc_rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


_PROM_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_PROM_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_PROM_VALUE = r"[+-]?(?:Inf|NaN|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
_PROM_SAMPLE = re.compile(r"^(%s)(?:\{(.*)\})? (%s)(?: (-?\d+))?$" % (_PROM_NAME, _PROM_VALUE))
_PROM_PAIR = re.compile(r'(%s)="((?:[^"\\\n]|\\[\\"n])*)"' % _PROM_LABEL)
_PROM_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def parse_metrics(text):
    """A strict parser of the Prometheus text exposition format (0.0.4).
    Returns (types, samples): types maps each family to its TYPE, samples
    maps (name, frozenset of label pairs) to the float value. Fails the test
    on anything malformed: a line that is neither a comment nor a sample, a
    sample whose family has no TYPE before it, a family split in two groups,
    TYPE or HELP given twice, a repeated sample, a negative counter."""
    assert text.endswith("\n"), "exposition does not end with a newline: %r" % text[-80:]
    types, helps, samples = {}, set(), {}
    done, current = set(), None
    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = "metrics line %d: %r" % (n, line)
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
                assert len(parts) >= 3 and re.fullmatch(_PROM_NAME, parts[2]), where
                name = parts[2]
                assert name not in done, "%s: family %s appears twice" % (where, name)
                if parts[1] == "HELP":
                    assert name not in helps, "%s: HELP twice" % where
                    helps.add(name)
                    doc = parts[3] if len(parts) == 4 else ""
                    assert re.fullmatch(r"(?:[^\\\n]|\\[\\n])*", doc), where
                else:
                    assert name not in types, "%s: TYPE twice" % where
                    assert len(parts) == 4 and parts[3] in _PROM_TYPES, where
                    types[name] = parts[3]
                if current is not None and current != name:
                    done.add(current)
                current = name
            continue
        m = _PROM_SAMPLE.match(line)
        assert m, "%s: not a sample" % where
        name, labels, value = m.group(1), m.group(2), m.group(3)
        family = name
        if name not in types:
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix) and types.get(name[:-len(suffix)]) in ("histogram",
                                                                                 "summary"):
                    family = name[:-len(suffix)]
        assert family in types, "%s: no # TYPE for %s before its sample" % (where, name)
        assert family not in done and family == current, \
            "%s: samples of %s are not one group after its TYPE" % (where, family)
        pairs = []
        if labels:
            rest = labels
            while rest:
                pm = _PROM_PAIR.match(rest)
                assert pm, "%s: bad label list" % where
                pairs.append((pm.group(1), pm.group(2)))
                rest = rest[pm.end():]
                if rest.startswith(","):
                    rest = rest[1:]
                else:
                    assert rest == "", "%s: bad label list" % where
        assert len(set(k for k, _ in pairs)) == len(pairs), "%s: label repeated" % where
        key = (name, frozenset(pairs))
        assert key not in samples, "%s: sample repeated" % where
        v = float(value)
        if types[family] == "counter":
            assert v >= 0, "%s: negative counter" % where
        samples[key] = v
    return types, samples


def fetch_metrics(port, timeout=10.0):
    """GET /metrics, checked and parsed: (types, samples)."""
    r = http_request(port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", timeout * SLOW)
    assert r.status == 200, r
    ctype = (r.header("Content-Type") or "").replace(" ", "")
    assert ctype.startswith("text/plain;version=0.0.4"), r
    assert int(r.header("Content-Length")) == len(r.body), r
    return parse_metrics(r.body.decode("utf-8"))


def metric(samples, name, **labels):
    """One sample's value from fetch_metrics()[1]; None when absent."""
    return samples.get((name, frozenset((k, str(v)) for k, v in labels.items())))


# ---------------------------------------------------------------------------
# Soak: numbered messages held for tens of seconds (test_redis.py,
# test_cluster.py, test_sentinel.py). Bugs of periodic behaviour (liveness
# pings, deadlines, backoff) show after tens of seconds of steady state, not
# in the first one.

def skip_soak_under_valgrind():
    """Soaks run for a fixed time: under valgrind they would cost minutes of
    the suite for little more than the plain and ASan runs show."""
    if BROKER_WRAPPER:
        import pytest
        pytest.skip("soak: run plainly and under ASan, not under valgrind")


def metric_sum(port, name, **labels):
    """The sum of every sample of family `name` (matching labels) in /metrics."""
    _, samples = fetch_metrics(port)
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


class Soak:
    """Clients subscribed to `channels`; a publisher thread sends numbered
    messages {"seq":N} per channel in bursts (on_s seconds at `rate` msgs/s
    in all, then off_s seconds of silence, so that Redis links sit idle
    long enough to need their liveness pings), for `duration` seconds.
    publish(channel, payload) publishes one message (a callable of the
    test's, which may follow a failover). pause() and resume() hold the
    publisher (at the end of a burst) for a fault injected meanwhile."""

    def __init__(self, port, channels, publish, nclients=4, duration=30.0, rate=100.0,
                 on_s=3.0, off_s=7.0):
        import threading
        self.port = port
        self.channels = list(channels)
        self.publish = publish
        self.nclients = nclients
        self.duration = duration
        self.rate = rate
        self.on_s, self.off_s = on_s, off_s
        self.sent = {ch: 0 for ch in self.channels}
        self.errors = []
        self.hold = threading.Event()
        self.held = threading.Event()
        self.stopped = threading.Event()
        self._thread = threading.Thread(target=self._publisher, daemon=True)

    def pause(self, timeout=30.0):
        self.hold.set()
        assert self.held.wait(timeout), "publisher did not pause"

    def resume(self):
        self.held.clear()
        self.hold.clear()

    def _publisher(self):
        t0 = time.monotonic()
        i = 0
        try:
            while time.monotonic() - t0 < self.duration:
                if self.hold.is_set():
                    self.held.set()
                    while self.hold.is_set():
                        time.sleep(0.02)
                phase = (time.monotonic() - t0) % (self.on_s + self.off_s)
                if phase >= self.on_s:
                    time.sleep(0.05)
                    continue
                ch = self.channels[i % len(self.channels)]
                i += 1
                n = self.sent[ch]
                self.publish(ch, '{"seq":%d}' % n)
                self.sent[ch] = n + 1
                time.sleep(1.0 / self.rate)
        except Exception as e:  # reported by run()
            self.errors.append(repr(e))
        finally:
            self.stopped.set()

    async def _client(self, k, got):
        ws = await ws_connect(self.port)
        try:
            for j, ch in enumerate(self.channels):
                await subscribe(ws, ch, rid=j)
            got[k] = {ch: [] for ch in self.channels}
            self.ready.append(k)
            while True:
                try:
                    text = await asyncio.wait_for(ws.recv(), 1.0)
                except asyncio.TimeoutError:
                    if self.done:
                        return
                    continue
                ch, msgs = parse_batch(text)
                got[k][ch].extend(json.loads(m)["seq"] for m in msgs)
        finally:
            await ws.close()

    def run(self, during=None):
        """Runs the soak; during(soak), if given, runs in a thread meanwhile
        (faults). Returns {client: {channel: [seq, ...]}}."""
        import threading
        got, self.ready, self.done = {}, [], False

        async def body():
            tasks = [asyncio.ensure_future(self._client(k, got)) for k in range(self.nclients)]
            deadline = time.monotonic() + 20 * SLOW
            while len(self.ready) < self.nclients:
                for t in tasks:
                    if t.done():
                        t.result()
                assert time.monotonic() < deadline, "soak clients not subscribed"
                await asyncio.sleep(0.05)
            self._thread.start()
            fault = None
            if during is not None:
                fault = threading.Thread(target=self._fault, args=(during,), daemon=True)
                fault.start()
            while not self.stopped.is_set():
                await asyncio.sleep(0.2)
            # Everything sent must arrive: wait for it (batches, the network).
            deadline = time.monotonic() + 15 * SLOW
            while time.monotonic() < deadline:
                if all(len(got[k][ch]) >= self.sent[ch] for k in got for ch in self.channels):
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)
            self.done = True
            await asyncio.gather(*tasks)
            if fault is not None:
                fault.join(30)
        self.fault_error = None
        run(body(), timeout=self.duration + 120 * SLOW)
        assert not self.errors, "publisher failed: %s" % self.errors
        assert self.fault_error is None, "fault injection failed: %s" % self.fault_error
        return got

    def _fault(self, during):
        try:
            during(self)
        except Exception as e:
            self.fault_error = repr(e)
            self.resume()

    def check_exact(self, got):
        """Every message once, in order, on every client."""
        total = sum(self.sent.values())
        assert total >= 100, "the soak published only %d messages" % total
        for k, per in got.items():
            for ch in self.channels:
                want = list(range(self.sent[ch]))
                if per[ch] != want:
                    missing = sorted(set(want) - set(per[ch]))
                    dups = len(per[ch]) - len(set(per[ch]))
                    raise AssertionError(
                        "client %d channel %s: %d of %d messages, %d missing (first %r), "
                        "%d duplicates, in order: %s"
                        % (k, ch, len(per[ch]), len(want), len(missing), missing[:5], dups,
                           per[ch] == sorted(per[ch])))
        return total

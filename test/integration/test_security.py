"""README "Security": JWT authentication and channel grants, allowed
origins, the per-client and per-worker limits, slow consumers, file
descriptor exhaustion and channel name validation."""
import base64
import hashlib
import hmac
import json
import os
import resource
import re
import signal
import socket
import threading
import time
import urllib.parse

import pytest

import helpers
from helpers import (BROKER_WRAPPER, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, SLOW, Closed,
                     RawWS,
                     build_frame, child_pids, close_payload, fetch_metrics, http_request,
                     metric, numsub, parse_batch, proc_cpu_seconds, proc_rss_bytes, publish,
                     publish_many, uniq, upgrade_request, wait_until)

SECRET = "integration-test-secret-0123456789abcdef"


# -- tokens -------------------------------------------------------------------

def b64u(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(text, secret=SECRET, digest=hashlib.sha256):
    if isinstance(secret, str):
        secret = secret.encode()
    return b64u(hmac.new(secret, text.encode(), digest).digest())


def jwt(claims=None, secret=SECRET, header=None, digest=hashlib.sha256, raw_header=None,
        raw_claims=None):
    """An HS256 JWT (or whatever the arguments make of it): raw_* are the
    encoded parts as given, else JSON of header/claims."""
    h = raw_header if raw_header is not None else b64u(json.dumps(
        header if header is not None else {"alg": "HS256", "typ": "JWT"}))
    p = raw_claims if raw_claims is not None else b64u(json.dumps(
        claims if claims is not None else {}))
    return "%s.%s.%s" % (h, p, sign(h + "." + p, secret, digest))


def now():
    return int(time.time())


# -- helpers ------------------------------------------------------------------

def errors(port, kind):
    return metric(fetch_metrics(port)[1], "broker_client_errors_total", kind=kind)


def refused(port, path="/ws", extra="", timeout=5.0):
    """A handshake the broker must answer and close: the whole response."""
    r = http_request(port, upgrade_request(path, extra=extra), timeout * SLOW)
    assert r.closed, "the broker kept the connection open after %r" % r
    return r


def ws(port, path="/ws", extra="", **kw):
    return RawWS(port, path, extra=extra, timeout=10 * SLOW, **kw)


def request(c, action, channel, rid=None):
    req = {"action": action, "channel": channel}
    if rid is not None:
        req["rid"] = rid
    c.send_text(json.dumps(req))
    return c.recv_json(10 * SLOW)


def assert_ack(reply, channel, action="subscribe"):
    assert reply.get("type") == "ack" and reply.get("action") == action, reply
    assert reply.get("channel") == channel, reply


def assert_error(reply, code, rid=None):
    assert reply.get("type") == "error" and reply.get("code") == code, reply
    if rid is not None:
        assert reply.get("rid") == rid, reply


def recv_messages(c, n, channel, timeout=10.0):
    got = []
    deadline = time.monotonic() + timeout * SLOW
    while len(got) < n:
        ch, msgs = parse_batch(c.recv_data(max(0.01, deadline - time.monotonic())))
        assert ch == channel, (ch, msgs)
        got.extend(msgs)
    assert len(got) == n, got
    return got


def close_stream(c, timeout):
    """Reads a client's stream to its end: returns the close frame, or None
    when the TCP connection ended without one. Fails on a timeout."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            f = c.recv_frame(max(0.01, deadline - time.monotonic()))
            if f.opcode == OP_CLOSE:
                return f
    except Closed:
        return None
    except socket.timeout:
        raise AssertionError("the connection was not closed within %.0f s" % timeout)


def only_worker(b):
    kids = wait_until(lambda: child_pids(b.proc.pid), 10 * SLOW, what="the worker")
    assert len(kids) == 1, kids
    return kids[0]


@pytest.fixture(scope="module")
def auth_broker(redis):
    b = helpers.Broker(redis.port, auth_secret=SECRET).start()
    yield b
    b.stop()


# -- authentication -------------------------------------------------------------

def test_valid_token_in_query_and_in_bearer_header(auth_broker, redis):
    b = auth_broker
    tok = jwt({"channels": ["*"], "exp": now() + 3600, "nbf": now() - 60, "sub": "u1"})
    ch = uniq("auth")
    c1 = ws(b.port, "/ws?token=" + tok)
    c2 = ws(b.port, "/ws", extra="Authorization: Bearer %s\r\n" % tok)
    try:
        for c in (c1, c2):
            assert_ack(request(c, "subscribe", ch), ch)
        wait_until(lambda: numsub(redis.port, ch) >= 1, 10 * SLOW, what="subscribed")
        assert publish(redis.port, ch, '{"ok":true}') == 1
        for c in (c1, c2):
            assert recv_messages(c, 1, ch) == ['{"ok":true}']
        # A token with neither exp nor nbf is valid too.
        c3 = ws(b.port, "/ws?token=" + jwt({"channels": [ch]}))
        assert_ack(request(c3, "subscribe", ch), ch)
        c3.close()
    finally:
        c1.close()
        c2.close()


def bad_tokens():
    claims = {"channels": ["*"]}
    good = jwt(claims)
    h, p, s = good.split(".")
    none_h = b64u(json.dumps({"alg": "none", "typ": "JWT"}))
    hs512_h = b64u(json.dumps({"alg": "HS512", "typ": "JWT"}))
    other_p = b64u(json.dumps({"channels": ["*"], "admin": True}))
    return [
        ("no token", "/ws", ""),
        ("empty token", "/ws?token=", ""),
        ("bad signature", "/ws?token=" + jwt(claims, secret=SECRET + "x"), ""),
        ("bad signature, bearer", "/ws",
         "Authorization: Bearer %s\r\n" % jwt(claims, secret="wrong")),
        ("payload swapped under a valid signature", "/ws?token=%s.%s.%s" % (h, other_p, s), ""),
        ("signature truncated", "/ws?token=%s.%s.%s" % (h, p, s[:-2]), ""),
        ("signature with padding", "/ws?token=" + urllib.parse.quote("%s.%s.%s=" % (h, p, s)), ""),
        ("expired", "/ws?token=" + jwt({"channels": ["*"], "exp": now() - 30}), ""),
        ("nbf in the future", "/ws?token=" + jwt({"channels": ["*"], "nbf": now() + 600}), ""),
        ("exp not a number", "/ws?token=" + jwt({"channels": ["*"], "exp": "9999999999"}), ""),
        ("alg none, no signature", "/ws?token=%s.%s." % (none_h, p), ""),
        ("alg none, HS256 signature", "/ws?token=" + jwt(claims, header={"alg": "none"}), ""),
        ("alg HS512, HS512 signature",
         "/ws?token=" + jwt(claims, header={"alg": "HS512"}, digest=hashlib.sha512), ""),
        ("alg HS512, HS256 signature", "/ws?token=" + jwt(claims, raw_header=hs512_h), ""),
        ("alg lowercase", "/ws?token=" + jwt(claims, header={"alg": "hs256"}), ""),
        ("no alg", "/ws?token=" + jwt(claims, header={"typ": "JWT"}), ""),
        ("one part", "/ws?token=" + b64u("{}"), ""),
        ("two parts", "/ws?token=%s.%s" % (h, p), ""),
        ("four parts", "/ws?token=%s.%s.%s.%s" % (h, p, s, s), ""),
        ("header not base64url", "/ws?token=" + jwt(claims, raw_header="e30*"), ""),
        ("claims not base64url", "/ws?token=" + jwt(claims, raw_claims="e3!9"), ""),
        ("signature not base64url", "/ws?token=%s.%s.%s" % (h, p, "%2B" + s[1:]), ""),
        ("header not JSON", "/ws?token=" + jwt(claims, raw_header=b64u("alg=HS256")), ""),
        ("claims not JSON", "/ws?token=" + jwt(claims, raw_claims=b64u("channels=*")), ""),
        ("claims an array", "/ws?token=" + jwt(claims, raw_claims=b64u('["*"]')), ""),
        ("channels not a list", "/ws?token=" + jwt({"channels": "*"}), ""),
        ("basic auth", "/ws", "Authorization: Basic %s\r\n" % base64.b64encode(b"u:p").decode()),
        ("bearer without token", "/ws", "Authorization: Bearer \r\n"),
    ]


def test_invalid_tokens_get_the_same_401(auth_broker):
    b = auth_broker
    cases = bad_tokens()
    before = errors(b.port, "http_401")
    answers = {}
    for name, path, extra in cases:
        r = refused(b.port, path, extra)
        assert r.status == 401, (name, r)
        answers[name] = r.raw
    # The answer reveals nothing about why: byte for byte the same.
    distinct = set(answers.values())
    assert len(distinct) == 1, "401 answers differ:\n" + "\n".join(
        "%s: %r" % (k, v) for k, v in answers.items())
    assert errors(b.port, "http_401") == before + len(cases)
    # The reason goes to the log instead.
    assert "401" in b.log()


def test_channel_globs_allow_and_forbid(auth_broker, redis):
    b = auth_broker
    c = ws(b.port, "/ws?token=" + jwt({"channels": ["prices.*", "n?ws"]}))
    try:
        before = errors(b.port, "forbidden")
        allowed = ["prices.a", "prices.a.b", "prices.x.y.z", "news", "n\u00e9ws"]
        forbidden = ["prices", "pricesa", "xprices.a", "other", "nws", "neews", "news.a"]
        for i, ch in enumerate(allowed):
            assert_ack(request(c, "subscribe", ch, rid=i), ch)
        for i, ch in enumerate(forbidden):
            # Refused with "forbidden", and the connection stays open.
            assert_error(request(c, "subscribe", ch, rid="f%d" % i), "forbidden", "f%d" % i)
        assert errors(b.port, "forbidden") == before + len(forbidden)
        wait_until(lambda: numsub(redis.port, "prices.a.b") == 1, 10 * SLOW, what="subscribed")
        for ch in forbidden:
            assert numsub(redis.port, ch) == 0, ch
        assert publish(redis.port, "prices.a.b", '{"p":1}') == 1
        assert recv_messages(c, 1, "prices.a.b") == ['{"p":1}']
        assert c.is_open()
    finally:
        c.close()


def test_query_channels_outside_the_grant_get_forbidden(auth_broker, redis):
    b = auth_broker
    a, x = "prices.%s" % uniq("a"), "prices.%s" % uniq("b")
    secret_ch = uniq("secret")
    tok = jwt({"channels": ["prices.*"]})
    c = ws(b.port, "/ws?channels=%s,%s,%s&token=%s" % (a, secret_ch, x, tok))
    try:
        assert_error(c.recv_json(10 * SLOW), "forbidden")
        wait_until(lambda: numsub(redis.port, a) == 1 and numsub(redis.port, x) == 1,
                   10 * SLOW, what="the allowed ?channels= subscribed")
        assert numsub(redis.port, secret_ch) == 0
        assert publish(redis.port, secret_ch, '"no"') == 0
        assert publish(redis.port, a, '"a"') == 1
        assert recv_messages(c, 1, a) == ['"a"']
        assert publish(redis.port, x, '"x"') == 1
        assert recv_messages(c, 1, x) == ['"x"']
    finally:
        c.close()


def test_token_without_channels_connects_but_subscribes_to_nothing(auth_broker, redis):
    b = auth_broker
    for claims in ({"sub": "nobody"}, {"channels": []}):
        tok = jwt(claims)
        c = ws(b.port, "/ws?token=" + tok)
        try:
            for i, ch in enumerate(["a", "prices.a", "*"]):
                assert_error(request(c, "subscribe", ch, rid=i), "forbidden", i)
            assert c.is_open()
        finally:
            c.close()
        ch = uniq("none")
        c = ws(b.port, "/ws?channels=%s&token=%s" % (ch, tok))
        try:
            assert_error(c.recv_json(10 * SLOW), "forbidden")
            assert numsub(redis.port, ch) == 0
        finally:
            c.close()


@pytest.mark.timeout(90)
def test_token_expiring_during_the_connection_closes_4001(auth_broker):
    b = auth_broker
    ahead = 2 + int(SLOW)
    exp = now() + ahead
    c = ws(b.port, "/ws?token=" + jwt({"channels": ["*"], "exp": exp}))
    try:
        before = errors(b.port, "token_expired")
        assert_ack(request(c, "subscribe", "before-exp"), "before-exp")
        f = close_stream(c, ahead + 5 * SLOW)
        assert f is not None, "closed without a close frame"
        assert f.close_code == 4001, f
        assert time.time() >= exp - 1, "closed %.1f s before exp" % (exp - time.time())
        assert errors(b.port, "token_expired") == before + 1
    finally:
        c.close()


def test_auth_secret_file(redis, make_broker):
    d = helpers.tmpdir("secret-")
    path = os.path.join(d, "secret")
    secret = "file-secret-0123456789abcdef0123456789"
    with open(path, "w") as f:
        f.write(secret + "\n")
    b = make_broker(redis.port, auth_secret_file=path)
    ok = ws(b.port, "/ws?token=" + jwt({"channels": ["x"]}, secret=secret))
    try:
        assert_ack(request(ok, "subscribe", "x"), "x")
    finally:
        ok.close()
    # The trailing newline is not part of the secret.
    nl_tok = jwt({"channels": ["x"]}, secret=secret + "\n")
    assert refused(b.port, "/ws?token=" + nl_tok).status == 401
    assert refused(b.port, "/ws").status == 401
    assert refused(b.port, "/ws?token=" + jwt({"channels": ["x"]})).status == 401
    assert "auth_secret is not set" not in b.log()


def test_sighup_applies_a_new_auth_secret(redis, make_broker):
    b = make_broker(redis.port, auth_secret=SECRET)
    new = "rotated-secret-0123456789abcdef0123456789"
    old_tok, new_tok = jwt({"channels": ["*"]}), jwt({"channels": ["*"]}, secret=new)
    ws(b.port, "/ws?token=" + old_tok).close()
    b.cfg["auth_secret"] = new
    with open(b.conf_path, "w") as f:
        f.write("".join("%s %s\n" % kv for kv in b.cfg.items()))
    os.kill(b.proc.pid, signal.SIGHUP)
    wait_until(lambda: re.search(r"\] w1 configuration reloaded", b.log()), 10 * SLOW,
               what="the worker's reload")
    assert refused(b.port, "/ws?token=" + old_tok).status == 401
    ws(b.port, "/ws?token=" + new_tok).close()


def test_open_broker_warns_at_start(broker, auth_broker):
    assert re.search(r"\[warn\] m0 .*auth_secret", broker.log()), broker.log()[:2000]
    assert not re.search(r"\[warn\] m0 .*auth_secret is not set", auth_broker.log())


# -- origins --------------------------------------------------------------------

def test_allowed_origins(redis, make_broker):
    b = make_broker(redis.port, allowed_origins="https://app.example https://admin.example")
    before = errors(b.port, "http_403")
    bad = ["https://evil.example", "https://app.example.evil.example", "http://app.example",
           "null", "https://app.exampl"]
    for origin in bad:
        r = refused(b.port, extra="Origin: %s\r\n" % origin)
        assert r.status == 403, (origin, r)
    assert errors(b.port, "http_403") == before + len(bad)
    for extra in ("Origin: https://app.example\r\n", "Origin: https://admin.example\r\n", ""):
        c = ws(b.port, extra=extra)
        assert_ack(request(c, "subscribe", "o"), "o")
        c.close()


# -- limits ---------------------------------------------------------------------

def test_max_connections_per_worker_503(redis, make_broker):
    b = make_broker(redis.port, max_connections=5)
    clients = []
    try:
        for i in range(5):
            # The /healthz probe of the start may still be closing: retry a
            # refused one for a moment.
            c = wait_until(lambda: _ws_or_none(b.port), 5 * SLOW, interval=0.1,
                           what="connection %d of 5" % (i + 1))
            clients.append(c)
        for _ in range(3):
            r = refused(b.port)
            assert r.status == 503, r
        gone = clients.pop()
        gone.send_frame(OP_CLOSE, close_payload(1000))
        gone.close()
        # A slot is free again once the broker has seen it go.
        c = wait_until(lambda: _ws_or_none(b.port), 5 * SLOW, interval=0.1,
                       what="a connection after one left")
        clients.append(c)
        assert refused(b.port).status == 503
        assert_ack(request(clients[0], "subscribe", "still"), "still")
        clients.pop().close()
        # (One request: a closing connection still holds its slot a moment.)
        samples = wait_until(lambda: _metrics_or_none(b.port), 5 * SLOW, interval=0.1,
                             what="/metrics")[1]
        assert metric(samples, "broker_client_errors_total", kind="http_503") >= 4, samples
    finally:
        for c in clients:
            c.close()


def _ws_or_none(port):
    try:
        return ws(port)
    except AssertionError:
        return None


def _metrics_or_none(port):
    try:
        return fetch_metrics(port)
    except AssertionError:
        return None


def test_max_subscriptions_per_client(redis, make_broker):
    b = make_broker(redis.port, max_subscriptions_per_client=3)
    c = ws(b.port)
    try:
        for ch in ("s1", "s2", "s3"):
            assert_ack(request(c, "subscribe", ch), ch)
        assert_error(request(c, "subscribe", "s4", rid=4), "limit", 4)
        # Re-subscribing a channel held is not a new subscription.
        assert_ack(request(c, "subscribe", "s2"), "s2")
        assert_ack(request(c, "unsubscribe", "s1"), "s1", action="unsubscribe")
        assert_ack(request(c, "subscribe", "s4"), "s4")
        assert_error(request(c, "subscribe", "s5", rid=5), "limit", 5)
        assert errors(b.port, "subscription_limit") == 2
    finally:
        c.close()
    # ?channels= counts too: the fourth gets the error frame.
    c = ws(b.port, "/ws?channels=q1,q2,q3,q4")
    try:
        assert_error(c.recv_json(10 * SLOW), "limit")
        wait_until(lambda: all(numsub(redis.port, q) == 1 for q in ("q1", "q2", "q3")),
                   10 * SLOW, what="the first three subscribed")
        assert numsub(redis.port, "q4") == 0
    finally:
        c.close()


def test_max_client_message_bytes_1009(redis, make_broker):
    limit = 1024
    b = make_broker(redis.port, max_client_message_bytes=limit)

    def padded(n, rid):
        base = '{"action":"subscribe","channel":"big","rid":%d}' % rid
        return base[:-1] + " " * (n - len(base)) + "}"
    c = ws(b.port)
    try:
        msg = padded(limit, 1)
        assert len(msg) == limit
        c.send_text(msg)
        assert_ack(c.recv_json(10 * SLOW), "big")
        c.send_text(padded(limit + 1, 2))
        f = c.expect_close(10 * SLOW)
        assert f.close_code == 1009, f
    finally:
        c.close()
    # Fragments count together.
    c = ws(b.port)
    try:
        msg = padded(limit + 200, 3).encode()
        c.send_raw(build_frame(OP_TEXT, msg[:600], fin=False) + build_frame(OP_CONT, msg[600:]))
        f = c.expect_close(10 * SLOW)
        assert f.close_code == 1009, f
    finally:
        c.close()
    assert errors(b.port, "ws_1009") == 2


def test_slowloris_closed_after_handshake_timeout(redis, make_broker):
    b = make_broker(redis.port, handshake_timeout_ms=1000)
    before = errors(b.port, "handshake_timeout")
    s = socket.create_connection(("127.0.0.1", b.port), timeout=5 * SLOW)
    got, closed = b"", False
    t0 = time.monotonic()
    try:
        s.sendall(b"GET /ws HTTP/1.1\r\n")
        header = b"X-Slow: " + b"a" * 200
        i = 0
        while time.monotonic() - t0 < 8 * SLOW:
            try:
                s.sendall(header[i % len(header):i % len(header) + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            i += 1
            s.settimeout(0.2)
            try:
                d = s.recv(4096)
            except socket.timeout:
                continue
            except ConnectionResetError:
                closed = True
                break
            if not d:
                closed = True
                break
            got += d
    finally:
        s.close()
    elapsed = time.monotonic() - t0
    assert closed, "a client sending one byte every 200 ms was kept for %.1f s" % elapsed
    assert got == b"", got
    assert i >= 3, "closed after %d bytes: not by the timeout" % i
    assert errors(b.port, "handshake_timeout") == before + 1
    # A request head completed in time, even slowly, is served.
    s = socket.create_connection(("127.0.0.1", b.port), timeout=5 * SLOW)
    try:
        req = upgrade_request("/ws")
        for k in range(3):
            s.sendall(req[k * len(req) // 3:(k + 1) * len(req) // 3])
            time.sleep(0.15)
        assert s.recv(4096).startswith(b"HTTP/1.1 101 ")
    finally:
        s.close()


def read_answers(c, timeout):
    """Frames until the connection ends: (answers, close frame or None)."""
    out = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            f = c.recv_frame(max(0.01, deadline - time.monotonic()))
            if f.opcode == OP_CLOSE:
                return out, f
            if f.opcode == OP_TEXT:
                out.append(json.loads(f.text))
    except Closed:
        return out, None
    except socket.timeout:
        return out, "timeout"


def subscribe_frames(n, prefix="r"):
    return [build_frame(OP_TEXT, json.dumps({"action": "subscribe", "channel": "%s%d" % (prefix, i),
                                             "rid": i})) for i in range(n)]


@pytest.fixture(scope="module")
def rate_broker(redis):
    b = helpers.Broker(redis.port, max_control_per_s=5).start()
    yield b
    b.stop()


def test_max_control_per_s_burst_gets_limit_and_stays_open(rate_broker):
    # max_control_per_s 5: bursts of 10 pass; 14 at once get some "limit"
    # errors (with their rid), and the client stays.
    b = rate_broker
    before = errors(b.port, "rate_limit")
    c = ws(b.port)
    try:
        c.send_raw(b"".join(subscribe_frames(14)))
        answers = [c.recv_json(10 * SLOW) for _ in range(14)]
        assert [a.get("rid") for a in answers] == list(range(14)), answers
        acks = [a for a in answers if a.get("type") == "ack"]
        limits = [a for a in answers if a.get("type") == "error"]
        assert len(acks) >= 10 and limits, answers
        for a in limits:
            assert_error(a, "limit")
        time.sleep(1.2)
        assert_ack(request(c, "subscribe", "after-pause"), "after-pause")
        assert errors(b.port, "rate_limit") == before + len(limits)
    finally:
        c.close()


def test_max_control_per_s_client_that_keeps_going_is_closed_1008(rate_broker):
    # One request at a time, each answer read before the next is sent.
    c = ws(rate_broker.port)
    answers, close = [], None
    try:
        for f in subscribe_frames(60):
            c.send_raw(f)
            fr = c.recv_frame(10 * SLOW)
            if fr.opcode == OP_CLOSE:
                close = fr
                break
            answers.append(json.loads(fr.text))
        assert close is not None, "60 requests in a row at full speed and still open: %r" % (
            answers[-3:],)
        assert close.close_code == 1008, close
        assert sum(a.get("type") == "ack" for a in answers) >= 10, answers
        assert any(a.get("code") == "limit" for a in answers), answers
        assert c.wait_eof(5 * SLOW)
    finally:
        c.close()


def test_max_control_per_s_answers_before_the_close_are_not_lost(rate_broker):
    # The same 50 requests in one write: the broker handles the first ones
    # (subscribes, acks) and refuses the next ones before it closes. Each
    # request handled gets its answer, in order, before the close frame,
    # whether the requests came in one TCP segment or in many.
    c = ws(rate_broker.port)
    try:
        c.send_raw(b"".join(subscribe_frames(50)))
        answers, close = read_answers(c, 10 * SLOW)
        assert close != "timeout", "not closed after a burst of 50: %r" % answers
        assert close is not None, "TCP closed without a close frame after %r" % answers
        assert close.close_code == 1008, close
        assert [a.get("rid") for a in answers] == list(range(len(answers))), answers
        assert sum(a.get("type") == "ack" for a in answers) >= 10, \
            "acks of the requests handled before the close are missing: %r" % answers
        assert any(a.get("code") == "limit" for a in answers), \
            "no limit error before the close: %r" % answers
    finally:
        c.close()


@pytest.mark.timeout(180)
def test_slow_consumer_is_dropped_and_memory_stays_bounded(redis, make_broker):
    b = make_broker(redis.port)  # max_pending_bytes: the default, 8 MiB
    worker = only_worker(b)
    ch = uniq("slowc")
    n = 5000 if not BROKER_WRAPPER else 2000  # x 10 KB: 50 MB (20 MB under valgrind)
    pad = "p" * 10000
    good = ws(b.port, "/ws?channels=" + ch)
    slow = ws(b.port, "/ws?channels=" + ch, rcvbuf=4096)
    received, failure = [], []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set() and len(received) < n:
                try:
                    got, msgs = parse_batch(good.recv_data(1.0))
                except socket.timeout:
                    continue
                assert got == ch
                received.extend(msgs)
        except BaseException as e:  # reported by the main thread
            failure.append(e)

    t = threading.Thread(target=reader, daemon=True)
    try:
        wait_until(lambda: numsub(redis.port, ch) == 1, 10 * SLOW, what="subscribed")
        t.start()
        rss_max, per_round = proc_rss_bytes(worker), 100
        for start in range(0, n, per_round):
            publish_many(redis.port, [(ch, '{"i":%d,"p":"%s"}' % (i, pad))
                                      for i in range(start, start + per_round)])
            rss_max = max(rss_max, proc_rss_bytes(worker))
            # The reading client keeps up (at most two rounds behind), so
            # only the other one falls behind.
            deadline = time.monotonic() + 30 * SLOW
            while len(received) < start and not failure:
                assert time.monotonic() < deadline, \
                    "the reading client got %d of %d messages" % (len(received), start)
                time.sleep(0.005)
                rss_max = max(rss_max, proc_rss_bytes(worker))
            assert not failure, failure[0]
        t.join(60 * SLOW)
        assert not t.is_alive(), "the reading client got %d of %d messages" % (len(received), n)
        assert not failure, failure[0]
        want = ['{"i":%d,"p":"%s"}' % (i, pad) for i in range(n)]
        assert received == want, "the reading client's messages are missing or out of order"
        assert good.is_open()

        # The slow client was dropped: its stream ends (with close 1008 when
        # that frame could still be written).
        f = close_stream(slow, 30 * SLOW)
        if f is not None:
            assert f.close_code == 1008 and f.payload[2:] == b"slow consumer", f
        samples = fetch_metrics(b.port)[1]
        assert metric(samples, "broker_slow_consumer_disconnects_total") >= 1, samples
        assert metric(samples, "broker_messages_dropped_total", reason="slow_consumer") > 0
        assert "slow consumer" in b.log()
        # 8 MiB pending for the slow client, what the reading one has not
        # read yet and the batches: the worker stays far below 64 MB. (ASan
        # and valgrind keep freed memory on purpose: no bound there.)
        if not BROKER_WRAPPER and "asan" not in helpers.BROKER_BIN:
            assert rss_max < 64 * 1024 * 1024, "worker RSS reached %.1f MB" % (rss_max / 1e6)
    finally:
        stop.set()
        if t.is_alive():
            t.join(5)
        good.close()
        slow.close()


def read_to_close(c, timeout):
    """Reads a client's stream to its end: returns the close frame, asserting
    that only pongs came before it and that the TCP connection then ended
    with EOF, not a reset."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            f = c.recv_frame(max(0.01, deadline - time.monotonic()))
            if f.opcode == OP_CLOSE:
                break
            assert f.opcode == OP_PONG, "expected pongs, then a close: %r" % f
        while True:
            c._fill(deadline)
    except Closed as e:
        assert not e.reset, "connection reset (after %s)" % ("a close frame" if f.opcode == OP_CLOSE
                                                             else "pongs only")
        assert f.opcode == OP_CLOSE, "EOF without a close frame"
    except socket.timeout:
        raise AssertionError("the connection was not closed within %.0f s" % timeout)
    return f


@pytest.mark.timeout(180)
def test_ping_flood_without_reading_is_a_slow_consumer(redis, make_broker):
    # A client that sends pings and never reads the pongs may leave at most
    # CONN_MAX_CTRL_BYTES (64 KiB) of them queued: then it is a slow consumer
    # (counted, close 1008 after the pongs already on their way, then EOF),
    # however much it goes on sending. 70,000 pings are 8.9 MB of pongs, over
    # max_pending_bytes (8 MiB, the default) too.
    b = make_broker(redis.port)
    worker = only_worker(b)
    ch = uniq("pingflood")
    good = ws(b.port, "/ws?channels=" + ch)
    nclients, rounds = 6, 70
    burst = build_frame(OP_PING, b"p" * 125) * 1000
    results, threads = {}, []

    def flood(i, c):
        try:
            for _ in range(rounds):
                c.send_raw(burst)
            results[i] = read_to_close(c, 60 * SLOW)
        except BaseException as e:  # reported by the main thread
            results[i] = e

    floods = []
    try:
        wait_until(lambda: numsub(redis.port, ch) == 1, 10 * SLOW, what="subscribed")
        rss0 = rss_max = proc_rss_bytes(worker)
        floods = [ws(b.port, rcvbuf=4096) for _ in range(nclients)]
        threads = [threading.Thread(target=flood, args=(i, c), daemon=True)
                   for i, c in enumerate(floods)]
        for t in threads:
            t.start()
        sent, deadline = [], time.monotonic() + 120 * SLOW
        while any(t.is_alive() for t in threads):
            assert time.monotonic() < deadline, "the flooding clients never finished"
            rss_max = max(rss_max, proc_rss_bytes(worker))
            if len(sent) < 50:
                sent.append('{"n":%d}' % len(sent))
                assert publish(redis.port, ch, sent[-1]) == 1
            time.sleep(0.02)
        for i in range(nclients):
            f = results.get(i)
            if isinstance(f, BaseException):
                raise AssertionError("flooding client %d: %r" % (i, f))
            assert f.close_code == 1008 and f.payload[2:] == b"slow consumer", f
        # The reading client got every message, in order, and is still open.
        sent.append('{"n":"after"}')
        assert publish(redis.port, ch, sent[-1]) == 1
        assert recv_messages(good, len(sent), ch, 30) == sent
        assert good.is_open()
        samples = fetch_metrics(b.port)[1]
        assert metric(samples, "broker_slow_consumer_disconnects_total") == nclients, samples
        assert "unread control replies" in b.log()
        # 64 KiB of pongs per flooding client, not 8 MiB. (ASan and valgrind
        # keep freed memory on purpose: no bound there.)
        if not BROKER_WRAPPER and "asan" not in helpers.BROKER_BIN:
            assert rss_max - rss0 < 16 * 1024 * 1024, \
                "worker RSS grew by %.1f MB" % ((rss_max - rss0) / 1e6)
    finally:
        for t in threads:
            t.join(5)
        for c in floods:
            c.close()
        good.close()


# -- input --------------------------------------------------------------------

def test_channel_names_validated(broker, redis):
    c = ws(broker.port)
    try:
        ok = "c" * 256
        assert_ack(request(c, "subscribe", ok), ok)
        for i, bad in enumerate(["c" * 257, "", "a\x01b", "tab\there", "del\x7f", "nl\n",
                                 "\u00e9" * 129]):
            assert_error(request(c, "subscribe", bad, rid=i), "bad_request", i)
            if bad:
                assert numsub(redis.port, bad) == 0, bad
        assert c.is_open()
    finally:
        c.close()
    for bad in ["c" * 257, "a%01b", "x%7F"]:
        r = refused(broker.port, "/ws?channels=" + bad)
        assert r.status == 400, (bad, r)


# -- file descriptors -----------------------------------------------------------

@pytest.mark.timeout(120)
def test_emfile_pauses_accepts_without_spinning(redis, make_broker):
    b = make_broker(redis.port, max_connections=1000)
    worker = only_worker(b)
    ch, ch2 = uniq("fd"), uniq("fd2")
    keep = ws(b.port, "/ws?channels=" + ch)
    held, pending = [], []
    try:
        wait_until(lambda: numsub(redis.port, ch) == 1, 10 * SLOW, what="subscribed")
        # The worker's open-file limit drops to 64: accept() runs into EMFILE
        # long before max_connections.
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (64, 64))
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", b.port), timeout=5 * SLOW)
            s.sendall(upgrade_request("/ws"))
            s.settimeout(1.0 * SLOW)
            try:
                head = s.recv(4096)
            except socket.timeout:
                pending.append(s)  # waits in the backlog: accept() fails
                break
            assert head.startswith(b"HTTP/1.1 101 "), head
            held.append(s)
        assert pending, "200 connections accepted under a 64 file limit"
        assert len(held) < 64, len(held)
        # More connections keep waiting in the backlog meanwhile.
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", b.port), timeout=5 * SLOW)
            s.sendall(upgrade_request("/ws"))
            pending.append(s)

        # The loop does not spin on the failing accept().
        cpu0, t0 = proc_cpu_seconds(worker), time.monotonic()
        time.sleep(2.0)
        share = (proc_cpu_seconds(worker) - cpu0) / (time.monotonic() - t0)
        assert share < 0.5, "the worker used %.0f%% of a CPU while out of fds" % (share * 100)
        assert re.search(r"\] w1 accept: Too many open files; pausing", b.log()), b.log()[-2000:]

        # A client connected before is served as usual.
        assert_ack(request(keep, "subscribe", ch2), ch2)
        wait_until(lambda: numsub(redis.port, ch2) == 1, 10 * SLOW, what="subscribed")
        assert publish(redis.port, ch, '"one"') == 1
        assert recv_messages(keep, 1, ch) == ['"one"']
        assert publish(redis.port, ch2, '"two"') == 1
        assert recv_messages(keep, 1, ch2) == ['"two"']
        for s in held:
            s.setblocking(False)
            try:
                assert s.recv(1) != b"", "the broker closed an established client"
            except BlockingIOError:
                pass

        # Once descriptors are free again, waiting connections are served
        # and the failures were counted.
        for s in pending:
            s.close()
        for s in held[:20]:
            s.close()
        del held[:20]
        samples = wait_until(lambda: _metrics_or_none(b.port), 10 * SLOW, interval=0.1,
                             what="/metrics after fds were freed")[1]
        assert metric(samples, "broker_accept_errors_total") > 0, samples
        again = ws(b.port)
        assert_ack(request(again, "subscribe", "x"), "x")
        again.close()
    finally:
        for s in held + pending:
            s.close()
        keep.close()

"""PROTOCOL.md section 1: HTTP on the listen port."""
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from helpers import (BROKER_BIN, LIVE, SLOW, HttpResponse, fetch_metrics, free_port,
                     http_exchange, http_request, kill_proc, metric, parse_batch, publish,
                     recv_batch, recv_text, run, subscribe, uniq, upgrade_request,
                     upgrade_response, upgrade_status, wait_subscribed, wait_until, ws_accept,
                     ws_connect)


def req(broker, data, timeout=5.0):
    if isinstance(data, str):
        data = data.encode()
    return http_request(broker.port, data, timeout * SLOW)


def assert_closing_answer(r, status):
    """Every answer but 101 carries Connection: close and closes."""
    assert r.status == status, r
    assert r.header("Connection") is not None and r.header("Connection").lower() == "close", r
    assert r.closed, "the broker kept the connection open after %d" % status


# -- the upgrade ------------------------------------------------------------

def test_upgrade_101_exact_accept_for_known_key(broker):
    # RFC 6455 section 1.3's example key and answer.
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=5 * SLOW)
    try:
        s.sendall(upgrade_request("/ws", key=key))
        data = b""
        while b"\r\n\r\n" not in data:
            d = s.recv(4096)
            assert d, "closed during the handshake: %r" % data
            data += d
        r = HttpResponse(data.split(b"\r\n\r\n")[0] + b"\r\n\r\n", False)
        assert r.status == 101, r
        assert r.status_line == "HTTP/1.1 101 Switching Protocols", r
        assert r.header("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", r
        assert r.header("Upgrade").lower() == "websocket", r
        assert "upgrade" in r.header("Connection").lower(), r
        assert ws_accept(key) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        # The connection stays open after 101.
        s.settimeout(0.3)
        with pytest.raises(socket.timeout):
            s.recv(1)
    finally:
        s.close()


def test_upgrade_negotiates_no_extension_and_no_subprotocol(broker):
    data = upgrade_request(extra="Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                                 "Sec-WebSocket-Protocol: chat, superchat\r\n")
    r = upgrade_response(broker.port, data)
    assert r.status == 101, r
    assert r.header("Sec-WebSocket-Extensions") is None, r
    assert r.header("Sec-WebSocket-Protocol") is None, r


def test_upgrade_field_names_case_insensitive_and_token_lists(broker):
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    data = ("GET /ws HTTP/1.1\r\nhOST: t\r\nupgrade: websocket\r\n"
            "CONNECTION: keep-alive, Upgrade\r\nsec-websocket-key: %s\r\n"
            "SEC-WEBSOCKET-VERSION: 13\r\n\r\n" % key).encode()
    r = upgrade_response(broker.port, data)
    assert r.status == 101, r
    assert r.header("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", r


def test_upgrade_with_bare_lf_line_ends(broker):
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    data = ("GET /ws HTTP/1.1\nHost: t\nUpgrade: websocket\nConnection: Upgrade\n"
            "Sec-WebSocket-Key: %s\nSec-WebSocket-Version: 13\n\n" % key).encode()
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=5 * SLOW)
    try:
        s.sendall(data)
        got = b""
        while b"\r\n\r\n" not in got:
            d = s.recv(4096)
            assert d, got
            got += d
        assert got.startswith(b"HTTP/1.1 101 "), got
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in got, got
    finally:
        s.close()


def test_healthz_with_bare_lf(broker):
    r = req(broker, "GET /healthz HTTP/1.1\nHost: t\n\n")
    assert_closing_answer(r, 200)
    assert r.body == b"ok\n" or r.body.strip() == b"ok", r


# -- 426 ----------------------------------------------------------------------

def test_plain_get_ws_is_426_with_upgrade_header(broker):
    r = req(broker, "GET /ws HTTP/1.1\r\nHost: t\r\n\r\n")
    assert_closing_answer(r, 426)
    assert r.status_line == "HTTP/1.1 426 Upgrade Required", r
    assert r.header("Upgrade").lower() == "websocket", r
    assert r.header("Sec-WebSocket-Version") == "13", r


def test_upgrade_without_connection_upgrade_is_426(broker):
    r = req(broker, upgrade_request(connection="keep-alive"))
    assert_closing_answer(r, 426)
    assert r.header("Upgrade").lower() == "websocket", r
    assert r.header("Sec-WebSocket-Version") == "13", r


def test_upgrade_without_upgrade_header_is_426(broker):
    r = req(broker, upgrade_request(upgrade=None))
    assert_closing_answer(r, 426)
    assert r.header("Upgrade").lower() == "websocket", r


@pytest.mark.parametrize("version", ["8", None, "12", "130", "13, 8"])
def test_websocket_version_not_13_is_426(broker, version):
    r = req(broker, upgrade_request(version=version))
    assert_closing_answer(r, 426)
    assert r.header("Sec-WebSocket-Version") == "13", r


# -- 400 ----------------------------------------------------------------------

@pytest.mark.parametrize("key", [
    False,                          # missing
    "",                             # empty
    "not base64 at all!",           # not base64
    "AAAAAAAAAAAAAAAAAAAA",         # 15 bytes
    "AAAAAAAAAAAAAAAAAAAAAAAAAA==", # 19 bytes
])
def test_bad_websocket_key_is_400(broker, key):
    r = req(broker, upgrade_request(key=key))
    assert_closing_answer(r, 400)


def test_http10_upgrade_is_400(broker):
    r = req(broker, upgrade_request(proto="HTTP/1.0"))
    assert_closing_answer(r, 400)


def test_upgrade_without_host_is_400(broker):
    r = req(broker, upgrade_request(host=None))
    assert_closing_answer(r, 400)


KEY2 = "AAAAAAAAAAAAAAAAAAAAAA=="


# RFC 6455 11.3.1 and 11.3.5: the key and the version appear once in a
# request; RFC 9112 3.2: so does Host; RFC 6454 7.3: so does Origin; and
# Authorization carries one token. Which copy a broker reads need not be the
# one a proxy checked, so a repeat is a 400, even of an equal value.
@pytest.mark.parametrize("extra,name", [
    ("Sec-WebSocket-Key: %s\r\n" % KEY2, "Sec-WebSocket-Key"),
    ("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "Sec-WebSocket-Key"),
    ("sec-websocket-key: %s\r\n" % KEY2, "Sec-WebSocket-Key"),
    ("Sec-WebSocket-Version: 13\r\n", "Sec-WebSocket-Version"),
    ("Sec-WebSocket-Version: 8\r\n", "Sec-WebSocket-Version"),
    ("Host: other\r\n", "Host"),
    ("Origin: http://a.example\r\nOrigin: http://b.example\r\n", "Origin"),
    ("Authorization: Bearer x\r\nAuthorization: Bearer y\r\n", "Authorization"),
], ids=["key", "same-key", "key-lowercase", "version", "version-8", "host", "origin",
        "authorization"])
def test_repeated_single_field_is_400(broker, extra, name):
    r = req(broker, upgrade_request(key="dGhlIHNhbXBsZSBub25jZQ==", extra=extra))
    assert_closing_answer(r, 400)
    assert r.body == ("repeated %s header\n" % name).encode(), r
    assert r.header("Sec-WebSocket-Accept") is None, r


def test_repeated_host_is_400_on_every_path(broker):
    r = req(broker, "GET /healthz HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n")
    assert_closing_answer(r, 400)
    r = req(broker, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert_closing_answer(r, 200)


def test_repeated_key_counted_as_400(broker):
    def count():
        return metric(fetch_metrics(broker.port)[1], "broker_client_errors_total",
                      kind="http_400") or 0
    before = count()
    r = req(broker, upgrade_request(extra="Sec-WebSocket-Key: %s\r\n" % KEY2))
    assert_closing_answer(r, 400)
    wait_until(lambda: count() == before + 1, 5 * SLOW, what="http_400 counted")


# List fields (RFC 9110 5.3; Connection and Upgrade are lists, RFC 9110 7.6.1
# and 7.8) may be split over several lines and mean the same joined.
@pytest.mark.parametrize("upgrade,connection,extra", [
    (None, "keep-alive", "Connection: Upgrade\r\nUpgrade: websocket\r\n"),
    ("h2c", "Upgrade", "Upgrade: websocket\r\n"),
    ("websocket", "Upgrade", "Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b\r\n"
                             "Sec-WebSocket-Extensions: x\r\nSec-WebSocket-Extensions: y\r\n"),
], ids=["connection-split", "upgrade-split", "protocol-and-extensions"])
def test_repeated_list_fields_are_one_list(broker, upgrade, connection, extra):
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    r = upgrade_response(broker.port, upgrade_request(key=key, upgrade=upgrade,
                                                      connection=connection, extra=extra))
    assert r.status == 101, r
    assert r.header("Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", r


@pytest.mark.parametrize("head", [
    b"GARBAGE\r\n\r\n",
    b"GET /ws\r\n\r\n",                         # no version
    b"GET  /healthz HTTP/1.1\r\nHost: t\r\n\r\n",  # two spaces
    b"GET /healthz HTTP/2.0\r\nHost: t\r\n\r\n",
    b"GET /healthz FOO/1.1\r\nHost: t\r\n\r\n",
    b"GET healthz HTTP/1.1\r\nHost: t\r\n\r\n",  # target without /
    b"G(T /healthz HTTP/1.1\r\nHost: t\r\n\r\n",  # method not a token
    b"\x00\x01\x02\r\n\r\n",
])
def test_malformed_request_line_is_400_and_closed(broker, head):
    r = req(broker, head)
    assert_closing_answer(r, 400)
    assert r.status_line == "HTTP/1.1 400 Bad Request", r


@pytest.mark.parametrize("head", [
    b"GET /healthz HTTP/1.1\r\nHost: t\r\nNoColonHere\r\n\r\n",      # no colon
    b"GET /healthz HTTP/1.1\r\nHost : t\r\n\r\n",                    # space before colon
    b"GET /healthz HTTP/1.1\r\nHost\t: t\r\n\r\n",                   # tab before colon
    b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\r\n  b\r\n\r\n",    # obs-fold
    b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\r\n\tb\r\n\r\n",    # obs-fold, tab
    b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n",      # control char
    b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n",      # DEL
    b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",      # NUL
    b"GET /healthz HTTP/1.1\r\nHost: t\r\n: novalue\r\n\r\n",        # empty name
])
def test_malformed_header_is_400(broker, head):
    r = req(broker, head)
    assert_closing_answer(r, 400)


# -- 431 ----------------------------------------------------------------------

def test_head_over_8k_is_431_and_closed(broker):
    head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    r = req(broker, head)
    assert_closing_answer(r, 431)
    assert r.status_line == "HTTP/1.1 431 Request Header Fields Too Large", r


def test_head_over_8k_without_end_is_431(broker):
    # The limit applies before the head is complete.
    head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000
    r = req(broker, head)
    assert_closing_answer(r, 431)


def test_head_under_8k_is_fine(broker):
    head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 7900 + b"\r\n\r\n"
    r = req(broker, head)
    assert_closing_answer(r, 200)


def test_64_header_fields_ok_65_is_431(broker):
    def head(nfields):
        extra = "".join("X-F%d: v\r\n" % i for i in range(nfields - 1))
        return ("GET /healthz HTTP/1.1\r\nHost: t\r\n" + extra + "\r\n").encode()

    assert_closing_answer(req(broker, head(64)), 200)
    assert_closing_answer(req(broker, head(65)), 431)


# -- 404, 405 -----------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/nope", "/ws/", "/wss", "/healthz/x", "/WS"])
def test_unknown_path_is_404(broker, path):
    r = req(broker, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path)
    assert_closing_answer(r, 404)
    assert r.status_line == "HTTP/1.1 404 Not Found", r


def test_unknown_path_with_upgrade_is_404(broker):
    r = req(broker, upgrade_request(path="/other"))
    assert_closing_answer(r, 404)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD", "OPTIONS"])
def test_non_get_on_ws_is_405_allow_get(broker, method):
    body = "x" if method in ("POST", "PUT") else ""
    extra = "Content-Length: %d\r\n" % len(body) if body else ""
    r = req(broker, "%s /ws HTTP/1.1\r\nHost: t\r\n%s\r\n%s" % (method, extra, body))
    assert_closing_answer(r, 405)
    assert r.status_line == "HTTP/1.1 405 Method Not Allowed", r
    assert r.header("Allow") == "GET", r


def test_post_ws_with_upgrade_headers_is_405(broker):
    r = req(broker, upgrade_request(method="POST"))
    assert_closing_answer(r, 405)
    assert r.header("Allow") == "GET", r


# -- /healthz -----------------------------------------------------------------

def test_healthz_200_ok_with_redis_up(broker):
    r = req(broker, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert_closing_answer(r, 200)
    assert r.body.rstrip(b"\n") == b"ok", r


def test_healthz_head(broker):
    r = req(broker, "HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert_closing_answer(r, 200)
    assert r.body == b"", "HEAD answer with a body: %r" % r


def test_one_request_per_connection(broker):
    two = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n"
    raw, closed = http_exchange(broker.port, two, 5 * SLOW)
    assert closed
    assert raw.startswith(b"HTTP/1.1 200 "), raw
    assert raw.count(b"HTTP/1.1 ") == 1, raw


def test_healthz_503_while_redis_down_then_200(make_redis, make_broker):
    rs = make_redis().start()
    b = make_broker(rs.port)
    assert b.healthz()[0] == 200
    rs.stop()
    wait_until(lambda: b.healthz()[0] == 503, 10 * SLOW, what="/healthz 503 with redis down")
    r = req(b, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert_closing_answer(r, 503)
    assert r.body.rstrip(b"\n") == b"redis down", r
    r = req(b, "HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert_closing_answer(r, 503)
    rs.start()  # same port
    wait_until(lambda: b.healthz()[0] == 200, 15 * SLOW, what="/healthz 200 after redis restart")
    assert b.healthz()[1].rstrip(b"\n") == b"ok"


# -- handshake timeout (slowloris) -------------------------------------------

def test_slowloris_closed_after_handshake_timeout(redis, make_broker):
    b = make_broker(redis.port, handshake_timeout_ms=500)
    socks = []
    try:
        t0 = time.monotonic()
        partial = socket.create_connection(("127.0.0.1", b.port), timeout=10)
        partial.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websoc")
        silent = socket.create_connection(("127.0.0.1", b.port), timeout=10)
        socks = [partial, silent]
        for s in socks:
            s.settimeout(8 * SLOW)
            try:
                d = s.recv(4096)
            except ConnectionResetError:
                d = b""
            assert d == b"", "expected a close without an answer, got %r" % d
        elapsed = time.monotonic() - t0
        assert elapsed >= 0.4, "closed after %.2f s, before handshake_timeout_ms" % elapsed
        assert elapsed < 8 * SLOW
        # A client that finishes in time is served.
        assert b.healthz()[0] == 200
    finally:
        for s in socks:
            s.close()


def test_complete_head_in_pieces_within_timeout_is_served(broker):
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=5 * SLOW)
    try:
        for piece in (b"GET /hea", b"lthz HTTP/1.1\r\n", b"Host: t\r\n", b"\r\n"):
            s.sendall(piece)
            time.sleep(0.05)
        data = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            data += d
        assert data.startswith(b"HTTP/1.1 200 "), data
    finally:
        s.close()


# -- ?channels= ---------------------------------------------------------------

def test_query_channels_subscribe_without_acks(broker, redis):
    a, b2 = uniq("qa"), uniq("qb")

    async def body():
        ws = await ws_connect(broker.port, "/ws?channels=%s,%s" % (a, b2))
        try:
            wait_subscribed(redis.port, a, b2)
            assert publish(redis.port, b2, '{"n":1}') == 1
            text, ch, msgs = await recv_batch(ws)
            assert ch == b2 and msgs == ['{"n":1}'], text
            assert publish(redis.port, a, '{"n":2}') == 1
            text, ch, msgs = await recv_batch(ws)
            assert ch == a and msgs == ['{"n":2}'], text
        finally:
            await ws.close()
    run(body())


def test_query_channels_percent_decoded(broker, redis):
    base = uniq("pct")
    name = base + " x/\u20ac"  # space, slash, euro sign
    enc = base + "%20x%2F%E2%82%AC"

    async def body():
        ws = await ws_connect(broker.port, "/ws?foo=1&channels=%s&bar=2" % enc)
        try:
            wait_subscribed(redis.port, name)
            assert publish(redis.port, name, "1") == 1
            text, ch, msgs = await recv_batch(ws)
            assert ch == name and msgs == ["1"], text
        finally:
            await ws.close()
    run(body())


def test_query_channels_escaped_comma_is_part_of_a_name(broker, redis):
    base = uniq("comma")
    name = base + ",x"

    async def body():
        ws = await ws_connect(broker.port, "/ws?channels=%s%%2Cx" % base)
        try:
            wait_subscribed(redis.port, name)
            assert publish(redis.port, name, "7") == 1
            text, ch, msgs = await recv_batch(ws)
            assert ch == name and msgs == ["7"], text
        finally:
            await ws.close()
    run(body())


def test_query_channels_100_ok(broker):
    names = ",".join(uniq("h%d" % i) for i in range(100))
    assert upgrade_status(broker.port, upgrade_request("/ws?channels=" + names)) == 101


@pytest.mark.parametrize("query", [
    "channels=" + ",".join("c%d" % i for i in range(101)),  # 101 names
    "channels=a,,b",                                          # empty name
    "channels=",                                              # empty list
    "channels=a,",                                            # trailing empty name
    "channels=a%01b",                                         # control character
    "channels=a%7Fb",                                         # DEL
    "channels=a%FFb",                                         # invalid UTF-8
    "channels=" + "x" * 257,                                  # too long
    "channels=a%zzb",                                         # bad escape
])
def test_query_channels_invalid_is_400(broker, query):
    r = req(broker, upgrade_request("/ws?" + query))
    assert_closing_answer(r, 400)


def test_query_channel_256_bytes_ok(broker):
    assert upgrade_status(broker.port, upgrade_request("/ws?channels=" + "y" * 256)) == 101


def test_query_channels_first_frame_is_batch(broker, redis):
    a = uniq("first")

    async def body():
        ws = await ws_connect(broker.port, "/ws?channels=" + a)
        try:
            wait_subscribed(redis.port, a)
            publish(redis.port, a, '"hello"')
            text = await recv_text(ws)
            ch, msgs = parse_batch(text)  # the first frame is the batch
            assert ch == a and msgs == ['"hello"'], text
            # ... and a later subscribe is acked as usual.
            await subscribe(ws, uniq("later"), rid=7)
        finally:
            await ws.close()
    run(body())


# -- static_dir ---------------------------------------------------------------

def make_site(files):
    """A fresh static_dir holding files ({relative path: bytes})."""
    import helpers
    d = helpers.tmpdir("www-")
    for rel, data in files.items():
        path = os.path.join(d, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return d


def get(b, path, method="GET"):
    return req(b, "%s %s HTTP/1.1\r\nHost: t\r\n\r\n" % (method, path))


def check_config(*args):
    """Runs `broker -t ...` to completion; returns (rc, stdout, stderr)."""
    p = subprocess.Popen([BROKER_BIN, "-t"] + list(args), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    LIVE.add(p)
    try:
        out, err = p.communicate(timeout=20 * SLOW)
    finally:
        kill_proc(p)
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def conf_file(text):
    import helpers
    path = os.path.join(helpers.tmpdir("conf-"), "broker.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


SITE = {"index.html": b"<h1>home</h1>\n", "app.js": b"console.log(1);\n",
        "style.css": b"body{}\n", "sub/page.html": b"<p>page</p>\n",
        "sub/deeper/data.json": b'{"a":1}\n', "noext": b"plain", "logo.svg": b"<svg/>",
        ".hidden": b"secret", ".git/config": b"[core]", "sub/.env": b"KEY=1",
        "bad name.html": b"space"}


@pytest.fixture(scope="module")
def site_broker(redis):
    import helpers
    b = helpers.Broker(redis.port, static_dir=make_site(SITE))
    b.start()
    yield b
    b.stop()


@pytest.mark.parametrize("path,rel,ctype", [
    ("/", "index.html", "text/html; charset=utf-8"),
    ("/index.html", "index.html", "text/html; charset=utf-8"),
    ("/app.js", "app.js", "text/javascript; charset=utf-8"),
    ("/style.css", "style.css", "text/css; charset=utf-8"),
    ("/sub/page.html", "sub/page.html", "text/html; charset=utf-8"),
    ("/sub/deeper/data.json", "sub/deeper/data.json", "application/json"),
    ("/logo.svg", "logo.svg", "image/svg+xml"),
    ("/noext", "noext", "application/octet-stream"),
])
def test_static_get_and_head(site_broker, path, rel, ctype):
    r = get(site_broker, path)
    assert_closing_answer(r, 200)
    assert r.body == SITE[rel], r
    assert r.header("Content-Type") == ctype, r
    assert int(r.header("Content-Length")) == len(SITE[rel]), r
    h = get(site_broker, path, "HEAD")
    assert_closing_answer(h, 200)
    assert h.body == b"", h
    assert h.header("Content-Length") == r.header("Content-Length"), h
    assert h.header("Content-Type") == ctype, h


@pytest.mark.parametrize("path", [
    "/.hidden", "/.git/config", "/sub/.env", "/sub/", "/sub", "//index.html",
    "/sub/../index.html", "/./index.html", "/../index.html", "/sub//page.html",
    "/bad%20name.html", "/bad name.html", "/index.html/", "/INDEX.HTML", "/nope.html",
])
def test_static_path_rules(site_broker, path):
    r = req(site_broker, ("GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path).encode())
    assert r.status in (400, 404), r
    assert b"secret" not in r.raw and b"KEY=1" not in r.raw and b"[core]" not in r.raw, r


def test_static_other_methods_are_404(site_broker):
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        r = req(site_broker, "%s /app.js HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
                % method)
        assert_closing_answer(r, 404)


def test_static_skips_are_logged_but_not_dot_files(site_broker):
    log = site_broker.log()
    assert re.search(r"\] w1 static_dir .*: /bad name.html is not served: its name has", log), log
    assert re.search(r"\] w1 static_dir .*: 7 files, \d+ bytes in memory", log), log
    assert ".hidden" not in log and ".git" not in log


def test_static_demo_directory_with_its_symlink(redis, make_broker):
    # What `make run` serves: protocol/demo, whose broker-client.js is a
    # symbolic link to ../broker-client.js.
    import helpers
    demo = os.path.join(helpers.REPO, "protocol", "demo")
    b = make_broker(redis.port, static_dir=demo)
    for name in ("index.html", "demo.js", "broker-client.js"):
        r = get(b, "/" + name)
        assert_closing_answer(r, 200)
        with open(os.path.join(demo, name), "rb") as f:
            assert r.body == f.read(), name


def test_static_file_over_the_bound_is_not_served(redis, make_broker):
    mib = 1024 * 1024
    d = make_site({"ok.bin": b"a" * mib, "big.bin": b"b" * (mib + 1), "small.txt": b"s"})
    b = make_broker(redis.port, static_dir=d)
    r = get(b, "/ok.bin")
    assert_closing_answer(r, 200)
    assert r.body == b"a" * mib
    assert_closing_answer(get(b, "/big.bin"), 404)
    assert_closing_answer(get(b, "/small.txt"), 200)
    assert re.search(r"\] w1 static_dir .*: /big.bin is not served: 1048577 bytes, over the "
                     r"1048576 a file may have", b.log()), b.log()


def test_static_total_bound(redis, make_broker):
    # Nine files of 1 MiB: the first eight (by name) fill the 8 MiB.
    mib = 1024 * 1024
    d = make_site({"f%d.bin" % i: bytes([65 + i]) * mib for i in range(9)})
    b = make_broker(redis.port, static_dir=d)
    for i in range(8):
        r = get(b, "/f%d.bin" % i)
        assert_closing_answer(r, 200)
        assert len(r.body) == mib and r.body[:1] == bytes([65 + i])
    assert_closing_answer(get(b, "/f8.bin"), 404)
    assert re.search(r"\] w1 static_dir .*: /f8.bin is not served: .*over 8388608 bytes in all",
                     b.log()), b.log()


@pytest.mark.timeout(90)
def test_static_file_changed_on_disk_is_served_new_only_after_sighup(redis, make_broker):
    d = make_site({"index.html": b"version 1", "gone.txt": b"here"})
    b = make_broker(redis.port, static_dir=d)
    assert get(b, "/").body == b"version 1"
    with open(os.path.join(d, "index.html"), "wb") as f:
        f.write(b"version 2, longer")
    with open(os.path.join(d, "new.txt"), "wb") as f:
        f.write(b"new")
    os.unlink(os.path.join(d, "gone.txt"))
    # Nothing is read from disk per request: the old files until a reload.
    for _ in range(3):
        r = get(b, "/")
        assert r.body == b"version 1" and r.header("Content-Length") == "9", r
    assert get(b, "/gone.txt").body == b"here"
    assert_closing_answer(get(b, "/new.txt"), 404)
    n = b.log().count("configuration reloaded (")
    os.kill(b.proc.pid, signal.SIGHUP)
    wait_until(lambda: b.log().count("configuration reloaded (") > n, 10 * SLOW,
               what="the worker's reload")
    r = get(b, "/")
    assert_closing_answer(r, 200)
    assert r.body == b"version 2, longer" and r.header("Content-Length") == "17", r
    assert get(b, "/new.txt").body == b"new"
    assert_closing_answer(get(b, "/gone.txt"), 404)


def test_check_missing_static_dir_fails_with_file_line():
    path = conf_file("# site\nstatic_dir /nonexistent/www\n")
    rc, out, err = check_config("-c", path)
    assert rc == 1, (out, err)
    assert "%s:2" % path in err and "static_dir" in err, err
    assert "No such file or directory" in err, err


def test_check_static_dir_that_is_a_file_fails():
    d = make_site({"f": b"x"})
    path = conf_file("static_dir %s\n" % os.path.join(d, "f"))
    rc, out, err = check_config("-c", path)
    assert rc == 1, (out, err)
    assert "%s:1" % path in err and "static_dir" in err, err


def test_check_static_dir_names_files_it_would_not_serve():
    d = make_site({"index.html": b"ok", "huge.bin": b"h" * (1024 * 1024 + 1),
                   "a b.txt": b"x"})
    path = conf_file("static_dir %s\n" % d)
    rc, out, err = check_config("-c", path)
    assert rc == 1, (out, err)
    assert "key 'static_dir'" in err and path in err, err
    assert re.search(r"/huge\.bin would not be served: 1048577 bytes, over the 1048576", err), err
    assert "/a b.txt would not be served" in err, err


def test_check_good_static_dir_passes_and_sums_it_up():
    d = make_site({"index.html": b"12345", "sub/x.js": b"123"})
    path = conf_file("static_dir %s\n" % d)
    rc, out, err = check_config("-c", path)
    assert rc == 0, (out, err)
    assert "static_dir %s: 2 files, 8 bytes" % d in out, out


def test_start_with_missing_static_dir_exits_1():
    path = conf_file("listen 127.0.0.1:%d\nstatic_dir /nonexistent/www\n" % free_port())
    p = subprocess.Popen([BROKER_BIN, "-c", path], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    LIVE.add(p)
    try:
        out, err = p.communicate(timeout=20 * SLOW)
    finally:
        kill_proc(p)
    assert p.returncode == 1, (out, err)
    assert b"%s:2" % path.encode() in err, err

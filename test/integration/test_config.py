"""The command line and the configuration file (broker.conf.example,
`broker --help`)."""
import os
import re
import subprocess
import tempfile

import pytest

from helpers import (BROKER_BIN, LIVE, OP_TEXT, REPO, SLOW, TMP_ROOT, RawWS, free_port,
                     http_request, kill_proc, tmpdir, upgrade_request, upgrade_status,
                     wait_until)

EXAMPLE = os.path.join(REPO, "broker.conf.example")

KEYS = ["listen", "redis_url", "batch_interval_ms", "batch_max_bytes", "max_message_bytes",
        "ws_path", "max_client_message_bytes", "handshake_timeout_ms", "ping_interval_s",
        "pong_timeout_s", "max_pending_bytes", "shutdown_timeout_s", "log_level", "log_file"]


def broker(*args, timeout=20):
    """Runs the broker to completion (tracked, killed by PID on timeout)."""
    p = subprocess.Popen([BROKER_BIN] + list(args), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    LIVE.add(p)
    try:
        out, err = p.communicate(timeout=timeout * SLOW)
    finally:
        kill_proc(p)
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def write_conf(text):
    fd, path = tempfile.mkstemp(prefix="conf-", suffix=".conf", dir=TMP_ROOT)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def test_version_exits_0():
    rc, out, err = broker("--version")
    assert rc == 0, err
    assert re.match(r"^broker \d+\.\d+\.\d+", out), out


def test_help_exits_0_and_lists_every_key():
    rc, out, err = broker("--help")
    assert rc == 0, err
    assert "usage" in out.lower()
    for k in KEYS:
        assert k in out, "--help does not list %s" % k


def test_unknown_argument_exits_1():
    rc, out, err = broker("--bogus")
    assert rc == 1
    assert "--bogus" in err


def test_check_example_config_exits_0():
    rc, out, err = broker("-t", "-c", EXAMPLE)
    assert rc == 0, (out, err)


def help_keys():
    rc, out, _ = broker("--help")
    assert rc == 0
    return re.findall(r"^  ([a-z_]+) +default ", out, re.M)


def test_example_config_documents_every_key():
    text = open(EXAMPLE).read()
    keys = [l.split()[0] for l in text.splitlines() if l.strip() and not l.startswith("#")]
    assert len(keys) == len(set(keys)), keys
    assert set(KEYS) <= set(keys), set(KEYS) - set(keys)
    assert sorted(keys) == sorted(help_keys()), "broker.conf.example and --help disagree"


def test_check_without_file_uses_defaults_exits_0():
    rc, out, err = broker("-t")
    assert rc == 0, (out, err)


def test_check_unknown_key_names_file_line_and_key():
    path = write_conf("# comment\n\nbatch_interval_ms 100\nbogus_key 1\nlog_level info\n")
    try:
        rc, out, err = broker("-t", "-c", path)
        assert rc == 1, (out, err)
        assert "%s:4" % path in err, err
        assert "bogus_key" in err, err
    finally:
        os.unlink(path)


@pytest.mark.parametrize("line", [
    "batch_interval_ms abc",
    "batch_interval_ms -5",
    "batch_max_bytes 12q",
    "max_pending_bytes 1x",
    "log_level loud",
    "listen nonsense",
    "listen 127.0.0.1:99999",
    "redis_url http://127.0.0.1:6379",
    "ping_interval_s 1.5",
    "max_client_message_bytes ",
    "workers 0",
    "workers 257",    # over the metrics slots (METRICS_MAX_WORKERS): refused, never capped
    "workers 100000",
])
def test_check_invalid_value_names_file_line_and_key(line):
    key = line.split()[0]
    path = write_conf("listen 127.0.0.1:%d\n\n%s\n" % (free_port(), line))
    try:
        rc, out, err = broker("-t", "-c", path)
        assert rc == 1, (line, out, err)
        assert "%s:3" % path in err, err
        assert key in err, err
    finally:
        os.unlink(path)


def test_check_byte_suffixes_and_comments_valid():
    path = write_conf("# a comment\n   \nbatch_max_bytes 64k\nmax_message_bytes 1m\n"
                      "max_pending_bytes 1g\nlog_file\nlog_level debug\n")
    try:
        rc, out, err = broker("-t", "-c", path)
        assert rc == 0, (out, err)
    finally:
        os.unlink(path)


def test_missing_config_file_exits_1():
    rc, out, err = broker("-t", "-c", "/nonexistent/broker.conf")
    assert rc == 1
    assert "/nonexistent/broker.conf" in err


def test_start_with_invalid_config_exits_1():
    port = free_port()
    path = write_conf("listen 127.0.0.1:%d\nbatch_interval_ms soon\n" % port)
    try:
        rc, out, err = broker("-c", path)
        assert rc == 1, (out, err)
        assert "%s:2" % path in err and "batch_interval_ms" in err, err
    finally:
        os.unlink(path)


def test_start_with_unknown_key_exits_1():
    path = write_conf("listen 127.0.0.1:%d\nnot_a_key yes\n" % free_port())
    try:
        rc, out, err = broker("-c", path)
        assert rc == 1, (out, err)
        assert "%s:2" % path in err and "not_a_key" in err, err
    finally:
        os.unlink(path)


# -- keys that take effect ----------------------------------------------------

def test_ws_path_key(redis, make_broker):
    b = make_broker(redis.port, ws_path="/stream")
    assert upgrade_status(b.port, upgrade_request("/stream")) == 101
    r = http_request(b.port, upgrade_request("/ws"), timeout=5 * SLOW)
    assert r.status == 404 and r.closed, r
    r = http_request(b.port, b"POST /stream HTTP/1.1\r\nHost: t\r\n\r\n", timeout=5 * SLOW)
    assert r.status == 405 and r.header("Allow") == "GET", r


def test_max_client_message_bytes_key(redis, make_broker):
    b = make_broker(redis.port, max_client_message_bytes=100)
    ok = '{"action":"subscribe","channel":"c","rid":1,"p":"%s"}' % ("x" * 49)
    assert len(ok) == 100
    ws = RawWS(b.port)
    try:
        ws.send_frame(OP_TEXT, ok)
        assert ws.recv_json(5 * SLOW)["rid"] == 1
        ws.send_frame(OP_TEXT, ok[:-1] + ' }')
        f = ws.expect_close(10 * SLOW)
        assert f.close_code == 1009, f
    finally:
        ws.close()


def test_log_file_key(redis, make_broker):
    path = os.path.join(tmpdir("logfile-"), "broker.log")

    def logged():
        return os.path.exists(path) and str(b.port) in open(path, errors="replace").read()

    b = make_broker(redis.port, log_file=path)
    wait_until(logged, 5 * SLOW, what="log lines in log_file")

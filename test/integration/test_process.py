"""README "Operations": the master and its workers (supervision, signals,
reload, log reopening), GET /metrics summed over workers, pid_file and the
stats line. Every broker here runs 2 workers."""
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from helpers import (BROKER_WRAPPER, OP_CLOSE, OP_TEXT, SLOW, RawWS, assert_clean_log,
                     child_pids, close_payload, fetch_metrics, kill_proc, metric, numsub,
                     parse_batch, parse_metrics, port_accepts, publish, publish_many, uniq,
                     upgrade_request, upgrade_status, wait_until)

WORKERS = 2


# -- helpers ------------------------------------------------------------------

def metrics(b):
    return fetch_metrics(b.port)[1]


def wait_metric(b, name, want, timeout=10.0, **labels):
    """Polls /metrics until the sample equals `want` (or want(value) holds)."""
    ok = want if callable(want) else (lambda v: v == want)
    last = {}

    def check():
        last["v"] = metric(metrics(b), name, **labels)
        return last["v"] is not None and ok(last["v"])
    try:
        wait_until(check, timeout * SLOW, interval=0.1, what="%s%r == %r" % (name, labels, want))
    except AssertionError as e:
        raise AssertionError("%s (last value %r)" % (e, last.get("v")))
    return last["v"]


def wait_workers_ready(b):
    """Both workers running, each with its Redis link up."""
    wait_until(lambda: len(child_pids(b.proc.pid)) == WORKERS, 10 * SLOW,
               what="%d worker processes" % WORKERS)
    wait_until(lambda: all(metric(metrics(b), "broker_redis_up", worker=i + 1) == 1
                           for i in range(WORKERS)), 15 * SLOW, interval=0.1,
               what="every worker's redis link up")


def start(make_broker, redis_port, **cfg):
    cfg.setdefault("workers", WORKERS)
    b = make_broker(redis_port, **cfg)
    wait_workers_ready(b)
    return b


def write_conf(b, extra_lines=()):
    """Rewrites the broker's configuration file from b.cfg (plus raw extra
    lines at the end); returns the file's lines."""
    lines = ["%s %s" % kv for kv in b.cfg.items()] + list(extra_lines)
    with open(b.conf_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return lines


def socket_inode(broker_port, client_port):
    """The inode of the broker side of a loopback TCP connection."""
    want_local = ":%04X" % broker_port
    want_rem = ":%04X" % client_port
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            if p[1].endswith(want_local) and p[2].endswith(want_rem) and p[9] != "0":
                return p[9]
    return None


def owner_of(b, client, timeout=5.0):
    """The PID of the worker holding the broker side of a client's socket
    (found through /proc/net/tcp and /proc/PID/fd)."""
    cport = client.sock.getsockname()[1]

    def find():
        inode = socket_inode(b.port, cport)
        if inode is None:
            return None
        target = "socket:[%s]" % inode
        for pid in child_pids(b.proc.pid):
            try:
                for fd in os.listdir("/proc/%d/fd" % pid):
                    try:
                        if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == target:
                            return pid
                    except OSError:
                        pass
            except OSError:
                pass
        return None
    return wait_until(find, timeout * SLOW, what="the worker owning client port %d" % cport)


def connect_spread(b, path, at_least, max_tries=60):
    """Connects RawWS clients until there are `at_least` of them and every
    worker has one. Returns [(client, worker pid)]."""
    out = []
    for _ in range(max_tries):
        c = RawWS(b.port, path, timeout=10 * SLOW)
        out.append((c, owner_of(b, c)))
        if len(out) >= at_least and len(set(p for _, p in out)) >= WORKERS:
            return out
    for c, _ in out:
        c.close()
    raise AssertionError("%d connections never reached every worker" % max_tries)


def recv_batch_frame(c, timeout=10.0):
    """Next data frame of a RawWS client, as (channel, [raw messages])."""
    return parse_batch(c.recv_data(timeout * SLOW))


def recv_messages(c, n, channel, timeout=10.0):
    """Reads batch frames until n messages arrived; returns the frames'
    message lists."""
    frames, got = [], 0
    deadline = time.monotonic() + timeout * SLOW
    while got < n:
        ch, msgs = recv_batch_frame(c, max(0.01, deadline - time.monotonic()) / SLOW)
        assert ch == channel, (ch, msgs)
        frames.append(msgs)
        got += len(msgs)
    assert got == n, frames
    return frames


def wait_exit(b, timeout):
    """Waits for the master (already signalled) to exit; returns its code,
    or None if it is still running after `timeout` s. Takes the process
    away from the fixture's stop()."""
    p = b.proc
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    b.proc = None
    kill_proc(p)
    assert_clean_log(b.log())
    return rc


def answer_close(c):
    """Answers a close frame as a polite client would, then closes."""
    try:
        c.send_frame(OP_CLOSE, close_payload(1000))
    except OSError:
        pass
    c.close()


# -- a shared broker for the tests that only look ----------------------------

@pytest.fixture(scope="module")
def shared(redis):
    import helpers
    b = helpers.Broker(redis.port, workers=WORKERS, stats_interval_s=1)
    b.cfg["pid_file"] = os.path.join(b.dir, "broker.pid")
    b.start()
    wait_workers_ready(b)
    yield b
    b.stop()


def test_workers_are_children_of_the_master(shared):
    kids = child_pids(shared.proc.pid)
    assert len(kids) == WORKERS, kids
    for pid in kids:
        # A worker is the same program (or the same valgrind) as its master.
        assert os.readlink("/proc/%d/exe" % pid) == os.readlink("/proc/%d/exe" % shared.proc.pid)
    types, samples = fetch_metrics(shared.port)
    assert metric(samples, "broker_workers") == WORKERS
    assert types["broker_workers"] == "gauge"
    for w in range(1, WORKERS + 1):
        assert metric(samples, "broker_redis_up", worker=w) == 1, samples
        assert re.search(r"\] w%d " % w, shared.log()), "no log line from worker %d" % w
    assert re.search(r"\] m0 ", shared.log())


def test_pid_file_holds_the_master_pid(shared):
    with open(shared.cfg["pid_file"]) as f:
        text = f.read()
    assert re.fullmatch(r"\d+\n?", text), text
    assert int(text) == shared.proc.pid


def test_stats_line_every_interval_from_each_worker(shared):
    pat = (r"\] w%d stats: conns=\d+ subs=\d+ channels=\d+ redis=(up|down) in=\d+ msg/s "
           r"out=\d+ msg/s \d+ frames/s \d+\.\d\d MB/s$")
    # stats_interval_s 1: a few lines per worker within a few seconds.
    wait_until(lambda: all(len(re.findall(pat % w, shared.log(), re.M)) >= 2
                           for w in range(1, WORKERS + 1)), 10 * SLOW, interval=0.2,
               what="two stats lines from every worker")
    last = re.findall(r"\] w\d stats: .*$", shared.log(), re.M)[-1]
    assert "redis=up" in last, last


def test_metrics_parser_is_strict():
    good = ("# HELP a_total A.\n# TYPE a_total counter\na_total 3\n"
            "# TYPE g gauge\ng{x=\"1\",y=\"a\\\"b\"} -2.5\ng{x=\"2\"} 1e3\n")
    types, samples = parse_metrics(good)
    assert types == {"a_total": "counter", "g": "gauge"}
    assert samples[("g", frozenset([("x", "1"), ("y", 'a\\"b')]))] == -2.5
    bad = [
        "a 1\n",                                              # no TYPE
        "# TYPE a gauge\na 1",                                # no final newline
        "# TYPE a gauge\na one\n",                            # not a number
        "# TYPE a gauge\na{x=1} 1\n",                         # unquoted label
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n",    # family split
        "# TYPE a gauge\n# TYPE a gauge\na 1\n",              # TYPE twice
        "# TYPE a gauge\na 1\na 1\n",                         # sample repeated
        "# TYPE a counter\na -1\n",                           # negative counter
        "# TYPE a kind\na 1\n",                               # unknown type
        "# TYPE a gauge\na  1\n",                             # two spaces
    ]
    for text in bad:
        with pytest.raises(AssertionError):
            parse_metrics(text)


def test_metrics_exposition_and_documented_families(shared):
    types, samples = fetch_metrics(shared.port)
    gauges = ["broker_connections", "broker_subscriptions", "broker_channels", "broker_workers",
              "broker_redis_up"]
    counters = ["broker_connections_total", "broker_redis_messages_total",
                "broker_redis_bytes_total", "broker_frames_sent_total",
                "broker_messages_delivered_total", "broker_bytes_sent_total",
                "broker_slow_consumer_disconnects_total", "broker_messages_dropped_total",
                "broker_client_errors_total", "broker_worker_restarts_total",
                "broker_accept_errors_total"]
    for g in gauges:
        assert types.get(g) == "gauge", (g, types.get(g))
    for c in counters:
        assert types.get(c) == "counter", (c, types.get(c))
    for name in types:
        if name.endswith("_total"):
            assert types[name] == "counter", name
    names = set(n for n, _ in samples)
    assert set(gauges + counters) <= names, set(gauges + counters) - names
    # Labeled families carry their label on every sample.
    for (name, labels) in samples:
        keys = set(k for k, _ in labels)
        if name == "broker_redis_up":
            assert keys == {"worker"}, labels
        elif name == "broker_messages_dropped_total":
            assert keys == {"reason"}, labels
        elif name == "broker_client_errors_total":
            assert keys == {"kind"}, labels
    assert metric(samples, "broker_worker_restarts_total") == 0


def test_metrics_count_connections_across_workers(shared, redis):
    ch = uniq("conns")
    base = metrics(shared)
    assert metric(base, "broker_connections") == 0, "another test left clients behind"
    sessions0 = metric(base, "broker_sessions_total")
    clients = connect_spread(shared, "/ws?channels=" + ch, at_least=7)
    n = len(clients)
    workers_used = len(set(p for _, p in clients))
    try:
        wait_metric(shared, "broker_connections", n)
        wait_metric(shared, "broker_subscriptions", n)
        # Each worker with a subscriber subscribes once in Redis.
        wait_metric(shared, "broker_channels", workers_used)
        wait_until(lambda: numsub(redis.port, ch) == workers_used, 10 * SLOW,
                   what="one redis subscription per worker")
        # Whichever worker answers, the counters are the sums: several
        # requests (spread over the workers) agree.
        seen = set()
        for _ in range(6):
            seen.add(metric(metrics(shared), "broker_sessions_total"))
        assert seen == {sessions0 + n}, (seen, sessions0, n)
        for c, _ in clients[:3]:
            answer_close(c)
        wait_metric(shared, "broker_connections", n - 3)
        wait_metric(shared, "broker_subscriptions", n - 3)
    finally:
        for c, _ in clients:
            c.close()
    wait_metric(shared, "broker_connections", 0)
    wait_metric(shared, "broker_channels", 0)


def read_pid_file(path):
    with open(path) as f:
        text = f.read()
    assert re.fullmatch(r"\d+\n", text), text
    return int(text)


@pytest.mark.timeout(90)
def test_second_start_on_a_busy_port_leaves_the_pid_file_alone(redis, make_broker):
    import helpers
    d = helpers.tmpdir("pid-")
    path = os.path.join(d, "broker.pid")
    a = start(make_broker, redis.port, pid_file=path)
    assert read_pid_file(path) == a.proc.pid
    # The same port and pid_file again: a mistaken second start.
    b = helpers.Broker(redis.port, port=a.port, workers=WORKERS, pid_file=path)
    b.start(wait=None)
    try:
        rc = b.proc.wait(timeout=15 * SLOW)
    finally:
        kill_proc(b.proc)
    log = b.log()
    assert_clean_log(log)
    assert rc == 1, "second broker exited with %r; log:\n%s" % (rc, log)
    assert re.search(r"\] m0 listen 127\.0\.0\.1:%d: Address already in use "
                     r"\(is another broker running\?\)" % a.port, log), log
    assert "worker" not in log, "the second broker started workers:\n" + log
    # The running broker's pid file is untouched, and it still serves.
    assert read_pid_file(path) == a.proc.pid
    assert a.healthz()[0] == 200
    a.stop()
    assert not os.path.exists(path), "pid_file left behind by the broker that wrote it"


@pytest.mark.timeout(90)
def test_pid_file_replaced_meanwhile_is_not_removed(redis, make_broker):
    import helpers
    path = os.path.join(helpers.tmpdir("pid-"), "broker.pid")
    a = start(make_broker, redis.port, pid_file=path)
    master = a.proc.pid
    assert read_pid_file(path) == master
    # Someone else (an operator, another broker) now owns the file.
    with open(path, "w") as f:
        f.write("1\n")
    a.stop()
    assert read_pid_file(path) == 1
    assert re.search(r"\] m0 pid_file %s no longer holds pid %d; left in place"
                     % (re.escape(path), master), a.log()), a.log()[-2000:]


# -- supervision ----------------------------------------------------------------

@pytest.mark.timeout(120)
def test_killed_worker_is_replaced_and_the_other_workers_clients_notice_nothing(
        redis, make_broker):
    b = start(make_broker, redis.port)
    ch = uniq("kill")
    clients = connect_spread(b, "/ws?channels=" + ch, at_least=8)
    again = []
    try:
        wait_until(lambda: numsub(redis.port, ch) == WORKERS, 10 * SLOW,
                   what="both workers subscribed")
        victim = clients[0][1]
        doomed = [c for c, p in clients if p == victim]
        survivors = [c for c, p in clients if p != victim]
        assert doomed and survivors
        os.kill(victim, signal.SIGKILL)

        # A replacement within ~2 s (more under valgrind).
        def replaced():
            kids = child_pids(b.proc.pid)
            return len(kids) == WORKERS and victim not in kids and kids
        kids = wait_until(replaced, 2 * SLOW, interval=0.02, what="a replacement worker")
        fresh = [k for k in kids if k not in set(p for _, p in clients)]
        assert len(fresh) == 1, (kids, victim)
        assert re.search(r"\] m0 worker \d \(pid %d\) killed by signal 9\b" % victim, b.log()), \
            b.log()[-3000:]
        wait_metric(b, "broker_worker_restarts_total", 1)
        wait_metric(b, "broker_workers", WORKERS)

        # The victim's clients lost their connection; the others did not.
        for c in doomed:
            assert c.wait_eof(5 * SLOW), "a client of the killed worker is still connected"
        for c in survivors:
            assert c.is_open(), "a client of the surviving worker was disconnected"
        wait_until(lambda: metric(metrics(b), "broker_redis_up", worker=1) == 1 and
                   metric(metrics(b), "broker_redis_up", worker=2) == 1, 15 * SLOW,
                   interval=0.1, what="the new worker's redis link")
        assert publish(redis.port, ch, '{"n":1}') >= 1
        for c in survivors:
            assert recv_messages(c, 1, ch) == [['{"n":1}']]

        # The victim's clients reconnect; keep connecting until one lands on
        # the new worker, which serves it like any other.
        for _ in range(60):
            c = RawWS(b.port, "/ws?channels=" + ch, timeout=10 * SLOW)
            again.append((c, owner_of(b, c)))
            if len(again) >= len(doomed) and any(p == fresh[0] for _, p in again):
                break
        assert any(p == fresh[0] for _, p in again), "no connection reached the new worker"
        everyone = survivors + [c for c, _ in again]
        wait_until(lambda: numsub(redis.port, ch) == WORKERS, 10 * SLOW,
                   what="both workers subscribed again")
        wait_metric(b, "broker_connections", len(everyone))
        assert publish(redis.port, ch, '{"n":2}') == WORKERS
        for c in everyone:
            assert recv_messages(c, 1, ch) == [['{"n":2}']]
    finally:
        for c, _ in clients:
            c.close()
        for c, _ in again:
            c.close()


def strace_works():
    if shutil.which("strace") is None:
        return False
    p = subprocess.run(["strace", "-o", "/dev/null", "true"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)
    return p.returncode == 0


@pytest.mark.timeout(120)
def test_each_listening_socket_is_closed_once(redis):
    """strace -f of the master and its workers through a start, a worker
    killed and replaced, and a graceful stop: no process closes a
    descriptor it does not hold (the listener closes the worker's listening
    socket, and nothing closes that number again)."""
    import helpers
    if not strace_works():
        pytest.skip("strace is missing or ptrace is not permitted here")
    b = helpers.Broker(redis.port, workers=WORKERS)
    b.cfg["pid_file"] = os.path.join(b.dir, "broker.pid")
    b.wrapper = ["strace", "-ff", "-q", "-e", "trace=close", "-o", os.path.join(b.dir, "trace")]
    # LeakSanitizer stops the process with ptrace at exit, which it cannot
    # do under strace; everything else ASan checks still runs.
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = ":".join(x for x in (env.get("ASAN_OPTIONS"), "detect_leaks=0") if x)
    b.env = env
    b.start()
    try:
        master = read_pid_file(b.cfg["pid_file"])
        wait_until(lambda: len(child_pids(master)) == WORKERS, 10 * SLOW,
                   what="%d worker processes" % WORKERS)
        first = child_pids(master)
        os.kill(first[0], signal.SIGKILL)
        wait_until(lambda: len(child_pids(master)) == WORKERS and first[0] not in child_pids(master),
                   10 * SLOW, what="a replacement worker")
        workers = child_pids(master)
        os.kill(master, signal.SIGTERM)
        rc = wait_exit(b, 30 * SLOW)
    finally:
        if b.proc is not None:
            kill_proc(b.proc)
    assert rc == 0, "exit status %r; log:\n%s" % (rc, b.log()[-3000:])
    # -ff: one file per process, trace.PID, so calls are never split.
    traced = {}
    for name in os.listdir(b.dir):
        if name.startswith("trace."):
            with open(os.path.join(b.dir, name)) as f:
                traced[int(name[len("trace."):])] = f.read()
    assert master in traced and all(pid in traced for pid in workers), (master, workers, traced)
    bad = ["%d: %s" % (pid, l) for pid, text in sorted(traced.items())
           for l in text.splitlines() if "EBADF" in l]
    assert not bad, "descriptors closed twice:\n%s" % "\n".join(bad)
    # The workers that stopped by themselves closed their sockets (the
    # trace did see them).
    for pid in workers:
        assert "close(" in traced[pid] and "+++ exited with 0 +++" in traced[pid], traced[pid]


def test_listening_sockets_keep_the_masters_backlog(shared):
    """The master listens with a backlog of 4096 (capped by somaxconn); a
    worker taking the socket must not listen() again with a smaller one."""
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2)")
    with open("/proc/sys/net/core/somaxconn") as f:
        want = min(4096, int(f.read()))
    out = subprocess.run(["ss", "-Hltn", "sport = :%d" % shared.port], stdout=subprocess.PIPE,
                         check=True, timeout=10).stdout.decode()
    # State Recv-Q Send-Q Local Peer: for a listening socket Send-Q is the backlog.
    backlogs = [int(l.split()[2]) for l in out.splitlines() if l.strip()]
    assert backlogs == [want] * WORKERS, out


# -- counters stay counters ---------------------------------------------------------

def try_metrics(port):
    """One scrape, parsed; None when the connection failed or the answer
    was cut short (its worker was killed while answering)."""
    import helpers
    try:
        r = helpers.http_request(port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", 10 * SLOW)
    except (OSError, AssertionError):
        return None
    if r.status != 200 or r.header("Content-Length") is None or \
            int(r.header("Content-Length")) != len(r.body):
        return None
    return parse_metrics(r.body.decode("utf-8"))


@pytest.mark.timeout(150)
def test_counters_stay_monotonic_while_workers_are_killed(redis, make_broker):
    """A thread scrapes /metrics in a loop while workers that have counted
    things are killed and replaced, over and over: every counter of every
    scrape is at least what the previous scrape showed (a dead worker's
    counts move to the retired totals in one step for readers)."""
    import threading
    b = start(make_broker, redis.port)
    ch = uniq("mono")
    stop = threading.Event()
    scrapes, decreases, failures = [0], [], []

    def scraper():
        prev = {}
        try:
            while not stop.is_set():
                got = try_metrics(b.port)
                if got is None:
                    continue
                types, samples = got
                scrapes[0] += 1
                for key, v in samples.items():
                    if types.get(key[0]) == "counter" and key in prev and v < prev[key]:
                        decreases.append((key, prev[key], v))
                prev = {k: v for k, v in samples.items() if types.get(k[0]) == "counter"}
        except BaseException as e:  # reported by the main thread
            failures.append(e)

    t = threading.Thread(target=scraper, daemon=True)
    kills = 6  # 3 per worker: respawn delays 0, 1 s, 2 s for each
    clients = []
    try:
        t.start()
        for k in range(kills):
            # Give every worker something to count: a session, a
            # subscription, a frame.
            for c, _ in connect_spread(b, "/ws?channels=" + ch, at_least=2):
                clients.append(c)
            wait_until(lambda: numsub(redis.port, ch) == WORKERS, 10 * SLOW,
                       what="both workers subscribed")
            assert publish(redis.port, ch, '{"k":%d}' % k) == WORKERS
            wait_metric(b, "broker_frames_sent_total", lambda v: v >= len(clients))
            kids = child_pids(b.proc.pid)
            victim = kids[k % len(kids)]
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: len(child_pids(b.proc.pid)) == WORKERS and
                       victim not in child_pids(b.proc.pid), 15 * SLOW, interval=0.02,
                       what="a replacement for worker %d" % victim)
            wait_workers_ready(b)
            for c in clients:
                c.close()
            clients = []
            assert not failures, failures[0]
            assert not decreases, "counters went down between scrapes: %r" % decreases[:5]
        wait_metric(b, "broker_worker_restarts_total", kills)
        stop.set()
        t.join(30 * SLOW)
        assert not t.is_alive(), "the scraper did not stop"
        assert not failures, failures[0]
        assert not decreases, "counters went down between scrapes: %r" % decreases[:5]
        assert scrapes[0] >= 2 * kills, "only %d scrapes" % scrapes[0]
    finally:
        stop.set()
        for c in clients:
            c.close()
        if t.is_alive():
            t.join(10)


@pytest.mark.timeout(120)
def test_frames_sent_counts_what_was_queued_with_a_slow_consumer(redis, make_broker):
    """One channel, two clients: one reads everything, one never reads until
    it is closed as a slow consumer. broker_frames_sent_total (and
    messages_delivered_total: one message per frame here) grow by exactly
    the frames queued: all of the reader's, and of the slow one's those it
    received plus those dropped from its queue when it was closed; neither
    the frame that found it over max_pending_bytes nor those published while
    it was closing count."""
    b = make_broker(redis.port, max_pending_bytes="64k", batch_interval_ms=0)
    ch = uniq("queued")
    pad = "q" * 8000
    fast = RawWS(b.port, "/ws?channels=" + ch, timeout=10 * SLOW)
    slow = RawWS(b.port, "/ws?channels=" + ch, rcvbuf=4096, timeout=10 * SLOW)
    try:
        wait_until(lambda: numsub(redis.port, ch) == 1, 10 * SLOW, what="subscribed")
        m0 = metrics(b)
        sent0 = metric(m0, "broker_frames_sent_total")
        msgs0 = metric(m0, "broker_messages_delivered_total")
        slow0 = metric(m0, "broker_slow_consumer_disconnects_total")
        dropped0 = metric(m0, "broker_messages_dropped_total", reason="slow_consumer")
        fast_frames, n, per_round, after = 0, 0, 10, None

        def one_round():
            nonlocal n, fast_frames
            msgs = ['"%d-%s"' % (n + i, pad) for i in range(per_round)]
            n += per_round
            publish_many(redis.port, [(ch, m) for m in msgs])
            for m in msgs:
                assert recv_batch_frame(fast) == (ch, [m])
                fast_frames += 1

        for _ in range(300):  # at most 24 MB before the slow client must be closed
            one_round()
            if metric(metrics(b), "broker_slow_consumer_disconnects_total") > slow0:
                after = n
                break
        assert after is not None, "the client that never reads was never closed"
        # More while it is closing (still a member of the channel until freed).
        for _ in range(3):
            one_round()
        # The slow client's stream: whatever was written before its queue
        # was dropped, then close 1008, then EOF.
        slow_frames, close = 0, None
        while close is None:
            f = slow.recv_frame(20 * SLOW)
            if f.opcode == OP_TEXT:
                assert parse_batch(f.text)[0] == ch
                slow_frames += 1
            elif f.opcode == OP_CLOSE:
                close = f
        assert close.close_code == 1008, close
        assert slow.wait_eof(10 * SLOW)
        assert 0 < slow_frames < after, (slow_frames, after)

        m1 = metrics(b)
        dropped = metric(m1, "broker_messages_dropped_total", reason="slow_consumer") - dropped0
        assert dropped > 0, "nothing was dropped from the slow client's queue"
        queued = fast_frames + slow_frames + dropped
        assert metric(m1, "broker_frames_sent_total") - sent0 == queued, \
            (metric(m1, "broker_frames_sent_total") - sent0, fast_frames, slow_frames, dropped)
        assert metric(m1, "broker_messages_delivered_total") - msgs0 == queued
        assert fast.is_open()
    finally:
        fast.close()
        slow.close()


# -- signals ---------------------------------------------------------------------

@pytest.mark.timeout(90)
def test_sigterm_flushes_closes_1001_and_exits_0(redis, make_broker):
    timeout_s = 5
    b = start(make_broker, redis.port, shutdown_timeout_s=timeout_s, batch_interval_ms=5000)
    ch = uniq("term")
    clients = connect_spread(b, "/ws?channels=" + ch, at_least=4)
    try:
        wait_until(lambda: numsub(redis.port, ch) == WORKERS, 10 * SLOW,
                   what="both workers subscribed")
        # A batch pending (5 s interval) when the signal comes is flushed.
        before = metric(metrics(b), "broker_redis_messages_total")
        assert publish(redis.port, ch, '"last words"') == WORKERS
        wait_metric(b, "broker_redis_messages_total", before + WORKERS)
        t0 = time.monotonic()
        os.kill(b.proc.pid, signal.SIGTERM)
        for c, _ in clients:
            f = c.recv_frame(5 * SLOW)
            assert f.opcode == OP_TEXT, f
            assert parse_batch(f.text) == (ch, ['"last words"'])
            close = c.expect_close(5 * SLOW)
            assert close.close_code == 1001, close
            answer_close(c)
        rc = wait_exit(b, timeout_s + (1 if not BROKER_WRAPPER else 10 * SLOW))
        elapsed = time.monotonic() - t0
        assert rc == 0, "master exit code %r after SIGTERM (%.1f s)" % (rc, elapsed)
        log = open(b.log_path).read()
        assert "m0 master: stopped" in log, log[-2000:]
        assert "killing them" not in log, log[-2000:]
        # New connections are refused once stopped.
        assert not port_accepts(b.port)
    finally:
        for c, _ in clients:
            c.close()


@pytest.mark.timeout(90)
def test_second_sigterm_exits_at_once(redis, make_broker):
    # A client that never reads keeps its worker draining (bytes still
    # queued for it) long after the first SIGTERM; shutdown_timeout_s 60.
    b = start(make_broker, redis.port, shutdown_timeout_s=60, max_pending_bytes="64m",
              batch_interval_ms=10)
    ch = uniq("stuck")
    stuck = RawWS(b.port, "/ws?channels=" + ch, rcvbuf=4096, timeout=10 * SLOW)
    try:
        wait_until(lambda: numsub(redis.port, ch) >= 1, 10 * SLOW, what="subscribed")
        pad = "x" * 10000
        before = metric(metrics(b), "broker_messages_delivered_total")
        publish_many(redis.port, [(ch, '"%d%s"' % (i, pad)) for i in range(1000)])
        wait_metric(b, "broker_messages_delivered_total", before + 1000, timeout=20)
        os.kill(b.proc.pid, signal.SIGTERM)
        time.sleep(1.0)
        assert b.proc.poll() is None, "the broker did not wait for its stuck client"
        assert child_pids(b.proc.pid), "no worker left during the first shutdown"
        t0 = time.monotonic()
        os.kill(b.proc.pid, signal.SIGTERM)
        bound = 2.5 if not BROKER_WRAPPER else 2.5 * SLOW
        rc = wait_exit(b, bound + 10)
        elapsed = time.monotonic() - t0
        assert rc is not None, "still running 10 s after the second SIGTERM"
        assert elapsed < bound, "the second SIGTERM took %.1f s to stop the broker" % elapsed
        log = open(b.log_path).read()
        # The workers left by themselves, not by the master's SIGKILL.
        assert "killing them" not in log, log[-3000:]
        assert not re.search(r"killed by signal", log), log[-3000:]
        assert rc == 0, "exit code %r; log:\n%s" % (rc, log[-3000:])
    finally:
        stuck.close()


@pytest.mark.timeout(120)
def test_sighup_reload_applies_in_every_worker_and_rejects_a_bad_file(redis, make_broker):
    b = start(make_broker, redis.port, batch_interval_ms=2000)
    ch = uniq("hup")
    clients = connect_spread(b, "/ws?channels=" + ch, at_least=2)
    seq = {"n": 0}

    def three():
        """Publishes three messages in one pipeline; returns them."""
        msgs = []
        for _ in range(3):
            msgs.append('{"seq":%d}' % seq["n"])
            seq["n"] += 1
        assert publish_many(redis.port, [(ch, m) for m in msgs]) == [WORKERS] * 3
        return msgs

    def frames_everywhere():
        """The frames each client got for one three(): all equal."""
        msgs = three()
        got = [recv_messages(c, 3, ch, timeout=15) for c, _ in clients]
        for g in got:
            assert sum(g, []) == msgs, g
        assert all(g == got[0] for g in got), got
        return got[0]

    def reloaded(n_before, pat):
        """Waits until every worker logged one more reload matching pat."""
        def ok():
            log = b.log()
            return all(len(re.findall(r"\] w%d %s" % (w, pat), log)) > n_before[w]
                       for w in range(1, WORKERS + 1))
        wait_until(ok, 10 * SLOW, interval=0.1, what="every worker reloaded")

    def counts(pat):
        log = b.log()
        return {w: len(re.findall(r"\] w%d %s" % (w, pat), log)) for w in range(1, WORKERS + 1)}

    try:
        wait_until(lambda: numsub(redis.port, ch) == WORKERS, 10 * SLOW,
                   what="both workers subscribed")
        assert frames_everywhere() == [['{"seq":0}', '{"seq":1}', '{"seq":2}']]

        # batch_interval_ms 2000 -> 0: each message in its own frame.
        pat = r"configuration reloaded \(batch_interval_ms 0\b"
        n0 = counts(pat)
        b.cfg["batch_interval_ms"] = "0"
        write_conf(b)
        os.kill(b.proc.pid, signal.SIGHUP)
        reloaded(n0, pat)
        assert "m0 configuration reloaded from" in b.log()
        assert frames_everywhere() == [['{"seq":3}'], ['{"seq":4}'], ['{"seq":5}']]

        # An invalid file: rejected with FILE:LINE, the old values stay.
        b.cfg["batch_interval_ms"] = "2000"
        lines = write_conf(b, ["max_pending_bytes lots"])
        os.kill(b.proc.pid, signal.SIGHUP)
        where = "%s:%d" % (b.conf_path, len(lines))
        rejected = r"\] m0 .*reload rejected.*%s" % re.escape(where + ":")
        wait_until(lambda: re.search(rejected, b.log()),
                   10 * SLOW, what="the rejection with %s in the log" % where)
        assert frames_everywhere() == [['{"seq":6}'], ['{"seq":7}'], ['{"seq":8}']]
        assert b.healthz()[0] == 200
        extra = RawWS(b.port, "/ws", timeout=10 * SLOW)
        extra.close()

        # listen changed (with a reloadable key): logged as needing a
        # restart; the broker stays on its port, batch_interval_ms applies.
        other = socket.socket()
        other.bind(("127.0.0.1", 0))
        other_port = other.getsockname()[1]
        other.close()
        pat = r"configuration reloaded \(batch_interval_ms 2000\b"
        n0 = counts(pat)
        b.cfg["listen"] = "127.0.0.1:%d" % other_port
        write_conf(b)
        os.kill(b.proc.pid, signal.SIGHUP)
        reloaded(n0, pat)
        assert re.search(r"\] m0 .*\blisten\b.*restart", b.log()), b.log()[-2000:]
        assert frames_everywhere() == [['{"seq":9}', '{"seq":10}', '{"seq":11}']]
        assert not port_accepts(other_port)
        assert b.healthz()[0] == 200
    finally:
        for c, _ in clients:
            c.close()


@pytest.mark.timeout(90)
def test_sigusr1_reopens_the_log_file_in_every_process(redis, make_broker):
    import helpers
    d = helpers.tmpdir("logs-")
    path = os.path.join(d, "broker.log")
    b = start(make_broker, redis.port, log_file=path, stats_interval_s=1)

    def text(p):
        try:
            with open(p) as f:
                return f.read()
        except FileNotFoundError:
            return ""
    for who in ["m0"] + ["w%d" % (w + 1) for w in range(WORKERS)]:
        assert "] %s " % who in text(path), text(path)[-2000:]
    os.rename(path, path + ".1")
    os.kill(b.proc.pid, signal.SIGUSR1)
    # Workers: their stats lines (every second) land in the new file.
    wait_until(lambda: all("] w%d stats: " % (w + 1) in text(path) for w in range(WORKERS)),
               10 * SLOW, interval=0.1, what="stats lines of every worker in the new log file")
    # The master: a reload's line lands there too.
    os.kill(b.proc.pid, signal.SIGHUP)
    wait_until(lambda: "] m0 configuration reloaded" in text(path), 10 * SLOW,
               what="the master's line in the new log file")
    # Nothing goes to the old file any more.
    old = text(path + ".1")
    time.sleep(2.2)
    assert text(path + ".1") == old, "lines still written to the renamed file"
    assert len(re.findall(r"\] w\d stats: ", text(path))) >= 2 * WORKERS
    # Sanitizer reports would go to stderr, which Broker.stop() checks; the
    # log file must not hold any either.
    assert_clean_log(text(path) + old)


@pytest.mark.timeout(90)
def test_master_survives_a_log_write_to_a_closed_pipe(redis):
    """stderr is a pipe whose reader went away (a supervisor, `| tee`): the
    master's next log line fails with EPIPE instead of killing it."""
    import helpers
    b = helpers.Broker(redis.port, workers=WORKERS)
    write_conf(b)
    p = subprocess.Popen(helpers.BROKER_WRAPPER + [helpers.BROKER_BIN, "-c", b.conf_path],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    helpers.LIVE.add(p)
    try:
        wait_until(lambda: p.poll() is None and b.healthz()[0] == 200, 15 * SLOW,
                   what="broker /healthz 200")
        p.stdout.close()
        # The reload makes the master log (to the closed pipe), then tell
        # the workers, which then refuse this Origin.
        origin = "Origin: http://elsewhere.example\r\n"
        assert upgrade_status(b.port, upgrade_request(extra=origin)) == 101
        b.cfg["allowed_origins"] = "http://here.example"
        write_conf(b)
        os.kill(p.pid, signal.SIGHUP)
        wait_until(lambda: p.poll() is not None or
                   upgrade_status(b.port, upgrade_request(extra=origin)) == 403,
                   10 * SLOW, interval=0.1, what="the reload to reach the workers")
        assert p.poll() is None, "the master died (status %r)" % p.returncode
        os.kill(p.pid, signal.SIGTERM)
        rc = p.wait(timeout=15 * SLOW)
        assert rc == 0, "exit status %r after SIGTERM" % rc
    finally:
        kill_proc(p)


# -- Redis restarts ---------------------------------------------------------------

@pytest.mark.timeout(120)
def test_every_worker_rejoins_a_restarted_redis(make_redis, make_broker):
    r = make_redis().start()
    b = start(make_broker, r.port)
    ch = uniq("rejoin")
    clients = connect_spread(b, "/ws?channels=" + ch, at_least=4)
    try:
        wait_until(lambda: numsub(r.port, ch) == WORKERS, 10 * SLOW, what="both subscribed")
        r.stop()
        for w in range(1, WORKERS + 1):
            wait_metric(b, "broker_redis_up", 0, timeout=15, worker=w)
        assert b.healthz()[0] == 503
        r.start()
        for w in range(1, WORKERS + 1):
            wait_metric(b, "broker_redis_up", 1, timeout=20, worker=w)
        wait_until(lambda: numsub(r.port, ch) == WORKERS, 10 * SLOW,
                   what="every worker resubscribed after the restart")
        assert b.healthz()[0] == 200
        assert metric(metrics(b), "broker_redis_reconnects_total") >= WORKERS
        for c, _ in clients:
            assert c.is_open()
        assert publish(r.port, ch, '"after restart"') == WORKERS
        for c, _ in clients:
            assert recv_messages(c, 1, ch, timeout=15) == [['"after restart"']]
    finally:
        for c, _ in clients:
            c.close()

"""Sentinel mode (broker.conf.example: redis_mode sentinel, redis_sentinels,
redis_master_name; broker/sentinel.h): the broker asks the sentinels where
the primary is, subscribes there, and follows a failover (+switch-master)
with its clients staying connected.

The fixture runs a primary, one replica and three sentinels (quorum 2),
shared by the module; the failover test kills the primary, so it is last."""
import asyncio
import os
import re
import signal
import subprocess
import time

import pytest

import helpers
from helpers import (SLOW, RedisError, free_port, http_request, kill_proc, parse_batch, publish,
                     redis_command, run, subscribe, tmpdir, uniq, wait_until, ws_connect)

NAME = "mymaster"


class Proc:
    """A redis-server (or sentinel) with the given arguments, by PID."""

    def __init__(self, port, d, args, name):
        self.port = port
        self.dir = d
        self.args = args
        self.log_path = os.path.join(d, "%s-%d.log" % (name, port))
        self.proc = None

    def start(self, timeout=15):
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([helpers.REDIS_BIN] + self.args, stdout=logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        helpers.LIVE.add(self.proc)
        wait_until(self.ready, timeout, what="%s up" % self.log_path)
        return self

    def ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("%s exited with %s:\n%s" % (
                self.log_path, self.proc.returncode, open(self.log_path).read()[-3000:]))
        try:
            return redis_command(self.port, "PING", timeout=1) == "PONG"
        except OSError:
            return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        p, self.proc = self.proc, None
        os.kill(p.pid, signal.SIGKILL)
        kill_proc(p)

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


def pairs(flat):
    """A flat [k, v, k, v, ...] reply as a dict of str."""
    it = iter(flat)
    return {k.decode(): (v.decode() if isinstance(v, bytes) else v) for k, v in zip(it, it)}


def info_field(port, section, field):
    text = redis_command(port, "INFO", section).decode()
    m = re.search(r"^%s:(.*?)\r?$" % re.escape(field), text, re.M)
    return m.group(1) if m else None


class Setup:
    def __init__(self):
        self.dir = tmpdir("sentinel-")
        pp, rp = free_port(), free_port()
        # Diskless sync waits 5 s for more replicas by default: not here.
        base = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--repl-diskless-sync-delay", "0"]
        self.primary = Proc(pp, self.dir, ["--port", str(pp), "--dir", self.dir] + base, "redis")
        self.replica = Proc(rp, self.dir, ["--port", str(rp), "--dir", self.dir,
                                           "--replicaof", "127.0.0.1", str(pp)] + base, "redis")
        self.sentinels = []
        for _ in range(3):
            sp = free_port()
            conf = os.path.join(self.dir, "sentinel-%d.conf" % sp)
            with open(conf, "w") as f:  # each its own: sentinels rewrite it
                f.write("port %d\nbind 127.0.0.1\ndir %s\n"
                        "sentinel monitor %s 127.0.0.1 %d 2\n"
                        "sentinel down-after-milliseconds %s 1000\n"
                        "sentinel failover-timeout %s 5000\n"
                        "sentinel parallel-syncs %s 1\n"
                        % (sp, self.dir, NAME, pp, NAME, NAME, NAME))
            self.sentinels.append(Proc(sp, self.dir, [conf, "--sentinel"], "sentinel"))
        self.list = ",".join("127.0.0.1:%d" % s.port for s in self.sentinels)

    def start(self):
        self.primary.start()
        self.replica.start()
        wait_until(lambda: info_field(self.replica.port, "replication", "master_link_status") == "up",
                   20 * max(1, SLOW / 2), interval=0.1, what="replica linked to the primary")
        for s in self.sentinels:
            s.start()
        self.wait_settled(self.primary.port, self.replica.port, 30)
        return self

    def wait_settled(self, primary, replica, timeout):
        """Every live sentinel names `primary`, sees `replica` linked to it,
        and knows the two other sentinels."""
        def ok():
            for s in self.sentinels:
                if not s.alive():
                    continue
                addr = redis_command(s.port, "SENTINEL", "get-master-addr-by-name", NAME)
                if addr != [b"127.0.0.1", str(primary).encode()]:
                    return False
                m = pairs(redis_command(s.port, "SENTINEL", "master", NAME))
                if m.get("flags") != "master" or m.get("num-other-sentinels") != "2":
                    return False
                reps = [pairs(r) for r in redis_command(s.port, "SENTINEL", "replicas", NAME)]
                if not any(r.get("port") == str(replica) and r.get("flags") == "slave"
                           and r.get("master-link-status") == "ok" for r in reps):
                    return False
            return True
        wait_until(ok, timeout, interval=0.2, what="sentinels agreeing on primary %d" % primary)

    def master_addr(self):
        """What the live sentinels say, when they all agree."""
        seen = set()
        for s in self.sentinels:
            if s.alive():
                r = redis_command(s.port, "SENTINEL", "get-master-addr-by-name", NAME)
                seen.add(int(r[1]))
        return seen.pop() if len(seen) == 1 else None

    def stop(self):
        for p in self.sentinels + [self.replica, self.primary]:
            p.stop()


@pytest.fixture(scope="module")
def sentinel():
    s = Setup()
    try:
        s.start()
        yield s
    finally:
        s.stop()


def sentinel_broker(make_broker, s, sentinels=None, wait="healthz", **cfg):
    cfg.setdefault("batch_interval_ms", 0)
    # redis_url names a port nothing listens on: the address must come from
    # the sentinels.
    return make_broker(free_port(), wait=wait, redis_mode="sentinel",
                       redis_sentinels=sentinels or s.list, redis_master_name=NAME, **cfg)


def numsub(port, ch):
    return int(redis_command(port, "PUBSUB", "NUMSUB", ch)[1])


async def receive_pairs(ws, n, timeout):
    got = []
    deadline = time.monotonic() + timeout * SLOW
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("got %d of %d messages: %r" % (len(got), n, got))
        ch, msgs = parse_batch(await asyncio.wait_for(ws.recv(), left))
        got.extend((ch, m) for m in msgs)
    return got


async def expect_silence(ws, seconds):
    try:
        text = await asyncio.wait_for(ws.recv(), seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError("unexpected frame: %s" % text[:300])


async def drain(ws, quiet):
    while True:
        try:
            await asyncio.wait_for(ws.recv(), quiet)
        except asyncio.TimeoutError:
            return


async def publish_until_received(port_fn, ws, channel, timeout):
    """PUBLISHes a fresh probe every 0.3 s on the port port_fn() names
    (errors tolerated) until one arrives on ws; returns what arrived."""
    deadline = time.monotonic() + timeout
    sent, errors, i = set(), [], 0
    while time.monotonic() < deadline:
        probe = '{"probe":%d}' % i
        i += 1
        try:
            publish(port_fn(), channel, probe)
            sent.add(probe)
        except (OSError, RedisError, AssertionError) as e:
            errors.append(str(e))
        try:
            text = await asyncio.wait_for(ws.recv(), 0.3)
        except asyncio.TimeoutError:
            continue
        ch, msgs = parse_batch(text)
        assert ch == channel and set(msgs) <= sent, (ch, msgs, sent)
        return msgs
    raise AssertionError("nothing delivered on %r within %.0f s (errors: %r)"
                         % (channel, timeout, errors[-3:]))


def metric(broker, name):
    r = http_request(broker.port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", timeout=5)
    assert r.status == 200, r
    vals = [int(m.group(2)) for m in re.finditer(r"^%s(\{[^}]*\})? (\d+)$" % re.escape(name),
                                                 r.body.decode(), re.M)]
    assert vals, "no %s in /metrics" % name
    return sum(vals)


async def check_delivery(b, primary, chans):
    """Subscribes a client to chans, checks exact delivery from the primary."""
    ws = await ws_connect(b.port)
    try:
        for i, ch in enumerate(chans):
            await subscribe(ws, ch, rid=i)
        for ch in chans:
            wait_until(lambda: numsub(primary, ch) == 1, 15 * SLOW, what="%s subscribed" % ch)
        payloads = [b'{ "a" : [1, 2.50] }', b"not json", b'"\xc3\xa9"']
        want = ['{ "a" : [1, 2.50] }', '"not json"', '"\u00e9"']
        for ch in chans:
            for p in payloads:
                assert publish(primary, ch, p) == 1
        got = await receive_pairs(ws, len(chans) * len(payloads), 10)
        for ch in chans:
            assert [m for c, m in got if c == ch] == want, got
        await expect_silence(ws, 0.3 * SLOW)
    finally:
        await ws.close()


# ---------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_sentinel_mode_delivers_from_the_primary(sentinel, make_broker):
    b = sentinel_broker(make_broker, sentinel)
    assert b.healthz()[0] == 200
    chans = [uniq("sent-a"), uniq("sent-b")]
    run(check_delivery(b, sentinel.primary.port, chans), timeout=100)
    # Subscribed on the primary, not on the replica.
    assert all(numsub(sentinel.replica.port, ch) == 0 for ch in chans)
    log = b.log()
    assert "primary %s is at 127.0.0.1:%d" % (NAME, sentinel.primary.port) in log, log[-3000:]
    assert metric(b, "broker_redis_up") == 1


@pytest.mark.timeout(120)
def test_first_sentinel_down_the_next_one_answers(sentinel, make_broker):
    dead = free_port()
    b = sentinel_broker(make_broker, sentinel,
                        sentinels="127.0.0.1:%d,%s" % (dead, sentinel.list))
    run(check_delivery(b, sentinel.primary.port, [uniq("sent-dead")]), timeout=100)


@pytest.mark.timeout(120)
def test_unresponsive_first_sentinel_does_not_block_the_others(sentinel, make_broker, make_redis):
    """The first sentinel accepts TCP connections but never answers (a
    paused process: SIGSTOP). The others are fine, so the broker must give
    up on it and ask the next one."""
    hung = make_redis().start()
    os.kill(hung.proc.pid, signal.SIGSTOP)
    try:
        b = sentinel_broker(make_broker, sentinel, wait="port",
                            sentinels="127.0.0.1:%d,%s" % (hung.port, sentinel.list))
        try:
            wait_until(lambda: b.healthz()[0] == 200, 8 + 2 * SLOW, interval=0.2,
                       what="/healthz 200 with a paused first sentinel")
        except AssertionError as e:
            raise AssertionError("%s; broker log:\n%s" % (e, b.log()[-2000:]))
        run(check_delivery(b, sentinel.primary.port, [uniq("sent-hung")]), timeout=60)
    finally:
        os.kill(hung.proc.pid, signal.SIGCONT)


@pytest.mark.timeout(150)
def test_failover_followed_clients_stay_connected(sentinel, make_broker):
    """kill -9 of the primary: the sentinels promote the replica; the broker
    learns it, subscribes there, and its clients (same WebSockets) get what
    is published on the new primary."""
    sentinel.wait_settled(sentinel.primary.port, sentinel.replica.port, 30)
    b = sentinel_broker(make_broker, sentinel)
    old, new = sentinel.primary.port, sentinel.replica.port
    c1, c2 = uniq("fo-a"), uniq("fo-b")

    async def body():
        ws = await ws_connect(b.port)
        ws2 = await ws_connect(b.port, "/ws?channels=" + c2)
        try:
            await subscribe(ws, c1, rid="x")
            for ch in (c1, c2):
                wait_until(lambda: numsub(old, ch) == 1, 15 * SLOW, what="%s subscribed" % ch)
            assert publish(old, c1, '"before1"') == 1
            assert publish(old, c2, '"before2"') == 1
            assert await receive_pairs(ws, 1, 10) == [(c1, '"before1"')]
            assert await receive_pairs(ws2, 1, 10) == [(c2, '"before2"')]

            sentinel.primary.kill9()
            t0 = time.monotonic()
            wait_until(lambda: sentinel.master_addr() == new, 30, interval=0.2,
                       what="the sentinels promoting the replica")
            promoted = time.monotonic() - t0
            assert info_field(new, "replication", "role") == "master"
            await publish_until_received(lambda: new, ws, c1, 15 * SLOW)
            await publish_until_received(lambda: new, ws2, c2, 15 * SLOW)
            resumed = time.monotonic() - t0
            await drain(ws, 0.5 * SLOW)
            await drain(ws2, 0.1)
            # Exactly one subscription each on the new primary.
            assert numsub(new, c1) == 1 and numsub(new, c2) == 1
            assert publish(new, c1, '{"after": 1}') == 1
            assert publish(new, c2, '{"after": 2}') == 1
            assert await receive_pairs(ws, 1, 10) == [(c1, '{"after": 1}')]
            assert await receive_pairs(ws2, 1, 10) == [(c2, '{"after": 2}')]
            # The same WebSockets all along.
            assert not ws.closed and not ws2.closed
            for w in (ws, ws2):
                await asyncio.wait_for(await w.ping(), 5 * SLOW)
            # New subscriptions go to the new primary.
            c3 = uniq("fo-c")
            await subscribe(ws, c3)
            wait_until(lambda: numsub(new, c3) == 1, 10 * SLOW, what="new channel subscribed")
            assert publish(new, c3, "3") == 1
            assert await receive_pairs(ws, 1, 10) == [(c3, "3")]
            return promoted, resumed
        finally:
            await ws.close()
            await ws2.close()
    promoted, resumed = run(body(), timeout=140)
    wait_until(lambda: b.healthz()[0] == 200, 10 * SLOW, what="/healthz 200 after the failover")
    assert metric(b, "broker_redis_up") == 1
    assert metric(b, "broker_redis_reconnects_total") >= 1
    log = b.log()
    # It followed the failover: told by the sentinels, connected to the new
    # primary.
    assert ("failover of %s: 127.0.0.1:%d -> 127.0.0.1:%d" % (NAME, old, new) in log
            or "primary %s is at 127.0.0.1:%d" % (NAME, new) in log), log[-4000:]
    assert "redis 127.0.0.1:%d: connected" % new in log, log[-4000:]
    print("promoted %.1f s after kill -9, delivery resumed after %.1f s" % (promoted, resumed))


@pytest.fixture
def own_sentinel():
    """A primary, a replica and three sentinels of the test's own."""
    s = Setup()
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.mark.timeout(150)
def test_sentinel_lost_then_failover_learned_from_the_next(own_sentinel, make_broker):
    """The sentinel the broker talks to (the first in redis_sentinels) dies:
    the broker moves to the next one, and Redis delivery is not disturbed.
    Then the primary dies and the two remaining sentinels fail it over: the
    broker learns the new primary from them."""
    s = own_sentinel
    b = sentinel_broker(make_broker, s)
    old, new = s.primary.port, s.replica.port
    first, second = s.sentinels[0].port, s.sentinels[1].port
    ch = uniq("sfo")

    async def body():
        ws = await ws_connect(b.port, "/ws?channels=" + ch)
        try:
            wait_until(lambda: numsub(old, ch) == 1, 15 * SLOW, what="subscribed")
            assert "sentinel 127.0.0.1:%d: primary" % first in b.log(), b.log()[-2000:]
            s.sentinels[0].kill9()
            wait_until(lambda: "sentinel 127.0.0.1:%d: primary %s is at 127.0.0.1:%d"
                       % (second, NAME, old) in b.log(), 15 * SLOW, interval=0.1,
                       what="the broker asking the next sentinel")
            # The Redis link never noticed.
            assert publish(old, ch, '"still"') == 1
            assert await receive_pairs(ws, 1, 10) == [(ch, '"still"')]
            assert b.healthz()[0] == 200

            s.primary.kill9()
            # Two sentinels of three: a split vote costs 2 x failover-timeout.
            wait_until(lambda: s.master_addr() == new, 45, interval=0.2,
                       what="the remaining sentinels promoting the replica")
            await publish_until_received(lambda: new, ws, ch, 15 * SLOW)
            await drain(ws, 0.5 * SLOW)
            assert numsub(new, ch) == 1
            assert publish(new, ch, '"after"') == 1
            assert await receive_pairs(ws, 1, 10) == [(ch, '"after"')]
            assert not ws.closed
        finally:
            await ws.close()
    run(body(), timeout=140)
    wait_until(lambda: b.healthz()[0] == 200, 10 * SLOW, what="/healthz 200 after the failover")
    log = b.log()
    assert "redis 127.0.0.1:%d: connected" % new in log, log[-4000:]


@pytest.mark.timeout(150)
def test_manual_failover_moves_the_subscriptions(own_sentinel, make_broker):
    """SENTINEL FAILOVER (maintenance): the old primary stays up and becomes
    a replica, so nothing breaks the broker's connection; the +switch-master
    it hears must move its subscriptions to the new primary. PUBLISH on the
    new primary is replicated to the old one: a broker left subscribed there
    too would deliver twice."""
    s = own_sentinel
    b = sentinel_broker(make_broker, s)
    old, new = s.primary.port, s.replica.port
    ch = uniq("manual")

    async def body():
        ws = await ws_connect(b.port, "/ws?channels=" + ch)
        try:
            wait_until(lambda: numsub(old, ch) == 1, 15 * SLOW, what="subscribed")
            assert redis_command(s.sentinels[1].port, "SENTINEL", "FAILOVER", NAME) == "OK"
            wait_until(lambda: s.master_addr() == new, 30, interval=0.2,
                       what="the sentinels promoting the replica")
            wait_until(lambda: numsub(new, ch) == 1 and numsub(old, ch) == 0, 15 * SLOW,
                       interval=0.1, what="the broker subscribed on the new primary only")
            await drain(ws, 0.3 * SLOW)
            assert publish(new, ch, '"once"') == 1
            assert await receive_pairs(ws, 1, 10) == [(ch, '"once"')]
            await expect_silence(ws, 1.0 * SLOW)
            assert not ws.closed
        finally:
            await ws.close()
    run(body(), timeout=140)
    assert b.healthz()[0] == 200
    log = b.log()
    assert "failover of %s: 127.0.0.1:%d -> 127.0.0.1:%d" % (NAME, old, new) in log, log[-3000:]
    assert "redis 127.0.0.1:%d: connected" % new in log, log[-4000:]


@pytest.mark.timeout(240)
def test_soak_with_one_failover(own_sentinel, make_broker):
    """32 s of numbered messages, two workers, in bursts with idle gaps;
    between two bursts the primary is failed over (SENTINEL FAILOVER). Every
    link follows: delivery resumes on the new primary, every message reaches
    every client once and in order (nothing is published while the primary
    changes), each worker's link counts exactly one reconnect, and nothing
    else is lost or retried."""
    from helpers import RespConn, Soak, metric_sum, skip_soak_under_valgrind
    skip_soak_under_valgrind()
    s = own_sentinel
    b = sentinel_broker(make_broker, s, workers=2)
    old, new = s.primary.port, s.replica.port
    chans = [uniq("ssoak") for _ in range(4)]
    conn = {"port": old, "c": RespConn(old, timeout=10)}

    def pub(ch, payload):
        n = conn["c"].command("PUBLISH", ch, payload)
        assert isinstance(n, int) and n >= 1, (ch, n)

    def fault(soak):
        time.sleep(8)
        soak.pause()
        subs = {ch: numsub(old, ch) for ch in chans}
        assert redis_command(s.sentinels[1].port, "SENTINEL", "FAILOVER", NAME) == "OK"
        wait_until(lambda: s.master_addr() == new, 30, interval=0.2,
                   what="the sentinels promoting the replica")
        wait_until(lambda: all(numsub(new, ch) == subs[ch] for ch in chans) and
                   all(numsub(old, ch) == 0 for ch in chans), 20 * SLOW, interval=0.1,
                   what="every worker subscribed on the new primary only")
        wait_until(lambda: b.healthz()[0] == 200, 10 * SLOW, what="/healthz 200")
        conn["c"].close()
        conn["c"], conn["port"] = RespConn(new, timeout=10), new
        soak.resume()

    soak = Soak(b.port, chans, pub, nclients=4, duration=32)
    try:
        got = soak.run(during=fault)
    finally:
        conn["c"].close()
    total = soak.check_exact(got)
    assert conn["port"] == new, "the failover did not happen during the soak"
    workers = 2
    assert metric_sum(b.port, "broker_redis_reconnects_total") == workers
    # Each old link was moved on the sentinels' word (not a loss) or, if the
    # demoted primary closed it first, lost once; nothing else.
    losses = metric_sum(b.port, "broker_redis_link_losses_total")
    assert losses == metric_sum(b.port, "broker_redis_link_losses_total", reason="closed")
    assert losses <= workers
    log = b.log()
    assert log.count("failover of %s: 127.0.0.1:%d -> 127.0.0.1:%d" % (NAME, old, new)) == workers
    assert not re.search(r"no answer|connect failed|reconnecting", log), log[-3000:]
    print("soak sentinel: %d messages x %d clients, one failover, %d reconnects"
          % (total, len(got), workers))


@pytest.mark.timeout(150)
def test_history_survives_a_failover(own_sentinel, make_broker):
    """History lives in the primary and replicates with it (functions too):
    after SENTINEL FAILOVER a client of the broker resumes with since on the
    new primary and recovers what was published on the old one and the
    new."""
    import json
    from helpers import RespConn, recv_json, send_json
    s = own_sentinel
    b = sentinel_broker(make_broker, s)
    old, new = s.primary.port, s.replica.port
    ch = uniq("shist")
    wait_until(lambda: redis_command(old, "FUNCTION", "LIST", "LIBRARYNAME", "broker") != [],
               10 * SLOW, what="the library on the primary")

    def fcall(port, i):
        with RespConn(port) as c:
            return c.command("FCALL", "broker_publish", 1, ch, '{"i":%d}' % i)

    for i in range(1, 6):
        assert fcall(old, i) == i
    epoch = redis_command(old, "FCALL_RO", "broker_range", 1, ch, 0, "after", 0)[0].decode()
    # The replica has it all before the switch (WAIT), as an orderly
    # failover would.
    assert redis_command(old, "WAIT", 1, 5000) == 1
    assert redis_command(s.sentinels[0].port, "SENTINEL", "FAILOVER", NAME) == "OK"
    wait_until(lambda: s.master_addr() == new, 30, interval=0.2, what="the replica promoted")
    wait_until(lambda: info_field(new, "replication", "role") == "master", 10, what="role")
    wait_until(lambda: b.healthz()[0] == 200 and "redis 127.0.0.1:%d: connected" % new in b.log(),
               15 * SLOW, what="the broker on the new primary")
    for i in range(6, 9):
        assert fcall(new, i) == i

    async def body():
        ws = await ws_connect(b.port)
        try:
            await send_json(ws, {"action": "subscribe", "channel": ch, "rid": 1,
                                 "since": {"offset": 2, "epoch": epoch}})
            _, ack = await recv_json(ws, 10 * SLOW)
            assert ack["recovered"] is True and ack["offset"] == 8 and ack["epoch"] == epoch, ack
            got = []
            while len(got) < 6:
                obj = json.loads(await asyncio.wait_for(ws.recv(), 10 * SLOW))
                got.extend(m["i"] for m in obj["messages"])
            assert got == [3, 4, 5, 6, 7, 8], got
        finally:
            await ws.close()
    run(body(), timeout=60)

"""The Redis connection layer as users meet it (broker/redisconn.h,
broker/rsub.h): an ack that means "live", credentials Redis refuses, a
channel Redis refuses, a link Redis drops for falling behind, and a soak
of steady traffic with idle gaps (liveness pings) that must keep every link
up and deliver every message once, in order."""
import asyncio
import json
import os
import re
import signal
import time

import pytest

import helpers
from helpers import (SLOW, RespConn, Soak, child_pids, metric_sum, numsub, publish, recv_json,
                     redis_command, run, send_json, skip_soak_under_valgrind, subscribe, uniq,
                     wait_until, ws_connect, parse_batch)


class OwnRedis(helpers.RedisServer):
    """A redis-server started with extra arguments."""

    def __init__(self, *args):
        super().__init__()
        self.args = list(args)

    def start(self, timeout=10.0):
        import subprocess
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [helpers.REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir] + self.args,
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        helpers.LIVE.add(self.proc)
        wait_until(self._ready_any, timeout, what="redis-server on port %d" % self.port)
        return self

    def _ready_any(self):
        if self.proc.poll() is not None:
            raise AssertionError(open(self.log_path).read())
        return helpers.port_accepts(self.port)


@pytest.fixture
def own_redis():
    made = []

    def make(*args):
        r = OwnRedis(*args).start()
        made.append(r)
        return r
    yield make
    for r in made:
        r.stop()


def test_ack_means_live(redis, make_broker):
    """The first subscriber of a channel is acked once Redis has confirmed the
    SUBSCRIBE: a message published the moment the ack arrives is delivered,
    120 times out of 120, over fresh channels."""
    b = make_broker(redis.port, batch_interval_ms=0, max_control_per_s=1000)
    chans = [uniq("live") for _ in range(120)]

    async def body():
        ws = await ws_connect(b.port)
        pub = RespConn(redis.port)
        try:
            missed = []
            for i, ch in enumerate(chans):
                await send_json(ws, {"action": "subscribe", "channel": ch, "rid": i})
                _, ack = await recv_json(ws, 5 * SLOW)
                assert ack == {"type": "ack", "action": "subscribe", "channel": ch, "rid": i}, ack
                if pub.command("PUBLISH", ch, '{"n":%d}' % i) != 1:
                    missed.append(ch)
                    await subscribe(ws, ch, action="unsubscribe")
                    continue
                text = await asyncio.wait_for(ws.recv(), 5 * SLOW)
                assert parse_batch(text) == (ch, ['{"n":%d}' % i]), text
                await subscribe(ws, ch, action="unsubscribe")
            assert not missed, "%d of %d published on ack reached no subscriber" % (
                len(missed), len(chans))
        finally:
            pub.close()
            await ws.close()
    run(body(), timeout=120)


def test_requests_after_a_held_ack_keep_their_order(redis, make_broker):
    """A burst of requests behind a subscribe whose ack waits for Redis: the
    answers come in request order, the held ack first."""
    b = make_broker(redis.port)
    ch, other = uniq("held"), uniq("other")

    async def body():
        ws = await ws_connect(b.port)
        try:
            await subscribe(ws, other)
            reqs = [{"action": "subscribe", "channel": ch, "rid": 1},
                    {"action": "bogus", "rid": 2},
                    {"action": "subscribe", "channel": other, "rid": 3},
                    {"action": "unsubscribe", "channel": ch, "rid": 4},
                    {"action": "subscribe", "channel": ch, "rid": 5}]
            await ws.send("".join([]) or json.dumps(reqs[0]))
            for r in reqs[1:]:
                await ws.send(json.dumps(r))
            got = [(await recv_json(ws, 5 * SLOW))[1] for _ in reqs]
            assert [g.get("rid") for g in got] == [1, 2, 3, 4, 5], got
            assert [g["type"] for g in got] == ["ack", "error", "ack", "ack", "ack"], got
            assert numsub(redis.port, ch) == 1
        finally:
            await ws.close()
    run(body(), timeout=60)


def test_redis_wants_a_password_we_do_not_have(own_redis, make_broker):
    """redis_url without the password Redis requires: the link never counts
    as up (/healthz 503), the refusal is logged as the configuration problem
    it is, once (not 30 lines a second), retries back off, and clients are
    still served (acked at once: delivery starts when Redis answers)."""
    r = own_redis("--requirepass", "s3cret")
    b = make_broker(r.port, wait="port")
    ch = uniq("noauth")

    async def body():
        ws = await ws_connect(b.port)
        try:
            await subscribe(ws, ch, rid=7)
        finally:
            await ws.close()
    run(body(), timeout=30)
    time.sleep(4 * SLOW)
    assert b.healthz()[0] == 503
    log = b.log()
    refusals = [l for l in log.splitlines() if "authentication refused" in l]
    # Once per connection: the subscriber link and the command connection.
    for who in ("redis", "redis commands"):
        mine = [l for l in refusals if " %s 127.0.0.1:%d:" % (who, r.port) in l]
        assert len(mine) == 1, "\n".join(refusals[:10])
    assert "NOAUTH" in refusals[0] and "redis_url" in refusals[0], refusals[0]
    assert "redis 127.0.0.1:%d: connected" % r.port not in log
    auth = metric_sum(b.port, "broker_redis_link_losses_total", reason="auth")
    # 100 ms doubling (drawn from [b/2, b]) over about 4 s: a handful of tries
    # on each of the two connections (subscriber and commands).
    assert 2 <= auth <= 20 * SLOW, auth
    assert metric_sum(b.port, "broker_redis_up") == 0
    assert metric_sum(b.port, "broker_redis_reconnects_total") == 0


def test_wrong_password_then_fixed_by_reload_free_restart(own_redis, make_broker):
    """A wrong password is refused as WRONGPASS and never up; the right one
    (a new broker) is up and delivers."""
    r = own_redis("--requirepass", "s3cret")
    bad = make_broker(r.port, wait="port", redis_url="redis://:nope@127.0.0.1:%d" % r.port)
    wait_until(lambda: "authentication refused" in bad.log(), 10 * SLOW, what="refusal logged")
    assert "WRONGPASS" in bad.log() or "invalid password" in bad.log()
    assert bad.healthz()[0] == 503
    good = make_broker(r.port, redis_url="redis://:s3cret@127.0.0.1:%d" % r.port)
    ch = uniq("auth-ok")

    async def body():
        ws = await ws_connect(good.port)
        try:
            await subscribe(ws, ch)
            assert redis_command_auth(r.port, "s3cret", "PUBLISH", ch, "1") == 1
            text = await asyncio.wait_for(ws.recv(), 5 * SLOW)
            assert parse_batch(text) == (ch, ["1"])
        finally:
            await ws.close()
    run(body(), timeout=30)


def redis_command_auth(port, password, *args):
    with RespConn(port) as c:
        assert c.command("AUTH", password) == "OK"
        return c.command(*args)


def test_channel_refused_by_redis_is_retried(redis, make_broker):
    """Redis refuses a SUBSCRIBE (an ACL without that channel): the client
    is acked (nothing is on its way), the broker tries again every few
    seconds, and once the ACL allows it the channel is subscribed and
    delivered without the client doing anything."""
    b = make_broker(redis.port, batch_interval_ms=0)
    ch = uniq("acl")
    assert redis_command(redis.port, "ACL", "SETUSER", "default", "resetchannels",
                         "&allowed-*") == "OK"
    try:
        async def body():
            ws = await ws_connect(b.port)
            try:
                await subscribe(ws, ch)
                wait_until(lambda: "refused" in b.log(), 10 * SLOW, what="the refusal logged")
                assert numsub(redis.port, ch) == 0
                assert redis_command(redis.port, "ACL", "SETUSER", "default",
                                     "allchannels") == "OK"
                wait_until(lambda: numsub(redis.port, ch) == 1, 15 * SLOW,
                           what="subscribed once the ACL allows it")
                assert publish(redis.port, ch, '"ok"') == 1
                text = await asyncio.wait_for(ws.recv(), 5 * SLOW)
                assert parse_batch(text) == (ch, ['"ok"'])
            finally:
                await ws.close()
        run(body(), timeout=60)
    finally:
        redis_command(redis.port, "ACL", "SETUSER", "default", "allchannels")
    assert b.healthz()[0] == 200


def test_output_buffer_limit_drop_is_named(own_redis, make_broker):
    """A worker that falls behind (stopped while 16 MB are published) is
    dropped by Redis's client-output-buffer-limit: the broker says so in the
    log, counts it as an overload loss, reconnects and delivers again."""
    r = own_redis("--client-output-buffer-limit", "pubsub 2mb 1mb 1")
    b = make_broker(r.port, batch_interval_ms=0, max_pending_bytes="64m")
    ch = uniq("flood")
    big = "[" + ",".join(["1234567"] * 8000) + "]"  # 64 KB of JSON

    async def body():
        ws = await ws_connect(b.port, max_size=None)
        try:
            await subscribe(ws, ch)
            (worker,) = child_pids(b.proc.pid)
            os.kill(worker, signal.SIGSTOP)
            try:
                with RespConn(r.port, timeout=30) as c:
                    for _ in range(256):
                        c.send("PUBLISH", ch, big)
                    for _ in range(256):
                        c.read_reply()
            finally:
                os.kill(worker, signal.SIGCONT)
            wait_until(lambda: "client-output-buffer-limit" in b.log(), 15 * SLOW,
                       what="the drop named in the log")
            wait_until(lambda: b.healthz()[0] == 200 and numsub(r.port, ch) == 1, 15 * SLOW,
                       what="resubscribed")
            assert metric_sum(b.port, "broker_redis_link_losses_total", reason="overload") >= 1
            # Delivery goes on (drain what got through first).
            deadline = time.monotonic() + 20 * SLOW
            assert publish(r.port, ch, '"after"') == 1
            while True:
                text = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
                if '"after"' in text:
                    break
        finally:
            await ws.close()
    run(body(), timeout=120)
    assert "Redis" in b.log() and "fell behind" in b.log()


@pytest.mark.timeout(180)
def test_soak_standalone_two_workers(redis, make_broker):
    """30 s of numbered messages over two workers, in bursts with 7 s idle
    gaps (each link pings and must get its answer): no link is lost, no
    reconnect, every message reaches every client once and in order."""
    skip_soak_under_valgrind()
    b = make_broker(redis.port, workers=2)
    chans = [uniq("soak") for _ in range(4)]
    pub = RespConn(redis.port, timeout=10)
    soak = Soak(b.port, chans, lambda ch, p: pub.command("PUBLISH", ch, p), nclients=6,
                duration=30)
    try:
        got = soak.run()
    finally:
        pub.close()
    total = soak.check_exact(got)
    assert metric_sum(b.port, "broker_redis_reconnects_total") == 0
    assert metric_sum(b.port, "broker_redis_link_losses_total") == 0
    log = b.log()
    assert not re.search(r"lost|no answer|connect failed|reconnecting", log), log[-3000:]
    print("soak standalone: %d messages x %d clients, 0 reconnects" % (total, len(got)))

"""PROTOCOL.md section 4, the Redis side: refcounted SUBSCRIBE/UNSUBSCRIBE,
starting without Redis, reconnecting and resubscribing."""
import asyncio
import socket
import time

import pytest

from helpers import (SLOW, Monitor, RawWS, numsub, publish, recv_batch, redis_command, run, subscribe,
                     uniq, wait_subscribed, wait_until, ws_connect)


def pubsub_channels(port, pattern):
    return {c.decode() for c in redis_command(port, "PUBSUB", "CHANNELS", pattern)}


def wait_numsub(port, ch, n, timeout=10.0):
    wait_until(lambda: numsub(port, ch) == n, timeout * SLOW,
               what="PUBSUB NUMSUB %s == %d" % (ch, n))


def test_subscribe_on_first_unsubscribe_on_last(broker, redis):
    ch = uniq("refcount")
    mon = Monitor(redis.port)

    def cmds():
        return [a for a in mon.until_marker() if len(a) >= 2 and a[0].upper() in
                ("SUBSCRIBE", "UNSUBSCRIBE") and ch in a[1:]]

    async def body():
        a = await ws_connect(broker.port)
        b = await ws_connect(broker.port)
        c = await ws_connect(broker.port)
        try:
            assert numsub(redis.port, ch) == 0
            await subscribe(a, ch)
            wait_numsub(redis.port, ch, 1)
            assert ch in pubsub_channels(redis.port, ch)
            await subscribe(b, ch)
            await subscribe(c, ch)
            await subscribe(a, ch)  # again: still one reference for a
            # One SUBSCRIBE for the first subscriber only.
            assert [x[0].upper() for x in cmds()] == ["SUBSCRIBE"]
            await subscribe(a, ch, action="unsubscribe")
            await subscribe(b, ch, action="unsubscribe")
            await subscribe(b, ch, action="unsubscribe")  # not subscribed any more
            assert cmds() == [], "Redis subscription dropped while c still subscribes"
            assert numsub(redis.port, ch) == 1
            # The last subscriber leaves by disconnecting.
            await c.close()
            wait_numsub(redis.port, ch, 0)
            assert ch not in pubsub_channels(redis.port, ch)
            assert [x[0].upper() for x in cmds()] == ["UNSUBSCRIBE"]
            # And a new first subscriber subscribes again.
            await subscribe(b, ch)
            wait_numsub(redis.port, ch, 1)
            await subscribe(b, ch, action="unsubscribe")
            wait_numsub(redis.port, ch, 0)
        finally:
            for w in (a, b, c):
                await w.close()
    try:
        run(body())
    finally:
        mon.close()


def test_query_channels_subscribe_and_disconnect_unsubscribe(broker, redis):
    a, b = uniq("qsub-a"), uniq("qsub-b")

    async def body():
        ws = await ws_connect(broker.port, "/ws?channels=%s,%s" % (a, b))
        wait_numsub(redis.port, a, 1)
        wait_numsub(redis.port, b, 1)
        await ws.close()
        wait_numsub(redis.port, a, 0)
        wait_numsub(redis.port, b, 0)
    run(body())


def test_abrupt_disconnect_unsubscribes(broker, redis):
    ch = uniq("abrupt")
    ws = RawWS(broker.port, "/ws?channels=" + ch)
    wait_numsub(redis.port, ch, 1)
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    ws.close()  # RST
    wait_numsub(redis.port, ch, 0)
    assert broker.healthz()[0] == 200


def poll_publish_until_delivered(ws, redis_port, ch, timeout=15.0):
    """Publishes on ch every 0.3 s until one of the messages arrives (after a
    Redis (re)start the broker resubscribes by itself, some time later)."""
    async def go():
        deadline = time.monotonic() + timeout * SLOW
        sent = set()
        i = 0
        while time.monotonic() < deadline:
            p = '{"probe":%d}' % i
            i += 1
            try:
                publish(redis_port, ch, p)
                sent.add(p)
            except OSError:
                pass
            try:
                _, got, msgs = await recv_batch(ws, timeout=0.3 / SLOW)
            except asyncio.TimeoutError:
                continue
            assert got == ch and set(msgs) <= sent, msgs
            return msgs
        raise AssertionError("no message delivered within %.0f s" % (timeout * SLOW))
    return go()


@pytest.mark.timeout(90)
def test_broker_starts_with_redis_down(make_redis, make_broker):
    rs = make_redis()  # not started yet
    b = make_broker(rs.port, wait="port")
    ch = uniq("late")

    async def body():
        ws = await ws_connect(b.port)
        try:
            await subscribe(ws, ch, rid=1)
            assert b.healthz()[0] == 503
            rs.start()
            wait_until(lambda: b.healthz()[0] == 200, 15 * SLOW, what="/healthz 200")
            wait_numsub(rs.port, ch, 1, timeout=15)
            await poll_publish_until_delivered(ws, rs.port, ch)
            # Subscriptions made while up work as usual.
            ch2 = uniq("late2")
            await subscribe(ws, ch2)
            wait_subscribed(rs.port, ch2)
            assert publish(rs.port, ch2, "7") == 1
            _, got, msgs = await recv_batch(ws)
            assert (got, msgs) == (ch2, ["7"])
        finally:
            await ws.close()
    run(body(), timeout=80)


@pytest.mark.timeout(90)
def test_redis_restart_clients_stay_and_delivery_resumes(make_redis, make_broker):
    rs = make_redis().start()
    b = make_broker(rs.port)
    ch, ch2 = uniq("restart"), uniq("restart2")

    async def body():
        ws = await ws_connect(b.port)
        ws2 = await ws_connect(b.port, "/ws?channels=" + ch2)
        try:
            await subscribe(ws, ch)
            wait_subscribed(rs.port, ch, ch2)
            assert publish(rs.port, ch, '"before"') == 1
            _, _, msgs = await recv_batch(ws)
            assert msgs == ['"before"']

            rs.stop()
            wait_until(lambda: b.healthz()[0] == 503, 10 * SLOW, what="/healthz 503")
            # Clients stay connected while Redis is down.
            assert not ws.closed and not ws2.closed
            await ws.ping()
            rs.start()  # same port
            wait_until(lambda: b.healthz()[0] == 200, 15 * SLOW, what="/healthz 200 again")
            assert not ws.closed and not ws2.closed
            # The broker resubscribes by itself.
            await poll_publish_until_delivered(ws, rs.port, ch)
            await poll_publish_until_delivered(ws2, rs.port, ch2)
            assert numsub(rs.port, ch) == 1 and numsub(rs.port, ch2) == 1

            # A second restart works the same way.
            rs.restart()
            wait_until(lambda: b.healthz()[0] == 200 and numsub(rs.port, ch) == 1,
                       20 * SLOW, what="resubscribed after the second restart")
            await poll_publish_until_delivered(ws, rs.port, ch)
        finally:
            await ws.close()
            await ws2.close()
    run(body(), timeout=85)
    log = b.log()
    assert "redis" in log


@pytest.mark.timeout(90)
def test_unsubscribe_while_redis_down_not_resubscribed(make_redis, make_broker):
    rs = make_redis().start()
    b = make_broker(rs.port)
    keep, gone = uniq("keep"), uniq("gone")

    async def body():
        ws = await ws_connect(b.port)
        try:
            await subscribe(ws, keep)
            await subscribe(ws, gone)
            wait_subscribed(rs.port, keep, gone)
            rs.stop()
            wait_until(lambda: b.healthz()[0] == 503, 10 * SLOW, what="/healthz 503")
            await subscribe(ws, gone, action="unsubscribe")
            rs.start()
            wait_numsub(rs.port, keep, 1, timeout=20)
            await poll_publish_until_delivered(ws, rs.port, keep)
            assert numsub(rs.port, gone) == 0
        finally:
            await ws.close()
    run(body(), timeout=85)


@pytest.mark.timeout(90)
def test_reconnect_backoff_capped_at_5s(make_redis, make_broker):
    """After a long outage the broker still tries at least every 5 s: Redis
    coming back is noticed within 5 s (plus slack). Without a cap the
    doubling backoff would wait over 12 s here."""
    rs = make_redis()
    b = make_broker(rs.port, wait="port")
    time.sleep(13)  # the backoff has reached its cap by now
    rs.start()
    t0 = time.monotonic()
    wait_until(lambda: b.healthz()[0] == 200, 20 * SLOW, interval=0.1, what="/healthz 200")
    elapsed = time.monotonic() - t0
    assert elapsed < 5 + 2 * SLOW, "reconnected %.1f s after Redis came back" % elapsed

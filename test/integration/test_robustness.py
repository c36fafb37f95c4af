"""PROTOCOL.md section 5 (slow consumers, shutdown) and bad input that must
harm nobody else."""
import asyncio
import os
import random
import signal
import socket
import struct
import time

import pytest
import websockets

from helpers import (OP_CLOSE, OP_TEXT, SLOW, Closed, RawWS, build_frame, parse_batch, publish,
                     publish_many, recv_batch, run, subscribe, uniq, wait_subscribed, ws_connect)


# -- slow consumer ------------------------------------------------------------

@pytest.mark.timeout(120)
def test_slow_consumer_closed_1008_others_unaffected(redis, make_broker):
    # Frames stay well under max_pending_bytes, and each burst from Redis too
    # (see test_burst_over_max_pending_does_not_close_a_fast_reader), so only
    # a client that does not read can get that far behind.
    b = make_broker(redis.port, max_pending_bytes=65536, batch_max_bytes=16384,
                    batch_interval_ms=5)
    ch = uniq("slow")
    payload_pad = "s" * 4000
    state = {"seq": 0}

    async def body():
        good = await ws_connect(b.port)
        await subscribe(good, ch)
        slow = RawWS(b.port, "/ws?channels=" + ch, rcvbuf=4096)
        wait_subscribed(redis.port, ch)
        received = []

        async def read_good():
            while True:
                text = await asyncio.wait_for(good.recv(), 60)
                got, msgs = parse_batch(text)
                assert got == ch
                received.extend(msgs)

        reader = asyncio.ensure_future(read_good())

        async def publish_round(n=8):
            items = []
            for _ in range(n):
                items.append((ch, '{"seq":%d,"pad":"%s"}' % (state["seq"], payload_pad)))
                state["seq"] += 1
            publish_many(redis.port, items)
            # Let the good client catch up before the next round.
            deadline = time.monotonic() + 20 * SLOW
            while len(received) < state["seq"]:
                assert not reader.done(), reader.exception()
                assert time.monotonic() < deadline, \
                    "good client got %d of %d messages" % (len(received), state["seq"])
                await asyncio.sleep(0.002)

        try:
            published = 0
            while "slow consumer" not in b.log():
                assert published < 64 * 1024 * 1024, \
                    "published %d bytes and the reader that never reads is not closed" % published
                await publish_round()
                published += 8 * 4000
            # The slow client: its stream ends with close 1008, then EOF (or a
            # reset).
            close = None
            deadline = time.monotonic() + 30 * SLOW
            try:
                while True:
                    f = slow.recv_frame(max(0.01, deadline - time.monotonic()))
                    if f.opcode == OP_CLOSE:
                        close = f
                        break
                    assert f.opcode == OP_TEXT, f
                assert slow.wait_eof(10 * SLOW), "no TCP close after the close frame"
            except Closed:
                pass
            assert close is not None, "slow consumer's connection ended without close 1008"
            assert close.close_code == 1008, close
            assert close.payload[2:] == b"slow consumer", close
            # The good client got every message, in order, and still does.
            await publish_round()
            want = ['{"seq":%d,"pad":"%s"}' % (i, payload_pad) for i in range(state["seq"])]
            assert received == want
            assert not good.closed
        finally:
            reader.cancel()
            slow.close()
            await good.close()
    run(body(), timeout=110)


def test_burst_over_max_pending_does_not_close_a_fast_reader(redis, make_broker):
    """A client that reads everything at once is not behind: a burst from
    Redis larger than max_pending_bytes must reach it whole. Here 500
    payloads of 4 KB (2 MB) published in one pipeline, max_pending_bytes
    256k; the client's socket buffers could take all of it."""
    broker = make_broker(redis.port, max_pending_bytes="256k")
    ch = uniq("burst")
    n, pad = 500, "b" * 4000

    async def body():
        ws = await ws_connect(broker.port)
        await subscribe(ws, ch)
        wait_subscribed(redis.port, ch)
        got = []
        try:
            publish_many(redis.port, [(ch, '"%05d%s"' % (i, pad)) for i in range(n)])
            try:
                while len(got) < n:
                    text = await asyncio.wait_for(ws.recv(), 10 * SLOW)
                    got.extend(parse_batch(text)[1])
            except websockets.ConnectionClosed:
                raise AssertionError("fast reader closed (%s %s) after %d of %d messages"
                                     % (ws.close_code, ws.close_reason, len(got), n))
            assert got == ['"%05d%s"' % (i, pad) for i in range(n)]
        finally:
            await ws.close()
    run(body())


# -- shutdown -----------------------------------------------------------------

def test_sigterm_closes_clients_1001_and_exits_0(redis, make_broker):
    b = make_broker(redis.port)
    ch = uniq("bye")

    async def body():
        clients = [await ws_connect(b.port, "/ws?channels=" + ch) for _ in range(3)]
        raw = RawWS(b.port, "/ws?channels=" + ch)   # never answers the close
        wait_subscribed(redis.port, ch)
        # A client that has not finished its handshake is closed too.
        half = socket.create_connection(("127.0.0.1", b.port), timeout=10)
        half.sendall(b"GET /ws HTTP/1.1\r\n")
        t0 = time.monotonic()
        os.kill(b.proc.pid, signal.SIGTERM)
        for ws in clients:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10 * SLOW)
            assert ws.close_code == 1001, (ws.close_code, ws.close_reason)
        f = raw.expect_close(10 * SLOW)
        assert f.close_code == 1001, f
        half.settimeout(10 * SLOW)
        try:
            assert half.recv(100) == b""
        except ConnectionResetError:
            pass
        half.close()
        raw.close()
        rc = b.proc.wait(timeout=12)
        assert rc == 0, b.log()[-3000:]
        assert time.monotonic() - t0 < 12
    run(body())
    b.stop()  # reaps it and checks the log


def test_sigint_exits_0(redis, make_broker):
    b = make_broker(redis.port)

    async def body():
        ws = await ws_connect(b.port)
        await subscribe(ws, uniq("int"))
        os.kill(b.proc.pid, signal.SIGINT)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10 * SLOW)
        assert ws.close_code == 1001
    run(body())
    assert b.proc.wait(timeout=12) == 0
    b.stop()


def test_pending_batch_flushed_on_shutdown(redis, make_broker):
    b = make_broker(redis.port, batch_interval_ms=30000)
    ch = uniq("flush")

    async def body():
        ws = await ws_connect(b.port)
        await subscribe(ws, ch)
        wait_subscribed(redis.port, ch)
        assert publish(redis.port, ch, '"pending"') == 1
        # Wait until the broker has read it from Redis before stopping it.
        time.sleep(0.5 * SLOW)
        os.kill(b.proc.pid, signal.SIGTERM)
        _, got, msgs = await recv_batch(ws, timeout=10)
        assert (got, msgs) == (ch, ['"pending"'])
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10 * SLOW)
        assert ws.close_code == 1001
    run(body())
    b.stop()


# -- garbage ------------------------------------------------------------------

def _other_clients_fine(broker, redis, ws, ch):
    async def check():
        p = '{"after":"%s"}' % uniq("g")
        assert publish(redis.port, ch, p) == 1
        _, got, msgs = await recv_batch(ws)
        assert (got, msgs) == (ch, [p])
    return check()


@pytest.mark.parametrize("seed", range(6))
def test_garbage_instead_of_http_harms_nobody(broker, redis, seed):
    rnd = random.Random(seed)
    ch = uniq("bystander")

    async def body():
        ws = await ws_connect(broker.port)
        await subscribe(ws, ch)
        wait_subscribed(redis.port, ch)
        try:
            for size in (1, 100, 3000, 20000):
                junk = bytes(rnd.getrandbits(8) for _ in range(size))
                s = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
                try:
                    s.sendall(junk)
                    if size >= 3000:
                        s.sendall(b"\r\n\r\n")
                except OSError:
                    pass  # the broker may have answered and closed already
                s.close()
                await _other_clients_fine(broker, redis, ws, ch)
                assert broker.healthz()[0] == 200
        finally:
            await ws.close()
    run(body())


@pytest.mark.parametrize("seed", range(6))
def test_garbage_after_upgrade_harms_nobody(broker, redis, seed):
    rnd = random.Random(1000 + seed)
    ch = uniq("bystander")

    async def body():
        ws = await ws_connect(broker.port)
        await subscribe(ws, ch)
        wait_subscribed(redis.port, ch)
        try:
            for size in (1, 2, 10, 200, 5000, 70000):
                junk = bytes(rnd.getrandbits(8) for _ in range(size))
                raw = RawWS(broker.port, "/ws?channels=" + ch)
                try:
                    raw.send_raw(junk)
                except OSError:
                    pass
                await _other_clients_fine(broker, redis, ws, ch)
                raw.close()
                assert broker.healthz()[0] == 200
        finally:
            await ws.close()
    run(body())


def test_garbage_frames_then_close_mid_frame(broker, redis):
    ch = uniq("midframe")

    async def body():
        ws = await ws_connect(broker.port)
        await subscribe(ws, ch)
        wait_subscribed(redis.port, ch)
        try:
            for cut in (1, 2, 5, 9, 30):
                raw = RawWS(broker.port, "/ws?channels=" + ch)
                frame = build_frame(OP_TEXT, '{"action":"subscribe","channel":"%s"}' % ch)
                raw.send_raw(frame[:cut])
                raw.close()
                raw = RawWS(broker.port)
                raw.send_raw(build_frame(OP_TEXT, b"x" * 1000, fin=False)[:cut * 20])
                raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                raw.close()  # reset
                await _other_clients_fine(broker, redis, ws, ch)
            assert broker.healthz()[0] == 200
        finally:
            await ws.close()
    run(body())


def test_many_connections_come_and_go(broker, redis):
    ch = uniq("churn")

    async def body():
        ws = await ws_connect(broker.port)
        await subscribe(ws, ch)
        wait_subscribed(redis.port, ch)
        try:
            for round_ in range(3):
                conns = [await ws_connect(broker.port, "/ws?channels=%s,%s" % (ch, uniq("x")))
                         for _ in range(30)]
                wait_subscribed(redis.port, ch)
                p = '{"round":%d}' % round_
                assert publish(redis.port, ch, p) == 1
                results = await asyncio.gather(*(recv_batch(c) for c in conns + [ws]))
                assert all(m == [p] for _, _, m in results)
                for c in conns[::2]:
                    await c.close()
                for c in conns[1::2]:
                    c.transport.abort()
            assert broker.healthz()[0] == 200
        finally:
            await ws.close()
    run(body())

"""Channel history (PROTOCOL.md section 7; broker/histlib.h, history.h):
messages published with FCALL broker_publish carry offsets and an epoch; a
client that comes back with "since" gets exactly what it missed, then live,
from any worker or broker process; "history":N gives the last N first.
Against a real redis-server 7 (the broker loads its function library)."""
import asyncio
import json
import os
import signal
import threading
import time

import pytest

import helpers
from helpers import (SLOW, RespConn, child_pids, metric_sum, publish, recv_json, redis_command,
                     run, send_json, uniq, wait_until, ws_connect)


def fcall(port, ch, payload, *extra):
    return redis_command(port, "FCALL", "broker_publish", 1, ch, payload, *extra)


def wait_library(port):
    wait_until(lambda: redis_command(port, "FUNCTION", "LIST", "LIBRARYNAME", "broker") != [],
               10 * SLOW, what="the broker's function library loaded")


async def sub(ws, ch, rid=1, **kw):
    """Subscribes; returns the ack."""
    msg = {"action": "subscribe", "channel": ch, "rid": rid}
    msg.update(kw)
    await send_json(ws, msg)
    _, ack = await recv_json(ws, 10 * SLOW)
    assert ack.get("type") == "ack" and ack.get("rid") == rid, ack
    return ack


async def collect_seqs(ws, ch, n, timeout=10.0):
    """The "i" of every message until n of them arrived; checks each batch's
    offset is its last message's."""
    got, offsets = [], []
    deadline = time.monotonic() + timeout * SLOW
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("got %d of %d: %r" % (len(got), n, got))
        obj = json.loads(await asyncio.wait_for(ws.recv(), left))
        assert obj.get("type") == "batch" and obj["channel"] == ch, obj
        got.extend(m["i"] for m in obj["messages"])
        if "offset" in obj:
            offsets.append(obj["offset"])
    return got, offsets


async def expect_nothing(ws, seconds):
    try:
        text = await asyncio.wait_for(ws.recv(), seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError("unexpected: %s" % text[:300])


@pytest.fixture
def hredis(make_redis):
    return make_redis().start()


def test_library_loaded_and_offsets_on_the_wire(hredis, make_broker):
    b = make_broker(hredis.port, batch_interval_ms=0)
    wait_library(hredis.port)
    ch = uniq("h-wire")
    assert fcall(hredis.port, ch, '{"i":1}') == 1
    assert fcall(hredis.port, ch, '{"i":2}') == 2

    async def body():
        ws = await ws_connect(b.port)
        try:
            ack = await sub(ws, ch)
            assert ack["offset"] == 2 and isinstance(ack["epoch"], str) and ack["epoch"], ack
            epoch = ack["epoch"]
            assert fcall(hredis.port, ch, '{"i":3}') == 3
            obj = json.loads(await asyncio.wait_for(ws.recv(), 5 * SLOW))
            assert obj == {"type": "batch", "channel": ch, "messages": [{"i": 3}],
                           "offset": 3, "epoch": epoch}, obj
            # A plain PUBLISH on the same channel still works, with no offset.
            assert publish(hredis.port, ch, '{"i":"plain"}') == 1
            obj = json.loads(await asyncio.wait_for(ws.recv(), 5 * SLOW))
            assert obj["messages"] == [{"i": "plain"}] and "offset" not in obj, obj
        finally:
            await ws.close()
    run(body(), timeout=60)
    # Loaded once: a second broker finds the same code and leaves it.
    b2 = make_broker(hredis.port)
    wait_until(lambda: "history: library already" in b2.log() or
               "history: library loaded" not in b2.log(), 5 * SLOW, what="second broker")
    assert "library loaded" not in b2.log() or "already" in b2.log()


def test_resume_on_another_broker_exactly_the_missed_then_live(hredis, make_broker):
    """A client of broker A reads offsets 1-10 and goes; 10 more are
    published; it comes back to broker B with since 10: exactly 11-20, then
    live 21-25, nothing twice, nothing missing; recovered:true."""
    a = make_broker(hredis.port, batch_interval_ms=0)
    bb = make_broker(hredis.port, batch_interval_ms=50)
    wait_library(hredis.port)
    ch = uniq("h-resume")

    async def body():
        ws = await ws_connect(a.port)
        ack = await sub(ws, ch)
        assert "offset" not in ack  # nothing published yet
        for i in range(1, 11):
            fcall(hredis.port, ch, '{"i":%d}' % i)
        got, offsets = await collect_seqs(ws, ch, 10)
        assert got == list(range(1, 11)) and offsets[-1] == 10
        epoch = json.loads(json.dumps(ack)).get("epoch")
        await ws.close()
        for i in range(11, 21):
            fcall(hredis.port, ch, '{"i":%d}' % i)
        epoch = redis_command(hredis.port, "FCALL_RO", "broker_range", 1, ch, 0, "after", 0)[0]
        ws = await ws_connect(bb.port)
        try:
            ack = await sub(ws, ch, rid=2, since={"offset": 10, "epoch": epoch.decode()})
            assert ack["recovered"] is True and ack["offset"] == 20, ack
            got, _ = await collect_seqs(ws, ch, 10)
            assert got == list(range(11, 21)), got
            for i in range(21, 26):
                fcall(hredis.port, ch, '{"i":%d}' % i)
            got, offsets = await collect_seqs(ws, ch, 5)
            assert got == list(range(21, 26)) and offsets[-1] == 25, (got, offsets)
            await expect_nothing(ws, 0.3 * SLOW)
        finally:
            await ws.close()
    run(body(), timeout=60)
    assert metric_sum(bb.port, "broker_history_recovered_total") == 1
    assert metric_sum(bb.port, "broker_history_messages_total") == 10


def test_publish_during_the_history_read_no_gap_no_duplicate(hredis, make_broker):
    """A publisher keeps calling broker_publish while 20 clients resume from
    several points: each gets a gapless, duplicate-free run from its since
    to the end."""
    b = make_broker(hredis.port, batch_interval_ms=20, workers=2, log_level="debug")
    # Up to a second behind under ASan or valgrind: keep enough.
    wait_library(hredis.port)
    ch = uniq("h-race")
    for i in range(1, 101):
        fcall(hredis.port, ch, '{"i":%d}' % i, 100000)
    epoch = redis_command(hredis.port, "FCALL_RO", "broker_range", 1, ch, 0, "after", 0)[0].decode()
    stop = threading.Event()
    sent = [100]

    def publisher():
        with RespConn(hredis.port) as c:
            while not stop.is_set():
                n = c.command("FCALL", "broker_publish", 1, ch, '{"i":%d}' % (sent[0] + 1),
                              100000)
                sent[0] = n
                time.sleep(0.002)

    t = threading.Thread(target=publisher, daemon=True)
    t.start()

    async def one(since):
        ws = await ws_connect(b.port)
        try:
            ack = await sub(ws, ch, since={"offset": since, "epoch": epoch})
            assert ack["recovered"] is True, (ack, [l for l in b.log().splitlines()
                                                   if "not recovered" in l][:3])
            got = []
            deadline = time.monotonic() + 20 * SLOW
            while not got or got[-1] < target[0]:
                assert time.monotonic() < deadline, (since, got[-5:])
                obj = json.loads(await asyncio.wait_for(ws.recv(), 10 * SLOW))
                got.extend(m["i"] for m in obj["messages"])
            assert got[:len(got)] == list(range(since + 1, since + 1 + len(got))), (since, got)
        finally:
            await ws.close()

    target = [0]

    async def body():
        time.sleep(0.3)
        target[0] = sent[0] + 50
        await asyncio.gather(*(one(s) for s in range(60, 100, 2)))
    try:
        run(body(), timeout=120)
    finally:
        stop.set()
        t.join(5)


def test_history_n_then_live_and_filters_apply(hredis, make_broker):
    b = make_broker(hredis.port, batch_interval_ms=0)
    wait_library(hredis.port)
    ch = uniq("h-last")
    for i in range(1, 21):
        fcall(hredis.port, ch, json.dumps({"i": i, "even": i % 2 == 0}))

    async def body():
        ws = await ws_connect(b.port)
        f = await ws_connect(b.port)
        try:
            ack = await sub(ws, ch, history=5)
            assert ack["offset"] == 20 and "recovered" not in ack, ack
            got, offsets = await collect_seqs(ws, ch, 5)
            assert got == [16, 17, 18, 19, 20] and offsets[-1] == 20
            # The last 6 through a filter: the even ones of 15-20.
            ack = await sub(f, ch, rid=2, history=6, filter={"even": True})
            got, _ = await collect_seqs(f, ch, 3)
            assert got == [16, 18, 20], got
            fcall(hredis.port, ch, json.dumps({"i": 21, "even": False}))
            fcall(hredis.port, ch, json.dumps({"i": 22, "even": True}))
            assert (await collect_seqs(ws, ch, 2))[0] == [21, 22]
            assert (await collect_seqs(f, ch, 1))[0] == [22]
            await expect_nothing(f, 0.3 * SLOW)
        finally:
            await ws.close()
            await f.close()
    run(body(), timeout=60)


@pytest.mark.parametrize("case", ["bad_epoch", "future", "trimmed", "plain", "too_far"])
def test_since_that_cannot_be_honoured_is_recovered_false(hredis, make_broker, case):
    b = make_broker(hredis.port, batch_interval_ms=0, history_recover_max=5)
    wait_library(hredis.port)
    ch = uniq("h-" + case)
    if case == "plain":
        publish(hredis.port, ch, '{"i":1}')
    else:
        size = ["3"] if case == "trimmed" else []
        for i in range(1, 11):
            fcall(hredis.port, ch, '{"i":%d}' % i, *size)
    epoch = (redis_command(hredis.port, "FCALL_RO", "broker_range", 1, ch, 0, "after", 0)[0]
             .decode() or "zzz")
    since = {"bad_epoch": {"offset": 5, "epoch": "nope"},
             "future": {"offset": 50, "epoch": epoch},
             "trimmed": {"offset": 2, "epoch": epoch},
             "plain": {"offset": 1, "epoch": "x"},
             "too_far": {"offset": 2, "epoch": epoch}}[case]

    async def body():
        ws = await ws_connect(b.port)
        try:
            ack = await sub(ws, ch, since=since)
            assert ack["recovered"] is False, ack
            if case == "plain":
                assert "offset" not in ack
            else:
                assert ack["offset"] == 10 and ack["epoch"] == epoch, ack
            # Nothing from history; live from now on.
            await expect_nothing(ws, 0.3 * SLOW)
            if case == "plain":
                publish(hredis.port, ch, '{"i":2}')
            else:
                fcall(hredis.port, ch, '{"i":11}')
            obj = json.loads(await asyncio.wait_for(ws.recv(), 5 * SLOW))
            assert [m["i"] for m in obj["messages"]] == [2 if case == "plain" else 11], obj
        finally:
            await ws.close()
    run(body(), timeout=60)
    assert metric_sum(b.port, "broker_history_unrecovered_total") == 1


def test_history_and_since_together_are_a_bad_request(broker):
    async def body():
        ws = await ws_connect(broker.port)
        try:
            await send_json(ws, {"action": "subscribe", "channel": "x", "rid": 9, "history": 2,
                                 "since": {"offset": 1, "epoch": "a"}})
            _, err = await recv_json(ws)
            assert err["type"] == "error" and err["code"] == "bad_request" and err["rid"] == 9
            for bad in ({"since": 5}, {"since": {"offset": -1, "epoch": "a"}},
                        {"since": {"offset": 1}}, {"history": -1}, {"history": 1.5},
                        {"history": "3"}):
                msg = {"action": "subscribe", "channel": "x", "rid": 1}
                msg.update(bad)
                await send_json(ws, msg)
                _, err = await recv_json(ws)
                assert err["code"] == "bad_request", (bad, err)
        finally:
            await ws.close()
    run(body(), timeout=30)


def test_redis_restart_without_persistence_changes_the_epoch(make_redis, make_broker):
    r = make_redis().start()
    b = make_broker(r.port, batch_interval_ms=0)
    wait_library(r.port)
    ch = uniq("h-restart")
    for i in range(1, 6):
        fcall(r.port, ch, '{"i":%d}' % i)
    epoch = redis_command(r.port, "FCALL_RO", "broker_range", 1, ch, 0, "after", 0)[0].decode()
    r.restart()
    # The broker loads its library again into the new (empty) server.
    wait_library(r.port)
    wait_until(lambda: b.healthz()[0] == 200, 15 * SLOW, what="broker back")
    fcall(r.port, ch, '{"i":1}')
    new = redis_command(r.port, "FCALL_RO", "broker_range", 1, ch, 0, "after", 0)[0].decode()
    assert new != epoch

    async def body():
        ws = await ws_connect(b.port)
        try:
            ack = await sub(ws, ch, since={"offset": 5, "epoch": epoch})
            assert ack["recovered"] is False and ack["epoch"] == new and ack["offset"] == 1, ack
        finally:
            await ws.close()
    run(body(), timeout=60)


def test_worker_killed_client_resumes_on_another(hredis, make_broker):
    b = make_broker(hredis.port, batch_interval_ms=0, workers=2)
    wait_library(hredis.port)
    ch = uniq("h-kill")

    async def body():
        ws = await ws_connect(b.port)
        ack = await sub(ws, ch)
        for i in range(1, 6):
            fcall(hredis.port, ch, '{"i":%d}' % i)
        got, offsets = await collect_seqs(ws, ch, 5)
        last = offsets[-1]
        epoch = redis_command(hredis.port, "FCALL_RO", "broker_range", 1, ch, 0, "after",
                              0)[0].decode()
        for pid in child_pids(b.proc.pid):
            os.kill(pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(ws.recv(), 5 * SLOW)
        except Exception:
            pass
        for i in range(6, 11):
            fcall(hredis.port, ch, '{"i":%d}' % i)
        wait_until(lambda: len(child_pids(b.proc.pid)) == 2 and b.healthz()[0] == 200,
                   15 * SLOW, what="workers replaced")
        ws2 = await ws_connect(b.port)
        try:
            ack = await sub(ws2, ch, since={"offset": last, "epoch": epoch})
            assert ack["recovered"] is True, ack
            got, _ = await collect_seqs(ws2, ch, 5)
            assert got == [6, 7, 8, 9, 10]
        finally:
            await ws2.close()
    run(body(), timeout=90)


def test_many_clients_resuming_share_a_few_reads(hredis, make_broker):
    """200 clients of one channel resume together through one worker: a
    handful of history reads, not 200 (broker_history_reads_total, and
    Redis's own count of FCALL_RO)."""
    b = make_broker(hredis.port, batch_interval_ms=50, max_control_per_s=1000)
    wait_library(hredis.port)
    ch = uniq("h-storm")
    for i in range(1, 31):
        fcall(hredis.port, ch, '{"i":%d}' % i)
    epoch = redis_command(hredis.port, "FCALL_RO", "broker_range", 1, ch, 0, "after", 0)[0].decode()
    redis_command(hredis.port, "CONFIG", "RESETSTAT")
    reads0 = metric_sum(b.port, "broker_history_reads_total")

    async def one(k):
        ws = await ws_connect(b.port)
        try:
            ack = await sub(ws, ch, since={"offset": 10 + k % 10, "epoch": epoch})
            assert ack["recovered"] is True
            got, _ = await collect_seqs(ws, ch, 30 - (10 + k % 10))
            assert got == list(range(11 + k % 10, 31))
        finally:
            await ws.close()

    async def body():
        await asyncio.gather(*(one(k) for k in range(200)))
    run(body(), timeout=120)
    reads = metric_sum(b.port, "broker_history_reads_total") - reads0
    info = redis_command(hredis.port, "INFO", "commandstats").decode()
    fcall_ro = [l for l in info.splitlines() if l.startswith("cmdstat_fcall_ro:")]
    calls = int(fcall_ro[0].split("calls=")[1].split(",")[0]) if fcall_ro else 0
    print("200 resumes: %d history reads, Redis counted %d FCALL_RO" % (reads, calls))
    assert 1 <= reads <= 20, reads
    assert calls == reads


def test_history_library_printed_is_the_one_loaded(hredis, make_broker):
    import subprocess
    out = subprocess.run([helpers.BROKER_BIN, "--history-library"], capture_output=True,
                         timeout=10).stdout
    assert out.startswith(b"#!lua name=broker\n") and b"broker_publish" in out
    make_broker(hredis.port)
    wait_library(hredis.port)
    lib = redis_command(hredis.port, "FUNCTION", "LIST", "LIBRARYNAME", "broker", "WITHCODE")[0]
    code = dict(zip(lib[::2], lib[1::2]))[b"library_code"]
    assert code == out

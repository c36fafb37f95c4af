"""PROTOCOL.md section 4: batches from Redis to the clients."""
import asyncio
import json
import time

import pytest

from helpers import (SLOW, collect, publish, publish_many, recv_batch, recv_text,
                     run, subscribe, sync_marker, uniq, wait_subscribed, wait_until, ws_connect)


async def subscribed_client(broker, redis, *channels):
    ws = await ws_connect(broker.port)
    for c in channels:
        await subscribe(ws, c)
    wait_subscribed(redis.port, *channels)
    return ws


# -- payloads -----------------------------------------------------------------

JSON_PAYLOADS = [
    '{ "a" : [1, 2] }',
    '{"sym":"A","p":1}',
    '[ ]',
    '42',
    '-0.5e-7',
    '"a string"',
    'null',
    'true',
    ' [1,\t2]\r\n',                        # whitespace around the value
    '{"\u00e9":"\U0001F600","esc":"\\u00e9\\n\\"","n":[{},[],""]}',
    '{"deep":' + '[' * 50 + ']' * 50 + '}',
]


def test_json_payloads_byte_for_byte(broker, redis):
    ch = uniq("json")

    async def body():
        ws = await subscribed_client(broker, redis, ch)
        try:
            for p in JSON_PAYLOADS:
                assert publish(redis.port, ch, p.encode()) == 1
                _, got, msgs = await recv_batch(ws)
                assert got == ch
                assert msgs == [p], "payload changed: sent %r got %r" % (p, msgs)
        finally:
            await ws.close()
    run(body())


def test_json_payloads_in_one_batch_byte_for_byte(broker, redis):
    ch = uniq("jsonbatch")

    async def body():
        ws = await subscribed_client(broker, redis, ch)
        try:
            publish_many(redis.port, [(ch, p.encode()) for p in JSON_PAYLOADS])
            frames, msgs = await collect(ws, len(JSON_PAYLOADS), channel=ch)
            assert msgs == JSON_PAYLOADS
        finally:
            await ws.close()
    run(body())


# Nested deeper than any fixed bound a validator might keep (the broker had
# one at 256 levels): still JSON, so still delivered as published. The frame
# is compared as text: Python's json module gives up near 1,000 levels.
DEEP_PAYLOADS = [
    "[" * 1000 + "]" * 1000,
    '[{"k":' * 500 + ' "bottom" ' + "}]" * 500,
    '{"a":' * 999 + '[1, {"b": null}, "x"]' + "}" * 999,
]


def test_deep_json_payloads_byte_for_byte(broker, redis):
    ch = uniq("deep")

    async def body():
        ws = await subscribed_client(broker, redis, ch)
        try:
            for p in DEEP_PAYLOADS:
                assert publish(redis.port, ch, p.encode()) == 1
                text = await recv_text(ws)
                want = '{"type":"batch","channel":"%s","messages":[%s]}' % (ch, p)
                assert text == want, "deep payload changed: got %r..." % text[:200]
        finally:
            await ws.close()
    run(body())


def test_batch_frame_shape(broker, redis):
    ch = uniq("prices")

    async def body():
        ws = await subscribed_client(broker, redis, ch)
        try:
            publish_many(redis.port, [(ch, '{"sym":"A","p":1}'), (ch, '{"sym":"B","p":2}')])
            text = await recv_text(ws)
            assert text == ('{"type":"batch","channel":"%s","messages":[{"sym":"A","p":1},'
                            '{"sym":"B","p":2}]}' % ch), text
        finally:
            await ws.close()
    run(body())


NON_JSON_PAYLOADS = [
    b"hello",
    b"",
    b"{\"a\":1",            # truncated
    b"NaN",
    b"01",
    b"1.",
    b"'single'",
    b"[1,]",
    b"{\"a\":1}}",
    b"\"tab\tinside\"",     # raw control character inside a string
    b"tru",
    b"hello \"world\" \\ \x01\x1f\x7f",
    b"1 2",
]


@pytest.mark.parametrize("payload", NON_JSON_PAYLOADS)
def test_non_json_payload_arrives_as_string(broker, redis, payload):
    ch = uniq("str")

    async def body():
        ws = await subscribed_client(broker, redis, ch)
        try:
            assert publish(redis.port, ch, payload) == 1
            _, got, msgs = await recv_batch(ws)
            assert got == ch and len(msgs) == 1
            assert msgs[0].startswith('"'), msgs
            assert json.loads(msgs[0]) == payload.decode("utf-8"), msgs
        finally:
            await ws.close()
    run(body())


def test_hello_arrives_as_quoted_hello(broker, redis):
    ch = uniq("hello")

    async def body():
        ws = await subscribed_client(broker, redis, ch)
        try:
            assert publish(redis.port, ch, b"hello") == 1
            _, got, msgs = await recv_batch(ws)
            assert msgs == ['"hello"'], msgs
        finally:
            await ws.close()
    run(body())


INVALID_UTF8 = [
    b"ab\xffcd",
    b"\xe2\x82",                 # truncated 3-byte sequence: one U+FFFD
    b"\xf0\x9f\x98x",            # truncated 4-byte sequence then x
    b"\xc0\xaf",                 # never valid lead byte: two U+FFFD
    b"\xed\xa0\x80",             # a UTF-16 surrogate: three U+FFFD
    b"\xf4\x90\x80\x80",         # above U+10FFFF
    b"\x80\x80abc\xc3",          # stray continuation bytes, truncated tail
    b"\"ab\xffcd\"",             # a JSON string, but not UTF-8: not valid JSON
    b"{\"k\":\"\xe9\"}",         # latin-1 inside JSON
    b"ok \xe2\x82\xac \xe2\x82",
]


@pytest.mark.parametrize("payload", INVALID_UTF8)
def test_invalid_utf8_payload_replaced_like_textdecoder(broker, redis, payload):
    ch = uniq("utf8")

    async def body():
        ws = await subscribed_client(broker, redis, ch)
        try:
            assert publish(redis.port, ch, payload) == 1
            _, got, msgs = await recv_batch(ws)
            assert len(msgs) == 1
            # Python's "replace" handler substitutes maximal subparts, like
            # TextDecoder.
            assert json.loads(msgs[0]) == payload.decode("utf-8", "replace"), (payload, msgs)
        finally:
            await ws.close()
    run(body())


def test_ab_ff_cd(broker, redis):
    ch = uniq("abffcd")

    async def body():
        ws = await subscribed_client(broker, redis, ch)
        try:
            assert publish(redis.port, ch, b"ab\xffcd") == 1
            _, _, msgs = await recv_batch(ws)
            assert json.loads(msgs[0]) == "ab\ufffdcd", msgs
        finally:
            await ws.close()
    run(body())


# -- order and batching -------------------------------------------------------

def test_redis_order_kept_for_500_pipelined(broker, redis):
    ch = uniq("order")

    async def body():
        ws = await subscribed_client(broker, redis, ch)
        try:
            sent = ['{"i":%d}' % i for i in range(500)]
            replies = publish_many(redis.port, [(ch, p) for p in sent])
            assert replies == [1] * 500
            _, msgs = await collect(ws, 500, channel=ch, timeout=20)
            assert msgs == sent
        finally:
            await ws.close()
    run(body())


def test_messages_published_quickly_arrive_in_one_batch(broker, redis):
    # The shared broker runs with batch_interval_ms 200 (the default).
    ch = uniq("onebatch")

    async def body():
        ws = await subscribed_client(broker, redis, ch)
        try:
            sent = ['{"k":%d}' % i for i in range(5)]
            t0 = time.monotonic()
            publish_many(redis.port, [(ch, p) for p in sent])
            text, got, msgs = await recv_batch(ws, timeout=5)
            elapsed = time.monotonic() - t0
            assert msgs == sent, "not one batch: %s" % text
            assert elapsed < 1.5 * SLOW, "batch took %.2f s" % elapsed
        finally:
            await ws.close()
    run(body())


def test_two_channels_separate_frames(broker, redis):
    a, b = uniq("two-a"), uniq("two-b")

    async def body():
        ws = await subscribed_client(broker, redis, a, b)
        try:
            publish_many(redis.port, [(a, "1"), (b, "2"), (a, "3"), (b, "4")])
            frames, msgs = await collect(ws, 4)
            by_ch = {}
            for _, ch, m in frames:
                by_ch.setdefault(ch, []).extend(m)
            assert by_ch == {a: ["1", "3"], b: ["2", "4"]}, frames
            assert len(frames) == 2, "expected one frame per channel: %r" % frames
        finally:
            await ws.close()
    run(body())


def test_no_frame_for_channel_without_new_messages(broker, redis):
    a, quiet, marker = uniq("busy"), uniq("quiet"), uniq("marker")

    async def body():
        ws = await subscribed_client(broker, redis, a, quiet, marker)
        try:
            for i in range(3):
                assert publish(redis.port, a, str(i)) == 1
                _, got, msgs = await recv_batch(ws)
                assert (got, msgs) == (a, [str(i)])
            others = await sync_marker(ws, redis.port, marker)
            assert others == [], "unexpected frames: %r" % others
        finally:
            await ws.close()
    run(body())


def test_many_clients_get_byte_identical_frames(broker, redis):
    ch = uniq("fanout")
    n = 12

    async def body():
        clients = [await ws_connect(broker.port) for _ in range(n)]
        try:
            for ws in clients:
                await subscribe(ws, ch)
            wait_subscribed(redis.port, ch)
            sent = ['{"seq":%d,"pad":"%s"}' % (i, "x" * i) for i in range(20)]
            publish_many(redis.port, [(ch, p) for p in sent])
            results = await asyncio.gather(*(collect(ws, len(sent), channel=ch) for ws in clients))
            texts = [[t for t, _, _ in frames] for frames, _ in results]
            for frames, msgs in results:
                assert msgs == sent
            assert all(t == texts[0] for t in texts), "clients got different frames"
        finally:
            for ws in clients:
                await ws.close()
    run(body())


# -- per-test configurations --------------------------------------------------

def test_batch_interval_0_one_message_per_frame(redis, make_broker):
    b = make_broker(redis.port, batch_interval_ms=0)
    ch = uniq("nobatch")

    async def body():
        ws = await subscribed_client(b, redis, ch)
        try:
            sent = ['{"n":%d}' % i for i in range(20)]
            publish_many(redis.port, [(ch, p) for p in sent])
            frames, msgs = await collect(ws, 20, channel=ch)
            assert msgs == sent
            assert [len(m) for _, _, m in frames] == [1] * 20, frames
        finally:
            await ws.close()
    run(body())


def test_batch_max_bytes_flushes_early(redis, make_broker):
    # The timer is long: frames that arrive quickly were flushed by size.
    b = make_broker(redis.port, batch_interval_ms=30000, batch_max_bytes=1024)
    ch = uniq("maxbytes")
    payload_len = 200

    async def body():
        ws = await subscribed_client(b, redis, ch)
        try:
            sent = ['"%03d%s"' % (i, "p" * (payload_len - 5)) for i in range(40)]
            assert all(len(p) == payload_len for p in sent)
            publish_many(redis.port, [(ch, p) for p in sent])
            frames, msgs = [], []
            # At most ceil(1024 / 200) messages can be waiting for the timer.
            while len(msgs) < 30:
                text, got, m = await recv_batch(ws, timeout=10)
                assert got == ch
                frames.append(text)
                msgs.extend(m)
            assert msgs == sent[:len(msgs)]
            assert len(frames) >= 5
            for t in frames:
                assert len(t.encode()) <= 1024 + payload_len + 1, \
                    "frame of %d bytes with batch_max_bytes 1024" % len(t.encode())
        finally:
            await ws.close()
    run(body())


def test_max_message_bytes_drops_large_payload(redis, make_broker):
    b = make_broker(redis.port, max_message_bytes=1000)
    ch = uniq("maxmsg")

    async def body():
        ws = await subscribed_client(b, redis, ch)
        try:
            big = '"' + "b" * 999 + '"'          # 1001 bytes
            exact = '"' + "e" * 998 + '"'        # 1000 bytes
            small = '{"next":true}'
            assert publish(redis.port, ch, big) == 1
            assert publish(redis.port, ch, small) == 1
            _, _, msgs = await recv_batch(ws)
            assert msgs == [small], "oversize payload not dropped: %r" % [m[:20] for m in msgs]
            assert publish(redis.port, ch, "x" * 1001) == 1   # non-JSON, also too big
            assert publish(redis.port, ch, exact) == 1
            _, _, msgs = await recv_batch(ws)
            assert msgs == [exact], [m[:20] for m in msgs]
        finally:
            await ws.close()
    run(body())
    log = wait_until(lambda: "dropped" in b.log() and b.log(), 5, what="drop logged")
    lines = [l for l in log.splitlines() if "dropped" in l]
    assert any("1001" in l and ch in l for l in lines), lines

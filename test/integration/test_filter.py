"""PROTOCOL.md section 2.1: server-side filters."""
import json
import time

import pytest

from helpers import (SLOW, Monitor, collect, numsub, parse_batch, publish_many, raw_members, recv_json,
                     recv_text, run, send_json, subscribe, sync_marker, uniq, wait_subscribed, ws_connect)


async def filtered_client(broker, redis, ch, flt, marker):
    ws = await ws_connect(broker.port)
    await send_json(ws, {"action": "subscribe", "channel": ch, "filter": flt, "rid": "f"})
    text, obj = await recv_json(ws)
    assert obj.get("type") == "ack" and obj.get("channel") == ch and obj.get("rid") == "f", text
    await subscribe(ws, marker)
    wait_subscribed(redis.port, ch, marker)
    return ws


async def delivered(ws, redis, ch, marker, payloads, more=()):
    """Publishes payloads on ch, then returns the messages of ch that reached
    ws (a marker on another channel tells when everything has arrived); with
    `more` clients, a list of such lists, one per client."""
    publish_many(redis.port, [(ch, p) for p in payloads])
    out = []
    for w in (ws,) + tuple(more):
        got = []
        for text in await sync_marker(w, redis.port, marker):
            c, msgs = parse_batch(text)
            assert c == ch, text
            got.extend(msgs)
        out.append(got)
    return out if more else out[0]


CASES = [
    # (filter, [(payload, matches)])
    ({"symbol": "SPY"}, [
        ('{"symbol":"SPY"}', True),
        ('{"symbol":"QQQ"}', False),
        ('{"x":1}', False),
        ('{"symbol":null}', False),
        ('{ "symbol" : "SPY" , "p" : 1 }', True),
        ('{"symbol":["QQQ","SPY"]}', True),   # an array: some element equals
        ('{"symbol":"spy"}', False),
    ]),
    ({"symbol": {"$in": ["QQQ", "SPY"]}, "price": {"$gte": 100, "$lt": 200}}, [
        ('{"symbol":"QQQ","price":100}', True),
        ('{"symbol":"SPY","price":199.99}', True),
        ('{"symbol":"SPY","price":200}', False),
        ('{"symbol":"SPY","price":99.5}', False),
        ('{"symbol":"IBM","price":150}', False),
        ('{"symbol":"SPY"}', False),
        ('{"symbol":"SPY","price":"150"}', False),
    ]),
    ({"order.side": "buy"}, [
        ('{"order":{"side":"buy"}}', True),
        ('{"order":{"side":"sell"}}', False),
        ('{"order.side":"buy"}', False),
        ('{"order":"buy"}', False),
    ]),
    ({"legs.0.px": {"$gt": 5}}, [
        ('{"legs":[{"px":6},{"px":1}]}', True),
        ('{"legs":[{"px":1},{"px":6}]}', False),
        ('{"legs":[]}', False),
        ('{"legs":[{"px":5}]}', False),
    ]),
    ({"n": 1}, [
        ('{"n":1}', True),
        ('{"n":1.0}', True),
        ('{"n":1e0}', True),
        ('{"n":10E-1}', True),
        ('{"n":"1"}', False),
        ('{"n":true}', False),
        ('{"n":2}', False),
    ]),
    ({"s": {"$gt": "b"}}, [
        ('{"s":"c"}', True),
        ('{"s":"ba"}', True),
        ('{"s":"b"}', False),
        ('{"s":"a"}', False),
        ('{"s":"B"}', False),                  # bytes: "B" < "b"
        ('{"s":"\u00e9"}', True),              # UTF-8 bytes: C3 A9 > "b"
        ('{"s":5}', False),
    ]),
    ({"n": {"$gt": 1}}, [
        ('{"n":2}', True),
        ('{"n":"5"}', False),
        ('{"n":true}', False),
        ('{"n":null}', False),
        ('{"n":[0,3]}', True),                 # some element
        ('{"n":[0,1]}', False),
    ]),
    ({"n": {"$lte": -1.5}}, [
        ('{"n":-1.5}', True),
        ('{"n":-2}', True),
        ('{"n":-1}', False),
    ]),
    ({"v": None}, [
        ('{"v":null}', True),
        ('{}', False),
        ('{"v":0}', False),
        ('{"v":"null"}', False),
    ]),
    ({"b": True}, [
        ('{"b":true}', True),
        ('{"b":1}', False),
        ('{"b":false}', False),
    ]),
    ({"a": {"$ne": 1}}, [
        ('{}', True),                          # missing path matches $ne
        ('{"a":2}', True),
        ('{"a":1}', False),
        ('{"a":"1"}', True),
        ('{"a":[2,3]}', True),
        ('{"a":[2,1]}', False),                # $ne: no element equals
    ]),
    ({"a": {"$nin": [1, "x"]}}, [
        ('{}', True),
        ('{"a":2}', True),
        ('{"a":"x"}', False),
        ('{"a":[2,"x"]}', False),
        ('{"a":[2,3]}', True),
    ]),
    ({"a": {"$exists": False}}, [
        ('{}', True),
        ('{"a":null}', False),
        ('{"b":1}', True),
    ]),
    ({"a": {"$exists": True}}, [
        ('{}', False),
        ('{"a":null}', True),
        ('{"a":0}', True),
    ]),
    ({"a": {"$eq": "x"}, "b": {"$in": [True, None, 2]}}, [
        ('{"a":"x","b":true}', True),
        ('{"a":"x","b":null}', True),
        ('{"a":"x","b":2.0}', True),
        ('{"a":"x","b":false}', False),
        ('{"a":"x"}', False),                  # missing path: only $ne/$nin/$exists false
        ('{"a":"y","b":2}', False),
    ]),
    ({"tags": "x"}, [
        ('{"tags":["y","x"]}', True),
        ('{"tags":["y"]}', False),
        ('{"tags":"x"}', True),
    ]),
    ({"x": 1}, [
        ('[{"x":1}]', False),                  # not an object
        ('"x"', False),
        ('1', False),
        ('{"x":1}', True),
    ]),
]


@pytest.mark.parametrize("flt,cases", CASES, ids=[json.dumps(c[0]) for c in CASES])
def test_filter_semantics(broker, redis, flt, cases):
    ch, marker = uniq("flt"), uniq("marker")

    async def body():
        ws = await filtered_client(broker, redis, ch, flt, marker)
        try:
            got = await delivered(ws, redis, ch, marker, [p for p, _ in cases])
            want = [p for p, m in cases if m]
            assert got == want, "filter %s: got %r want %r" % (json.dumps(flt), got, want)
        finally:
            await ws.close()
    run(body())


def test_non_json_payload_never_matches_non_empty_filter(broker, redis):
    ch, marker = uniq("fltraw"), uniq("marker")

    async def body():
        ws = await filtered_client(broker, redis, ch, {"x": {"$exists": False}}, marker)
        try:
            got = await delivered(ws, redis, ch, marker, [b"hello", b"ab\xffcd", b'{"y":1}'])
            assert got == ['{"y":1}'], got
        finally:
            await ws.close()
    run(body())


def test_payload_nested_deeper_than_the_filter_index_never_matches(broker, redis):
    # PROTOCOL.md 2.1: an object nested deeper than 256 levels is delivered
    # as published to unfiltered subscribers but matches no non-empty filter,
    # not even by its top-level keys; the next payload is filtered as usual.
    # Frames are compared as text (Python's json gives up near 1,000 levels).
    ch = uniq("fltdeep")
    deep = '{"k":1,"d":' + '[{"x":' * 500 + '0' + '}]' * 500 + '}'
    shallow = '{"k":1,"d":[]}'
    prefix = '{"type":"batch","channel":"%s","messages":[' % ch

    async def messages_text(ws, want):
        got = ""
        while len(got) < len(want):
            text = await recv_text(ws)
            assert text.startswith(prefix) and text.endswith("]}"), text[:200]
            got += ("," if got else "") + text[len(prefix):-2]
        return got

    async def body():
        filtered = await ws_connect(broker.port)
        plain = await ws_connect(broker.port)
        try:
            for flt in ({"k": 1}, {"x": {"$exists": False}}):
                await send_json(filtered, {"action": "subscribe", "channel": ch, "filter": flt})
                text, obj = await recv_json(filtered)
                assert obj.get("type") == "ack", text
                await subscribe(plain, ch)
                wait_subscribed(redis.port, ch)
                publish_many(redis.port, [(ch, deep), (ch, shallow)])
                assert await messages_text(filtered, shallow) == shallow
                assert await messages_text(plain, deep + "," + shallow) == deep + "," + shallow
        finally:
            await filtered.close()
            await plain.close()
    run(body())


def test_empty_filter_matches_everything(broker, redis):
    ch, marker = uniq("fltempty"), uniq("marker")

    async def body():
        ws = await filtered_client(broker, redis, ch, {}, marker)
        try:
            got = await delivered(ws, redis, ch, marker, ['{"a":1}', '[1]', '"s"', b"raw"])
            assert got == ['{"a":1}', '[1]', '"s"', '"raw"'], got
        finally:
            await ws.close()
    run(body())


def test_filtered_messages_still_batched_byte_for_byte(broker, redis):
    ch = uniq("fltbatch")

    async def body():
        ws = await ws_connect(broker.port)
        try:
            await send_json(ws, {"action": "subscribe", "channel": ch, "filter": {"k": {"$gte": 2}}})
            text, obj = await recv_json(ws)
            assert obj["type"] == "ack", text
            wait_subscribed(redis.port, ch)
            sent = ['{ "k" : %d ,"w":" x "}' % i for i in range(6)]
            publish_many(redis.port, [(ch, p) for p in sent])
            frames, msgs = await collect(ws, 4, channel=ch)
            assert msgs == sent[2:]
            assert len(frames) == 1, "not batched: %r" % frames
        finally:
            await ws.close()
    run(body())


def test_different_filter_replaces_old_one(broker, redis):
    ch, marker = uniq("fltrepl"), uniq("marker")

    async def body():
        ws = await filtered_client(broker, redis, ch, {"a": 1}, marker)
        try:
            assert await delivered(ws, redis, ch, marker, ['{"a":1}', '{"a":2}']) == ['{"a":1}']
            await send_json(ws, {"action": "subscribe", "channel": ch, "filter": {"a": 2}, "rid": 2})
            text, obj = await recv_json(ws)
            assert obj.get("type") == "ack" and obj.get("rid") == 2, text
            assert await delivered(ws, redis, ch, marker, ['{"a":1}', '{"a":2}']) == ['{"a":2}']
            # Subscribing without a filter: every payload.
            await subscribe(ws, ch, rid=3)
            assert await delivered(ws, redis, ch, marker, ['{"a":1}', '{"a":2}']) == \
                ['{"a":1}', '{"a":2}']
            # One subscription per channel: unsubscribe once and it is gone.
            await subscribe(ws, ch, action="unsubscribe")
            assert await delivered(ws, redis, ch, marker, ['{"a":1}']) == []
        finally:
            await ws.close()
    run(body())


def test_equal_filters_in_any_key_order_get_identical_frames(broker, redis):
    ch = uniq("fltgroup")
    filters = [{"a": 1, "b": {"$gt": 0, "$lt": 9}}, {"b": {"$lt": 9, "$gt": 0}, "a": 1},
               {"a": {"$eq": 1}, "b": {"$gt": 0, "$lt": 9}}]

    async def body():
        clients = []
        try:
            for f in filters:
                ws = await ws_connect(broker.port)
                clients.append(ws)
                await send_json(ws, {"action": "subscribe", "channel": ch, "filter": f})
                text, obj = await recv_json(ws)
                assert obj["type"] == "ack", text
            plain = await ws_connect(broker.port)
            clients.append(plain)
            await subscribe(plain, ch)
            wait_subscribed(redis.port, ch)
            sent = ['{"a":1,"b":5}', '{"a":1,"b":10}', '{"a":2,"b":5}', '{"b":1,"a":1.0}']
            publish_many(redis.port, [(ch, p) for p in sent])
            res = [await collect(ws, 2, channel=ch) for ws in clients[:3]]
            for frames, msgs in res:
                assert msgs == ['{"a":1,"b":5}', '{"b":1,"a":1.0}']
            texts = [[t for t, _, _ in frames] for frames, _ in res]
            assert texts[0] == texts[1] == texts[2]
            _, msgs = await collect(plain, 4, channel=ch)
            assert msgs == sent
        finally:
            for ws in clients:
                await ws.close()
    run(body())


# -- bad filters --------------------------------------------------------------

BAD_FILTERS = [
    '[1]', '"x"', '1', 'true', 'null',
    '{"a":1,"a":2}',                              # repeated key
    '{"a":{"$gt":1,"$gt":2}}',                    # repeated operator
    '{"a":{"$regex":"x"}}',                       # unknown operator
    '{"a":{"$in":1}}',                            # $in without an array
    '{"a":{"$nin":"x"}}',
    '{"a":{"$gt":1,"b":2}}',                      # operators mixed with plain keys
    '{"a":{}}',                                   # empty operator object
    '{"a":[1]}',                                  # array where a scalar is expected
    '{"a":{"b":1}}',                              # object without operators
    '{"a":{"$eq":{"x":1}}}',
    '{"a":{"$eq":[1]}}',
    '{"a":{"$in":[{"x":1}]}}',
    '{"a":{"$in":[[1]]}}',
    '{"a":{"$gt":true}}',                         # $gt takes a number or a string
    '{"a":{"$lt":null}}',
    '{"a":{"$gt":[1]}}',
    '{"a":{"$exists":1}}',                        # $exists takes true or false
    '{"a":{"$exists":"yes"}}',
    '{"":1}',                                     # paths of 1-256 bytes
    '{"%s":1}' % ("p" * 257),
    '{"%s":1}' % ".".join(["s"] * 17),            # more than 16 segments
    '{"a":{"$in":[%s]}}' % ",".join(str(i) for i in range(257)),   # over 256 items
    '{"a":"%s"}' % ("x" * 1025),                  # string over 1024 bytes
    '{"a":{"$in":["%s"]}}' % ("x" * 1025),
    '{%s}' % ",".join('"k%d":1' % i for i in range(33)),           # 33 conditions
    '{"a":{"$gt":1,"$lt":5,"$ne":3},%s}' % ",".join('"k%d":1' % i for i in range(30)),
]


@pytest.mark.parametrize("raw_filter", BAD_FILTERS, ids=[f[:40] for f in BAD_FILTERS])
def test_bad_filter_error_and_no_subscription(broker, redis, raw_filter):
    ch = uniq("badflt")

    async def body():
        ws = await ws_connect(broker.port)
        try:
            await ws.send('{"action":"subscribe","channel":"%s","filter":%s,"rid":[7]}'
                          % (ch, raw_filter))
            text, obj = await recv_json(ws)
            assert obj.get("type") == "error" and obj.get("code") == "bad_filter", text
            assert isinstance(obj.get("message"), str), text
            assert raw_members(text).get("rid") == "[7]", text
            # Not subscribed, and the connection stays usable.
            await subscribe(ws, uniq("after-bad-filter"), rid=1)
            assert numsub(redis.port, ch) == 0
        finally:
            await ws.close()
    run(body())


GOOD_LIMITS = [
    '{"%s":1}' % ("p" * 256),
    '{"%s":1}' % ".".join(["s"] * 16),
    '{"a":{"$in":[%s]}}' % ",".join(str(i) for i in range(256)),
    '{"a":"%s"}' % ("x" * 1024),
    '{%s}' % ",".join('"k%d":1' % i for i in range(32)),
    '{"a":{"$gt":1,"$lt":5,"$ne":3},%s}' % ",".join('"k%d":1' % i for i in range(29)),
    '{"a":{"$in":[]}}',
]


@pytest.mark.parametrize("raw_filter", GOOD_LIMITS, ids=[f[:40] for f in GOOD_LIMITS])
def test_filter_at_limits_accepted(broker, raw_filter):
    ch = uniq("limflt")

    async def body():
        ws = await ws_connect(broker.port)
        try:
            msg = '{"action":"subscribe","channel":"%s","filter":%s,"rid":1}' % (ch, raw_filter)
            assert len(msg) <= 4096
            await ws.send(msg)
            text, obj = await recv_json(ws)
            assert obj.get("type") == "ack" and obj.get("rid") == 1, text
        finally:
            await ws.close()
    run(body())


def test_bad_filter_keeps_old_subscription(broker, redis):
    ch, marker = uniq("keepflt"), uniq("marker")

    async def body():
        ws = await filtered_client(broker, redis, ch, {"a": 1}, marker)
        try:
            await ws.send('{"action":"subscribe","channel":"%s","filter":{"a":{"$bogus":2}},"rid":5}'
                          % ch)
            text, obj = await recv_json(ws)
            assert obj.get("type") == "error" and obj.get("code") == "bad_filter", text
            assert obj.get("rid") == 5
            got = await delivered(ws, redis, ch, marker, ['{"a":1}', '{"a":2}'])
            assert got == ['{"a":1}'], "old subscription changed: %r" % got
        finally:
            await ws.close()
    run(body())


def test_bad_filter_keeps_old_unfiltered_subscription(broker, redis):
    ch, marker = uniq("keepplain"), uniq("marker")

    async def body():
        ws = await ws_connect(broker.port)
        try:
            await subscribe(ws, ch)
            await subscribe(ws, marker)
            wait_subscribed(redis.port, ch, marker)
            await ws.send('{"action":"subscribe","channel":"%s","filter":[1]}' % ch)
            text, obj = await recv_json(ws)
            assert obj.get("code") == "bad_filter", text
            got = await delivered(ws, redis, ch, marker, ['{"a":1}', '{"a":2}'])
            assert got == ['{"a":1}', '{"a":2}'], got
        finally:
            await ws.close()
    run(body())


def test_filters_share_one_redis_subscription(broker, redis):
    """Changing a filter, or mixing filtered and plain subscribers, never
    touches the Redis subscription; the last one to leave unsubscribes."""
    ch, marker = uniq("fltredis"), uniq("marker")
    mon = Monitor(redis.port)

    def cmds():
        return [a[0].upper() for a in mon.until_marker()
                if len(a) >= 2 and a[0].upper() in ("SUBSCRIBE", "UNSUBSCRIBE") and ch in a[1:]]

    def cmds_until(n, timeout=5.0 * SLOW):
        """The broker writes to Redis on its next loop turn, possibly after
        the ack went out: collect until n commands were seen (bounded)."""
        seen, deadline = [], time.monotonic() + timeout
        while len(seen) < n and time.monotonic() < deadline:
            seen += cmds()
        return seen

    async def body():
        a = await filtered_client(broker, redis, ch, {"k": 1}, marker)
        b = await filtered_client(broker, redis, ch, {"k": 2}, marker)
        c = await ws_connect(broker.port)
        try:
            await subscribe(c, ch)
            assert cmds_until(1) == ["SUBSCRIBE"]
            # a changes its filter, b drops its own.
            await send_json(a, {"action": "subscribe", "channel": ch, "filter": {"k": 3}})
            assert (await recv_json(a))[1]["type"] == "ack"
            await subscribe(b, ch)
            got_a, got_b = await delivered(a, redis, ch, marker,
                                           ['{"k":1}', '{"k":2}', '{"k":3}'], more=[b])
            assert got_a == ['{"k":3}'], got_a
            assert got_b == ['{"k":1}', '{"k":2}', '{"k":3}'], got_b
            await a.close()
            await c.close()
            got_b = await delivered(b, redis, ch, marker, ['{"k":5}'])
            assert got_b == ['{"k":5}'], got_b
            assert cmds() == [], "Redis subscription touched while subscribers remain"
            await subscribe(b, ch, action="unsubscribe")
            assert cmds_until(1) == ["UNSUBSCRIBE"]
            assert cmds() == []
            assert numsub(redis.port, ch) == 0
        finally:
            for w in (a, b, c):
                await w.close()
    try:
        run(body())
    finally:
        mon.close()

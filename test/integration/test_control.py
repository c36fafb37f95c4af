"""PROTOCOL.md sections 2 and 3: control messages from the client and the
answers to them, channel names."""
import asyncio
import json

import pytest

from helpers import (OP_TEXT, RawWS, build_frame, collect, numsub, publish, publish_many,
                     raw_members, recv_batch, recv_json, run, send_json, subscribe, sync_marker,
                     uniq, wait_subscribed, ws_connect)


async def request(ws, text):
    """Sends one raw text message; returns (answer text, parsed answer)."""
    await ws.send(text)
    return await recv_json(ws)


def assert_ack(text, action, channel, raw_rid=None):
    obj = json.loads(text)
    assert obj.get("type") == "ack", text
    assert obj.get("action") == action, text
    assert obj.get("channel") == channel, text
    members = raw_members(text)
    if raw_rid is None:
        assert "rid" not in members, text
    else:
        assert members.get("rid") == raw_rid, "rid not echoed byte for byte: %s" % text


def assert_error(text, raw_rid=None):
    obj = json.loads(text)
    assert obj.get("type") == "error", text
    assert obj.get("code") == "bad_request", text
    assert isinstance(obj.get("message"), str), text
    members = raw_members(text)
    if raw_rid is None:
        assert "rid" not in members, text
    else:
        assert members.get("rid") == raw_rid, "rid not echoed byte for byte: %s" % text


# -- acks and rid -------------------------------------------------------------

@pytest.mark.parametrize("raw_rid", [
    "1", "-2.5e3", "0", '"req-2"', '{"x":[1,2]}', '{"x": [1, 2] , "y" :{}}', "[1,\"a\",null]",
    "null", "true", "false", '"caf\\u00e9 \\"q\\" \u20ac"', '""', "12345678901234567890123",
])
def test_subscribe_ack_echoes_rid_byte_for_byte(broker, raw_rid):
    ch = uniq("rid")

    async def body():
        ws = await ws_connect(broker.port)
        try:
            text, _ = await request(ws, '{"action":"subscribe","channel":"%s","rid":%s}' % (ch, raw_rid))
            assert_ack(text, "subscribe", ch, raw_rid)
            text, _ = await request(ws, '{"rid":%s,"action":"unsubscribe","channel":"%s"}' % (raw_rid, ch))
            assert_ack(text, "unsubscribe", ch, raw_rid)
        finally:
            await ws.close()
    run(body())


def test_ack_format_without_rid(broker):
    ch = uniq("norid")

    async def body():
        ws = await ws_connect(broker.port)
        try:
            text, _ = await request(ws, '{"action":"subscribe","channel":"%s"}' % ch)
            assert_ack(text, "subscribe", ch)
            text, _ = await request(ws, '{"action":"unsubscribe","channel":"%s"}' % ch)
            assert_ack(text, "unsubscribe", ch)
        finally:
            await ws.close()
    run(body())


def test_ack_example_from_protocol(broker):
    # The exact frame of PROTOCOL.md's example answer.
    ch = uniq("prices")

    async def body():
        ws = await ws_connect(broker.port)
        try:
            text, _ = await request(ws, '{"action":"subscribe","channel":"%s","rid":1}' % ch)
            assert text == '{"type":"ack","action":"subscribe","channel":"%s","rid":1}' % ch, text
        finally:
            await ws.close()
    run(body())


def test_identifier_in_place_of_channel(broker, redis):
    ch = uniq("ident")

    async def body():
        ws = await ws_connect(broker.port)
        try:
            text, _ = await request(ws, '{"action":"subscribe","identifier":"%s","rid":3}' % ch)
            assert_ack(text, "subscribe", ch, "3")
            wait_subscribed(redis.port, ch)
            assert publish(redis.port, ch, '{"v":1}') == 1
            _, got, msgs = await recv_batch(ws)
            assert (got, msgs) == (ch, ['{"v":1}'])
            text, _ = await request(ws, '{"action":"unsubscribe","identifier":"%s"}' % ch)
            assert_ack(text, "unsubscribe", ch)
        finally:
            await ws.close()
    run(body())


def test_channel_wins_over_identifier(broker, redis):
    ch, other = uniq("chwins"), uniq("idloses")

    async def body():
        ws = await ws_connect(broker.port)
        try:
            for req in ('{"action":"subscribe","identifier":"%s","channel":"%s"}' % (other, ch),
                        '{"action":"subscribe","channel":"%s","identifier":"%s"}' % (ch, other)):
                text, _ = await request(ws, req)
                assert_ack(text, "subscribe", ch)
            wait_subscribed(redis.port, ch)
            assert numsub(redis.port, other) == 0
        finally:
            await ws.close()
    run(body())


def test_unknown_members_ignored_and_last_duplicate_wins(broker):
    ch, decoy = uniq("dup"), uniq("decoy")

    async def body():
        ws = await ws_connect(broker.port)
        try:
            text, _ = await request(
                ws, '{"x":{"action":"no"},"action":"unsubscribe","channel":"%s","filter":{"a":1},'
                    '"action":"subscribe","rid":1,"channel":"%s","rid":[2],"zz":[1,2,{}]}'
                    % (decoy, ch))
            assert_ack(text, "subscribe", ch, "[2]")
        finally:
            await ws.close()
    run(body())


def test_json_escapes_in_channel_are_decoded(broker, redis):
    base = uniq("esc")

    async def body():
        ws = await ws_connect(broker.port)
        try:
            text, _ = await request(ws, '{"action":"subscribe","channel":"%s\\u0041\\/\\u20ac"}' % base)
            name = base + "A/\u20ac"
            assert json.loads(text)["channel"] == name, text
            wait_subscribed(redis.port, name)
            assert publish(redis.port, name, "2") == 1
            _, got, msgs = await recv_batch(ws)
            assert (got, msgs) == (name, ["2"])
        finally:
            await ws.close()
    run(body())


# -- subscribe twice, unsubscribe ---------------------------------------------

def test_subscribe_twice_acked_twice_one_delivery(broker, redis):
    ch = uniq("twice")

    async def body():
        ws = await ws_connect(broker.port)
        try:
            await subscribe(ws, ch, rid=1)
            await subscribe(ws, ch, rid=2)
            wait_subscribed(redis.port, ch)
            assert publish(redis.port, ch, '"m1"') == 1
            _, got, msgs = await recv_batch(ws)
            assert (got, msgs) == (ch, ['"m1"'])
            # A second copy of m1 would be flushed with the first one, so it
            # would come before m2, published only now.
            assert publish(redis.port, ch, '"m2"') == 1
            text, got, msgs = await recv_batch(ws)
            assert (got, msgs) == (ch, ['"m2"']), "duplicate delivery: %s" % text
            # One unsubscribe is enough to stop delivery.
            await subscribe(ws, ch, action="unsubscribe")
            marker = uniq("marker")
            await subscribe(ws, marker)
            wait_subscribed(redis.port, marker)
            publish(redis.port, ch, '"m3"')
            others = await sync_marker(ws, redis.port, marker)
            assert others == [], others
        finally:
            await ws.close()
    run(body())


def test_unsubscribe_when_not_subscribed_is_acked(broker):
    async def body():
        ws = await ws_connect(broker.port)
        try:
            ch = uniq("never")
            await subscribe(ws, ch, rid="u1", action="unsubscribe")
            await subscribe(ws, ch, rid="u2", action="unsubscribe")
            await subscribe(ws, ch, rid="s1")
            await subscribe(ws, ch, rid="u3", action="unsubscribe")
            await subscribe(ws, ch, rid="u4", action="unsubscribe")
        finally:
            await ws.close()
    run(body())


def test_unsubscribe_stops_delivery(broker, redis):
    ch, marker = uniq("unsub"), uniq("marker")

    async def body():
        ws = await ws_connect(broker.port)
        try:
            await subscribe(ws, ch)
            await subscribe(ws, marker)
            wait_subscribed(redis.port, ch, marker)
            assert publish(redis.port, ch, '"before"') == 1
            _, got, msgs = await recv_batch(ws)
            assert (got, msgs) == (ch, ['"before"'])
            await subscribe(ws, ch, rid=9, action="unsubscribe")
            publish(redis.port, ch, '"after"')
            others = await sync_marker(ws, redis.port, marker)
            assert others == [], "delivery after unsubscribe: %r" % others
        finally:
            await ws.close()
    run(body())


# -- errors -------------------------------------------------------------------

BAD_REQUESTS = [
    # (request text, raw rid expected in the error or None)
    ("not json", None),
    ("{", None),
    ('{"action":"subscribe","channel":"x","rid":1', None),         # truncated
    ('{"action":"subscribe","channel":"x","rid":1} x', None),      # trailing garbage
    ('{"action":"subscribe","channel":"x","rid":01}', None),       # invalid number
    ("{'action':'subscribe'}", None),
    ('{"action":"subscribe","channel":"x",}', None),               # trailing comma
    ("", None),                                                    # empty message
    ('"subscribe"', None),                                         # not an object
    ('[{"action":"subscribe","channel":"x","rid":1}]', None),
    ("42", None),
    ("null", None),
    ('{"channel":"x","rid":1}', "1"),                              # missing action
    ('{"action":"publish","channel":"x","rid":"r"}', '"r"'),       # unknown action
    ('{"action":"SUBSCRIBE","channel":"x","rid":2}', "2"),
    ('{"action":1,"channel":"x","rid":3}', "3"),
    ('{"action":null,"channel":"x","rid":{"a":[1]}}', '{"a":[1]}'),
    ('{"action":"subscribe","rid":4}', "4"),                       # missing channel
    ('{"action":"unsubscribe","rid":4}', "4"),
    ('{"action":"subscribe","channel":5,"rid":5}', "5"),           # non-string channel
    ('{"action":"subscribe","channel":null,"rid":6}', "6"),
    ('{"action":"subscribe","channel":["x"],"rid":7}', "7"),
    ('{"action":"subscribe","identifier":7,"rid":8}', "8"),
    ('{"action":"subscribe","channel":"","rid":9}', "9"),          # invalid names
    ('{"action":"subscribe","channel":"a\\u0001b","rid":10}', "10"),
    ('{"action":"subscribe","channel":"a\\nb","rid":11}', "11"),
    ('{"action":"subscribe","channel":"a\\u007fb","rid":12}', "12"),
    ('{"action":"subscribe","channel":"a\\u0000b","rid":13}', "13"),
    ('{"action":"subscribe","channel":"%s","rid":14}' % ("x" * 257), "14"),
    ('{"action":"unsubscribe","channel":"","rid":15}', "15"),
    ('{"action":"subscribe","channel":"%s","rid":16}' % ("\u20ac" * 86), "16"),  # 258 bytes
]


@pytest.mark.parametrize("text,raw_rid", BAD_REQUESTS)
def test_bad_request_error_and_connection_stays_open(broker, text, raw_rid):
    async def body():
        ws = await ws_connect(broker.port)
        try:
            answer, _ = await request(ws, text)
            assert_error(answer, raw_rid)
            # The connection stays open and usable.
            await subscribe(ws, uniq("after-error"), rid=99)
            answer, _ = await request(ws, text)
            assert_error(answer, raw_rid)
            await subscribe(ws, uniq("after-error"), rid=100)
        finally:
            await ws.close()
    run(body())


def test_error_example_from_protocol(broker):
    async def body():
        ws = await ws_connect(broker.port)
        try:
            answer, obj = await request(ws, '{"action":"subscribe","rid":1}')
            assert obj == {"type": "error", "code": "bad_request", "message": obj["message"],
                           "rid": 1}, answer
            assert list(raw_members(answer)) == ["type", "code", "message", "rid"], answer
        finally:
            await ws.close()
    run(body())


@pytest.mark.parametrize("name", [
    "x" * 256,                 # 256 bytes
    "\u20ac" * 85 + "a",       # 256 bytes of UTF-8
    "a",
    "with space and ~!@#$%^&*()[]{}<>?/\\|'\":;,.",
    "\u00e9\U0001F600",
])
def test_valid_channel_names_accepted_and_delivered(broker, redis, name):
    async def body():
        ws = await ws_connect(broker.port)
        try:
            await send_json(ws, {"action": "subscribe", "channel": name, "rid": 1})
            text, obj = await recv_json(ws)
            assert obj.get("type") == "ack" and obj.get("channel") == name, text
            wait_subscribed(redis.port, name)
            assert publish(redis.port, name, '{"ok":true}') == 1
            _, got, msgs = await recv_batch(ws)
            assert (got, msgs) == (name, ['{"ok":true}'])
            await subscribe(ws, name, action="unsubscribe")
        finally:
            await ws.close()
    run(body())


def test_answers_in_request_order(broker):
    # Several requests in one TCP write: the answers come back in order.
    ch = uniq("order")
    reqs = [
        '{"action":"subscribe","channel":"%s","rid":1}' % ch,
        'bogus',
        '{"action":"nope","rid":3}',
        '{"action":"unsubscribe","channel":"%s","rid":4}' % ch,
        '{"action":"subscribe","channel":"","rid":5}',
        '{"action":"subscribe","channel":"%s","rid":6}' % ch,
    ]
    ws = RawWS(broker.port)
    try:
        ws.send_raw(b"".join(build_frame(OP_TEXT, r) for r in reqs))
        answers = [ws.recv_data(5) for _ in reqs]
        assert_ack(answers[0], "subscribe", ch, "1")
        assert_error(answers[1], None)
        assert_error(answers[2], "3")
        assert_ack(answers[3], "unsubscribe", ch, "4")
        assert_error(answers[4], "5")
        assert_ack(answers[5], "subscribe", ch, "6")
    finally:
        ws.close()


def test_ack_before_any_batch_of_the_channel(broker, redis):
    """With messages flowing on a channel, a new subscriber's ack comes
    before the first batch of that channel."""
    ch = uniq("flowing")

    async def body():
        feeder = await ws_connect(broker.port)
        await subscribe(feeder, ch)
        wait_subscribed(redis.port, ch)
        stop = asyncio.Event()

        async def publisher():
            i = 0
            while not stop.is_set():
                publish(redis.port, ch, '{"i":%d}' % i)
                i += 1
                await asyncio.sleep(0.005)

        task = asyncio.ensure_future(publisher())
        try:
            for k in range(5):
                ws = await ws_connect(broker.port)
                try:
                    await send_json(ws, {"action": "subscribe", "channel": ch, "rid": k})
                    text, obj = await recv_json(ws)
                    assert obj.get("type") == "ack" and obj.get("rid") == k, \
                        "first frame after subscribe is not its ack: %s" % text
                    _, got, msgs = await recv_batch(ws)
                    assert got == ch and msgs
                finally:
                    await ws.close()
        finally:
            stop.set()
            await task
            await feeder.close()
    run(body())


def test_subscriptions_are_per_connection(broker, redis):
    ch = uniq("perconn")

    async def body():
        a = await ws_connect(broker.port)
        b = await ws_connect(broker.port)
        try:
            await subscribe(a, ch)
            marker = uniq("marker")
            await subscribe(b, marker)
            wait_subscribed(redis.port, ch, marker)
            assert publish(redis.port, ch, "1") == 1
            _, got, msgs = await recv_batch(a)
            assert (got, msgs) == (ch, ["1"])
            others = await sync_marker(b, redis.port, marker)
            assert others == [], others
        finally:
            await a.close()
            await b.close()
    run(body())


def test_many_channels_on_one_connection(broker, redis):
    chans = [uniq("many%d" % i) for i in range(50)]

    async def body():
        ws = await ws_connect(broker.port)
        try:
            for i, c in enumerate(chans):
                await subscribe(ws, c, rid=i)
            wait_subscribed(redis.port, *chans)
            publish_many(redis.port, [(c, '{"c":%d}' % i) for i, c in enumerate(chans)])
            frames, msgs = await collect(ws, len(chans))
            assert sorted((ch, m) for _, ch, ms in frames for m in ms) == \
                sorted((c, '{"c":%d}' % i) for i, c in enumerate(chans))
            assert all(len(ms) == 1 for _, _, ms in frames)
        finally:
            await ws.close()
    run(body())

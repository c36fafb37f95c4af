"""PROTOCOL.md sections 2 (frames the broker refuses) and 5 (liveness and
closing), with a raw WebSocket client."""
import json
import socket
import struct
import time

import pytest

from helpers import (Broker, OP_BIN, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, SLOW, Closed, RawWS,
                     build_frame, close_payload, fetch_metrics, metric, parse_batch, publish, uniq,
                     wait_subscribed, wait_until)


def sub_msg(channel, rid=1, pad=0):
    msg = '{"action":"subscribe","channel":"%s","rid":%d' % (channel, rid)
    if pad:
        msg += ',"pad":"%s"' % ("p" * pad)
    return msg + "}"


def assert_closed_with(ws, code):
    f = ws.expect_close(10 * SLOW)
    assert f.close_code == code, "expected close %d, got %r" % (code, f)
    if len(f.payload) > 2:
        f.payload[2:].decode("utf-8")  # the reason is UTF-8


def assert_still_works(ws, ch=None):
    ch = ch or uniq("works")
    ws.send_text(sub_msg(ch, rid=77))
    obj = ws.recv_json(5 * SLOW)
    assert obj == {"type": "ack", "action": "subscribe", "channel": ch, "rid": 77}, obj


# -- refused frames -----------------------------------------------------------

def test_binary_frame_closes_1003(broker):
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_BIN, b'{"action":"subscribe","channel":"x"}')
        assert_closed_with(ws, 1003)
    finally:
        ws.close()


def test_fragmented_binary_message_closes_1003(broker):
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_BIN, b"ab", fin=False)
        ws.send_frame(OP_CONT, b"cd", fin=True)
        assert_closed_with(ws, 1003)
    finally:
        ws.close()


def test_unmasked_frame_closes_1002(broker):
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_TEXT, sub_msg(uniq()), mask=False)
        assert_closed_with(ws, 1002)
    finally:
        ws.close()


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_reserved_bits_close_1002(broker, rsv):
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_TEXT, sub_msg(uniq()), rsv=rsv)
        assert_closed_with(ws, 1002)
    finally:
        ws.close()


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_unknown_opcode_closes_1002(broker, opcode):
    ws = RawWS(broker.port)
    try:
        ws.send_frame(opcode, b"x")
        assert_closed_with(ws, 1002)
    finally:
        ws.close()


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE], ids=["ping", "pong", "close"])
def test_control_frame_over_125_bytes_closes_1002(broker, opcode):
    ws = RawWS(broker.port)
    try:
        payload = close_payload(1000, b"r" * 124) if opcode == OP_CLOSE else b"p" * 126
        assert len(payload) == 126
        ws.send_frame(opcode, payload)
        assert_closed_with(ws, 1002)
    finally:
        ws.close()


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE], ids=["ping", "pong", "close"])
def test_fragmented_control_frame_closes_1002(broker, opcode):
    ws = RawWS(broker.port)
    try:
        ws.send_frame(opcode, close_payload(1000) if opcode == OP_CLOSE else b"abc", fin=False)
        assert_closed_with(ws, 1002)
    finally:
        ws.close()


@pytest.mark.parametrize("n,form", [(5, 16), (125, 16), (125, 64), (5, 64), (200, 64),
                                    (65535, 64)])
def test_non_minimal_length_closes_1002(broker, n, form):
    # A length that fits the 7-bit (or 16-bit) form sent in a longer form.
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_TEXT, b" " * n, len_form=form)
        assert_closed_with(ws, 1002)
    finally:
        ws.close()


def test_continuation_without_start_closes_1002(broker):
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_CONT, sub_msg(uniq()), fin=True)
        assert_closed_with(ws, 1002)
    finally:
        ws.close()


def test_new_message_inside_fragmented_message_closes_1002(broker):
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_TEXT, b'{"action":', fin=False)
        ws.send_frame(OP_TEXT, sub_msg(uniq()), fin=True)
        assert_closed_with(ws, 1002)
    finally:
        ws.close()


@pytest.mark.parametrize("payload", [
    b'{"action":"subscribe","channel":"ab\xffcd"}',
    b'\xc0\xaf',
    b'{"x":"\xed\xa0\x80"}',        # surrogate
    b'{"x":"\xf4\x90\x80\x80"}',    # above U+10FFFF
    b'{"x":"\xe2\x82"}',            # truncated
])
def test_invalid_utf8_text_closes_1007(broker, payload):
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_TEXT, payload)
        assert_closed_with(ws, 1007)
    finally:
        ws.close()


def test_invalid_utf8_across_fragments_closes_1007(broker):
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_TEXT, b'{"x":"\xe2', fin=False)
        ws.send_frame(OP_CONT, b'\x82"}', fin=False)   # \xe2\x82 then '"' : invalid
        ws.send_frame(OP_CONT, b'', fin=True)
        assert_closed_with(ws, 1007)
    finally:
        ws.close()


def test_utf8_sequence_split_across_fragments_is_fine(broker):
    ws = RawWS(broker.port)
    try:
        ch = uniq("split") + "\u20ac"
        msg = sub_msg(ch).encode()
        cut = msg.index(b"\xe2") + 1
        ws.send_frame(OP_TEXT, msg[:cut], fin=False)
        ws.send_frame(OP_CONT, msg[cut:], fin=True)
        obj = ws.recv_json(5 * SLOW)
        assert obj.get("type") == "ack" and obj.get("channel") == ch, obj
    finally:
        ws.close()


def test_message_at_limit_accepted_over_limit_closes_1009(broker):
    # The shared broker has max_client_message_bytes 4096 (the default).
    ch = uniq("limit")
    base = len(sub_msg(ch, pad=1)) - 1
    at_limit = sub_msg(ch, pad=4096 - base)
    assert len(at_limit) == 4096
    ws = RawWS(broker.port)
    try:
        ws.send_text(at_limit)
        obj = ws.recv_json(5 * SLOW)
        assert obj.get("type") == "ack" and obj.get("rid") == 1, obj
        over = sub_msg(ch, pad=4097 - base)
        assert len(over) == 4097
        ws.send_text(over)
        assert_closed_with(ws, 1009)
    finally:
        ws.close()


def test_large_message_closes_1009(broker):
    ws = RawWS(broker.port)
    try:
        ws.send_text(sub_msg(uniq(), pad=100000))
        assert_closed_with(ws, 1009)
    finally:
        ws.close()


def test_announced_huge_length_closes_1009(broker):
    # The start of a 1 GiB frame: the broker must not wait for the rest.
    ws = RawWS(broker.port)
    try:
        ws.send_raw(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 1 << 30) + b"\x01\x02\x03\x04"
                    + b"x" * 100)
        assert_closed_with(ws, 1009)
    finally:
        ws.close()


def test_fragmented_message_over_limit_closes_1009(broker):
    # Each fragment is small; together they are over 4096 bytes.
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_TEXT, b'{"pad":"' + b"a" * 1500, fin=False)
        ws.send_frame(OP_CONT, b"b" * 1500, fin=False)
        ws.send_frame(OP_CONT, b"c" * 1500, fin=False)
        ws.send_frame(OP_CONT, b'"}', fin=True)
        assert_closed_with(ws, 1009)
    finally:
        ws.close()


def test_fragmented_message_at_limit_accepted(broker):
    ch = uniq("fraglimit")
    base = len(sub_msg(ch, pad=1)) - 1
    msg = sub_msg(ch, pad=4096 - base).encode()
    assert len(msg) == 4096
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_TEXT, msg[:1000], fin=False)
        ws.send_frame(OP_CONT, msg[1000:3000], fin=False)
        ws.send_frame(OP_CONT, msg[3000:], fin=True)
        obj = ws.recv_json(5 * SLOW)
        assert obj.get("type") == "ack" and obj.get("channel") == ch, obj
    finally:
        ws.close()


# -- accepted frames ----------------------------------------------------------

@pytest.mark.parametrize("payload", [b"", b"hello", bytes(range(125))])
def test_ping_answered_with_pong_same_payload(broker, payload):
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_PING, payload)
        f = ws.recv_frame(5 * SLOW)
        assert f.opcode == OP_PONG and f.fin and not f.masked, f
        assert f.payload == payload
        assert_still_works(ws)
    finally:
        ws.close()


def test_ping_between_fragments(broker):
    ch = uniq("pingfrag")
    msg = sub_msg(ch).encode()
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_TEXT, msg[:10], fin=False)
        ws.send_frame(OP_PING, b"mid")
        ws.send_frame(OP_CONT, msg[10:], fin=True)
        f = ws.recv_frame(5 * SLOW)
        assert f.opcode == OP_PONG and f.payload == b"mid", f
        obj = ws.recv_json(5 * SLOW)
        assert obj.get("type") == "ack" and obj.get("channel") == ch, obj
    finally:
        ws.close()


def test_unsolicited_pong_ignored(broker):
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_PONG, b"whatever")
        assert_still_works(ws)
    finally:
        ws.close()


@pytest.mark.parametrize("payload,code", [
    (close_payload(1000), 1000),
    (close_payload(1000, b"bye"), 1000),
])
def test_client_close_answered_then_tcp_closed(broker, payload, code):
    ws = RawWS(broker.port)
    try:
        assert_still_works(ws)
        ws.send_frame(OP_CLOSE, payload)
        f = ws.expect_close(10 * SLOW)
        assert f.close_code == code, f
    finally:
        ws.close()


def test_client_close_without_code_answered(broker):
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_CLOSE, b"")
        f = ws.expect_close(10 * SLOW)
        assert f.opcode == OP_CLOSE
    finally:
        ws.close()


# RFC 6455 5.5.1 and 7.4: a close body is empty or a 2-byte code and a
# UTF-8 reason; the codes an endpoint may send are 1000-1003, 1007-1011, the
# ones IANA registered since (1012 service restart, 1013 try again later,
# 1014 bad gateway) and 3000-4999. A valid close is echoed, code and reason;
# anything else gets 1002.
CLOSE_ANSWERS = [
    (b"", b""),
    (b"\x03", close_payload(1002)),
    (b"\xe8", close_payload(1002)),
    (close_payload(1000), close_payload(1000)),
    (close_payload(1001, b"going"), close_payload(1001, b"going")),
    (close_payload(1011), close_payload(1011)),
    (close_payload(1012), close_payload(1012)),
    (close_payload(1013), close_payload(1013)),
    (close_payload(1014), close_payload(1014)),
    (close_payload(1012, b"restarting"), close_payload(1012, b"restarting")),
    (close_payload(1013, "later \u00e9\u20ac".encode()), close_payload(1013, "later \u00e9\u20ac".encode())),
    (close_payload(1014, b"r" * 123), close_payload(1014, b"r" * 123)),
    (close_payload(3000), close_payload(3000)),
    (close_payload(4999, b"app"), close_payload(4999, b"app")),
    (close_payload(0), close_payload(1002)),
    (close_payload(999), close_payload(1002)),
    (close_payload(1004), close_payload(1002)),
    (close_payload(1005), close_payload(1002)),
    (close_payload(1006), close_payload(1002)),
    (close_payload(1015), close_payload(1002)),
    (close_payload(1016), close_payload(1002)),
    (close_payload(2999), close_payload(1002)),
    (close_payload(5000), close_payload(1002)),
    (close_payload(65535, b"x"), close_payload(1002)),
]


def close_id(payload):
    if len(payload) < 2:
        return "empty" if not payload else "1-byte-" + payload.hex()
    code = struct.unpack("!H", payload[:2])[0]
    return "%d%s" % (code, "+reason" if len(payload) > 2 else "")


@pytest.mark.parametrize("payload,want", CLOSE_ANSWERS, ids=[close_id(p) for p, _ in CLOSE_ANSWERS])
def test_close_frame_answer(broker, payload, want):
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_CLOSE, payload)
        f = ws.expect_close(10 * SLOW)
        assert f.payload[:2] == want[:2], "sent %r, got %r" % (payload, f)
        if want[:2] != close_payload(1002):
            assert f.payload == want, "sent %r, got %r" % (payload, f)
    finally:
        ws.close()


def test_close_1012_with_invalid_utf8_reason_is_1007(broker):
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_CLOSE, close_payload(1012, b"ab\xff"))
        assert_closed_with(ws, 1007)
    finally:
        ws.close()


def test_close_frames_split_into_single_bytes(broker):
    # The code and reason arrive over many reads; two sessions interleave
    # their closes, so one may lose its reason to the other (the code stays).
    a, b = RawWS(broker.port), RawWS(broker.port)
    try:
        for c in (a, b):
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fa = build_frame(OP_CLOSE, close_payload(1013, b"aaaa"))
        fb = build_frame(OP_CLOSE, close_payload(1014, b"bbbbbb"))
        for i in range(9):
            a.send_raw(fa[i:i + 1])
            time.sleep(0.01)
        for i in range(len(fb)):
            b.send_raw(fb[i:i + 1])
            time.sleep(0.01)
        a.send_raw(fa[9:])
        got_a, got_b = a.expect_close(10 * SLOW), b.expect_close(10 * SLOW)
        assert got_b.payload == close_payload(1014, b"bbbbbb"), got_b
        assert got_a.payload in (close_payload(1013, b"aaaa"), close_payload(1013)), got_a
    finally:
        a.close()
        b.close()


def test_close_answers_counted_honestly(broker):
    # A 1002 the broker sends is a protocol error; echoing a valid close
    # (1012-1014 included) is none.
    def errors_1002():
        return metric(fetch_metrics(broker.port)[1], "broker_client_errors_total",
                      kind="ws_1002") or 0

    for payload, counted in [(b"\x03", 1), (close_payload(1012), 0), (close_payload(1005), 1),
                             (close_payload(1000), 0)]:
        before = errors_1002()
        ws = RawWS(broker.port)
        try:
            ws.send_frame(OP_CLOSE, payload)
            ws.expect_close(10 * SLOW)
        finally:
            ws.close()
        wait_until(lambda: errors_1002() >= before + counted, 5 * SLOW, what="ws_1002 counted")
        time.sleep(0.1)
        assert errors_1002() == before + counted, payload


def test_fragmented_subscribe_in_three_frames(broker, redis):
    ch = uniq("frag3")
    msg = sub_msg(ch, rid=5).encode()
    ws = RawWS(broker.port)
    try:
        ws.send_frame(OP_TEXT, msg[:7], fin=False)
        time.sleep(0.05)
        ws.send_frame(OP_CONT, msg[7:20], fin=False)
        time.sleep(0.05)
        ws.send_frame(OP_CONT, msg[20:], fin=True)
        obj = ws.recv_json(5 * SLOW)
        assert obj == {"type": "ack", "action": "subscribe", "channel": ch, "rid": 5}, obj
        wait_subscribed(redis.port, ch)
        assert publish(redis.port, ch, "[1]") == 1
        ch_got, msgs = parse_batch(ws.recv_data(5 * SLOW))
        assert (ch_got, msgs) == (ch, ["[1]"])
    finally:
        ws.close()


def test_frames_split_into_single_bytes(broker):
    ch = uniq("bytewise")
    data = build_frame(OP_TEXT, sub_msg(ch, rid=3)) + build_frame(OP_PING, b"pp")
    ws = RawWS(broker.port)
    try:
        ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)):
            ws.send_raw(data[i:i + 1])
            if i % 8 == 0:
                time.sleep(0.002)
        # The pong need not wait for the ack (which waits for Redis).
        got = [ws.recv_frame(5 * SLOW) for _ in range(2)]
        pongs = [f for f in got if f.opcode == OP_PONG]
        texts = [json.loads(f.payload) for f in got if f.opcode == OP_TEXT]
        assert len(pongs) == 1 and pongs[0].payload == b"pp", got
        assert len(texts) == 1 and texts[0].get("rid") == 3 and texts[0].get("channel") == ch, got
    finally:
        ws.close()


def test_many_frames_in_one_write(broker):
    chans = [uniq("burst") for _ in range(30)]
    ws = RawWS(broker.port)
    try:
        ws.send_raw(b"".join(build_frame(OP_TEXT, sub_msg(c, rid=i)) for i, c in enumerate(chans)))
        for i, c in enumerate(chans):
            obj = ws.recv_json(5 * SLOW)
            assert obj == {"type": "ack", "action": "subscribe", "channel": c, "rid": i}, obj
    finally:
        ws.close()


def test_server_frames_unmasked_text(broker, redis):
    ch = uniq("srv")
    ws = RawWS(broker.port, "/ws?channels=" + ch)
    try:
        wait_subscribed(redis.port, ch)
        assert publish(redis.port, ch, '"x"') == 1
        f = ws.recv_frame(5 * SLOW)
        assert f.opcode == OP_TEXT and f.fin and not f.masked and f.rsv == 0, f
        json.loads(f.text)
    finally:
        ws.close()


# -- pings from the broker ----------------------------------------------------

@pytest.fixture(scope="module")
def ping_broker(redis):
    b = Broker(redis.port, ping_interval_s=1, pong_timeout_s=2).start()
    yield b
    b.stop()


def test_silent_client_is_pinged_then_disconnected(ping_broker):
    ws = RawWS(ping_broker.port)
    try:
        t0 = time.monotonic()
        f = ws.recv_frame(6 * SLOW)
        assert f.opcode == OP_PING, f
        t_ping = time.monotonic() - t0
        # Never answer: disconnected pong_timeout_s (2 s) later.
        closed = False
        deadline = time.monotonic() + 10 * SLOW
        while time.monotonic() < deadline:
            try:
                f = ws.recv_frame(deadline - time.monotonic())
            except Closed:
                closed = True
                break
            except socket.timeout:
                break
            assert f.opcode in (OP_PING, OP_CLOSE), f
        elapsed = time.monotonic() - t0
        assert closed, "silent client still connected after %.1f s" % elapsed
        assert elapsed >= 1.5, "disconnected after only %.1f s (ping at %.1f s)" % (elapsed, t_ping)
    finally:
        ws.close()


def test_client_answering_pings_stays_connected(ping_broker, redis):
    ch = uniq("alive")
    ws = RawWS(ping_broker.port, "/ws?channels=" + ch)
    try:
        pings = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 6:
            try:
                f = ws.recv_frame(0.2)
            except socket.timeout:
                continue
            assert f.opcode == OP_PING, f
            pings += 1
            ws.send_frame(OP_PONG, f.payload)
        assert pings >= 1, "no ping in 6 s with ping_interval_s 1"
        wait_subscribed(redis.port, ch)
        assert publish(redis.port, ch, '"still here"') == 1
        while True:
            f = ws.recv_frame(5 * SLOW)
            if f.opcode == OP_PING:
                ws.send_frame(OP_PONG, f.payload)
                continue
            assert parse_batch(f.text) == (ch, ['"still here"'])
            break
    finally:
        ws.close()


def test_client_sending_other_frames_is_not_disconnected(ping_broker):
    # "Any frame from the client counts": a client that pings the broker
    # every 0.5 s and never answers the broker's pings stays connected.
    ws = RawWS(ping_broker.port)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:
            ws.send_frame(OP_PING, b"k")
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                try:
                    f = ws.recv_frame(max(0.01, end - time.monotonic()))
                except socket.timeout:
                    break
                assert f.opcode in (OP_PING, OP_PONG), f
        assert_still_works(ws)
    finally:
        ws.close()

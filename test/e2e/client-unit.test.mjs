// Unit tests of protocol/broker-client.js under node: the pure backoff
// functions, and the client's reconnect and resubscribe logic against a
// simulated socket and a manual clock (no network, no timers).
import {test} from 'node:test';
import assert from 'node:assert/strict';

import {
    Backoff, BrokerClient, BrokerError, DEFAULT_BACKOFF, backoffCeiling, backoffDelay,
    connect, parseFrame, socketUrl,
} from '../../protocol/broker-client.js';

test('backoff ceiling doubles from 500 ms and stops at 30 s', () => {
    const got = [0, 1, 2, 3, 4, 5, 6, 7, 100, 1e6].map((n) => backoffCeiling(n));
    assert.deepEqual(got, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
    assert.equal(backoffCeiling(3, {initial: 100, max: 1000, factor: 3}), 1000);
    assert.equal(backoffCeiling(2, {initial: 100, max: 1000, factor: 3}), 900);
    assert.equal(backoffCeiling(-1), 500);
    assert.deepEqual(DEFAULT_BACKOFF, {initial: 500, max: 30000, factor: 2, stableAfter: 10000});
});

test('full jitter: the delay is uniform in [0, ceiling)', () => {
    assert.equal(backoffDelay(0, {}, () => 0), 0);
    assert.equal(backoffDelay(0, {}, () => 0.999999), 499);
    assert.equal(backoffDelay(3, {}, () => 0.5), 2000);
    assert.equal(backoffDelay(50, {}, () => 0.5), 15000);
    // With Math.random: always within bounds, and not all the same.
    const seen = new Set();
    for (let i = 0; i < 1000; i++) {
        const d = backoffDelay(4, {});
        assert.ok(d >= 0 && d < 8000, `delay ${d}`);
        seen.add(d);
    }
    assert.ok(seen.size > 100);
});

test('Backoff counts attempts and starts over after a stable connection', () => {
    const b = new Backoff({}, () => 0.999);
    const first = [b.next(), b.next(), b.next()];
    assert.deepEqual(first, [499, 999, 1998]);
    assert.equal(b.attempt, 3);
    b.opened(1000);
    b.closed(1000 + 9999);           // not stable: the count goes on
    assert.equal(b.next(), 3996);
    b.opened(20000);
    b.closed(20000 + 10000);         // stayed up stableAfter: start over
    assert.equal(b.attempt, 0);
    assert.equal(b.next(), 499);
    b.closed(99999);                 // a close without an open changes nothing
    assert.equal(b.attempt, 1);
    b.reset();
    assert.equal(b.attempt, 0);
});

test('socketUrl adds the token and maps http(s) to ws(s)', () => {
    assert.equal(socketUrl('wss://h.example/ws', 'a.b.c'), 'wss://h.example/ws?token=a.b.c');
    assert.equal(socketUrl('ws://h:1/ws?x=1', 't t'), 'ws://h:1/ws?x=1&token=t+t');
    assert.equal(socketUrl('/ws', undefined, 'https://h.example/page?channel=x'), 'wss://h.example/ws');
    assert.equal(socketUrl('/ws', '', 'http://h:8080/'), 'ws://h:8080/ws');
    assert.throws(() => socketUrl('ftp://h/ws'), TypeError);
});

test('parseFrame reads batches, acks and errors, and refuses the rest', () => {
    assert.deepEqual(parseFrame('{"type":"batch","channel":"c","messages":[1,{"a":2},"x"]}'),
        {type: 'batch', channel: 'c', messages: [1, {a: 2}, 'x']});
    assert.equal(parseFrame('{"type":"ack","rid":3}').rid, 3);
    assert.equal(parseFrame(new TextEncoder().encode('{"type":"error","code":"bad_request"}')).code, 'bad_request');
    for (const bad of ['', 'nope', '[]', '{"x":1}', '{"type":"batch","channel":"c"}', 'null'])
        assert.equal(parseFrame(bad), null, bad);
});

// --- a simulated socket and clock -------------------------------------------

class FakeSocket {
    static all = [];

    constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.sent = [];
        this.closedWith = null;
        FakeSocket.all.push(this);
    }

    send(text) {
        if (this.readyState !== 1) throw new Error('not open');
        this.sent.push(JSON.parse(text));
    }

    close(code, reason) {
        this.closedWith = {code, reason};
        this.readyState = 3;
    }

    // Driven by the test:
    open() {
        this.readyState = 1;
        this.onopen?.({});
    }

    receive(obj) {
        this.onmessage?.({data: typeof obj === 'string' ? obj : JSON.stringify(obj)});
    }

    drop(code = 1006) {
        this.readyState = 3;
        this.onclose?.({code, reason: ''});
    }

    take() {
        return this.sent.splice(0);
    }

    ackAll() {
        for (const m of this.take()) this.receive({type: 'ack', action: m.action, channel: m.channel, rid: m.rid});
    }
}

function fakeClock() {
    const clock = {
        t: 0,
        timers: [],
        now: () => clock.t,
        setTimeout(fn, ms) {
            const t = {at: clock.t + ms, fn};
            clock.timers.push(t);
            return t;
        },
        clearTimeout(t) {
            clock.timers = clock.timers.filter((x) => x !== t);
        },
        // Runs every timer due within `ms`, in order.
        advance(ms) {
            const end = clock.t + ms;
            for (;;) {
                clock.timers.sort((a, b) => a.at - b.at);
                const t = clock.timers[0];
                if (!t || t.at > end) break;
                clock.timers.shift();
                clock.t = t.at;
                t.fn();
            }
            clock.t = end;
        },
    };
    return clock;
}

function setup(options = {}) {
    FakeSocket.all = [];
    const clock = fakeClock();
    const events = [];
    const client = connect('wss://broker.example/ws', {
        WebSocket: FakeSocket, clock, random: () => 0.5, ...options,
    });
    for (const type of ['open', 'close', 'reconnecting', 'subscribed', 'error'])
        client.on(type, (detail) => events.push([type, detail]));
    const sock = () => FakeSocket.all[FakeSocket.all.length - 1];
    return {client, clock, events, sock};
}

const tick = () => new Promise((r) => setImmediate(r));

test('subscribe before open: sent on open, resolved by the rid-matched ack', async () => {
    const {client, sock, events} = setup({token: 'tok'});
    await tick();
    assert.equal(sock().url, 'wss://broker.example/ws?token=tok');
    const got = [];
    const p = client.subscribe('prices', {filter: {sym: 'A'}}, (msgs, ch) => got.push([ch, msgs]));
    let settled = false;
    p.then(() => { settled = true; });
    sock().open();
    const [m] = sock().take();
    assert.deepEqual({...m, rid: 0}, {action: 'subscribe', channel: 'prices', filter: {sym: 'A'}, rid: 0});
    await tick();
    assert.equal(settled, false);
    sock().receive({type: 'ack', action: 'subscribe', channel: 'prices', rid: m.rid});
    await p;
    sock().receive({type: 'batch', channel: 'prices', messages: [{sym: 'A', px: 1}, {sym: 'A', px: 2}]});
    sock().receive({type: 'batch', channel: 'other', messages: [1]});
    assert.deepEqual(got, [['prices', [{sym: 'A', px: 1}, {sym: 'A', px: 2}]]]);
    assert.deepEqual(events.map((e) => e[0]), ['open', 'subscribed']);
    assert.equal(client.state, 'open');
});

test('an error answer rejects, and the previous subscription stays', async () => {
    const {client, sock} = setup();
    await tick();
    sock().open();
    const first = [];
    const second = [];
    const p1 = client.subscribe('q', {filter: {a: 1}}, (m) => first.push(...m));
    sock().ackAll();
    await p1;
    const p2 = client.subscribe('q', {filter: {a: {$bogus: 1}}}, (m) => second.push(...m));
    const [m] = sock().take();
    sock().receive({type: 'error', code: 'bad_filter', message: 'unknown operator', rid: m.rid});
    await assert.rejects(p2, (e) => e instanceof BrokerError && e.code === 'bad_filter' && e.channel === 'q');
    sock().receive({type: 'batch', channel: 'q', messages: [7]});
    assert.deepEqual(first, [7]);
    assert.deepEqual(second, []);
    // A refused first subscription leaves nothing behind.
    const p3 = client.subscribe('nope', () => {});
    const [m3] = sock().take();
    sock().receive({type: 'error', code: 'forbidden', rid: m3.rid});
    await assert.rejects(p3, {code: 'forbidden'});
    assert.deepEqual(client.channels, ['q']);
});

test('a lost connection reconnects with backoff and resubscribes every channel with its filter', async () => {
    const {client, sock, clock, events} = setup();
    await tick();
    sock().open();
    const got = [];
    const pa = client.subscribe('a', (m) => got.push(...m));
    const pb = client.subscribe('b', {filter: {x: {$gt: 1}}}, () => {});
    sock().ackAll();
    await Promise.all([pa, pb]);
    // b is given up: it must not come back after the reconnect.
    const ub = client.unsubscribe('b');
    sock().ackAll();
    await ub;
    events.length = 0;

    const c = client.subscribe('c', {filter: {k: 'v'}}, () => {});
    sock().ackAll();
    await c;

    const first = sock();
    first.drop(1001);
    assert.equal(client.state, 'waiting');
    // attempt 1: ceiling 500, random 0.5 -> 250 ms
    assert.deepEqual(events.slice(-2).map((e) => e[0]), ['close', 'reconnecting']);
    assert.deepEqual(events.at(-1)[1], {attempt: 1, delay: 250});
    clock.advance(249);
    await tick();
    assert.equal(FakeSocket.all.length, 1);
    clock.advance(1);
    await tick();
    assert.equal(FakeSocket.all.length, 2);
    // This attempt fails: the next waits longer (ceiling 1000 -> 500).
    sock().drop(1006);
    assert.deepEqual(events.at(-1)[1], {attempt: 2, delay: 500});
    clock.advance(500);
    await tick();
    assert.equal(FakeSocket.all.length, 3);
    sock().open();
    const resub = sock().take().map(({action, channel, filter}) => ({action, channel, filter}));
    assert.deepEqual(resub, [
        {action: 'subscribe', channel: 'a', filter: undefined},
        {action: 'subscribe', channel: 'c', filter: {k: 'v'}},
    ]);
    assert.deepEqual(events.filter((e) => e[0] === 'open').map((e) => e[1].reconnected), [true]);
    // batches flow again once acked
    sock().receive({type: 'batch', channel: 'a', messages: ['after']});
    assert.deepEqual(got, ['after']);
    assert.equal(client.connections, 2);
});

test('the backoff starts over after a connection stayed up stableAfter', async () => {
    const {client, sock, clock, events} = setup({backoff: {stableAfter: 5000}});
    await tick();
    sock().open();
    for (let i = 0; i < 4; i++) {
        sock().drop();
        clock.advance(60000);
        await tick();
    }
    // four failures in a row: 250, 500, 1000, 2000
    assert.deepEqual(events.filter((e) => e[0] === 'reconnecting').map((e) => e[1].delay), [250, 500, 1000, 2000]);
    sock().open();
    clock.advance(5000);
    sock().drop();
    assert.deepEqual(events.at(-1), ['reconnecting', {attempt: 1, delay: 250}]);
    client.close();
});

test('a subscribe in flight when the connection drops is sent again and then resolves', async () => {
    const {client, sock, clock} = setup();
    await tick();
    sock().open();
    const p = client.subscribe('x', () => {});
    sock().take();
    sock().drop();
    clock.advance(1000);
    await tick();
    sock().open();
    const msgs = sock().take();
    assert.equal(msgs.length, 1);
    sock().receive({type: 'ack', rid: msgs[0].rid});
    await p;
    client.close();
});

test('unsubscribe: acked by rid; batches stop at once; offline it resolves at once', async () => {
    const {client, sock} = setup();
    await tick();
    sock().open();
    const got = [];
    const p = client.subscribe('u', (m) => got.push(...m));
    sock().ackAll();
    await p;
    const u = client.unsubscribe('u');
    sock().receive({type: 'batch', channel: 'u', messages: [1]});  // in flight
    const [m] = sock().take();
    assert.deepEqual({...m, rid: 0}, {action: 'unsubscribe', channel: 'u', rid: 0});
    sock().receive({type: 'ack', action: 'unsubscribe', channel: 'u', rid: m.rid});
    await u;
    assert.deepEqual(got, []);
    sock().drop();
    await client.unsubscribe('never');
    client.close();
});

test('close() stops reconnecting and rejects what is pending', async () => {
    const {client, sock, clock, events} = setup();
    await tick();
    const p = client.subscribe('z', () => {});
    client.close();
    await assert.rejects(p, /closed/);
    clock.advance(120000);
    await tick();
    assert.equal(FakeSocket.all.length, 1);
    assert.equal(sock().closedWith.code, 1000);
    assert.equal(client.state, 'closed');
    assert.equal(events.at(-1)[0], 'close');
    assert.equal(events.at(-1)[1].willReconnect, false);
    await assert.rejects(client.subscribe('again', () => {}), /closed/);
});

test('a token function is asked again before each connect', async () => {
    let n = 0;
    const {client, sock, clock} = setup({token: async () => `t${++n}`});
    await tick();
    assert.match(sock().url, /token=t1$/);
    sock().drop();
    clock.advance(1000);
    await tick();
    await tick();
    assert.match(sock().url, /token=t2$/);
    client.close();
});

test('errors without a request and throwing callbacks become error events', async () => {
    const {client, sock, events} = setup();
    await tick();
    sock().open();
    const p = client.subscribe('t', () => { throw new Error('boom'); });
    sock().ackAll();
    await p;
    sock().receive({type: 'batch', channel: 't', messages: [1]});
    sock().receive({type: 'error', code: 'bad_request', message: 'invalid JSON'});
    sock().receive('not json');
    const errs = events.filter((e) => e[0] === 'error').map((e) => e[1].error.message);
    assert.deepEqual(errs, ['boom', 'bad_request: invalid JSON', 'broker-client: unreadable frame from the broker']);
    client.close();
});

test('a resubscription refused for rate (limit) is tried again a second later', async () => {
    const {client, sock, clock} = setup();
    await tick();
    sock().open();
    const p = client.subscribe('r', () => {});
    sock().ackAll();
    await p;
    sock().drop();
    clock.advance(1000);
    await tick();
    sock().open();
    const [m] = sock().take();
    sock().receive({type: 'error', code: 'limit', rid: m.rid});
    assert.deepEqual(client.channels, ['r']);
    clock.advance(1000);
    const [again] = sock().take();
    assert.equal(again.channel, 'r');
    client.close();
});

test('without a WebSocket implementation the constructor says what to do', () => {
    const saved = globalThis.WebSocket;
    try {
        globalThis.WebSocket = undefined;
        assert.throws(() => new BrokerClient('ws://h/ws'), /pass \{WebSocket\}/);
    } finally {
        globalThis.WebSocket = saved;
    }
});

test('history: offsets kept from batches, since on every reconnect, gap when not recovered', async () => {
    const {client, clock, events, sock} = setup();
    const gaps = [];
    client.on('gap', (d) => gaps.push(d));
    await tick();
    const got = [];
    const p = client.subscribe('h', {history: 3}, (msgs) => got.push(...msgs));
    sock().open();
    let [m] = sock().take();
    assert.equal(m.history, 3);
    assert.equal(m.since, undefined);
    sock().receive({type: 'ack', action: 'subscribe', channel: 'h', rid: m.rid, offset: 10, epoch: 'e1'});
    await p;
    sock().receive({type: 'batch', channel: 'h', messages: [8, 9, 10], offset: 10, epoch: 'e1'});
    sock().receive({type: 'batch', channel: 'h', messages: [11], offset: 11, epoch: 'e1'});
    // The connection drops: the resubscribe resumes after 11, not history.
    sock().drop();
    clock.advance(60000);
    await tick();
    sock().open();
    [m] = sock().take();
    assert.deepEqual(m.since, {offset: 11, epoch: 'e1'});
    assert.equal(m.history, undefined);
    sock().receive({type: 'ack', action: 'subscribe', channel: 'h', rid: m.rid, recovered: true, offset: 13, epoch: 'e1'});
    const sub = events.filter(([t]) => t === 'subscribed').pop()[1];
    assert.equal(sub.recovered, true);
    assert.equal(sub.resubscribed, true);
    sock().receive({type: 'batch', channel: 'h', messages: [12, 13], offset: 13, epoch: 'e1'});
    assert.deepEqual(got, [8, 9, 10, 11, 12, 13]);
    assert.equal(gaps.length, 0);
    // Again, but the broker cannot recover (history expired): a gap event,
    // and the next resume starts from where the ack says the channel is.
    sock().drop();
    clock.advance(60000);
    await tick();
    sock().open();
    [m] = sock().take();
    assert.deepEqual(m.since, {offset: 13, epoch: 'e1'});
    sock().receive({type: 'ack', action: 'subscribe', channel: 'h', rid: m.rid, recovered: false, offset: 2, epoch: 'e2'});
    assert.deepEqual(gaps, [{channel: 'h', offset: 2, epoch: 'e2'}]);
    sock().drop();
    clock.advance(60000);
    await tick();
    sock().open();
    [m] = sock().take();
    assert.deepEqual(m.since, {offset: 2, epoch: 'e2'});
    client.close();
});

test('history: since given by the application resumes the first subscribe', async () => {
    const {client, sock} = setup();
    await tick();
    const p = client.subscribe('h', {since: {offset: 5, epoch: 'x'}}, () => {});
    sock().open();
    const [m] = sock().take();
    assert.deepEqual(m.since, {offset: 5, epoch: 'x'});
    sock().receive({type: 'ack', action: 'subscribe', channel: 'h', rid: m.rid, recovered: true, offset: 9, epoch: 'x'});
    await p;
    client.close();
});

// protocol/broker-client.js against a real broker (build/broker, plain
// ws://) and a real redis-server: subscribe and its ack, errors, filters,
// unsubscribe, tokens, and reconnect + resubscribe after a broker restart.
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {WebSocket as WsWebSocket} from 'ws';

import {connect, BrokerError} from '../../protocol/broker-client.js';
import {
    killAll, numsub, publish, removeDir, sleep, startBroker, startRedis, tmpDir, waitFor,
} from './helpers.mjs';

// node 22 has a global WebSocket; node 20 needs one injected.
const WebSocket = globalThis.WebSocket ?? WsWebSocket;

let dir;
let redis;
let broker;
const clients = [];

function open(url, options = {}) {
    const c = connect(url, {WebSocket, backoff: {initial: 50, max: 500}, ...options});
    clients.push(c);
    return c;
}

/** Collects every message a subscription receives. */
function collector() {
    const got = [];
    const fn = (messages, channel) => {
        for (const m of messages) got.push({channel, m});
    };
    return {got, fn, payloads: () => got.map((x) => x.m)};
}

let seq = 0;
const channel = (name) => `${name}-${process.pid}-${++seq}`;

before(async () => {
    dir = tmpDir('broker-client-');
    redis = await startRedis(dir);
    broker = await startBroker(dir, redis.port);
});

after(async () => {
    for (const c of clients) c.close();
    await broker?.stop();
    await redis?.stop();
    killAll();
    removeDir(dir);
});

test('subscribe resolves on the ack; batches arrive decoded, in order', async () => {
    const c = open(broker.url);
    const ch = channel('plain');
    const col = collector();
    await c.subscribe(ch, {}, col.fn);
    await waitFor(async () => (await numsub(redis.port, ch)) > 0, {what: 'the broker subscribed in Redis'});
    for (let i = 0; i < 20; i++) await publish(redis.port, ch, {seq: i, ts: Date.now()});
    await publish(redis.port, ch, 'not json');
    await waitFor(() => col.got.length === 21, {what: '21 messages'});
    assert.deepEqual(col.payloads().slice(0, 20).map((m) => m.seq), [...Array(20).keys()]);
    assert.equal(col.payloads()[20], 'not json');
    assert.ok(col.got.every((x) => x.channel === ch));
});

test('errors reject with the broker\'s code; the connection stays usable', async () => {
    const c = open(broker.url);
    await assert.rejects(c.subscribe('bad\u0001name', () => {}),
        (e) => e instanceof BrokerError && e.code === 'bad_request');
    await assert.rejects(c.subscribe(channel('f'), {filter: {a: {$nope: 1}}}, () => {}),
        (e) => e instanceof BrokerError && e.code === 'bad_filter');
    await assert.rejects(c.subscribe(channel('f'), {filter: [1, 2]}, () => {}), {code: 'bad_filter'});
    const ch = channel('after-errors');
    const col = collector();
    await c.subscribe(ch, col.fn);
    await waitFor(async () => (await numsub(redis.port, ch)) > 0);
    await publish(redis.port, ch, {ok: true});
    await waitFor(() => col.got.length === 1);
    assert.equal(c.connections, 1);
});

test('a filter selects payloads server-side; a refused new filter keeps the old one', async () => {
    const c = open(broker.url);
    const ch = channel('filter');
    const col = collector();
    await c.subscribe(ch, {filter: {sym: {$in: ['A', 'B']}, px: {$gte: 10}}}, col.fn);
    await waitFor(async () => (await numsub(redis.port, ch)) > 0);
    await assert.rejects(c.subscribe(ch, {filter: {px: {$gte: 'x', $bogus: 1}}}, () => {}), {code: 'bad_filter'});
    const sent = [
        {sym: 'A', px: 9}, {sym: 'A', px: 10}, {sym: 'C', px: 50}, {sym: 'B', px: 11.5}, {px: 99},
    ];
    for (const p of sent) await publish(redis.port, ch, p);
    await publish(redis.port, ch, {sym: 'B', px: 1e6, last: true});
    await waitFor(() => col.payloads().some((m) => m.last), {what: 'the last message'});
    assert.deepEqual(col.payloads(), [{sym: 'A', px: 10}, {sym: 'B', px: 11.5}, {sym: 'B', px: 1e6, last: true}]);
    // Another filter replaces it.
    await c.subscribe(ch, {filter: {sym: 'C'}}, col.fn);
    col.got.length = 0;
    await publish(redis.port, ch, {sym: 'A', px: 10});
    await publish(redis.port, ch, {sym: 'C', px: 1});
    await waitFor(() => col.got.length >= 1);
    await sleep(100);
    assert.deepEqual(col.payloads(), [{sym: 'C', px: 1}]);
});

test('unsubscribe is acked and stops delivery', async () => {
    const c = open(broker.url);
    const ch = channel('unsub');
    const col = collector();
    await c.subscribe(ch, col.fn);
    await waitFor(async () => (await numsub(redis.port, ch)) > 0);
    await c.unsubscribe(ch);
    assert.deepEqual(c.channels, []);
    // The broker drops its Redis subscription with its last subscriber.
    await waitFor(async () => (await numsub(redis.port, ch)) === 0, {what: 'Redis unsubscribed'});
    await publish(redis.port, ch, {late: true});
    await sleep(150);
    assert.deepEqual(col.got, []);
});

test('the client reconnects after a broker restart and resubscribes with its filters', async (t) => {
    const r = await startRedis(dir);
    let b = await startBroker(dir, r.port);
    const port = b.port;
    t.after(async () => {
        await b.stop();
        await r.stop();
    });
    const c = open(b.url);
    const events = [];
    for (const type of ['open', 'close', 'reconnecting', 'subscribed'])
        c.on(type, (d) => events.push([type, d]));
    const chA = channel('restart-a');
    const chB = channel('restart-b');
    const a = collector();
    const bcol = collector();
    await c.subscribe(chA, a.fn);
    await c.subscribe(chB, {filter: {keep: true}}, bcol.fn);
    await waitFor(async () => (await numsub(r.port, chA)) > 0 && (await numsub(r.port, chB)) > 0);

    await b.stop('SIGTERM');
    const closed = events.find((e) => e[0] === 'close');
    assert.equal(closed?.[1].code, 1001, 'the broker says going away');
    await waitFor(() => events.some((e) => e[0] === 'reconnecting'));

    b = await startBroker(dir, r.port, {port});
    await waitFor(() => c.connections === 2, {what: 'the reconnect'});
    await waitFor(() => events.filter((e) => e[0] === 'subscribed' && e[1].resubscribed).length === 2,
        {what: 'both resubscribed'});
    await waitFor(async () => (await numsub(r.port, chA)) > 0 && (await numsub(r.port, chB)) > 0);
    await publish(r.port, chA, {n: 1});
    await publish(r.port, chB, {n: 2, keep: false});
    await publish(r.port, chB, {n: 3, keep: true});
    await waitFor(() => a.got.length === 1 && bcol.got.length === 1, {what: 'messages after the restart'});
    assert.deepEqual(a.payloads(), [{n: 1}]);
    assert.deepEqual(bcol.payloads(), [{n: 3, keep: true}]);
    assert.equal(events.filter((e) => e[0] === 'open').at(-1)[1].reconnected, true);
});

function jwt(secret, claims) {
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const head = `${b64({alg: 'HS256', typ: 'JWT'})}.${b64(claims)}`;
    return `${head}.${crypto.createHmac('sha256', secret).update(head).digest('base64url')}`;
}

test('a token goes in ?token=; its channels claim is enforced', async (t) => {
    const secret = crypto.randomBytes(32).toString('hex');
    const b = await startBroker(dir, redis.port, {auth_secret: secret});
    t.after(() => b.stop());
    const token = jwt(secret, {channels: ['news.*'], exp: Math.floor(Date.now() / 1000) + 600});
    const c = open(b.url, {token});
    const col = collector();
    await c.subscribe('news.today', col.fn);
    await assert.rejects(c.subscribe('sports', () => {}), {code: 'forbidden'});
    await waitFor(async () => (await numsub(redis.port, 'news.today')) > 0);
    await publish(redis.port, 'news.today', {h: 1});
    await waitFor(() => col.got.length === 1);

    // A bad token: the handshake gets 401, the client keeps trying with backoff.
    const bad = open(b.url, {token: jwt('wrong', {channels: ['*']})});
    const closes = [];
    bad.on('close', (d) => closes.push(d));
    await waitFor(() => closes.length >= 2, {what: 'refused attempts'});
    assert.ok(closes.every((d) => !d.wasOpen && d.willReconnect));
    assert.equal(bad.connections, 0);
    bad.close();
});

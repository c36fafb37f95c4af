// End to end: scripts/stack.sh brings up redis-server, the broker and nginx
// (TLS) on free ports in a temporary STACK_DIR; headless Debian Chromium opens
// the demo page over https through nginx; messages PUBLISHed with redis-cli
// must show up in the page in order; after a broker restart the page's client
// must reconnect and resubscribe by itself, and new messages show up again.
// The stack is stopped at the end whatever happens, and must leave no
// process behind.
//
// E2E_DEMO_URL and E2E_REDIS_URL (with STACK_DIR for the restart) test an
// already running stack instead, and leave it running.
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {readFileSync} from 'node:fs';

import {launch} from './browser.mjs';
import {
    freePort, numsub, pidAlive, publish, readPid, removeDir, stack, tmpDir, waitFor,
} from './helpers.mjs';

const N = 50;        // messages before the restart
const M = 20;        // and after
const RUN = `${process.pid}-${Date.now()}`;
const CHANNEL = `e2e-${RUN}`;

let env;             // for stack.sh
let ownStack = false;
let urls;            // {wss, https, redis}
let redisPort;
let chrome;
let page;
const pageErrors = [];

function parseUrls(stdout) {
    const line = (re) => stdout.split('\n').find((l) => re.test(l))?.trim();
    return {wss: line(/^wss:\/\//), https: line(/^https:\/\//), redis: line(/^redis:\/\//)};
}

function logTail(file, n = 15) {
    try {
        return readFileSync(file, 'utf8').trim().split('\n').slice(-n).join('\n');
    } catch {
        return '(no log)';
    }
}

function pids() {
    const dir = env.STACK_DIR;
    return {
        redis: readPid(path.join(dir, 'redis.pid')),
        broker: readPid(path.join(dir, 'broker.pid')),
        nginx: readPid(path.join(dir, 'nginx', 'logs', 'nginx.pid')),
    };
}

before(async () => {
    if (process.env.E2E_DEMO_URL && process.env.E2E_REDIS_URL) {
        urls = {https: process.env.E2E_DEMO_URL, redis: process.env.E2E_REDIS_URL};
        env = {STACK_DIR: process.env.STACK_DIR || path.resolve('../../var/stack')};
    } else {
        env = {
            STACK_DIR: tmpDir('broker-e2e-stack-'),
            STACK_REDIS_PORT: String(await freePort()),
            STACK_BROKER_PORT: String(await freePort()),
            STACK_HTTPS_PORT: String(await freePort()),
            STACK_HTTP_PORT: String(await freePort()),
        };
        ownStack = true;
        const r = await stack('start', env);
        urls = parseUrls(r.stdout);
        assert.match(urls.wss ?? '', /^wss:\/\/127\.0\.0\.1:\d+\/ws$/, r.stdout);
        assert.match(urls.https ?? '', /^https:\/\/127\.0\.0\.1:\d+\/$/, r.stdout);
        assert.match(urls.redis ?? '', /^redis:\/\/127\.0\.0\.1:\d+$/, r.stdout);
    }
    redisPort = Number(new URL(urls.redis).port);
    chrome = await launch();
    page = chrome.context.pages()[0] ?? await chrome.context.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
    await chrome?.close();
    if (!ownStack) return;
    const before = pids();
    const r = await stack('stop', env).catch((e) => e);
    for (const [name, pid] of Object.entries(before))
        if (pid) assert.equal(pidAlive(pid), false, `${name} (pid ${pid}) still running after stop`);
    removeDir(env.STACK_DIR);
    if (r instanceof Error) throw r;
});

/** The payloads of this run shown in the page, oldest first. */
async function shown() {
    const texts = await page.$$eval('#messages li code', (els) => els.map((e) => e.textContent));
    return texts.map((t) => {
        try {
            return JSON.parse(t);
        } catch {
            return null;
        }
    }).filter((m) => m && m.run === RUN).reverse();
}

async function state() {
    return page.$eval('#status', (e) => ({state: e.dataset.state, text: e.textContent}));
}

async function publishRange(from, to) {
    for (let seq = from; seq < to; seq++)
        await publish(redisPort, CHANNEL, {ts: Date.now(), seq, run: RUN});
}

function diagnose(err) {
    const dir = env.STACK_DIR;
    err.message += `\n--- broker.log\n${logTail(path.join(dir, 'broker.log'))}` +
        `\n--- nginx error.log\n${logTail(path.join(dir, 'nginx', 'logs', 'error.log'))}` +
        `\n--- page errors\n${pageErrors.join('\n')}`;
    return err;
}

test('the demo page over https through nginx shows published messages in order', {timeout: 60000}, async () => {
    try {
        const resp = await page.goto(`${urls.https}?channel=${encodeURIComponent(CHANNEL)}`);
        assert.equal(resp.status(), 200);
        await page.waitForFunction(() => document.getElementById('status').dataset.state === 'subscribed',
            null, {timeout: 20000});
        const wsUrl = await page.evaluate(() => window.demo.wsUrl);
        assert.match(wsUrl, /^wss:\/\/127\.0\.0\.1:\d+\/ws$/);
        // The ack may come before the broker's SUBSCRIBE reached Redis.
        await waitFor(async () => (await numsub(redisPort, CHANNEL)) > 0, {what: 'the broker in Redis'});
        await publishRange(0, N);
        await waitFor(async () => (await shown()).length === N, {timeout: 15000, what: `${N} messages in the page`});
        assert.deepEqual((await shown()).map((m) => m.seq), [...Array(N).keys()]);
        assert.equal(await page.evaluate(() => window.demo.total), N);
        assert.deepEqual(pageErrors, []);
    } catch (err) {
        throw diagnose(err);
    }
});

test('after a broker restart the page reconnects and resubscribes by itself', {timeout: 90000}, async () => {
    try {
        const before = pids().broker;
        const connections = await page.evaluate(() => window.demo.client.connections);
        await stack('restart-broker', env);
        assert.notEqual(pids().broker, before, 'a new broker process');
        await page.waitForFunction((n) => window.demo.client.connections > n, connections, {timeout: 45000});
        await page.waitForFunction(() => document.getElementById('status').dataset.state === 'subscribed',
            null, {timeout: 15000});
        await waitFor(async () => (await numsub(redisPort, CHANNEL)) > 0, {what: 'the new broker in Redis'});
        await publishRange(N, N + M);
        await waitFor(async () => (await shown()).length === N + M,
            {timeout: 15000, what: `${M} more messages in the page`});
        assert.deepEqual((await shown()).map((m) => m.seq), [...Array(N + M).keys()]);
        assert.equal(Number(await page.$eval('#connects', (e) => e.textContent)), connections + 1);
        assert.deepEqual(pageErrors, []);
    } catch (err) {
        err.message += `\npage status: ${JSON.stringify(await state().catch(() => null))}`;
        throw diagnose(err);
    }
});

#!/usr/bin/env node
// storm.mjs: a connection storm against a WebSocket endpoint, ws:// or
// wss:// (build/loadgen speaks plain ws:// only). In the manner of the
// "Thor" tests of BRIEF.md section 3: N connections, at most C in flight;
// each connects (TCP, TLS for wss), upgrades, subscribes, waits for the ack,
// and closes (or, with --hold, stays open until all are done). No
// dependencies: node >= 20.
//
//   node scripts/bench/storm.mjs --url wss://127.0.0.1:8443/ws -n 10000 -c 100
//   node scripts/bench/storm.mjs --url ws://127.0.0.1:8880/ws -n 10000 -c 100 --json out.json
//
// Options: -n N (10000), -c C (100), -k K channels (100, client i subscribes
// to <prefix><i % K>), --prefix P ("storm"), --hold, --resume (wss: offer the
// previous TLS session, to measure resumption), --linger S (with --hold: keep
// them S seconds more, e.g. to read the proxy's memory), --timeout S (10),
// --json FILE.
//
// Per connection it times: tcp (connect() to connected), tls (to the end of
// the TLS handshake, wss only), upgrade (connect() to the 101: the
// "handshake" of BRIEF.md) and ready (connect() to the subscribe's ack).
// Prints a summary on stdout as JSON (or to --json) and a short table on
// stderr.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

function parseArgs(argv) {
    const o = {n: 10000, c: 100, k: 100, prefix: 'storm', hold: false, linger: 0, resume: false, timeout: 10, json: null, url: null};
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const v = () => {
            if (i + 1 >= argv.length) usage(`${a} needs a value`);
            return argv[++i];
        };
        switch (a) {
            case '--url': o.url = v(); break;
            case '-n': case '--connections': o.n = Number(v()); break;
            case '-c': case '--concurrency': o.c = Number(v()); break;
            case '-k': case '--channels': o.k = Number(v()); break;
            case '--prefix': o.prefix = v(); break;
            case '--hold': o.hold = true; break;
            case '--linger': o.linger = Number(v()); break;
            case '--resume': o.resume = true; break;
            case '--timeout': o.timeout = Number(v()); break;
            case '--json': o.json = v(); break;
            case '-h': case '--help': usage(); break;
            default: usage(`unknown option ${a}`);
        }
    }
    if (!o.url) usage('--url is required');
    if (!(o.n > 0 && o.c > 0 && o.k > 0)) usage('-n, -c and -k must be positive');
    return o;
}

function usage(err) {
    if (err) process.stderr.write(`storm: ${err}\n`);
    process.stderr.write('usage: storm.mjs --url ws[s]://HOST:PORT/PATH [-n N] [-c C] [-k K] [--prefix P] ' +
        '[--hold [--linger S]] [--resume] [--timeout S] [--json FILE]\n');
    process.exit(err ? 1 : 0);
}

const opt = parseArgs(process.argv.slice(2));
const url = new URL(opt.url);
const secure = url.protocol === 'wss:';
if (!secure && url.protocol !== 'ws:') usage('the URL must be ws:// or wss://');
const host = url.hostname.replace(/^\[|\]$/g, '');
const port = Number(url.port || (secure ? 443 : 80));
const pathQuery = (url.pathname || '/') + url.search;

const now = () => Number(process.hrtime.bigint()) / 1e6;  // ms

// Random bytes for keys and masks, drawn in bulk: one getrandom() per
// connection costs more than the rest of the client's work.
const pool = Buffer.alloc(1 << 16);
let poolAt = pool.length;
function random(n) {
    if (poolAt + n > pool.length) {
        crypto.randomFillSync(pool);
        poolAt = 0;
    }
    poolAt += n;
    return pool.subarray(poolAt - n, poolAt);
}

// A masked client text frame (RFC 6455 section 5.2).
function textFrame(text, opcode = 0x1) {
    const payload = Buffer.from(text);
    const mask = random(4);
    const len = payload.length;
    const head = len < 126 ? Buffer.from([0x80 | opcode, 0x80 | len])
        : Buffer.from([0x80 | opcode, 0x80 | 126, len >> 8, len & 0xff]);
    for (let i = 0; i < len; i++) payload[i] ^= mask[i & 3];
    return Buffer.concat([head, mask, payload]);
}

function closeFrame() {
    const mask = random(4);
    const body = Buffer.from([0x03, 0xe8]);  // 1000
    for (let i = 0; i < 2; i++) body[i] ^= mask[i];
    return Buffer.concat([Buffer.from([0x88, 0x82]), mask, body]);
}

const samples = {tcp: [], tls: [], upgrade: [], ready: []};
const failures = {};
const statuses = {};
const held = [];
let tlsSession = null;
let resumed = 0;

function fail(kind) {
    failures[kind] = (failures[kind] || 0) + 1;
}

/** One connection; resolves when it is done (ready and closed, or held, or failed). */
function one(i) {
    return new Promise((resolve) => {
        const t0 = now();
        const key = random(16).toString('base64');
        const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
        let sock;
        let buf = Buffer.alloc(0);
        let phase = 'connect';
        let finished = false;
        const timer = setTimeout(() => done('timeout'), opt.timeout * 1000);

        function done(error) {
            if (finished) return;
            finished = true;
            clearTimeout(timer);
            if (error) {
                fail(error);
                sock.destroy();
            } else if (opt.hold) {
                held.push(sock);
            } else {
                sock.end(closeFrame());
                sock.once('close', () => {});
                setTimeout(() => sock.destroy(), 2000).unref();
            }
            resolve();
        }

        const request = `GET ${pathQuery} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n` +
            `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
        const onConnected = () => {
            phase = 'upgrade';
            sock.write(request);
        };
        if (secure) {
            sock = tls.connect({
                host, port, rejectUnauthorized: false,
                servername: net.isIP(host) ? undefined : host,
                session: opt.resume && tlsSession ? tlsSession : undefined,
            });
            sock.once('connect', () => samples.tcp.push(now() - t0));
            sock.once('secureConnect', () => {
                samples.tls.push(now() - t0);
                if (sock.isSessionReused()) resumed++;
                onConnected();
            });
            if (opt.resume) sock.on('session', (s) => { tlsSession = s; });
        } else {
            sock = net.connect({host, port});
            sock.once('connect', () => {
                samples.tcp.push(now() - t0);
                onConnected();
            });
        }
        sock.setNoDelay(true);
        sock.on('error', (e) => done(phase === 'connect' ? `connect_${e.code || 'error'}` : `io_${e.code || 'error'}`));
        sock.on('close', () => done(phase === 'upgrade' || phase === 'ack' ? 'closed' : undefined));
        sock.on('data', (d) => {
            buf = buf.length ? Buffer.concat([buf, d]) : d;
            if (phase === 'upgrade') {
                const end = buf.indexOf('\r\n\r\n');
                if (end < 0) return;
                const head = buf.subarray(0, end).toString('latin1');
                buf = buf.subarray(end + 4);
                const status = Number(head.split(' ', 2)[1]);
                if (status !== 101) {
                    statuses[status] = (statuses[status] || 0) + 1;
                    done('http_status');
                    return;
                }
                if (!head.toLowerCase().includes(`\r\nsec-websocket-accept: ${accept.toLowerCase()}`)) {
                    done('bad_handshake');
                    return;
                }
                samples.upgrade.push(now() - t0);
                phase = 'ack';
                sock.write(textFrame(JSON.stringify({action: 'subscribe', channel: `${opt.prefix}${i % opt.k}`, rid: i})));
            }
            if (phase === 'ack' && buf.length >= 2) {
                let len = buf[1] & 0x7f;
                let off = 2;
                if (len === 126) {
                    if (buf.length < 4) return;
                    len = buf.readUInt16BE(2);
                    off = 4;
                }
                if (buf.length < off + len) return;
                const text = buf.subarray(off, off + len).toString();
                buf = buf.subarray(off + len);
                if ((buf[0] & 0x0f) === 0x8 || !text.includes('"ack"')) {
                    done('subscribe_error');
                    return;
                }
                samples.ready.push(now() - t0);
                phase = 'ready';
                done();
            }
        });
    });
}

function hist(xs) {
    if (xs.length === 0) return {count: 0};
    const s = Float64Array.from(xs).sort();
    const q = (p) => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)];
    const r = (x) => Math.round(x * 1000) / 1000;
    return {count: s.length, mean_ms: r(s.reduce((a, b) => a + b, 0) / s.length), min_ms: r(s[0]),
        p50_ms: r(q(0.5)), p90_ms: r(q(0.9)), p99_ms: r(q(0.99)), max_ms: r(s[s.length - 1])};
}

const start = now();
let next = 0;
async function worker() {
    while (next < opt.n) await one(next++);
}
await Promise.all(Array.from({length: Math.min(opt.c, opt.n)}, worker));
const total = now() - start;

const summary = {
    tool: 'storm', url: opt.url, connections: opt.n, concurrency: opt.c, channels: opt.k,
    hold: opt.hold, resume: opt.resume,
    total_s: Math.round(total) / 1000,
    connections_per_s: Math.round((opt.n / total) * 1000 * 10) / 10,
    ok: samples.ready.length, failed: opt.n - samples.ready.length, failures, http_status: statuses,
    tls_resumed: secure ? resumed : undefined,
    tcp: hist(samples.tcp), tls: secure ? hist(samples.tls) : undefined,
    upgrade: hist(samples.upgrade), ready: hist(samples.ready),
};
if (opt.hold && opt.linger > 0) {
    process.stderr.write(`storm: holding ${held.length} connections for ${opt.linger} s\n`);
    await new Promise((r) => setTimeout(r, opt.linger * 1000));
}
for (const s of held) s.destroy();

const line = (name, h) => h && h.count
    ? `${name.padEnd(8)} mean ${h.mean_ms.toFixed(2)} ms  p50 ${h.p50_ms.toFixed(2)}  p99 ${h.p99_ms.toFixed(2)}  max ${h.max_ms.toFixed(2)}\n` : '';
process.stderr.write(`storm: ${opt.n} connections to ${opt.url}, concurrency ${opt.c}: ${summary.ok} ok, ` +
    `${summary.failed} failed, ${summary.total_s} s (${summary.connections_per_s}/s)\n` +
    line('tcp', summary.tcp) + line('tls', summary.tls) + line('upgrade', summary.upgrade) + line('ready', summary.ready));
const out = JSON.stringify(summary, null, 1) + '\n';
if (opt.json) fs.writeFileSync(opt.json, out);
else process.stdout.write(out);
process.exit(summary.failed ? 2 : 0);

'use strict';
// sio-load: loadgen's counterpart for the socket.io peer (socketio.js).
// loadgen speaks raw WebSocket; socket.io wraps every message in Engine.IO
// and Socket.IO packets, so this client speaks those over `ws` (no
// socket.io-client: a few hundred bytes per connection instead of its
// objects, so that 5,000 connections per process stay cheap) and writes the
// same progress lines and JSON summary as loadgen, which `loadgen --merge`
// adds up with others.
//
//   node sio-load.js --url ws://HOST:PORT -n N -k K [--prefix P]
//        [--subscribe-mode frame|query] [--duration S] [--interval S]
//        [--sample N] [--source-ips N] [--concurrency C] [--timeout S]
//        [--idle] [--json FILE] [-q]
//
// Differences from loadgen, said in BENCHMARKS.md:
// - messages in an unsampled batch are counted by occurrences of {"ts":
//   (every payload of scripts/publish starts so), not by a JSON scan;
// - latency is taken when Node hands the frame over (performance.now()),
//   not at the kernel's receive timestamp, so it includes the client's lag.

const fs = require('fs');
const WebSocket = require('ws');
const { performance } = require('perf_hooks');

const o = { url: null, n: 1, k: 1, prefix: 'ch', mode: 'frame', duration: 0, interval: 5,
            sample: 1, sourceIps: 1, concurrency: 100, timeout: 10, idle: false, json: null,
            quiet: false };
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i], v = process.argv[i + 1];
  const take = () => { i++; return v; };
  switch (a) {
    case '--url': o.url = take(); break;
    case '-n': case '--connections': o.n = Number(take()); break;
    case '-k': case '--channels': o.k = Number(take()); break;
    case '--prefix': o.prefix = take(); break;
    case '--subscribe-mode': o.mode = take(); break;
    case '--duration': o.duration = Number(take()); break;
    case '--interval': o.interval = Number(take()); break;
    case '--sample': o.sample = Number(take()); break;
    case '--source-ips': o.sourceIps = Number(take()); break;
    case '-c': case '--concurrency': o.concurrency = Number(take()); break;
    case '--timeout': o.timeout = Number(take()); break;
    case '--idle': o.idle = true; break;
    case '--json': o.json = take(); break;
    case '-q': case '--quiet': o.quiet = true; break;
    default: console.error(`sio-load: unknown option ${a}`); process.exit(1);
  }
}
if (!o.url) { console.error('sio-load: --url is required'); process.exit(1); }

// ---------------------------------------------------------------------------
// loadgen's histogram (scripts/loadgen.c): 1 us buckets below 128 us, then 64
// buckets per power of two; values clamped at 2^27 us.
const SUB_BITS = 6, SUB = 64, LINEAR = 128, MAX_BITS = 27;
const NB = LINEAR + (MAX_BITS - SUB_BITS - 1) * SUB;

function histIndex(v) {
  if (v < LINEAR) return v;
  if (v >= 2 ** MAX_BITS) v = 2 ** MAX_BITS - 1;
  const k = 31 - Math.clz32(v);
  return LINEAR + (k - SUB_BITS - 1) * SUB + Math.floor(v / 2 ** (k - SUB_BITS)) - SUB;
}

function histLow(i) {
  if (i < LINEAR) return [i, 1];
  const oct = Math.floor((i - LINEAR) / SUB), s = (i - LINEAR) % SUB, shift = oct + 1;
  return [(SUB + s) * 2 ** shift, 2 ** shift];
}

class Hist {
  constructor() { this.count = 0; this.min = 0; this.max = 0; this.sum = 0; this.b = new Float64Array(NB); }
  record(v) {
    v = Math.max(0, Math.round(v));
    if (this.count === 0 || v < this.min) this.min = v;
    if (v > this.max) this.max = v;
    this.count++;
    this.sum += v;
    this.b[histIndex(v)]++;
  }
  quantile(q) {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < NB; i++) {
      seen += this.b[i];
      if (seen >= rank) { const [lo, w] = histLow(i); return Math.min(lo + w - 1, this.max); }
    }
    return this.max;
  }
  json() {
    const ms = (us) => Math.round(us) / 1000;
    const buckets = [];
    for (let i = 0; i < NB; i++) if (this.b[i]) buckets.push([histLow(i)[0], this.b[i]]);
    return { count: this.count, min_ms: ms(this.min), mean_ms: this.count ? ms(this.sum / this.count) : 0,
             p50_ms: ms(this.quantile(0.5)), p90_ms: ms(this.quantile(0.9)), p99_ms: ms(this.quantile(0.99)),
             p999_ms: ms(this.quantile(0.999)), max_ms: ms(this.max), sum_us: Math.round(this.sum), buckets };
  }
}

// ---------------------------------------------------------------------------
const nowUs = () => (performance.timeOrigin + performance.now()) * 1000;
const mono = () => performance.now() / 1000; // seconds

const res = { opened: 0, failed: 0, closed: 0, frames: 0, messages: 0, bytes: 0, payload: 0,
              sampled: 0, bad: 0, noTs: 0, ioErr: 0, protoErr: 0 };
const fail = { refused: 0, connect_error: 0, timeout: 0, http_status: 0, closed: 0,
               bad_handshake: 0, subscribe_error: 0, io: 0 };
const httpStatus = {}, closeCodes = {};
const hUpgrade = new Hist(), hReady = new Hist(), hLat = new Hist(), hLag = new Hist();
let hLatIv = new Hist();
let next = 0, inflight = 0, open = 0, firstConnect = 0, rampDone = false, measureStart = 0;
let atMeasure = { frames: 0, messages: 0, bytes: 0 };
const conns = [];
const TS = Buffer.from('{"ts":');
const t0 = mono();

function base() {
  const u = new URL(o.url);
  u.pathname = '/socket.io/';
  u.search = '?EIO=4&transport=websocket';
  return u.toString();
}
const BASE = base();

function failConn(c, kind) {
  if (c.done) return;
  c.done = true;
  clearTimeout(c.timer);
  fail[kind]++;
  res.failed++;
  inflight--;
  try { c.ws.terminate(); } catch { /* already gone */ }
  startMore();
}

function ready(c) {
  clearTimeout(c.timer);
  c.ready = true;
  hReady.record((mono() - c.t0) * 1e6);
  res.opened++;
  inflight--;
  open++;
  startMore();
}

function countTs(buf) {
  let n = 0;
  for (let at = buf.indexOf(TS); at >= 0; at = buf.indexOf(TS, at + 6)) n++;
  return n;
}

function onBatch(c, buf) {
  res.frames++;
  res.payload += buf.length;
  if (o.idle) return;
  const sampled = c.nmsg++ % o.sample === 0;
  if (!sampled) { res.messages += countTs(buf); return; }
  const t = nowUs();
  let m;
  try { m = JSON.parse(buf); } catch { res.bad++; return; }
  if (m === null || !Array.isArray(m.messages)) { res.bad++; return; }
  res.messages += m.messages.length;
  res.sampled++;
  for (const p of m.messages) {
    if (p && typeof p.ts === 'number') { const l = t - p.ts; hLat.record(l); hLatIv.record(l); }
    else res.noTs++;
  }
}

function open1(i) {
  const channel = o.prefix + (i % o.k);
  let url = BASE;
  if (o.mode === 'query') url += '&channels=' + encodeURIComponent(channel);
  const opts = { perMessageDeflate: false, handshakeTimeout: o.timeout * 1000 };
  if (o.sourceIps > 1) opts.localAddress = `127.0.0.${1 + (i % o.sourceIps)}`;
  const c = { i, channel, t0: mono(), ready: false, done: false, nmsg: 0, binNext: false, timer: null };
  if (!firstConnect) firstConnect = c.t0;
  inflight++;
  c.timer = setTimeout(() => failConn(c, 'timeout'), o.timeout * 1000);
  const ws = new WebSocket(url, opts);
  c.ws = ws;
  conns.push(c);
  ws.on('upgrade', () => hUpgrade.record((mono() - c.t0) * 1e6));
  ws.on('unexpected-response', (req, r) => {
    httpStatus[r.statusCode] = (httpStatus[r.statusCode] || 0) + 1;
    failConn(c, 'http_status');
  });
  ws.on('error', (e) => {
    if (c.ready) { res.ioErr++; return; }
    failConn(c, e.code === 'ECONNREFUSED' ? 'refused' : e.code ? 'connect_error' : 'bad_handshake');
  });
  ws.on('close', (code) => {
    if (c.ready && !c.done) {
      c.done = true;
      open--;
      res.closed++;
      closeCodes[code] = (closeCodes[code] || 0) + 1;
    } else if (!c.ready) {
      failConn(c, 'closed');
    }
  });
  ws.on('message', (data, isBinary) => {
    res.bytes += data.length;
    if (isBinary) { c.binNext = false; onBatch(c, data); return; }
    const s = data.toString();
    switch (s.charCodeAt(0)) {
      case 0x30: ws.send('40'); return; // "0": Engine.IO open; connect to namespace /
      case 0x32: ws.send('3'); return; // "2": Engine.IO ping
      case 0x31: return; // "1": close
      default: break;
    }
    if (s.startsWith('40')) { // Socket.IO CONNECT answered
      if (o.mode === 'query') ready(c);
      else ws.send('42' + JSON.stringify(['message', { action: 'subscribe', channel, rid: i }]));
    } else if (s.startsWith('451-')) {
      c.binNext = true; // a batch: the Buffer follows in a binary frame
    } else if (s.startsWith('42')) {
      let m = null;
      try { m = JSON.parse(s.slice(2))[1]; } catch { /* counted below */ }
      if (!c.ready) {
        if (m && m.type === 'ack') ready(c);
        else if (m && m.type === 'error') failConn(c, 'subscribe_error');
        else failConn(c, 'bad_handshake');
      } else if (m && m.type === 'batch') {
        onBatch(c, Buffer.from(JSON.stringify(m)));
      }
    } else if (s.startsWith('44')) {
      failConn(c, 'bad_handshake');
    }
  });
}

function startMore() {
  while (inflight < o.concurrency && next < o.n) open1(next++);
  if (!rampDone && next === o.n && inflight === 0) {
    rampDone = true;
    measureStart = mono();
    atMeasure = { frames: res.frames, messages: res.messages, bytes: res.bytes };
    if (!o.quiet)
      console.error(`loadgen: ${res.opened} of ${o.n} connections ready in ${(measureStart - firstConnect).toFixed(3)}s (${res.failed} failed)`);
    if (o.duration > 0) setTimeout(finish, o.duration * 1000);
  }
}

let last = { t: mono(), frames: 0, messages: 0, bytes: 0 };
function report() {
  const t = mono(), dt = t - last.t;
  let line = `t=${Math.round(t - t0)}s conns=${open} frames/s=${Math.round((res.frames - last.frames) / dt)}` +
    ` msgs/s=${Math.round((res.messages - last.messages) / dt)} bytes/s=${Math.round((res.bytes - last.bytes) / dt)}` +
    ` lat_p50=${(hLatIv.quantile(0.5) / 1000).toFixed(1)}ms lat_p99=${(hLatIv.quantile(0.99) / 1000).toFixed(1)}ms` +
    ` lag_p99=0.0ms closed=${res.closed} errors=${res.failed + res.protoErr + res.ioErr + res.bad}`;
  if (!rampDone) line += ` connecting=${inflight + (o.n - next)}`;
  console.error(line);
  last = { t, frames: res.frames, messages: res.messages, bytes: res.bytes };
  hLatIv = new Hist();
}

function finish() {
  const t = mono();
  if (!rampDone) { measureStart = t0; atMeasure = { frames: 0, messages: 0, bytes: 0 }; }
  const win = t - measureStart;
  const summary = {
    tool: 'loadgen', processes: 1,
    config: { client: 'sio-load', url: o.url, connections: o.n, concurrency: o.concurrency, channels: o.k,
              prefix: o.prefix, subscribe_mode: o.mode, duration_s: o.duration, sample: o.sample,
              source_ips: o.sourceIps, idle: o.idle },
    elapsed_s: Math.round((t - t0) * 1000) / 1000, measure_s: Math.round(win * 1000) / 1000,
    connections: { target: o.n, opened: res.opened, failed: res.failed, closed: res.closed, open_at_end: open,
                   failures: fail, http_status: httpStatus },
    handshake: { all_connected_s: Math.round(((rampDone ? measureStart : t) - firstConnect) * 1000) / 1000,
                 upgrade: hUpgrade.json(), ready: hReady.json() },
    received: { frames: res.frames, messages: res.messages, bytes: res.bytes, payload_bytes: res.payload,
                frames_per_s: win > 0 ? Math.round((res.frames - atMeasure.frames) / win * 10) / 10 : 0,
                messages_per_s: win > 0 ? Math.round((res.messages - atMeasure.messages) / win * 10) / 10 : 0,
                bytes_per_s: win > 0 ? Math.round((res.bytes - atMeasure.bytes) / win) : 0,
                sampled_frames: res.sampled, bad_frames: res.bad, messages_without_ts: res.noTs,
                kernel_timestamps: 0 },
    latency: hLat.json(), client_lag: new Hist().json(), close_codes: closeCodes,
    errors: { protocol: res.protoErr, io: res.ioErr },
  };
  const text = JSON.stringify(summary) + '\n';
  if (o.json) fs.writeFileSync(o.json, text); else process.stdout.write(text);
  for (const c of conns) if (c.ready && !c.done) { c.done = true; try { c.ws.terminate(); } catch { /* gone */ } }
  process.exit(res.failed > 0 ? 2 : 0);
}

if (!o.quiet) setInterval(report, o.interval * 1000);
process.on('SIGINT', finish);
process.on('SIGTERM', finish);
startMore();

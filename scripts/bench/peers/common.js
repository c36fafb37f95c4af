'use strict';
// Shared by the Node.js peers (see BENCHMARKS.md): command line, the Redis
// subscriber and the 200 ms batching rule, so that each peer file only shows
// what differs between the designs: how a batch reaches the sockets.

const Redis = require('ioredis');

// --port P --host H --redis HOST:PORT --batch-ms MS --batch-max BYTES
function parseArgs(argv) {
  const o = { host: '127.0.0.1', port: 8090, redis: '127.0.0.1:6379', batchMs: 200, batchMax: 65536 };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i], v = argv[i + 1];
    if (a === '--port') o.port = Number(v);
    else if (a === '--host') o.host = v;
    else if (a === '--redis') o.redis = v;
    else if (a === '--batch-ms') o.batchMs = Number(v);
    else if (a === '--batch-max') o.batchMax = Number(v);
    else if (a === '--nchan') o.nchan = v;
    else { console.error(`unknown option ${a}`); process.exit(2); }
    i++;
  }
  const [rh, rp] = o.redis.split(':');
  o.redisHost = rh;
  o.redisPort = Number(rp);
  return o;
}

function redisClient(o) {
  // A dedicated connection in subscriber mode, as every Redis pub/sub bridge has.
  return new Redis({ host: o.redisHost, port: o.redisPort, enableAutoPipelining: false });
}

// Pending messages per channel, and the broker's batching rule (batch.c), so
// that every system sends the same frames: one timer for all channels, armed
// by the first pending message; when it fires, 200 ms later (or 200 ms after
// the previous flush under steady load), every pending channel is flushed;
// a channel whose pending bytes reach batchMax is flushed at once. This is
// the "batch every 200 ms" of BRIEF section 1.
class Batcher {
  constructor(o, flush) {
    this.ms = o.batchMs;
    this.max = o.batchMax;
    this.flush = flush; // (channel, parts) => void
    this.pending = new Map(); // channel -> { parts, bytes }
    this.timer = null;
    this.lastFlush = 0;
  }

  add(channel, msg) {
    let p = this.pending.get(channel);
    if (p === undefined) {
      p = { parts: [], bytes: 0 };
      this.pending.set(channel, p);
      if (this.timer === null) {
        const now = Date.now();
        const due = this.lastFlush && now - this.lastFlush < 2 * this.ms
          ? this.lastFlush + this.ms : now + this.ms;
        this.timer = setTimeout(() => this.fireAll(), Math.max(0, due - now));
      }
    }
    p.parts.push(msg);
    p.bytes += msg.length;
    if (p.bytes >= this.max) {
      this.pending.delete(channel);
      this.flush(channel, p.parts);
    }
  }

  fireAll() {
    this.timer = null;
    this.lastFlush = Date.now();
    const all = this.pending;
    this.pending = new Map();
    for (const [channel, p] of all) this.flush(channel, p.parts);
  }
}

// The answer to a control message, as the broker words it (protocol/PROTOCOL.md).
function controlAnswer(m) {
  if (m === null || typeof m !== 'object' || typeof m.channel !== 'string' ||
      (m.action !== 'subscribe' && m.action !== 'unsubscribe')) {
    const e = { type: 'error', code: 'bad_request', message: 'bad control message' };
    if (m && typeof m === 'object' && 'rid' in m) e.rid = m.rid;
    return e;
  }
  const a = { type: 'ack', action: m.action, channel: m.channel };
  if ('rid' in m) a.rid = m.rid;
  return a;
}

// ?channels=a,b in a request URL.
function queryChannels(url) {
  const q = new URL(url, 'http://x').searchParams.get('channels');
  return q ? q.split(',').filter((c) => c.length > 0) : [];
}

module.exports = { parseArgs, redisClient, Batcher, controlAnswer, queryChannels };

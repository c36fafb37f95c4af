'use strict';
// The Redis side of the nginx + nchan peer. nchan reads Redis only through
// its own storage scheme (nchan_redis_pass), not plain PUBLISH, so this
// bridge PSUBSCRIBEs to every channel and POSTs each channel's batch
// ({"type":"batch",...}, the broker's rule: 200 ms or 64 KiB) to nchan's
// HTTP publisher endpoint (/pub?channel=NAME) over keep-alive connections.
// nchan then sends it to the channel's WebSocket subscribers.
//
//   node nchan-bridge.js --redis HOST:PORT --nchan HOST:PORT

const http = require('http');
const { parseArgs, redisClient, Batcher } = require('./common');

const o = parseArgs(process.argv);
const [nhost, nport] = (o.nchan || '127.0.0.1:8091').split(':');
const redis = redisClient(o);
const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
let errors = 0;

const COMMA = Buffer.from(',');
const batcher = new Batcher(o, (channel, parts) => {
  const list = [Buffer.from(`{"type":"batch","channel":${JSON.stringify(channel)},"messages":[`)];
  parts.forEach((p, i) => { if (i > 0) list.push(COMMA); list.push(p); });
  list.push(Buffer.from(']}'));
  const body = Buffer.concat(list);
  const req = http.request({ host: nhost, port: Number(nport), agent, method: 'POST',
                             path: `/pub?channel=${encodeURIComponent(channel)}`,
                             headers: { 'Content-Type': 'text/plain', 'Content-Length': body.length } },
                           (res) => { res.resume(); if (res.statusCode >= 300) errors++; });
  req.on('error', () => { errors++; });
  req.end(body);
});

redis.on('pmessageBuffer', (pattern, channel, message) => batcher.add(channel.toString(), message));
redis.psubscribe('*');
setInterval(() => { if (errors) { console.error(`nchan-bridge: ${errors} failed POSTs`); errors = 0; } }, 5000).unref();
console.error(`nchan-bridge: Redis ${o.redis} -> nchan ${nhost}:${nport}`);
process.on('SIGTERM', () => process.exit(0));

'use strict';
// Node.js + ws + ioredis, the common form: payloads arrive as strings
// (ioredis 'message'), the batch is built once per flush as a string, and
// ws.send(string) is called for each subscriber, so the batch is encoded to
// UTF-8 into a new Buffer once per client.

const { WebSocketServer } = require('ws');
const { parseArgs, redisClient, Batcher, controlAnswer, queryChannels } = require('./common');

const o = parseArgs(process.argv);
const redis = redisClient(o);
const subscribers = new Map(); // channel -> Set of sockets

const batcher = new Batcher(o, (channel, parts) => {
  const subs = subscribers.get(channel);
  if (subs === undefined) return;
  const batch = `{"type":"batch","channel":${JSON.stringify(channel)},"messages":[${parts.join(',')}]}`;
  for (const ws of subs) ws.send(batch);
});

redis.on('message', (channel, message) => batcher.add(channel, message));

function subscribe(ws, channel) {
  let subs = subscribers.get(channel);
  if (subs === undefined) {
    subs = new Set();
    subscribers.set(channel, subs);
    redis.subscribe(channel);
  }
  subs.add(ws);
  ws.channels.add(channel);
}

function unsubscribe(ws, channel) {
  const subs = subscribers.get(channel);
  ws.channels.delete(channel);
  if (subs === undefined || !subs.delete(ws) || subs.size > 0) return;
  subscribers.delete(channel);
  redis.unsubscribe(channel);
}

const wss = new WebSocketServer({ host: o.host, port: o.port, path: '/ws', backlog: 4096,
                                  perMessageDeflate: false, clientTracking: false });
wss.on('connection', (ws, req) => {
  ws.channels = new Set();
  for (const c of queryChannels(req.url)) subscribe(ws, c);
  ws.on('message', (data) => {
    let m = null;
    try { m = JSON.parse(data); } catch { /* answered as bad_request */ }
    const a = controlAnswer(m);
    if (a.type === 'ack') (a.action === 'subscribe' ? subscribe : unsubscribe)(ws, a.channel);
    ws.send(JSON.stringify(a));
  });
  ws.on('close', () => { for (const c of [...ws.channels]) unsubscribe(ws, c); });
  ws.on('error', () => {});
});
wss.on('listening', () => console.error(`ws-string: listening on ${o.host}:${o.port}`));
process.on('SIGTERM', () => process.exit(0));

'use strict';
// Node.js + ws + ioredis, the careful form: payloads stay Buffers
// (ioredis 'messageBuffer'), and each batch is concatenated once into one
// Buffer that is sent to every subscriber of the channel.

const { WebSocketServer } = require('ws');
const { parseArgs, redisClient, Batcher, controlAnswer, queryChannels } = require('./common');

const o = parseArgs(process.argv);
const redis = redisClient(o);
const subscribers = new Map(); // channel -> Set of sockets

const COMMA = Buffer.from(',');
const batcher = new Batcher(o, (channel, parts) => {
  const subs = subscribers.get(channel);
  if (subs === undefined) return;
  const list = [Buffer.from(`{"type":"batch","channel":${JSON.stringify(channel)},"messages":[`)];
  parts.forEach((p, i) => { if (i > 0) list.push(COMMA); list.push(p); });
  list.push(Buffer.from(']}'));
  const frame = Buffer.concat(list);
  for (const ws of subs) ws.send(frame, { binary: false });
});

redis.on('messageBuffer', (channel, message) => batcher.add(channel.toString(), message));

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
wss.on('listening', () => console.error(`ws-buffer: listening on ${o.host}:${o.port}`));
process.on('SIGTERM', () => process.exit(0));

'use strict';
// Node.js + socket.io v4 + ioredis: the design of BRIEF section 1. Payloads
// stay Buffers (ioredis 'messageBuffer'); every 200 ms each channel's batch
// is concatenated into one Buffer and broadcast to the channel's room
// (io.to(channel).emit('message', buffer)), which the browser decodes. Transport:
// WebSocket only (no long-polling), no compression.
//
// Wire format (Engine.IO 4 / Socket.IO 5 packets over a WebSocket at
// /socket.io/?EIO=4&transport=websocket), driven by sio-load.js:
//   client: 42["message",{"action":"subscribe","channel":"ch0","rid":1}]
//   server: 42["message",{"type":"ack","action":"subscribe","channel":"ch0","rid":1}]
//   server: 451-["message",{"_placeholder":true,"num":0}] then a binary frame
//           holding {"type":"batch","channel":"ch0","messages":[...]}
// ?channels=a,b in the connection URL subscribes at connect, as with the broker.

const http = require('http');
const { Server } = require('socket.io');
const { parseArgs, redisClient, Batcher, controlAnswer } = require('./common');

const o = parseArgs(process.argv);
const redis = redisClient(o);
const httpServer = http.createServer();
const io = new Server(httpServer, { transports: ['websocket'], serveClient: false,
                                    perMessageDeflate: false, httpCompression: false });
const subscribed = new Set(); // channels subscribed in Redis

const COMMA = Buffer.from(',');
const batcher = new Batcher(o, (channel, parts) => {
  const list = [Buffer.from(`{"type":"batch","channel":${JSON.stringify(channel)},"messages":[`)];
  parts.forEach((p, i) => { if (i > 0) list.push(COMMA); list.push(p); });
  list.push(Buffer.from(']}'));
  io.to(channel).emit('message', Buffer.concat(list));
});

redis.on('messageBuffer', (channel, message) => batcher.add(channel.toString(), message));

// A room is a channel: Redis SUBSCRIBE on its first member, UNSUBSCRIBE when
// the adapter deletes it.
io.of('/').adapter.on('delete-room', (room) => {
  if (subscribed.delete(room)) redis.unsubscribe(room);
});

function join(socket, channel) {
  socket.join(channel);
  if (!subscribed.has(channel)) {
    subscribed.add(channel);
    redis.subscribe(channel);
  }
}

io.on('connection', (socket) => {
  const q = socket.handshake.query.channels;
  if (typeof q === 'string') for (const c of q.split(',')) if (c) join(socket, c);
  socket.on('message', (m) => {
    const a = controlAnswer(m);
    if (a.type === 'ack') {
      if (a.action === 'subscribe') join(socket, a.channel);
      else socket.leave(a.channel);
    }
    socket.send(a);
  });
});

httpServer.listen({ host: o.host, port: o.port, backlog: 4096 },
                  () => console.error(`socketio: listening on ${o.host}:${o.port}`));
process.on('SIGTERM', () => process.exit(0));

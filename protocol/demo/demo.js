// demo.js: the demo page. Subscribes to one channel through broker-client.js
// and shows what arrives: a capped list (newest first) and a live chart of
// messages/s and latency. No dependencies, no build step; served by the
// broker (static_dir protocol/demo) or by nginx (docker/nginx.conf).
//
// URL parameters: ?channel=NAME (default "demo"), ?token=JWT, and ?ws=URL to
// connect somewhere else than this host's /ws.
import {connect} from './broker-client.js';

const LIST_CAP = 200;        // messages kept in the list
const WINDOW_S = 60;         // seconds the chart shows
const TEXT_CAP = 400;        // characters of a payload shown

const params = new URLSearchParams(location.search);
const channel = params.get('channel') || 'demo';
const token = params.get('token') || undefined;
const wsUrl = params.get('ws') || `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`;

const $ = (id) => document.getElementById(id);
const statusEl = $('status');
const listEl = $('messages');
$('channel').textContent = channel;
$('cap').textContent = String(LIST_CAP);
$('hint').textContent = `redis-cli PUBLISH ${channel} "{\\"ts\\":$(date +%s%3N),\\"hello\\":\\"world\\"}"`;

function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusEl.textContent = text;
}

/** A payload's "ts" as milliseconds since the epoch, or null. Microseconds
 * (about 1.7e15 today) and milliseconds (1.7e12) are told apart by size;
 * seconds (1.7e9, possibly fractional) are accepted too. */
export function tsToMs(ts) {
    if (typeof ts !== 'number' || !Number.isFinite(ts) || ts <= 0) return null;
    if (ts >= 1e14) return ts / 1000;
    if (ts >= 1e11) return ts;
    if (ts >= 1e8) return ts * 1000;
    return null;
}

// --- per-second statistics: one bucket per second, WINDOW_S of them -------

const buckets = new Map();   // second -> {count, latSum, latN, latMax}
let total = 0;

function bucket(sec) {
    let b = buckets.get(sec);
    if (!b) {
        b = {count: 0, latSum: 0, latN: 0, latMax: 0};
        buckets.set(sec, b);
        for (const k of buckets.keys()) if (k <= sec - WINDOW_S - 2) buckets.delete(k);
    }
    return b;
}

function record(messages, now) {
    const b = bucket(Math.floor(now / 1000));
    b.count += messages.length;
    total += messages.length;
    for (const m of messages) {
        const ts = m !== null && typeof m === 'object' ? tsToMs(m.ts) : null;
        if (ts === null) continue;
        const lat = Math.max(0, now - ts);
        b.latSum += lat;
        b.latN++;
        if (lat > b.latMax) b.latMax = lat;
    }
}

// --- the list: rendered once per animation frame ----------------------------

let pending = [];            // {at, m}, oldest first, not yet in the list

function enqueue(messages, now) {
    for (const m of messages) pending.push({at: now, m});
    if (pending.length > LIST_CAP * 2) pending = pending.slice(-LIST_CAP);
}

function clock(t) {
    const d = new Date(t);
    return d.toTimeString().slice(0, 8) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

function render() {
    requestAnimationFrame(render);
    if (pending.length === 0) return;
    const items = pending.slice(-LIST_CAP);
    pending = [];
    const frag = document.createDocumentFragment();
    for (let i = items.length - 1; i >= 0; i--) {
        const li = document.createElement('li');
        const time = document.createElement('time');
        time.textContent = clock(items[i].at);
        const code = document.createElement('code');
        let text = JSON.stringify(items[i].m);
        if (text.length > TEXT_CAP) text = text.slice(0, TEXT_CAP) + '…';
        code.textContent = text;
        li.append(time, code);
        frag.append(li);
    }
    listEl.prepend(frag);
    while (listEl.childElementCount > LIST_CAP) listEl.lastElementChild.remove();
    $('count').textContent = String(total);
}
requestAnimationFrame(render);

// --- the chart ------------------------------------------------------------------

const canvas = $('chart');
const ctx = canvas.getContext('2d');

function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
}

function fmt(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + 'M';
    if (v >= 1e3) return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + 'k';
    return String(Math.round(v * 10) / 10);
}

function draw() {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
        canvas.width = Math.round(w * dpr);
        canvas.height = Math.round(h * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);

    // The last WINDOW_S complete seconds, oldest first.
    const now = Math.floor(Date.now() / 1000);
    const rates = [];
    const lats = [];
    for (let s = now - WINDOW_S; s < now; s++) {
        const b = buckets.get(s);
        rates.push(b ? b.count : 0);
        lats.push(b && b.latN ? b.latSum / b.latN : null);
    }
    const last = buckets.get(now - 1);
    $('rate').textContent = fmt(last ? last.count : 0);
    $('latency').textContent = last && last.latN
        ? `${fmt(last.latSum / last.latN)} ms (max ${fmt(last.latMax)})` : '-';

    const pad = {l: 48, r: 52, t: 8, b: 20};
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    const rMax = niceMax(Math.max(4, ...rates));
    const lMax = niceMax(Math.max(0, ...lats.filter((x) => x !== null)));
    const css = getComputedStyle(document.documentElement);

    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    ctx.strokeStyle = '#eaecf0';
    ctx.fillStyle = '#667085';
    for (let i = 0; i <= 4; i++) {
        const y = pad.t + ph - (ph * i) / 4;
        ctx.beginPath();
        ctx.moveTo(pad.l, y + 0.5);
        ctx.lineTo(pad.l + pw, y + 0.5);
        ctx.stroke();
        ctx.textAlign = 'right';
        ctx.fillText(fmt((rMax * i) / 4), pad.l - 6, y + 4);
        ctx.textAlign = 'left';
        ctx.fillText(fmt((lMax * i) / 4), pad.l + pw + 6, y + 4);
    }
    ctx.textAlign = 'center';
    for (let i = 0; i <= 6; i++) ctx.fillText(i === 6 ? "now" : `-${WINDOW_S - i * 10}s`, pad.l + (pw * i) / 6, h - 4);

    const step = pw / WINDOW_S;
    ctx.fillStyle = css.getPropertyValue('--rate').trim() || '#2563eb';
    rates.forEach((r, i) => {
        const bh = (ph * r) / rMax;
        if (bh > 0) ctx.fillRect(pad.l + i * step + 1, pad.t + ph - bh, Math.max(1, step - 2), bh);
    });
    ctx.strokeStyle = css.getPropertyValue('--lat').trim() || '#d97706';
    ctx.lineWidth = 2;
    ctx.beginPath();
    let pen = false;
    lats.forEach((l, i) => {
        if (l === null) {
            pen = false;
            return;
        }
        const x = pad.l + i * step + step / 2;
        const y = pad.t + ph - (ph * l) / lMax;
        if (pen) ctx.lineTo(x, y);
        else ctx.moveTo(x, y);
        pen = true;
    });
    ctx.stroke();
    // A dot per second, so that a lone second shows too.
    ctx.fillStyle = ctx.strokeStyle;
    lats.forEach((l, i) => {
        if (l !== null) ctx.fillRect(pad.l + i * step + step / 2 - 2, pad.t + ph - (ph * l) / lMax - 2, 4, 4);
    });
}
setInterval(draw, 500);
draw();

// --- the connection ---------------------------------------------------------

const client = connect(wsUrl, {token});
let connects = 0;

client.on('open', () => {
    connects++;
    $('connects').textContent = String(connects);
    setStatus('open', 'connected, subscribing');
});
client.on('subscribed', (d) => {
    if (d.channel === channel) setStatus('subscribed', `subscribed to ${channel}`);
});
client.on('close', (d) => {
    if (!d.willReconnect) setStatus('closed', 'closed');
});
client.on('reconnecting', (d) => {
    setStatus('waiting', `disconnected; retry ${d.attempt} in ${(d.delay / 1000).toFixed(1)} s`);
});
client.on('error', (d) => {
    if (d.channel) setStatus('closed', `${d.channel}: ${d.error.message}`);
});

client.subscribe(channel, {}, (messages) => {
    const now = Date.now();
    record(messages, now);
    enqueue(messages, now);
}).catch((err) => setStatus('closed', `subscribe refused: ${err.message}`));

// For the console and for tests.
window.demo = {client, channel, wsUrl, get total() { return total; }};

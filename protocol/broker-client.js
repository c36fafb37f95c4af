// broker-client.js: the browser (and node >= 20) client of the broker's
// WebSocket protocol (PROTOCOL.md). One ES module, no dependencies; CLIENT.md
// documents it.
//
//   import {connect} from './broker-client.js';
//   const client = connect('wss://example.org/ws', {token});
//   await client.subscribe('prices', {filter: {sym: 'ACME'}}, (messages, channel) => ...);
//
// The client reconnects by itself (exponential backoff with full jitter) and
// subscribes again to every channel it holds, with its filter. On channels
// with history (published with FCALL broker_publish, PROTOCOL.md section 7)
// it keeps each channel's last offset and epoch and resumes with "since":
// what was published while it was away arrives first, or a "gap" event says
// it could not be recovered. Plain PUBLISH channels are at-most-once.

/** Reconnect schedule, in milliseconds: the delay before attempt n (from 0)
 * is uniform in [0, min(max, initial * factor^n)); a connection that stayed
 * open stableAfter ms starts the schedule over. */
export const DEFAULT_BACKOFF = Object.freeze({
    initial: 500,
    max: 30000,
    factor: 2,
    stableAfter: 10000,
});

/** The upper bound of the delay before reconnect attempt `attempt` (0 for the
 * first reconnect after a connection was lost). */
export function backoffCeiling(attempt, options = {}) {
    const {initial, max, factor} = {...DEFAULT_BACKOFF, ...options};
    // Past 2^64 the product is Infinity anyway; clamp to keep it finite.
    const c = initial * Math.pow(factor, Math.min(Math.max(attempt, 0), 64));
    return Math.min(max, c);
}

/** "Full jitter": a delay drawn uniformly from [0, ceiling), so that clients
 * dropped together by a restart do not come back together. `random` returns
 * a number in [0, 1) (Math.random by default). */
export function backoffDelay(attempt, options = {}, random = Math.random) {
    return Math.floor(random() * backoffCeiling(attempt, options));
}

/** The reconnect schedule of one client, as plain state with no timers:
 * next() gives the delay before the next attempt and counts it; opened(now)
 * and closed(now) tell it when a connection came up and went down, so that
 * one that stayed up stableAfter ms resets the count. */
export class Backoff {
    constructor(options = {}, random = Math.random) {
        this.options = {...DEFAULT_BACKOFF, ...options};
        this.random = random;
        this.attempt = 0;
        this.openedAt = null;
    }

    next() {
        const delay = backoffDelay(this.attempt, this.options, this.random);
        this.attempt++;
        return delay;
    }

    opened(now) {
        this.openedAt = now;
    }

    closed(now) {
        if (this.openedAt !== null && now - this.openedAt >= this.options.stableAfter)
            this.attempt = 0;
        this.openedAt = null;
    }

    reset() {
        this.attempt = 0;
        this.openedAt = null;
    }
}

/** The WebSocket URL to open: a relative URL is resolved against the page
 * (http: becomes ws:, https: becomes wss:), and a token goes in ?token=. */
export function socketUrl(url, token, base = globalThis.location?.href) {
    const u = new URL(url, base);
    if (u.protocol === 'http:') u.protocol = 'ws:';
    else if (u.protocol === 'https:') u.protocol = 'wss:';
    if (u.protocol !== 'ws:' && u.protocol !== 'wss:')
        throw new TypeError(`broker-client: not a WebSocket URL: ${url}`);
    if (token !== undefined && token !== null && token !== '') u.searchParams.set('token', String(token));
    return u.toString();
}

const textDecoder = typeof TextDecoder === 'function' ? new TextDecoder() : null;

/** Parses one frame from the broker: an object with a "type" ("batch", "ack"
 * or "error"), or null when it is not one. Batches keep their messages
 * parsed: `messages` is the array of payloads. */
export function parseFrame(data) {
    let text = data;
    if (typeof text !== 'string') {
        if (!textDecoder) return null;
        text = textDecoder.decode(data instanceof ArrayBuffer || ArrayBuffer.isView(data) ? data : new Uint8Array(0));
    }
    let msg;
    try {
        msg = JSON.parse(text);
    } catch {
        return null;
    }
    if (msg === null || typeof msg !== 'object' || typeof msg.type !== 'string') return null;
    if (msg.type === 'batch' && (typeof msg.channel !== 'string' || !Array.isArray(msg.messages))) return null;
    return msg;
}

/** An error answered by the broker: `code` is the protocol's code
 * ("bad_request", "bad_filter", "forbidden", "limit"...). */
export class BrokerError extends Error {
    constructor(code, message, channel) {
        super(message ? `${code}: ${message}` : code);
        this.name = 'BrokerError';
        this.code = code;
        this.channel = channel;
    }
}

const OPEN = 1;

function makeEvent(type, detail) {
    if (typeof CustomEvent === 'function') return new CustomEvent(type, {detail});
    const ev = new Event(type);
    ev.detail = detail;
    return ev;
}

/** One client: a WebSocket that is kept open, and the subscriptions that
 * must be in place on it. Events (EventTarget, or on()/off() with the
 * detail as argument):
 *   open          {url, reconnected}        a connection is up (resubscribes are sent)
 *   subscribed    {channel, filter, resubscribed, recovered, offset, epoch}
 *                                            the broker acked a subscription;
 *                                            recovered: true/false after a resume
 *                                            (undefined when none was asked)
 *   gap           {channel, offset, epoch}  a resume could not recover what was
 *                                            missed (history gone, too far, Redis
 *                                            lost it): reload the channel's state
 *   close         {code, reason, wasOpen, willReconnect}
 *   reconnecting  {attempt, delay}           the next try is in `delay` ms
 *   error         {error, channel?}         socket errors, errors the broker sent
 *                                            without a request, failed resubscribes
 */
export class BrokerClient extends EventTarget {
    #url;
    #token;
    #WebSocket;
    #backoff;
    #clock;
    #ws = null;
    #state = 'idle';
    #timer = null;
    #subs = new Map();     // channel -> {channel, filter, onMessages, waiters, acked, prev, pos}
    #pending = new Map();  // rid -> {kind, entry | resolve/reject, channel}
    #rid = 0;
    #opens = 0;
    #listeners = [];

    constructor(url, options = {}) {
        super();
        this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
        if (typeof this.#WebSocket !== 'function')
            throw new TypeError('broker-client: no WebSocket; pass {WebSocket} (e.g. from the "ws" package) on node 20');
        socketUrl(url, undefined);  // throws now on a URL that can never work
        this.#url = url;
        this.#token = options.token;
        this.#backoff = new Backoff(options.backoff, options.random);
        this.#clock = {
            now: options.clock?.now ?? (() => Date.now()),
            setTimeout: options.clock?.setTimeout ?? ((f, ms) => setTimeout(f, ms)),
            clearTimeout: options.clock?.clearTimeout ?? ((t) => clearTimeout(t)),
        };
    }

    /** idle, connecting, open, waiting (to reconnect) or closed. */
    get state() {
        return this.#state;
    }

    /** The channels subscribed (or to be subscribed once connected). */
    get channels() {
        return [...this.#subs.keys()];
    }

    /** How many connections have opened so far. */
    get connections() {
        return this.#opens;
    }

    /** Subscribes to `channel`, optionally with {filter}; onMessages(messages,
     * channel) gets the payloads of each batch, in order. Resolves when the
     * broker acks (now, or after the next connect if offline); rejects with a
     * BrokerError when it refuses, and then the previous subscription to the
     * channel, if any, stays. Subscribing again replaces the filter and the
     * callback. */
    subscribe(channel, options, onMessages) {
        if (typeof options === 'function') {
            onMessages = options;
            options = {};
        }
        options = options ?? {};
        if (typeof channel !== 'string' || channel === '')
            return Promise.reject(new TypeError('broker-client: channel must be a non-empty string'));
        if (typeof onMessages !== 'function')
            return Promise.reject(new TypeError('broker-client: subscribe needs an onMessages callback'));
        if (this.#state === 'closed')
            return Promise.reject(new Error('broker-client: closed'));
        const prev = this.#subs.get(channel);
        const entry = {
            channel,
            filter: options.filter,
            onMessages,
            waiters: [],
            acked: false,
            inflight: 0,
            prev: prev && prev.acked ? prev : prev?.prev ?? null,
            // Where this channel's history is: {offset, epoch} once known;
            // options.since resumes from a position kept elsewhere.
            pos: options.since ?? prev?.pos ?? null,
            history: options.history,
        };
        // A previous request not sent yet (offline) is answered with this one.
        if (prev && prev.inflight === 0) entry.waiters = prev.waiters.splice(0);
        this.#subs.set(channel, entry);
        const done = new Promise((resolve, reject) => entry.waiters.push({resolve, reject}));
        if (this.#isOpen()) this.#sendSubscribe(entry, false);
        else if (this.#state === 'idle') this.#open();
        return done;
    }

    /** Unsubscribes: no more batches of `channel` reach the callback from now
     * on. Resolves when the broker acks, or at once when not connected. */
    unsubscribe(channel) {
        const entry = this.#subs.get(channel);
        if (!entry) return Promise.resolve();
        this.#subs.delete(channel);
        this.#settle(entry, new Error('broker-client: unsubscribed before the broker acked'));
        if (!this.#isOpen()) return Promise.resolve();
        return new Promise((resolve, reject) => {
            const rid = ++this.#rid;
            this.#pending.set(rid, {kind: 'unsubscribe', channel, resolve, reject});
            this.#send({action: 'unsubscribe', channel, rid});
        });
    }

    /** Closes the connection for good: no reconnect. Pending subscribes are
     * rejected. */
    close(code = 1000, reason = '') {
        if (this.#state === 'closed') return;
        const wasOpen = this.#isOpen();
        this.#state = 'closed';
        if (this.#timer !== null) this.#clock.clearTimeout(this.#timer);
        this.#timer = null;
        const ws = this.#ws;
        this.#ws = null;
        if (ws) {
            this.#detach(ws);
            try {
                ws.close(code, reason);
            } catch {
                // already closing
            }
        }
        const err = new Error('broker-client: closed');
        for (const entry of this.#subs.values()) this.#settle(entry, err);
        this.#failPending(err);
        this.#subs.clear();
        this.#emit('close', {code, reason, wasOpen, willReconnect: false});
    }

    /** Listens to an event with the detail as argument; returns this. */
    on(type, fn) {
        const listener = (ev) => fn(ev.detail, ev);
        this.#listeners.push({type, fn, listener});
        this.addEventListener(type, listener);
        return this;
    }

    off(type, fn) {
        const i = this.#listeners.findIndex((l) => l.type === type && l.fn === fn);
        if (i >= 0) {
            this.removeEventListener(type, this.#listeners[i].listener);
            this.#listeners.splice(i, 1);
        }
        return this;
    }

    /** Opens the first connection (connect() calls it). */
    start() {
        if (this.#state === 'idle') this.#open();
        return this;
    }

    // --- internals ---------------------------------------------------------

    #isOpen() {
        return this.#state === 'open' && this.#ws !== null && this.#ws.readyState === OPEN;
    }

    #emit(type, detail) {
        this.dispatchEvent(makeEvent(type, detail));
    }

    async #open() {
        this.#state = 'connecting';
        this.#timer = null;
        let token = this.#token;
        try {
            if (typeof token === 'function') token = await token();
        } catch (error) {
            this.#emit('error', {error});
            token = undefined;
        }
        if (this.#state !== 'connecting') return;  // closed meanwhile
        let ws;
        try {
            ws = new this.#WebSocket(socketUrl(this.#url, token));
        } catch (error) {
            this.#emit('error', {error});
            this.#scheduleReconnect();
            return;
        }
        try {
            ws.binaryType = 'arraybuffer';
        } catch {
            // not every implementation lets it be set
        }
        this.#ws = ws;
        ws.onopen = () => this.#onOpen(ws);
        ws.onmessage = (ev) => this.#onMessage(ws, ev);
        ws.onerror = (ev) => {
            if (ws === this.#ws) this.#emit('error', {error: ev?.error ?? new Error('broker-client: WebSocket error')});
        };
        ws.onclose = (ev) => this.#onClose(ws, ev);
    }

    #detach(ws) {
        // No-ops rather than null: the "ws" package throws an error event
        // that has no listener.
        const ignore = () => {};
        ws.onopen = ws.onmessage = ws.onerror = ws.onclose = ignore;
    }

    #onOpen(ws) {
        if (ws !== this.#ws) return;
        this.#state = 'open';
        this.#opens++;
        this.#backoff.opened(this.#clock.now());
        // Every subscription again, with its filter: the broker forgot them
        // with the last connection.
        for (const entry of this.#subs.values()) this.#sendSubscribe(entry, this.#opens > 1);
        this.#emit('open', {url: socketUrl(this.#url), reconnected: this.#opens > 1});
    }

    #onClose(ws, ev) {
        if (ws !== this.#ws) return;
        this.#detach(ws);
        this.#ws = null;
        const wasOpen = this.#state === 'open';
        if (wasOpen) this.#backoff.closed(this.#clock.now());
        // Requests in flight died with the connection. Subscriptions stay in
        // #subs, their waiters with them, and are sent again on the next
        // open; the waiters of a replaced request go to its replacement.
        for (const p of this.#pending.values()) {
            if (p.kind === 'unsubscribe') {
                p.resolve();  // the connection's end did it
                continue;
            }
            p.entry.inflight = 0;
            const current = this.#subs.get(p.entry.channel);
            if (current && current !== p.entry) current.waiters.push(...p.entry.waiters.splice(0));
            else if (!current) this.#settle(p.entry, new Error('broker-client: unsubscribed before the broker acked'));
        }
        this.#pending.clear();
        for (const entry of this.#subs.values()) {
            entry.acked = false;
            entry.inflight = 0;
        }
        this.#emit('close', {code: ev?.code ?? 1006, reason: ev?.reason ?? '', wasOpen, willReconnect: true});
        if (this.#state !== 'closed') this.#scheduleReconnect();
    }

    #scheduleReconnect() {
        this.#state = 'waiting';
        const attempt = this.#backoff.attempt;
        const delay = this.#backoff.next();
        this.#emit('reconnecting', {attempt: attempt + 1, delay});
        if (this.#state !== 'waiting') return;  // a listener closed the client
        this.#timer = this.#clock.setTimeout(() => this.#open(), delay);
    }

    #send(obj) {
        try {
            this.#ws.send(JSON.stringify(obj));
            return true;
        } catch (error) {
            this.#emit('error', {error});
            return false;
        }
    }

    #sendSubscribe(entry, resubscribed) {
        const rid = ++this.#rid;
        const msg = {action: 'subscribe', channel: entry.channel, rid};
        if (entry.filter !== undefined && entry.filter !== null) msg.filter = entry.filter;
        // Back after a connection was lost (or told where to start): what
        // was missed first. Otherwise history N, the first time only.
        const since = entry.pos && (resubscribed || !entry.acked) ? entry.pos : null;
        if (since) msg.since = {offset: since.offset, epoch: since.epoch};
        else if (entry.history > 0 && !resubscribed) msg.history = entry.history;
        this.#pending.set(rid, {kind: 'subscribe', entry, resubscribed, since: !!since});
        entry.inflight++;
        this.#send(msg);
    }

    #settle(entry, error) {
        const waiters = entry.waiters;
        entry.waiters = [];
        for (const w of waiters) error ? w.reject(error) : w.resolve();
    }

    #failPending(error) {
        for (const p of this.#pending.values()) {
            if (p.kind === 'unsubscribe') p.resolve();
            else this.#settle(p.entry, error);
        }
        this.#pending.clear();
    }

    #onMessage(ws, ev) {
        if (ws !== this.#ws) return;
        const msg = parseFrame(ev.data);
        if (!msg) {
            this.#emit('error', {error: new Error('broker-client: unreadable frame from the broker')});
            return;
        }
        if (msg.type === 'batch') {
            const entry = this.#subs.get(msg.channel);
            if (!entry) return;  // unsubscribed, the broker had it in flight
            if (typeof msg.offset === 'number' && typeof msg.epoch === 'string')
                entry.pos = {offset: msg.offset, epoch: msg.epoch};
            try {
                entry.onMessages(msg.messages, msg.channel);
            } catch (error) {
                this.#emit('error', {error, channel: msg.channel});
            }
            return;
        }
        const p = typeof msg.rid === 'number' ? this.#pending.get(msg.rid) : undefined;
        if (!p) {
            if (msg.type === 'error')
                this.#emit('error', {error: new BrokerError(msg.code, msg.message, msg.channel)});
            return;
        }
        this.#pending.delete(msg.rid);
        if (p.kind === 'unsubscribe') {
            if (msg.type === 'ack') p.resolve();
            else p.reject(new BrokerError(msg.code, msg.message, p.channel));
            return;
        }
        const entry = p.entry;
        entry.inflight--;
        const current = this.#subs.get(entry.channel) === entry;
        if (msg.type === 'ack') {
            if (current) {
                entry.acked = true;
                entry.prev = null;
                const recovered = p.since ? msg.recovered === true : undefined;
                // The ack says where the channel is now (what follows is
                // what arrives): a failed resume starts from there.
                if (typeof msg.offset === 'number' && typeof msg.epoch === 'string' &&
                    (!entry.pos || recovered === false || entry.pos.epoch !== msg.epoch ||
                     entry.pos.offset < msg.offset && !p.since))
                    entry.pos = {offset: msg.offset, epoch: msg.epoch};
                this.#emit('subscribed', {channel: entry.channel, filter: entry.filter, resubscribed: p.resubscribed,
                                          recovered, offset: msg.offset, epoch: msg.epoch});
                if (recovered === false)
                    this.#emit('gap', {channel: entry.channel, offset: msg.offset, epoch: msg.epoch});
            }
            this.#settle(entry, null);
            return;
        }
        const error = new BrokerError(msg.code, msg.message, entry.channel);
        if (current && p.resubscribed && msg.code === 'limit') {
            // Too many control messages at once (many channels to restore):
            // try this one again in a second.
            this.#clock.setTimeout(() => {
                if (this.#subs.get(entry.channel) === entry && this.#isOpen()) this.#sendSubscribe(entry, true);
            }, 1000);
            return;
        }
        if (current) {
            // The broker left the channel as it was: the previous acked
            // subscription, if any, or none.
            if (entry.prev) this.#subs.set(entry.channel, entry.prev);
            else this.#subs.delete(entry.channel);
        }
        if (p.resubscribed) this.#emit('error', {error, channel: entry.channel});
        this.#settle(entry, error);
    }
}

/** Creates a client and opens its connection. subscribe() takes {filter,
 * history: N (the last N messages first), since: {offset, epoch} (resume
 * from a position saved elsewhere)}. Options: token (a string, or
 * a function returning one or a promise of one, called before each
 * connect), WebSocket (the constructor to use; default the global one),
 * backoff ({initial, max, factor, stableAfter} in ms). */
export function connect(url, options = {}) {
    return new BrokerClient(url, options).start();
}

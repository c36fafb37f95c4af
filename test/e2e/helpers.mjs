// Helpers for the node tests: free ports, real redis-server and broker
// processes (killed by PID), redis-cli, and polling. Everything listens on
// 127.0.0.1 on ports chosen free at runtime.
import {spawn, execFile} from 'node:child_process';
import {mkdtempSync, rmSync, writeFileSync, readFileSync, openSync, closeSync} from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BROKER_BIN = path.resolve(process.env.BROKER_BIN || path.join(ROOT, 'build', 'broker'));
export const HOST = '127.0.0.1';

export function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.unref();
        srv.on('error', reject);
        srv.listen(0, HOST, () => {
            const {port} = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

export function tmpDir(prefix) {
    return mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function removeDir(dir) {
    rmSync(dir, {recursive: true, force: true});
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `pred` (sync or async) until it returns a truthy value, which is
 * returned; throws after `timeout` ms naming `what`. */
export async function waitFor(pred, {timeout = 10000, interval = 50, what = 'condition'} = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
        let v;
        try {
            v = await pred();
        } catch {
            v = false;
        }
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
        await sleep(interval);
    }
}

/** Runs a command to completion, bounded in time; resolves {code, stdout, stderr}. */
export function run(cmd, args, {env, timeout = 60000} = {}) {
    return new Promise((resolve) => {
        execFile(cmd, args, {env: {...process.env, ...env}, timeout, cwd: ROOT, maxBuffer: 1 << 24},
            (err, stdout, stderr) => resolve({code: err ? (err.code ?? 1) : 0, stdout, stderr}));
    });
}

export async function redisCli(port, ...args) {
    const r = await run('redis-cli', ['-h', HOST, '-p', String(port), ...args], {timeout: 10000});
    if (r.code !== 0) throw new Error(`redis-cli ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
}

export async function publish(port, channel, payload) {
    return Number(await redisCli(port, 'PUBLISH', channel, typeof payload === 'string' ? payload : JSON.stringify(payload)));
}

/** Subscribers Redis counts on `channel` (the broker's links, one per worker). */
export async function numsub(port, channel) {
    const out = (await redisCli(port, 'PUBSUB', 'NUMSUB', channel)).split('\n');
    return Number(out[1]);
}

const live = new Set();

/** Kills every process started here that is still running (by PID). */
export function killAll() {
    for (const p of live) {
        try {
            process.kill(p.pid, 'SIGKILL');
        } catch {
            // gone
        }
        live.delete(p);
    }
}
process.on('exit', killAll);

function track(p) {
    live.add(p);
    p.on('exit', () => live.delete(p));
    return p;
}

function exited(p) {
    return p.exitCode !== null || p.signalCode !== null;
}

export async function stopProc(p, signal = 'SIGTERM', timeout = 15000) {
    if (exited(p)) return;
    const done = new Promise((r) => p.once('exit', r));
    p.kill(signal);
    const t = setTimeout(() => p.kill('SIGKILL'), timeout);
    await done;
    clearTimeout(t);
    live.delete(p);
}

export async function startRedis(dir) {
    const port = await freePort();
    const p = track(spawn('redis-server', ['--port', String(port), '--bind', HOST, '--save', '',
        '--appendonly', 'no', '--dir', dir], {stdio: 'ignore'}));
    await waitFor(async () => (await redisCli(port, 'PING')) === 'PONG', {what: 'redis-server'});
    return {port, proc: p, stop: () => stopProc(p)};
}

/** Starts build/broker with `cfg` (key -> value) on a free port (or
 * cfg.port), waits for /healthz. */
export async function startBroker(dir, redisPort, cfg = {}) {
    const port = cfg.port ?? await freePort();
    const conf = {
        listen: `${HOST}:${port}`,
        redis_url: `redis://${HOST}:${redisPort}`,
        workers: 1,
        batch_interval_ms: 20,
        log_level: 'warn',
        ...cfg,
    };
    delete conf.port;
    const file = path.join(dir, `broker-${port}.conf`);
    writeFileSync(file, Object.entries(conf).map(([k, v]) => `${k} ${v}`).join('\n') + '\n');
    const log = openSync(path.join(dir, `broker-${port}.log`), 'a');
    const p = track(spawn(BROKER_BIN, ['-c', file], {stdio: ['ignore', log, log]}));
    closeSync(log);
    await waitFor(async () => (await fetch(`http://${HOST}:${port}/healthz`)).status === 200,
        {what: `broker on port ${port}`});
    return {port, proc: p, url: `ws://${HOST}:${port}/ws`, stop: (sig) => stopProc(p, sig)};
}

/** scripts/stack.sh with `env`; rejects when it fails. */
export async function stack(cmd, env, timeout = 90000) {
    const r = await run(path.join(ROOT, 'scripts', 'stack.sh'), [cmd], {env, timeout});
    if (r.code !== 0) throw new Error(`stack.sh ${cmd} exited ${r.code}:\n${r.stderr}`);
    return r;
}

export function readPid(file) {
    try {
        return Number(readFileSync(file, 'utf8').trim()) || null;
    } catch {
        return null;
    }
}

/** True while `pid` is a live (non-zombie) process. */
export function pidAlive(pid) {
    try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
    } catch {
        return false;
    }
}

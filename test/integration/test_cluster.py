"""Cluster mode (broker.conf.example: redis_mode cluster, redis_cluster_nodes,
cluster_pubsub; broker/cluster.h) against a real Redis Cluster of three
primaries and three replicas (redis-cli --cluster create): sharded delivery
on every shard from two broker processes, exact SSUBSCRIBE/SUNSUBSCRIBE
bookkeeping on the shards, global mode, /healthz, a lost shard connection,
an unresponsive seed, slots moving to another primary, a primary failing
over to its replica.

The cluster is shared by the module. Tests that move a slot or kill a node
come after those that leave it as it was, and the failover test is last."""
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import time
import uuid

import pytest

import helpers
from helpers import (SLOW, RedisError, RespConn, http_request, kill_proc, parse_batch,
                     recv_json, redis_command, run, send_json, subscribe, tmpdir, wait_until,
                     ws_connect)

NODE_TIMEOUT_MS = 1000


# ---------------------------------------------------------------------------
# The cluster.

def crc16(data):
    """CRC16/XMODEM, as Redis's crc16.c."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def key_slot(name):
    b = name.encode() if isinstance(name, str) else name
    i = b.find(b"{")
    if i >= 0:
        j = b.find(b"}", i + 1)
        if j > i + 1:
            b = b[i + 1:j]
    return crc16(b) & 16383


class Node:
    """One cluster-enabled redis-server."""

    def __init__(self, port, d):
        self.port = port
        self.dir = d
        self.log_path = os.path.join(d, "redis-%d.log" % port)
        self.proc = None
        self.id = None

    def start(self):
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [helpers.REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes-%d.conf" % self.port,
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        logf.close()
        helpers.LIVE.add(self.proc)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("redis-server %d exited with %s:\n%s" % (
                self.port, self.proc.returncode, open(self.log_path).read()[-3000:]))
        try:
            return redis_command(self.port, "PING", timeout=1) == "PONG"
        except OSError:
            return False

    def cmd(self, *args, timeout=5.0):
        return redis_command(self.port, *args, timeout=timeout)

    def kill9(self):
        """kill -9, by PID."""
        p, self.proc = self.proc, None
        os.kill(p.pid, signal.SIGKILL)
        kill_proc(p)

    def stop(self):
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        kill_proc(p)


def info_field(text, field):
    m = re.search(r"^%s:(.*?)\r?$" % re.escape(field), text, re.M)
    return m.group(1) if m else None


def port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def cluster_ports(n):
    """n ports P, each with P + 10000 (its cluster bus port) free too. Both
    stay under the ephemeral range (32768 up) so that no outgoing connection
    takes them meanwhile; Redis wants P <= 55535 anyway."""
    out = []
    while len(out) < n:
        p = random.randrange(12000, 22000)
        if p not in out and p + 10000 not in out and port_free(p) and port_free(p + 10000):
            out.append(p)
    return out


class Cluster:
    def __init__(self):
        self.dir = tmpdir("cluster-")
        self.nodes = [Node(p, self.dir) for p in cluster_ports(6)]
        # Seeds for the brokers: two of the nodes (`--cluster create` makes
        # the first three primaries).
        self.seeds = ",".join("127.0.0.1:%d" % n.port for n in self.nodes[:2])

    def start(self):
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            wait_until(n.ready, 15, what="cluster node %d up" % n.port)
        p = subprocess.Popen(
            ["redis-cli", "--cluster", "create"] + ["127.0.0.1:%d" % n.port for n in self.nodes]
            + ["--cluster-replicas", "1", "--cluster-yes"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        helpers.LIVE.add(p)
        try:
            out = p.communicate(timeout=60)[0].decode("utf-8", "replace")
        finally:
            kill_proc(p)
        assert p.returncode == 0 and "All 16384 slots covered" in out, out
        for n in self.nodes:
            n.id = n.cmd("CLUSTER", "MYID").decode()
        self.wait_healthy(30)
        return self

    def live(self):
        return [n for n in self.nodes if n.alive()]

    def node(self, port):
        return next(n for n in self.nodes if n.port == port)

    def wait_healthy(self, timeout):
        """cluster_state:ok on every live node, every live node knowing the
        same three primaries with all 16384 slots, and every replica linked
        to its primary."""
        def ok():
            for n in self.live():
                if info_field(n.cmd("CLUSTER", "INFO").decode(), "cluster_state") != "ok":
                    return False
                if info_field(n.cmd("CLUSTER", "INFO").decode(), "cluster_slots_ok") != "16384":
                    return False
                for line in n.cmd("CLUSTER", "NODES").decode().splitlines():
                    f = line.split()
                    if ("fail" in f[2] or "handshake" in f[2] or f[7] != "connected") \
                            and self.node_alive_by_id(f[0]):
                        return False
                role = info_field(n.cmd("INFO", "replication").decode(), "role")
                if role == "slave" and info_field(n.cmd("INFO", "replication").decode(),
                                                  "master_link_status") != "up":
                    return False
            views = {tuple(sorted(self.slot_map(n.port))) for n in self.live()}
            return len(views) == 1
        wait_until(ok, timeout, interval=0.2, what="the cluster healthy and agreed on its slots")

    def node_alive_by_id(self, nid):
        return any(n.id == nid and n.alive() for n in self.nodes)

    def slot_map(self, port):
        """[(lo, hi, primary port)] as node `port` sees it (CLUSTER SLOTS;
        its replica lists leave out replicas that have not replicated
        anything yet, so they are not used)."""
        return [(e[0], e[1], e[2][1]) for e in redis_command(port, "CLUSTER", "SLOTS")]

    def any_live_port(self):
        return self.live()[0].port

    def owner(self, slot, port=None):
        for lo, hi, prim in self.slot_map(port or self.any_live_port()):
            if lo <= slot <= hi:
                return prim
        raise AssertionError("slot %d has no owner" % slot)

    def primaries(self, port=None):
        return sorted({prim for _, _, prim in self.slot_map(port or self.any_live_port())})

    def replicas_of(self, primary_port):
        """The ports of the replicas of a primary, from its CLUSTER NODES."""
        pid = self.node(primary_port).id
        out = []
        for line in redis_command(primary_port, "CLUSTER", "NODES").decode().splitlines():
            f = line.split()
            if "slave" in f[2] and f[3] == pid:
                out.append(int(re.match(r"[^:]*:(\d+)", f[1]).group(1)))
        return sorted(out)

    def stop(self):
        for n in self.nodes:
            n.stop()


def cluster_call(port, *args, hops=5, timeout=5.0):
    """A command sent to node `port`, following MOVED redirections."""
    for _ in range(hops):
        with RespConn(port, timeout) as c:
            c.send(*args)
            r = c.read_reply()
        if isinstance(r, RedisError):
            m = re.match(r"MOVED \d+ [^ ]*:(\d+)$", str(r))
            if m:
                port = int(m.group(1))
                continue
            raise r
        return r
    raise AssertionError("more than %d redirections for %r" % (hops, args))


def spublish(port, channel, payload):
    """SPUBLISH through node `port` (redirected to the slot's owner); the
    reply is the number of subscribed connections on that shard."""
    r = cluster_call(port, "SPUBLISH", channel, payload)
    assert isinstance(r, int), r
    return r


def shardnumsub(port, channel):
    r = redis_command(port, "PUBSUB", "SHARDNUMSUB", channel)
    return int(r[1])


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


def cluster_broker(make_broker, cluster, mode="sharded", **cfg):
    cfg.setdefault("batch_interval_ms", 0)
    return make_broker(cluster.nodes[0].port, redis_mode="cluster",
                       redis_cluster_nodes=cluster.seeds, cluster_pubsub=mode, **cfg)


def channels_per_primary(cluster, prefix):
    """{primary port: channel name} with one name in each primary's slots;
    each name's slot checked against CLUSTER KEYSLOT."""
    prims = cluster.primaries()
    assert len(prims) == 3, cluster.slot_map(cluster.any_live_port())
    out = {}
    tag = uuid.uuid4().hex[:8]
    i = 0
    while len(out) < 3:
        name = "%s-%s-%d" % (prefix, tag, i)
        i += 1
        owner = cluster.owner(key_slot(name))
        if owner not in out:
            out[owner] = name
    for name in out.values():
        assert cluster.node(prims[0]).cmd("CLUSTER", "KEYSLOT", name) == key_slot(name)
    return out


def wait_shardnumsub(cluster, channel, n, timeout=15.0):
    """Until the primary owning `channel`'s slot counts n subscribed
    connections (one per broker: each runs one worker)."""
    def ok():
        return shardnumsub(cluster.owner(key_slot(channel)), channel) == n
    wait_until(ok, timeout * SLOW, interval=0.1,
               what="PUBSUB SHARDNUMSUB %s == %d on its primary" % (channel, n))


async def expect_silence(ws, seconds, who=""):
    try:
        text = await asyncio.wait_for(ws.recv(), seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError("client %s got an unexpected frame: %s" % (who, text[:300]))


async def receive_pairs(ws, n, timeout, who=""):
    """n messages as (channel, raw message text), in arrival order."""
    got = []
    deadline = time.monotonic() + timeout * SLOW
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("client %s got %d of %d messages: %r" % (who, len(got), n, got))
        text = await asyncio.wait_for(ws.recv(), left)
        ch, msgs = parse_batch(text)
        got.extend((ch, m) for m in msgs)
    return got


async def publish_until_received(cluster, ws, channel, timeout, via=None):
    """SPUBLISHes a fresh probe on `channel` every 0.3 s (through any live
    node, redirections followed; errors while the cluster settles are
    tolerated) until one arrives on ws; returns what arrived."""
    deadline = time.monotonic() + timeout
    sent = set()
    i = 0
    errors = []
    while time.monotonic() < deadline:
        probe = '{"probe":%d}' % i
        i += 1
        live = cluster.live()
        port = via or live[i % len(live)].port
        try:
            spublish(port, channel, probe)
            sent.add(probe)
        except (OSError, RedisError, AssertionError) as e:
            errors.append(str(e))
        try:
            text = await asyncio.wait_for(ws.recv(), 0.3)
        except asyncio.TimeoutError:
            continue
        ch, msgs = parse_batch(text)
        assert ch == channel and set(msgs) <= sent, (ch, msgs, sent)
        return msgs
    raise AssertionError("nothing delivered on %r within %.0f s (publish errors: %r)"
                         % (channel, timeout, errors[-5:]))


def metric(broker, name):
    r = http_request(broker.port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", timeout=5)
    assert r.status == 200, r
    total = 0
    found = False
    for line in r.body.decode().splitlines():
        m = re.match(r"^%s(\{[^}]*\})? (\d+)$" % re.escape(name), line)
        if m:
            found = True
            total += int(m.group(2))
    assert found, "no %s in /metrics:\n%s" % (name, r.body.decode()[:3000])
    return total


# ---------------------------------------------------------------------------
# Tests that leave the cluster as it was.

@pytest.mark.timeout(120)
def test_healthz_200_with_cluster_up(cluster, make_broker):
    b = cluster_broker(make_broker, cluster)
    assert b.healthz()[0] == 200
    chans = channels_per_primary(cluster, "hz")

    async def body():
        ws = await ws_connect(b.port, "/ws?channels=" + ",".join(chans.values()))
        try:
            for ch in chans.values():
                wait_shardnumsub(cluster, ch, 1)
            # Every shard holding a channel is connected: still up.
            assert b.healthz()[0] == 200
            assert metric(b, "broker_redis_up") == 1
        finally:
            await ws.close()
    run(body(), timeout=100)
    g = cluster_broker(make_broker, cluster, mode="global")
    assert g.healthz()[0] == 200


@pytest.mark.timeout(120)
def test_sharded_two_brokers_every_shard_exact_fanout(cluster, make_broker):
    """Two broker processes, four clients, channels on all three shards plus
    two hash-tag names sharing a slot: each SPUBLISH reaches exactly the
    clients subscribed to its channel, on both brokers, byte for byte, and
    no one else."""
    b1 = cluster_broker(make_broker, cluster)
    b2 = cluster_broker(make_broker, cluster)
    per = channels_per_primary(cluster, "fan")
    s1, s2, s3 = [per[p] for p in sorted(per)]
    tag = "{u%s}" % uuid.uuid4().hex[:8]
    ha, hb = tag + ".a", tag + ".b"
    assert key_slot(ha) == key_slot(hb)
    anyn = cluster.node(cluster.any_live_port())
    assert anyn.cmd("CLUSTER", "KEYSLOT", ha) == anyn.cmd("CLUSTER", "KEYSLOT", hb) == key_slot(ha)
    # Which client (broker, name) subscribes to what.
    plan = {
        "x@b1": (b1, [s1, ha]),
        "y@b1": (b1, [s2, s3]),
        "z@b2": (b2, [s1, hb, s3]),
        "w@b2": (b2, [s2, ha]),
    }
    subscribers = {}
    for who, (b, chans) in plan.items():
        for ch in chans:
            subscribers.setdefault(ch, set()).add(who)
    brokers_on = {ch: len({id(plan[w][0]) for w in whos}) for ch, whos in subscribers.items()}
    # Payloads: JSON with its own whitespace, non-JSON text, UTF-8, a
    # string, invalid UTF-8; two per channel so order shows too.
    payloads = {
        s1: [b'{ "shard" : 1 ,\n\t"v":[1, 2.50e1 ,"\xc3\xa9"] }', b"plain text one"],
        s2: [b"[ 2 , { } ]", b'"two"'],
        s3: [b"3.0e-2", b"bad \xff utf8"],
        ha: [b'{"tag":"a"}', b" true "],
        hb: [b'{"tag":"b"}', b"null"],
    }
    expected_raw = {
        b'{ "shard" : 1 ,\n\t"v":[1, 2.50e1 ,"\xc3\xa9"] }': '{ "shard" : 1 ,\n\t"v":[1, 2.50e1 ,"\u00e9"] }',
        b"plain text one": '"plain text one"',
        b"[ 2 , { } ]": "[ 2 , { } ]",
        b'"two"': '"two"',
        b"3.0e-2": "3.0e-2",
        b"bad \xff utf8": '"bad \ufffd utf8"',
        b'{"tag":"a"}': '{"tag":"a"}',
        b" true ": " true ",
        b'{"tag":"b"}': '{"tag":"b"}',
        b"null": "null",
    }

    async def body():
        clients = {}
        try:
            for who, (b, chans) in plan.items():
                ws = await ws_connect(b.port)
                clients[who] = ws
                for i, ch in enumerate(chans):
                    await subscribe(ws, ch, rid=i)
            for ch, n in brokers_on.items():
                wait_shardnumsub(cluster, ch, n)
            # Publish through one node only: redirections lead each SPUBLISH
            # to the slot's owner. Each reaches one connection per broker.
            via = cluster.nodes[0].port
            for ch, pls in payloads.items():
                for p in pls:
                    assert spublish(via, ch, p) == brokers_on[ch], (ch, p)
            for who, ws in clients.items():
                chans = plan[who][1]
                want = sorted((ch, expected_raw[p]) for ch in chans for p in payloads[ch])
                got = await receive_pairs(ws, len(want), 10, who)
                assert sorted(got) == want, (who, got)
                # Within a channel, Redis order.
                for ch in chans:
                    assert [m for c, m in got if c == ch] == \
                        [expected_raw[p] for p in payloads[ch]], (who, ch, got)
            # Nobody gets anything more (nothing for channels it did not ask).
            await asyncio.gather(*(expect_silence(ws, 1.0 * SLOW, who)
                                   for who, ws in clients.items()))
        finally:
            for ws in clients.values():
                await ws.close()
    run(body(), timeout=100)


@pytest.mark.timeout(120)
def test_unsubscribe_and_disconnect_sunsubscribe_on_the_shard(cluster, make_broker):
    b = cluster_broker(make_broker, cluster)
    per = channels_per_primary(cluster, "uns")
    a, c = list(per.values())[:2]

    async def body():
        ws = await ws_connect(b.port)
        ws2 = await ws_connect(b.port, "/ws?channels=" + c)
        try:
            await subscribe(ws, a)
            wait_shardnumsub(cluster, a, 1)
            wait_shardnumsub(cluster, c, 1)
            await subscribe(ws, a, action="unsubscribe")
            wait_shardnumsub(cluster, a, 0)
            assert spublish(cluster.nodes[0].port, a, "1") == 0
            await ws2.close()
            wait_shardnumsub(cluster, c, 0)
            # And back.
            await subscribe(ws, a)
            wait_shardnumsub(cluster, a, 1)
            assert spublish(cluster.nodes[0].port, a, "2") == 1
            got = await receive_pairs(ws, 1, 10)
            assert got == [(a, "2")]
        finally:
            await ws.close()
            await ws2.close()
    run(body(), timeout=100)


@pytest.mark.timeout(120)
def test_global_mode_receives_publish_from_any_node(cluster, make_broker):
    """cluster_pubsub global: one plain SUBSCRIBE on one node; PUBLISH on any
    node (primaries and replicas) is broadcast over the cluster bus."""
    b = cluster_broker(make_broker, cluster, mode="global")
    ch = helpers.uniq("glob")

    async def body():
        ws = await ws_connect(b.port)
        try:
            await subscribe(ws, ch, rid="g")

            def subscribed_on():
                return [n.port for n in cluster.live()
                        if int(n.cmd("PUBSUB", "NUMSUB", ch)[1]) >= 1]
            where = wait_until(subscribed_on, 15 * SLOW, what="broker SUBSCRIBEd somewhere")
            assert len(where) == 1, where
            sent = []
            for i, n in enumerate(cluster.live()):
                p = '{"from":%d, "i":%d}' % (n.port, i)
                # PUBLISH answers with the receivers on that node only.
                r = helpers.publish(n.port, ch, p)
                assert r == (1 if n.port == where[0] else 0), (n.port, where, r)
                sent.append(p)
            got = await receive_pairs(ws, len(sent), 10)
            assert sorted(m for _, m in got) == sorted(sent)
            assert {c for c, _ in got} == {ch}
            # SPUBLISH is sharded pub/sub: a global-mode broker does not get it.
            spublish(cluster.nodes[0].port, ch, '"sharded"')
            await expect_silence(ws, 1.0 * SLOW)
        finally:
            await ws.close()
    run(body(), timeout=100)


@pytest.mark.timeout(120)
def test_hundred_channels_in_the_url_spread_over_every_shard(cluster, make_broker):
    """100 channels subscribed at the handshake land on their own shards,
    one SSUBSCRIBE connection per shard, each message delivered once."""
    b = cluster_broker(make_broker, cluster)
    tag = uuid.uuid4().hex[:8]
    chans = ["many-%s-%d" % (tag, i) for i in range(100)]
    owners = {ch: cluster.owner(key_slot(ch)) for ch in chans}
    assert len(set(owners.values())) == 3

    async def body():
        ws = await ws_connect(b.port, "/ws?channels=" + ",".join(chans))
        try:
            for ch in chans:
                wait_shardnumsub(cluster, ch, 1)
            # Shard channels live on their owner only.
            for ch in chans[:10]:
                for p in cluster.primaries():
                    if p != owners[ch]:
                        assert shardnumsub(p, ch) == 0
            via = cluster.nodes[0].port
            for i, ch in enumerate(chans):
                assert spublish(via, ch, '{"i":%d}' % i) == 1, ch
            got = await receive_pairs(ws, len(chans), 20)
            assert sorted(got) == sorted((ch, '{"i":%d}' % i) for i, ch in enumerate(chans))
            await expect_silence(ws, 0.5 * SLOW)
        finally:
            await ws.close()
    run(body(), timeout=100)
    # One shard connection per primary, nothing else.
    for p in cluster.primaries():
        assert b.log().count("cluster shard 127.0.0.1:%d: connected" % p) == 1, b.log()[-3000:]


def pubsub_client_ids(port):
    out = []
    for line in redis_command(port, "CLIENT", "LIST").decode().splitlines():
        f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if "P" in f.get("flags", ""):
            out.append(f["id"])
    return out


@pytest.mark.timeout(120)
def test_shard_connection_killed_reconnects_and_resubscribes(cluster, make_broker):
    """CLIENT KILL of the broker's shard connection (the node stays up): it
    reconnects to the same primary, SSUBSCRIBEs again, counts a reconnect;
    the client stays connected and the other shards are not disturbed."""
    b = cluster_broker(make_broker, cluster)
    per = channels_per_primary(cluster, "kill")
    prims = sorted(per)
    target = prims[0]

    async def body():
        ws = await ws_connect(b.port, "/ws?channels=" + ",".join(per[p] for p in prims))
        try:
            for p in prims:
                wait_shardnumsub(cluster, per[p], 1)
            # Only this broker's connection (earlier tests' brokers are gone).
            ids = wait_until(lambda: len(pubsub_client_ids(target)) == 1 and
                             pubsub_client_ids(target), 10, what="one pub/sub client")
            assert redis_command(target, "CLIENT", "KILL", "ID", ids[0]) == 1
            await publish_until_received(cluster, ws, per[target], 15 * SLOW, via=target)
            wait_until(lambda: shardnumsub(target, per[target]) == 1, 10 * SLOW,
                       what="resubscribed on the same primary")
            await drain(ws, 0.5 * SLOW)
            for p in prims:
                assert spublish(p, per[p], '"after"') == 1
            got = await receive_pairs(ws, 3, 10)
            assert sorted(got) == sorted((per[p], '"after"') for p in prims)
            assert not ws.closed
        finally:
            await ws.close()
    run(body(), timeout=100)
    assert metric(b, "broker_redis_reconnects_total") == 1
    assert b.healthz()[0] == 200


@pytest.mark.timeout(120)
def test_unsubscribe_resubscribe_same_channel_is_not_a_slot_move(cluster, make_broker):
    """A client unsubscribes and at once subscribes the same channel again:
    the broker sends SUNSUBSCRIBE then SSUBSCRIBE on the same shard. The
    `sunsubscribe` reply to its own SUNSUBSCRIBE is not a dropped channel:
    no slot moved, and /healthz must stay 200 (the cluster never went
    anywhere). In the end the channel is subscribed once and delivered."""
    b = cluster_broker(make_broker, cluster)
    ch = channels_per_primary(cluster, "toggle")[cluster.primaries()[0]]
    seen = []

    async def body():
        ws = await ws_connect(b.port)
        try:
            await subscribe(ws, ch)
            wait_shardnumsub(cluster, ch, 1)
            for i in range(20):
                await send_json(ws, {"action": "unsubscribe", "channel": ch})
                await send_json(ws, {"action": "subscribe", "channel": ch})
                for action in ("unsubscribe", "subscribe"):
                    _, ack = await recv_json(ws)
                    assert ack == {"type": "ack", "action": action, "channel": ch}, ack
                seen.extend(b.healthz()[0] for _ in range(3))
                await asyncio.sleep(0.05)
            wait_shardnumsub(cluster, ch, 1)
            assert spublish(cluster.primaries()[0], ch, '"still"') == 1
            assert await receive_pairs(ws, 1, 10) == [(ch, '"still"')]
            await subscribe(ws, ch, action="unsubscribe")
            wait_shardnumsub(cluster, ch, 0)
        finally:
            await ws.close()
    run(body(), timeout=100)
    log = b.log()
    dropped = [l for l in log.splitlines() if "dropped channel" in l]
    assert seen.count(503) == 0 and not dropped, (
        "no slot moved, yet /healthz answered 503 %d times of %d and the log says:\n%s"
        % (seen.count(503), len(seen), "\n".join(dropped[:5])))


@pytest.mark.timeout(120)
def test_unsubscribe_resubscribe_unsubscribe_leaves_no_shard_subscription(cluster, make_broker):
    """unsubscribe + subscribe of a channel (one write), then, once both are
    acked, unsubscribe again: the client holds nothing, so the broker's shard
    connection must not stay SSUBSCRIBEd to the channel. Repeated over many
    channels (the window is a few milliseconds wide: between Redis's reply
    to the first SUNSUBSCRIBE and the broker's next slot-map answer)."""
    b = cluster_broker(make_broker, cluster, max_control_per_s=100000)
    tag = uuid.uuid4().hex[:8]
    chans = ["leak-%s-%d" % (tag, i) for i in range(60)]
    owners = {ch: cluster.owner(key_slot(ch)) for ch in chans}

    def req(action, ch):
        return helpers.build_frame(helpers.OP_TEXT, json.dumps(
            {"action": action, "channel": ch}).encode())

    def ack(ws, action, ch):
        r = ws.recv_json(timeout=10 * SLOW)
        assert r == {"type": "ack", "action": action, "channel": ch}, r

    ws = helpers.RawWS(b.port)
    try:
        for ch in chans:
            ws.send_raw(req("subscribe", ch))
            ack(ws, "subscribe", ch)
            wait_until(lambda: shardnumsub(owners[ch], ch) == 1, 10 * SLOW, interval=0.005,
                       what="%s subscribed" % ch)
            ws.send_raw(req("unsubscribe", ch) + req("subscribe", ch))
            ack(ws, "unsubscribe", ch)
            ack(ws, "subscribe", ch)
            ws.send_raw(req("unsubscribe", ch))
            ack(ws, "unsubscribe", ch)
        time.sleep(2 * SLOW)  # let every reply and slot-map query settle
        leaked = [ch for ch in chans if shardnumsub(owners[ch], ch) != 0]
        assert ws.is_open()
    finally:
        ws.close()
    dropped = [l for l in b.log().splitlines() if "dropped channel" in l]
    assert not leaked, (
        "%d of %d channels stay SSUBSCRIBEd on their primary with no client subscribed "
        "(PUBSUB SHARDNUMSUB 1), e.g. %r; broker log: %d 'dropped channel' lines, e.g.\n%s"
        % (len(leaked), len(chans), leaked[:3], len(dropped), "\n".join(dropped[:3])))
    wait_until(lambda: b.healthz()[0] == 200, 5 * SLOW, what="/healthz 200")


@pytest.mark.timeout(200)
def test_soak_sharded_every_shard_holds(cluster, make_broker):
    """30 s of numbered SPUBLISHes on two channels per shard, two workers,
    in bursts with 7 s idle gaps: every shard link pings while idle and must
    recognise the answer (in pub/sub mode RESP2 answers PING with
    ["pong", ""]), so none is dropped, nothing reconnects, and every message
    reaches every client once and in order."""
    from helpers import RespConn, Soak, metric_sum, skip_soak_under_valgrind
    skip_soak_under_valgrind()
    b = cluster_broker(make_broker, cluster, workers=2)
    owners = {}
    for tag in ("soak-a", "soak-b"):
        for port, ch in channels_per_primary(cluster, tag).items():
            owners[ch] = port
    conns = {p: RespConn(p, timeout=10) for p in set(owners.values())}

    def pub(ch, payload):
        n = conns[owners[ch]].command("SPUBLISH", ch, payload)
        assert isinstance(n, int) and n >= 1, (ch, n)

    soak = Soak(b.port, sorted(owners), pub, nclients=4, duration=30)
    try:
        got = soak.run()
    finally:
        for c in conns.values():
            c.close()
    total = soak.check_exact(got)
    assert metric_sum(b.port, "broker_redis_reconnects_total") == 0
    assert metric_sum(b.port, "broker_redis_link_losses_total") == 0
    log = b.log()
    assert not re.search(r"no answer|lost|connect failed|dropped channel", log), log[-3000:]
    print("soak sharded: %d messages x %d clients over %d shards, 0 reconnects"
          % (total, len(got), len(conns)))


@pytest.mark.timeout(120)
def test_history_on_every_shard_resume_on_another_broker(cluster, make_broker):
    """The history library is loaded on every primary; FCALL broker_publish
    (routed by the channel, the one key) records and SPUBLISHes on the
    channel's shard; a client of broker A that leaves and comes back to
    broker B with since gets exactly what it missed, on every shard."""
    from helpers import RespConn
    a = cluster_broker(make_broker, cluster)
    b2 = cluster_broker(make_broker, cluster)
    per = channels_per_primary(cluster, "hist")

    def loaded():
        return all(cluster.node(p).cmd("FUNCTION", "LIST", "LIBRARYNAME", "broker")
                   for p in cluster.primaries())
    wait_until(loaded, 15 * SLOW, what="the library on every primary")

    def fcall(port, ch, i):
        with RespConn(port) as c:
            return c.command("FCALL", "broker_publish", 1, ch, '{"i":%d}' % i)

    async def body():
        ws = await ws_connect(a.port)
        try:
            for k, (port, ch) in enumerate(sorted(per.items())):
                await send_json(ws, {"action": "subscribe", "channel": ch, "rid": k})
                _, ack = await recv_json(ws, 10 * SLOW)
                assert ack["type"] == "ack", ack
            for port, ch in per.items():
                wait_shardnumsub(cluster, ch, 1)
                for i in range(1, 6):
                    assert fcall(port, ch, i) == i
            got = {}
            while sum(len(v) for v in got.values()) < 15:
                obj = json.loads(await asyncio.wait_for(ws.recv(), 10 * SLOW))
                got.setdefault(obj["channel"], []).extend(m["i"] for m in obj["messages"])
                assert obj["offset"] == got[obj["channel"]][-1], obj
            assert all(v == [1, 2, 3, 4, 5] for v in got.values()), got
        finally:
            await ws.close()
        epochs = {}
        for port, ch in per.items():
            for i in range(6, 11):
                fcall(port, ch, i)
            with RespConn(port) as c:
                epochs[ch] = c.command("FCALL_RO", "broker_range", 1, ch, 0, "after", 0)[0].decode()
        ws = await ws_connect(b2.port)
        try:
            for k, ch in enumerate(sorted(per.values())):
                await send_json(ws, {"action": "subscribe", "channel": ch, "rid": k,
                                     "since": {"offset": 5, "epoch": epochs[ch]}})
                acks = []
                while not acks:
                    obj = json.loads(await asyncio.wait_for(ws.recv(), 10 * SLOW))
                    if obj["type"] == "ack":
                        acks.append(obj)
                    else:
                        pending.append(obj)
                assert acks[0]["recovered"] is True and acks[0]["offset"] == 10, acks
            got = {}
            for obj in pending:
                got.setdefault(obj["channel"], []).extend(m["i"] for m in obj["messages"])
            while sum(len(v) for v in got.values()) < 15:
                obj = json.loads(await asyncio.wait_for(ws.recv(), 10 * SLOW))
                got.setdefault(obj["channel"], []).extend(m["i"] for m in obj["messages"])
            assert all(v == [6, 7, 8, 9, 10] for v in got.values()), got
        finally:
            await ws.close()

    pending = []
    run(body(), timeout=100)


@pytest.mark.timeout(120)
def test_first_seed_down_the_next_one_answers(cluster, make_broker):
    dead = helpers.free_port()
    b = make_broker(cluster.nodes[0].port, redis_mode="cluster", batch_interval_ms=0,
                    redis_cluster_nodes="127.0.0.1:%d,%s" % (dead, cluster.seeds))
    ch = channels_per_primary(cluster, "dead")[cluster.primaries()[2]]

    async def body():
        ws = await ws_connect(b.port, "/ws?channels=" + ch)
        try:
            wait_shardnumsub(cluster, ch, 1)
            assert spublish(cluster.nodes[1].port, ch, '"ok"') == 1
            assert await receive_pairs(ws, 1, 10) == [(ch, '"ok"')]
        finally:
            await ws.close()
    run(body(), timeout=60)


@pytest.mark.timeout(120)
def test_unresponsive_first_seed_does_not_block_the_others(cluster, make_broker, make_redis):
    """The first seed accepts TCP connections but never answers (a paused
    redis-server: SIGSTOP); the seeds are asked in turn, so the broker must
    give up on it and get the slot map from the next seed."""
    hung = make_redis().start()
    os.kill(hung.proc.pid, signal.SIGSTOP)
    try:
        b = make_broker(cluster.nodes[0].port, wait="port", redis_mode="cluster",
                        redis_cluster_nodes="127.0.0.1:%d,%s" % (hung.port, cluster.seeds),
                        batch_interval_ms=0)
        bound = 8 + 2 * SLOW
        try:
            wait_until(lambda: b.healthz()[0] == 200, bound, interval=0.2,
                       what="/healthz 200 with a paused first seed")
        except AssertionError as e:
            raise AssertionError("%s; broker log:\n%s" % (e, b.log()[-2000:]))
        ch = channels_per_primary(cluster, "hung")[cluster.primaries()[1]]

        async def body():
            ws = await ws_connect(b.port, "/ws?channels=" + ch)
            try:
                wait_shardnumsub(cluster, ch, 1)
                assert spublish(cluster.nodes[0].port, ch, '"ok"') == 1
                assert await receive_pairs(ws, 1, 10) == [(ch, '"ok"')]
            finally:
                await ws.close()
        run(body(), timeout=60)
    finally:
        os.kill(hung.proc.pid, signal.SIGCONT)


# ---------------------------------------------------------------------------
# Tests that change the cluster: last.

def migrate_slot(cluster, slot, dst_port):
    """Moves an empty slot to primary dst_port the way redis-cli --cluster
    reshard does: IMPORTING on the target, MIGRATING on the source, no keys
    to MIGRATE, then SETSLOT NODE on the target, the source and the other
    primaries."""
    src = cluster.node(cluster.owner(slot))
    dst = cluster.node(dst_port)
    assert src.port != dst.port
    assert dst.cmd("CLUSTER", "SETSLOT", slot, "IMPORTING", src.id) == "OK"
    assert src.cmd("CLUSTER", "SETSLOT", slot, "MIGRATING", dst.id) == "OK"
    assert src.cmd("CLUSTER", "GETKEYSINSLOT", slot, 100) == []
    assert dst.cmd("CLUSTER", "SETSLOT", slot, "NODE", dst.id) == "OK"
    assert src.cmd("CLUSTER", "SETSLOT", slot, "NODE", dst.id) == "OK"
    for p in cluster.primaries(dst.port):
        if p not in (src.port, dst.port):
            assert cluster.node(p).cmd("CLUSTER", "SETSLOT", slot, "NODE", dst.id) == "OK"
    wait_until(lambda: all(cluster.owner(slot, n.port) == dst.port for n in cluster.live()),
               20, interval=0.1, what="every node seeing slot %d on %d" % (slot, dst.port))
    return src.port


@pytest.mark.timeout(120)
def test_slot_migration_resubscribes_on_the_new_owner(cluster, make_broker):
    b = cluster_broker(make_broker, cluster)
    per = channels_per_primary(cluster, "mig")
    tag = "{m%s}" % uuid.uuid4().hex[:8]
    ma, mb = tag + ".a", tag + ".b"
    slot = key_slot(ma)
    src = cluster.owner(slot)
    dst = next(p for p in sorted(per) if p != src)
    stay = per[dst]  # a channel on the target, never moved

    async def body():
        ws = await ws_connect(b.port)
        ws2 = await ws_connect(b.port, "/ws?channels=" + mb)
        try:
            await subscribe(ws, ma)
            await subscribe(ws, stay)
            for ch in (ma, mb, stay):
                wait_shardnumsub(cluster, ch, 1)
            assert spublish(dst, stay, '"s0"') == 1
            assert spublish(src, ma, '"a0"') == 1
            assert sorted(await receive_pairs(ws, 2, 10)) == sorted([(stay, '"s0"'), (ma, '"a0"')])
            assert spublish(src, mb, '"b0"') == 1
            assert await receive_pairs(ws2, 1, 10) == [(mb, '"b0"')]

            migrate_slot(cluster, slot, dst)
            # The old owner refuses SPUBLISH for the slot now.
            try:
                redis_command(src, "SPUBLISH", ma, "x")
                raise AssertionError("old owner still accepts SPUBLISH for slot %d" % slot)
            except RedisError as e:
                assert str(e).startswith("MOVED"), e
            # Delivery resumes on the new owner for both names in the slot.
            await publish_until_received(cluster, ws, ma, 15 * SLOW, via=dst)
            await publish_until_received(cluster, ws2, mb, 15 * SLOW, via=dst)
            wait_until(lambda: shardnumsub(dst, ma) == 1 and shardnumsub(dst, mb) == 1,
                       10 * SLOW, what="both channels SSUBSCRIBEd on the new owner")
            assert shardnumsub(src, ma) == 0 and shardnumsub(src, mb) == 0
            # Exact again: one subscribed connection each, one message each.
            assert spublish(dst, ma, '"a1"') == 1
            assert spublish(dst, mb, '"b1"') == 1
            assert spublish(dst, stay, '"s1"') == 1
            assert sorted(await receive_pairs(ws, 2, 10)) == sorted([(ma, '"a1"'), (stay, '"s1"')])
            assert await receive_pairs(ws2, 1, 10) == [(mb, '"b1"')]
            await expect_silence(ws, 0.5 * SLOW)
            await expect_silence(ws2, 0.1)
            assert not ws.closed and not ws2.closed
        finally:
            await ws.close()
            await ws2.close()
    run(body(), timeout=110)
    assert b.healthz()[0] == 200
    log = b.log()
    assert "slot %d moved" % slot in log, log[-3000:]


@pytest.mark.timeout(120)
def test_subscribe_after_unannounced_slot_move_follows_moved(cluster, make_broker):
    """A slot moves while the broker has no channel in it, so nothing tells
    it; a later subscription to a channel there goes to the old owner by the
    broker's stale map, gets MOVED, and must end up on the new owner."""
    b = cluster_broker(make_broker, cluster)
    per = channels_per_primary(cluster, "stale")
    prims = sorted(per)
    warm = per[prims[0]]
    tag = uuid.uuid4().hex[:8]
    # A channel owned by prims[1] now, moved to prims[2] below.
    ch = next(n for n in ("stale-%s-%d" % (tag, i) for i in range(10000))
              if cluster.owner(key_slot(n)) == prims[1])
    slot = key_slot(ch)

    async def body():
        ws = await ws_connect(b.port, "/ws?channels=" + warm)
        try:
            wait_shardnumsub(cluster, warm, 1)  # the broker knows the map
            migrate_slot(cluster, slot, prims[2])
            await subscribe(ws, ch, rid=1)
            await publish_until_received(cluster, ws, ch, 15 * SLOW, via=prims[2])
            wait_until(lambda: shardnumsub(prims[2], ch) == 1, 10 * SLOW,
                       what="subscribed on the new owner")
            await drain(ws, 0.5 * SLOW)
            assert spublish(prims[2], ch, '"exact"') == 1
            assert await receive_pairs(ws, 1, 10) == [(ch, '"exact"')]
        finally:
            await ws.close()
    run(body(), timeout=100)
    assert b.healthz()[0] == 200
    assert re.search(r"cluster shard 127\.0\.0\.1:%d: MOVED %d " % (prims[1], slot), b.log()), \
        b.log()[-3000:]


async def publish_global_until_received(cluster, ws, channel, timeout):
    """PUBLISHes a fresh probe every 0.3 s on a live node, in turn, until
    one arrives on ws."""
    deadline = time.monotonic() + timeout
    sent = set()
    i = 0
    while time.monotonic() < deadline:
        probe = '{"gprobe":%d}' % i
        i += 1
        live = cluster.live()
        try:
            helpers.publish(live[i % len(live)].port, channel, probe)
            sent.add(probe)
        except (OSError, RedisError):
            pass
        try:
            text = await asyncio.wait_for(ws.recv(), 0.3)
        except asyncio.TimeoutError:
            continue
        ch, msgs = parse_batch(text)
        assert ch == channel and set(msgs) <= sent, (ch, msgs, sent)
        return msgs
    raise AssertionError("nothing delivered on %r within %.0f s" % (channel, timeout))


async def drain(ws, quiet):
    """Reads until nothing arrives for `quiet` seconds."""
    while True:
        try:
            await asyncio.wait_for(ws.recv(), quiet)
        except asyncio.TimeoutError:
            return


@pytest.mark.timeout(150)
def test_primary_failover_delivery_resumes_same_websocket(cluster, make_broker):
    """kill -9 of the primary owning a subscribed channel's slot: its
    replica is promoted, the broker finds the new owner and SSUBSCRIBEs
    there; the client, on the same WebSocket, gets messages again. A channel
    on another shard is not disturbed. The victim is the first seed, so a
    global-mode broker (subscribed there) has to move to the next seed."""
    cluster.wait_healthy(30)
    b = cluster_broker(make_broker, cluster)
    g = cluster_broker(make_broker, cluster, mode="global")
    per = channels_per_primary(cluster, "fo")
    seed_ports = [int(s.split(":")[1]) for s in cluster.seeds.split(",")]
    # Kill a primary that is also a seed (the first one, when it is a
    # primary): the broker must do without it for topology queries too.
    victim = next((p for p in seed_ports if p in per), sorted(per)[0])
    other = next(p for p in sorted(per) if p != victim)
    fch, och = per[victim], per[other]
    gch = helpers.uniq("fo-global")
    replicas = cluster.replicas_of(victim)
    assert len(replicas) == 1, redis_command(victim, "CLUSTER", "NODES")
    replica = replicas[0]

    async def body():
        ws = await ws_connect(b.port)
        gws = await ws_connect(g.port, "/ws?channels=" + gch)
        try:
            await subscribe(ws, fch)
            await subscribe(ws, och)
            wait_shardnumsub(cluster, fch, 1)
            wait_shardnumsub(cluster, och, 1)
            gwhere = wait_until(
                lambda: [n.port for n in cluster.live() if int(n.cmd("PUBSUB", "NUMSUB", gch)[1])],
                15 * SLOW, what="global broker subscribed")
            assert spublish(victim, fch, '"f0"') == 1
            assert spublish(other, och, '"o0"') == 1
            assert sorted(await receive_pairs(ws, 2, 10)) == sorted([(fch, '"f0"'), (och, '"o0"')])
            assert helpers.publish(other, gch, '"g0"') == 0
            assert await receive_pairs(gws, 1, 10) == [(gch, '"g0"')]

            cluster.node(victim).kill9()
            t0 = time.monotonic()
            await publish_until_received(cluster, ws, fch, 25 + 10 * SLOW)
            elapsed = time.monotonic() - t0
            await publish_global_until_received(cluster, gws, gch, 25 + 10 * SLOW)
            # The replica now owns the slot, and the broker is subscribed there.
            assert cluster.owner(key_slot(fch), replica) == replica
            wait_until(lambda: shardnumsub(replica, fch) == 1, 10 * SLOW,
                       what="channel SSUBSCRIBEd on the promoted replica")
            # Drain probes still in flight, then check exactness again.
            await drain(ws, 0.5 * SLOW)
            await drain(gws, 0.5 * SLOW)
            assert spublish(replica, fch, '"f1"') == 1
            assert spublish(other, och, '"o1"') == 1
            assert sorted(await receive_pairs(ws, 2, 10)) == sorted([(fch, '"f1"'), (och, '"o1"')])
            helpers.publish(replica, gch, '"g1"')
            assert await receive_pairs(gws, 1, 10) == [(gch, '"g1"')]
            await expect_silence(ws, 0.5 * SLOW)
            await expect_silence(gws, 0.1)
            # Same WebSockets all along.
            assert not ws.closed and not gws.closed
            for w in (ws, gws):
                await asyncio.wait_for(await w.ping(), 5 * SLOW)  # the pong
            return elapsed, gwhere
        finally:
            await ws.close()
            await gws.close()
    elapsed, gwhere = run(body(), timeout=140)
    for x in (b, g):
        wait_until(lambda: x.healthz()[0] == 200, 10 * SLOW, what="/healthz 200 after the failover")
        assert metric(x, "broker_redis_up") == 1
    log = b.log()
    # The broker saw the shard go, and subscribed on the promoted replica.
    assert re.search(r"cluster shard 127\.0\.0\.1:%d: .*(closed|failed)" % victim, log), log[-4000:]
    assert re.search(r"cluster shard 127\.0\.0\.1:%d: subscribing [1-9]" % replica, log), \
        log[-4000:]
    if gwhere == [victim]:
        # The global broker lost its node and re-established its link.
        assert metric(g, "broker_redis_reconnects_total") >= 1
    print("sharded delivery resumed %.1f s after kill -9; global broker was on %r; "
          "reconnects_total sharded=%d global=%d"
          % (elapsed, gwhere, metric(b, "broker_redis_reconnects_total"),
             metric(g, "broker_redis_reconnects_total")))

#!/usr/bin/env python3
"""capacity.py: the capacity model of SCALING.md, evaluated for given inputs.

    scripts/capacity.py                         # the two scenarios of SCALING.md
    scripts/capacity.py --clients 2000000 --channels 5000 --publish-rate 20000
    scripts/capacity.py --json                  # machine-readable

Every per-core figure below is a measurement from this repository's benchmarks
(BENCHMARKS.md); override them with the flags when you measure your own hardware.
The model is deliberately simple: it says which resource runs out first and how
many machines of each kind that takes, not how a given deployment will behave.
"""
import argparse
import json
import math
import sys

# Measured on the 2-core benchmark machine (BENCHMARKS.md); see SCALING.md.
DEFAULTS = {
    # one worker (one core) of the broker
    "frames_per_core": 90_000,       # client frames written per second (one writev per client
                                     # per tick; on loopback this includes the receiver's kernel work)
    "out_bytes_per_core": 2.5e9,     # payload bytes per second into sockets (3 KB-120 KB frames)
    "ingest_per_core": 700_000,      # Redis messages per second read and batched by one worker (250 B)
    "user_kb_per_conn": 0.62,        # broker user-space memory per idle subscribed connection
    "kernel_kb_per_conn": 2.0,       # kernel memory per idle TCP socket (socket, no data queued)
    "upgrades_per_core": 20_000,     # WebSocket handshakes per second per worker (plain)
    # nginx (TLS terminator)
    "tls_handshakes_per_core": 1_500,  # full TLS 1.3 handshakes per core (~640 us CPU each here)
    "tls_bytes_per_core": 1.0e9,     # AES-GCM bulk encryption per core
    "nginx_kb_per_conn": 45.0,       # nginx memory per proxied TLS WebSocket (OpenSSL 3: ~30 KB)
    # Redis
    "redis_deliveries_per_shard": 900_000,  # messages written to subscriber links per shard core
    # machines
    "cores_per_node": 16,
    "ram_gb_per_node": 64,
    "nic_gbit": 10,
    "max_clients_per_node": 250_000,  # blast radius: what one node's loss may disconnect
    "frame_overhead_bytes": 60,      # envelope + WebSocket header per frame
}


def model(clients, channels, publish_rate, payload, interval, subs_per_client, p):
    """Returns a dict of derived loads and the machines they take."""
    subs = clients * subs_per_client
    per_channel_rate = publish_rate / channels
    subscribers_per_channel = subs / channels
    deliveries = publish_rate * subscribers_per_channel
    # A subscription gets a frame in a tick when its channel had a message in it.
    p_frame = 1 - math.exp(-per_channel_rate * interval) if interval > 0 else 1.0
    ticks = 1 / interval if interval > 0 else per_channel_rate
    frames = subs * p_frame * ticks if interval > 0 else deliveries
    out_bytes = deliveries * payload + frames * p["frame_overhead_bytes"]

    cores_fanout = frames / p["frames_per_core"] + out_bytes / p["out_bytes_per_core"]
    # Memory: per connection, in the broker and the kernel, and in nginx in
    # front (same nodes: nginx runs next to the workers).
    mem_gb_broker = clients * (p["user_kb_per_conn"] + p["kernel_kb_per_conn"]) / 1024 / 1024
    mem_gb_nginx = clients * (p["nginx_kb_per_conn"] + p["kernel_kb_per_conn"]) / 1024 / 1024
    # Spread: each worker serves clients/workers connections and subscribes in
    # Redis to the distinct channels its clients want.
    node_cores_broker = p["cores_per_node"] - 1  # N-1 workers, nginx on the rest
    # Enough nodes for CPU, memory and network, whichever needs most.
    nodes_cpu = cores_fanout / node_cores_broker
    nodes_mem = (mem_gb_broker + mem_gb_nginx) / (p["ram_gb_per_node"] * 0.7)
    nodes_net = out_bytes * 8 / (p["nic_gbit"] * 1e9 * 0.7)
    nodes_conn = clients / p["max_clients_per_node"]
    # One node more than the load needs, so that losing one is absorbed.
    nodes = max(2, math.ceil(max(nodes_cpu, nodes_mem, nodes_net, nodes_conn)) + 1)
    workers = nodes * node_cores_broker
    clients_per_worker = clients / workers
    distinct = channels * (1 - math.exp(-clients_per_worker * subs_per_client / channels))
    ingest_per_worker = publish_rate * distinct / channels
    redis_deliveries = publish_rate * (distinct / channels) * workers  # one per subscribed worker
    shards = max(1, math.ceil(redis_deliveries / p["redis_deliveries_per_shard"]))
    # nginx: bulk encryption of everything sent, plus its own memory per connection.
    nginx_cores = out_bytes / p["tls_bytes_per_core"]
    bottleneck = max(
        ("broker CPU (frames and bytes)", nodes_cpu),
        ("memory (connections, mostly nginx's TLS state)", nodes_mem),
        ("network", nodes_net),
        ("clients per node (blast radius)", nodes_conn),
        key=lambda kv: kv[1])[0]
    if ingest_per_worker > p["ingest_per_core"]:
        bottleneck = "worker ingest from Redis (too many channels per worker)"
    return {
        "clients": clients, "channels": channels, "publish_rate": publish_rate,
        "payload_bytes": payload, "interval_s": interval,
        "deliveries_per_s": deliveries, "frames_per_s": frames,
        "out_gbit_per_s": out_bytes * 8 / 1e9,
        "broker_cores": cores_fanout, "broker_mem_gb": mem_gb_broker,
        "nodes": nodes, "workers": workers, "clients_per_worker": clients_per_worker,
        "ingest_per_worker": ingest_per_worker,
        "redis_deliveries_per_s": redis_deliveries, "redis_shards": shards,
        "nginx_cores": nginx_cores,
        "nginx_mem_gb": mem_gb_nginx,
        "bottleneck": bottleneck,
    }


def storm(clients_lost, nodes_left, p, initial=0.5, cap=30.0):
    """A node dies: its clients reconnect with full-jitter exponential backoff
    (first try uniform in [0, initial] s, then doubling up to cap). Returns the
    arrival rate the survivors see and how long they take to absorb it."""
    arrival = clients_lost / initial
    # What the survivors can take: TLS handshakes at nginx, upgrades at the broker.
    per_node = min(p["tls_handshakes_per_core"] * p["cores_per_node"],
                   p["upgrades_per_core"] * (p["cores_per_node"] - 1))
    capacity = per_node * nodes_left
    # Clients refused in one round retry in a window twice as long, so the
    # offered rate halves each round until it fits; the total time is about
    # the backlog over the capacity when the capacity is the limit.
    seconds = max(initial, clients_lost / capacity) if capacity > 0 else float("inf")
    rounds = max(0, math.ceil(math.log2(max(arrival / capacity, 1)))) if capacity > 0 else 0
    return {"clients_lost": clients_lost, "arrival_per_s": arrival,
            "capacity_per_s": capacity, "seconds_to_reconnect": seconds,
            "backoff_rounds": rounds, "cap_s": cap}


def show(m, s):
    print("%(clients)d clients, %(channels)d channels, %(publish_rate)d msgs/s of "
          "%(payload_bytes)d B, batches every %(interval_s)g s" % m)
    print("  deliveries/s       %14.0f" % m["deliveries_per_s"])
    print("  frames/s           %14.0f" % m["frames_per_s"])
    print("  output             %14.2f Gbit/s" % m["out_gbit_per_s"])
    print("  broker cores       %14.1f" % m["broker_cores"])
    print("  broker memory      %14.1f GB" % m["broker_mem_gb"])
    print("  nodes              %14d (%d workers, %.0f clients each)" % (
        m["nodes"], m["workers"], m["clients_per_worker"]))
    print("  ingest per worker  %14.0f msgs/s" % m["ingest_per_worker"])
    print("  Redis deliveries   %14.0f /s -> %d shard(s)" % (
        m["redis_deliveries_per_s"], m["redis_shards"]))
    print("  nginx              %14.1f cores, %.1f GB" % (m["nginx_cores"], m["nginx_mem_gb"]))
    print("  bottleneck         %s" % m["bottleneck"])
    print("  node loss          %d clients reconnect at %.0f/s into %.0f/s of capacity: "
          "%.1f s, %d backoff rounds" % (s["clients_lost"], s["arrival_per_s"],
                                         s["capacity_per_s"], s["seconds_to_reconnect"],
                                         s["backoff_rounds"]))
    print()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int)
    ap.add_argument("--channels", type=int, default=10_000)
    ap.add_argument("--publish-rate", type=float, default=10_000)
    ap.add_argument("--payload", type=int, default=250)
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--subs-per-client", type=float, default=1)
    ap.add_argument("--json", action="store_true")
    for k, v in DEFAULTS.items():
        ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    a = ap.parse_args(argv)
    p = {k: getattr(a, k) for k in DEFAULTS}
    scenarios = [a.clients] if a.clients else [1_000_000, 10_000_000]
    out = []
    for c in scenarios:
        m = model(c, a.channels, a.publish_rate, a.payload, a.interval, a.subs_per_client, p)
        s = storm(c / m["nodes"], m["nodes"] - 1, p)
        out.append({"model": m, "node_loss": s})
        if not a.json:
            show(m, s)
    if a.json:
        json.dump({"inputs": vars(a), "results": out}, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main(sys.argv[1:])

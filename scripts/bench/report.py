#!/usr/bin/env python3
"""Turns results.json (run.py) into results.md (tables, targets met or
missed) and PNG plots drawn with gnuplot.

    scripts/bench/report.py [RESULTS_DIR]      # default scripts/bench/results
"""

import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ORDER = ["broker", "floor", "ws-buffer", "ws-string", "socketio", "nchan", "stack-unix", "stack-unix-16k",
         "stack-tcp", "nchan-tls"]
LABEL = {"broker": "broker", "floor": "floor (raw C)", "ws-buffer": "Node ws, one Buffer",
         "ws-string": "Node ws, string per client", "socketio": "Node socket.io v4",
         "nchan": "nginx + nchan", "stack-unix": "stack: nginx TLS + broker, Unix sockets",
         "stack-tcp": "stack: nginx TLS + broker, TCP",
         "stack-unix-16k": "stack: Unix sockets, proxy_buffer_size 16k", "nchan-tls": "nginx TLS + nchan"}


def fmt(v, nd=0, unit=""):
    if v is None:
        return "–"
    if isinstance(v, (int, float)):
        if nd == 0:
            return f"{v:,.0f}{unit}"
        return f"{v:,.{nd}f}{unit}"
    return str(v)


def ratio(v, ref):
    if v is None or not ref:
        return "–"
    return f"{v / ref:.2f}x"


def systems(res, sc):
    d = res["scenarios"].get(sc, {})
    return [s for s in ORDER if s in d] + [s for s in d if s not in ORDER]


def err(d):
    return d.get("error") if isinstance(d, dict) else None


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def md_seed003(res):
    d = res["scenarios"].get("seed003")
    if not d:
        return ""
    fl = d.get("floor", {})
    rows = []
    for s in systems(res, "seed003"):
        x = d[s]
        if err(x):
            rows.append([LABEL.get(s, s), f"error: {err(x)}"] + [""] * 8)
            continue
        rows.append([LABEL.get(s, s), fmt(x["cpu_pct"], 2), ratio(x["cpu_pct"], fl.get("cpu_pct")),
                     fmt(x["rss_kb_max"] / 1024, 1), ratio(x["rss_kb_max"], fl.get("rss_kb_max")),
                     fmt(x["delivered_per_s"]), fmt(x["delivered_frac"] * 100, 2, "%"),
                     fmt(x["latency"]["p50_ms"], 1), fmt(x["latency"]["p99_ms"], 1)])
    return ("### seed003: 500 clients, 1 channel, 200 msgs/s of 3 KB with 1% 30 KB\n\n" +
            table(["system", "CPU % (median of 5 s windows)", "× floor", "RSS MB (max)", "× floor",
                   "delivered msgs/s", "delivered", "p50 ms", "p99 ms"], rows))


def md_fanout(res):
    d = res["scenarios"].get("fanout")
    if not d:
        return ""
    fl = {st["rate"]: st for st in d.get("floor", {}).get("steps", []) if not err(st)}
    rows = []
    for s in systems(res, "fanout"):
        x = d[s]
        if err(x):
            rows.append([LABEL.get(s, s), "", f"error: {err(x)}"] + [""] * 8)
            continue
        for st in x["steps"]:
            if err(st):
                rows.append([LABEL.get(s, s), fmt(st["rate"]), f"error: {err(st)}"] + [""] * 8)
                continue
            f = fl.get(st["rate"], {})
            rows.append([LABEL.get(s, s), fmt(st["rate"]), fmt(st["deliveries_per_s"]),
                         fmt(st["delivered_frac"] * 100, 2, "%"), fmt(st["latency"]["p50_ms"], 1),
                         fmt(st["latency"]["p99_ms"], 1), fmt(st["cpu_pct"], 1),
                         ratio(st["cpu_pct"], f.get("cpu_pct")), fmt(st["rss_kb_max"] / 1024, 1),
                         fmt(st.get("cpu1_busy_pct")), "yes" if st["holds"] else "**no**"])
    return ("### fanout: 10,000 clients over 100 channels, 250 B payloads\n\n"
            "A step holds when at least 99% of the deliveries arrive and p99 < 1 s. CPU 1 busy: the "
            "load side's core (Redis, publish, the clients); near 100% the clients, not the system, "
            "set the pace.\n\n" +
            table(["system", "published msgs/s", "deliveries/s", "delivered", "p50 ms", "p99 ms",
                   "CPU % (median of 1 s)", "× floor", "RSS MB", "CPU 1 busy %", "holds"], rows))


def md_idle(res):
    rows = []
    d = res["scenarios"].get("idle", {})
    fl = d.get("floor", {})
    for s in systems(res, "idle"):
        x = d[s]
        if err(x):
            rows.append([LABEL.get(s, s), f"error: {err(x)}"] + [""] * 5)
            continue
        rows.append([LABEL.get(s, s), fmt(x["held"]), fmt(x["rss_kb_before"] / 1024, 1),
                     fmt(x["rss_kb_after"] / 1024, 1), fmt(x["bytes_per_conn"]),
                     ratio(x["bytes_per_conn"], fl.get("bytes_per_conn")),
                     fmt(x["all_connected_s"], 2)])
    x = res["scenarios"].get("idle100k", {}).get("broker")
    if x and not err(x):
        rows.append(["broker, 6 workers (6 loadgen processes)", fmt(x["held"]),
                     fmt(x["rss_kb_before"] / 1024, 1), fmt(x["rss_kb_after"] / 1024, 1),
                     fmt(x["bytes_per_conn"]), "", fmt(x["all_connected_s"], 2)])
    elif x:
        rows.append(["broker, 6 workers", f"error: {err(x)}", "", "", "", "", ""])
    x = res["scenarios"].get("stack100k", {}).get("stack-unix")
    if x and not err(x):
        rows.append(["stack over TLS: nginx 16 workers + broker 6 workers, Unix sockets "
                     f"(6 loadgen processes; broker_connections {fmt(x.get('broker_connections'))}; "
                     f"per broker worker: {', '.join(fmt(v) for v in x.get('per_worker') or [])})",
                     fmt(x["held"]), fmt(x["rss_kb_before"] / 1024, 1), fmt(x["rss_kb_after"] / 1024, 1),
                     fmt(x["bytes_per_conn"]), "", fmt(x["all_connected_s"], 2)])
    elif x:
        rows.append(["stack, 100k", f"error: {err(x)}", "", "", "", "", ""])
    if not rows:
        return ""
    return ("### idle: subscribed idle connections (one server process; the broker also with 6 workers)\n\n"
            "RSS per connection = (RSS with N - RSS before) / N, summed over the system's processes.\n\n" +
            table(["system", "connections held", "RSS before MB", "RSS after MB", "bytes/connection",
                   "× floor", "connect time s"], rows))


def md_storm(res):
    d = res["scenarios"].get("storm")
    if not d:
        return ""
    fl, ng = d.get("floor", {}), d.get("nchan", {})
    rows = []
    for s in systems(res, "storm"):
        x = d[s]
        if err(x):
            rows.append([LABEL.get(s, s), f"error: {err(x)}"] + [""] * 8)
            continue
        rows.append([LABEL.get(s, s), fmt(x["opened"]), fmt(x["all_connected_s"], 3),
                     ratio(x["all_connected_s"], fl.get("all_connected_s")),
                     ratio(x["all_connected_s"], ng.get("all_connected_s")),
                     fmt(x["handshake_mean_ms"], 2), fmt(x["handshake_p99_ms"], 2),
                     fmt(x.get("cpu_us_per_conn"), 1),
                     ratio(x.get("cpu_us_per_conn"), ng.get("cpu_us_per_conn")),
                     fmt(x.get("cpu1_busy_pct"))])
    return ("### storm: 10,000 connections at concurrency 100 (subscribe in the URL)\n\n"
            "Medians of the repeated runs; handshake = connect() to the 101 (socket.io: to its "
            "namespace CONNECT answer). Server CPU = the system's CPU time while the connections "
            "were made, per connection; with CPU 1 (the load client's core) near 100% the "
            "client set the pace.\n\n" +
            table(["system", "opened", "all connected s", "× floor", "× nchan", "handshake mean ms",
                   "handshake p99 ms", "server CPU µs/connection", "× nchan", "CPU 1 busy %"], rows))


def md_ingest(res):
    d = res["scenarios"].get("ingest")
    if not d:
        return ""
    rows = []
    for size in ("250", "3000"):
        fl = d.get("floor", {}).get(size, {}) if not err(d.get("floor", {})) else {}
        for s in systems(res, "ingest"):
            x = d[s]
            if err(x):
                rows.append([LABEL.get(s, s), size, f"error: {err(x)}"] + [""] * 7)
                continue
            y = x.get(size)
            if not y:
                continue
            rows.append([LABEL.get(s, s), size, fmt(y["publish_rate"]), fmt(y["client_rate"]),
                         ratio(y["client_rate"], fl.get("client_rate")),
                         fmt(y.get("broker_rate")), fmt(y["cpu_pct"], 1), fmt(y["per_core"]),
                         ratio(y["per_core"], fl.get("per_core")), fmt(y.get("cpu1_busy_pct"))])
    return ("### ingest: one subscriber, publish as fast as Redis takes it\n\n"
            "client msgs/s: median of the per-second rates the client received; msgs per CPU-second "
            "= that rate / the system's CPU share (what one core would carry when the publisher, "
            "which shares CPU 1 with Redis and the client, is the limit).\n\n" +
            table(["system", "payload B", "publisher msgs/s", "client msgs/s", "× floor",
                   "broker counter msgs/s", "CPU %", "msgs per CPU-second", "× floor",
                   "CPU 1 busy %"], rows))


def md_filters(res):
    d = res["scenarios"].get("filters", {}).get("broker")
    if not d:
        return ""
    if err(d):
        return f"### filters\n\nerror: {err(d)}\n"
    base = res["scenarios"].get("ingest", {}).get("broker", {}).get("3000", {})
    rows = []
    if base:
        rows.append(["none (ingest)", fmt(base["publish_rate"]), fmt(base.get("broker_rate")),
                     fmt(base["client_rate"]), fmt(base["cpu_pct"], 1), fmt(base["per_core"])])
    for nf in ("1", "10", "100"):
        y = d.get(nf)
        if y:
            rows.append([nf, fmt(y["publish_rate"]), fmt(y["broker_rate"]), fmt(y["client_rate"]),
                         fmt(y["cpu_pct"], 1), fmt(y["per_core"])])
    return ("### filters: N distinct filters on one channel of 3 KB payloads (broker)\n\n"
            "One filter matches every message ({\"seq\":{\"$gte\":0}}), the N-1 others none "
            "({\"seq\":{\"$lt\":-j}}); one client per filter.\n\n" +
            table(["filters", "publisher msgs/s", "broker msgs/s in", "delivered msgs/s (client)",
                   "CPU %", "msgs per CPU-second"], rows))


def targets(res):
    """[(target, value, met)] for the broker, from this run only."""
    sc, out = res["scenarios"], []

    def get(*path):
        d = sc
        for p in path:
            if not isinstance(d, dict) or p not in d:
                return None
            d = d[p]
        return d

    b, f = get("seed003", "broker"), get("seed003", "floor")
    if b and f and not err(b) and not err(f):
        r = b["cpu_pct"] / f["cpu_pct"] if f["cpu_pct"] else None
        out.append(("seed003: broker CPU <= 1.1x floor",
                    f"{b['cpu_pct']:.2f}% vs {f['cpu_pct']:.2f}% = {r:.2f}x", r is not None and r <= 1.1))
        out.append(("seed003: broker RSS <= 10 MB", f"{b['rss_kb_max'] / 1024:.1f} MB",
                    b["rss_kb_max"] <= 10 * 1024))
    b, f = get("fanout", "broker"), get("fanout", "floor")
    if b and f and not err(b) and not err(f):
        fs = {s["rate"]: s for s in f["steps"] if not err(s)}
        for st in b["steps"]:
            if err(st) or st["rate"] not in fs:
                continue
            fst = fs[st["rate"]]
            if fst["holds"]:
                out.append((f"fanout {st['rate']:,.0f}/s: floor holds, so the broker holds",
                            f"delivered {st['delivered_frac'] * 100:.2f}%, p99 {st['latency']['p99_ms']:.0f} ms",
                            st["holds"]))
                r = st["cpu_pct"] / fst["cpu_pct"] if fst["cpu_pct"] else None
                out.append((f"fanout {st['rate']:,.0f}/s: broker CPU <= 1.1x floor",
                            f"{st['cpu_pct']:.1f}% vs {fst['cpu_pct']:.1f}% = {r:.2f}x",
                            r is not None and r <= 1.1))
            else:
                out.append((f"fanout {st['rate']:,.0f}/s: (the floor does not hold this step)",
                            f"broker delivered {st['delivered_frac'] * 100:.2f}%", None))
    b = get("idle", "broker")
    if b and not err(b):
        out.append((f"idle: <= 1 KiB RSS/connection at {b['connections']:,} on one worker",
                    f"{b['bytes_per_conn']:.0f} B/connection, {b['held']:,} held",
                    b["bytes_per_conn"] is not None and b["bytes_per_conn"] <= 1024 and
                    b["held"] == b["connections"]))
    b = get("idle100k", "broker")
    if b and not err(b):
        out.append((f"idle: {b['connections']:,} held across 6 workers",
                    f"{b['held']:,} held, {b['bytes_per_conn']:.0f} B/connection",
                    b["held"] >= b["connections"]))
    b, n = get("storm", "broker"), get("storm", "nchan")
    if b and n and not err(b) and not err(n):
        out.append(("storm: at least as fast as nginx+nchan",
                    f"{b['all_connected_s']:.3f} s vs {n['all_connected_s']:.3f} s (mean handshake "
                    f"{b['handshake_mean_ms']:.2f} vs {n['handshake_mean_ms']:.2f} ms"
                    + (f"; server CPU {b['cpu_us_per_conn']:.0f} vs {n['cpu_us_per_conn']:.0f} µs/connection"
                       if b.get("cpu_us_per_conn") and n.get("cpu_us_per_conn") else "") + ")",
                    b["all_connected_s"] <= n["all_connected_s"]))
    b = get("ingest", "broker", "250")
    if b:
        rate = b.get("broker_rate") or b["client_rate"]
        met = rate >= 500000
        note = f"{rate:,.0f} msgs/s in (publisher {b['publish_rate']:,.0f}/s), CPU {b['cpu_pct']:.0f}%"
        if not met and b["per_core"]:
            note += f"; {b['per_core']:,.0f} per CPU-second"
        out.append(("ingest: >= 500,000 msgs/s of 250 B, one worker, one subscriber", note, met))
    return out


def stack_targets(res):
    """[(target, value, met)] of the stack through nginx TLS (make bench-stack)."""
    sc, out = res["scenarios"], []
    u = {k: sc.get(k, {}).get("stack-unix") for k in ("seed003", "fanout", "idle", "storm", "stack100k")}
    n = {k: sc.get(k, {}).get("nchan-tls") for k in ("seed003", "fanout", "idle", "storm")}
    for name, what in (("stack-unix", "stack"), ("stack-unix-16k", "stack with 16k proxy buffers")):
        a, b = sc.get("seed003", {}).get(name), n["seed003"]
        if a and b and not err(a) and not err(b):
            # CPU per delivered message: the same messages reach the same clients.
            r = (a["cpu_pct"] / a["delivered_per_s"]) / (b["cpu_pct"] / b["delivered_per_s"])
            out.append((f"seed003: {what} CPU per delivered message <= nginx+nchan with TLS",
                        f"{a['cpu_pct']:.1f}% vs {b['cpu_pct']:.1f}% for the same deliveries = {r:.2f}x",
                        r <= 1.0))
    a, b = u["fanout"], n["fanout"]
    if a and b and not err(a) and not err(b):
        bs = {st["rate"]: st for st in b["steps"] if not err(st)}
        for st in a["steps"]:
            o = bs.get(st.get("rate"))
            if err(st) or o is None or not st.get("delivered_frac") or not o.get("delivered_frac"):
                continue
            r = (st["cpu_pct"] / st["delivered_frac"]) / (o["cpu_pct"] / o["delivered_frac"])
            out.append((f"fanout {st['rate']:,.0f}/s: stack CPU per delivered message <= nginx+nchan "
                        "with TLS",
                        f"{st['cpu_pct']:.1f}% ({st['delivered_frac'] * 100:.1f}% delivered, "
                        f"{'holds' if st['holds'] else 'does not hold'}) vs {o['cpu_pct']:.1f}% "
                        f"({o['delivered_frac'] * 100:.1f}%, {'holds' if o['holds'] else 'does not hold'})"
                        f" = {r:.2f}x", r <= 1.0))
    for name, what in (("stack-unix", "nginx + broker"), ("stack-unix-16k", "with 16k proxy buffers")):
        a = sc.get("idle", {}).get(name)
        if a and not err(a) and a.get("bytes_per_conn"):
            extra = ""
            b = n["idle"]
            if b and not err(b) and b.get("bytes_per_conn"):
                extra = f" (nginx+nchan with TLS: {b['bytes_per_conn'] / 1000:.1f} KB)"
            out.append((f"idle: {what} user-space memory per wss connection <= 24 KB",
                        f"{a['bytes_per_conn'] / 1000:.1f} KB at {a['held']:,}" + extra,
                        a["bytes_per_conn"] <= 24000))
    a = u["stack100k"]
    if a and not err(a):
        out.append(("100,000 wss connections held through the stack",
                    f"{a['held']:,} held, {a['bytes_per_conn'] / 1000:.1f} KB each, all connected in "
                    f"{a['all_connected_s']:.0f} s", a["held"] >= a["connections"]))
    return out


def md_targets(res):
    t = targets(res) + stack_targets(res)
    if not t:
        return ""
    rows = [[a, v, "met" if m else ("**missed**" if m is False else "n/a")] for a, v, m in t]
    return "### Targets (this run)\n\n" + table(["target", "measured", ""], rows)


def md_history(res):
    x = res["scenarios"].get("history", {}).get("broker")
    if not x:
        return ""
    if err(x):
        return f"### history\n\nerror: {err(x)}\n"
    p, lv, rs = x["publish"], x["live"], x["resume"]
    rows = [["Redis CPU per published message (µs), 100 channels, pipelined as fast as Redis answers",
             fmt(p["publish_median"], 2), fmt(p["fcall_median"], 2), f"{p['ratio']:.2f}x"],
            ["publish rate (msgs/s, medians)", fmt(median_of(p["publish"], "rate")),
             fmt(median_of(p["fcall"], "rate")), ""],
            ["broker CPU %, fanout 10,000 clients / 100 channels / 10,000 msgs/s",
             fmt(lv["publish_median"], 1), fmt(lv["fcall_median"], 1), f"{lv['ratio']:.2f}x"]]
    out = ("### history: plain PUBLISH against FCALL broker_publish (medians of alternating runs)\n\n" +
           table(["", "PUBLISH", "FCALL broker_publish", "ratio"], rows))
    out += (f"\nResume: {rs['clients']:,} clients of {rs['channels']} channels come back "
            f"{rs['behind']} messages behind, through one worker: {rs['recovered']:,} acks "
            f"recovered ({rs['not_recovered']:,} not), {rs['complete']:,} clients had all "
            f"{rs['behind']} messages, the last {rs['all_complete_s']:.3f} s after the first connect "
            f"(all connected in {rs['all_connected_s']:.3f} s; connect to the {rs['behind']}th message: "
            f"mean {rs['complete_ms']['mean_ms']:.1f} ms, p99 {rs['complete_ms']['p99_ms']:.1f} ms). "
            f"History reads served by Redis: {rs['history_reads']:,} "
            f"({rs['history_reads'] / rs['channels']:.1f} per channel; all calls: {rs['redis_calls']}).\n")
    return out


def median_of(runs, key):
    v = sorted(r[key] for r in runs if r.get(key) is not None)
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def md_meta(res):
    m = res["meta"]
    keys = ["date", "git", "broker", "node", "socket.io", "engine.io", "ws", "ioredis", "nginx", "nchan",
            "redis", "kernel", "cpu", "cpus", "mem_gib", "nofile", "gnuplot", "duration_s"]
    return ("### Run\n\n" + table(["what", "value"], [[k, m.get(k)] for k in keys]) +
            ("\n**Quick run (short durations): not for quoting.**\n" if res.get("quick") else ""))


# ---------------------------------------------------------------------------
# Plots


def gnuplot(script, out_png):
    if shutil.which("gnuplot") is None:
        return False
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    if r.returncode != 0:
        print(f"report: gnuplot failed for {out_png}: {r.stderr}", file=sys.stderr)
        return False
    return True


def plots(res, out):
    made = []
    term = "set terminal pngcairo size 900,540 font 'DejaVu Sans,10'\n"
    d = res["scenarios"].get("fanout", {})
    series = []
    for s in systems(res, "fanout"):
        if err(d[s]):
            continue
        pts = [(st["deliveries_per_s"], st["cpu_pct"], st["latency"]["p99_ms"])
               for st in d[s]["steps"] if not err(st) and st.get("cpu_pct") is not None]
        if pts:
            series.append((s, pts))
    if series:
        for what, col, ylabel, extra in (("cpu", 1, "CPU % of one core (system under test)", ""),
                                         ("p99", 2, "p99 latency, ms (log)", "set logscale y\n")):
            dat = os.path.join(out, f"fanout_{what}.dat")
            with open(dat, "w") as f:
                for s, pts in series:
                    f.write(f'"{LABEL.get(s, s)}"\n')
                    for p in pts:
                        f.write(f"{p[0]} {p[col]}\n")
                    f.write("\n\n")
            png = os.path.join(out, f"fanout_{what}.png")
            plot = ", ".join(f"'{dat}' index {i} with linespoints lw 2 title columnheader(1)"
                             for i in range(len(series)))
            xs = sorted({p[0] for _, pts in series for p in pts})
            xt = ", ".join(f'"{x / 1e6:g}M" {x}' if x >= 1e6 else f'"{x / 1e3:g}k" {x}' for x in xs)
            if gnuplot(term + f"set output '{png}'\nset title 'fanout: 10,000 clients, 100 channels, 250 B'\n"
                       f"set xlabel 'deliveries/s'\nset xtics ({xt})\nset offsets graph 0.03, graph 0.03\n"
                       f"set ylabel '{ylabel}'\n{extra or 'set yrange [0:*]'}\nset key outside right\n"
                       f"set grid\nplot {plot}\n", png):
                made.append(png)
            os.unlink(dat)

    def bars(name, title, ylabel, rows, extra=""):
        if not rows:
            return
        dat = os.path.join(out, f"{name}.dat")
        with open(dat, "w") as f:
            for label, *vals in rows:
                f.write(f'"{label}" ' + " ".join(str(v if v is not None else 0) for v in vals) + "\n")
        png = os.path.join(out, f"{name}.png")
        ncol = len(rows[0]) - 1
        heads = {"ingest": ["250 B", "3 KB"]}.get(name, [""] * ncol)
        plot = ", ".join(f"'{dat}' using {i + 2}:xtic(1) title '{heads[i]}'" for i in range(ncol))
        if gnuplot(term + f"set output '{png}'\nset title '{title}'\nset ylabel '{ylabel}'\n"
                   "set style data histograms\nset style histogram clustered gap 1\n"
                   "set style fill solid 0.8 border -1\nset boxwidth 0.9\nset grid ytics\n"
                   "set xtics rotate by -20\nset yrange [0:*]\n" + extra +
                   ("set key top right\n" if ncol > 1 else "unset key\n") + f"plot {plot}\n", png):
            made.append(png)
        os.unlink(dat)

    d = res["scenarios"].get("seed003", {})
    bars("seed003_cpu", "seed003: CPU at 200 msgs/s to 500 clients", "CPU % of one core",
         [(LABEL.get(s, s), d[s]["cpu_pct"]) for s in systems(res, "seed003") if not err(d[s])])
    d = res["scenarios"].get("idle", {})
    bars("idle_rss", "idle: RSS per subscribed idle connection", "bytes per connection (log)",
         [(LABEL.get(s, s), d[s]["bytes_per_conn"]) for s in systems(res, "idle")
          if not err(d[s]) and d[s].get("bytes_per_conn")], "set logscale y\nset yrange [10:*]\n")
    d = res["scenarios"].get("ingest", {})
    bars("ingest", "ingest: messages per CPU-second of the system, one subscriber",
         "messages / CPU-second (log)",
         [(LABEL.get(s, s), d[s].get("250", {}).get("per_core"), d[s].get("3000", {}).get("per_core"))
          for s in systems(res, "ingest") if not err(d[s])], "set logscale y\nset yrange [1000:*]\n")
    return made


def write(res, out):
    made = plots(res, out)
    parts = [md_targets(res), md_seed003(res), md_fanout(res), md_idle(res), md_storm(res),
             md_ingest(res), md_filters(res), md_history(res), md_meta(res)]
    figs = "".join(f"![{os.path.basename(p)}]({os.path.basename(p)})\n" for p in made)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("## Results\n\n" + "\n".join(p for p in parts if p) + ("\n### Plots\n\n" + figs if figs else ""))


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results")
    with open(os.path.join(out, "results.json")) as f:
        write(json.load(f), out)
    print(os.path.join(out, "results.md"))

/* metrics.c: shared counters and the /metrics exposition (see metrics.h). */
#include "metrics.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>

#include "stats.h"

struct shm {
    uint64_t worker_restarts_total;
    int nslots;
    uint8_t live[METRICS_MAX_WORKERS];
    struct stats retired; /* totals of exited workers; gauges stay 0 */
    struct stats slot[METRICS_MAX_WORKERS];
};

static struct shm *shm;

int metrics_init(int nworkers)
{
    void *p;

    if (nworkers < 1 || nworkers > METRICS_MAX_WORKERS) {
        errno = EINVAL;
        return -1;
    }
    p = mmap(NULL, sizeof(struct shm), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
             -1, 0);
    if (p == MAP_FAILED)
        return -1;
    shm = p;
    shm->nslots = nworkers;
    return 0;
}

void metrics_free(void)
{
    if (shm != NULL)
        munmap(shm, sizeof(*shm));
    shm = NULL;
}

void metrics_attach(int slot)
{
    if (shm == NULL)
        return;
    memset(&shm->slot[slot], 0, sizeof(shm->slot[slot]));
    stats = &shm->slot[slot];
    shm->live[slot] = 1;
}

/* Counters (monotonic) of struct stats, by offset, so that adding a slot to
 * the retired totals and rendering both walk one list. */
#define CTR(field, name, help) {offsetof(struct stats, field), name, help}
struct counter {
    size_t off;
    const char *name;
    const char *help;
};

static const struct counter counters[] = {
    CTR(connections_total, "broker_connections_total", "TCP connections accepted."),
    CTR(sessions_total, "broker_sessions_total", "WebSocket handshakes completed."),
    CTR(redis_reconnects_total, "broker_redis_reconnects_total",
        "Redis links re-established after a loss."),
    CTR(redis_messages_total, "broker_redis_messages_total", "Messages received from Redis."),
    CTR(redis_bytes_total, "broker_redis_bytes_total", "Payload bytes received from Redis."),
    CTR(redis_send_failures_total, "broker_redis_send_failures_total",
        "Commands to Redis that could not be written (the link was then dropped)."),
    CTR(frames_sent_total, "broker_frames_sent_total", "Batch frames queued to clients."),
    CTR(messages_delivered_total, "broker_messages_delivered_total",
        "Messages queued to clients (one per message per client)."),
    CTR(bytes_sent_total, "broker_bytes_sent_total", "Bytes written to client sockets."),
    CTR(slow_consumer_disconnects_total, "broker_slow_consumer_disconnects_total",
        "Clients closed for falling more than max_pending_bytes behind."),
    CTR(accept_errors_total, "broker_accept_errors_total",
        "accept() failures (file descriptors exhausted, ...)."),
};

static uint64_t get(const struct stats *s, size_t off)
{
    return __atomic_load_n((const uint64_t *)(const void *)((const char *)s + off),
                           __ATOMIC_RELAXED);
}

static void add(struct stats *dst, const struct stats *src, size_t off)
{
    *(uint64_t *)(void *)((char *)dst + off) += get(src, off);
}

void metrics_worker_exited(int slot, int restart)
{
    struct stats *s;
    size_t i;

    if (shm == NULL)
        return;
    s = &shm->slot[slot];
    for (i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
        add(&shm->retired, s, counters[i].off);
    for (i = 0; i < DROP_NREASONS; i++)
        add(&shm->retired, s, offsetof(struct stats, dropped_total) + i * sizeof(uint64_t));
    for (i = 0; i < ERR_NREASONS; i++)
        add(&shm->retired, s, offsetof(struct stats, errors_total) + i * sizeof(uint64_t));
    for (i = 0; i < STATS_LOSS_NREASONS; i++)
        add(&shm->retired, s,
            offsetof(struct stats, redis_link_losses_total) + i * sizeof(uint64_t));
    memset(s, 0, sizeof(*s));
    shm->live[slot] = 0;
    if (restart)
        shm->worker_restarts_total++;
}

/* Sums field `off` over the live slots (and the retired totals). */
static uint64_t sum(size_t off, int with_retired)
{
    uint64_t t = with_retired ? get(&shm->retired, off) : 0;
    int i;

    for (i = 0; i < shm->nslots; i++)
        t += get(&shm->slot[i], off);
    return t;
}

static int header(struct proto_buf *o, const char *name, const char *type, const char *help)
{
    return proto_buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int gauge(struct proto_buf *o, const char *name, const char *help, uint64_t v)
{
    if (header(o, name, "gauge", help) != 0)
        return -1;
    return proto_buf_printf(o, "%s %llu\n", name, (unsigned long long)v);
}

static const char *drop_label(size_t i)
{
    return stats_drop_name((enum stats_drop)i);
}

static const char *err_label(size_t i)
{
    return stats_err_name((enum stats_err)i);
}

static const char *loss_label(size_t i)
{
    return stats_loss_name((enum stats_redis_loss)i);
}

/* A counter family with one sample per label value: an array of n counters
 * at offset off in struct stats. */
static int labeled(struct proto_buf *o, const char *name, const char *help, const char *label,
                   size_t off, size_t n, const char *(*value)(size_t))
{
    size_t i;
    int rc = header(o, name, "counter", help);

    for (i = 0; i < n; i++)
        rc |= proto_buf_printf(o, "%s{%s=\"%s\"} %llu\n", name, label, value(i),
                               (unsigned long long)sum(off + i * sizeof(uint64_t), 1));
    return rc;
}

int metrics_render(struct proto_buf *o)
{
    static struct shm local;
    size_t i;
    int w, live = 0, rc = 0;

    if (shm == NULL) {
        /* A process without a master (tests): this process's counters. */
        memset(&local, 0, sizeof(local));
        local.nslots = 1;
        local.live[0] = 1;
        local.slot[0] = *stats;
        shm = &local;
    }
    for (w = 0; w < shm->nslots; w++)
        live += shm->live[w];
    rc |= gauge(o, "broker_workers", "Worker processes running.", (uint64_t)live);
    rc |= gauge(o, "broker_connections", "Open WebSocket connections.",
                sum(offsetof(struct stats, connections), 0));
    rc |= gauge(o, "broker_subscriptions", "Client subscriptions (client x channel).",
                sum(offsetof(struct stats, subscriptions), 0));
    rc |= gauge(o, "broker_channels",
                "Channels subscribed in Redis, summed over workers (each worker "
                "subscribes for its own clients).",
                sum(offsetof(struct stats, channels), 0));
    rc |= header(o, "broker_redis_up", "gauge", "1 while the worker's Redis link is ready.");
    for (w = 0; w < shm->nslots; w++)
        if (shm->live[w])
            rc |= proto_buf_printf(o, "broker_redis_up{worker=\"%d\"} %llu\n", w + 1,
                                   (unsigned long long)get(&shm->slot[w],
                                                           offsetof(struct stats, redis_up)));
    for (i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
        rc |= header(o, counters[i].name, "counter", counters[i].help);
        rc |= proto_buf_printf(o, "%s %llu\n", counters[i].name,
                               (unsigned long long)sum(counters[i].off, 1));
    }
    rc |= labeled(o, "broker_messages_dropped_total", "Messages dropped, by reason.", "reason",
                  offsetof(struct stats, dropped_total), DROP_NREASONS, drop_label);
    rc |= labeled(o, "broker_client_errors_total",
                  "Requests and frames refused, by the answer they got.", "kind",
                  offsetof(struct stats, errors_total), ERR_NREASONS, err_label);
    rc |= labeled(o, "broker_redis_link_losses_total",
                  "Redis connections lost (subscriber links, shards, sentinels, topology "
                  "queries), by reason; overload: closed while messages poured in, most "
                  "likely Redis's client-output-buffer-limit pubsub.",
                  "reason", offsetof(struct stats, redis_link_losses_total),
                  STATS_LOSS_NREASONS, loss_label);
    rc |= header(o, "broker_worker_restarts_total", "counter",
                 "Workers replaced after they died.");
    rc |= proto_buf_printf(o, "broker_worker_restarts_total %llu\n",
                           (unsigned long long)__atomic_load_n(&shm->worker_restarts_total,
                                                               __ATOMIC_RELAXED));
    if (shm == &local)
        shm = NULL;
    return rc ? -1 : 0;
}

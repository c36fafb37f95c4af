/* metrics.c: shared counters and the /metrics exposition (see metrics.h). */
#include "metrics.h"

#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>

#include "stats.h"
#include "util.h"

/* Who writes what in the shared region:
 *   slot[i].s        the worker of slot i, with plain increments (it is the
 *                    only writer while it lives); the master zeroes it once
 *                    that worker is dead and reaped;
 *   seq, live[], retired, worker_restarts_total
 *                    the master only, inside write_begin()/write_end().
 * Readers (a worker rendering /metrics) never write.
 *
 * Retiring a dead worker's slot moves its counters into `retired`: add,
 * then zero. A reader summing retired + every slot in between would count
 * them twice (or, in the other order, not at all), and the next scrape
 * would show the counter going down, which Prometheus takes for a reset.
 * So `seq` makes retirement atomic for readers, as a seqlock: it is odd
 * while the master is changing things; a reader copies what it needs and
 * keeps the copy only if seq was even and unchanged across it, else it
 * tries again. A reader thus sees the slot before retirement or the
 * retired totals after it, never both and never neither.
 *
 * Memory order (Boehm, "Can seqlocks get along with programming language
 * memory models?", 2012). Every access to the shared fields is an __atomic
 * one (relaxed), so nothing is a data race except the workers' own plain
 * increments of their live slots, which no seqlock is needed for: each
 * field only grows, and a reader may take any value of it.
 *   writer: seq = s+1 (relaxed); release fence; data stores (relaxed);
 *           seq = s+2 (release store).
 *   reader: s0 = seq (acquire load); data loads (relaxed); acquire fence;
 *           s1 = seq (relaxed); keep the copy iff s0 == s1 and s0 is even.
 * If the reader's s0 is the value of a write_end() store (release ->
 * acquire), every data store of that retirement happens before its data
 * loads: it reads the new values or later ones. If any of its data loads
 * reads a value stored after a later write_begin()'s release fence, that
 * fence synchronizes with the reader's acquire fence, so the store of the
 * odd seq happens before the reader's second load of seq: s1 != s0 and the
 * copy is thrown away. Hence a kept copy saw no store of a retirement that
 * had not finished before it began. On x86-64 all of this compiles to plain
 * moves (the fences only stop the compiler). */
struct shm_slot {
    _Alignas(64) struct stats s; /* its own cache lines: workers do not share them */
};

struct shm {
    uint64_t seq;
    uint64_t worker_restarts_total;
    int nslots;
    uint8_t live[METRICS_MAX_WORKERS];
    struct stats retired; /* counters of exited workers; their gauges stay 0 */
    struct shm_slot slot[METRICS_MAX_WORKERS];
};

/* struct stats is walked as an array of uint64_t. */
#define NWORDS (sizeof(struct stats) / sizeof(uint64_t))
_Static_assert(sizeof(struct stats) % sizeof(uint64_t) == 0, "struct stats holds uint64_t only");

/* A reader gives up after this long of finding a retirement in progress
 * (only a master killed in the middle of one leaves seq odd for good; its
 * workers then stop anyway, by PR_SET_PDEATHSIG). */
#define READ_GIVE_UP_MS 100

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

static uint64_t load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void store(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

static uint64_t *words(struct stats *s)
{
    return (uint64_t *)(void *)s;
}

/* The master's side of the seqlock (see the top of the file). */
static void write_begin(void)
{
    store(&shm->seq, load(&shm->seq) + 1);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static void write_end(void)
{
    __atomic_store_n(&shm->seq, load(&shm->seq) + 1, __ATOMIC_RELEASE);
}

void metrics_worker_started(int slot)
{
    if (shm == NULL)
        return;
    write_begin();
    __atomic_store_n(&shm->live[slot], 1, __ATOMIC_RELAXED);
    write_end();
}

void metrics_attach(int slot)
{
    /* The slot is zero: never used, or zeroed when its last worker was
     * retired (before this one was forked). */
    if (shm != NULL)
        stats = &shm->slot[slot].s;
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
    CTR(history_requests_total, "broker_history_requests_total",
        "Subscribes that asked for history (since, history N) or the channel's position."),
    CTR(history_reads_total, "broker_history_reads_total",
        "History reads sent to Redis (requests of one channel share a read)."),
    CTR(history_recovered_total, "broker_history_recovered_total",
        "Resumes (since) answered recovered:true."),
    CTR(history_unrecovered_total, "broker_history_unrecovered_total",
        "Resumes (since) answered recovered:false (nothing kept, too far, other epoch)."),
    CTR(history_messages_total, "broker_history_messages_total",
        "Messages delivered from history (resumes and history N)."),
    CTR(history_dropped_total, "broker_history_dropped_total",
        "Redis payloads dropped for a malformed history prefix."),
    CTR(frames_sent_total, "broker_frames_sent_total", "Batch frames queued to clients."),
    CTR(messages_delivered_total, "broker_messages_delivered_total",
        "Messages queued to clients (one per message per client)."),
    CTR(bytes_sent_total, "broker_bytes_sent_total", "Bytes written to client sockets."),
    CTR(slow_consumer_disconnects_total, "broker_slow_consumer_disconnects_total",
        "Clients closed for falling more than max_pending_bytes behind."),
    CTR(accept_errors_total, "broker_accept_errors_total",
        "accept() failures (file descriptors exhausted, ...)."),
};

/* Adds the counter at offset off of src to dst (the master, retiring). */
static void retire_word(struct stats *dst, struct stats *src, size_t off)
{
    uint64_t *d = words(dst) + off / sizeof(uint64_t);

    store(d, load(d) + load(words(src) + off / sizeof(uint64_t)));
}

void metrics_worker_exited(int slot, int restart)
{
    struct stats *s;
    size_t i;

    if (shm == NULL)
        return;
    s = &shm->slot[slot].s;
    write_begin();
    for (i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
        retire_word(&shm->retired, s, counters[i].off);
    for (i = 0; i < DROP_NREASONS; i++)
        retire_word(&shm->retired, s, offsetof(struct stats, dropped_total) + i * sizeof(uint64_t));
    for (i = 0; i < ERR_NREASONS; i++)
        retire_word(&shm->retired, s, offsetof(struct stats, errors_total) + i * sizeof(uint64_t));
    for (i = 0; i < STATS_LOSS_NREASONS; i++)
        retire_word(&shm->retired, s,
                    offsetof(struct stats, redis_link_losses_total) + i * sizeof(uint64_t));
    for (i = 0; i < NWORDS; i++)
        store(words(s) + i, 0);
    __atomic_store_n(&shm->live[slot], 0, __ATOMIC_RELAXED);
    if (restart)
        store(&shm->worker_restarts_total, load(&shm->worker_restarts_total) + 1);
    write_end();
}

/* One consistent reading of the region: every counter as retired + the
 * slots, every gauge as the sum of the slots, taken under one generation
 * of seq, so that every number of one exposition comes from the same
 * state. */
struct snapshot {
    struct stats total;
    uint64_t restarts;
    int nslots;
    int nlive;
    uint8_t live[METRICS_MAX_WORKERS];
    uint64_t redis_up[METRICS_MAX_WORKERS];
};

static void copy_region(struct snapshot *sn)
{
    const uint64_t *src;
    uint64_t *dst = words(&sn->total);
    size_t k;
    int i;

    sn->nslots = shm->nslots;
    sn->nlive = 0;
    sn->restarts = load(&shm->worker_restarts_total);
    src = words(&shm->retired);
    for (k = 0; k < NWORDS; k++)
        dst[k] = load(src + k);
    for (i = 0; i < sn->nslots; i++) {
        src = words(&shm->slot[i].s);
        for (k = 0; k < NWORDS; k++)
            dst[k] += load(src + k);
        sn->live[i] = __atomic_load_n(&shm->live[i], __ATOMIC_RELAXED);
        sn->nlive += sn->live[i];
        sn->redis_up[i] = load(&shm->slot[i].s.redis_up);
    }
}

/* Returns 0, or -1 (EAGAIN) when a retirement seemed to last for ever. */
static int snapshot_take(struct snapshot *sn)
{
    uint64_t s0, give_up = 0;

    if (shm == NULL) {
        /* A process without a master (tests): this process's counters. */
        memset(sn, 0, sizeof(*sn));
        sn->total = *stats;
        sn->nslots = sn->nlive = 1;
        sn->live[0] = 1;
        sn->redis_up[0] = stats->redis_up;
        return 0;
    }
    for (;;) {
        s0 = __atomic_load_n(&shm->seq, __ATOMIC_ACQUIRE);
        if ((s0 & 1) == 0) {
            copy_region(sn);
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (load(&shm->seq) == s0)
                return 0;
        }
        /* The master is inside an update (a retirement is a few hundred
         * stores): let it run, it may be waiting for this CPU. */
        if (give_up == 0)
            give_up = mono_ms() + READ_GIVE_UP_MS;
        else if (mono_ms() >= give_up)
            break;
        sched_yield();
    }
    errno = EAGAIN;
    return -1;
}

static uint64_t total(const struct snapshot *sn, size_t off)
{
    return *(const uint64_t *)(const void *)((const char *)&sn->total + off);
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
static int labeled(struct proto_buf *o, const struct snapshot *sn, const char *name,
                   const char *help, const char *label, size_t off, size_t n,
                   const char *(*value)(size_t))
{
    size_t i;
    int rc = header(o, name, "counter", help);

    for (i = 0; i < n; i++)
        rc |= proto_buf_printf(o, "%s{%s=\"%s\"} %llu\n", name, label, value(i),
                               (unsigned long long)total(sn, off + i * sizeof(uint64_t)));
    return rc;
}

int metrics_render(struct proto_buf *o)
{
    static struct snapshot sn; /* 2.6 KB: not on the loop's stack */
    size_t i;
    int w, rc = 0;

    if (snapshot_take(&sn) != 0)
        return -1;
    rc |= gauge(o, "broker_workers", "Worker processes running.", (uint64_t)sn.nlive);
    rc |= gauge(o, "broker_connections", "Open WebSocket connections.",
                total(&sn, offsetof(struct stats, connections)));
    rc |= gauge(o, "broker_subscriptions", "Client subscriptions (client x channel).",
                total(&sn, offsetof(struct stats, subscriptions)));
    rc |= gauge(o, "broker_channels",
                "Channels subscribed in Redis, summed over workers (each worker "
                "subscribes for its own clients).",
                total(&sn, offsetof(struct stats, channels)));
    rc |= header(o, "broker_redis_up", "gauge", "1 while the worker's Redis link is ready.");
    for (w = 0; w < sn.nslots; w++)
        if (sn.live[w])
            rc |= proto_buf_printf(o, "broker_redis_up{worker=\"%d\"} %llu\n", w + 1,
                                   (unsigned long long)sn.redis_up[w]);
    for (i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
        rc |= header(o, counters[i].name, "counter", counters[i].help);
        rc |= proto_buf_printf(o, "%s %llu\n", counters[i].name,
                               (unsigned long long)total(&sn, counters[i].off));
    }
    rc |= labeled(o, &sn, "broker_messages_dropped_total", "Messages dropped, by reason.",
                  "reason", offsetof(struct stats, dropped_total), DROP_NREASONS, drop_label);
    rc |= labeled(o, &sn, "broker_client_errors_total",
                  "Requests and frames refused, by the answer they got.", "kind",
                  offsetof(struct stats, errors_total), ERR_NREASONS, err_label);
    rc |= labeled(o, &sn, "broker_redis_link_losses_total",
                  "Redis connections lost (subscriber links, shards, sentinels, topology "
                  "queries), by reason; overload: closed while messages poured in, most "
                  "likely Redis's client-output-buffer-limit pubsub.",
                  "reason", offsetof(struct stats, redis_link_losses_total),
                  STATS_LOSS_NREASONS, loss_label);
    rc |= header(o, "broker_worker_restarts_total", "counter",
                 "Workers replaced after they died.");
    rc |= proto_buf_printf(o, "broker_worker_restarts_total %llu\n",
                           (unsigned long long)sn.restarts);
    if (rc != 0)
        errno = ENOMEM;
    return rc ? -1 : 0;
}

/* test_metrics.c: the shared metrics region (broker/metrics.h) while the
 * master retires dead workers' slots: a reader in another process renders
 * /metrics as fast as it can and every counter must be monotonic from one
 * rendering to the next, and the totals exact at the end.
 *
 * This process plays both the master and its workers, one after the other
 * (a worker's increments, then its death and retirement, then the next
 * worker), which is what the master sees: a slot is only retired once its
 * worker is gone. Slot 0 stays live and keeps counting meanwhile. Every
 * slot exists and the dying one is the last, so that a reader summing the
 * slots has the longest time between reading the retired totals and that
 * slot, the window the race needs. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "broker/metrics.h"
#include "broker/stats.h"
#include "broker/util.h"
#include "t.h"

#define READ_MS 1500     /* how long the reader renders */
#define MAX_SERIES 64

struct series {
    char name[96];
    double value;
};

/* Parses the samples of the counters (names ending in _total, labels
 * included) of one exposition into out. Returns how many. */
static int parse_counters(const char *text, size_t len, struct series *out)
{
    const char *p = text, *end = text + len;
    int n = 0;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *sp;
        size_t name_len;

        if (nl == NULL)
            nl = end;
        sp = p;
        while (sp < nl && *sp != ' ')
            sp++;
        name_len = (size_t)(sp - p);
        if (*p != '#' && sp < nl && name_len < sizeof(out[0].name) && n < MAX_SERIES) {
            char num[32];
            size_t vl = (size_t)(nl - sp - 1);
            const char *brace = memchr(p, '{', name_len);
            size_t base = brace ? (size_t)(brace - p) : name_len;
            if (base > 6 && memcmp(p + base - 6, "_total", 6) == 0 && vl < sizeof(num)) {
                memcpy(out[n].name, p, name_len);
                out[n].name[name_len] = '\0';
                memcpy(num, sp + 1, vl);
                num[vl] = '\0';
                out[n].value = strtod(num, NULL);
                n++;
            }
        }
        p = nl + 1;
    }
    return n;
}

static double find(const struct series *s, int n, const char *name)
{
    int i;

    for (i = 0; i < n; i++)
        if (strcmp(s[i].name, name) == 0)
            return s[i].value;
    return -1;
}

/* The reader process: renders for READ_MS, exits 0 when every counter
 * only ever grew, 1 (after printing the first decrease) otherwise. */
static void reader(void)
{
    static struct series prev[MAX_SERIES], cur[MAX_SERIES];
    struct proto_buf b = {0};
    uint64_t until = mono_ms() + READ_MS, renders = 0;
    int np = 0, nc, i;

    while (mono_ms() < until) {
        proto_buf_reset(&b);
        if (metrics_render(&b) != 0) {
            fprintf(stderr, "metrics_render: %s\n", strerror(errno));
            _exit(2);
        }
        renders++;
        nc = parse_counters(b.data, b.len, cur);
        for (i = 0; i < np; i++) {
            double now = find(cur, nc, prev[i].name);
            if (now < prev[i].value) {
                fprintf(stderr, "after %llu renderings: %s went from %.0f to %.0f\n",
                        (unsigned long long)renders, prev[i].name, prev[i].value, now);
                _exit(1);
            }
        }
        memcpy(prev, cur, sizeof(cur));
        np = nc;
    }
    proto_buf_free(&b);
    _exit(renders > 0 && np > 10 ? 0 : 3);
}

#define DYING (METRICS_MAX_WORKERS - 1)

/* Spins for us microseconds (no sleep: the reader must keep its CPU). */
static void spin_us(long us)
{
    struct timespec t0, t;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    do
        clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000 < us);
}

/* One worker's life in the last slot: it counts, lives on long enough for
 * the reader to render its counts a few times, dies and is retired. A
 * reader that then counted its slot twice, or not at all, shows a counter
 * going down from its previous rendering. */
static void one_life(void)
{
    metrics_worker_started(DYING);
    metrics_attach(DYING);
    stats->connections_total += 3;
    stats->frames_sent_total += 5;
    stats->messages_delivered_total += 7;
    stats->errors_total[ERR_HTTP_404] += 1;
    stats->dropped_total[DROP_SLOW_CONSUMER] += 2;
    stats->connections = 1; /* a gauge: goes with the slot */
    spin_us(200);
    metrics_worker_exited(DYING, 1);
    spin_us(100);
}

static void test_retirement_is_atomic_for_readers(void)
{
    struct proto_buf b = {0};
    struct series s[MAX_SERIES];
    uint64_t lives = 0, live_counts = 0;
    pid_t pid;
    int st = 0, n;

    CHECK(metrics_init(METRICS_MAX_WORKERS) == 0);
    metrics_worker_started(0);
    pid = fork();
    CHECK(pid >= 0);
    if (pid < 0)
        return;
    if (pid == 0)
        reader();
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r != 0) {
            CHECK(r == pid);
            break;
        }
        one_life();
        lives++;
        /* The live worker of slot 0 counts too, without any lock. */
        metrics_attach(0);
        stats->connections_total++;
        live_counts++;
    }
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(lives > 100);

    /* Every count of every life is there once: the retired totals plus
     * the live slot. */
    CHECK(metrics_render(&b) == 0);
    n = parse_counters(b.data, b.len, s);
    CHECK(find(s, n, "broker_connections_total") == (double)(3 * lives + live_counts));
    CHECK(find(s, n, "broker_frames_sent_total") == (double)(5 * lives));
    CHECK(find(s, n, "broker_messages_delivered_total") == (double)(7 * lives));
    CHECK(find(s, n, "broker_client_errors_total{kind=\"http_404\"}") == (double)lives);
    CHECK(find(s, n, "broker_messages_dropped_total{reason=\"slow_consumer\"}") ==
          (double)(2 * lives));
    CHECK(find(s, n, "broker_worker_restarts_total") == (double)lives);
    CHECK(proto_buf_append_byte(&b, '\0') == 0);
    CHECK(strstr(b.data, "\nbroker_workers 1\n") != NULL);
    CHECK(strstr(b.data, "\nbroker_connections 0\n") != NULL);
    proto_buf_free(&b);
    metrics_free();
}

int main(void)
{
    test_retirement_is_atomic_for_readers();
    return t_done("metrics");
}

/* master.c: worker supervision, signals, reload (see master.h). Modelled on
 * nginx's master cycle, with sigtimedwait() in place of handlers + flags. */
#include "master.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "conn.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"

#define RESPAWN_MIN_MS 1000    /* first delay for a worker that keeps dying */
#define RESPAWN_MAX_MS 30000
#define YOUNG_MS 10000         /* a worker dying sooner than this "keeps dying" */
#define KILL_GRACE_MS 2000     /* past shutdown_timeout_s, before SIGKILL */

struct slot {
    pid_t pid;           /* 0 when not running */
    uint64_t started_ms;
    uint64_t respawn_at_ms;
    int young;           /* deaths in a row, each within YOUNG_MS of its start */
};

struct master {
    struct cfg *cfg;
    struct lsn_set *lsn; /* every worker's listening sockets, kept across respawns */
    struct slot *slots;
    int n;
    int stopping;        /* 1 after the first stop signal, 2 after the second */
    uint64_t deadline_ms;
    sigset_t handled;
    sigset_t saved;
};

static void signal_workers(struct master *m, int sig)
{
    int i;

    for (i = 0; i < m->n; i++)
        if (m->slots[i].pid > 0)
            kill(m->slots[i].pid, sig);
}

static int running(const struct master *m)
{
    int i, k = 0;

    for (i = 0; i < m->n; i++)
        k += m->slots[i].pid > 0;
    return k;
}

/* Forks worker i. Returns 0 in the master; in the child, runs the worker
 * and returns 1 with its exit status in *status.
 *
 * Each listening socket has one owner per process. In the master it is the
 * slot (closed by begin_stop or at exit). In the child the slot hands its
 * own socket to worker_run, which owns it from then on whatever happens
 * (its listener closes it, or worker_run does when it fails before making
 * one), and every slot of the child's copy is left at -1 so that nothing
 * closes a number the worker may have reused by then. */
static int spawn(struct master *m, int i, int *status)
{
    pid_t master_pid = getpid(), pid = fork();
    struct lsn_sock socks[CFG_MAX_LISTEN];
    int n;

    if (pid < 0) {
        log_error("fork: %s", strerror(errno));
        m->slots[i].respawn_at_ms = conn_now_ms() + RESPAWN_MIN_MS;
        return 0;
    }
    if (pid > 0) {
        m->slots[i].pid = pid;
        m->slots[i].started_ms = conn_now_ms();
        metrics_worker_started(i);
        log_info("worker %d started (pid %d)", i + 1, (int)pid);
        return 0;
    }
    /* The child: a worker dies with its master instead of lingering. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != master_pid)
        _exit(1);
    n = lsn_take(m->lsn, i, socks);
    log_set_worker(i + 1);
    metrics_attach(i);
    /* Signals stay blocked until the worker's loop has its own handlers;
     * worker_run() unblocks them. */
    *status = worker_run(m->cfg, socks, n);
    return 1;
}

static void describe_exit(int st, char *buf, size_t len)
{
    if (WIFEXITED(st))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, len, "killed by signal %d (%s)%s", WTERMSIG(st), strsignal(WTERMSIG(st)),
                 WCOREDUMP(st) ? ", core dumped" : "");
    else
        snprintf(buf, len, "ended (status 0x%x)", (unsigned)st);
}

static void reap(struct master *m)
{
    pid_t pid;
    int st, i;
    char why[128];
    uint64_t now = conn_now_ms(), delay;

    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (i = 0; i < m->n && m->slots[i].pid != pid; i++)
            ;
        if (i == m->n)
            continue;
        struct slot *s = &m->slots[i];
        describe_exit(st, why, sizeof(why));
        s->pid = 0;
        metrics_worker_exited(i, !m->stopping);
        if (m->stopping) {
            log_info("worker %d (pid %d) %s", i + 1, (int)pid, why);
            continue;
        }
        /* Replaced at once; from the second death in a row of a worker that
         * dies young, after 1 s doubling up to 30 s. */
        if (now - s->started_ms >= YOUNG_MS)
            s->young = 0;
        s->young++;
        delay = s->young <= 1 ? 0 : (uint64_t)RESPAWN_MIN_MS << (s->young > 7 ? 5 : s->young - 2);
        if (delay > RESPAWN_MAX_MS)
            delay = RESPAWN_MAX_MS;
        s->respawn_at_ms = now + delay;
        if (delay)
            log_warn("worker %d (pid %d) %s; it keeps dying, next start in %llu ms", i + 1,
                     (int)pid, why, (unsigned long long)delay);
        else
            log_warn("worker %d (pid %d) %s; replacing it", i + 1, (int)pid, why);
    }
}

static void reload(struct master *m)
{
    struct cfg fresh;
    char err[1024], keys[512];

    if (m->cfg->file == NULL) {
        log_warn("SIGHUP: no configuration file to reload (started without -c)");
        return;
    }
    if (cfg_load(&fresh, m->cfg->file, err, sizeof(err)) != 0) {
        log_error("reload rejected, keeping the running configuration: %s", err);
        return;
    }
    if (cfg_diff_restart(m->cfg, &fresh, keys, sizeof(keys)) > 0)
        log_warn("reload: %s changed; that takes a restart (the old value stays in effect)",
                 keys);
    if (cfg_apply_reload(m->cfg, &fresh) != 0)
        log_error("reload: out of memory applying the new values");
    cfg_free(&fresh);
    log_set_level((enum log_level)m->cfg->log_level);
    log_info("configuration reloaded from %s", m->cfg->file);
    signal_workers(m, SIGHUP);
}

static void begin_stop(struct master *m, int sig)
{
    if (m->stopping) {
        log_warn("signal %d again: workers exit now", sig);
        m->stopping = 2;
        m->deadline_ms = conn_now_ms() + KILL_GRACE_MS;
        signal_workers(m, SIGTERM);
        return;
    }
    log_info("signal %d: stopping %d workers (up to %lld s)", sig, running(m),
             m->cfg->shutdown_timeout_s);
    m->stopping = 1;
    m->deadline_ms = conn_now_ms() + (uint64_t)m->cfg->shutdown_timeout_s * 1000 + KILL_GRACE_MS;
    /* Refuse new connections now rather than let them wait in a backlog
     * nobody will accept from. */
    lsn_close(m->lsn);
    signal_workers(m, SIGTERM);
}

/* Milliseconds until the next thing the loop must do by itself. */
static long next_wait_ms(const struct master *m, uint64_t now)
{
    uint64_t next = now + 1000;
    int i;

    if (m->stopping && m->deadline_ms < next)
        next = m->deadline_ms;
    for (i = 0; !m->stopping && i < m->n; i++)
        if (m->slots[i].pid == 0 && m->slots[i].respawn_at_ms < next)
            next = m->slots[i].respawn_at_ms;
    return next > now ? (long)(next - now) : 0;
}

static int loop(struct master *m, int *is_worker)
{
    int i, sig, status = 0;

    for (;;) {
        uint64_t now = conn_now_ms();
        long wait_ms = next_wait_ms(m, now);
        struct timespec ts = {wait_ms / 1000, (wait_ms % 1000) * 1000000L};

        sig = sigtimedwait(&m->handled, NULL, &ts);
        switch (sig) {
        case SIGTERM:
        case SIGINT:
            begin_stop(m, sig);
            break;
        case SIGHUP:
            if (!m->stopping)
                reload(m);
            break;
        case SIGUSR1:
            if (log_reopen() != 0)
                log_error("reopening the log file: %s", strerror(errno));
            signal_workers(m, SIGUSR1);
            break;
        default:
            break; /* SIGCHLD or the timeout: handled below */
        }
        reap(m);
        now = conn_now_ms();
        if (m->stopping) {
            if (running(m) == 0)
                return 0;
            if (now >= m->deadline_ms) {
                log_warn("%d workers still running past the deadline: killing them", running(m));
                signal_workers(m, SIGKILL);
                m->deadline_ms = now + 1000;
            }
            continue;
        }
        for (i = 0; i < m->n; i++) {
            if (m->slots[i].pid != 0 || now < m->slots[i].respawn_at_ms)
                continue;
            if (spawn(m, i, &status)) {
                *is_worker = 1;
                return status;
            }
        }
    }
}

int master_run(struct cfg *cfg, int (*on_bound)(void *arg), void *arg, int *is_worker)
{
    struct master m;
    int i, rc = 1, status, capped;
    long ncpus;
    char where[512];

    memset(&m, 0, sizeof(m));
    *is_worker = 0;
    m.cfg = cfg;
    /* As nginx's master: a log line to a closed pipe (stderr under a
     * supervisor that went away) must fail with EPIPE, not kill the
     * process that keeps the workers. Workers inherit it. */
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        log_error("ignoring SIGPIPE: %s", strerror(errno));
        return 1;
    }
    ncpus = sysconf(_SC_NPROCESSORS_ONLN);
    m.n = cfg_workers(cfg, ncpus, &capped);
    if (capped)
        log_warn("workers auto: %ld CPUs online, but at most %d workers (METRICS_MAX_WORKERS); "
                 "running %d", ncpus, METRICS_MAX_WORKERS, m.n);
    if ((m.slots = calloc((size_t)m.n, sizeof(*m.slots))) == NULL)
        return 1;
    if (metrics_init(m.n) != 0) {
        log_error("shared memory for metrics: %s", strerror(errno));
        goto done;
    }
    if ((m.lsn = lsn_open(cfg, m.n)) == NULL)
        goto done;
    if (on_bound != NULL && on_bound(arg) != 0)
        goto done;
    sigemptyset(&m.handled);
    sigaddset(&m.handled, SIGCHLD);
    sigaddset(&m.handled, SIGTERM);
    sigaddset(&m.handled, SIGINT);
    sigaddset(&m.handled, SIGHUP);
    sigaddset(&m.handled, SIGUSR1);
    sigprocmask(SIG_BLOCK, &m.handled, &m.saved);
    lsn_describe(cfg, where, sizeof(where));
    log_info("master: %d workers on %s", m.n, where);
    for (i = 0; i < m.n; i++) {
        if (spawn(&m, i, &status)) {
            *is_worker = 1;
            rc = status;
            goto done;
        }
    }
    rc = loop(&m, is_worker);
    if (!*is_worker)
        log_info("master: stopped");
done:
    /* In a worker the set is empty already (spawn handed its sockets over),
     * and only the master removes socket files. */
    lsn_free(m.lsn);
    free(m.slots);
    metrics_free();
    return rc;
}

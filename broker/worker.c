/* worker.c: one event loop and the wiring of its modules (see worker.h). */
#include "worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "batch.h"
#include "config.h"
#include "conn.h"
#include "docroot.h"
#include "filter.h"
#include "frame.h"
#include "histlib.h"
#include "history.h"
#include "http.h"
#include "listen.h"
#include "log.h"
#include "peer.h"
#include "protocol/json.h"
#include "redis.h"
#include "registry.h"
#include "session.h"
#include "stats.h"

#define ACCEPT_BACKOFF_MS 100
#define DROP_LOG_INTERVAL_MS 10000
#define STOP_POLL_MS 50

struct worker {
    struct event_base *base;
    struct cfg *cfg;
    struct evconnlistener *lev[CFG_MAX_LISTEN];
    int nlev;
    struct peer_table *peers;
    struct event *accept_retry;
    struct conn_set *conns;
    struct frame_builder *fb;
    struct reg *reg;
    struct rsub *sub;
    struct hist *hist;
    struct event *sig_term;
    struct event *sig_int;
    struct event *sig_hup;
    struct event *sig_usr1;
    struct event *stop_timer;
    struct event *stats_timer;
    struct stats last;        /* counters at the previous stats line */
    uint64_t last_ms;
    uint64_t stop_deadline_ms;
    int stopping;
    struct proto_buf scratch; /* a non-JSON payload encoded as a string */
    struct sess_env senv;
    struct http_env henv;
    struct docroot *docroot;  /* static_dir's files; NULL when off */
    uint64_t oversize_log_ms; /* last time an oversize drop was logged */
    uint64_t oversize_quiet;  /* drops not logged since */
};

/* Data path: Redis -> registry. */

static void note_oversize(struct worker *w, const char *ch, size_t clen, size_t n)
{
    uint64_t now = conn_now_ms();

    stats->dropped_total[DROP_OVERSIZE]++;
    /* One line per interval, however fast a publisher misbehaves. */
    if (w->oversize_log_ms != 0 && now - w->oversize_log_ms < DROP_LOG_INTERVAL_MS) {
        w->oversize_quiet++;
        return;
    }
    log_warn("dropped a %zu-byte payload on channel '%.*s' (max_message_bytes %lld)%s", n,
             (int)(clen > 64 ? 64 : clen), ch, w->cfg->max_message_bytes,
             w->oversize_quiet ? " and earlier ones not logged" : "");
    w->oversize_log_ms = now;
    w->oversize_quiet = 0;
}

static void on_message(void *arg, const char *ch, size_t clen, const char *raw, size_t rawlen)
{
    struct worker *w = arg;
    struct proto_pos pos;
    const char *p;
    size_t n;
    int h = proto_pos_strip(raw, rawlen, &pos, &p, &n);

    stats->redis_messages_total++;
    stats->redis_bytes_total += rawlen;
    if (h < 0) {
        /* NUL 'H' starts a history position: a publisher that sends such a
         * payload without one is told by the counter. */
        stats->history_dropped_total++;
        return;
    }
    if (n > (size_t)w->cfg->max_message_bytes) {
        note_oversize(w, ch, clen, n);
        return;
    }
    /* Valid JSON goes out byte for byte; anything else as a JSON string. */
    if (proto_json_validate(p, n)) {
        reg_publish(w->reg, ch, clen, p, n, 1, h ? &pos : NULL);
        return;
    }
    proto_buf_reset(&w->scratch);
    if (proto_json_encode_string(&w->scratch, p, n) != 0) {
        stats->dropped_total[DROP_NOMEM]++;
        return;
    }
    reg_publish(w->reg, ch, clen, w->scratch.data, w->scratch.len, 0, h ? &pos : NULL);
}

/* Control path: registry -> Redis. */

static void on_first(void *arg, const char *name, size_t len)
{
    struct worker *w = arg;

    if (w->sub != NULL && rsub_subscribe(w->sub, name, len) != 0)
        log_error("out of memory subscribing channel '%.*s' in Redis", (int)(len > 64 ? 64 : len),
                  name);
}

static void on_last(void *arg, const char *name, size_t len)
{
    struct worker *w = arg;

    if (w->sub != NULL)
        rsub_unsubscribe(w->sub, name, len);
}

static int sub_pending(void *arg, const char *name, size_t len)
{
    struct worker *w = arg;

    return w->sub != NULL && rsub_is_pending(w->sub, name, len);
}

/* Redis -> registry: the subscriber's state. */

static void on_settled(void *arg, const char *name, size_t len)
{
    struct worker *w = arg;

    reg_settle(w->reg, name, len);
}

static void on_redis_up(void *arg)
{
    struct worker *w = arg;

    log_info("redis: up (%zu channels)", reg_channel_count(w->reg));
}

static void on_redis_down(void *arg)
{
    struct worker *w = arg;

    log_warn("redis: link down; clients stay connected, delivery resumes on reconnect");
    /* Nothing will be confirmed before the link is back. */
    reg_settle_all(w->reg);
}

/* Every primary gets the history library whenever a command connection to
 * it is ready (histlib.h). */
static void on_command_ready(void *arg, struct rconn *c)
{
    struct worker *w = arg;

    hlib_load(c, w->cfg->history_size, w->cfg->history_ttl_s,
              w->cfg->redis_mode == CFG_REDIS_CLUSTER && w->cfg->cluster_sharded);
}

static int healthy(void *arg)
{
    struct worker *w = arg;

    return w->sub != NULL && rsub_is_up(w->sub);
}

/* Accepting. */

static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct worker *w = arg;

    (void)lev;
    /* TCP_NODELAY comes from the listening socket (listen.c). */
    http_accept(w->conns, fd, sa, (socklen_t)salen);
}

static void listeners_enable(struct worker *w, int on)
{
    int i;

    for (i = 0; i < w->nlev; i++)
        if (w->lev[i] != NULL && (on ? evconnlistener_enable(w->lev[i])
                                     : evconnlistener_disable(w->lev[i])) != 0)
            log_error("cannot %s a listener", on ? "resume" : "pause");
}

static void listeners_free(struct worker *w)
{
    int i;

    for (i = 0; i < w->nlev; i++)
        if (w->lev[i] != NULL)
            evconnlistener_free(w->lev[i]);
    w->nlev = 0;
}

static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    (void)fd;
    (void)what;
    listeners_enable(w, 1);
}

/* Out of file descriptors, accept() fails at once for as long as the
 * backlog holds connections: pause instead of spinning on it. */
static void accept_error_cb(struct evconnlistener *lev, void *arg)
{
    struct worker *w = arg;
    int err = EVUTIL_SOCKET_ERROR();
    struct timeval tv = {0, ACCEPT_BACKOFF_MS * 1000};

    (void)lev;
    stats->accept_errors_total++;
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        log_warn("accept: %s; pausing accepts for %d ms (%zu connections open)",
                 strerror(err), ACCEPT_BACKOFF_MS, conn_set_count(w->conns));
        listeners_enable(w, 0);
        if (evtimer_add(w->accept_retry, &tv) != 0) {
            log_error("cannot arm the accept retry timer; accepting again now");
            listeners_enable(w, 1);
        }
        return;
    }
    log_warn("accept: %s", strerror(err));
}

/* Takes every socket, whatever happens: those not given to a listener are
 * closed here. */
static int listen_start(struct worker *w, struct lsn_sock *socks, int n)
{
    char where[512];
    int i, rc = 0;

    for (i = 0; i < n; i++) {
        if (rc != 0) {
            close(socks[i].fd);
            continue;
        }
        /* Backlog 0: the master already listens with its own backlog; -1
         * would have libevent call listen(fd, 128) again and shrink it. */
        w->lev[w->nlev] = evconnlistener_new(w->base, accept_cb, w,
                                             LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0,
                                             socks[i].fd);
        if (w->lev[w->nlev] == NULL) {
            log_error("listener on fd %d: %s", socks[i].fd, strerror(errno));
            close(socks[i].fd);
            rc = -1;
            continue;
        }
        evconnlistener_set_error_cb(w->lev[w->nlev], accept_error_cb);
        w->nlev++;
    }
    if (rc == 0) {
        lsn_describe(w->cfg, where, sizeof(where));
        log_info("serving %s, WebSocket path %s", where, w->cfg->ws_path);
    }
    return rc;
}

/* Reload and the stats line. */

static void stats_arm(struct worker *w)
{
    struct timeval tv = {(time_t)w->cfg->stats_interval_s, 0};

    evtimer_del(w->stats_timer);
    if (w->cfg->stats_interval_s > 0)
        evtimer_add(w->stats_timer, &tv);
}

/* One line per interval, as the field reports logged: what this worker
 * holds and its rates since the previous line. */
static void stats_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    uint64_t now = conn_now_ms();
    double secs = w->last_ms ? (double)(now - w->last_ms) / 1000.0 : 0;

    (void)fd;
    (void)what;
    if (secs > 0)
        log_info("stats: conns=%llu subs=%llu channels=%llu redis=%s in=%.0f msg/s "
                 "out=%.0f msg/s %.0f frames/s %.2f MB/s",
                 (unsigned long long)stats->connections,
                 (unsigned long long)stats->subscriptions, (unsigned long long)stats->channels,
                 stats->redis_up ? "up" : "down",
                 (double)(stats->redis_messages_total - w->last.redis_messages_total) / secs,
                 (double)(stats->messages_delivered_total - w->last.messages_delivered_total) /
                     secs,
                 (double)(stats->frames_sent_total - w->last.frames_sent_total) / secs,
                 (double)(stats->bytes_sent_total - w->last.bytes_sent_total) / secs / 1e6);
    w->last = *stats;
    w->last_ms = now;
    stats_arm(w);
}

/* max_connections 0 means what the open-file limit allows, keeping 64
 * descriptors for Redis, the listener, logs and the loop itself. */
static size_t resolve_max_connections(const struct cfg *c)
{
    struct rlimit rl;
    size_t cap = 1024;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        cap = rl.rlim_cur > 128 ? (size_t)rl.rlim_cur - 64 : 64;
    if (c->max_connections > 0 && (size_t)c->max_connections <= cap)
        return (size_t)c->max_connections;
    if (c->max_connections > 0)
        log_warn("max_connections %lld is over what the open-file limit allows; using %zu",
                 c->max_connections, cap);
    return cap;
}

static void docroot_skipped(void *arg, const char *path, const char *why)
{
    struct worker *w = arg;

    log_warn("static_dir %s: %s is not served: %s", w->cfg->static_dir, path, why);
}

/* (Re)reads static_dir into memory: at start and on every reload, so that
 * a file changed on disk is served new after SIGHUP and never half-way.
 * When the directory cannot be read, the files loaded before stay. This
 * reads up to DOCROOT_TOTAL_MAX bytes while the loop waits, once per
 * reload, so that no request ever does. */
static void docroot_reload(struct worker *w)
{
    const char *dir = w->cfg->static_dir;
    struct docroot *d = NULL;
    char err[256];

    if (*dir != '\0' && (d = docroot_load(dir, docroot_skipped, w, err, sizeof(err))) == NULL) {
        log_error("static_dir %s: %s; %s", dir, err,
                  w->docroot ? "keeping the files read before" : "serving no files");
        return;
    }
    docroot_free(w->docroot);
    w->docroot = d;
    w->henv.docroot = d;
    if (d != NULL)
        log_info("static_dir %s: %zu files, %zu bytes in memory", dir, docroot_count(d),
                 docroot_bytes(d));
}

static void apply_config(struct worker *w)
{
    const char *bad;
    size_t badlen;
    int n;

    w->henv.max_connections = resolve_max_connections(w->cfg);
    /* Checked by the configuration already; a failure keeps none trusted. */
    n = cidr_list_parse(w->cfg->trusted_proxies, w->henv.trusted, CIDR_MAX, &bad, &badlen);
    w->henv.ntrusted = n > 0 ? n : 0;
    log_set_level((enum log_level)w->cfg->log_level);
    batcher_configure(reg_batcher(w->reg), w->cfg->batch_interval_ms, w->cfg->batch_max_bytes);
    conn_set_set_max_pending(w->conns, (size_t)w->cfg->max_pending_bytes);
    if (w->hist != NULL)
        hist_configure(w->hist, w->cfg->history_recover_max);
    stats_arm(w);
}

static void reload(struct worker *w)
{
    struct cfg fresh;
    char err[1024];

    if (w->cfg->file == NULL)
        return;
    if (cfg_load(&fresh, w->cfg->file, err, sizeof(err)) != 0) {
        log_error("reload rejected, keeping the running configuration: %s", err);
        return;
    }
    if (cfg_apply_reload(w->cfg, &fresh) != 0)
        log_error("reload: out of memory applying the new values");
    cfg_free(&fresh);
    apply_config(w);
    docroot_reload(w);
    log_info("configuration reloaded (batch_interval_ms %lld, batch_max_bytes %lld)",
             w->cfg->batch_interval_ms, w->cfg->batch_max_bytes);
}

/* Stopping. */

static void close_one(struct conn *c, void *arg)
{
    (void)arg;
    if (sess_is_session(c))
        sess_close(c, 1001, "server shutting down");
    else
        conn_kill(c);
}

static void stop_poll_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    (void)fd;
    (void)what;
    if (conn_set_count(w->conns) == 0 || conn_now_ms() >= w->stop_deadline_ms)
        event_base_loopbreak(w->base);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct worker *w = arg;
    struct timeval tv = {0, STOP_POLL_MS * 1000};

    (void)what;
    if (sig == SIGHUP) {
        if (!w->stopping)
            reload(w);
        return;
    }
    if (sig == SIGUSR1) {
        if (log_reopen() != 0)
            log_error("reopening the log file: %s", strerror(errno));
        return;
    }
    if (w->stopping) {
        log_warn("second signal %d: exiting now", (int)sig);
        event_base_loopbreak(w->base);
        return;
    }
    w->stopping = 1;
    log_info("signal %d: shutting down (%zu connections, up to %lld s)", (int)sig,
             conn_set_count(w->conns), w->cfg->shutdown_timeout_s);
    listeners_free(w);
    evtimer_del(w->stats_timer);
    batch_flush_all(reg_batcher(w->reg));
    conn_set_foreach(w->conns, close_one, w);
    w->stop_deadline_ms = conn_now_ms() + (uint64_t)w->cfg->shutdown_timeout_s * 1000;
    w->stop_timer = event_new(w->base, -1, EV_PERSIST, stop_poll_cb, w);
    if (w->stop_timer == NULL || event_add(w->stop_timer, &tv) != 0)
        event_base_loopbreak(w->base);
}

/* Setup and teardown, in reverse order of each other. */

static void worker_free(struct worker *w)
{
    if (w->stop_timer)
        event_free(w->stop_timer);
    if (w->sig_term)
        event_free(w->sig_term);
    if (w->sig_int)
        event_free(w->sig_int);
    if (w->sig_hup)
        event_free(w->sig_hup);
    if (w->sig_usr1)
        event_free(w->sig_usr1);
    if (w->stats_timer)
        event_free(w->stats_timer);
    listeners_free(w);
    if (w->accept_retry)
        event_free(w->accept_retry);
    /* Sessions leave the registry as they are freed, and the registry tells
     * the Redis link, so connections go first and the link after them. */
    conn_set_free(w->conns);
    peer_table_free(w->peers);
    docroot_free(w->docroot);
    /* No callback comes from a freed connection: history's reads in flight
     * are freed after the subscriber that carried them. */
    rsub_free(w->sub);
    hist_free(w->hist);
    reg_free(w->reg);
    if (w->senv.ping)
        frame_unref(w->senv.ping);
    frame_builder_free(w->fb);
    sess_cleanup();
    filter_cleanup();
    proto_buf_free(&w->scratch);
    if (w->base)
        event_base_free(w->base);
}

static struct frame *build_ping(struct frame_builder *fb)
{
    struct proto_buf b = {0};
    char room[FRAME_HEADROOM] = {0};

    if (proto_buf_append(&b, room, sizeof(room)) != 0)
        return NULL;
    return frame_build(fb, WSLAY_PING, &b);
}

static struct event *add_signal(struct worker *w, int sig)
{
    struct event *ev = evsignal_new(w->base, sig, signal_cb, w);

    if (ev != NULL && event_add(ev, NULL) != 0) {
        event_free(ev);
        ev = NULL;
    }
    return ev;
}

int worker_run(struct cfg *cfg, struct lsn_sock *socks, int nsocks)
{
    struct worker w;
    struct reg_hooks rh;
    struct rsub_hooks lh;
    sigset_t none;
    int rc = 1, i;

    memset(&w, 0, sizeof(w));
    w.cfg = cfg;
    signal(SIGPIPE, SIG_IGN);
    if ((w.base = event_base_new()) == NULL)
        goto done;
    if ((w.fb = frame_builder_new()) == NULL || (w.senv.ping = build_ping(w.fb)) == NULL)
        goto done;
    if ((w.conns = conn_set_new(w.base, (size_t)cfg->max_pending_bytes)) == NULL)
        goto done;
    rh.on_first = on_first;
    rh.on_last = on_last;
    rh.deliver = sess_deliver;
    rh.on_ack = sess_ack;
    rh.arg = &w;
    if ((w.reg = reg_new(w.base, w.fb, &rh)) == NULL)
        goto done;
    batcher_configure(reg_batcher(w.reg), cfg->batch_interval_ms, cfg->batch_max_bytes);
    w.senv.base = w.base;
    w.senv.reg = w.reg;
    w.senv.fb = w.fb;
    w.senv.cfg = cfg;
    w.senv.sub_pending = sub_pending;
    w.senv.arg = &w;
    if (sess_init(&w.senv) != 0)
        goto done;
    if ((w.peers = peer_table_new()) == NULL)
        goto done;
    w.henv.cfg = cfg;
    w.henv.peers = w.peers;
    w.henv.healthy = healthy;
    w.henv.arg = &w;
    http_init(&w.henv);
    docroot_reload(&w);
    w.accept_retry = evtimer_new(w.base, accept_retry_cb, &w);
    w.stats_timer = evtimer_new(w.base, stats_cb, &w);
    w.sig_term = add_signal(&w, SIGTERM);
    w.sig_int = add_signal(&w, SIGINT);
    w.sig_hup = add_signal(&w, SIGHUP);
    w.sig_usr1 = add_signal(&w, SIGUSR1);
    if (w.accept_retry == NULL || w.stats_timer == NULL || w.sig_term == NULL ||
        w.sig_int == NULL || w.sig_hup == NULL || w.sig_usr1 == NULL)
        goto done;
    /* The master forks with these signals blocked; the loop owns them now. */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    i = listen_start(&w, socks, nsocks);
    nsocks = 0; /* the listeners own them, or they are closed */
    if (i != 0)
        goto done;
    w.last_ms = conn_now_ms();
    apply_config(&w);
    lh.on_message = on_message;
    lh.on_up = on_redis_up;
    lh.on_down = on_redis_down;
    lh.on_settled = on_settled;
    lh.on_command_ready = on_command_ready;
    lh.arg = &w;
    if ((w.sub = redis_subscriber_new(w.base, cfg, &lh)) == NULL ||
        (w.hist = hist_new(w.base, w.sub)) == NULL)
        goto done;
    hist_configure(w.hist, cfg->history_recover_max);
    w.senv.hist = w.hist;
    event_base_dispatch(w.base);
    log_info("stopped");
    rc = 0;
done:
    if (rc != 0)
        log_error("worker failed to start");
    for (i = 0; i < nsocks; i++)
        close(socks[i].fd);
    worker_free(&w);
    return rc;
}

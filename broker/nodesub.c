/* nodesub.c: subscriber backend of one node (see nodesub.h).
 *
 * Each wanted channel is a cset item: WANT until SUBSCRIBE goes out, SENT
 * while its confirmation is outstanding (pending counts the SUBSCRIBEs on
 * the wire, since an unsubscribe and a new subscribe may cross them), LIVE
 * once confirmed, GONE when no longer wanted but still awaited. */
#include "nodesub.h"

#include <stdlib.h>
#include <string.h>

#include "chanset.h"
#include "log.h"
#include "stats.h"

#define REFUSED_RETRY_MS 5000

struct nodesub {
    struct rsub base; /* first: the backend is reached through it */
    struct rconn *conn;
    struct rconn *cmd;     /* commands (history reads): same node, not subscribed */
    struct raddr *addr;
    struct cset *chans;
    struct event *refused; /* channels Redis refused are tried again */
    int up;                /* what on_up/on_down said last */
};

/* Collects the names of items in a state, to send them in one command. */
struct names {
    const char **v;
    size_t *l;
    size_t n, cap;
    int state;
    int oom;
};

static void collect(void *arg, struct cset_item *it)
{
    struct names *nm = arg;

    if (it->state != nm->state || nm->oom)
        return;
    if (nm->n == nm->cap) {
        size_t cap = nm->cap ? nm->cap * 2 : 64;
        const char **v = realloc(nm->v, cap * sizeof(*v));
        size_t *l = v ? realloc(nm->l, cap * sizeof(*l)) : NULL;
        if (v != NULL)
            nm->v = v;
        if (l == NULL) {
            nm->oom = 1;
            return;
        }
        nm->l = l;
        nm->cap = cap;
    }
    nm->v[nm->n] = it->name;
    nm->l[nm->n] = it->len;
    nm->n++;
}

static void names_free(struct names *nm)
{
    free(nm->v);
    free(nm->l);
}

static void set_up(struct nodesub *ns, int up)
{
    stats->redis_up = (uint64_t)up;
    if (up == ns->up)
        return;
    ns->up = up;
    if (up && ns->base.hooks.on_up)
        ns->base.hooks.on_up(ns->base.hooks.arg);
    else if (!up && ns->base.hooks.on_down)
        ns->base.hooks.on_down(ns->base.hooks.arg);
}

static void mark_sent(void *arg, struct cset_item *it)
{
    (void)arg;
    if (it->state == CSET_WANT) {
        it->state = CSET_SENT;
        it->pending++;
    }
}

static void refused_cb(void *arg, const redisReply *err, const char *const *names,
                       const size_t *lens, size_t n);

/* SUBSCRIBEs every channel in state WANT. */
static void send_wanted(struct nodesub *ns)
{
    struct names nm = {0};

    nm.state = CSET_WANT;
    cset_foreach(ns->chans, collect, &nm);
    if (nm.oom) {
        log_error("redis: out of memory resubscribing; trying again in %d ms",
                  REFUSED_RETRY_MS);
        evtimer_del(ns->refused);
        {
            struct timeval tv = {REFUSED_RETRY_MS / 1000, 0};
            if (evtimer_add(ns->refused, &tv) != 0)
                log_error("redis: cannot arm the resubscribe timer");
        }
    } else if (nm.n > 0 && rconn_subscribe_cmd(ns->conn, "SUBSCRIBE", nm.v, nm.l, nm.n,
                                               refused_cb, ns) == 0) {
        cset_foreach(ns->chans, mark_sent, NULL);
    }
    names_free(&nm);
}

static void refused_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct nodesub *ns = arg;

    (void)fd;
    (void)what;
    if (rconn_is_ready(ns->conn))
        send_wanted(ns);
}

static void refused_cb(void *arg, const redisReply *err, const char *const *names,
                       const size_t *lens, size_t n)
{
    struct nodesub *ns = arg;
    struct timeval tv = {REFUSED_RETRY_MS / 1000, 0};
    size_t i;

    log_warn("redis %s:%d: SUBSCRIBE of %zu channels refused (%.*s); trying again in %d s",
             rconn_host(ns->conn), rconn_port(ns->conn), n, (int)(err->len > 160 ? 160 : err->len),
             err->str, REFUSED_RETRY_MS / 1000);
    for (i = 0; i < n; i++) {
        struct cset_item *it = cset_find(ns->chans, names[i], lens[i]);
        if (it == NULL)
            continue;
        if (it->pending > 0)
            it->pending--;
        if (it->state == CSET_GONE) {
            if (it->pending == 0)
                cset_remove(ns->chans, it);
            continue;
        }
        if (it->pending == 0) {
            it->state = CSET_WANT;
            if (ns->base.hooks.on_settled)
                ns->base.hooks.on_settled(ns->base.hooks.arg, it->name, it->len);
        }
    }
    if (!evtimer_pending(ns->refused, NULL) && evtimer_add(ns->refused, &tv) != 0)
        log_error("redis: cannot arm the resubscribe timer");
}

/* Connection hooks. */

static void on_address(void *arg, const char *host, int port)
{
    struct nodesub *ns = arg;

    if (rconn_set_address(ns->conn, host, port) != 0 ||
        rconn_set_address(ns->cmd, host, port) != 0)
        log_error("redis: out of memory");
}

static void cmd_ready(void *arg)
{
    struct nodesub *ns = arg;

    if (ns->base.hooks.on_command_ready)
        ns->base.hooks.on_command_ready(ns->base.hooks.arg, ns->cmd);
}

static void cmd_push(void *arg, const redisReply *r, int solicited)
{
    (void)arg, (void)r, (void)solicited;
}

/* The command connection follows the subscriber's address; it retries by
 * itself, and the subscriber's failures move the provider. */
static void cmd_lost(void *arg, enum stats_redis_loss why)
{
    (void)arg, (void)why;
}

static int ns_command(struct rsub *s, const char *name, size_t len, int argc,
                      const char *const *argv, const size_t *argl, rconn_reply_fn fn, void *arg)
{
    struct nodesub *ns = (struct nodesub *)s;

    (void)name;
    (void)len;
    return rconn_command(ns->cmd, fn, arg, argc, argv, argl);
}

static void on_ready(void *arg)
{
    struct nodesub *ns = arg;
    size_t n = cset_count(ns->chans);

    if (n > 0)
        log_info("redis %s:%d: subscribing %zu channels", rconn_host(ns->conn),
                 rconn_port(ns->conn), n);
    send_wanted(ns);
    set_up(ns, 1);
}

static void confirmed(struct nodesub *ns, const redisReply *r)
{
    struct cset_item *it;

    if (r->elements < 2 || r->element[1]->type != REDIS_REPLY_STRING)
        return;
    it = cset_find(ns->chans, r->element[1]->str, r->element[1]->len);
    if (it == NULL || it->pending == 0)
        return;
    if (--it->pending > 0)
        return;
    if (it->state == CSET_GONE) {
        cset_remove(ns->chans, it);
    } else if (it->state == CSET_SENT) {
        it->state = CSET_LIVE;
        if (ns->base.hooks.on_settled)
            ns->base.hooks.on_settled(ns->base.hooks.arg, it->name, it->len);
    }
}

static void on_push(void *arg, const redisReply *r, int solicited)
{
    struct nodesub *ns = arg;
    const redisReply *k = r->element[0];

    if (k->len == 7 && memcmp(k->str, "message", 7) == 0) {
        if (r->elements == 3 && r->element[1]->type == REDIS_REPLY_STRING &&
            r->element[2]->type == REDIS_REPLY_STRING)
            ns->base.hooks.on_message(ns->base.hooks.arg, r->element[1]->str,
                                      r->element[1]->len, r->element[2]->str,
                                      r->element[2]->len);
        return;
    }
    if (solicited && k->len == 9 && memcmp(k->str, "subscribe", 9) == 0)
        confirmed(ns, r);
}

static void reset_item(void *arg, struct cset_item *it)
{
    struct nodesub *ns = arg;

    it->pending = 0;
    if (it->state == CSET_GONE)
        cset_remove(ns->chans, it);
    else
        it->state = CSET_WANT;
}

static void on_lost(void *arg, enum stats_redis_loss why)
{
    struct nodesub *ns = arg;

    cset_foreach(ns->chans, reset_item, ns);
    set_up(ns, 0);
    if (why != STATS_LOSS_NREASONS)
        raddr_failed(ns->addr); /* perhaps another node, or ask Sentinel again */
}

/* The interface. */

static int ns_subscribe(struct rsub *s, const char *name, size_t len)
{
    struct nodesub *ns = (struct nodesub *)s;
    struct cset_item *it = cset_find(ns->chans, name, len);
    const char *names[1] = {name};
    size_t lens[1] = {len};

    if (it != NULL && it->state != CSET_GONE)
        return 0;
    if (it == NULL && (it = cset_add(ns->chans, name, len)) == NULL)
        return -1;
    it->state = CSET_WANT;
    if (rconn_subscribe_cmd(ns->conn, "SUBSCRIBE", names, lens, 1, refused_cb, ns) == 0) {
        it->state = CSET_SENT;
        it->pending++;
    }
    /* Otherwise the link is down (on_ready sends it) or the write failed,
     * which drops the link: on_ready sends it too. */
    return 0;
}

static void ns_unsubscribe(struct rsub *s, const char *name, size_t len)
{
    struct nodesub *ns = (struct nodesub *)s;
    struct cset_item *it = cset_find(ns->chans, name, len);
    const char *names[1] = {name};
    size_t lens[1] = {len};

    if (it == NULL || it->state == CSET_GONE)
        return;
    if (it->state != CSET_WANT && rconn_is_ready(ns->conn) &&
        rconn_subscribe_cmd(ns->conn, "UNSUBSCRIBE", names, lens, 1, NULL, NULL) != 0)
        log_debug("redis: UNSUBSCRIBE not sent (the link is going down)");
    if (it->pending > 0)
        it->state = CSET_GONE;
    else
        cset_remove(ns->chans, it);
}

static int ns_is_up(const struct rsub *s)
{
    return rconn_is_ready(((const struct nodesub *)s)->conn);
}

static int ns_is_pending(const struct rsub *s, const char *name, size_t len)
{
    const struct nodesub *ns = (const struct nodesub *)s;
    const struct cset_item *it = cset_find(ns->chans, name, len);

    return it != NULL && it->state == CSET_SENT && rconn_is_ready(ns->conn);
}

static void ns_free(struct rsub *s)
{
    struct nodesub *ns = (struct nodesub *)s;

    rconn_free(ns->conn);
    rconn_free(ns->cmd);
    raddr_free(ns->addr);
    cset_free(ns->chans);
    if (ns->refused)
        event_free(ns->refused);
    free(ns);
}

static const struct rsub_ops nodesub_ops = {ns_subscribe, ns_unsubscribe, ns_is_up,
                                            ns_is_pending, ns_command, ns_free};

struct rsub *nodesub_new(struct event_base *base, struct raddr *addr,
                         const struct rconn_opts *opts, const struct rsub_hooks *hooks)
{
    struct nodesub *ns = calloc(1, sizeof(*ns));
    struct rconn_hooks h = {on_ready, on_push, on_lost, NULL};
    struct rconn_hooks ch = {cmd_ready, cmd_push, cmd_lost, NULL};
    struct rconn_opts co = *opts;

    if (ns == NULL) {
        raddr_free(addr);
        return NULL;
    }
    ns->base.ops = &nodesub_ops;
    ns->base.hooks = *hooks;
    ns->addr = addr;
    h.arg = ns;
    ch.arg = ns;
    co.who = "redis commands";
    co.data_link = 0;
    ns->conn = rconn_new(base, opts, &h);
    ns->cmd = rconn_new(base, &co, &ch);
    ns->chans = cset_new();
    ns->refused = evtimer_new(base, refused_retry_cb, ns);
    if (addr == NULL || ns->conn == NULL || ns->cmd == NULL || ns->chans == NULL ||
        ns->refused == NULL) {
        ns_free(&ns->base);
        return NULL;
    }
    stats->redis_up = 0;
    addr->fn = on_address;
    addr->arg = ns;
    raddr_start(addr);
    return &ns->base;
}

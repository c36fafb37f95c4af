/* sentinel.c: the primary's address through Redis Sentinel (see sentinel.h). */
#include "sentinel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

#define REQUERY_MIN_MS 1000

struct sent {
    struct raddr base; /* first: the provider is reached through it */
    struct rconn *conn;
    struct raddr *sentinels; /* which sentinel to ask: a list provider */
    char *master;
    uint64_t last_requery_ms;
    int started;
};

static const char SWITCH[] = "+switch-master";

static int port_ok(long p)
{
    return p > 0 && p <= 65535;
}

/* The sentinel to ask: from the list, into the connection. */
static void on_sentinel(void *arg, const char *host, int port)
{
    struct sent *s = arg;

    if (rconn_set_address(s->conn, host, port) != 0)
        log_error("sentinel: out of memory");
}

static void report(struct sent *s, const char *host, long port)
{
    s->base.fn(s->base.arg, host, (int)port);
}

static void switch_refused(void *arg, const redisReply *err, const char *const *names,
                           const size_t *lens, size_t n)
{
    struct sent *s = arg;

    (void)names;
    (void)lens;
    (void)n;
    log_warn("sentinel %s:%d: SUBSCRIBE %s refused: %s", rconn_host(s->conn),
             rconn_port(s->conn), SWITCH, err->str);
    rconn_drop(s->conn, STATS_LOSS_ERROR);
}

static void addr_answer(void *arg, const redisReply *r)
{
    struct sent *s = arg;
    const char *names[1] = {SWITCH};
    size_t lens[1] = {sizeof(SWITCH) - 1};
    long port;
    char *end;

    if (r == NULL)
        return; /* the connection went away; on_lost moves on */
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING) {
        log_warn("sentinel %s:%d: does not know a primary named %s%s%s", rconn_host(s->conn),
                 rconn_port(s->conn), s->master, r->type == REDIS_REPLY_ERROR ? ": " : "",
                 r->type == REDIS_REPLY_ERROR ? r->str : "");
        rconn_drop(s->conn, STATS_LOSS_ERROR); /* on_lost asks the next one */
        return;
    }
    port = strtol(r->element[1]->str, &end, 10);
    if (*end != '\0' || !port_ok(port) || r->element[0]->len == 0) {
        log_warn("sentinel %s:%d: unusable address for %s: %s:%s", rconn_host(s->conn),
                 rconn_port(s->conn), s->master, r->element[0]->str, r->element[1]->str);
        rconn_drop(s->conn, STATS_LOSS_ERROR);
        return;
    }
    log_info("sentinel %s:%d: primary %s is at %s:%ld", rconn_host(s->conn),
             rconn_port(s->conn), s->master, r->element[0]->str, port);
    /* Subscribe first: a failover reported meanwhile must not be missed. */
    if (rconn_subscribe_cmd(s->conn, "SUBSCRIBE", names, lens, 1, switch_refused, s) != 0)
        return;
    report(s, r->element[0]->str, port);
}

static void on_ready(void *arg)
{
    struct sent *s = arg;
    const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", s->master};
    size_t argl[3] = {8, 23, strlen(s->master)};

    rconn_command(s->conn, addr_answer, s, 3, argv, argl);
}

/* "+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>" */
static void on_push(void *arg, const redisReply *r, int solicited)
{
    struct sent *s = arg;
    char name[256], oldip[128], newip[128];
    long oldport, newport;
    const redisReply *ch, *msg;

    (void)solicited;
    if (r->elements != 3 || r->element[0]->len != 7 ||
        memcmp(r->element[0]->str, "message", 7) != 0)
        return;
    ch = r->element[1];
    msg = r->element[2];
    if (ch->type != REDIS_REPLY_STRING || msg->type != REDIS_REPLY_STRING ||
        ch->len != sizeof(SWITCH) - 1 || memcmp(ch->str, SWITCH, ch->len) != 0)
        return;
    if (sscanf(msg->str, "%255s %127s %ld %127s %ld", name, oldip, &oldport, newip,
               &newport) != 5 ||
        strcmp(name, s->master) != 0)
        return;
    if (!port_ok(newport)) {
        log_warn("sentinel: ignoring a failover of %s to port %ld", name, newport);
        return;
    }
    log_warn("sentinel: failover of %s: %s:%ld -> %s:%ld", name, oldip, oldport, newip,
             newport);
    report(s, newip, newport);
}

static void on_lost(void *arg, enum stats_redis_loss why)
{
    struct sent *s = arg;

    if (why == STATS_LOSS_NREASONS)
        return; /* we reconnected on purpose, to ask again */
    raddr_failed(s->sentinels); /* the next sentinel, after the backoff */
}

static void sent_start(struct raddr *p)
{
    struct sent *s = (struct sent *)p;

    if (s->started)
        return;
    s->started = 1;
    raddr_start(s->sentinels);
}

/* The primary we were told about does not answer: ask again, on a fresh
 * connection (a subscribed one cannot), at most once a second. */
static void sent_failed(struct raddr *p)
{
    struct sent *s = (struct sent *)p;
    uint64_t now = mono_ms();

    if (now - s->last_requery_ms < REQUERY_MIN_MS)
        return;
    s->last_requery_ms = now;
    rconn_reconnect(s->conn);
}

static void sent_free(struct raddr *p)
{
    struct sent *s = (struct sent *)p;

    rconn_free(s->conn);
    raddr_free(s->sentinels);
    free(s->master);
    free(s);
}

static const struct raddr_ops sentinel_ops = {sent_start, sent_failed, sent_free};

struct raddr *raddr_sentinel_new(struct event_base *base, const char *sentinels,
                                 const char *master, const struct rconn_opts *auth,
                                 raddr_fn fn, void *arg)
{
    struct sent *s = calloc(1, sizeof(*s));
    struct rconn_opts o = *auth;
    struct rconn_hooks h = {on_ready, on_push, on_lost, NULL};

    if (s == NULL)
        return NULL;
    s->base.ops = &sentinel_ops;
    s->base.fn = fn;
    s->base.arg = arg;
    o.who = "sentinel";
    o.db = -1;
    o.auth_optional = 1;
    o.data_link = 0;
    h.arg = s;
    s->master = strdup(master);
    s->conn = rconn_new(base, &o, &h);
    s->sentinels = raddr_list_new(sentinels, on_sentinel, s);
    if (s->master == NULL || s->conn == NULL || s->sentinels == NULL) {
        sent_free(&s->base);
        return NULL;
    }
    return &s->base;
}

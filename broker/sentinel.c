/* sentinel.c: following the primary through Redis Sentinel (see sentinel.h). */
#include "sentinel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "config.h"
#include "conn.h"
#include "log.h"
#include "redislink.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define REQUERY_MIN_MS 1000
#define ANSWER_TIMEOUT_MS 3000 /* a sentinel that has not named the primary by then is skipped */

struct sent {
    struct event_base *base;
    char *list;
    char *name;
    char *user;      /* sentinels take redis_url's credentials too, if any */
    char *password;
    unsigned turn;
    redisAsyncContext *ac;
    struct event *timer;
    struct event *deadline; /* the running question's answer is overdue */
    int abandon;     /* the timer must drop ac (decided inside a callback) */
    long backoff_ms;
    uint64_t last_requery_ms;
    sent_master_fn fn;
    void *arg;
};

static void arm(struct sent *s, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    evtimer_add(s->timer, &tv);
}

static void went_away(struct sent *s)
{
    s->ac = NULL;
    evtimer_del(s->deadline);
    s->turn++; /* next time, the next sentinel */
    arm(s, s->backoff_ms);
    s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
}

static void switch_cb(redisAsyncContext *ac, void *r, void *priv)
{
    struct sent *s = ac->data;
    redisReply *reply = r;
    char name[256], oldip[128], newip[128];
    int oldport, newport;

    (void)priv;
    if (s == NULL || reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[2]->type != REDIS_REPLY_STRING ||
        strcasecmp(reply->element[0]->str, "message") != 0)
        return;
    /* "<name> <old-ip> <old-port> <new-ip> <new-port>" */
    if (sscanf(reply->element[2]->str, "%255s %127s %d %127s %d", name, oldip, &oldport, newip,
               &newport) != 5 ||
        strcmp(name, s->name) != 0)
        return;
    log_warn("sentinel: failover of %s: %s:%d -> %s:%d", name, oldip, oldport, newip, newport);
    s->fn(s->arg, newip, newport);
}

static void addr_cb(redisAsyncContext *ac, void *r, void *priv)
{
    struct sent *s = ac->data;
    redisReply *reply = r;
    long port;

    (void)priv;
    if (s == NULL || reply == NULL)
        return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING) {
        log_warn("sentinel %s:%d: does not know a primary named %s", ac->c.tcp.host,
                 ac->c.tcp.port, s->name);
        s->turn++; /* ask another one */
        s->abandon = 1;
        arm(s, s->backoff_ms);
        return;
    }
    port = strtol(reply->element[1]->str, NULL, 10);
    evtimer_del(s->deadline);
    s->backoff_ms = BACKOFF_MIN_MS;
    log_info("sentinel %s:%d: primary %s is at %s:%ld", ac->c.tcp.host, ac->c.tcp.port, s->name,
             reply->element[0]->str, port);
    s->fn(s->arg, reply->element[0]->str, (int)port);
    redisAsyncCommand(ac, switch_cb, NULL, "SUBSCRIBE +switch-master");
}

static void auth_cb(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;

    (void)priv;
    if (ac->data != NULL && reply != NULL && reply->type == REDIS_REPLY_ERROR)
        log_warn("sentinel %s:%d: AUTH: %s (continuing without)", ac->c.tcp.host,
                 ac->c.tcp.port, reply->str);
}

static void connect_cb(const redisAsyncContext *cac, int status)
{
    struct sent *s = cac->data;
    redisAsyncContext *ac = (redisAsyncContext *)cac;

    if (s == NULL)
        return;
    if (status != REDIS_OK) {
        log_warn("sentinel %s:%d: %s", cac->c.tcp.host, cac->c.tcp.port, cac->errstr);
        went_away(s);
        return;
    }
    if (s->password != NULL)
        redisAsyncCommand(ac, auth_cb, NULL, "AUTH %s", s->password);
    redisAsyncCommand(ac, addr_cb, NULL, "SENTINEL get-master-addr-by-name %s", s->name);
}

static void disconnect_cb(const redisAsyncContext *cac, int status)
{
    struct sent *s = cac->data;

    (void)status;
    if (s == NULL)
        return;
    log_warn("sentinel %s:%d: connection lost", cac->c.tcp.host, cac->c.tcp.port);
    s->abandon = 0;
    went_away(s);
}

static void connect_next(struct sent *s)
{
    const char *list = s->list;
    char host[128];
    int port = 0;
    unsigned n = 0, i, want;
    redisAsyncContext *ac;

    while (cfg_addr_next(&list, host, sizeof(host), &port) == 1)
        n++;
    if (n == 0)
        return;
    want = s->turn % n;
    list = s->list;
    for (i = 0; i <= want; i++)
        cfg_addr_next(&list, host, sizeof(host), &port);
    ac = rlink_async_connect(s->base, "sentinel", host, port, s, connect_cb, disconnect_cb);
    if (ac == NULL) {
        went_away(s);
        return;
    }
    s->ac = ac;
    {
        struct timeval tv = {ANSWER_TIMEOUT_MS / 1000, (ANSWER_TIMEOUT_MS % 1000) * 1000};
        evtimer_add(s->deadline, &tv);
    }
}

/* A sentinel that accepts but does not answer must not hold us: drop it
 * (from this timer, not a hiredis callback) and ask the next one. */
static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sent *s = arg;
    redisAsyncContext *ac = s->ac;

    (void)fd;
    (void)what;
    if (ac == NULL)
        return;
    log_warn("sentinel %s:%d: no answer within %d ms; trying the next one", ac->c.tcp.host,
             ac->c.tcp.port, ANSWER_TIMEOUT_MS);
    ac->data = NULL;
    redisAsyncFree(ac);
    went_away(s); /* moves on to the next sentinel */
}

/* Runs from the timer: a new connection (after a loss, or to ask again),
 * dropping the current one first when a callback decided so. */
static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sent *s = arg;

    (void)fd;
    (void)what;
    if (s->ac != NULL) {
        if (!s->abandon)
            return; /* connected and nothing to change */
        s->ac->data = NULL;
        redisAsyncFree(s->ac);
        s->ac = NULL;
    }
    s->abandon = 0;
    connect_next(s);
}

void sent_requery(struct sent *s)
{
    uint64_t now = conn_now_ms();

    if (now - s->last_requery_ms < REQUERY_MIN_MS)
        return;
    s->last_requery_ms = now;
    /* A subscribed connection cannot ask; a fresh one asks first thing. */
    s->abandon = 1;
    arm(s, 0);
}

struct sent *sent_new(struct event_base *base, const struct cfg *cfg, sent_master_fn fn,
                      void *arg)
{
    struct sent *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->base = base;
    s->fn = fn;
    s->arg = arg;
    s->backoff_ms = BACKOFF_MIN_MS;
    s->list = strdup(cfg->redis_sentinels);
    s->name = strdup(cfg->redis_master_name);
    s->password = cfg->redis_password ? strdup(cfg->redis_password) : NULL;
    s->timer = evtimer_new(base, timer_cb, s);
    s->deadline = evtimer_new(base, deadline_cb, s);
    if (s->list == NULL || s->name == NULL || s->timer == NULL || s->deadline == NULL ||
        (cfg->redis_password && s->password == NULL)) {
        sent_free(s);
        return NULL;
    }
    connect_next(s);
    return s;
}

void sent_free(struct sent *s)
{
    if (s == NULL)
        return;
    if (s->ac != NULL) {
        s->ac->data = NULL;
        redisAsyncFree(s->ac);
    }
    if (s->timer)
        event_free(s->timer);
    if (s->deadline)
        event_free(s->deadline);
    free(s->list);
    free(s->name);
    free(s->user);
    free(s->password);
    free(s);
}

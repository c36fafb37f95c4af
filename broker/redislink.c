/* redislink.c: hiredis async subscriber with reconnect (see redislink.h).
 *
 * States: IDLE (waiting for the retry timer), CONNECTING (TCP connect in
 * flight), HANDSHAKE (AUTH/SELECT replies pending), READY. The hiredis
 * context is freed by hiredis itself after the connect-failure and
 * disconnect callbacks; we only drop our pointer there. Where we must
 * abandon a context ourselves (a connect that hangs, an AUTH refused) we do
 * it from our own timer, never from inside a hiredis callback. */
#include "redislink.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cluster.h"
#include "config.h"
#include "log.h"
#include "sentinel.h"
#include "stats.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 5000

enum rl_state { RL_IDLE, RL_CONNECTING, RL_HANDSHAKE, RL_READY };

struct rlink {
    struct event_base *base;
    redisAsyncContext *ac;
    enum rl_state state;
    struct event *timer; /* retry, connect timeout, or deferred abandon */
    int abandon;         /* the timer must free ac (set inside a callback) */
    long backoff_ms;
    char *host;
    int port;
    char *user;
    char *password;
    int db;
    int handshake_left;  /* AUTH/SELECT replies still expected */
    int ever_ready;      /* a later READY is a reconnect */
    struct rlink_hooks hooks;
    struct clu *clu;     /* cluster mode, sharded: everything goes there */
    struct sent *sent;   /* sentinel mode: tells where the primary is */
    char *seeds;         /* cluster mode, global: nodes to try in turn */
    unsigned seed_turn;
};

static void rl_connect(struct rlink *rl);

static void arm(struct rlink *rl, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    evtimer_add(rl->timer, &tv);
}

/* After a failure: the next seed (cluster, global), or ask the sentinels
 * whether the primary moved. */
static void next_address(struct rlink *rl)
{
    const char *list = rl->seeds;
    char host[128];
    int port, n = 0;
    unsigned i, want;

    if (rl->sent != NULL) {
        sent_requery(rl->sent);
        return;
    }
    if (rl->seeds == NULL)
        return;
    while (cfg_addr_next(&list, host, sizeof(host), &port) == 1)
        n++;
    if (n == 0)
        return;
    want = ++rl->seed_turn % (unsigned)n;
    list = rl->seeds;
    for (i = 0; i <= want; i++)
        cfg_addr_next(&list, host, sizeof(host), &port);
    free(rl->host);
    rl->host = strdup(host);
    rl->port = port;
}

static void schedule_retry(struct rlink *rl)
{
    next_address(rl);
    rl->state = RL_IDLE;
    arm(rl, rl->backoff_ms);
    rl->backoff_ms *= 2;
    if (rl->backoff_ms > BACKOFF_MAX_MS)
        rl->backoff_ms = BACKOFF_MAX_MS;
}

static void went_down(struct rlink *rl)
{
    int was_up = rl->state == RL_READY;

    rl->ac = NULL;
    stats->redis_up = 0;
    schedule_retry(rl);
    if (was_up && rl->hooks.on_down)
        rl->hooks.on_down(rl->hooks.arg);
}

/* Called from our timer: drop a context we gave up on. */
static void abandon_now(struct rlink *rl)
{
    redisAsyncContext *ac = rl->ac;

    rl->abandon = 0;
    if (ac == NULL)
        return;
    /* redisAsyncFree calls the disconnect callback only for connected
     * contexts; clear ac->data so it cannot reach us either way. */
    ac->data = NULL;
    redisAsyncFree(ac);
    went_down(rl);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct rlink *rl = arg;

    (void)fd;
    (void)what;
    if (rl->abandon) {
        abandon_now(rl);
        return;
    }
    switch (rl->state) {
    case RL_IDLE:
        rl_connect(rl);
        break;
    case RL_CONNECTING:
    case RL_HANDSHAKE:
        log_warn("redis %s:%d: no answer within %d ms, retrying", rl->host, rl->port,
                 CONNECT_TIMEOUT_MS);
        abandon_now(rl);
        break;
    case RL_READY:
        break;
    }
}

/* Abandoning from inside a hiredis callback would free the context under
 * hiredis's feet; the timer does it on the next loop iteration. */
static void abandon_later(struct rlink *rl)
{
    rl->abandon = 1;
    arm(rl, 0);
}

static void became_ready(struct rlink *rl)
{
    rl->state = RL_READY;
    rl->backoff_ms = BACKOFF_MIN_MS;
    evtimer_del(rl->timer);
    stats->redis_up = 1;
    if (rl->ever_ready)
        stats->redis_reconnects_total++;
    rl->ever_ready = 1;
    log_info("redis %s:%d: connected", rl->host, rl->port);
    if (rl->hooks.on_up)
        rl->hooks.on_up(rl->hooks.arg);
}

static void handshake_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    struct rlink *rl = ac->data;
    redisReply *reply = r;
    const char *what = privdata;

    if (rl == NULL || reply == NULL)
        return; /* the context is going away; the disconnect path handles it */
    if (reply->type == REDIS_REPLY_ERROR) {
        log_error("redis %s:%d: %s refused: %.*s", rl->host, rl->port, what,
                  (int)reply->len, reply->str);
        abandon_later(rl);
        return;
    }
    if (--rl->handshake_left == 0)
        became_ready(rl);
}

static void connect_cb(const redisAsyncContext *cac, int status)
{
    struct rlink *rl = cac->data;
    redisAsyncContext *ac = (redisAsyncContext *)cac;

    if (rl == NULL)
        return;
    if (status != REDIS_OK) {
        log_warn("redis %s:%d: connect failed: %s (retry in %ld ms)", rl->host, rl->port,
                 cac->errstr, rl->backoff_ms);
        /* hiredis frees the context after this callback. */
        went_down(rl);
        return;
    }
    rl->state = RL_HANDSHAKE;
    rl->handshake_left = 0;
    redisEnableKeepAlive(&ac->c);
    if (rl->password != NULL) {
        if (rl->user != NULL)
            redisAsyncCommand(ac, handshake_cb, "AUTH", "AUTH %s %s", rl->user, rl->password);
        else
            redisAsyncCommand(ac, handshake_cb, "AUTH", "AUTH %s", rl->password);
        rl->handshake_left++;
    }
    if (rl->db >= 0) {
        redisAsyncCommand(ac, handshake_cb, "SELECT", "SELECT %d", rl->db);
        rl->handshake_left++;
    }
    if (rl->handshake_left == 0)
        became_ready(rl);
}

static void disconnect_cb(const redisAsyncContext *cac, int status)
{
    struct rlink *rl = cac->data;

    if (rl == NULL)
        return;
    if (rl->state == RL_READY)
        log_warn("redis %s:%d: connection lost: %s", rl->host, rl->port,
                 status == REDIS_OK ? "closed" : cac->errstr);
    rl->abandon = 0;
    went_down(rl);
}

redisAsyncContext *rlink_async_connect(struct event_base *base, const char *who,
                                       const char *host, int port, void *data,
                                       void (*on_connect)(const redisAsyncContext *, int),
                                       void (*on_disconnect)(const redisAsyncContext *, int))
{
    redisAsyncContext *ac = redisAsyncConnect(host, port);

    if (ac == NULL) {
        log_warn("%s %s:%d: out of memory", who, host, port);
        return NULL;
    }
    if (ac->err || redisLibeventAttach(ac, base) != REDIS_OK) {
        log_warn("%s %s:%d: connect failed: %s", who, host, port,
                 ac->err ? ac->errstr : "cannot attach to the loop");
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = data;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return ac;
}

static void rl_connect(struct rlink *rl)
{
    redisAsyncContext *ac;

    if (rl->host == NULL) { /* sentinel mode, before the first answer */
        rl->state = RL_IDLE;
        return;
    }
    ac = rlink_async_connect(rl->base, "redis", rl->host, rl->port, rl, connect_cb,
                             disconnect_cb);
    if (ac == NULL) {
        schedule_retry(rl);
        return;
    }
    rl->ac = ac;
    rl->state = RL_CONNECTING;
    arm(rl, CONNECT_TIMEOUT_MS);
}

/* Every reply about our subscriptions lands here: "subscribe",
 * "unsubscribe" and "message" arrays. Only messages matter. */
static void message_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply *reply = r, *ch, *payload;
    struct rlink *rl = privdata;

    (void)ac;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3)
        return;
    if (reply->element[0]->type != REDIS_REPLY_STRING ||
        strcasecmp(reply->element[0]->str, "message") != 0)
        return;
    ch = reply->element[1];
    payload = reply->element[2];
    if (ch->type != REDIS_REPLY_STRING || payload->type != REDIS_REPLY_STRING)
        return;
    rl->hooks.on_message(rl->hooks.arg, ch->str, ch->len, payload->str, payload->len);
}

static int send_argv(struct rlink *rl, const char *cmd, const char *const *names,
                     const size_t *lens, size_t n)
{
    const char *argv[1 + 256];
    size_t argl[1 + 256], i, k;

    if (rl->state != RL_READY || rl->ac == NULL)
        return -1;
    /* Chunks keep each command small; Redis accepts any number. */
    for (i = 0; i < n; i += k) {
        k = n - i < 256 ? n - i : 256;
        argv[0] = cmd;
        argl[0] = strlen(cmd);
        memcpy(argv + 1, names + i, k * sizeof(*argv));
        memcpy(argl + 1, lens + i, k * sizeof(*argl));
        if (redisAsyncCommandArgv(rl->ac, message_cb, rl, (int)k + 1, argv, argl) != REDIS_OK)
            return -1;
    }
    return 0;
}

int rlink_subscribe(struct rlink *rl, const char *const *names, const size_t *lens, size_t n)
{
    if (rl->clu != NULL)
        return clu_subscribe(rl->clu, names, lens, n);
    return send_argv(rl, "SUBSCRIBE", names, lens, n);
}

int rlink_unsubscribe(struct rlink *rl, const char *name, size_t len)
{
    if (rl->clu != NULL)
        return clu_unsubscribe(rl->clu, name, len);
    return send_argv(rl, "UNSUBSCRIBE", &name, &len, 1);
}

int rlink_is_up(const struct rlink *rl)
{
    if (rl->clu != NULL)
        return clu_is_up(rl->clu);
    return rl->state == RL_READY;
}

/* The sentinels name a primary: go there unless we are there already. The
 * old context belongs to another connection than the sentinel's, whose
 * callback this is, so it can be freed here. */
static void on_master(void *arg, const char *host, int port)
{
    struct rlink *rl = arg;
    char *h;

    if (rl->host != NULL && rl->port == port && strcmp(rl->host, host) == 0 &&
        rl->state != RL_IDLE)
        return;
    if ((h = strdup(host)) == NULL)
        return;
    free(rl->host);
    rl->host = h;
    rl->port = port;
    if (rl->ac != NULL) {
        rl->ac->data = NULL;
        redisAsyncFree(rl->ac);
        went_down(rl);
    }
    evtimer_del(rl->timer);
    rl->backoff_ms = BACKOFF_MIN_MS;
    rl_connect(rl);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

struct rlink *rlink_new(struct event_base *base, const struct cfg *cfg,
                        const struct rlink_hooks *hooks)
{
    struct rlink *rl = calloc(1, sizeof(*rl));

    if (rl == NULL)
        return NULL;
    rl->base = base;
    rl->hooks = *hooks;
    rl->port = cfg->redis_port;
    rl->db = cfg->redis_db;
    rl->backoff_ms = BACKOFF_MIN_MS;
    rl->user = dup_or_null(cfg->redis_user);
    rl->password = dup_or_null(cfg->redis_password);
    rl->timer = evtimer_new(base, timer_cb, rl);
    if (rl->timer == NULL || (cfg->redis_user && !rl->user) ||
        (cfg->redis_password && !rl->password))
        goto fail;
    switch (cfg->redis_mode) {
    case CFG_REDIS_CLUSTER:
        if (cfg->cluster_sharded) {
            if ((rl->clu = clu_new(base, cfg, hooks)) == NULL)
                goto fail;
            return rl;
        }
        /* global: plain SUBSCRIBE on one node; PUBLISH reaches every node. */
        if ((rl->seeds = strdup(cfg->redis_cluster_nodes)) == NULL)
            goto fail;
        rl->seed_turn = (unsigned)-1;
        next_address(rl);
        break;
    case CFG_REDIS_SENTINEL:
        /* No address until the sentinels give one. */
        if ((rl->sent = sent_new(base, cfg, on_master, rl)) == NULL)
            goto fail;
        return rl;
    default:
        if ((rl->host = strdup(cfg->redis_host)) == NULL)
            goto fail;
        break;
    }
    if (rl->host == NULL)
        goto fail;
    rl_connect(rl);
    return rl;
fail:
    rlink_free(rl);
    return NULL;
}

void rlink_free(struct rlink *rl)
{
    if (rl == NULL)
        return;
    if (rl->ac != NULL) {
        rl->ac->data = NULL;
        redisAsyncFree(rl->ac);
    }
    clu_free(rl->clu);
    sent_free(rl->sent);
    free(rl->seeds);
    if (rl->timer)
        event_free(rl->timer);
    free(rl->host);
    free(rl->user);
    free(rl->password);
    free(rl);
}

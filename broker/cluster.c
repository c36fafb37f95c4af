/* cluster.c: sharded Pub/Sub on Redis Cluster (see cluster.h). */
#include "cluster.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/util.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "config.h"
#include "log.h"
#include "stats.h"
#include "util.h"

#define CLU_SLOTS 16384
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define QUERY_TIMEOUT_MS 3000 /* a node that does not answer CLUSTER SLOTS by then is skipped */
#define PING_EVERY_MS 10000   /* a shard that leaves a PING unanswered this long is gone */

enum sh_state { SH_DOWN, SH_CONNECTING, SH_HANDSHAKE, SH_READY };

/* A SUNSUBSCRIBE we sent and whose reply has not come back: a reply for a
 * name on this list is ours; one for any other name means the slot moved. */
struct pend {
    struct pend *next;
    uint32_t len;
    char name[];
};

struct shard {
    struct clu *cl;
    struct shard *next;
    char host[128];
    int port;
    enum sh_state state;
    struct bufferevent *bev;
    redisReader *reader;
    struct event *retry;
    struct event *ping;  /* liveness: PING every PING_EVERY_MS */
    uint64_t ping_sent_ms; /* 0 when no PING is outstanding */
    struct pend *pending;  /* our SUNSUBSCRIBEs awaiting their replies */
    long backoff_ms;
    int handshake_left;
    int in_topology; /* owns slots in the latest topology */
    int ever_ready;
    size_t nchans;   /* channels whose `on` is this shard */
};

struct cchan {
    struct cchan *next; /* in its slot's list */
    struct shard *on;   /* where it is (being) subscribed; NULL: nowhere */
    uint32_t len;
    char name[];
};

struct clu {
    struct event_base *base;
    struct rlink_hooks hooks;
    char *seeds;
    int seed_turn;      /* which address the next topology query tries */
    char *user;
    char *password;
    struct shard *owner[CLU_SLOTS];
    struct cchan *chans[CLU_SLOTS];
    size_t nchans;
    size_t unassigned;  /* channels with on == NULL */
    struct shard *shards;
    redisAsyncContext *topo;
    int topo_busy;
    int topo_again;
    int topo_done;      /* this query got a usable answer */
    int topo_known;
    struct event *topo_timer;
    struct event *topo_deadline; /* the running query's answer is overdue */
    long topo_backoff_ms;
    int lost_shards; /* shards lost and not yet replaced: their return is a reconnect */
};

static void shard_connect(struct shard *sh);
static void topo_soon(struct clu *cl, long ms);

/* CRC16/XMODEM (polynomial 0x1021), as in Redis's crc16.c. */
static uint16_t crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    size_t i;
    int b;

    for (i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

unsigned clu_slot(const char *name, size_t len)
{
    const char *open = memchr(name, '{', len), *close;

    if (open != NULL) {
        close = memchr(open + 1, '}', (size_t)(name + len - open - 1));
        if (close != NULL && close > open + 1)
            return crc16(open + 1, (size_t)(close - open - 1)) & (CLU_SLOTS - 1);
    }
    return crc16(name, len) & (CLU_SLOTS - 1);
}

static void update_up(struct clu *cl)
{
    stats->redis_up = (uint64_t)clu_is_up(cl);
}

int clu_is_up(const struct clu *cl)
{
    const struct shard *sh;

    if (!cl->topo_known || cl->unassigned > 0)
        return 0;
    for (sh = cl->shards; sh != NULL; sh = sh->next)
        if (sh->nchans > 0 && sh->state != SH_READY)
            return 0;
    return 1;
}

/* Sending on a shard connection. */

static void shard_send(struct shard *sh, const char *cmd, const char *name, size_t len)
{
    const char *argv[2] = {cmd, name};
    size_t argl[2] = {strlen(cmd), len};
    char *buf = NULL;
    int n;

    if (sh->state != SH_READY && strcmp(cmd, "AUTH") != 0)
        return;
    n = redisFormatCommandArgv(&buf, 2, argv, argl);
    if (n > 0 && bufferevent_write(sh->bev, buf, (size_t)n) != 0)
        log_warn("cluster %s:%d: write failed", sh->host, sh->port);
    free(buf);
    if (strcmp(cmd, "SUNSUBSCRIBE") == 0) {
        struct pend *pd = malloc(sizeof(*pd) + len), **tail = &sh->pending;
        if (pd == NULL)
            return; /* its reply will look like a slot move: one extra refresh */
        pd->next = NULL;
        pd->len = (uint32_t)len;
        memcpy(pd->name, name, len);
        while (*tail != NULL)
            tail = &(*tail)->next;
        *tail = pd;
    }
}

/* 1 when a sunsubscribe reply for name answers one of our SUNSUBSCRIBEs
 * (which it then settles). */
static int pend_take(struct shard *sh, const char *name, size_t len)
{
    struct pend **pp, *pd;

    for (pp = &sh->pending; (pd = *pp) != NULL; pp = &pd->next) {
        if (pd->len == len && memcmp(pd->name, name, len) == 0) {
            *pp = pd->next;
            free(pd);
            return 1;
        }
    }
    return 0;
}

static void pend_clear(struct shard *sh)
{
    struct pend *pd;

    while ((pd = sh->pending) != NULL) {
        sh->pending = pd->next;
        free(pd);
    }
}

static void chan_set_on(struct clu *cl, struct cchan *c, struct shard *target)
{
    if (c->on == target)
        return;
    if (c->on != NULL) {
        shard_send(c->on, "SUNSUBSCRIBE", c->name, c->len);
        c->on->nchans--;
    } else {
        cl->unassigned--;
    }
    c->on = target;
    if (target == NULL) {
        cl->unassigned++;
        return;
    }
    target->nchans++;
    if (target->state == SH_READY)
        shard_send(target, "SSUBSCRIBE", c->name, c->len);
    else if (target->state == SH_DOWN && event_pending(target->retry, EV_TIMEOUT, NULL) == 0)
        shard_connect(target);
}

static struct cchan *chan_find(struct clu *cl, const char *name, size_t len, unsigned slot)
{
    struct cchan *c;

    for (c = cl->chans[slot]; c != NULL; c = c->next)
        if (c->len == len && memcmp(c->name, name, len) == 0)
            return c;
    return NULL;
}

/* Shards. */

static struct shard *shard_get(struct clu *cl, const char *host, int port)
{
    struct shard *sh;

    for (sh = cl->shards; sh != NULL; sh = sh->next)
        if (sh->port == port && strcmp(sh->host, host) == 0)
            return sh;
    if (strlen(host) >= sizeof(sh->host) || (sh = calloc(1, sizeof(*sh))) == NULL)
        return NULL;
    sh->retry = evtimer_new(cl->base, NULL, NULL);
    sh->ping = evtimer_new(cl->base, NULL, NULL);
    if (sh->retry == NULL || sh->ping == NULL) {
        if (sh->retry)
            event_free(sh->retry);
        free(sh);
        return NULL;
    }
    sh->cl = cl;
    snprintf(sh->host, sizeof(sh->host), "%s", host);
    sh->port = port;
    sh->backoff_ms = BACKOFF_MIN_MS;
    sh->next = cl->shards;
    cl->shards = sh;
    return sh;
}

static void shard_close(struct shard *sh)
{
    if (sh->bev != NULL)
        bufferevent_free(sh->bev);
    sh->bev = NULL;
    if (sh->reader != NULL)
        redisReaderFree(sh->reader);
    sh->reader = NULL;
    sh->state = SH_DOWN;
    sh->ping_sent_ms = 0;
    evtimer_del(sh->ping);
    pend_clear(sh);
}

static void shard_free(struct shard *sh)
{
    struct shard **pp = &sh->cl->shards;

    while (*pp != sh)
        pp = &(*pp)->next;
    *pp = sh->next;
    shard_close(sh);
    event_free(sh->retry);
    event_free(sh->ping);
    free(sh);
}

static void subscribe_all_on(struct shard *sh)
{
    struct clu *cl = sh->cl;
    struct cchan *c;
    unsigned s;

    for (s = 0; s < CLU_SLOTS; s++)
        for (c = cl->chans[s]; c != NULL; c = c->next)
            if (c->on == sh)
                shard_send(sh, "SSUBSCRIBE", c->name, c->len);
}

static void ping_cb(evutil_socket_t fd, short what, void *arg);

static void ping_arm(struct shard *sh)
{
    struct timeval tv = {PING_EVERY_MS / 1000, (PING_EVERY_MS % 1000) * 1000};

    evtimer_assign(sh->ping, sh->cl->base, ping_cb, sh);
    evtimer_add(sh->ping, &tv);
}

static void shard_ready(struct shard *sh)
{
    sh->state = SH_READY;
    sh->backoff_ms = BACKOFF_MIN_MS;
    /* After a loss, a shard coming up (the same node back, or the replica
     * promoted in its place) is a reconnect. */
    if (sh->ever_ready || sh->cl->lost_shards > 0) {
        stats->redis_reconnects_total++;
        if (sh->cl->lost_shards > 0)
            sh->cl->lost_shards--;
    }
    sh->ever_ready = 1;
    ping_arm(sh);
    log_info("cluster shard %s:%d: connected, subscribing %zu channels", sh->host, sh->port,
             sh->nchans);
    subscribe_all_on(sh);
    update_up(sh->cl);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct shard *sh = arg;

    (void)fd;
    (void)what;
    if (sh->nchans == 0 && !sh->in_topology) {
        shard_free(sh);
        return;
    }
    if (sh->state == SH_DOWN && sh->nchans > 0)
        shard_connect(sh);
}

/* The connection is gone: retry later, and ask for the topology again, in
 * case a failover gave the slots to another node. */
static void shard_lost(struct shard *sh, const char *why)
{
    struct timeval tv = {sh->backoff_ms / 1000, (sh->backoff_ms % 1000) * 1000};

    if (sh->state == SH_READY) {
        log_warn("cluster shard %s:%d: %s; %zu channels wait for it or a new owner", sh->host,
                 sh->port, why, sh->nchans);
        sh->cl->lost_shards++;
    }
    shard_close(sh);
    evtimer_assign(sh->retry, sh->cl->base, retry_cb, sh);
    evtimer_add(sh->retry, &tv);
    sh->backoff_ms = sh->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : sh->backoff_ms * 2;
    topo_soon(sh->cl, 0);
    update_up(sh->cl);
}

static void handle_push(struct shard *sh, redisReply *r)
{
    struct clu *cl = sh->cl;
    const char *kind;
    redisReply *ch;

    if (r->elements < 3 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING)
        return;
    kind = r->element[0]->str;
    ch = r->element[1];
    if (strcasecmp(kind, "pong") == 0) {
        sh->ping_sent_ms = 0;
        return;
    }
    if (strcasecmp(kind, "smessage") == 0 || strcasecmp(kind, "message") == 0) {
        if (r->element[2]->type == REDIS_REPLY_STRING)
            cl->hooks.on_message(cl->hooks.arg, ch->str, ch->len, r->element[2]->str,
                                 r->element[2]->len);
    } else if (strcasecmp(kind, "sunsubscribe") == 0) {
        struct cchan *c;
        if (pend_take(sh, ch->str, ch->len))
            return; /* the answer to our own SUNSUBSCRIBE */
        /* One we did not ask for: the slot moved (or the node lost it). */
        c = chan_find(cl, ch->str, ch->len, clu_slot(ch->str, ch->len));
        if (c != NULL && c->on == sh) {
            log_info("cluster shard %s:%d: dropped channel '%.*s' (slot %u moved); "
                     "resubscribing",
                     sh->host, sh->port, (int)(ch->len > 64 ? 64 : ch->len), ch->str,
                     clu_slot(ch->str, ch->len));
            sh->nchans--;
            c->on = NULL;
            cl->unassigned++;
            topo_soon(cl, 0);
            update_up(cl);
        }
    }
}

/* "MOVED <slot> <host>:<port>": the slot's owner, straight from the node
 * that refused; its channels go there now, before the next full map. */
static void follow_moved(struct clu *cl, const char *arg)
{
    char host[128];
    const char *sp = strchr(arg, ' '), *colon;
    long slot = strtol(arg, NULL, 10);
    struct shard *target;
    struct cchan *c;
    size_t hl;

    if (sp == NULL || slot < 0 || slot >= CLU_SLOTS || (colon = strrchr(sp + 1, ':')) == NULL)
        return;
    hl = (size_t)(colon - (sp + 1));
    if (hl == 0 || hl >= sizeof(host))
        return;
    memcpy(host, sp + 1, hl);
    host[hl] = '\0';
    if ((target = shard_get(cl, host, atoi(colon + 1))) == NULL)
        return;
    target->in_topology = 1;
    cl->owner[slot] = target;
    for (c = cl->chans[slot]; c != NULL; c = c->next)
        chan_set_on(cl, c, target);
    update_up(cl);
}

static void handle_reply(struct shard *sh, redisReply *r)
{
    if (sh->state == SH_HANDSHAKE) {
        if (r->type == REDIS_REPLY_ERROR) {
            log_error("cluster shard %s:%d: AUTH refused: %.*s", sh->host, sh->port,
                      (int)r->len, r->str);
            shard_lost(sh, "AUTH refused");
            return;
        }
        if (--sh->handshake_left == 0)
            shard_ready(sh);
        return;
    }
    if (r->type == REDIS_REPLY_ARRAY) {
        handle_push(sh, r);
    } else if (r->type == REDIS_REPLY_STATUS && strcasecmp(r->str, "PONG") == 0) {
        sh->ping_sent_ms = 0; /* not subscribed to anything: a plain PONG */
    } else if (r->type == REDIS_REPLY_ERROR) {
        /* MOVED, ASK, CLUSTERDOWN, TRYAGAIN: the map we used is stale. */
        log_info("cluster shard %s:%d: %.*s; refreshing the topology", sh->host, sh->port,
                 (int)(r->len > 200 ? 200 : r->len), r->str);
        if (strncmp(r->str, "MOVED ", 6) == 0)
            follow_moved(sh->cl, r->str + 6);
        topo_soon(sh->cl, 100);
    }
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct shard *sh = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    void *reply;

    while (evbuffer_get_length(in) > 0 && sh->reader != NULL) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        if (redisReaderFeed(sh->reader, v.iov_base, v.iov_len) != REDIS_OK) {
            shard_lost(sh, "reader failed");
            return;
        }
        evbuffer_drain(in, v.iov_len);
        for (;;) {
            if (redisReaderGetReply(sh->reader, &reply) != REDIS_OK) {
                shard_lost(sh, "protocol error");
                return;
            }
            if (reply == NULL)
                break;
            handle_reply(sh, reply);
            freeReplyObject(reply);
            if (sh->reader == NULL) /* lost while handling */
                return;
        }
    }
}

static void event_cb(struct bufferevent *bev, short events, void *arg)
{
    struct shard *sh = arg;
    struct clu *cl = sh->cl;

    (void)bev;
    if (events & BEV_EVENT_CONNECTED) {
        sh->state = SH_HANDSHAKE;
        sh->handshake_left = 0;
        if (cl->password != NULL) {
            const char *argv[3] = {"AUTH", cl->user ? cl->user : cl->password, cl->password};
            size_t argl[3] = {4, strlen(argv[1]), strlen(cl->password)};
            char *buf = NULL;
            int n = redisFormatCommandArgv(&buf, cl->user ? 3 : 2, argv, argl);
            if (n > 0)
                bufferevent_write(sh->bev, buf, (size_t)n);
            free(buf);
            sh->handshake_left++;
        } else {
            shard_ready(sh);
        }
        return;
    }
    if (events & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        shard_lost(sh, (events & BEV_EVENT_EOF) ? "connection closed" : "connection failed");
}

static void shard_connect(struct shard *sh)
{
    char addr[160];
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);

    shard_close(sh);
    snprintf(addr, sizeof(addr), strchr(sh->host, ':') ? "[%s]:%d" : "%s:%d", sh->host,
             sh->port);
    if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss, &sslen) != 0) {
        log_error("cluster: cannot parse node address %s (use IP addresses)", addr);
        shard_lost(sh, "bad address");
        return;
    }
    sh->reader = redisReaderCreate();
    sh->bev = bufferevent_socket_new(sh->cl->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (sh->reader == NULL || sh->bev == NULL) {
        shard_lost(sh, "out of memory");
        return;
    }
    sh->state = SH_CONNECTING;
    bufferevent_setcb(sh->bev, read_cb, NULL, event_cb, sh);
    bufferevent_enable(sh->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(sh->bev, (struct sockaddr *)&ss, sslen) != 0)
        shard_lost(sh, "connect failed");
}

/* Subscribed connections are otherwise silent: a node that froze or was
 * cut off would never be noticed without asking. */
static void ping_cb(evutil_socket_t fd, short what, void *arg)
{
    struct shard *sh = arg;
    static const char ping[] = "*1\r\n$4\r\nPING\r\n";

    (void)fd;
    (void)what;
    if (sh->state != SH_READY)
        return;
    if (sh->ping_sent_ms != 0) {
        shard_lost(sh, "no answer to PING");
        return;
    }
    sh->ping_sent_ms = mono_ms();
    bufferevent_write(sh->bev, ping, sizeof(ping) - 1);
    ping_arm(sh);
}

/* Topology. */

/* Applies a CLUSTER SLOTS reply: every channel goes to its slot's owner. */
static int apply_slots(struct clu *cl, redisReply *r, const char *asked_host)
{
    struct shard *sh, *next;
    struct cchan *c;
    size_t i, moved = 0;
    unsigned s;

    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0)
        return -1;
    for (sh = cl->shards; sh != NULL; sh = sh->next)
        sh->in_topology = 0;
    memset(cl->owner, 0, sizeof(cl->owner));
    for (i = 0; i < r->elements; i++) {
        redisReply *e = r->element[i], *node;
        const char *host;
        long long lo, hi;
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2)
            continue;
        node = e->element[2];
        if (node->element[0]->type != REDIS_REPLY_STRING ||
            node->element[1]->type != REDIS_REPLY_INTEGER)
            continue;
        lo = e->element[0]->integer;
        hi = e->element[1]->integer;
        host = node->element[0]->len > 0 ? node->element[0]->str : asked_host;
        if (lo < 0 || hi >= CLU_SLOTS || lo > hi ||
            (sh = shard_get(cl, host, (int)node->element[1]->integer)) == NULL)
            continue;
        sh->in_topology = 1;
        for (s = (unsigned)lo; s <= (unsigned)hi; s++)
            cl->owner[s] = sh;
    }
    for (s = 0; s < CLU_SLOTS; s++) {
        for (c = cl->chans[s]; c != NULL; c = c->next) {
            if (c->on != cl->owner[s]) {
                moved += c->on != NULL;
                chan_set_on(cl, c, cl->owner[s]);
            }
        }
    }
    for (sh = cl->shards; sh != NULL; sh = next) {
        next = sh->next;
        if (!sh->in_topology && sh->nchans == 0)
            shard_free(sh);
    }
    if (!cl->topo_known || moved > 0 || cl->unassigned > 0)
        log_info("cluster: topology has %zu slot ranges; %zu channels moved, %zu without "
                 "an owner",
                 r->elements, moved, cl->unassigned);
    cl->topo_known = 1;
    update_up(cl);
    return 0;
}

static void topo_slots_cb(redisAsyncContext *ac, void *reply, void *priv)
{
    struct clu *cl = ac->data;

    (void)priv;
    if (cl == NULL || reply == NULL)
        return;
    if (((redisReply *)reply)->type == REDIS_REPLY_ERROR) {
        log_warn("cluster: CLUSTER SLOTS: %s", ((redisReply *)reply)->str);
    } else if (apply_slots(cl, reply, ac->c.tcp.host) == 0) {
        cl->topo_done = 1;
        cl->topo_backoff_ms = BACKOFF_MIN_MS;
    }
    redisAsyncDisconnect(ac);
}

static void topo_auth_cb(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)priv;
    if (ac->data != NULL && reply != NULL && ((redisReply *)reply)->type == REDIS_REPLY_ERROR)
        log_error("cluster: AUTH refused: %s", ((redisReply *)reply)->str);
}

/* The query is over (answered or failed): retry with backoff when it gave
 * nothing, or run again when asked meanwhile. */
static void topo_finished(struct clu *cl)
{
    cl->topo = NULL;
    cl->topo_busy = 0;
    evtimer_del(cl->topo_deadline);
    if (!cl->topo_done) {
        topo_soon(cl, cl->topo_backoff_ms);
        cl->topo_backoff_ms =
            cl->topo_backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : cl->topo_backoff_ms * 2;
    } else if (cl->topo_again || cl->unassigned > 0) {
        topo_soon(cl, cl->unassigned > 0 ? 500 : 0);
    }
}

static void topo_connect_cb(const redisAsyncContext *cac, int status)
{
    struct clu *cl = cac->data;
    redisAsyncContext *ac = (redisAsyncContext *)cac;

    if (cl == NULL)
        return;
    if (status != REDIS_OK) {
        log_debug("cluster: node %s:%d: %s", cac->c.tcp.host, cac->c.tcp.port, cac->errstr);
        topo_finished(cl); /* hiredis frees the context */
        return;
    }
    if (cl->password != NULL) {
        if (cl->user != NULL)
            redisAsyncCommand(ac, topo_auth_cb, NULL, "AUTH %s %s", cl->user, cl->password);
        else
            redisAsyncCommand(ac, topo_auth_cb, NULL, "AUTH %s", cl->password);
    }
    redisAsyncCommand(ac, topo_slots_cb, NULL, "CLUSTER SLOTS");
}

static void topo_disconnect_cb(const redisAsyncContext *cac, int status)
{
    struct clu *cl = cac->data;

    (void)status;
    if (cl != NULL)
        topo_finished(cl);
}

/* The address to ask: the seeds first, then the shards we know, in turn. */
static int topo_address(struct clu *cl, char *host, size_t hostlen, int *port)
{
    int nseeds = 0, nshards = 0, turn, i;
    const char *list = cl->seeds;
    struct shard *sh;

    while (cfg_addr_next(&list, host, hostlen, port) == 1)
        nseeds++;
    for (sh = cl->shards; sh != NULL; sh = sh->next)
        nshards++;
    if (nseeds + nshards == 0)
        return -1;
    turn = cl->seed_turn++ % (nseeds + nshards);
    if (turn < nseeds) {
        list = cl->seeds;
        for (i = 0; i <= turn; i++)
            cfg_addr_next(&list, host, hostlen, port);
        return 0;
    }
    for (sh = cl->shards, i = nseeds; sh != NULL && i < turn; sh = sh->next)
        i++;
    snprintf(host, hostlen, "%s", sh->host);
    *port = sh->port;
    return 0;
}

static void topo_start(struct clu *cl)
{
    char host[128];
    int port;
    redisAsyncContext *ac;

    if (cl->topo_busy)
        return;
    if (topo_address(cl, host, sizeof(host), &port) != 0)
        return;
    cl->topo_busy = 1;
    cl->topo_again = 0;
    cl->topo_done = 0;
    ac = rlink_async_connect(cl->base, "cluster node", host, port, cl, topo_connect_cb,
                             topo_disconnect_cb);
    if (ac == NULL) {
        topo_finished(cl);
        return;
    }
    cl->topo = ac;
    {
        struct timeval tv = {QUERY_TIMEOUT_MS / 1000, (QUERY_TIMEOUT_MS % 1000) * 1000};
        evtimer_add(cl->topo_deadline, &tv);
    }
}

/* A node that accepts but does not answer (frozen, overloaded) must not hold
 * up the map: drop it, from this timer and not from a hiredis callback, and
 * ask the next address. */
static void topo_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct clu *cl = arg;
    redisAsyncContext *ac = cl->topo;

    (void)fd;
    (void)what;
    if (ac == NULL)
        return;
    log_warn("cluster: node %s:%d did not answer within %d ms; trying another",
             ac->c.tcp.host, ac->c.tcp.port, QUERY_TIMEOUT_MS);
    ac->data = NULL;
    redisAsyncFree(ac);
    topo_finished(cl);
}

static void topo_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    topo_start(arg);
}

static void topo_soon(struct clu *cl, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    if (cl->topo_busy) {
        cl->topo_again = 1;
        return;
    }
    /* An earlier deadline wins over a later one already set. */
    if (ms > 0 && event_pending(cl->topo_timer, EV_TIMEOUT, NULL))
        return;
    evtimer_add(cl->topo_timer, &tv);
}

/* The interface. */

int clu_subscribe(struct clu *cl, const char *const *names, const size_t *lens, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned slot = clu_slot(names[i], lens[i]);
        struct cchan *c = chan_find(cl, names[i], lens[i], slot);
        if (c != NULL)
            continue;
        if ((c = calloc(1, sizeof(*c) + lens[i])) == NULL)
            return -1;
        c->len = (uint32_t)lens[i];
        memcpy(c->name, names[i], lens[i]);
        c->next = cl->chans[slot];
        cl->chans[slot] = c;
        cl->nchans++;
        cl->unassigned++;
        if (cl->owner[slot] != NULL)
            chan_set_on(cl, c, cl->owner[slot]);
        else if (cl->topo_known)
            topo_soon(cl, 0);
    }
    update_up(cl);
    return 0;
}

int clu_unsubscribe(struct clu *cl, const char *name, size_t len)
{
    unsigned slot = clu_slot(name, len);
    struct cchan **pp, *c;

    for (pp = &cl->chans[slot]; (c = *pp) != NULL; pp = &c->next) {
        if (c->len == len && memcmp(c->name, name, len) == 0) {
            chan_set_on(cl, c, NULL);
            cl->unassigned--;
            *pp = c->next;
            cl->nchans--;
            free(c);
            update_up(cl);
            return 0;
        }
    }
    return -1;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

struct clu *clu_new(struct event_base *base, const struct cfg *cfg,
                    const struct rlink_hooks *hooks)
{
    struct clu *cl = calloc(1, sizeof(*cl));

    if (cl == NULL)
        return NULL;
    cl->base = base;
    cl->hooks = *hooks;
    cl->seeds = strdup(cfg->redis_cluster_nodes);
    cl->user = dup_or_null(cfg->redis_user);
    cl->password = dup_or_null(cfg->redis_password);
    cl->topo_backoff_ms = BACKOFF_MIN_MS;
    cl->topo_timer = evtimer_new(base, topo_timer_cb, cl);
    cl->topo_deadline = evtimer_new(base, topo_deadline_cb, cl);
    if (cl->seeds == NULL || cl->topo_timer == NULL || cl->topo_deadline == NULL) {
        clu_free(cl);
        return NULL;
    }
    log_info("cluster: sharded pub/sub, seeds %s", cl->seeds);
    topo_soon(cl, 0);
    return cl;
}

void clu_free(struct clu *cl)
{
    struct cchan *c, *next;
    unsigned s;

    if (cl == NULL)
        return;
    if (cl->topo != NULL) {
        cl->topo->data = NULL;
        redisAsyncFree(cl->topo);
    }
    while (cl->shards != NULL)
        shard_free(cl->shards);
    for (s = 0; s < CLU_SLOTS; s++) {
        for (c = cl->chans[s]; c != NULL; c = next) {
            next = c->next;
            free(c);
        }
    }
    if (cl->topo_timer)
        event_free(cl->topo_timer);
    if (cl->topo_deadline)
        event_free(cl->topo_deadline);
    free(cl->seeds);
    free(cl->user);
    free(cl->password);
    free(cl);
}

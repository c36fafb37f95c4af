/* shardsub.c: sharded pub/sub backend (see shardsub.h).
 *
 * A channel is a cset item (chanset.h) with `on`, the shard it is placed on
 * (NULL while its slot has no known owner), and the same states as in
 * nodesub.c. A shard owns one connection; shards are freed only from the
 * sweep timer, never from a callback of their own connection. */
#include "shardsub.h"

#include <stdlib.h>
#include <string.h>

#include "chanset.h"
#include "cluster.h"
#include "log.h"
#include "stats.h"

#define REFUSED_RETRY_MS 1000

struct shardsub;

struct shard {
    struct shardsub *ss;
    struct shard *next;
    struct rconn *conn;
    struct rconn *cmd;  /* commands to this primary (history reads) */
    struct clu_node addr;
    size_t nchans;     /* channels placed here */
    uint8_t was_lost;  /* lost while serving channels: its return is a reconnect */
    uint8_t failing;   /* lost or never reached since its last READY: down */
};

struct shardsub {
    struct rsub base; /* first: the backend is reached through it */
    struct event_base *base_loop;
    struct clu_map *map;
    struct rconn_opts opts;
    char *user, *password;
    struct shard *shards;
    struct cset *chans;
    size_t unplaced;     /* channels whose slot has no known owner */
    size_t lost;         /* shards lost with channels, not yet replaced */
    struct event *sweep; /* frees shards that serve nothing */
    struct event *refused;
    int up;
};

static void update_up(struct shardsub *ss);

/* Sending on a shard. */

static void refused_cb(void *arg, const redisReply *err, const char *const *names,
                       const size_t *lens, size_t n);

static int send_sub(struct shard *sh, const char *cmd, const char *name, size_t len)
{
    const char *names[1] = {name};
    size_t lens[1] = {len};

    return rconn_subscribe_cmd(sh->conn, cmd, names, lens, 1, refused_cb, sh);
}

static void subscribe_item(struct shard *sh, struct cset_item *it)
{
    if (send_sub(sh, "SSUBSCRIBE", it->name, it->len) == 0) {
        it->state = CSET_SENT;
        it->pending++;
    }
}

/* Shards. */

static void shard_free(struct shard *sh)
{
    struct shard **pp = &sh->ss->shards;

    while (*pp != sh)
        pp = &(*pp)->next;
    *pp = sh->next;
    rconn_free(sh->conn);
    rconn_free(sh->cmd);
    free(sh);
}

static void sweep_soon(struct shardsub *ss)
{
    if (!evtimer_pending(ss->sweep, NULL)) {
        struct timeval tv = {0, 0};
        if (evtimer_add(ss->sweep, &tv) != 0)
            log_error("cluster: cannot arm the sweep timer");
    }
}

/* Placement. */

static void unplace(struct shardsub *ss, struct cset_item *it, int tell)
{
    struct shard *sh = it->on;

    if (sh == NULL)
        return;
    if (tell && it->state != CSET_WANT && rconn_is_ready(sh->conn) &&
        send_sub(sh, "SUNSUBSCRIBE", it->name, it->len) != 0)
        log_debug("cluster: SUNSUBSCRIBE not sent (the shard is going down)");
    sh->nchans--;
    it->on = NULL;
    it->pending = 0;
    it->state = CSET_WANT;
    ss->unplaced++;
    if (sh->nchans == 0)
        sweep_soon(ss);
}

static struct shard *shard_get(struct shardsub *ss, const struct clu_node *n);

/* Puts a channel on the shard its slot's owner is (when known). */
static void place(struct shardsub *ss, struct cset_item *it)
{
    const struct clu_node *n = clu_map_owner(ss->map, it->slot);
    struct shard *target = n ? shard_get(ss, n) : NULL;

    if (it->on == target && target != NULL)
        return;
    unplace(ss, it, 1);
    if (target == NULL)
        return;
    it->on = target;
    target->nchans++;
    ss->unplaced--;
    /* A shard that is not ready subscribes everything placed on it when it
     * is (its connection retries by itself). */
    if (rconn_is_ready(target->conn))
        subscribe_item(target, it);
}

static void place_cb(void *arg, struct cset_item *it)
{
    struct shardsub *ss = arg;

    if (it->state == CSET_GONE)
        return; /* awaited on its old shard; nothing to place */
    place(ss, it);
}

static void on_map_change(void *arg)
{
    struct shardsub *ss = arg;
    const struct clu_node *nodes;
    size_t i, n = clu_map_nodes(ss->map, &nodes);

    /* A shard for every primary, channels or not: each gets a command
     * connection, over which the history library is loaded everywhere. */
    for (i = 0; i < n; i++)
        if (shard_get(ss, &nodes[i]) == NULL)
            log_error("cluster: out of memory for shard %s:%d", nodes[i].host, nodes[i].port);
    cset_foreach(ss->chans, place_cb, ss);
    sweep_soon(ss);
    update_up(ss);
}

/* Shard connection hooks. */

static void collect_on(void *arg, struct cset_item *it);

struct on_shard {
    struct shard *sh;
    const char **v;
    size_t *l;
    size_t n;
};

static void collect_on(void *arg, struct cset_item *it)
{
    struct on_shard *o = arg;

    if (it->on != o->sh || it->state != CSET_WANT)
        return;
    o->v[o->n] = it->name;
    o->l[o->n] = it->len;
    o->n++;
}

static void mark_sent_on(void *arg, struct cset_item *it)
{
    struct shard *sh = arg;

    if (it->on == sh && it->state == CSET_WANT) {
        it->state = CSET_SENT;
        it->pending++;
    }
}

static void subscribe_all_on(struct shard *sh)
{
    struct shardsub *ss = sh->ss;
    struct on_shard o = {sh, NULL, NULL, 0};

    if (sh->nchans == 0)
        return;
    o.v = malloc(sh->nchans * sizeof(*o.v));
    o.l = malloc(sh->nchans * sizeof(*o.l));
    if (o.v == NULL || o.l == NULL) {
        log_error("cluster: out of memory resubscribing; the shard reconnects");
        rconn_drop(sh->conn, STATS_LOSS_ERROR);
    } else {
        cset_foreach(ss->chans, collect_on, &o);
        if (o.n > 0 &&
            rconn_subscribe_cmd(sh->conn, "SSUBSCRIBE", o.v, o.l, o.n, refused_cb, sh) == 0)
            cset_foreach(ss->chans, mark_sent_on, sh);
    }
    free(o.v);
    free(o.l);
}

static void shard_ready(void *arg)
{
    struct shard *sh = arg;
    struct shardsub *ss = sh->ss;

    /* A shard coming up after a loss (the same node back, which its
     * connection counts, or the replica promoted in its place) ends one
     * loss. */
    if (sh->was_lost) {
        sh->was_lost = 0;
        if (ss->lost > 0)
            ss->lost--;
    } else if (ss->lost > 0 && sh->nchans > 0) {
        ss->lost--;
        stats->redis_reconnects_total++;
    }
    sh->failing = 0;
    if (sh->nchans > 0)
        log_info("cluster shard %s:%d: subscribing %zu channels", sh->addr.host,
                 sh->addr.port, sh->nchans);
    subscribe_all_on(sh);
    update_up(ss);
}

static void confirmed(struct shard *sh, const redisReply *r)
{
    struct shardsub *ss = sh->ss;
    struct cset_item *it;

    if (r->elements < 2 || r->element[1]->type != REDIS_REPLY_STRING)
        return;
    it = cset_find(ss->chans, r->element[1]->str, r->element[1]->len);
    if (it == NULL || it->on != sh || it->pending == 0 || --it->pending > 0)
        return;
    if (it->state == CSET_GONE) {
        sh->nchans--;
        cset_remove(ss->chans, it);
        if (sh->nchans == 0)
            sweep_soon(ss);
    } else if (it->state == CSET_SENT) {
        it->state = CSET_LIVE;
        if (ss->base.hooks.on_settled)
            ss->base.hooks.on_settled(ss->base.hooks.arg, it->name, it->len);
    }
}

/* An unsolicited sunsubscribe: the node no longer serves the channel's slot. */
static void dropped(struct shard *sh, const redisReply *r)
{
    struct shardsub *ss = sh->ss;
    struct cset_item *it;

    if (r->elements < 2 || r->element[1]->type != REDIS_REPLY_STRING)
        return;
    it = cset_find(ss->chans, r->element[1]->str, r->element[1]->len);
    if (it == NULL || it->on != sh)
        return;
    if (it->state == CSET_GONE) {
        sh->nchans--;
        cset_remove(ss->chans, it);
        if (sh->nchans == 0)
            sweep_soon(ss);
        return;
    }
    log_info("cluster shard %s:%d: dropped channel '%.*s' (slot %u moved); resubscribing",
             sh->addr.host, sh->addr.port, (int)(it->len > 64 ? 64 : it->len), it->name,
             (unsigned)it->slot);
    unplace(ss, it, 0);
    clu_map_refresh(ss->map, 0);
    update_up(ss);
}

static void shard_push(void *arg, const redisReply *r, int solicited)
{
    struct shard *sh = arg;
    const redisReply *k = r->element[0];

    if (k->len == 8 && memcmp(k->str, "smessage", 8) == 0) {
        if (r->elements == 3 && r->element[1]->type == REDIS_REPLY_STRING &&
            r->element[2]->type == REDIS_REPLY_STRING)
            sh->ss->base.hooks.on_message(sh->ss->base.hooks.arg, r->element[1]->str,
                                          r->element[1]->len, r->element[2]->str,
                                          r->element[2]->len);
    } else if (k->len == 10 && memcmp(k->str, "ssubscribe", 10) == 0) {
        if (solicited)
            confirmed(sh, r);
    } else if (k->len == 12 && memcmp(k->str, "sunsubscribe", 12) == 0) {
        if (!solicited)
            dropped(sh, r);
    }
}

static void reset_on(void *arg, struct cset_item *it)
{
    struct shard *sh = arg;
    struct shardsub *ss = sh->ss;
    int was_live;

    if (it->on != sh)
        return;
    it->pending = 0;
    if (it->state == CSET_GONE) {
        sh->nchans--;
        cset_remove(ss->chans, it);
        return;
    }
    was_live = it->state == CSET_LIVE;
    it->state = CSET_WANT;
    /* Acks waiting for this channel's confirmation wait no longer: its
     * shard is down, and delivery starts when it is back. */
    if (!was_live && ss->base.hooks.on_settled)
        ss->base.hooks.on_settled(ss->base.hooks.arg, it->name, it->len);
}

static void shard_lost(void *arg, enum stats_redis_loss why)
{
    struct shard *sh = arg;
    struct shardsub *ss = sh->ss;

    if (why != STATS_LOSS_NREASONS)
        sh->failing = 1;
    cset_foreach(ss->chans, reset_on, sh);
    if (why == STATS_LOSS_NREASONS)
        return;
    if (sh->nchans > 0 && !sh->was_lost) {
        log_warn("cluster shard %s:%d: lost; %zu channels wait for it or for a new owner",
                 sh->addr.host, sh->addr.port, sh->nchans);
        sh->was_lost = 1;
        ss->lost++;
    }
    /* A failover may have given the slots to another node. */
    clu_map_refresh(ss->map, 0);
    sweep_soon(ss);
    update_up(ss);
}

/* MOVED, ASK, CLUSTERDOWN, TRYAGAIN: the map we used is stale. */
static void refused_cb(void *arg, const redisReply *err, const char *const *names,
                       const size_t *lens, size_t n)
{
    struct shard *sh = arg;
    struct shardsub *ss = sh->ss;
    size_t i;

    log_info("cluster shard %s:%d: %.*s; refreshing the map", sh->addr.host, sh->addr.port,
             (int)(err->len > 200 ? 200 : err->len), err->str);
    for (i = 0; i < n; i++) {
        struct cset_item *it = cset_find(ss->chans, names[i], lens[i]);
        if (it == NULL || it->on != sh || it->pending == 0)
            continue;
        if (--it->pending > 0)
            continue;
        if (it->state == CSET_GONE) {
            sh->nchans--;
            cset_remove(ss->chans, it);
            continue;
        }
        it->state = CSET_WANT;
        if (ss->base.hooks.on_settled)
            ss->base.hooks.on_settled(ss->base.hooks.arg, it->name, it->len);
    }
    if (err->len > 6 && memcmp(err->str, "MOVED ", 6) == 0 &&
        clu_map_moved(ss->map, err->str + 6, err->len - 6) == 0) {
        clu_map_refresh(ss->map, 100);
        return;
    }
    clu_map_refresh(ss->map, 100);
    if (!evtimer_pending(ss->refused, NULL)) {
        struct timeval tv = {REFUSED_RETRY_MS / 1000, (REFUSED_RETRY_MS % 1000) * 1000};
        if (evtimer_add(ss->refused, &tv) != 0)
            log_error("cluster: cannot arm the resubscribe timer");
    }
}

static void resend_cb(void *arg, struct cset_item *it)
{
    (void)arg;
    if (it->state == CSET_WANT && it->on != NULL && rconn_is_ready(((struct shard *)it->on)->conn))
        subscribe_item(it->on, it);
}

static void refused_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct shardsub *ss = arg;

    (void)fd;
    (void)what;
    cset_foreach(ss->chans, resend_cb, ss);
}

static void cmd_ready(void *arg)
{
    struct shard *sh = arg;
    struct shardsub *ss = sh->ss;

    if (ss->base.hooks.on_command_ready)
        ss->base.hooks.on_command_ready(ss->base.hooks.arg, sh->cmd);
}

static void cmd_push(void *arg, const redisReply *r, int solicited)
{
    (void)arg, (void)r, (void)solicited;
}

static void cmd_lost(void *arg, enum stats_redis_loss why)
{
    (void)arg, (void)why; /* the subscriber connection watches the shard */
}

static struct shard *shard_get(struct shardsub *ss, const struct clu_node *n)
{
    struct shard *sh;
    struct rconn_hooks h = {shard_ready, shard_push, shard_lost, NULL};
    struct rconn_hooks ch = {cmd_ready, cmd_push, cmd_lost, NULL};
    struct rconn_opts co = ss->opts;

    for (sh = ss->shards; sh != NULL; sh = sh->next)
        if (sh->addr.port == n->port && strcmp(sh->addr.host, n->host) == 0)
            return sh;
    if ((sh = calloc(1, sizeof(*sh))) == NULL)
        return NULL;
    sh->ss = ss;
    sh->addr = *n;
    h.arg = sh;
    ch.arg = sh;
    co.who = "cluster shard commands";
    co.data_link = 0;
    if ((sh->conn = rconn_new(ss->base_loop, &ss->opts, &h)) == NULL ||
        (sh->cmd = rconn_new(ss->base_loop, &co, &ch)) == NULL ||
        rconn_set_address(sh->conn, n->host, n->port) != 0 ||
        rconn_set_address(sh->cmd, n->host, n->port) != 0) {
        rconn_free(sh->conn);
        rconn_free(sh->cmd);
        free(sh);
        return NULL;
    }
    sh->next = ss->shards;
    ss->shards = sh;
    return sh;
}

/* Frees the shards that serve no channel and are no primary of the map (a
 * primary's connection stays, idle, for the channels to come). */
static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    struct shardsub *ss = arg;
    struct shard *sh, *next;

    (void)fd;
    (void)what;
    for (sh = ss->shards; sh != NULL; sh = next) {
        next = sh->next;
        if (sh->nchans == 0 && !clu_map_serves(ss->map, sh->addr.host, sh->addr.port))
            shard_free(sh);
    }
    update_up(ss);
}

/* Up: the map is known, every channel has a shard, and no shard holding
 * channels is failing (one connecting for the first time is coming up, not
 * down). */
static void update_up(struct shardsub *ss)
{
    const struct shard *sh;
    int up = clu_map_known(ss->map) && ss->unplaced == 0;

    for (sh = ss->shards; up && sh != NULL; sh = sh->next)
        if (sh->nchans > 0 && sh->failing)
            up = 0;
    stats->redis_up = (uint64_t)up;
    if (up == ss->up)
        return;
    ss->up = up;
    if (up && ss->base.hooks.on_up)
        ss->base.hooks.on_up(ss->base.hooks.arg);
    else if (!up && ss->base.hooks.on_down)
        ss->base.hooks.on_down(ss->base.hooks.arg);
}

/* The interface. */

static int ss_subscribe(struct rsub *s, const char *name, size_t len)
{
    struct shardsub *ss = (struct shardsub *)s;
    struct cset_item *it = cset_find(ss->chans, name, len);

    if (it != NULL && it->state != CSET_GONE)
        return 0;
    if (it != NULL) {
        /* Unsubscribed, still awaited: wanted again where it is. */
        it->state = CSET_WANT;
        if (it->on != NULL && rconn_is_ready(((struct shard *)it->on)->conn))
            subscribe_item(it->on, it);
        return 0;
    }
    if ((it = cset_add(ss->chans, name, len)) == NULL)
        return -1;
    it->slot = (uint16_t)clu_slot(name, len);
    ss->unplaced++;
    if (clu_map_owner(ss->map, it->slot) != NULL)
        place(ss, it);
    else if (clu_map_known(ss->map))
        clu_map_refresh(ss->map, 0);
    update_up(ss);
    return 0;
}

static void ss_unsubscribe(struct rsub *s, const char *name, size_t len)
{
    struct shardsub *ss = (struct shardsub *)s;
    struct cset_item *it = cset_find(ss->chans, name, len);
    struct shard *sh;

    if (it == NULL || it->state == CSET_GONE)
        return;
    sh = it->on;
    if (sh == NULL) {
        ss->unplaced--;
        cset_remove(ss->chans, it);
        update_up(ss);
        return;
    }
    if (it->state != CSET_WANT && rconn_is_ready(sh->conn) &&
        send_sub(sh, "SUNSUBSCRIBE", it->name, it->len) != 0)
        log_debug("cluster: SUNSUBSCRIBE not sent (the shard is going down)");
    if (it->pending > 0) {
        it->state = CSET_GONE; /* the shard keeps counting it until it is settled */
        return;
    }
    sh->nchans--;
    cset_remove(ss->chans, it);
    if (sh->nchans == 0)
        sweep_soon(ss);
    update_up(ss);
}

static int ss_is_up(const struct rsub *s)
{
    return ((const struct shardsub *)s)->up;
}

/* Pending: placed on a shard that is ready (SSUBSCRIBE sent) or connecting
 * for the first time (it will be sent), not yet confirmed. */
static int ss_is_pending(const struct rsub *s, const char *name, size_t len)
{
    const struct shardsub *ss = (const struct shardsub *)s;
    const struct cset_item *it = cset_find(ss->chans, name, len);
    const struct shard *sh = it ? it->on : NULL;

    return sh != NULL && !sh->failing && (it->state == CSET_SENT || it->state == CSET_WANT);
}

static void ss_free(struct rsub *s)
{
    struct shardsub *ss = (struct shardsub *)s;

    while (ss->shards != NULL)
        shard_free(ss->shards);
    clu_map_free(ss->map);
    cset_free(ss->chans);
    if (ss->sweep)
        event_free(ss->sweep);
    if (ss->refused)
        event_free(ss->refused);
    free(ss->user);
    free(ss->password);
    free(ss);
}

/* To the primary of the channel's slot (MOVED and the like come back as
 * errors for the caller: the map is asked again meanwhile). */
static int ss_command(struct rsub *s, const char *name, size_t len, int argc,
                      const char *const *argv, const size_t *argl, rconn_reply_fn fn, void *arg)
{
    struct shardsub *ss = (struct shardsub *)s;
    const struct clu_node *n = clu_map_owner(ss->map, clu_slot(name, len));
    struct shard *sh = n ? shard_get(ss, n) : NULL;

    if (sh == NULL)
        return -1;
    return rconn_command(sh->cmd, fn, arg, argc, argv, argl);
}

static const struct rsub_ops shardsub_ops = {ss_subscribe, ss_unsubscribe, ss_is_up,
                                             ss_is_pending, ss_command, ss_free};

struct rsub *shardsub_new(struct event_base *base, const char *seeds,
                          const struct rconn_opts *opts, const struct rsub_hooks *hooks)
{
    struct shardsub *ss = calloc(1, sizeof(*ss));
    struct clu_map_hooks mh = {on_map_change, NULL};

    if (ss == NULL)
        return NULL;
    ss->base.ops = &shardsub_ops;
    ss->base.hooks = *hooks;
    ss->base_loop = base;
    ss->opts = *opts;
    ss->opts.who = "cluster shard";
    ss->opts.db = -1;
    ss->user = opts->user ? strdup(opts->user) : NULL;
    ss->password = opts->password ? strdup(opts->password) : NULL;
    ss->opts.user = ss->user;
    ss->opts.password = ss->password;
    mh.arg = ss;
    ss->chans = cset_new();
    ss->sweep = evtimer_new(base, sweep_cb, ss);
    ss->refused = evtimer_new(base, refused_retry_cb, ss);
    stats->redis_up = 0;
    if (ss->chans == NULL || ss->sweep == NULL || ss->refused == NULL ||
        (opts->user && !ss->user) || (opts->password && !ss->password) ||
        (ss->map = clu_map_new(base, seeds, opts, &mh)) == NULL) {
        ss_free(&ss->base);
        return NULL;
    }
    return &ss->base;
}

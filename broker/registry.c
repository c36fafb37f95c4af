/* registry.c: channel table, groups and subscriptions (see registry.h). */
#include "registry.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "filter.h"
#include "protocol/codec.h"
#include "siphash.h"
#include "stats.h"
#include "util.h"

struct reg_channel;

struct reg_group {
    struct reg_channel *ch;
    struct reg_group *next;   /* the channel's groups, the unfiltered one first */
    struct filter *filter;    /* owned; NULL: every payload */
    struct reg_sub *subs;     /* doubly linked through gprev/gnext */
    uint32_t nsubs;
    uint32_t nheld;           /* held subscriptions of this filter (not in subs) */
    struct batch batch;
};

/* A subscription is linked into its group (it receives the group's
 * frames), or held: out of the group, on its channel's held list (through
 * gprev/gnext), while its history is read (HOLD_WAIT) and then until live
 * delivery passes what history gave it (HOLD_CATCH, up to floor). */
enum { HOLD_NONE = 0, HOLD_WAIT, HOLD_CATCH };

struct reg_sub {
    struct reg_group *group;
    struct reg_client *client;
    struct reg_sub *gprev, *gnext; /* in the group, or the channel's held list */
    struct reg_sub *cnext;         /* in the client's list */
    uint64_t floor;                /* HOLD_CATCH: it has every offset up to here */
    uint8_t held;
};

/* A live message kept while subscriptions wait for their history. */
struct reg_recent {
    struct reg_recent *next;
    uint64_t offset;       /* 0: a plain publish */
    uint32_t len;
    uint8_t is_json;
    char json[];
};

/* An ack waiting for Redis to confirm its channel's subscription. */
struct reg_ack {
    struct reg_ack *next;
    struct reg_client *client;
    size_t ridlen;
    char rid[];
};

struct reg_channel {
    struct reg_channel *hnext; /* hash chain */
    uint64_t hash;
    struct reg_group *groups;
    struct reg_ack *acks;      /* held until reg_settle */
    struct reg_sub *held;      /* held subscriptions */
    struct reg_recent *recent, *recent_tail; /* kept while one waits */
    size_t recent_bytes;
    uint32_t nwait;            /* held subscriptions in HOLD_WAIT */
    uint8_t disrupted;         /* recent overflowed, or the epoch changed, meanwhile */
    uint8_t hist;              /* enum reg_hist */
    struct proto_pos pos;      /* the last position seen (live or read) */
    uint32_t nsubs;
    uint32_t len;
    char name[];
};

/* Live messages kept for waiting subscriptions, at most: a history read
 * takes a round trip, so this only fills when Redis is very slow to
 * answer; past it the waiting subscriptions are told of a gap. */
#define REG_RECENT_MAX_BYTES (16u << 20)

struct reg {
    struct reg_channel **buckets;
    size_t nbuckets; /* a power of two */
    size_t nchannels;
    size_t nsubs;
    size_t nacks;      /* held acks, over every channel */
    uint8_t key[16];
    struct reg_hooks hooks;
    struct batcher *batcher;
};

static void emit(void *arg, struct batch *b, struct frame *f, uint32_t count);

struct reg *reg_new(struct event_base *base, struct frame_builder *fb,
                    const struct reg_hooks *hooks)
{
    struct reg *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->nbuckets = 64;
    r->buckets = calloc(r->nbuckets, sizeof(*r->buckets));
    r->hooks = *hooks;
    r->batcher = batcher_new(base, fb, emit, r);
    if (r->buckets == NULL || r->batcher == NULL ||
        getrandom(r->key, sizeof(r->key), 0) != (ssize_t)sizeof(r->key)) {
        reg_free(r);
        return NULL;
    }
    return r;
}

struct batcher *reg_batcher(struct reg *r)
{
    return r->batcher;
}

static struct reg_channel *lookup(struct reg *r, const char *name, size_t len, uint64_t h)
{
    struct reg_channel *ch = r->buckets[h & (r->nbuckets - 1)];

    for (; ch != NULL; ch = ch->hnext)
        if (ch->hash == h && ch->len == len && memcmp(ch->name, name, len) == 0)
            return ch;
    return NULL;
}

static void grow(struct reg *r)
{
    size_t n = r->nbuckets * 2, i;
    struct reg_channel **nb = calloc(n, sizeof(*nb)), *ch, *next;

    if (nb == NULL)
        return; /* longer chains, still correct */
    for (i = 0; i < r->nbuckets; i++) {
        for (ch = r->buckets[i]; ch != NULL; ch = next) {
            next = ch->hnext;
            ch->hnext = nb[ch->hash & (n - 1)];
            nb[ch->hash & (n - 1)] = ch;
        }
    }
    free(r->buckets);
    r->buckets = nb;
    r->nbuckets = n;
}

static struct reg_channel *channel_new(struct reg *r, const char *name, size_t len,
                                       uint64_t h)
{
    struct reg_channel *ch = calloc(1, sizeof(*ch) + len);
    size_t b;

    if (ch == NULL)
        return NULL;
    ch->hash = h;
    ch->len = (uint32_t)len;
    memcpy(ch->name, name, len);
    if (r->nchannels >= r->nbuckets)
        grow(r);
    b = h & (r->nbuckets - 1);
    ch->hnext = r->buckets[b];
    r->buckets[b] = ch;
    r->nchannels++;
    stats->channels = r->nchannels;
    return ch;
}

static void acks_free(struct reg *r, struct reg_channel *ch)
{
    struct reg_ack *a;

    while ((a = ch->acks) != NULL) {
        ch->acks = a->next;
        r->nacks--;
        free(a);
    }
}

static void recent_free(struct reg_channel *ch)
{
    struct reg_recent *e;

    while ((e = ch->recent) != NULL) {
        ch->recent = e->next;
        free(e);
    }
    ch->recent_tail = NULL;
    ch->recent_bytes = 0;
}

static void channel_free(struct reg *r, struct reg_channel *ch)
{
    struct reg_channel **pp = &r->buckets[ch->hash & (r->nbuckets - 1)];

    acks_free(r, ch);
    recent_free(ch);
    while (*pp != ch)
        pp = &(*pp)->hnext;
    *pp = ch->hnext;
    r->nchannels--;
    stats->channels = r->nchannels;
    free(ch);
}

static int same_filter(const struct filter *a, const struct filter *b)
{
    const char *ka, *kb;
    size_t la, lb;

    if (a == NULL || b == NULL)
        return a == b;
    ka = filter_key(a, &la);
    kb = filter_key(b, &lb);
    return la == lb && memcmp(ka, kb, la) == 0;
}

/* The channel's group for filter f, created when needed. Takes ownership of
 * f in every case (it is freed when an equal group exists, or on ENOMEM). */
static struct reg_group *group_get(struct reg_channel *ch, struct filter *f)
{
    struct reg_group *g, **tail;

    for (tail = &ch->groups; (g = *tail) != NULL; tail = &g->next) {
        if (same_filter(g->filter, f)) {
            filter_free(f);
            return g;
        }
    }
    if ((g = calloc(1, sizeof(*g))) == NULL) {
        filter_free(f);
        return NULL;
    }
    g->ch = ch;
    g->filter = f;
    if (f == NULL) { /* unfiltered first: it needs no parse */
        g->next = ch->groups;
        ch->groups = g;
    } else {
        *tail = g;
    }
    return g;
}

static void group_free(struct reg *r, struct reg_group *g)
{
    if (g->nsubs > 0 || g->nheld > 0)
        return;
    struct reg_group **pp = &g->ch->groups;

    while (*pp != g)
        pp = &(*pp)->next;
    *pp = g->next;
    batch_discard(r->batcher, &g->batch);
    filter_free(g->filter);
    free(g);
}

static void group_link(struct reg_group *g, struct reg_sub *s)
{
    s->group = g;
    s->gprev = NULL;
    s->gnext = g->subs;
    if (g->subs)
        g->subs->gprev = s;
    g->subs = s;
    g->nsubs++;
}

static void group_unlink(struct reg_sub *s)
{
    struct reg_group *g = s->group;

    if (s->gprev)
        s->gprev->gnext = s->gnext;
    else
        g->subs = s->gnext;
    if (s->gnext)
        s->gnext->gprev = s->gprev;
    g->nsubs--;
}

static void held_link(struct reg_channel *ch, struct reg_sub *s)
{
    s->gprev = NULL;
    s->gnext = ch->held;
    if (ch->held)
        ch->held->gprev = s;
    ch->held = s;
}

static void held_unlink(struct reg_channel *ch, struct reg_sub *s)
{
    if (s->gprev)
        s->gprev->gnext = s->gnext;
    else
        ch->held = s->gnext;
    if (s->gnext)
        s->gnext->gprev = s->gprev;
    s->gprev = s->gnext = NULL;
}

/* A waiting subscription is done waiting: when none waits any more, the
 * live messages kept for them go. */
static void wait_done(struct reg_channel *ch)
{
    if (--ch->nwait == 0) {
        recent_free(ch);
        ch->disrupted = 0;
    }
}

/* Moves an existing subscription to the group of filter f. */
static int sub_refilter(struct reg *r, struct reg_sub *s, struct filter *f)
{
    struct reg_group *old = s->group, *g;

    if (same_filter(old->filter, f)) {
        filter_free(f);
        return REG_SAME;
    }
    if ((g = group_get(old->ch, f)) == NULL)
        return -1;
    if (s->held) {
        old->nheld--;
        g->nheld++;
        s->group = g;
    } else {
        group_unlink(s);
        group_link(g, s);
    }
    group_free(r, old);
    return REG_REPLACED;
}

static int subscribe(struct reg *r, struct reg_client *cl, const char *name, size_t len,
                     struct filter *f, int hold)
{
    uint64_t h = siphash24(name, len, r->key);
    struct reg_channel *ch = lookup(r, name, len, h);
    struct reg_group *g;
    struct reg_sub *s;
    int created = 0;

    if (ch != NULL) {
        for (s = cl->subs; s != NULL; s = s->cnext)
            if (s->group->ch == ch)
                return sub_refilter(r, s, f);
    } else {
        if ((ch = channel_new(r, name, len, h)) == NULL) {
            filter_free(f);
            return -1;
        }
        created = 1;
    }
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        filter_free(f);
        g = NULL;
    } else {
        g = group_get(ch, f);
    }
    if (g == NULL) {
        free(s);
        if (created)
            channel_free(r, ch);
        return -1;
    }
    if (hold) {
        s->group = g;
        s->held = HOLD_WAIT;
        g->nheld++;
        ch->nwait++;
        held_link(ch, s);
    } else {
        group_link(g, s);
    }
    s->client = cl;
    s->cnext = cl->subs;
    cl->subs = s;
    cl->nsubs++;
    ch->nsubs++;
    r->nsubs++;
    stats->subscriptions = r->nsubs;
    if (created && r->hooks.on_first)
        r->hooks.on_first(r->hooks.arg, ch->name, ch->len);
    return REG_ADDED;
}

int reg_subscribe(struct reg *r, struct reg_client *cl, const char *name, size_t len,
                  struct filter *f)
{
    return subscribe(r, cl, name, len, f, 0);
}

int reg_subscribe_held(struct reg *r, struct reg_client *cl, const char *name, size_t len,
                       struct filter *f)
{
    return subscribe(r, cl, name, len, f, 1);
}

/* Takes cl's held acks off ch, sending them first when send is 1. */
static void acks_of(struct reg *r, struct reg_channel *ch, struct reg_client *cl, int send)
{
    struct reg_ack **pp = &ch->acks, *a;

    while ((a = *pp) != NULL) {
        if (a->client != cl) {
            pp = &a->next;
            continue;
        }
        *pp = a->next;
        r->nacks--;
        if (send && r->hooks.on_ack)
            r->hooks.on_ack(r->hooks.arg, cl, ch->name, ch->len, a->rid, a->ridlen);
        free(a);
    }
}

/* Unlinks s from its group (and frees what empties); s itself is freed.
 * send_acks: whether acks held for the client go out first (an
 * unsubscribe) or are dropped (the client is leaving). */
static void sub_remove(struct reg *r, struct reg_sub *s, int send_acks)
{
    struct reg_group *g = s->group;
    struct reg_channel *ch = g->ch;

    if (ch->acks != NULL)
        acks_of(r, ch, s->client, send_acks);
    if (s->held) {
        held_unlink(ch, s);
        g->nheld--;
        if (s->held == HOLD_WAIT)
            wait_done(ch);
    } else {
        group_unlink(s);
    }
    ch->nsubs--;
    r->nsubs--;
    stats->subscriptions = r->nsubs;
    free(s);
    group_free(r, g);
    if (ch->nsubs == 0) {
        if (r->hooks.on_last)
            r->hooks.on_last(r->hooks.arg, ch->name, ch->len);
        channel_free(r, ch);
    }
}

int reg_is_subscribed(const struct reg_client *cl, const char *name, size_t len)
{
    const struct reg_sub *s;

    for (s = cl->subs; s != NULL; s = s->cnext) {
        const struct reg_channel *ch = s->group->ch;
        if (ch->len == len && memcmp(ch->name, name, len) == 0)
            return 1;
    }
    return 0;
}

int reg_unsubscribe(struct reg *r, struct reg_client *cl, const char *name, size_t len)
{
    struct reg_sub **pp, *s;

    for (pp = &cl->subs; (s = *pp) != NULL; pp = &s->cnext) {
        struct reg_channel *ch = s->group->ch;
        if (ch->len == len && memcmp(ch->name, name, len) == 0) {
            *pp = s->cnext;
            cl->nsubs--;
            sub_remove(r, s, 1);
            return 0;
        }
    }
    return 1;
}

void reg_unsubscribe_all(struct reg *r, struct reg_client *cl)
{
    struct reg_sub *s;

    while ((s = cl->subs) != NULL) {
        cl->subs = s->cnext;
        cl->nsubs--;
        sub_remove(r, s, 0);
    }
}

/* Keeps a live message for the subscriptions waiting for their history. */
static void recent_add(struct reg_channel *ch, uint64_t offset, const char *json, size_t jlen,
                       int is_json)
{
    struct reg_recent *e;

    if (ch->disrupted)
        return;
    if (ch->recent_bytes + jlen > REG_RECENT_MAX_BYTES ||
        (e = malloc(sizeof(*e) + jlen)) == NULL) {
        ch->disrupted = 1; /* they will be told of a gap */
        recent_free(ch);
        return;
    }
    e->next = NULL;
    e->offset = offset;
    e->len = (uint32_t)jlen;
    e->is_json = (uint8_t)is_json;
    memcpy(e->json, json, jlen);
    if (ch->recent_tail)
        ch->recent_tail->next = e;
    else
        ch->recent = e;
    ch->recent_tail = e;
    ch->recent_bytes += jlen;
}

/* Subscriptions that got history up to their floor join their group with
 * the first live message past it (a plain publish is never in history):
 * the group's pending batch, which holds only messages they have, goes to
 * the others first. */
static void catch_up(struct reg *r, struct reg_channel *ch, uint64_t offset)
{
    struct reg_sub *s, *next;

    for (s = ch->held; s != NULL; s = next) {
        next = s->gnext;
        if (s->held != HOLD_CATCH || (offset != 0 && offset <= s->floor))
            continue;
        batch_flush(r->batcher, &s->group->batch);
        held_unlink(ch, s);
        s->held = HOLD_NONE;
        s->group->nheld--;
        group_link(s->group, s);
    }
}

size_t reg_publish(struct reg *r, const char *name, size_t len, const char *json,
                   size_t jlen, int is_json, const struct proto_pos *pos)
{
    struct reg_channel *ch = lookup(r, name, len, siphash24(name, len, r->key));
    struct reg_group *g;
    struct filter_msg m;
    uint64_t offset = pos != NULL ? pos->offset : 0;
    size_t n = 0;

    if (ch == NULL)
        return 0;
    if (offset > 0) {
        if (ch->nwait > 0 && ch->pos.offset > 0 &&
            (ch->pos.epoch_len != pos->epoch_len ||
             memcmp(ch->pos.epoch, pos->epoch, pos->epoch_len) != 0))
            ch->disrupted = 1; /* a new history while some wait for the old one */
        ch->pos = *pos;
        ch->hist = REG_HIST_YES;
    }
    if (ch->nwait > 0)
        recent_add(ch, offset, json, jlen, is_json);
    if (ch->held != NULL)
        catch_up(r, ch, offset);
    /* The payload is parsed by the first filter that asks, and only then. */
    filter_msg_init(&m, json, jlen, is_json);
    for (g = ch->groups; g != NULL; g = g->next) {
        if (g->filter != NULL && !filter_match(g->filter, &m))
            continue;
        if (batch_append(r->batcher, &g->batch, ch->name, ch->len, json, jlen, pos) == 0)
            n++;
    }
    filter_msg_release(&m);
    return n;
}

/* The batcher flushed a group's batch: hand the one frame to every member. */
static void emit(void *arg, struct batch *b, struct frame *f, uint32_t count)
{
    struct reg *r = arg;
    struct reg_group *g = container_of(b, struct reg_group, batch);
    struct reg_sub *s, *n;
    uint32_t queued = 0;

    for (s = g->subs; s != NULL; s = n) {
        /* Thousands of members are not in cache: ask for the next one's
         * subscription and client while this one is served. */
        if ((n = s->gnext) != NULL) {
            __builtin_prefetch(n->gnext);
            __builtin_prefetch(n->client);
        }
        queued += (uint32_t)r->hooks.deliver(r->hooks.arg, s->client, f);
    }
    /* Counted once the frames are queued, so that a member refused (slow,
     * or closing and not yet unsubscribed) is not counted as sent; one
     * local sum, so the loop touches nothing more per member. */
    stats->frames_sent_total += queued;
    stats->messages_delivered_total += (uint64_t)count * queued;
}

int reg_defer_ack(struct reg *r, struct reg_client *cl, const char *name, size_t len,
                  const char *rid, size_t ridlen)
{
    struct reg_channel *ch = lookup(r, name, len, siphash24(name, len, r->key));
    struct reg_ack *a, **tail;

    if (ch == NULL || (a = malloc(sizeof(*a) + ridlen)) == NULL)
        return -1;
    a->next = NULL;
    a->client = cl;
    a->ridlen = ridlen;
    if (ridlen > 0)
        memcpy(a->rid, rid, ridlen);
    /* In arrival order: a client's acks keep the order of its requests. */
    for (tail = &ch->acks; *tail != NULL; tail = &(*tail)->next)
        ;
    *tail = a;
    r->nacks++;
    return 0;
}

static void settle(struct reg *r, struct reg_channel *ch)
{
    struct reg_ack *a;

    while ((a = ch->acks) != NULL) {
        ch->acks = a->next;
        r->nacks--;
        if (r->hooks.on_ack)
            r->hooks.on_ack(r->hooks.arg, a->client, ch->name, ch->len, a->rid, a->ridlen);
        free(a);
    }
}

void reg_settle(struct reg *r, const char *name, size_t len)
{
    struct reg_channel *ch = lookup(r, name, len, siphash24(name, len, r->key));

    if (ch != NULL)
        settle(r, ch);
}

void reg_settle_all(struct reg *r)
{
    struct reg_channel *ch;
    size_t i;

    for (i = 0; r->nacks > 0 && i < r->nbuckets; i++)
        for (ch = r->buckets[i]; ch != NULL; ch = ch->hnext)
            settle(r, ch);
}

/* History. */

int reg_channel_pos(const struct reg *r, const char *name, size_t len, struct proto_pos *pos)
{
    struct reg_channel *ch = lookup((struct reg *)r, name, len,
                                    siphash24(name, len, r->key));

    if (ch == NULL)
        return REG_HIST_UNKNOWN;
    if (pos != NULL)
        *pos = ch->pos;
    return ch->hist;
}

void reg_channel_learn(struct reg *r, const char *name, size_t len, const struct proto_pos *pos)
{
    struct reg_channel *ch = lookup(r, name, len, siphash24(name, len, r->key));

    if (ch == NULL)
        return;
    if (pos == NULL || pos->offset == 0) {
        if (ch->hist == REG_HIST_UNKNOWN)
            ch->hist = REG_HIST_PLAIN;
        return;
    }
    /* A read can be older than what live delivery saw since. */
    if (ch->pos.offset == 0 || ch->pos.epoch_len != pos->epoch_len ||
        memcmp(ch->pos.epoch, pos->epoch, pos->epoch_len) != 0 || pos->offset > ch->pos.offset)
        ch->pos = *pos;
    ch->hist = REG_HIST_YES;
}

static struct reg_sub *find_sub(const struct reg_client *cl, const char *name, size_t len)
{
    struct reg_sub *s;

    for (s = cl->subs; s != NULL; s = s->cnext) {
        const struct reg_channel *ch = s->group->ch;
        if (ch->len == len && memcmp(ch->name, name, len) == 0)
            return s;
    }
    return NULL;
}

int reg_held_disrupted(const struct reg *r, const struct reg_client *cl, const char *name,
                       size_t len)
{
    const struct reg_sub *s = find_sub(cl, name, len);

    (void)r;
    return s != NULL && s->held == HOLD_WAIT && s->group->ch->disrupted;
}

/* Frames of history for one subscription, built as a batch is and cut at
 * batch_max_bytes. */
struct hframes {
    struct reg *r;
    struct reg_sub *s;
    struct proto_buf buf;
    uint32_t count;
    struct proto_pos pos;
    size_t delivered;
    int failed;
};

static void hframes_flush(struct hframes *h)
{
    struct frame *f;

    if (h->count == 0)
        return;
    f = batch_frame(h->r->batcher, &h->buf, h->count, &h->pos);
    if (f == NULL) {
        h->failed = 1;
        stats->dropped_total[DROP_NOMEM] += h->count;
    } else {
        if (h->r->hooks.deliver(h->r->hooks.arg, h->s->client, f)) {
            stats->frames_sent_total++;
            stats->messages_delivered_total += h->count;
            h->delivered += h->count;
        }
        frame_unref(f);
    }
    h->count = 0;
}

static void hframes_add(struct hframes *h, uint64_t offset, const char *json, size_t jlen,
                        int is_json)
{
    static const char room[FRAME_HEADROOM];
    struct reg_group *g = h->s->group;
    struct reg_channel *ch = g->ch;
    struct filter_msg m;
    int pass = 1;

    if (h->failed)
        return;
    if (g->filter != NULL) {
        filter_msg_init(&m, json, jlen, is_json);
        pass = filter_match(g->filter, &m);
        filter_msg_release(&m);
    }
    if (!pass)
        return;
    if (h->count == 0) {
        proto_buf_reset(&h->buf);
        if (proto_buf_append(&h->buf, room, sizeof(room)) != 0 ||
            proto_batch_open(&h->buf, ch->name, ch->len) != 0)
            goto nomem;
    } else if (proto_buf_append(&h->buf, PROTO_BATCH_SEP, 1) != 0) {
        goto nomem;
    }
    if (proto_buf_append(&h->buf, json, jlen) != 0)
        goto nomem;
    h->count++;
    if (offset > 0)
        h->pos.offset = offset;
    if (h->buf.len - FRAME_HEADROOM >= batcher_max_bytes(h->r->batcher))
        hframes_flush(h);
    return;
nomem:
    h->failed = 1;
    stats->dropped_total[DROP_NOMEM]++;
}

size_t reg_resume(struct reg *r, struct reg_client *cl, const char *name, size_t len,
                  const struct reg_entry *e, size_t n, uint64_t after, uint64_t upto,
                  const struct proto_pos *epoch)
{
    struct reg_sub *s = find_sub(cl, name, len);
    struct reg_channel *ch;
    struct reg_recent *rc;
    struct hframes h;
    uint64_t floor = after > upto ? after : upto;
    size_t i;

    if (s == NULL || s->held != HOLD_WAIT)
        return 0;
    ch = s->group->ch;
    memset(&h, 0, sizeof(h));
    h.r = r;
    h.s = s;
    if (epoch != NULL && epoch->offset > 0)
        h.pos = *epoch;
    else if (ch->pos.offset > 0)
        h.pos = ch->pos;
    h.pos.offset = 0;
    for (i = 0; i < n; i++)
        if (e[i].offset > after)
            hframes_add(&h, e[i].offset, e[i].json, e[i].len, e[i].is_json);
    /* What arrived live meanwhile and the read did not see. */
    if (!ch->disrupted)
        for (rc = ch->recent; rc != NULL; rc = rc->next)
            if (rc->offset == 0 || rc->offset > floor) {
                hframes_add(&h, rc->offset, rc->json, rc->len, rc->is_json);
                if (rc->offset > floor)
                    floor = rc->offset;
            }
    hframes_flush(&h);
    proto_buf_free(&h.buf);
    s->held = HOLD_CATCH;
    s->floor = floor;
    wait_done(ch);
    return h.delivered;
}

void reg_foreach_channel(struct reg *r, void (*fn)(void *arg, const char *name, size_t len),
                         void *arg)
{
    struct reg_channel *ch;
    size_t i;

    for (i = 0; i < r->nbuckets; i++)
        for (ch = r->buckets[i]; ch != NULL; ch = ch->hnext)
            fn(arg, ch->name, ch->len);
}

size_t reg_channel_count(const struct reg *r)
{
    return r->nchannels;
}

size_t reg_subscription_count(const struct reg *r)
{
    return r->nsubs;
}

void reg_free(struct reg *r)
{
    size_t i;
    struct reg_channel *ch, *next;
    struct reg_group *g, *gn;
    struct reg_sub *s, *sn;

    if (r == NULL)
        return;
    /* Pending batches go out first: their frames are queued on clients that
     * may still be written to before the loop ends. */
    batcher_free(r->batcher);
    for (i = 0; r->buckets && i < r->nbuckets; i++) {
        for (ch = r->buckets[i]; ch != NULL; ch = next) {
            next = ch->hnext;
            for (s = ch->held; s != NULL; s = sn) {
                sn = s->gnext;
                s->client->subs = NULL;
                s->client->nsubs = 0;
                free(s);
            }
            recent_free(ch);
            for (g = ch->groups; g != NULL; g = gn) {
                gn = g->next;
                for (s = g->subs; s != NULL; s = sn) {
                    sn = s->gnext;
                    s->client->subs = NULL;
                    s->client->nsubs = 0;
                    free(s);
                }
                proto_buf_free(&g->batch.buf);
                filter_free(g->filter);
                free(g);
            }
            acks_free(r, ch);
            free(ch);
        }
    }
    free(r->buckets);
    free(r);
}

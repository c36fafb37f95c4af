/* registry.c: channel table, groups and subscriptions (see registry.h). */
#include "registry.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "filter.h"
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
    struct batch batch;
};

struct reg_sub {
    struct reg_group *group;
    struct reg_client *client;
    struct reg_sub *gprev, *gnext; /* in the group */
    struct reg_sub *cnext;         /* in the client's list */
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
    uint32_t nsubs;
    uint32_t len;
    char name[];
};

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

static void channel_free(struct reg *r, struct reg_channel *ch)
{
    struct reg_channel **pp = &r->buckets[ch->hash & (r->nbuckets - 1)];

    acks_free(r, ch);
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
    group_unlink(s);
    group_link(g, s);
    if (old->nsubs == 0)
        group_free(r, old);
    return REG_REPLACED;
}

int reg_subscribe(struct reg *r, struct reg_client *cl, const char *name, size_t len,
                  struct filter *f)
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
    group_link(g, s);
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
    group_unlink(s);
    ch->nsubs--;
    r->nsubs--;
    stats->subscriptions = r->nsubs;
    free(s);
    if (g->nsubs == 0)
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

size_t reg_publish(struct reg *r, const char *name, size_t len, const char *json,
                   size_t jlen, int is_json)
{
    struct reg_channel *ch = lookup(r, name, len, siphash24(name, len, r->key));
    struct reg_group *g;
    struct filter_msg m;
    size_t n = 0;

    if (ch == NULL)
        return 0;
    /* The payload is parsed by the first filter that asks, and only then. */
    filter_msg_init(&m, json, jlen, is_json);
    for (g = ch->groups; g != NULL; g = g->next) {
        if (g->filter != NULL && !filter_match(g->filter, &m))
            continue;
        if (batch_append(r->batcher, &g->batch, ch->name, ch->len, json, jlen) == 0)
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

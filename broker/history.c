/* history.c: coalesced history reads (see history.h). */
#include "history.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chanset.h"
#include "log.h"
#include "stats.h"

struct hist_chan;

struct hist_req {
    struct hist_req *next;
    struct hist_chan *hc;
    enum hist_mode mode;
    uint64_t arg;
    hist_fn fn;
    void *fnarg;
    int cancelled;
};

/* A channel with requests waiting for the timer or for a read. */
struct hist_chan {
    struct hist *h;
    struct cset_item *it;     /* its entry in h->chans (it->on == this) */
    struct hist_chan *due;    /* on h->due */
    struct hist_req *waiting; /* for the next read, in arrival order */
    unsigned reads;           /* reads in flight */
    uint8_t on_due;
};

/* One read in flight and the requests it serves. */
struct read {
    struct read *prev, *next; /* on h->reads */
    struct hist_chan *hc;
    enum hist_mode mode;
    uint64_t from;            /* HIST_AFTER: the offset it reads after */
    struct hist_req *reqs;
};

struct hist {
    struct event_base *base;
    struct rsub *sub;
    long long recover_max;
    struct cset *chans;
    struct hist_chan *due;
    struct read *reads;         /* in flight, for hist_free */
    struct event *timer;
    struct hist_entry *scratch; /* entries of the reply being handed out */
    size_t scratch_cap;
};

static void chan_gc(struct hist_chan *hc)
{
    struct hist *h = hc->h;

    if (hc->waiting != NULL || hc->reads > 0 || hc->on_due)
        return;
    cset_remove(h->chans, hc->it);
    free(hc);
}

static void req_done(struct hist_req *q, const struct hist_result *res)
{
    if (!q->cancelled)
        q->fn(q->fnarg, res);
    free(q);
}

static void fail_all(struct hist_req *q)
{
    struct hist_result none;
    struct hist_req *next;

    memset(&none, 0, sizeof(none));
    for (; q != NULL; q = next) {
        next = q->next;
        req_done(q, &none);
    }
}

static void due_add(struct hist_chan *hc, long ms)
{
    struct hist *h = hc->h;
    struct timeval tv = {0, ms * 1000};

    if (!hc->on_due) {
        hc->on_due = 1;
        hc->due = h->due;
        h->due = hc;
    }
    if (!evtimer_pending(h->timer, NULL) && evtimer_add(h->timer, &tv) != 0)
        log_error("history: cannot arm the read timer");
}

/* Parses broker_range's answer: {epoch, last, first, off, payload, ...}.
 * Returns the number of entries (into h->scratch), or -1. */
static long parse(struct hist *h, const redisReply *r, struct proto_pos *pos, uint64_t *first)
{
    size_t i, n;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_INTEGER ||
        r->element[2]->type != REDIS_REPLY_INTEGER || (r->elements - 3) % 2 != 0 ||
        r->element[1]->integer < 0 || r->element[2]->integer < 0)
        return -1;
    memset(pos, 0, sizeof(*pos));
    if (r->element[0]->len > 0) {
        if (!proto_epoch_valid(r->element[0]->str, r->element[0]->len) ||
            r->element[1]->integer == 0)
            return -1;
        pos->epoch_len = (uint8_t)r->element[0]->len;
        memcpy(pos->epoch, r->element[0]->str, pos->epoch_len);
        pos->offset = (uint64_t)r->element[1]->integer;
    }
    *first = (uint64_t)r->element[2]->integer;
    n = (r->elements - 3) / 2;
    if (n > h->scratch_cap) {
        struct hist_entry *e = realloc(h->scratch, n * sizeof(*e));
        if (e == NULL)
            return -1;
        h->scratch = e;
        h->scratch_cap = n;
    }
    for (i = 0; i < n; i++) {
        const redisReply *o = r->element[3 + 2 * i], *p = r->element[4 + 2 * i];
        if (o->type != REDIS_REPLY_INTEGER || o->integer <= 0 || p->type != REDIS_REPLY_STRING ||
            (i > 0 && (uint64_t)o->integer <= h->scratch[i - 1].offset))
            return -1;
        h->scratch[i].offset = (uint64_t)o->integer;
        h->scratch[i].p = p->str;
        h->scratch[i].n = p->len;
    }
    return (long)n;
}

static void serve_after(struct hist_req *q, struct hist_result *res, const struct hist_entry *e,
                        size_t n, int reached_end, long long max, struct hist_req **again)
{
    uint64_t s = q->arg, last = res->pos.offset;
    size_t i = 0;

    res->e = NULL;
    res->n = 0;
    res->too_far = 0;
    if (last == 0 || s >= last || (res->first > 0 && res->first > s + 1)) {
        /* No history, nothing missed (or an offset from the future), or the
         * history no longer reaches back there: the caller decides. */
        req_done(q, res);
        return;
    }
    if (last - s > (uint64_t)max) {
        res->too_far = 1;
        req_done(q, res);
        return;
    }
    while (i < n && e[i].offset <= s)
        i++;
    if (!reached_end || i == n || e[i].offset != s + 1) {
        /* This read started further back and stopped short of this request's
         * range: another read, from here. */
        q->next = *again;
        *again = q;
        return;
    }
    res->e = e + i;
    res->n = n - i;
    req_done(q, res);
}

static void read_unlink(struct hist *h, struct read *rd)
{
    if (rd->prev)
        rd->prev->next = rd->next;
    else
        h->reads = rd->next;
    if (rd->next)
        rd->next->prev = rd->prev;
}

static void reply_cb(void *arg, const redisReply *r)
{
    struct read *rd = arg;
    struct hist_chan *hc = rd->hc;
    struct hist *h = hc->h;
    struct hist_result res;
    struct hist_req *q, *next, *again = NULL;
    long n;

    read_unlink(h, rd);
    hc->reads--;
    memset(&res, 0, sizeof(res));
    n = r != NULL && r->type != REDIS_REPLY_ERROR ? parse(h, r, &res.pos, &res.first) : -1;
    if (n < 0) {
        if (r != NULL && r->type == REDIS_REPLY_ERROR)
            log_debug("history: broker_range refused: %s", r->str);
        else if (r != NULL)
            log_warn("history: unexpected answer to broker_range");
        fail_all(rd->reqs);
    } else {
        int reached_end = res.pos.offset == 0 || (n > 0 && h->scratch[n - 1].offset == res.pos.offset) ||
                          (n == 0 && rd->from >= res.pos.offset);
        res.ok = 1;
        for (q = rd->reqs; q != NULL; q = next) {
            next = q->next;
            if (q->mode == HIST_LAST) {
                size_t k = q->arg < (uint64_t)n ? (size_t)q->arg : (size_t)n;
                res.e = h->scratch + (size_t)n - k;
                res.n = k;
                res.too_far = 0;
                req_done(q, &res);
            } else {
                serve_after(q, &res, h->scratch, (size_t)n, reached_end, h->recover_max, &again);
            }
        }
    }
    free(rd);
    while ((q = again) != NULL) {
        again = q->next;
        q->next = hc->waiting;
        hc->waiting = q;
    }
    if (hc->waiting != NULL)
        due_add(hc, 0);
    chan_gc(hc);
}

static void send_read(struct hist_chan *hc, enum hist_mode mode, uint64_t arg,
                      struct hist_req *reqs)
{
    struct hist *h = hc->h;
    struct read *rd = calloc(1, sizeof(*rd));
    char count[24], after[24];
    const char *argv[7] = {"FCALL_RO", "broker_range", "1", hc->it->name, count,
                           mode == HIST_LAST ? "last" : "after", after};
    size_t argl[7];
    int i;

    if (rd == NULL) {
        fail_all(reqs);
        return;
    }
    rd->hc = hc;
    rd->mode = mode;
    rd->from = arg;
    rd->reqs = reqs;
    snprintf(count, sizeof(count), "%llu",
             (unsigned long long)(mode == HIST_LAST ? arg : (uint64_t)h->recover_max));
    snprintf(after, sizeof(after), "%llu", (unsigned long long)(mode == HIST_LAST ? 0 : arg));
    for (i = 0; i < 7; i++)
        argl[i] = i == 3 ? hc->it->len : strlen(argv[i]);
    stats->history_reads_total++;
    if (rsub_command(h->sub, hc->it->name, hc->it->len, 7, argv, argl, reply_cb, rd) != 0) {
        /* The primary's command connection is down: nothing to read from. */
        free(rd);
        fail_all(reqs);
        return;
    }
    hc->reads++;
    rd->next = h->reads;
    if (h->reads)
        h->reads->prev = rd;
    h->reads = rd;
}

/* Sends the waiting requests of hc as (at most) one read per mode. */
static void launch(struct hist_chan *hc)
{
    struct hist *h = hc->h;
    struct hist_req *q, *next, *after = NULL, *last = NULL, **ta = &after, **tl = &last;
    uint64_t from = UINT64_MAX, n = 0;

    for (q = hc->waiting; q != NULL; q = next) {
        next = q->next;
        q->next = NULL;
        if (q->cancelled) {
            free(q);
            continue;
        }
        if (q->mode == HIST_LAST) {
            if (q->arg > n)
                n = q->arg;
            *tl = q;
            tl = &q->next;
        } else {
            if (q->arg < from)
                from = q->arg;
            *ta = q;
            ta = &q->next;
        }
    }
    hc->waiting = NULL;
    if (n > (uint64_t)h->recover_max)
        n = (uint64_t)h->recover_max;
    if (after != NULL)
        send_read(hc, HIST_AFTER, from, after);
    if (last != NULL)
        send_read(hc, HIST_LAST, n, last);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct hist *h = arg;
    struct hist_chan *hc;

    (void)fd;
    (void)what;
    while ((hc = h->due) != NULL) {
        h->due = hc->due;
        hc->on_due = 0;
        launch(hc);
        chan_gc(hc);
    }
}

struct hist *hist_new(struct event_base *base, struct rsub *sub)
{
    struct hist *h = calloc(1, sizeof(*h));

    if (h == NULL)
        return NULL;
    h->base = base;
    h->sub = sub;
    h->recover_max = 1000;
    h->chans = cset_new();
    h->timer = evtimer_new(base, timer_cb, h);
    if (h->chans == NULL || h->timer == NULL) {
        hist_free(h);
        return NULL;
    }
    return h;
}

void hist_configure(struct hist *h, long long recover_max)
{
    h->recover_max = recover_max > 0 ? recover_max : 1;
}

struct hist_req *hist_request(struct hist *h, const char *name, size_t len, enum hist_mode mode,
                              uint64_t arg, hist_fn fn, void *fnarg)
{
    struct cset_item *it = cset_find(h->chans, name, len);
    struct hist_chan *hc;
    struct hist_req *q = calloc(1, sizeof(*q)), **tail;

    if (q == NULL)
        return NULL;
    if (it == NULL) {
        if ((hc = calloc(1, sizeof(*hc))) == NULL || (it = cset_add(h->chans, name, len)) == NULL) {
            free(hc);
            free(q);
            return NULL;
        }
        hc->h = h;
        hc->it = it;
        it->on = hc;
    }
    hc = it->on;
    q->hc = hc;
    q->mode = mode;
    q->arg = arg;
    q->fn = fn;
    q->fnarg = fnarg;
    for (tail = &hc->waiting; *tail != NULL; tail = &(*tail)->next)
        ;
    *tail = q;
    stats->history_requests_total++;
    due_add(hc, HIST_COALESCE_MS);
    return q;
}

void hist_cancel(struct hist_req *q)
{
    if (q != NULL)
        q->cancelled = 1; /* freed by whoever holds it next: launch or the reply */
}

static void reqs_free(struct hist_req *q)
{
    struct hist_req *next;

    for (; q != NULL; q = next) {
        next = q->next;
        free(q);
    }
}

static void chan_free_cb(void *arg, struct cset_item *it)
{
    struct hist_chan *hc = it->on;

    (void)arg;
    reqs_free(hc->waiting);
    free(hc);
}

/* The subscriber (and so every command connection) must be freed first: a
 * connection freed never calls back, so the reads still in flight are
 * freed here. */
void hist_free(struct hist *h)
{
    struct read *rd;

    if (h == NULL)
        return;
    while ((rd = h->reads) != NULL) {
        h->reads = rd->next;
        reqs_free(rd->reqs);
        free(rd);
    }
    if (h->chans != NULL)
        cset_foreach(h->chans, chan_free_cb, NULL);
    cset_free(h->chans);
    if (h->timer)
        event_free(h->timer);
    free(h->scratch);
    free(h);
}

/* conn.c: client sockets, frame queues, deferred writes and frees
 * (see conn.h). */
#include "conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "stats.h"
#include "util.h"

#define CONN_IOV_MAX 64
#define CONN_DRAIN_MS 5000  /* time a closing peer gets to read our last bytes */
#define CONN_LINGER_MS 2000 /* time we keep reading after shutting down writes */
#define CONN_TICK_MS 1000
#define CONN_ENTRY_COST 64  /* see conn_send */

struct conn_set {
    struct event_base *base;
    struct conn *all;
    struct conn *pending;
    struct conn *dead;
    struct event *deferred;
    struct event *tick;
    size_t max_pending;
    size_t count;
};

static void conn_write(struct conn *c);

uint64_t conn_now_ms(void)
{
    return mono_ms();
}

static void schedule(struct conn_set *s)
{
    event_active(s->deferred, 0, 0);
}

static void free_conn(struct conn *c)
{
    struct conn_set *s = c->set;

    if (c->ops->on_free)
        c->ops->on_free(c);
    while (c->qlen > 0) {
        frame_unref(c->q[c->qhead]);
        c->qhead = (c->qhead + 1) & (c->qcap - 1);
        c->qlen--;
    }
    if (c->q != c->qi)
        free(c->q);
    event_del(&c->rev);
    event_del(&c->wev);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->all = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->count--;
    free(c);
}

/* The writes queued during an iteration, then the frees. The event is made
 * active from inside the iteration's callbacks, so libevent appends it to
 * the active queue behind every callback already due: it runs once, after
 * them, in the same iteration. (A lower priority would be wrong: libevent
 * runs only the highest non-empty priority per iteration, so writes would
 * starve for as long as Redis keeps its socket busy.) */
static void deferred_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn_set *s = arg;
    struct conn *c, *next;

    (void)fd;
    (void)what;
    c = s->pending;
    s->pending = NULL;
    for (; c != NULL; c = next) {
        next = c->link;
        /* The next connection's line arrives while this one's write runs:
         * with thousands pending, none is still in cache. */
        if (next != NULL)
            __builtin_prefetch(next);
        c->link = NULL;
        c->in_pending = 0;
        if (c->state == CONN_DEAD) { /* killed while waiting: free it below */
            c->link = s->dead;
            s->dead = c;
        } else {
            conn_write(c);
        }
    }
    c = s->dead;
    s->dead = NULL;
    for (; c != NULL; c = next) {
        next = c->link;
        free_conn(c);
    }
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn_set *s = arg;
    uint64_t now = conn_now_ms();
    struct conn *c;

    (void)fd;
    (void)what;
    for (c = s->all; c != NULL; c = c->next) {
        switch (c->state) {
        case CONN_OPEN:
            if (c->ops->on_tick)
                c->ops->on_tick(c, now);
            break;
        case CONN_DRAINING:
        case CONN_LINGER:
            if (now >= c->deadline_ms)
                conn_kill(c);
            break;
        default:
            break;
        }
    }
}

struct conn_set *conn_set_new(struct event_base *base, size_t max_pending_bytes)
{
    struct conn_set *s = calloc(1, sizeof(*s));
    struct timeval tv = {CONN_TICK_MS / 1000, 0};

    if (s == NULL)
        return NULL;
    s->base = base;
    s->max_pending = max_pending_bytes;
    s->deferred = event_new(base, -1, 0, deferred_cb, s);
    s->tick = event_new(base, -1, EV_PERSIST, tick_cb, s);
    if (s->deferred == NULL || s->tick == NULL)
        goto fail;
    if (event_add(s->tick, &tv) != 0)
        goto fail;
    return s;
fail:
    if (s->deferred)
        event_free(s->deferred);
    if (s->tick)
        event_free(s->tick);
    free(s);
    return NULL;
}

void conn_set_set_max_pending(struct conn_set *s, size_t max_pending_bytes)
{
    s->max_pending = max_pending_bytes;
}

void conn_set_free(struct conn_set *s)
{
    struct conn *c, *next;

    if (s == NULL)
        return;
    /* Frees whatever the lists hold, then every remaining connection. */
    deferred_cb(-1, 0, s);
    for (c = s->all; c != NULL; c = next) {
        next = c->next;
        free_conn(c);
    }
    event_free(s->deferred);
    event_free(s->tick);
    free(s);
}

size_t conn_set_count(const struct conn_set *s)
{
    return s->count;
}

void conn_set_foreach(struct conn_set *s, void (*fn)(struct conn *c, void *arg), void *arg)
{
    struct conn *c;

    for (c = s->all; c != NULL; c = c->next)
        if (c->state == CONN_OPEN)
            fn(c, arg);
}

static void discard_input(struct conn *c)
{
    char buf[4096];
    ssize_t n;
    int i;

    /* Bounded per callback so one chatty peer cannot hold the loop. */
    for (i = 0; i < 16; i++) {
        n = read(c->fd, buf, sizeof(buf));
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        conn_kill(c);
        return;
    }
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd;
    (void)what;
    if (c->state == CONN_OPEN)
        c->ops->on_read(c);
    else if (c->state != CONN_DEAD)
        discard_input(c);
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd;
    (void)what;
    if (c->state != CONN_DEAD)
        conn_write(c);
}

struct conn *conn_new(struct conn_set *s, int fd, const struct conn_ops *ops, void *owner)
{
    struct conn *c = calloc(1, sizeof(*c));

    if (c == NULL) {
        close(fd);
        return NULL;
    }
    c->fd = fd;
    c->ops = ops;
    c->owner = owner;
    c->set = s;
    c->q = c->qi;
    c->qcap = CONN_INLINE_Q;
    if (event_assign(&c->rev, s->base, fd, EV_READ | EV_PERSIST, read_cb, c) != 0 ||
        event_assign(&c->wev, s->base, fd, EV_WRITE | EV_PERSIST, write_cb, c) != 0 ||
        event_add(&c->rev, NULL) != 0) {
        close(fd);
        free(c);
        return NULL;
    }
    c->next = s->all;
    if (s->all)
        s->all->prev = c;
    s->all = c;
    s->count++;
    return c;
}

void conn_set_owner(struct conn *c, const struct conn_ops *ops, void *owner)
{
    c->ops = ops;
    c->owner = owner;
}

ssize_t conn_read(struct conn *c, void *buf, size_t len)
{
    ssize_t n;

    if (c->state == CONN_DEAD)
        return -1;
    n = read(c->fd, buf, len);
    if (n > 0)
        return n;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    conn_kill(c);
    return -1;
}

/* Doubles the ring (from the inline one to the heap the first time). The
 * heap ring is kept once grown: a client that gets several frames a tick
 * keeps getting them. */
static int queue_grow(struct conn *c)
{
    uint32_t ncap = c->qcap * 2, i;
    struct frame **nq;

    if (ncap < c->qcap || (nq = malloc(sizeof(*nq) * ncap)) == NULL)
        return -1;
    for (i = 0; i < c->qlen; i++)
        nq[i] = c->q[(c->qhead + i) & (c->qcap - 1)];
    if (c->q != c->qi)
        free(c->q);
    c->q = nq;
    c->qhead = 0;
    c->qcap = ncap;
    return 0;
}

int conn_send(struct conn *c, struct frame *f)
{
    size_t n = frame_size(f);

    if (c->state != CONN_OPEN) {
        errno = EPIPE;
        return -1;
    }
    /* The entry count is bounded too, so that a flood of tiny frames cannot
     * grow the ring past what max_pending allows in bytes: an entry costs
     * about CONN_ENTRY_COST of queue and frame bookkeeping. */
    if (c->out_bytes + n > c->set->max_pending ||
        (size_t)c->qlen >= c->set->max_pending / CONN_ENTRY_COST) {
        errno = ENOBUFS;
        return -1;
    }
    if (c->qlen == c->qcap && queue_grow(c) != 0) {
        errno = ENOBUFS;
        return -1;
    }
    c->q[(c->qhead + c->qlen) & (c->qcap - 1)] = frame_ref(f);
    c->qlen++;
    c->out_bytes += n;
    if (!c->in_pending && !c->wev_on) {
        c->in_pending = 1;
        c->link = c->set->pending;
        c->set->pending = c;
        schedule(c->set);
    }
    return 0;
}

/* A private copy of p[0..n), queued; ctrl marks a control reply. */
static int send_private(struct conn *c, const void *p, size_t n, uint8_t ctrl)
{
    struct frame *f;
    int r;

    if (c->state != CONN_OPEN) {
        errno = EPIPE;
        return -1;
    }
    if ((f = frame_copy(p, n)) == NULL) {
        errno = ENOMEM;
        return -1;
    }
    f->ctrl = ctrl;
    r = conn_send(c, f);
    if (r == 0 && ctrl)
        c->ctrl_bytes += n;
    frame_unref(f);
    return r;
}

int conn_send_copy(struct conn *c, const void *p, size_t n)
{
    return send_private(c, p, n, 0);
}

int conn_send_ctrl(struct conn *c, const void *p, size_t n)
{
    if (c->state == CONN_OPEN && n > CONN_MAX_CTRL_BYTES - c->ctrl_bytes) {
        errno = ENOBUFS;
        return -1;
    }
    return send_private(c, p, n, 1);
}

uint64_t conn_drop_queued(struct conn *c)
{
    uint64_t msgs = 0;
    uint32_t keep = c->qoff > 0 ? 1 : 0;

    while (c->qlen > keep) {
        struct frame *f = c->q[(c->qhead + c->qlen - 1) & (c->qcap - 1)];
        msgs += f->msgs;
        c->out_bytes -= frame_size(f);
        if (f->ctrl)
            c->ctrl_bytes -= frame_size(f);
        frame_unref(f);
        c->qlen--;
    }
    return msgs;
}

static void set_wev(struct conn *c, int on)
{
    if (on == c->wev_on)
        return;
    if (on ? event_add(&c->wev, NULL) : event_del(&c->wev)) {
        log_error("event_%s on fd %d failed", on ? "add" : "del", c->fd);
        conn_kill(c);
        return;
    }
    c->wev_on = (uint8_t)on;
}

/* The queue is empty on a closing connection: stop writing, keep reading. */
static void finish_drain(struct conn *c)
{
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_LINGER;
    c->deadline_ms = conn_now_ms() + CONN_LINGER_MS;
}

static void conn_write(struct conn *c)
{
    struct iovec iov[CONN_IOV_MAX];
    int n, i;
    ssize_t w;

    while (c->qlen > 0) {
        for (n = 0; n < CONN_IOV_MAX && (uint32_t)n < c->qlen; n++) {
            struct frame *f = c->q[(c->qhead + (uint32_t)n) & (c->qcap - 1)];
            iov[n].iov_base = (char *)frame_bytes(f);
            iov[n].iov_len = frame_size(f);
        }
        iov[0].iov_base = (char *)iov[0].iov_base + c->qoff;
        iov[0].iov_len -= c->qoff;
        /* write() for the common single frame spares the kernel the
         * iovec copy-in. */
        w = n == 1 ? write(c->fd, iov[0].iov_base, iov[0].iov_len) : writev(c->fd, iov, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                set_wev(c, 1);
                return;
            }
            conn_kill(c);
            return;
        }
        stats->bytes_sent_total += (uint64_t)w;
        c->out_bytes -= (size_t)w;
        for (i = 0; i < n && w > 0; i++) {
            if ((size_t)w < iov[i].iov_len) {
                c->qoff += (uint32_t)w;
                w = 0;
                break;
            }
            w -= (ssize_t)iov[i].iov_len;
            if (c->q[c->qhead]->ctrl)
                c->ctrl_bytes -= frame_size(c->q[c->qhead]);
            frame_unref(c->q[c->qhead]);
            c->qhead = (c->qhead + 1) & (c->qcap - 1);
            c->qlen--;
            c->qoff = 0;
        }
        if (i < n) { /* short write: the socket buffer is full */
            set_wev(c, 1);
            return;
        }
    }
    set_wev(c, 0);
    if (c->state == CONN_DRAINING)
        finish_drain(c);
}

void conn_flush(struct conn *c)
{
    if (c->state != CONN_DEAD && !c->wev_on && c->qlen > 0)
        conn_write(c);
}

void conn_end(struct conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    c->state = CONN_DRAINING;
    c->deadline_ms = conn_now_ms() + CONN_DRAIN_MS;
    if (c->qlen == 0)
        finish_drain(c);
}

void conn_kill(struct conn *c)
{
    if (c->state == CONN_DEAD)
        return;
    c->state = CONN_DEAD;
    event_del(&c->rev);
    event_del(&c->wev);
    c->wev_on = 0;
    /* A connection on the pending list moves to the dead list when
     * deferred_cb reaches it; it is never on both lists at once. */
    if (!c->in_pending) {
        c->link = c->set->dead;
        c->set->dead = c;
    }
    schedule(c->set);
}

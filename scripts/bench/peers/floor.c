/* floor.c: the least work a Redis -> WebSocket fan-out can do, as a
 * yardstick for the benchmarks (scripts/bench/run.py, BENCHMARKS.md).
 *
 * One process, one epoll loop, one Redis connection (SUBSCRIBE on the first
 * subscriber of a channel). Each channel's messages are appended to one
 * pending buffer that already holds the batch envelope's head and room for
 * the WebSocket frame header. The batching rule is the broker's (so that
 * both send the same frames): one timer for all channels, armed by the first
 * pending message, 200 ms later (or last flush + 200 ms under steady load)
 * every pending channel is flushed, and a channel reaching 64 KiB is flushed
 * at once. A flush closes the envelope, writes the header in front, and
 * write()s that one frame to every subscriber. A socket that does not take
 * all of it keeps a reference to the frame (refcounted) and an offset.
 *
 * It speaks just enough of the broker's protocol for loadgen: the upgrade,
 * ?channels=a,b in the URL, {"action":"subscribe"|"unsubscribe",
 * "channel":...,"rid":...} answered with {"type":"ack",...}, ping, close.
 * What it leaves out on purpose, because it is the floor and not a product:
 * payloads are not validated (they are assumed to be JSON, as the benchmark's
 * are), channel names are not escaped (they are assumed to need none),
 * control messages are found by substring, not parsed, and there is no
 * reconnect to Redis, no auth, no limits but a slow-consumer cap.
 *
 *   floor [--listen HOST:PORT] [--redis HOST:PORT] [--batch-ms MS]
 *         [--batch-max BYTES]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define FL_MAX_SUBS 8               /* channels per client */
#define FL_HDR_ROOM 10              /* the longest server frame header */
#define FL_MAX_PENDING (8u << 20)   /* a client further behind is dropped */
#define FL_IOV 64
#define FL_HASH 4096

struct fl_frame {
    uint32_t refs;
    size_t len, cap;                /* len: bytes after hdr room while pending */
    uint8_t *p;                     /* the frame, once built */
    size_t plen;
    uint8_t buf[];                  /* FL_HDR_ROOM + payload */
};

struct fl_client;

struct fl_chan {
    char *name;
    size_t nlen;
    struct fl_client **subs;
    uint32_t nsubs, cap;
    struct fl_frame *pend;          /* NULL when nothing is pending */
    size_t head_len;                /* envelope head length in pend */
    struct fl_chan *hnext;          /* hash chain */
    struct fl_chan *pnext;          /* pending list */
};

struct fl_out {
    struct fl_frame *f;
    size_t off;
};

enum { FL_HEAD, FL_OPEN, FL_CLOSING };

struct fl_client {
    int fd;
    int state;
    uint32_t events;
    uint8_t *in;                    /* unparsed input kept across reads */
    size_t in_len;
    struct fl_out *q;               /* ring of queued frames */
    uint32_t qhead, qlen, qcap;
    size_t pending;
    struct fl_chan *subs[FL_MAX_SUBS];
    uint32_t idx[FL_MAX_SUBS];      /* our index in subs[i]->subs */
    unsigned nsubs;
};

static struct {
    int ep, lfd, rfd;
    int batch_ms;
    size_t batch_max;
    struct fl_chan *hash[FL_HASH];
    struct fl_chan *pending;
    int64_t deadline, last_flush;   /* ms, CLOCK_MONOTONIC; 0: not armed */
    uint8_t *rbuf;                  /* Redis input */
    size_t rlen, rcap;
    int64_t accept_pause_until;
    uint64_t redis_msgs;
} fl = { .batch_ms = 200, .batch_max = 65536, .rfd = -1 };

static volatile sig_atomic_t fl_stop;

static uint8_t fl_scratch[256 * 1024];

static int64_t fl_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *fl_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);

    if (q == NULL) {
        fprintf(stderr, "floor: out of memory\n");
        exit(1);
    }
    return q;
}

/* ---------------------------------------------------------------------- */
/* Frames and output queues */

static struct fl_frame *fl_frame_new(size_t cap)
{
    struct fl_frame *f = fl_xrealloc(NULL, sizeof(*f) + FL_HDR_ROOM + cap);

    f->refs = 0;
    f->len = 0;
    f->cap = cap;
    f->p = NULL;
    f->plen = 0;
    return f;
}

static void fl_frame_append(struct fl_frame **fp, const void *p, size_t n)
{
    struct fl_frame *f = *fp;

    if (f->len + n > f->cap) {
        size_t cap = f->cap * 2;
        while (cap < f->len + n)
            cap *= 2;
        f = fl_xrealloc(f, sizeof(*f) + FL_HDR_ROOM + cap);
        f->cap = cap;
        *fp = f;
    }
    memcpy(f->buf + FL_HDR_ROOM + f->len, p, n);
    f->len += n;
}

/* Writes the header of a FIN frame with opcode op in front of the payload. */
static void fl_frame_seal(struct fl_frame *f, unsigned op)
{
    uint8_t *pl = f->buf + FL_HDR_ROOM, *h;
    size_t n = f->len;

    if (n < 126) {
        h = pl - 2;
        h[1] = (uint8_t)n;
    } else if (n < 65536) {
        h = pl - 4;
        h[1] = 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
    } else {
        h = pl - 10;
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)(n >> (56 - 8 * i));
    }
    h[0] = (uint8_t)(0x80 | op);
    f->p = h;
    f->plen = (size_t)(pl + n - h);
}

static void fl_frame_unref(struct fl_frame *f)
{
    if (--f->refs == 0)
        free(f);
}

static void fl_client_close(struct fl_client *c);
static struct fl_client **fl_dead;
static size_t fl_ndead, fl_deadcap;

static void fl_client_events(struct fl_client *c, uint32_t ev)
{
    struct epoll_event e = { .events = ev, .data.ptr = c };

    if (c->events == ev)
        return;
    c->events = ev;
    epoll_ctl(fl.ep, EPOLL_CTL_MOD, c->fd, &e);
}

/* Writes what is queued. Returns 0, or -1 when c was closed. */
static int fl_client_flush(struct fl_client *c)
{
    struct iovec iov[FL_IOV];
    ssize_t w;
    int n;

    while (c->qlen > 0) {
        for (n = 0; n < FL_IOV && (uint32_t)n < c->qlen; n++) {
            struct fl_out *o = &c->q[(c->qhead + (uint32_t)n) % c->qcap];
            iov[n].iov_base = o->f->p + o->off;
            iov[n].iov_len = o->f->plen - o->off;
        }
        w = writev(c->fd, iov, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            fl_client_close(c);
            return -1;
        }
        c->pending -= (size_t)w;
        while (w > 0) {
            struct fl_out *o = &c->q[c->qhead];
            size_t left = o->f->plen - o->off;
            if ((size_t)w < left) {
                o->off += (size_t)w;
                break;
            }
            w -= (ssize_t)left;
            fl_frame_unref(o->f);
            c->qhead = (c->qhead + 1) % c->qcap;
            c->qlen--;
        }
    }
    if (c->qlen == 0 && c->state == FL_CLOSING) {
        fl_client_close(c);
        return -1;
    }
    fl_client_events(c, c->qlen ? EPOLLIN | EPOLLOUT : EPOLLIN);
    return 0;
}

/* Sends frame f (takes one reference) to c: written at once when nothing is
 * queued before it, queued otherwise. Returns 0, or -1 when c was closed. */
static int fl_client_send(struct fl_client *c, struct fl_frame *f)
{
    size_t off = 0;

    if (c->state == FL_CLOSING) {
        fl_frame_unref(f);
        return 0;
    }
    if (c->qlen == 0) {
        ssize_t w = write(c->fd, f->p, f->plen);
        if (w == (ssize_t)f->plen) {
            fl_frame_unref(f);
            return 0;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            fl_frame_unref(f);
            fl_client_close(c);
            return -1;
        }
        if (w > 0)
            off = (size_t)w;
    }
    if (c->pending + f->plen - off > FL_MAX_PENDING) { /* slow consumer */
        fl_frame_unref(f);
        fl_client_close(c);
        return -1;
    }
    if (c->qlen == c->qcap) {
        uint32_t cap = c->qcap ? c->qcap * 2 : 8, i;
        struct fl_out *q = fl_xrealloc(NULL, cap * sizeof(*q));
        for (i = 0; i < c->qlen; i++)
            q[i] = c->q[(c->qhead + i) % c->qcap];
        free(c->q);
        c->q = q;
        c->qcap = cap;
        c->qhead = 0;
    }
    c->q[(c->qhead + c->qlen) % c->qcap] = (struct fl_out){ f, off };
    c->qlen++;
    c->pending += f->plen - off;
    fl_client_events(c, EPOLLIN | EPOLLOUT);
    return 0;
}

/* A private frame of n bytes (op 0 = raw bytes, no header). */
static int fl_client_send_bytes(struct fl_client *c, unsigned op, const void *p, size_t n)
{
    struct fl_frame *f = fl_frame_new(n);

    fl_frame_append(&f, p, n);
    if (op == 0) {
        f->p = f->buf + FL_HDR_ROOM;
        f->plen = n;
    } else {
        fl_frame_seal(f, op);
    }
    f->refs = 1;
    return fl_client_send(c, f);
}

/* ---------------------------------------------------------------------- */
/* Channels */

static uint32_t fl_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;

    while (n--)
        h = (h ^ (uint8_t)*s++) * 16777619u;
    return h % FL_HASH;
}

static void fl_redis_command(const char *cmd, const char *arg, size_t n)
{
    char head[64];
    int hl = snprintf(head, sizeof(head), "*2\r\n$%zu\r\n%s\r\n$%zu\r\n", strlen(cmd), cmd, n);
    struct iovec iov[3] = {
        { head, (size_t)hl }, { (void *)arg, n }, { (void *)"\r\n", 2 },
    };
    size_t want = (size_t)hl + n + 2;

    /* Commands are rare and tiny: a blocking-style loop is enough here. */
    while (want > 0) {
        ssize_t w = writev(fl.rfd, iov, 3);
        if (w < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (w < 0) {
            perror("floor: redis write");
            exit(1);
        }
        want -= (size_t)w;
        for (int i = 0; i < 3 && w > 0; i++) {
            size_t t = (size_t)w < iov[i].iov_len ? (size_t)w : iov[i].iov_len;
            iov[i].iov_base = (char *)iov[i].iov_base + t;
            iov[i].iov_len -= t;
            w -= (ssize_t)t;
        }
    }
}

static struct fl_chan *fl_chan_find(const char *name, size_t n, int create)
{
    uint32_t h = fl_hash(name, n);
    struct fl_chan *ch;

    for (ch = fl.hash[h]; ch; ch = ch->hnext)
        if (ch->nlen == n && memcmp(ch->name, name, n) == 0)
            return ch;
    if (!create)
        return NULL;
    ch = fl_xrealloc(NULL, sizeof(*ch));
    memset(ch, 0, sizeof(*ch));
    ch->name = fl_xrealloc(NULL, n + 1);
    memcpy(ch->name, name, n);
    ch->name[n] = '\0';
    ch->nlen = n;
    ch->hnext = fl.hash[h];
    fl.hash[h] = ch;
    fl_redis_command("SUBSCRIBE", name, n);
    return ch;
}

static void fl_subscribe(struct fl_client *c, const char *name, size_t n)
{
    struct fl_chan *ch;
    unsigned i;

    if (n == 0)
        return;
    for (i = 0; i < c->nsubs; i++)
        if (c->subs[i]->nlen == n && memcmp(c->subs[i]->name, name, n) == 0)
            return;
    if (c->nsubs == FL_MAX_SUBS)
        return;
    ch = fl_chan_find(name, n, 1);
    if (ch->nsubs == ch->cap) {
        ch->cap = ch->cap ? ch->cap * 2 : 16;
        ch->subs = fl_xrealloc(ch->subs, ch->cap * sizeof(*ch->subs));
    }
    c->subs[c->nsubs] = ch;
    c->idx[c->nsubs] = ch->nsubs;
    c->nsubs++;
    ch->subs[ch->nsubs++] = c;
}

/* Removes c's i-th subscription (swap-remove on both sides). The channel
 * stays subscribed in Redis: the floor never unsubscribes. */
static void fl_unsubscribe_at(struct fl_client *c, unsigned i)
{
    struct fl_chan *ch = c->subs[i];
    uint32_t at = c->idx[i];
    struct fl_client *moved = ch->subs[--ch->nsubs];
    unsigned j;

    ch->subs[at] = moved;
    if (moved != c)
        for (j = 0; j < moved->nsubs; j++)
            if (moved->subs[j] == ch) {
                moved->idx[j] = at;
                break;
            }
    c->nsubs--;
    c->subs[i] = c->subs[c->nsubs];
    c->idx[i] = c->idx[c->nsubs];
}

static void fl_unsubscribe(struct fl_client *c, const char *name, size_t n)
{
    for (unsigned i = 0; i < c->nsubs; i++)
        if (c->subs[i]->nlen == n && memcmp(c->subs[i]->name, name, n) == 0) {
            fl_unsubscribe_at(c, i);
            return;
        }
}

/* Seals the pending batch of ch and writes it to every subscriber. */
static void fl_chan_flush(struct fl_chan *ch)
{
    struct fl_frame *f = ch->pend;
    uint32_t i, n;

    ch->pend = NULL;
    fl_frame_append(&f, "]}", 2);
    fl_frame_seal(f, 0x1);
    n = ch->nsubs;
    if (n == 0) {
        free(f);
        return;
    }
    /* A reference per subscriber up front (plus ours), so that a client
     * closed in the loop cannot free the frame under us. */
    f->refs = n + 1;
    for (i = 0; i < ch->nsubs && n > 0; n--) {
        struct fl_client *c = ch->subs[i];
        if (fl_client_send(c, f) == 0)
            i++;
        /* else c was removed: subs[i] is now another client */
    }
    while (n-- > 0)
        f->refs--;
    fl_frame_unref(f);
}

static void fl_chan_message(struct fl_chan *ch, const char *p, size_t n)
{
    fl.redis_msgs++;
    if (ch->nsubs == 0)
        return;
    if (ch->pend == NULL) {
        ch->pend = fl_frame_new(n + ch->nlen + 64 < 4096 ? 4096 : n + ch->nlen + 64);
        fl_frame_append(&ch->pend, "{\"type\":\"batch\",\"channel\":\"", 27);
        fl_frame_append(&ch->pend, ch->name, ch->nlen);
        fl_frame_append(&ch->pend, "\",\"messages\":[", 14);
        ch->head_len = ch->pend->len;
        if (fl.deadline == 0) { /* the broker's rhythm: see batch.c arm_timer() */
            int64_t now = fl_now_ms();
            fl.deadline = fl.last_flush && now - fl.last_flush < 2 * fl.batch_ms
                              ? fl.last_flush + fl.batch_ms : now + fl.batch_ms;
        }
        ch->pnext = fl.pending;
        fl.pending = ch;
    } else {
        fl_frame_append(&ch->pend, ",", 1);
    }
    fl_frame_append(&ch->pend, p, n);
    if (ch->pend->len >= fl.batch_max || fl.batch_ms == 0) {
        struct fl_chan **pp;
        for (pp = &fl.pending; *pp != ch; pp = &(*pp)->pnext)
            ;
        *pp = ch->pnext;
        fl_chan_flush(ch);
    }
}

/* Flushes every pending channel when the timer is due; returns the ms until
 * it is, or -1 when it is not armed. */
static int fl_timers(void)
{
    int64_t now = fl_now_ms();
    struct fl_chan *ch;

    if (fl.deadline == 0)
        return -1;
    if (now < fl.deadline)
        return (int)(fl.deadline - now);
    fl.deadline = 0;
    fl.last_flush = now;
    while ((ch = fl.pending) != NULL) {
        fl.pending = ch->pnext;
        fl_chan_flush(ch);
    }
    return -1;
}

/* ---------------------------------------------------------------------- */
/* Redis: RESP pushes of SUBSCRIBE */

/* Reads "$<n>\r\n<bytes>\r\n" or ":<n>\r\n" at *pp; 1 when complete, 0 when
 * more input is needed. */
static int fl_resp_item(const uint8_t **pp, const uint8_t *end, const uint8_t **s, size_t *n)
{
    const uint8_t *p = *pp, *nl;
    size_t len = 0;

    if (p >= end)
        return 0;
    nl = memchr(p, '\n', (size_t)(end - p));
    if (nl == NULL)
        return 0;
    if (*p == ':' || *p == '+') {
        *s = p + 1;
        *n = (size_t)(nl - 1 - (p + 1));
        *pp = nl + 1;
        return 1;
    }
    if (*p != '$') {
        fprintf(stderr, "floor: unexpected Redis reply %.40s\n", p);
        exit(1);
    }
    for (p++; *p >= '0' && *p <= '9'; p++)
        len = len * 10 + (size_t)(*p - '0');
    if ((size_t)(end - (nl + 1)) < len + 2)
        return 0;
    *s = nl + 1;
    *n = len;
    *pp = nl + 1 + len + 2;
    return 1;
}

static void fl_redis_input(void)
{
    const uint8_t *p, *end, *s[3];
    size_t n[3];
    ssize_t r;

    for (;;) {
        if (fl.rcap - fl.rlen < 65536) {
            fl.rcap *= 2;
            fl.rbuf = fl_xrealloc(fl.rbuf, fl.rcap);
        }
        r = read(fl.rfd, fl.rbuf + fl.rlen, fl.rcap - fl.rlen);
        if (r == 0) {
            fprintf(stderr, "floor: Redis closed the connection\n");
            exit(1);
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            perror("floor: redis read");
            exit(1);
        }
        fl.rlen += (size_t)r;
        p = fl.rbuf;
        end = fl.rbuf + fl.rlen;
        for (;;) {
            const uint8_t *q = p, *nl;
            unsigned k;
            if (q >= end || (nl = memchr(q, '\n', (size_t)(end - q))) == NULL)
                break;
            if (*q != '*' || q[1] != '3') {
                fprintf(stderr, "floor: unexpected Redis reply %.40s\n", q);
                exit(1);
            }
            q = nl + 1;
            for (k = 0; k < 3; k++)
                if (!fl_resp_item(&q, end, &s[k], &n[k]))
                    break;
            if (k < 3)
                break;
            p = q;
            if (n[0] == 7 && memcmp(s[0], "message", 7) == 0) {
                struct fl_chan *ch = fl_chan_find((const char *)s[1], n[1], 0);
                if (ch != NULL)
                    fl_chan_message(ch, (const char *)s[2], n[2]);
            }
        }
        fl.rlen = (size_t)(end - p);
        memmove(fl.rbuf, p, fl.rlen);
        if ((size_t)r < fl.rcap / 4)
            break;
    }
}

static int fl_connect(const char *hostport, int listening)
{
    char host[256], *colon;
    struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai;
    int fd, one = 1;

    snprintf(host, sizeof(host), "%s", hostport);
    colon = strrchr(host, ':');
    if (colon == NULL) {
        fprintf(stderr, "floor: %s is not HOST:PORT\n", hostport);
        exit(2);
    }
    *colon = '\0';
    if (listening)
        hints.ai_flags = AI_PASSIVE;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0) {
        fprintf(stderr, "floor: cannot resolve %s\n", hostport);
        exit(2);
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        perror("floor: socket");
        exit(1);
    }
    if (listening) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
            fprintf(stderr, "floor: listen %s: %s\n", hostport, strerror(errno));
            exit(1);
        }
    } else if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        fprintf(stderr, "floor: connect %s: %s\n", hostport, strerror(errno));
        exit(1);
    }
    freeaddrinfo(ai);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

/* ---------------------------------------------------------------------- */
/* Clients: the upgrade and control messages */

static void fl_client_close(struct fl_client *c)
{
    while (c->nsubs > 0)
        fl_unsubscribe_at(c, c->nsubs - 1);
    while (c->qlen > 0) {
        fl_frame_unref(c->q[c->qhead].f);
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qlen--;
    }
    free(c->q);
    free(c->in);
    epoll_ctl(fl.ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = -1;
    /* Freed at the end of the loop iteration: events of this round may
     * still point at it. */
    if (fl_ndead == fl_deadcap) {
        fl_deadcap = fl_deadcap ? fl_deadcap * 2 : 64;
        fl_dead = fl_xrealloc(fl_dead, fl_deadcap * sizeof(*fl_dead));
    }
    fl_dead[fl_ndead++] = c;
}

static const char *fl_memmem_ci(const char *h, size_t hn, const char *n)
{
    size_t nn = strlen(n);

    for (size_t i = 0; i + nn <= hn; i++)
        if (strncasecmp(h + i, n, nn) == 0)
            return h + i;
    return NULL;
}

/* Subscribes c to each name of "a,b" (no percent-decoding: the benchmark's
 * names need none). */
static void fl_subscribe_list(struct fl_client *c, const char *p, const char *end)
{
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        fl_subscribe(c, p, (size_t)(e - p));
        p = e + 1;
    }
}

/* A complete request head of n bytes. Returns 0, or -1 when c was closed. */
static int fl_client_head(struct fl_client *c, const char *h, size_t n)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    const char *k, *ke, *line_end, *q;
    unsigned char sha[SHA_DIGEST_LENGTH];
    char cat[128], acc[64], resp[256];
    int len;

    k = fl_memmem_ci(h, n, "\nSec-WebSocket-Key:");
    if (k == NULL) {
        static const char bad[] = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        c->state = FL_CLOSING;
        if (write(c->fd, bad, sizeof(bad) - 1) < 0) { /* best effort */ }
        fl_client_close(c);
        return -1;
    }
    for (k += 19; *k == ' ' || *k == '\t'; k++)
        ;
    for (ke = k; ke < h + n && *ke != '\r' && *ke != '\n' && *ke != ' '; ke++)
        ;
    if ((size_t)(ke - k) > 64) {
        fl_client_close(c);
        return -1;
    }
    len = snprintf(cat, sizeof(cat), "%.*s%s", (int)(ke - k), k, guid);
    SHA1((const unsigned char *)cat, (size_t)len, sha);
    EVP_EncodeBlock((unsigned char *)acc, sha, SHA_DIGEST_LENGTH);
    len = snprintf(resp, sizeof(resp),
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", acc);
    c->state = FL_OPEN;
    /* ?channels=a,b on the request line */
    line_end = memchr(h, '\n', n);
    q = line_end ? fl_memmem_ci(h, (size_t)(line_end - h), "channels=") : NULL;
    if (q != NULL) {
        const char *e = q + 9;
        while (e < line_end && *e != '&' && *e != ' ')
            e++;
        fl_subscribe_list(c, q + 9, e);
    }
    return fl_client_send_bytes(c, 0, resp, (size_t)len);
}

/* The string value of "key" in the JSON text m (a substring search, enough
 * for loadgen's control messages). */
static int fl_json_string(const char *m, size_t n, const char *key, const char **v, size_t *vn)
{
    const char *p = fl_memmem_ci(m, n, key), *e = m + n;

    if (p == NULL)
        return -1;
    p += strlen(key);
    while (p < e && (*p == ' ' || *p == ':'))
        p++;
    if (p >= e || *p != '"')
        return -1;
    *v = ++p;
    while (p < e && *p != '"')
        p++;
    *vn = (size_t)(p - *v);
    return p < e ? 0 : -1;
}

static int fl_client_control(struct fl_client *c, const char *m, size_t n)
{
    const char *ch = NULL, *act = NULL, *rid;
    size_t chn = 0, actn = 0, ridn = 0;
    char ack[512];
    int len, unsub;

    if (fl_json_string(m, n, "\"channel\"", &ch, &chn) != 0 || chn > 256)
        return fl_client_send_bytes(c, 0x1, "{\"type\":\"error\",\"code\":\"bad_request\"}", 38);
    unsub = fl_json_string(m, n, "\"action\"", &act, &actn) == 0 && actn == 11 &&
            memcmp(act, "unsubscribe", 11) == 0;
    if (unsub)
        fl_unsubscribe(c, ch, chn);
    else
        fl_subscribe(c, ch, chn);
    len = snprintf(ack, sizeof(ack), "{\"type\":\"ack\",\"action\":\"%s\",\"channel\":\"%.*s\"",
                   unsub ? "unsubscribe" : "subscribe", (int)chn, ch);
    rid = fl_memmem_ci(m, n, "\"rid\"");
    if (rid != NULL) {
        for (rid += 5; rid < m + n && (*rid == ' ' || *rid == ':'); rid++)
            ;
        while (rid + ridn < m + n && rid[ridn] != ',' && rid[ridn] != '}' && ridn < 64)
            ridn++;
        len += snprintf(ack + len, sizeof(ack) - (size_t)len, ",\"rid\":%.*s", (int)ridn, rid);
    }
    len += snprintf(ack + len, sizeof(ack) - (size_t)len, "}");
    return fl_client_send_bytes(c, 0x1, ack, (size_t)len);
}

/* Parses complete client frames in p[0..n); returns bytes consumed, or -1
 * when c was closed. Fragmented messages are not reassembled (loadgen does
 * not send them). */
static ssize_t fl_client_frames(struct fl_client *c, uint8_t *p, size_t n)
{
    size_t used = 0;

    while (n - used >= 2) {
        uint8_t *h = p + used, *pl;
        unsigned op = h[0] & 0x0F;
        uint64_t len = h[1] & 0x7F;
        size_t hl = 2;

        if (!(h[1] & 0x80)) { /* clients must mask */
            fl_client_close(c);
            return -1;
        }
        if (len == 126) {
            if (n - used < 4)
                break;
            len = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (len == 127) {
            fl_client_close(c); /* no client message of ours is that big */
            return -1;
        }
        if (n - used < hl + 4 + len)
            break;
        pl = h + hl + 4;
        for (uint64_t i = 0; i < len; i++)
            pl[i] ^= h[hl + (i & 3)];
        used += hl + 4 + (size_t)len;
        switch (op) {
        case 0x1:
            if (fl_client_control(c, (const char *)pl, (size_t)len) != 0)
                return -1;
            break;
        case 0x8:
            if (fl_client_send_bytes(c, 0x8, pl, len >= 2 ? 2 : 0) != 0)
                return -1;
            c->state = FL_CLOSING;
            if (c->qlen == 0) {
                fl_client_close(c);
                return -1;
            }
            return (ssize_t)used;
        case 0x9:
            if (fl_client_send_bytes(c, 0xA, pl, (size_t)len) != 0)
                return -1;
            break;
        default:
            break;
        }
    }
    return (ssize_t)used;
}

static void fl_client_input(struct fl_client *c)
{
    for (;;) {
        uint8_t *p;
        size_t n;
        ssize_t r = read(c->fd, fl_scratch, sizeof(fl_scratch));

        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
            fl_client_close(c);
            return;
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        if (c->in_len > 0) { /* rare: a frame or head split across reads */
            c->in = fl_xrealloc(c->in, c->in_len + (size_t)r);
            memcpy(c->in + c->in_len, fl_scratch, (size_t)r);
            c->in_len += (size_t)r;
            p = c->in;
            n = c->in_len;
        } else {
            p = fl_scratch;
            n = (size_t)r;
        }
        size_t used = 0;
        if (c->state == FL_HEAD) {
            const uint8_t *e = memmem(p, n, "\r\n\r\n", 4);
            if (e == NULL) {
                if (n > 8192) {
                    fl_client_close(c);
                    return;
                }
            } else {
                used = (size_t)(e + 4 - p);
                if (fl_client_head(c, (const char *)p, used) != 0)
                    return;
            }
        }
        if (c->state == FL_OPEN && used < n) {
            ssize_t u = fl_client_frames(c, p + used, n - used);
            if (u < 0)
                return;
            used += (size_t)u;
        }
        if (c->state == FL_CLOSING)
            used = n;
        if (used < n) {
            uint8_t *keep = fl_xrealloc(NULL, n - used);
            memcpy(keep, p + used, n - used);
            free(c->in);
            c->in = keep;
            c->in_len = n - used;
        } else {
            free(c->in);
            c->in = NULL;
            c->in_len = 0;
        }
        if ((size_t)r < sizeof(fl_scratch))
            return;
    }
}

static void fl_accept(void)
{
    int one = 1;

    for (;;) {
        int fd = accept4(fl.lfd, NULL, NULL, SOCK_NONBLOCK);
        struct fl_client *c;
        struct epoll_event e;

        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) { /* wait instead of spinning */
                epoll_ctl(fl.ep, EPOLL_CTL_DEL, fl.lfd, NULL);
                fl.accept_pause_until = fl_now_ms() + 100;
            }
            return;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c = fl_xrealloc(NULL, sizeof(*c));
        memset(c, 0, sizeof(*c));
        c->fd = fd;
        c->state = FL_HEAD;
        c->events = EPOLLIN;
        e.events = EPOLLIN;
        e.data.ptr = c;
        epoll_ctl(fl.ep, EPOLL_CTL_ADD, fd, &e);
    }
}

static void fl_on_signal(int sig)
{
    (void)sig;
    fl_stop = 1;
}

int main(int argc, char **argv)
{
    const char *listen_at = "127.0.0.1:8090", *redis_at = "127.0.0.1:6379";
    static struct epoll_event evs[1024];
    struct epoll_event e;
    struct rlimit rl;
    int i;

    for (i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--listen") == 0)
            listen_at = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--redis") == 0)
            redis_at = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--batch-ms") == 0)
            fl.batch_ms = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--batch-max") == 0)
            fl.batch_max = (size_t)atol(argv[++i]);
        else {
            fprintf(stderr, "usage: floor [--listen HOST:PORT] [--redis HOST:PORT] "
                            "[--batch-ms MS] [--batch-max BYTES]\n");
            return 2;
        }
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, fl_on_signal);
    signal(SIGINT, fl_on_signal);
    fl.rcap = 1 << 20;
    fl.rbuf = fl_xrealloc(NULL, fl.rcap);
    fl.ep = epoll_create1(0);
    fl.rfd = fl_connect(redis_at, 0);
    fl.lfd = fl_connect(listen_at, 1);
    e.events = EPOLLIN;
    e.data.ptr = &fl.rfd;
    epoll_ctl(fl.ep, EPOLL_CTL_ADD, fl.rfd, &e);
    e.data.ptr = &fl.lfd;
    epoll_ctl(fl.ep, EPOLL_CTL_ADD, fl.lfd, &e);
    fprintf(stderr, "floor: listening on %s, Redis %s\n", listen_at, redis_at);

    while (!fl_stop) {
        int timeout = fl_timers(), n;

        if (fl.accept_pause_until) {
            int64_t left = fl.accept_pause_until - fl_now_ms();
            if (left <= 0) {
                fl.accept_pause_until = 0;
                e.events = EPOLLIN;
                e.data.ptr = &fl.lfd;
                epoll_ctl(fl.ep, EPOLL_CTL_ADD, fl.lfd, &e);
            } else if (timeout < 0 || left < timeout) {
                timeout = (int)left;
            }
        }
        n = epoll_wait(fl.ep, evs, 1024, timeout);
        for (i = 0; i < n; i++) {
            void *ptr = evs[i].data.ptr;
            if (ptr == &fl.lfd) {
                fl_accept();
            } else if (ptr == &fl.rfd) {
                fl_redis_input();
            } else {
                struct fl_client *c = ptr;
                if (c->state < 0)
                    continue;
                if ((evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && c->qlen > 0 &&
                    fl_client_flush(c) != 0)
                    continue;
                if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                    fl_client_input(c);
            }
        }
        while (fl_ndead > 0)
            free(fl_dead[--fl_ndead]);
    }
    return 0;
}

/* cluster.c: a Redis Cluster's slot map (see cluster.h). */
#include "cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "redisaddr.h"

struct clu_map {
    struct event_base *base;
    struct rconn *conn;
    struct raddr *addrs;      /* the seeds, then every node a map named */
    struct clu_node *nodes;   /* the primaries of the current map */
    size_t nnodes, cap;
    uint16_t owner[CLU_SLOTS]; /* index + 1 into nodes; 0: no owner */
    int known;
    int busy;                 /* a question is in flight */
    int again;                /* and another was asked meanwhile */
    struct event *timer;      /* a refresh asked for later */
    struct clu_map_hooks hooks;
};

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

static int port_ok(long long p)
{
    return p > 0 && p <= 65535;
}

/* The index + 1 of host:port among nodes, added when new; 0 on ENOMEM or
 * a host too long. */
static unsigned node_index(struct clu_node **nodes, size_t *n, size_t *cap, const char *host,
                           size_t hlen, int port)
{
    size_t i;

    if (hlen == 0 || hlen >= sizeof((*nodes)->host))
        return 0;
    for (i = 0; i < *n; i++)
        if ((*nodes)[i].port == port && strlen((*nodes)[i].host) == hlen &&
            memcmp((*nodes)[i].host, host, hlen) == 0)
            return (unsigned)i + 1;
    if (*n == 65535)
        return 0;
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        struct clu_node *nn = realloc(*nodes, nc * sizeof(*nn));
        if (nn == NULL)
            return 0;
        *nodes = nn;
        *cap = nc;
    }
    memcpy((*nodes)[*n].host, host, hlen);
    (*nodes)[*n].host[hlen] = '\0';
    (*nodes)[*n].port = port;
    return (unsigned)++*n;
}

static void changed(struct clu_map *m)
{
    if (m->hooks.on_change)
        m->hooks.on_change(m->hooks.arg);
}

/* A node entry of CLUSTER SLOTS: [host, port, id, ...]. An empty host means
 * the node we asked. */
static int node_of(const redisReply *e, const char *asked, const char **host, size_t *hlen,
                   int *port)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
        e->element[0]->type != REDIS_REPLY_STRING ||
        e->element[1]->type != REDIS_REPLY_INTEGER || !port_ok(e->element[1]->integer))
        return -1;
    *host = e->element[0]->len > 0 ? e->element[0]->str : asked;
    *hlen = e->element[0]->len > 0 ? e->element[0]->len : strlen(asked);
    *port = (int)e->element[1]->integer;
    return 0;
}

/* Applies a CLUSTER SLOTS answer. Returns 0, or -1 when it holds no usable
 * range (the map stays as it was). */
static int apply_slots(struct clu_map *m, const redisReply *r)
{
    struct clu_node *nodes = NULL;
    size_t n = 0, cap = 0, i, j, ranges = 0;
    static uint16_t owner[CLU_SLOTS];
    const char *asked = rconn_host(m->conn), *host;
    size_t hlen;
    int port;
    unsigned idx, s;

    if (r->type != REDIS_REPLY_ARRAY)
        return -1;
    memset(owner, 0, sizeof(owner));
    for (i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        long long lo, hi;
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            node_of(e->element[2], asked, &host, &hlen, &port) != 0)
            continue;
        lo = e->element[0]->integer;
        hi = e->element[1]->integer;
        if (lo < 0 || hi >= CLU_SLOTS || lo > hi ||
            (idx = node_index(&nodes, &n, &cap, host, hlen, port)) == 0)
            continue;
        for (s = (unsigned)lo; s <= (unsigned)hi; s++)
            owner[s] = (uint16_t)idx;
        ranges++;
        /* Primaries and replicas alike may answer the next question. */
        for (j = 2; j < e->elements; j++) {
            char h[128];
            if (node_of(e->element[j], asked, &host, &hlen, &port) != 0 || hlen >= sizeof(h))
                continue;
            memcpy(h, host, hlen);
            h[hlen] = '\0';
            if (raddr_list_learn(m->addrs, h, port) != 0)
                break;
        }
    }
    if (ranges == 0) {
        free(nodes);
        return -1;
    }
    free(m->nodes);
    m->nodes = nodes;
    m->nnodes = n;
    m->cap = cap;
    memcpy(m->owner, owner, sizeof(owner));
    if (!m->known)
        log_info("cluster: map of %zu slot ranges on %zu primaries", ranges, n);
    m->known = 1;
    return 0;
}

static void ask(struct clu_map *m);

static void slots_answer(void *arg, const redisReply *r)
{
    struct clu_map *m = arg;

    if (r == NULL)
        return; /* the connection went away; it asks again when back */
    if (r->type == REDIS_REPLY_ERROR || apply_slots(m, r) != 0) {
        log_warn("cluster %s:%d: CLUSTER SLOTS: %s; asking another node", rconn_host(m->conn),
                 rconn_port(m->conn), r->type == REDIS_REPLY_ERROR ? r->str : "no usable map");
        rconn_drop(m->conn, STATS_LOSS_ERROR);
        return;
    }
    m->busy = 0;
    if (m->again) {
        m->again = 0;
        ask(m);
    } else {
        rconn_stop(m->conn); /* no idle connection between questions */
    }
    changed(m);
}

static void send_question(struct clu_map *m)
{
    static const char *const argv[2] = {"CLUSTER", "SLOTS"};
    static const size_t argl[2] = {7, 5};

    m->again = 0;
    if (rconn_command(m->conn, slots_answer, m, 2, argv, argl) != 0)
        log_debug("cluster: CLUSTER SLOTS not sent (the connection is going down)");
}

static void ask(struct clu_map *m)
{
    if (m->busy) {
        m->again = 1;
        return;
    }
    m->busy = 1;
    if (rconn_is_ready(m->conn))
        send_question(m);
    else
        rconn_start(m->conn);
}

static void on_ready(void *arg)
{
    struct clu_map *m = arg;

    if (m->busy)
        send_question(m);
    else
        rconn_stop(m->conn);
}

static void on_push(void *arg, const redisReply *r, int solicited)
{
    (void)arg;
    (void)r;
    (void)solicited;
}

static void on_lost(void *arg, enum stats_redis_loss why)
{
    struct clu_map *m = arg;

    if (why != STATS_LOSS_NREASONS)
        raddr_failed(m->addrs); /* the next node, after the backoff */
    if (!m->busy)
        rconn_stop(m->conn);
}

static void on_address(void *arg, const char *host, int port)
{
    struct clu_map *m = arg;

    if (rconn_set_address(m->conn, host, port) != 0)
        log_error("cluster: out of memory");
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ask(arg);
}

void clu_map_refresh(struct clu_map *m, long delay_ms)
{
    struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};

    if (delay_ms <= 0) {
        evtimer_del(m->timer);
        ask(m);
        return;
    }
    if (m->busy) {
        m->again = 1;
        return;
    }
    if (!evtimer_pending(m->timer, NULL) && evtimer_add(m->timer, &tv) != 0) {
        log_error("cluster: cannot arm the refresh timer; asking now");
        ask(m);
    }
}

int clu_map_known(const struct clu_map *m)
{
    return m->known;
}

const struct clu_node *clu_map_owner(const struct clu_map *m, unsigned slot)
{
    unsigned i = slot < CLU_SLOTS ? m->owner[slot] : 0;

    return i == 0 ? NULL : &m->nodes[i - 1];
}

size_t clu_map_nodes(const struct clu_map *m, const struct clu_node **nodes)
{
    *nodes = m->nodes;
    return m->nnodes;
}

int clu_map_serves(const struct clu_map *m, const char *host, int port)
{
    size_t i;

    for (i = 0; i < m->nnodes; i++)
        if (m->nodes[i].port == port && strcmp(m->nodes[i].host, host) == 0)
            return 1;
    return 0;
}

int clu_map_moved(struct clu_map *m, const char *arg, size_t len)
{
    const char *sp = memchr(arg, ' ', len), *end = arg + len, *colon = NULL, *p;
    char num[8];
    long slot, port;
    unsigned idx;

    if (sp == NULL || sp == arg || (size_t)(sp - arg) >= sizeof(num))
        return -1;
    for (p = sp + 1; p < end; p++)
        if (*p == ':')
            colon = p;
    if (colon == NULL || colon == sp + 1 || end - colon - 1 <= 0 || end - colon - 1 > 5)
        return -1;
    memcpy(num, arg, (size_t)(sp - arg));
    num[sp - arg] = '\0';
    slot = strtol(num, NULL, 10);
    memcpy(num, colon + 1, (size_t)(end - colon - 1));
    num[end - colon - 1] = '\0';
    port = strtol(num, NULL, 10);
    if (slot < 0 || slot >= CLU_SLOTS || !port_ok(port))
        return -1;
    idx = node_index(&m->nodes, &m->nnodes, &m->cap, sp + 1, (size_t)(colon - sp - 1),
                     (int)port);
    if (idx == 0)
        return -1;
    m->owner[slot] = (uint16_t)idx;
    changed(m);
    return 0;
}

struct clu_map *clu_map_new(struct event_base *base, const char *seeds,
                            const struct rconn_opts *opts, const struct clu_map_hooks *hooks)
{
    struct clu_map *m = calloc(1, sizeof(*m));
    struct rconn_opts o = *opts;
    struct rconn_hooks h = {on_ready, on_push, on_lost, NULL};

    if (m == NULL)
        return NULL;
    m->base = base;
    m->hooks = *hooks;
    o.who = "cluster node";
    o.db = -1; /* a cluster has only db 0 */
    o.data_link = 0;
    h.arg = m;
    m->conn = rconn_new(base, &o, &h);
    m->addrs = raddr_list_new(seeds, on_address, m);
    m->timer = evtimer_new(base, timer_cb, m);
    if (m->conn == NULL || m->addrs == NULL || m->timer == NULL) {
        clu_map_free(m);
        return NULL;
    }
    log_info("cluster: seeds %s", seeds);
    m->busy = 1;
    raddr_start(m->addrs); /* connects; on_ready asks */
    return m;
}

void clu_map_free(struct clu_map *m)
{
    if (m == NULL)
        return;
    rconn_free(m->conn);
    raddr_free(m->addrs);
    if (m->timer)
        event_free(m->timer);
    free(m->nodes);
    free(m);
}

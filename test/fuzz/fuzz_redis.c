/* fuzz_redis.c: what Redis sends, as the daemon reads it. The first byte
 * picks the reader; the rest is what the server sends once the connection's
 * handshake PING has been answered:
 *   0  a plain connection (redisconn.h) with a subscription command and a
 *      command outstanding: replies, pushes and confirmations in any order
 *   1  a cluster map (cluster.h): the answer to CLUSTER SLOTS, and the same
 *      bytes as a MOVED argument
 *   2  Sentinel (sentinel.h): the answer to get-master-addr-by-name, then
 *      +switch-master messages
 *   3  a subscriber backend of one node (nodesub.h) with channels wanted
 * Every connection is then closed by the server and freed. */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/util.h>

#include "broker/cluster.h"
#include "broker/log.h"
#include "broker/nodesub.h"
#include "broker/redisaddr.h"
#include "broker/redisconn.h"
#include "broker/sentinel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct event_base *base;
static int peer = -1;

static int dial(void *arg, const char *host, int port)
{
    int sv[2];

    (void)arg, (void)host, (void)port;
    if (peer >= 0)
        return -1; /* one connection per input */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
        return -1;
    peer = sv[1];
    return sv[0];
}

static void spin(int n)
{
    int i;

    for (i = 0; i < n; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

/* Answers the handshake, sends the input, and lets the daemon read it. */
static void serve(const uint8_t *data, size_t size)
{
    char sink[65536];

    spin(2);
    if (peer < 0)
        return;
    while (read(peer, sink, sizeof(sink)) > 0)
        ;
    if (write(peer, "+PONG\r\n", 7) != 7)
        return;
    spin(2);
    while (size > 0) {
        ssize_t w = write(peer, data, size);
        if (w <= 0)
            break;
        data += w;
        size -= (size_t)w;
        spin(1);
        while (read(peer, sink, sizeof(sink)) > 0)
            ;
    }
    spin(4);
    close(peer);
    spin(4);
}

static void nop_ready(void *arg)
{
    (void)arg;
}

static void nop_push(void *arg, const redisReply *r, int solicited)
{
    (void)arg, (void)r, (void)solicited;
}

static void nop_lost(void *arg, enum stats_redis_loss why)
{
    (void)arg, (void)why;
}

static void nop_reply(void *arg, const redisReply *r)
{
    (void)arg, (void)r;
}

static void nop_addr(void *arg, const char *host, int port)
{
    (void)arg, (void)host, (void)port;
}

static void nop_msg(void *arg, const char *ch, size_t clen, const char *p, size_t n)
{
    (void)arg, (void)ch, (void)clen, (void)p, (void)n;
}

static void nop_void(void *arg)
{
    (void)arg;
}

static void nop_settled(void *arg, const char *ch, size_t clen)
{
    (void)arg, (void)ch, (void)clen;
}

static void nop_change(void *arg)
{
    (void)arg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rconn_opts o = {0};
    const char *names[2] = {"a", "b"};
    size_t lens[2] = {1, 1};
    int mode;

    if (base == NULL) {
        signal(SIGPIPE, SIG_IGN); /* the daemon may close before we finish writing */
        if ((base = event_base_new()) == NULL)
            abort();
        log_open("/dev/null");
        log_set_level(LOG_ERROR);
    }
    if (size < 1)
        return 0;
    mode = data[0] % 4;
    data++;
    size--;
    o.dial = dial;
    o.db = -1;
    peer = -1;
    if (mode == 0) {
        struct rconn_hooks h = {nop_ready, nop_push, nop_lost, NULL};
        struct rconn *c = rconn_new(base, &o, &h);
        const char *get[2] = {"GET", "k"};
        size_t getl[2] = {3, 1};
        if (c == NULL)
            return 0;
        rconn_set_address(c, "127.0.0.1", 6379);
        spin(2);
        if (peer >= 0 && write(peer, "+PONG\r\n", 7) == 7)
            spin(2);
        rconn_subscribe_cmd(c, "SUBSCRIBE", names, lens, 2, NULL, NULL);
        rconn_command(c, nop_reply, NULL, 2, get, getl);
        rconn_subscribe_cmd(c, "SUNSUBSCRIBE", names, lens, 1, NULL, NULL);
        /* The PONG was sent: serve() sends it again, harmlessly. */
        serve(data, size);
        rconn_free(c);
    } else if (mode == 1) {
        struct clu_map_hooks h = {nop_change, NULL};
        struct clu_map *m = clu_map_new(base, "127.0.0.1:7000", &o, &h);
        if (m == NULL)
            return 0;
        serve(data, size);
        clu_map_moved(m, (const char *)data, size);
        clu_map_free(m);
    } else if (mode == 2) {
        struct raddr *p = raddr_sentinel_new(base, "127.0.0.1:26379", "mymaster", &o, nop_addr,
                                             NULL);
        if (p == NULL)
            return 0;
        raddr_start(p);
        serve(data, size);
        raddr_failed(p);
        raddr_free(p);
    } else {
        struct rsub_hooks h = {nop_msg, nop_void, nop_void, nop_settled, NULL, NULL};
        struct raddr *a = raddr_fixed_new("127.0.0.1", 6379, NULL, NULL);
        struct rsub *s = a ? nodesub_new(base, a, &o, &h) : NULL;
        if (s == NULL)
            return 0;
        rsub_subscribe(s, "a", 1);
        rsub_subscribe(s, "b", 1);
        serve(data, size);
        rsub_unsubscribe(s, "a", 1);
        rsub_free(s);
    }
    if (peer >= 0)
        close(peer);
    peer = -1;
    spin(1);
    return 0;
}

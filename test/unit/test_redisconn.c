/* test_redisconn.c: the Redis connection layer (broker/redisconn.h) and the
 * address providers (broker/redisaddr.h, broker/sentinel.h), socket-free:
 * the connection's dial hook hands it one end of a socketpair, and the test
 * plays Redis (or a sentinel) on the other end, reading commands with
 * hiredis's reader and writing replies by hand. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "broker/log.h"
#include "broker/redisaddr.h"
#include "broker/redisconn.h"
#include "broker/sentinel.h"
#include "broker/stats.h"
#include "broker/util.h"
#include "t.h"

static struct event_base *base;

/* The fake server: the far end of the last socketpair dialled. */
struct server {
    int fd;            /* -1: none yet */
    int dials;         /* how many times the connection dialled */
    int refuse;        /* dial fails while set */
    char host[64];     /* the address of the last dial */
    int port;
    uint64_t dial_ms[16];
    redisReader *rd;
};

static struct server srv;

static int dial(void *arg, const char *host, int port)
{
    int sv[2];

    (void)arg;
    if (srv.dials < 16)
        srv.dial_ms[srv.dials] = mono_ms();
    srv.dials++;
    snprintf(srv.host, sizeof(srv.host), "%s", host);
    srv.port = port;
    if (srv.refuse)
        return -1;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        abort();
    if (srv.fd >= 0)
        close(srv.fd);
    srv.fd = sv[1];
    fcntl(srv.fd, F_SETFL, O_NONBLOCK);
    if (srv.rd)
        redisReaderFree(srv.rd);
    srv.rd = redisReaderCreate();
    return sv[0];
}

/* Runs the loop until *flag is set or ms pass. Returns *flag. */
static int spin_until(const int *flag, long ms)
{
    uint64_t end = mono_ms() + (uint64_t)ms;

    while (!*flag && mono_ms() < end)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
    return *flag;
}

static void spin(long ms)
{
    int never = 0;

    spin_until(&never, ms);
}

/* Reads the next command the connection sent (as an array of strings),
 * waiting up to ms while the loop runs. Returns NULL when none came. */
static redisReply *next_command(long ms)
{
    uint64_t end = mono_ms() + (uint64_t)ms;
    void *r = NULL;
    char buf[65536];

    for (;;) {
        if (redisReaderGetReply(srv.rd, &r) != REDIS_OK)
            abort();
        if (r != NULL)
            return r;
        if (mono_ms() >= end)
            return NULL;
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        {
            struct pollfd p = {srv.fd, POLLIN, 0};
            if (poll(&p, 1, 1) == 1) {
                ssize_t n = read(srv.fd, buf, sizeof(buf));
                if (n > 0)
                    redisReaderFeed(srv.rd, buf, (size_t)n);
            }
        }
    }
}

/* 1 when command r is argv[0..argc). */
static int is_cmd(redisReply *r, int argc, const char *const *argv)
{
    int i;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || (int)r->elements != argc)
        return 0;
    for (i = 0; i < argc; i++)
        if (r->element[i]->type != REDIS_REPLY_STRING || strcmp(r->element[i]->str, argv[i]) != 0)
            return 0;
    return 1;
}

static int expect(long ms, int argc, ...)
{
    const char *argv[8];
    va_list ap;
    redisReply *r = next_command(ms);
    int i, ok;

    va_start(ap, argc);
    for (i = 0; i < argc; i++)
        argv[i] = va_arg(ap, const char *);
    va_end(ap);
    ok = is_cmd(r, argc, argv);
    if (!ok)
        fprintf(stderr, "expected command %s..., got %s\n", argv[0],
                r == NULL ? "nothing"
                          : (r->type == REDIS_REPLY_ARRAY && r->elements ? r->element[0]->str : "?"));
    if (r)
        freeReplyObject(r);
    return ok;
}

static void say(const char *resp)
{
    size_t n = strlen(resp);

    while (n > 0) {
        ssize_t w = write(srv.fd, resp, n);
        if (w < 0 && errno == EAGAIN) {
            event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
            continue;
        }
        if (w <= 0) {
            fprintf(stderr, "the connection had closed before: %.40s\n", resp);
            return;
        }
        resp += w;
        n -= (size_t)w;
    }
}

/* A pub/sub message push on channel ch. */
static void say_message(const char *ch, const char *payload)
{
    char buf[512];

    snprintf(buf, sizeof(buf), "*3\r\n$7\r\nmessage\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n", strlen(ch),
             ch, strlen(payload), payload);
    say(buf);
}

/* What the hooks saw. */
static int ready, lost, last_loss = -1, pushes, solicited_pushes, sub_errs;
static char last_push[64];

static void on_ready(void *arg)
{
    (void)arg;
    ready++;
}

static void on_push(void *arg, const redisReply *r, int solicited)
{
    (void)arg;
    pushes++;
    solicited_pushes += solicited;
    snprintf(last_push, sizeof(last_push), "%s %s%s", r->element[0]->str,
             r->elements > 1 ? r->element[1]->str : "", solicited ? " (ours)" : "");
}

static void on_lost(void *arg, enum stats_redis_loss why)
{
    (void)arg;
    lost++;
    last_loss = (int)why;
}

static const struct rconn_hooks hooks = {on_ready, on_push, on_lost, NULL};

static void reset(void)
{
    ready = lost = pushes = solicited_pushes = sub_errs = 0;
    last_loss = -1;
    last_push[0] = '\0';
    if (srv.fd >= 0)
        close(srv.fd);
    srv.fd = -1;
    srv.dials = 0;
    srv.refuse = 0;
}

static struct rconn *make(const char *user, const char *password, int db)
{
    struct rconn_opts o = {0};
    struct rconn *c;

    o.who = "test";
    o.user = user;
    o.password = password;
    o.db = db;
    o.dial = dial;
    o.connect_ms = 2000;
    o.answer_ms = 300;
    o.ping_idle_ms = 100;
    reset();
    c = rconn_new(base, &o, &hooks);
    if (c == NULL)
        abort();
    return c;
}

static int got_reply;
static char reply_str[64];

static void reply_fn(void *arg, const redisReply *r)
{
    (void)arg;
    got_reply++;
    snprintf(reply_str, sizeof(reply_str), "%s", r ? (r->str ? r->str : "(non-string)") : "(gone)");
}

static void sub_err(void *arg, const redisReply *err, const char *const *names,
                    const size_t *lens, size_t n)
{
    (void)arg;
    (void)err;
    (void)names;
    (void)lens;
    sub_errs += (int)n;
}

static void test_handshake(void)
{
    struct rconn *c = make(NULL, NULL, -1);

    CHECK(rconn_state(c) == RCONN_IDLE);
    CHECK(rconn_set_address(c, "127.0.0.1", 6379) == 0);
    CHECK(srv.dials == 1 && strcmp(srv.host, "127.0.0.1") == 0 && srv.port == 6379);
    /* Up only once Redis has answered: the handshake always asks a PING. */
    CHECK(expect(500, 1, "PING"));
    spin(20);
    CHECK(ready == 0 && rconn_state(c) == RCONN_HANDSHAKE);
    say("+PONG\r\n");
    CHECK(spin_until(&ready, 500));
    CHECK(rconn_is_ready(c));
    rconn_free(c);

    c = make("alice", "s3cret", 3);
    rconn_set_address(c, "10.0.0.1", 7000);
    CHECK(expect(500, 3, "AUTH", "alice", "s3cret"));
    CHECK(expect(500, 2, "SELECT", "3"));
    CHECK(expect(500, 1, "PING"));
    say("+OK\r\n+OK\r\n+PONG\r\n");
    CHECK(spin_until(&ready, 500));
    rconn_free(c);

    /* A password without a user: AUTH password. */
    c = make(NULL, "pw", -1);
    rconn_set_address(c, "10.0.0.1", 7000);
    CHECK(expect(500, 2, "AUTH", "pw"));
    CHECK(expect(500, 1, "PING"));
    say("+OK\r\n+PONG\r\n");
    CHECK(spin_until(&ready, 500));
    rconn_free(c);
}

static void test_auth_refused(void)
{
    struct rconn *c = make("u", "bad", -1);
    uint64_t losses = stats->redis_link_losses_total[STATS_LOSS_AUTH];

    rconn_set_address(c, "127.0.0.1", 6379);
    CHECK(expect(500, 3, "AUTH", "u", "bad"));
    say("-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    CHECK(spin_until(&lost, 500));
    CHECK(last_loss == STATS_LOSS_AUTH && ready == 0);
    CHECK(stats->redis_link_losses_total[STATS_LOSS_AUTH] == losses + 1);
    /* Retried after the backoff, not at once. */
    CHECK(srv.dials == 1);
    spin(300);
    CHECK(srv.dials == 2);
    rconn_free(c);

    /* No password configured, Redis wants one: NOAUTH on the PING. */
    c = make(NULL, NULL, -1);
    rconn_set_address(c, "127.0.0.1", 6379);
    CHECK(expect(500, 1, "PING"));
    say("-NOAUTH Authentication required.\r\n");
    CHECK(spin_until(&lost, 500));
    CHECK(last_loss == STATS_LOSS_AUTH && ready == 0 && !rconn_is_ready(c));
    rconn_free(c);
}

static void test_ping_both_forms(void)
{
    struct rconn *c = make(NULL, NULL, -1);
    int i;

    rconn_set_address(c, "127.0.0.1", 6379);
    CHECK(expect(500, 1, "PING"));
    say("+PONG\r\n");
    CHECK(spin_until(&ready, 500));
    /* Idle: a liveness PING every ping_idle_ms, answered in pub/sub form and
     * in plain form; the connection stays up well past the answer deadline. */
    for (i = 0; i < 4; i++) {
        CHECK(expect(1000, 1, "PING"));
        say(i % 2 ? "+PONG\r\n" : "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    }
    spin(150);
    CHECK(lost == 0 && rconn_is_ready(c));
    /* Left unanswered: dropped as a timeout after answer_ms. */
    CHECK(expect(1000, 1, "PING"));
    CHECK(spin_until(&lost, 1500));
    CHECK(last_loss == STATS_LOSS_TIMEOUT);
    rconn_free(c);
}

static void test_pushes_and_fifo(void)
{
    struct rconn *c = make(NULL, NULL, -1);
    const char *names[2] = {"a", "b"};
    size_t lens[2] = {1, 1};
    const char *get[2] = {"GET", "k"};
    size_t getl[2] = {3, 1};

    rconn_set_address(c, "127.0.0.1", 6379);
    CHECK(rconn_subscribe_cmd(c, "SUBSCRIBE", names, lens, 2, sub_err, NULL) == -1);
    CHECK(expect(500, 1, "PING"));
    say("+PONG\r\n");
    CHECK(spin_until(&ready, 500));
    CHECK(rconn_subscribe_cmd(c, "SUBSCRIBE", names, lens, 2, sub_err, NULL) == 0);
    CHECK(rconn_command(c, reply_fn, NULL, 2, get, getl) == 0);
    CHECK(expect(500, 3, "SUBSCRIBE", "a", "b"));
    CHECK(expect(500, 2, "GET", "k"));
    /* A message between the two confirmations, then the GET's answer. */
    say("*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
        "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n"
        "*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
        "$3\r\nval\r\n");
    CHECK(spin_until(&got_reply, 500));
    CHECK(pushes == 3 && solicited_pushes == 2);
    CHECK(strcmp(reply_str, "val") == 0);
    /* A confirmation nobody asked for (a sharded channel whose slot moved). */
    say("*3\r\n$12\r\nsunsubscribe\r\n$1\r\nz\r\n:0\r\n");
    spin(50);
    CHECK(pushes == 4 && solicited_pushes == 2);
    CHECK(strcmp(last_push, "sunsubscribe z") == 0);
    /* A refused chunk is reported with its names; the FIFO stays in step. */
    CHECK(rconn_subscribe_cmd(c, "SSUBSCRIBE", names, lens, 2, sub_err, NULL) == 0);
    CHECK(expect(500, 3, "SSUBSCRIBE", "a", "b"));
    got_reply = 0;
    CHECK(rconn_command(c, reply_fn, NULL, 2, get, getl) == 0);
    say("-MOVED 15495 127.0.0.1:7002\r\n$2\r\nv2\r\n");
    CHECK(spin_until(&got_reply, 500));
    CHECK(sub_errs == 2 && strcmp(reply_str, "v2") == 0);
    CHECK(rconn_is_ready(c) && lost == 0);
    /* Pending callbacks hear NULL when the connection goes. */
    got_reply = 0;
    CHECK(rconn_command(c, reply_fn, NULL, 2, get, getl) == 0);
    close(srv.fd);
    srv.fd = -1;
    CHECK(spin_until(&lost, 500));
    CHECK(last_loss == STATS_LOSS_CLOSED && got_reply == 1 && strcmp(reply_str, "(gone)") == 0);
    rconn_free(c);
}

static void test_overload(void)
{
    struct rconn *c = make(NULL, NULL, -1);
    char msg[8192 + 64];
    int i;

    rconn_set_address(c, "127.0.0.1", 6379);
    CHECK(expect(500, 1, "PING"));
    say("+PONG\r\n");
    CHECK(spin_until(&ready, 500));
    /* 2 MB of messages, then Redis closes: the output-buffer limit. */
    snprintf(msg, sizeof(msg), "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$8192\r\n");
    memset(msg + strlen(msg), 'x', 8192);
    memcpy(msg + strlen("*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$8192\r\n") + 8192, "\r\n", 3);
    for (i = 0; i < 256; i++) {
        size_t n = strlen(msg);
        const char *p = msg;
        while (n > 0) {
            ssize_t w = write(srv.fd, p, n);
            if (w < 0 && errno == EAGAIN) {
                spin(1);
                continue;
            }
            if (w <= 0)
                abort();
            p += w;
            n -= (size_t)w;
            spin(0);
        }
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    }
    close(srv.fd);
    srv.fd = -1;
    CHECK(spin_until(&lost, 1000));
    CHECK(pushes == 256);
    CHECK(last_loss == STATS_LOSS_OVERLOAD);
    rconn_free(c);
}

static void test_move_and_stop(void)
{
    struct rconn *c = make(NULL, NULL, -1);

    rconn_set_address(c, "10.0.0.1", 1);
    CHECK(expect(500, 1, "PING"));
    say("+PONG\r\n");
    CHECK(spin_until(&ready, 500));
    /* The same address again changes nothing; another moves at once. */
    CHECK(rconn_set_address(c, "10.0.0.1", 1) == 0);
    spin(20);
    CHECK(srv.dials == 1 && rconn_is_ready(c));
    CHECK(rconn_set_address(c, "10.0.0.2", 2) == 0);
    CHECK(!rconn_is_ready(c));
    CHECK(spin_until(&lost, 500));
    CHECK(last_loss == STATS_LOSS_NREASONS);
    CHECK(srv.dials == 2 && strcmp(srv.host, "10.0.0.2") == 0 && srv.port == 2);
    CHECK(expect(500, 1, "PING"));
    say("+PONG\r\n");
    ready = 0;
    CHECK(spin_until(&ready, 500));
    /* Stopped: closed quietly, never retried. */
    lost = 0;
    rconn_stop(c);
    spin(300);
    CHECK(lost == 0 && srv.dials == 2 && rconn_state(c) == RCONN_IDLE);
    rconn_start(c);
    CHECK(srv.dials == 3);
    rconn_free(c);
}

static void test_refused_connects_back_off(void)
{
    struct rconn *c = make(NULL, NULL, -1);
    int i;

    srv.refuse = 1;
    rconn_set_address(c, "127.0.0.1", 6379);
    spin(1700);
    /* 100, 200, 400, 800 ms steps, each drawn from [b/2, b]: 4 or 5 dials. */
    CHECK(srv.dials >= 4 && srv.dials <= 6);
    CHECK(last_loss == STATS_LOSS_CONNECT);
    for (i = 1; i < srv.dials && i < 5; i++) {
        uint64_t gap = srv.dial_ms[i] - srv.dial_ms[i - 1];
        long step = 100L << (i - 1);
        CHECK(gap + 15 >= (uint64_t)step / 2);
    }
    rconn_free(c);
}

static void test_backoff_bounds(void)
{
    long b = RCONN_BACKOFF_MIN_MS, step, d;
    uint32_t r;
    int i;

    for (i = 0, step = 100; i < 12; i++) {
        r = (uint32_t)(i * 2654435761u);
        d = rconn_backoff_next(&b, r);
        CHECK(d >= step / 2 && d <= step);
        step = step * 2 > RCONN_BACKOFF_MAX_MS ? RCONN_BACKOFF_MAX_MS : step * 2;
        CHECK(b == step);
    }
    /* The extremes of the draw. */
    b = 1000;
    CHECK(rconn_backoff_next(&b, 0) == 500);
    b = 1000;
    CHECK(rconn_backoff_next(&b, 500) == 1000);
    /* Two workers with different draws come back apart. */
    {
        long b1 = 400, b2 = 400;
        CHECK(rconn_backoff_next(&b1, 17) != rconn_backoff_next(&b2, 180));
    }
}

static void test_helpers(void)
{
    redisReply st = {0}, arr = {0}, k = {0}, e = {0}, *el[2];

    st.type = REDIS_REPLY_STATUS;
    st.str = "PONG";
    st.len = 4;
    CHECK(rconn_is_pong(&st));
    st.str = "OK";
    st.len = 2;
    CHECK(!rconn_is_pong(&st));
    k.type = REDIS_REPLY_STRING;
    k.str = "pong";
    k.len = 4;
    e.type = REDIS_REPLY_STRING;
    e.str = "";
    el[0] = &k;
    el[1] = &e;
    arr.type = REDIS_REPLY_ARRAY;
    arr.elements = 2;
    arr.element = el;
    CHECK(rconn_is_pong(&arr));
    k.str = "message";
    k.len = 7;
    CHECK(!rconn_is_pong(&arr));
    CHECK(!rconn_is_pong(NULL));
    CHECK(rconn_error_kind("NOAUTH Authentication required.", 31) == STATS_LOSS_AUTH);
    CHECK(rconn_error_kind("WRONGPASS invalid", 17) == STATS_LOSS_AUTH);
    CHECK(rconn_error_kind("NOPERM no permissions", 21) == STATS_LOSS_AUTH);
    CHECK(rconn_error_kind("ERR invalid password", 20) == STATS_LOSS_AUTH);
    CHECK(rconn_error_kind("ERR DB index is out of range", 28) == STATS_LOSS_ERROR);
    CHECK(rconn_error_kind("LOADING Redis is loading", 24) == STATS_LOSS_ERROR);
}

/* Address providers. */

static char got_host[64];
static int got_port, got_n;

static void got_addr(void *arg, const char *host, int port)
{
    (void)arg;
    snprintf(got_host, sizeof(got_host), "%s", host);
    got_port = port;
    got_n++;
}

static void test_providers(void)
{
    struct raddr *p = raddr_fixed_new("127.0.0.1", 6379, got_addr, NULL);

    got_n = 0;
    raddr_start(p);
    CHECK(got_n == 1 && strcmp(got_host, "127.0.0.1") == 0 && got_port == 6379);
    raddr_failed(p); /* a fixed address stays */
    CHECK(got_n == 1);
    raddr_free(p);

    p = raddr_list_new("10.0.0.1:7000,10.0.0.2:7001", got_addr, NULL);
    CHECK(p != NULL && raddr_list_count(p) == 2);
    got_n = 0;
    raddr_start(p);
    CHECK(got_n == 1 && got_port == 7000);
    raddr_failed(p);
    CHECK(got_n == 2 && strcmp(got_host, "10.0.0.2") == 0 && got_port == 7001);
    raddr_failed(p);
    CHECK(got_port == 7000);
    /* Learned nodes join the rotation once; duplicates are ignored. */
    CHECK(raddr_list_learn(p, "10.0.0.3", 7002) == 0);
    CHECK(raddr_list_learn(p, "10.0.0.1", 7000) == 0);
    CHECK(raddr_list_count(p) == 3);
    raddr_failed(p);
    raddr_failed(p);
    CHECK(got_port == 7002 && strcmp(got_host, "10.0.0.3") == 0);
    raddr_failed(p);
    CHECK(got_port == 7000);
    {
        int i;
        char h[32];
        for (i = 0; i < 100; i++) {
            snprintf(h, sizeof(h), "10.1.0.%d", i);
            CHECK(raddr_list_learn(p, h, 6000) == 0);
        }
        CHECK(raddr_list_count(p) == RADDR_LIST_MAX);
    }
    raddr_free(p);
    CHECK(raddr_list_new("", got_addr, NULL) == NULL);
    CHECK(raddr_list_new("nohostport", got_addr, NULL) == NULL);
}

static void test_sentinel(void)
{
    struct rconn_opts o = {0};
    struct raddr *p;

    o.user = "u";
    o.password = "pw";
    o.db = 2;
    o.dial = dial;
    o.connect_ms = 2000;
    o.answer_ms = 500;
    o.ping_idle_ms = 5000;
    reset();
    p = raddr_sentinel_new(base, "10.0.0.1:26379,10.0.0.2:26379", "mymaster", &o, got_addr,
                           NULL);
    CHECK(p != NULL);
    got_n = 0;
    raddr_start(p);
    CHECK(srv.dials == 1 && srv.port == 26379 && strcmp(srv.host, "10.0.0.1") == 0);
    /* The user goes to sentinels too; no SELECT there. */
    CHECK(expect(500, 3, "AUTH", "u", "pw"));
    CHECK(expect(500, 1, "PING"));
    say("+OK\r\n+PONG\r\n");
    CHECK(expect(500, 3, "SENTINEL", "get-master-addr-by-name", "mymaster"));
    /* Not known here: the next sentinel is asked. */
    say("*-1\r\n");
    spin(400);
    CHECK(got_n == 0 && srv.dials == 2 && strcmp(srv.host, "10.0.0.2") == 0);
    CHECK(expect(500, 3, "AUTH", "u", "pw"));
    CHECK(expect(500, 1, "PING"));
    /* A sentinel without a password of its own: AUTH refused, tolerated. */
    say("-ERR AUTH <password> called without any password configured\r\n+PONG\r\n");
    CHECK(expect(500, 3, "SENTINEL", "get-master-addr-by-name", "mymaster"));
    say("*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n");
    CHECK(expect(500, 2, "SUBSCRIBE", "+switch-master"));
    spin(20);
    CHECK(got_n == 1 && strcmp(got_host, "127.0.0.1") == 0 && got_port == 6380);
    say("*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n");
    /* A failover of another primary, a port out of range, then ours. */
    say_message("+switch-master", "other 127.0.0.1 6390 127.0.0.1 6391");
    say_message("+switch-master", "mymaster 127.0.0.1 6380 127.0.0.1 7000000");
    spin(30);
    CHECK(got_n == 1);
    say_message("+switch-master", "mymaster 127.0.0.1 6380 127.0.0.2 6381");
    spin(30);
    CHECK(got_n == 2 && strcmp(got_host, "127.0.0.2") == 0 && got_port == 6381);
    /* The primary does not answer: ask again on a fresh connection. */
    raddr_failed(p);
    spin(50);
    CHECK(srv.dials == 3);
    raddr_failed(p); /* within a second: not again */
    spin(50);
    CHECK(srv.dials == 3);
    raddr_free(p);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    log_set_level(LOG_ERROR);
    srv.fd = -1;
    base = event_base_new();
    if (base == NULL)
        return 2;
    fprintf(stderr, "-- helpers\n"); test_helpers();
    fprintf(stderr, "-- backoff_bounds\n"); test_backoff_bounds();
    fprintf(stderr, "-- handshake\n"); test_handshake();
    fprintf(stderr, "-- auth_refused\n"); test_auth_refused();
    fprintf(stderr, "-- ping_both_forms\n"); test_ping_both_forms();
    fprintf(stderr, "-- pushes_and_fifo\n"); test_pushes_and_fifo();
    fprintf(stderr, "-- overload\n"); test_overload();
    fprintf(stderr, "-- move_and_stop\n"); test_move_and_stop();
    fprintf(stderr, "-- refused_connects_back_off\n"); test_refused_connects_back_off();
    fprintf(stderr, "-- providers\n"); test_providers();
    fprintf(stderr, "-- sentinel\n"); test_sentinel();
    reset();
    if (srv.rd)
        redisReaderFree(srv.rd);
    event_base_free(base);
    return t_done("redisconn");
}

/* redisconn.c: one Redis connection (see redisconn.h).
 *
 * Replies come back in the order commands went out, so pending commands
 * wait in a FIFO. Pub/sub pushes are told apart by their first element:
 * data pushes (message, smessage, pmessage) never answer a command;
 * subscription confirmations answer a subscription command one name at a
 * time, in argument order, unless Redis sent them by itself (a sharded
 * channel whose slot moved), which the FIFO head's names tell; "pong" is
 * the pub/sub-mode answer to PING. Anything else answers the FIFO head. */
#include "redisconn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/util.h>

#include "log.h"
#include "util.h"

#define TICK_MS 1000
#define OVERLOAD_BYTES (1024 * 1024) /* received in the last second or two */
#define REPEAT_LOG_MS 60000
#define SUB_CHUNK 256
/* Replies with more elements than this are refused (the connection is
 * dropped): hiredis 0.14 would allocate whatever a header announces, and no
 * answer the broker asks for comes near it (CLUSTER SLOTS, XRANGE). */
#define MAX_ELEMENTS (1 << 20)

enum rcmd_kind { RCMD_PLAIN = 0, RCMD_PING, RCMD_SUB };
enum rcmd_role { ROLE_USER = 0, ROLE_HANDSHAKE, ROLE_LIVENESS };

struct rcmd {
    struct rcmd *next;
    rconn_reply_fn fn;
    rconn_sub_err_fn sub_err; /* RCMD_SUB */
    void *arg;
    uint64_t sent_ms;
    uint8_t kind;        /* enum rcmd_kind */
    uint8_t role;        /* enum rcmd_role */
    char confirm[16];    /* RCMD_SUB: the push kind that confirms, "ssubscribe"... */
    uint32_t n, next_i;  /* RCMD_SUB: names, and the next one to be confirmed */
    size_t *lens;
    const char **names;  /* into the same allocation */
};

/* How a connection is being closed: as a loss (counted, on_lost, retry after
 * the backoff), moved by its owner (on_lost without counting, reconnect at
 * once), or stopped (nothing reported, no retry). */
enum close_mode { CLOSE_LOSS = 0, CLOSE_MOVED, CLOSE_STOP };

struct rconn {
    struct event_base *base;
    enum rconn_state state;
    struct bufferevent *bev;
    redisReader *reader;
    struct rcmd *head, *tail;
    int handshake_left;
    /* A close decided and not yet carried out (by close_timer). */
    uint8_t closing;
    uint8_t close_mode;
    uint8_t close_why;  /* enum stats_redis_loss */
    uint8_t in_connect; /* inside bufferevent_socket_connect */
    uint8_t connect_failed;
    uint8_t stopped;    /* no address yet, or rconn_stop: connect on demand only */
    uint8_t was_ready;  /* READY when the close was decided */
    uint8_t lost_ready; /* a READY connection was lost (or moved) since */
    char *host;
    int port;
    char *user, *password;
    int db;
    long tick_ms;
    long backoff_ms;
    uint64_t connect_ms;   /* when the connect started */
    uint64_t ready_ms;
    uint64_t last_rx_ms;
    uint64_t rx_cur, rx_prev; /* bytes received this second and the one before */
    uint64_t rx_win_ms;       /* when this second began */
    struct event *retry;      /* IDLE: the backoff */
    struct event *tick;       /* while connected: deadlines and liveness */
    struct event *close_timer;
    char who[24];
    char last_log[256];       /* repeated failures are logged once a minute */
    uint64_t last_log_ms;
    unsigned repeats;
    struct rconn_opts opts;   /* dial, dial_arg (the strings are copied above) */
    struct rconn_hooks hooks;
};

static void do_connect(struct rconn *c);

/* Pure helpers. */

long rconn_backoff_next(long *b, uint32_t rnd)
{
    long cur = *b < RCONN_BACKOFF_MIN_MS ? RCONN_BACKOFF_MIN_MS : *b, half = cur / 2;

    *b = cur * 2 > RCONN_BACKOFF_MAX_MS ? RCONN_BACKOFF_MAX_MS : cur * 2;
    /* Equal jitter: never sooner than half the step (the backoff still
     * grows), and workers that lost Redis together come back apart. */
    return half + (long)(rnd % (uint32_t)(cur - half + 1));
}

int rconn_is_pong(const redisReply *r)
{
    if (r == NULL)
        return 0;
    if (r->type == REDIS_REPLY_STATUS)
        return r->len == 4 && strncasecmp(r->str, "PONG", 4) == 0;
    return r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
           r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len == 4 &&
           strncasecmp(r->element[0]->str, "pong", 4) == 0;
}

static int starts_with(const char *s, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);

    return n >= k && strncmp(s, prefix, k) == 0;
}

enum stats_redis_loss rconn_error_kind(const char *err, size_t len)
{
    if (starts_with(err, len, "NOAUTH") || starts_with(err, len, "WRONGPASS") ||
        starts_with(err, len, "NOPERM") || starts_with(err, len, "ERR invalid password") ||
        starts_with(err, len, "ERR AUTH"))
        return STATS_LOSS_AUTH;
    return STATS_LOSS_ERROR;
}

/* hiredis's reply constructors, with arrays bounded. */
static redisReplyObjectFunctions bounded_fn;
static void *(*default_array)(const redisReadTask *, int);
static int refused_elements;

static void *bounded_array(const redisReadTask *t, int n)
{
    if (n > MAX_ELEMENTS) {
        refused_elements = n;
        return NULL; /* the reader reports an error: the connection goes */
    }
    return default_array(t, n);
}

static redisReader *reader_new(void)
{
    redisReader *r = redisReaderCreate();

    if (r == NULL)
        return NULL;
    if (default_array == NULL) {
        bounded_fn = *r->fn;
        default_array = bounded_fn.createArray;
        bounded_fn.createArray = bounded_array;
    }
    r->fn = &bounded_fn;
    return r;
}

static uint32_t rnd32(void)
{
    uint32_t r = 0;

    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
        r = (uint32_t)mono_ms() * 2654435761u;
    return r;
}

/* Logging: the same failure again within a minute is counted, not logged. */
static void note(struct rconn *c, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void note(struct rconn *c, enum log_level level, const char *fmt, ...)
{
    char msg[sizeof(c->last_log)];
    uint64_t now = mono_ms();
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (strcmp(msg, c->last_log) == 0 && now - c->last_log_ms < REPEAT_LOG_MS) {
        c->repeats++;
        return;
    }
    if (c->repeats > 0 && strcmp(msg, c->last_log) == 0)
        log_msg(level, "%s %s:%d: %s (%u times in the last minute)", c->who, c->host, c->port,
                msg, c->repeats + 1);
    else
        log_msg(level, "%s %s:%d: %s", c->who, c->host, c->port, msg);
    snprintf(c->last_log, sizeof(c->last_log), "%s", msg);
    c->last_log_ms = now;
    c->repeats = 0;
}

static int arm(struct event *ev, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    if (evtimer_add(ev, &tv) != 0) {
        log_error("redis: cannot arm a timer (event_add failed)");
        return -1;
    }
    return 0;
}

/* The command FIFO. */

static struct rcmd *cmd_new(size_t extra)
{
    struct rcmd *q = calloc(1, sizeof(*q) + extra);

    return q;
}

static void cmd_push(struct rconn *c, struct rcmd *q)
{
    q->sent_ms = mono_ms();
    if (c->tail)
        c->tail->next = q;
    else
        c->head = q;
    c->tail = q;
}

static struct rcmd *cmd_pop(struct rconn *c)
{
    struct rcmd *q = c->head;

    if (q != NULL) {
        c->head = q->next;
        if (c->head == NULL)
            c->tail = NULL;
    }
    return q;
}

/* Tells every waiting command the connection went away. */
static void cmds_fail(struct rconn *c)
{
    struct rcmd *q;

    while ((q = cmd_pop(c)) != NULL) {
        if (q->role == ROLE_USER && q->fn != NULL)
            q->fn(q->arg, NULL);
        free(q);
    }
}

/* Closing. */

/* Decides a close; close_timer carries it out, so that no callback of
 * bufferevent, reader or owner is running under a free. The first decision
 * wins, except that stopping overrides. */
static void close_soon(struct rconn *c, enum close_mode mode, enum stats_redis_loss why)
{
    if (c->closing) {
        if (mode == CLOSE_STOP)
            c->close_mode = CLOSE_STOP;
        return;
    }
    c->closing = 1;
    c->close_mode = (uint8_t)mode;
    c->close_why = (uint8_t)why;
    c->was_ready = c->state == RCONN_READY;
    c->state = RCONN_IDLE;
    if (c->bev != NULL)
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    evtimer_del(c->tick);
    if (arm(c->close_timer, 0) != 0) {
        /* Without the timer nothing would ever reconnect: stay closing but
         * retry the arm from the retry timer's slot. */
        arm(c->retry, RCONN_BACKOFF_MIN_MS);
    }
}

static void release_socket(struct rconn *c)
{
    if (c->bev != NULL)
        bufferevent_free(c->bev);
    c->bev = NULL;
    if (c->reader != NULL)
        redisReaderFree(c->reader);
    c->reader = NULL;
}

static void schedule_retry(struct rconn *c)
{
    long delay;

    if (c->was_ready && mono_ms() - c->ready_ms >= RCONN_STABLE_MS)
        c->backoff_ms = RCONN_BACKOFF_MIN_MS;
    delay = rconn_backoff_next(&c->backoff_ms, rnd32());
    arm(c->retry, delay);
}

static void close_cb(evutil_socket_t fd, short what, void *arg)
{
    struct rconn *c = arg;
    enum close_mode mode = (enum close_mode)c->close_mode;
    enum stats_redis_loss why = (enum stats_redis_loss)c->close_why;

    (void)fd;
    (void)what;
    if (!c->closing)
        return;
    release_socket(c);
    c->closing = 0;
    cmds_fail(c);
    if (c->was_ready && mode != CLOSE_STOP)
        c->lost_ready = 1;
    if (mode == CLOSE_STOP) {
        c->stopped = 1;
        return;
    }
    if (mode == CLOSE_MOVED) {
        c->backoff_ms = RCONN_BACKOFF_MIN_MS;
        if (c->hooks.on_lost)
            c->hooks.on_lost(c->hooks.arg, STATS_LOSS_NREASONS);
        if (!c->stopped && c->state == RCONN_IDLE && !c->closing &&
            !evtimer_pending(c->retry, NULL))
            do_connect(c);
        return;
    }
    stats->redis_link_losses_total[why]++;
    /* The retry is armed before on_lost, so that an owner that gives a new
     * address from on_lost only redirects it. */
    schedule_retry(c);
    if (c->hooks.on_lost)
        c->hooks.on_lost(c->hooks.arg, why);
}

/* Handshake and readiness. */

static void became_ready(struct rconn *c)
{
    c->state = RCONN_READY;
    c->ready_ms = mono_ms();
    if (c->lost_ready && c->opts.data_link)
        stats->redis_reconnects_total++;
    c->lost_ready = 0;
    c->last_log[0] = '\0';
    c->repeats = 0;
    log_info("%s %s:%d: connected", c->who, c->host, c->port);
    if (c->hooks.on_ready)
        c->hooks.on_ready(c->hooks.arg);
}

static void handshake_answer(struct rconn *c, const char *what, const redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR) {
        enum stats_redis_loss k = rconn_error_kind(r->str, r->len);
        int len = (int)(r->len > 160 ? 160 : r->len);
        if (c->opts.auth_optional && strcmp(what, "AUTH") == 0) {
            /* A sentinel without a password of its own: carry on; PING
             * says whether it wanted one after all. */
            note(c, LOG_WARN, "AUTH refused (%.*s); continuing without", len, r->str);
        } else {
            if (k == STATS_LOSS_AUTH)
                note(c, LOG_ERROR,
                     "authentication refused (%s answered: %.*s): check the user and "
                     "password in redis_url",
                     what, len, r->str);
            else
                note(c, LOG_ERROR, "%s refused: %.*s", what, len, r->str);
            close_soon(c, CLOSE_LOSS, k);
            return;
        }
    }
    if (--c->handshake_left == 0 && c->state == RCONN_HANDSHAKE)
        became_ready(c);
}

/* Formats and writes one command. Returns 0, or -1 (counted; the connection
 * is dropped, since a half-written command would desynchronise it). */
static int write_argv(struct rconn *c, int argc, const char *const *argv, const size_t *argl)
{
    char *buf = NULL;
    int n = redisFormatCommandArgv(&buf, argc, (const char **)argv, argl);

    if (n <= 0 || bufferevent_write(c->bev, buf, (size_t)n) != 0) {
        free(buf);
        stats->redis_send_failures_total++;
        note(c, LOG_ERROR, "cannot write a command (%s); reconnecting",
             n <= 0 ? "out of memory" : "bufferevent_write failed");
        close_soon(c, CLOSE_LOSS, STATS_LOSS_ERROR);
        return -1;
    }
    free(buf);
    return 0;
}

static int send_internal(struct rconn *c, enum rcmd_role role, enum rcmd_kind kind,
                         const char *what, int argc, const char *const *argv,
                         const size_t *argl)
{
    struct rcmd *q = cmd_new(0);

    if (q == NULL) {
        stats->redis_send_failures_total++;
        close_soon(c, CLOSE_LOSS, STATS_LOSS_ERROR);
        return -1;
    }
    q->role = (uint8_t)role;
    q->kind = (uint8_t)kind;
    q->arg = (void *)what;
    if (write_argv(c, argc, argv, argl) != 0) {
        free(q);
        return -1;
    }
    cmd_push(c, q);
    return 0;
}

static void start_handshake(struct rconn *c)
{
    const char *argv[3];
    size_t argl[3];
    char db[16];
    int n;

    c->state = RCONN_HANDSHAKE;
    c->handshake_left = 0;
    c->last_rx_ms = mono_ms();
    if (c->password != NULL) {
        n = 0;
        argv[n++] = "AUTH";
        if (c->user != NULL)
            argv[n++] = c->user;
        argv[n++] = c->password;
        for (int i = 0; i < n; i++)
            argl[i] = strlen(argv[i]);
        if (send_internal(c, ROLE_HANDSHAKE, RCMD_PLAIN, "AUTH", n, argv, argl) != 0)
            return;
        c->handshake_left++;
    }
    if (c->db >= 0) {
        snprintf(db, sizeof(db), "%d", c->db);
        argv[0] = "SELECT";
        argv[1] = db;
        argl[0] = 6;
        argl[1] = strlen(db);
        if (send_internal(c, ROLE_HANDSHAKE, RCMD_PLAIN, "SELECT", 2, argv, argl) != 0)
            return;
        c->handshake_left++;
    }
    /* Always one command: the connection is up only once Redis answered. */
    argv[0] = "PING";
    argl[0] = 4;
    if (send_internal(c, ROLE_HANDSHAKE, RCMD_PING, "PING", 1, argv, argl) != 0)
        return;
    c->handshake_left++;
}

/* Replies. */

static int is_data_push(const char *k, size_t n)
{
    return (n == 7 && memcmp(k, "message", 7) == 0) ||
           (n == 8 && memcmp(k, "smessage", 8) == 0) ||
           (n == 8 && memcmp(k, "pmessage", 8) == 0);
}

static int is_confirmation(const char *k, size_t n)
{
    return n >= 9 && memcmp(k + n - 9, "subscribe", 9) == 0;
}

/* A confirmation push: 1 when it answers the FIFO head (which then moves
 * on to its next name, and goes when all are confirmed). */
static int confirm(struct rconn *c, const redisReply *r, const char *kind, size_t klen)
{
    struct rcmd *q = c->head;
    const redisReply *name;

    if (q == NULL || q->kind != RCMD_SUB || strlen(q->confirm) != klen ||
        memcmp(q->confirm, kind, klen) != 0 || r->elements < 2 || q->next_i >= q->n)
        return 0;
    name = r->element[1];
    if (name->type != REDIS_REPLY_STRING || name->len != q->lens[q->next_i] ||
        memcmp(name->str, q->names[q->next_i], name->len) != 0)
        return 0;
    if (++q->next_i == q->n)
        free(cmd_pop(c));
    return 1;
}

static void answer(struct rconn *c, const redisReply *r)
{
    struct rcmd *q = cmd_pop(c);

    if (q == NULL) {
        note(c, LOG_ERROR, "a reply nobody asked for (type %d); reconnecting", r->type);
        close_soon(c, CLOSE_LOSS, STATS_LOSS_ERROR);
        return;
    }
    switch ((enum rcmd_role)q->role) {
    case ROLE_HANDSHAKE:
        handshake_answer(c, q->arg, r);
        break;
    case ROLE_LIVENESS:
        if (r->type == REDIS_REPLY_ERROR)
            note(c, LOG_WARN, "PING answered with an error: %.*s",
                 (int)(r->len > 160 ? 160 : r->len), r->str);
        break;
    case ROLE_USER:
        if (q->kind != RCMD_SUB) {
            if (q->fn != NULL)
                q->fn(q->arg, r);
        } else if (r->type != REDIS_REPLY_ERROR) {
            note(c, LOG_ERROR, "unexpected answer (type %d) to %s; reconnecting", r->type,
                 q->confirm);
            close_soon(c, CLOSE_LOSS, STATS_LOSS_ERROR);
        } else if (q->sub_err != NULL) {
            q->sub_err(q->arg, r, q->names + q->next_i, q->lens + q->next_i, q->n - q->next_i);
        } else {
            note(c, LOG_WARN, "%s refused: %.*s", q->confirm,
                 (int)(r->len > 160 ? 160 : r->len), r->str);
        }
        break;
    }
    free(q);
}

static void dispatch(struct rconn *c, const redisReply *r)
{
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
        r->element[0]->type == REDIS_REPLY_STRING) {
        const char *k = r->element[0]->str;
        size_t n = r->element[0]->len;
        if (is_data_push(k, n)) {
            if (c->state == RCONN_READY && c->hooks.on_push)
                c->hooks.on_push(c->hooks.arg, r, 0);
            return;
        }
        if (is_confirmation(k, n)) {
            int ours = confirm(c, r, k, n);
            if (c->state == RCONN_READY && c->hooks.on_push)
                c->hooks.on_push(c->hooks.arg, r, ours);
            return;
        }
        /* ["pong", ""] answers a PING, like every other reply below. */
    }
    answer(c, r);
}

/* Bytes received, in windows of a second, for the overload diagnosis. */
static void rx_account(struct rconn *c, uint64_t now, size_t n)
{
    if (now - c->rx_win_ms >= 1000) {
        c->rx_prev = now - c->rx_win_ms >= 2000 ? 0 : c->rx_cur;
        c->rx_cur = 0;
        c->rx_win_ms = now;
    }
    c->rx_cur += n;
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct rconn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_iovec v;
    void *reply;

    c->last_rx_ms = mono_ms();
    while (!c->closing && evbuffer_peek(in, -1, NULL, &v, 1) >= 1 && v.iov_len > 0) {
        if (redisReaderFeed(c->reader, v.iov_base, v.iov_len) != REDIS_OK) {
            note(c, LOG_ERROR, "cannot buffer a reply (out of memory); reconnecting");
            close_soon(c, CLOSE_LOSS, STATS_LOSS_ERROR);
            return;
        }
        rx_account(c, c->last_rx_ms, v.iov_len);
        if (evbuffer_drain(in, v.iov_len) != 0) {
            close_soon(c, CLOSE_LOSS, STATS_LOSS_ERROR);
            return;
        }
        while (!c->closing) {
            if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
                if (refused_elements > 0)
                    note(c, LOG_ERROR, "a reply of %d elements (over %d); reconnecting",
                         refused_elements, MAX_ELEMENTS);
                else
                    note(c, LOG_ERROR, "protocol error in a reply: %s; reconnecting",
                         c->reader->errstr);
                refused_elements = 0;
                close_soon(c, CLOSE_LOSS, STATS_LOSS_ERROR);
                return;
            }
            if (reply == NULL)
                break;
            dispatch(c, reply);
            freeReplyObject(reply);
        }
    }
}

static enum stats_redis_loss eof_reason(const struct rconn *c)
{
    return c->state == RCONN_READY && c->rx_cur + c->rx_prev >= OVERLOAD_BYTES
               ? STATS_LOSS_OVERLOAD
               : STATS_LOSS_CLOSED;
}

static void event_cb(struct bufferevent *bev, short events, void *arg)
{
    struct rconn *c = arg;
    int err = EVUTIL_SOCKET_ERROR();

    (void)bev;
    if (c->in_connect) {
        /* bufferevent_socket_connect reports an immediate failure through
         * here before it returns: do_connect handles it. */
        if (events & (BEV_EVENT_ERROR | BEV_EVENT_EOF))
            c->connect_failed = 1;
        return;
    }
    if (c->closing)
        return;
    if (events & BEV_EVENT_CONNECTED) {
        int fd = bufferevent_getfd(c->bev), one = 1;
        if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) != 0)
            log_debug("%s: SO_KEEPALIVE: %s", c->who, strerror(errno));
        start_handshake(c);
        return;
    }
    if (!(events & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    if (c->state == RCONN_CONNECTING) {
        note(c, LOG_WARN, "connect failed: %s", evutil_socket_error_to_string(err));
        close_soon(c, CLOSE_LOSS, STATS_LOSS_CONNECT);
        return;
    }
    rx_account(c, mono_ms(), 0);
    if (c->state == RCONN_READY && eof_reason(c) == STATS_LOSS_OVERLOAD) {
        note(c, LOG_ERROR,
             "closed by Redis while %.1f MB of messages arrived in the last second or two: "
             "most likely its client-output-buffer-limit for pub/sub (this worker fell "
             "behind the publishers; see README, Redis side)",
             (double)(c->rx_cur + c->rx_prev) / 1e6);
        close_soon(c, CLOSE_LOSS, STATS_LOSS_OVERLOAD);
        return;
    }
    note(c, LOG_WARN, "connection %s%s%s", c->state == RCONN_READY ? "lost: " : "closed during the handshake: ",
         (events & BEV_EVENT_EOF) ? "closed by the server" : "",
         (events & BEV_EVENT_EOF) ? "" : evutil_socket_error_to_string(err));
    close_soon(c, CLOSE_LOSS, STATS_LOSS_CLOSED);
}

/* Deadlines and liveness, once a second while connected. */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct rconn *c = arg;
    uint64_t now = mono_ms();
    const char *argv[1] = {"PING"};
    size_t argl[1] = {4};

    (void)fd;
    (void)what;
    if (c->closing || c->state == RCONN_IDLE)
        return;
    if (c->state != RCONN_READY) {
        if (now - c->connect_ms >= (uint64_t)c->opts.connect_ms) {
            note(c, LOG_WARN, "%s not done within %ld ms; retrying",
                 c->state == RCONN_CONNECTING ? "connect" : "handshake", c->opts.connect_ms);
            close_soon(c, CLOSE_LOSS, STATS_LOSS_TIMEOUT);
        }
        return;
    }
    if (c->head != NULL) {
        /* Input counts as life: a PING may wait behind a backlog of messages. */
        uint64_t lim = (uint64_t)c->opts.answer_ms;
        if (now - c->head->sent_ms >= lim && now - c->last_rx_ms >= lim) {
            note(c, LOG_WARN, "no answer within %ld ms; reconnecting", c->opts.answer_ms);
            close_soon(c, CLOSE_LOSS, STATS_LOSS_TIMEOUT);
        }
        return;
    }
    if (now - c->last_rx_ms >= (uint64_t)c->opts.ping_idle_ms)
        send_internal(c, ROLE_LIVENESS, RCMD_PING, "PING", 1, argv, argl);
}

/* Connecting. */

static void connect_failed_now(struct rconn *c, const char *why)
{
    note(c, LOG_WARN, "connect failed: %s", why);
    close_soon(c, CLOSE_LOSS, STATS_LOSS_CONNECT);
}

static void do_connect(struct rconn *c)
{
    int fd = -1, rc;

    if (c->host == NULL || c->closing)
        return;
    evtimer_del(c->retry);
    release_socket(c);
    c->stopped = 0;
    c->state = RCONN_CONNECTING;
    c->connect_ms = mono_ms();
    c->rx_cur = c->rx_prev = 0;
    c->rx_win_ms = c->connect_ms;
    if ((c->reader = reader_new()) == NULL) {
        connect_failed_now(c, "out of memory");
        return;
    }
    if (c->opts.dial != NULL) {
        fd = c->opts.dial(c->opts.dial_arg, c->host, c->port);
        if (fd < 0) {
            connect_failed_now(c, "refused");
            return;
        }
        if (evutil_make_socket_nonblocking(fd) != 0) {
            close(fd);
            connect_failed_now(c, "cannot make the socket non-blocking");
            return;
        }
    }
    c->bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        if (fd >= 0)
            close(fd);
        connect_failed_now(c, "out of memory");
        return;
    }
    bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
    if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) != 0) {
        connect_failed_now(c, "cannot watch the socket");
        return;
    }
    {
        struct timeval tv = {c->tick_ms / 1000, (c->tick_ms % 1000) * 1000};
        if (event_add(c->tick, &tv) != 0) {
            connect_failed_now(c, "cannot arm the deadline timer");
            return;
        }
    }
    if (fd >= 0) {
        start_handshake(c);
        return;
    }
    c->in_connect = 1;
    c->connect_failed = 0;
    /* A host name is resolved here, blocking, as hiredis does; Redis
     * addresses are normally IPs or names from /etc/hosts. */
    rc = bufferevent_socket_connect_hostname(c->bev, NULL, AF_UNSPEC, c->host, c->port);
    c->in_connect = 0;
    if (rc != 0 || c->connect_failed) {
        int gai = bufferevent_socket_get_dns_error(c->bev);
        connect_failed_now(c, gai ? evutil_gai_strerror(gai)
                                  : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    }
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct rconn *c = arg;

    (void)fd;
    (void)what;
    if (c->closing) {
        /* close_soon could not arm its timer: try that again. */
        if (arm(c->close_timer, 0) != 0)
            arm(c->retry, RCONN_BACKOFF_MIN_MS);
        return;
    }
    if (c->state == RCONN_IDLE && !c->stopped)
        do_connect(c);
}

/* The interface. */

static char *dup_or_null(const char *s, int *fail)
{
    char *d;

    if (s == NULL)
        return NULL;
    if ((d = strdup(s)) == NULL)
        *fail = 1;
    return d;
}

struct rconn *rconn_new(struct event_base *base, const struct rconn_opts *opts,
                        const struct rconn_hooks *hooks)
{
    struct rconn *c = calloc(1, sizeof(*c));
    int fail = 0;

    if (c == NULL)
        return NULL;
    c->base = base;
    c->opts = *opts;
    c->hooks = *hooks;
    c->db = opts->db;
    c->stopped = 1;
    c->backoff_ms = RCONN_BACKOFF_MIN_MS;
    snprintf(c->who, sizeof(c->who), "%s", opts->who ? opts->who : "redis");
    c->user = dup_or_null(opts->user, &fail);
    c->password = dup_or_null(opts->password, &fail);
    c->opts.who = c->who;
    c->opts.user = c->user;
    c->opts.password = c->password;
    if (c->opts.connect_ms <= 0)
        c->opts.connect_ms = RCONN_CONNECT_MS;
    if (c->opts.answer_ms <= 0)
        c->opts.answer_ms = RCONN_ANSWER_MS;
    if (c->opts.ping_idle_ms <= 0)
        c->opts.ping_idle_ms = RCONN_PING_IDLE_MS;
    c->tick_ms = TICK_MS;
    if (c->opts.connect_ms / 4 < c->tick_ms)
        c->tick_ms = c->opts.connect_ms / 4;
    if (c->opts.ping_idle_ms / 4 < c->tick_ms)
        c->tick_ms = c->opts.ping_idle_ms / 4;
    if (c->tick_ms < 10)
        c->tick_ms = 10;
    c->retry = evtimer_new(base, retry_cb, c);
    c->tick = event_new(base, -1, EV_PERSIST, tick_cb, c);
    c->close_timer = evtimer_new(base, close_cb, c);
    if (fail || c->retry == NULL || c->tick == NULL || c->close_timer == NULL) {
        rconn_free(c);
        return NULL;
    }
    return c;
}

void rconn_free(struct rconn *c)
{
    struct rcmd *q;

    if (c == NULL)
        return;
    release_socket(c);
    while ((q = cmd_pop(c)) != NULL)
        free(q);
    if (c->retry)
        event_free(c->retry);
    if (c->tick)
        event_free(c->tick);
    if (c->close_timer)
        event_free(c->close_timer);
    free(c->host);
    free(c->user);
    free(c->password);
    free(c);
}

int rconn_set_address(struct rconn *c, const char *host, int port)
{
    char *h;

    if (c->host != NULL && c->port == port && strcmp(c->host, host) == 0) {
        if (c->stopped && !c->closing)
            do_connect(c);
        return 0;
    }
    if ((h = strdup(host)) == NULL)
        return -1;
    free(c->host);
    c->host = h;
    c->port = port;
    c->last_log[0] = '\0';
    if (c->closing) {
        if (c->close_mode == CLOSE_STOP) {
            /* restart once the stop is carried out */
            c->close_mode = CLOSE_MOVED;
        }
        return 0;
    }
    if (c->stopped) {
        do_connect(c);
        return 0;
    }
    if (c->state == RCONN_IDLE)
        return 0; /* the pending retry goes to the new address */
    log_info("%s: moving to %s:%d", c->who, host, port);
    close_soon(c, CLOSE_MOVED, STATS_LOSS_CLOSED);
    return 0;
}

void rconn_start(struct rconn *c)
{
    if (c->stopped && c->state == RCONN_IDLE && !c->closing && c->host != NULL)
        do_connect(c);
}

void rconn_stop(struct rconn *c)
{
    evtimer_del(c->retry);
    if (c->bev == NULL && !c->closing && c->state == RCONN_IDLE) {
        c->stopped = 1;
        return;
    }
    close_soon(c, CLOSE_STOP, STATS_LOSS_CLOSED);
}

void rconn_reconnect(struct rconn *c)
{
    if (c->state == RCONN_IDLE && !c->closing) {
        if (c->stopped)
            do_connect(c);
        return;
    }
    close_soon(c, CLOSE_MOVED, STATS_LOSS_CLOSED);
}

void rconn_drop(struct rconn *c, enum stats_redis_loss why)
{
    if (c->state == RCONN_IDLE && !c->closing)
        return;
    close_soon(c, CLOSE_LOSS, why);
}

int rconn_command(struct rconn *c, rconn_reply_fn fn, void *arg, int argc,
                  const char *const *argv, const size_t *argl)
{
    struct rcmd *q;

    if (c->state != RCONN_READY || c->closing)
        return -1;
    if ((q = cmd_new(0)) == NULL) {
        stats->redis_send_failures_total++;
        return -1;
    }
    q->fn = fn;
    q->arg = arg;
    q->kind = argc == 1 && argl[0] == 4 && strncasecmp(argv[0], "PING", 4) == 0 ? RCMD_PING
                                                                                 : RCMD_PLAIN;
    if (write_argv(c, argc, argv, argl) != 0) {
        free(q);
        return -1;
    }
    cmd_push(c, q);
    return 0;
}

/* One chunk: the command, its names, and a FIFO entry that knows them. */
static int subscribe_chunk(struct rconn *c, const char *cmd, const char *const *names,
                           const size_t *lens, size_t n, rconn_sub_err_fn on_err, void *arg)
{
    const char *argv[1 + SUB_CHUNK];
    size_t argl[1 + SUB_CHUNK], bytes = 0, i, k;
    struct rcmd *q;
    char *p;

    for (i = 0; i < n; i++)
        bytes += lens[i];
    q = cmd_new(n * (sizeof(size_t) + sizeof(char *)) + bytes);
    if (q == NULL) {
        stats->redis_send_failures_total++;
        close_soon(c, CLOSE_LOSS, STATS_LOSS_ERROR);
        return -1;
    }
    q->kind = RCMD_SUB;
    q->sub_err = on_err;
    q->arg = arg;
    q->n = (uint32_t)n;
    q->lens = (size_t *)(void *)(q + 1);
    q->names = (const char **)(void *)(q->lens + n);
    p = (char *)(q->names + n);
    for (k = 0; cmd[k] != '\0' && k + 1 < sizeof(q->confirm); k++)
        q->confirm[k] = (char)((cmd[k] >= 'A' && cmd[k] <= 'Z') ? cmd[k] + 32 : cmd[k]);
    argv[0] = cmd;
    argl[0] = strlen(cmd);
    for (i = 0; i < n; i++) {
        memcpy(p, names[i], lens[i]);
        q->names[i] = p;
        q->lens[i] = lens[i];
        p += lens[i];
        argv[1 + i] = names[i];
        argl[1 + i] = lens[i];
    }
    if (write_argv(c, (int)n + 1, argv, argl) != 0) {
        free(q);
        return -1;
    }
    cmd_push(c, q);
    return 0;
}

int rconn_subscribe_cmd(struct rconn *c, const char *cmd, const char *const *names,
                        const size_t *lens, size_t n, rconn_sub_err_fn on_err, void *arg)
{
    size_t i, k;

    if (c->state != RCONN_READY || c->closing)
        return -1;
    for (i = 0; i < n; i += k) {
        k = n - i < SUB_CHUNK ? n - i : SUB_CHUNK;
        if (subscribe_chunk(c, cmd, names + i, lens + i, k, on_err, arg) != 0)
            return -1;
    }
    return 0;
}

enum rconn_state rconn_state(const struct rconn *c)
{
    return c->closing ? RCONN_IDLE : c->state;
}

const char *rconn_host(const struct rconn *c)
{
    return c->host;
}

int rconn_port(const struct rconn *c)
{
    return c->port;
}

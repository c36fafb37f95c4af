/* session.c: WebSocket sessions (see session.h). */
#include "session.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <wslay/wslay.h>

#include "auth.h"
#include "config.h"
#include "filter.h"
#include "history.h"
#include "log.h"
#include "peer.h"
#include "protocol/codec.h"
#include "stats.h"
#include "util.h"

struct sess {
    struct conn *conn;
    struct reg_client client;
    wslay_event_context_ptr ws; /* NULL while idle */
    const char *feed;           /* bytes being handed to wslay */
    size_t feed_len;
    uint64_t fed;               /* bytes given to ws since it was created */
    uint64_t consumed;          /* bytes of complete frames among them */
    uint64_t frame_len;         /* header and payload of the frame in progress */
    uint64_t last_rx_ms;
    uint64_t ping_sent_ms;      /* 0 when no ping is outstanding */
    uint8_t mid_message;        /* a fragmented message is open */
    uint8_t in_feed;            /* inside wslay: ws must not be freed */
    uint8_t rx_close;           /* the frame being received is a close */
    uint8_t close_ours;         /* a close we queued inside wslay, not its echo */
    uint8_t rx_close_len;       /* the close's payload length (at most 125) */
    uint8_t rx_close_got;       /* of which bytes seen */
    uint16_t close_code;        /* a close decided inside wslay, sent after */
    const char *close_reason;   /* static */
    uint32_t strikes;           /* control messages refused in a row (rate) */
    uint8_t rx_close_code[2];   /* the close's first two payload bytes */
    double tokens;              /* control-message rate bucket */
    uint64_t refill_ms;
    struct auth_grant *grant;   /* owned; NULL when auth is off */
    struct peer *peer;          /* one hold of the client's address; NULL: unknown */
    /* A subscribe's ack held until Redis confirms it (held), and the
     * requests that came after it, handled in order once it is settled. */
    struct sess_req *rq_head, *rq_tail;
    struct sess *resume_next;   /* on resume_list */
    struct sess_hist *hp;       /* a subscribe waiting for its channel's history */
    uint16_t nrq;
    uint8_t held;
    uint8_t on_resume;
};

/* A subscribe whose ack (and delivery) wait for a history read: a resume
 * (since), history N, or just the channel's position. */
struct sess_hist {
    struct hist_req *req;       /* in flight; NULL until sent */
    enum hist_mode mode;
    uint64_t arg;               /* since's offset, or N */
    int has_since;
    struct proto_pos since;
    size_t ridlen;
    size_t len;                 /* the channel's */
    char buf[];                 /* rid, then the channel's name */
};

/* A control message that arrived while an ack was held. */
struct sess_req {
    struct sess_req *next;
    size_t n;
    char msg[];
};

/* Requests a client may send while its ack waits for Redis (a normal client
 * waits for the ack or sends a handful); beyond it the client is closed. */
#define SESS_MAX_WAITING 64

static struct sess_env *env;
static struct sess *resume_list; /* sessions whose held ack was settled */
static struct event *resume_ev;

/* Scratch space shared by every session of the worker: one message is
 * handled at a time. */
static struct proto_buf reply_buf;   /* an ack or error being encoded */
static struct proto_buf wsout;       /* bytes wslay sends during one call */
static struct proto_buf channel_buf; /* the decoded channel of a request */
/* The reason of a close frame being received, for an echo that wslay does
 * not make (frame_end_cb). A close frame may arrive over several reads, so
 * it belongs to the session whose close started last; one that loses it to
 * another meanwhile echoes its code alone (a reason is optional). No
 * session pays for it while idle. */
static uint8_t rx_reason[123];
static const struct sess *rx_reason_owner;

static void on_read(struct conn *c);
static void on_tick(struct conn *c, uint64_t now);
static void on_free(struct conn *c);

static const struct conn_ops sess_ops = {on_read, on_tick, on_free};

static int ws_new(struct sess *s);

static void resume_cb(evutil_socket_t fd, short what, void *arg);

int sess_init(struct sess_env *e)
{
    env = e;
    if (resume_ev == NULL && (resume_ev = evtimer_new(e->base, resume_cb, NULL)) == NULL)
        return -1;
    return 0;
}

int sess_is_session(const struct conn *c)
{
    return c->ops == &sess_ops;
}

/* wslay callbacks. */

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *user)
{
    struct sess *s = user;

    (void)flags;
    if (s->feed_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (len > s->feed_len)
        len = s->feed_len;
    memcpy(buf, s->feed, len);
    s->feed += len;
    s->feed_len -= len;
    return (ssize_t)len;
}

/* Collects what wslay sends in one wslay_event_send() call; flush_wsout()
 * queues it as one frame. Always takes everything, so wslay never holds a
 * half-sent frame that a shared batch frame could interleave with. */
static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                       int flags, void *user)
{
    (void)flags;
    (void)user;
    if (proto_buf_append(&wsout, data, len) != 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static int genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
    (void)ctx;
    (void)user;
    memset(buf, 0, len); /* servers do not mask */
    return 0;
}

static void frame_start_cb(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
    struct sess *s = user;
    uint64_t n = arg->payload_length;

    (void)ctx;
    /* wslay has already refused unmasked frames and non-minimal lengths, so
     * the header length follows from the payload length. */
    s->frame_len = 2 + 4 + (n < 126 ? 0 : n < 65536 ? 2 : 8) + n;
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME ||
        arg->opcode == WSLAY_CONTINUATION_FRAME)
        s->mid_message = !arg->fin;
    /* A close frame's payload is noted for frame_end_cb (wslay has refused
     * control frames over 125 bytes already). */
    s->rx_close = arg->opcode == WSLAY_CONNECTION_CLOSE;
    if (s->rx_close) {
        s->rx_close_len = (uint8_t)n;
        s->rx_close_got = 0;
        if (n > 2)
            rx_reason_owner = s;
    }
}

static void frame_chunk_cb(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_chunk_arg *arg, void *user)
{
    struct sess *s = user;
    size_t i;

    (void)ctx;
    if (!s->rx_close)
        return;
    for (i = 0; i < arg->data_length && s->rx_close_got < s->rx_close_len; i++) {
        uint8_t at = s->rx_close_got++;
        if (at < 2)
            s->rx_close_code[at] = arg->data[i];
        else if (rx_reason_owner == s)
            rx_reason[at - 2] = arg->data[i];
    }
}

/* Queues close `code` inside wslay, ahead of the close wslay is about to
 * queue itself: wslay queues one close only, and ignores the refusal of a
 * second (WSLAY_ERR_NO_MORE_MSG). */
static void queue_close_first(struct sess *s, wslay_event_context_ptr ctx, uint16_t code,
                              const uint8_t *reason, size_t reason_len)
{
    int r = wslay_event_queue_close(ctx, code, reason, reason_len);

    if (r != 0) {
        log_debug("fd %d: close %u not queued (wslay error %d)", s->conn->fd, code, r);
        return;
    }
    s->close_ours = 1;
}

static void frame_end_cb(wslay_event_context_ptr ctx, void *user)
{
    struct sess *s = user;
    size_t reason_len = 0;
    uint16_t code;

    s->consumed += s->frame_len;
    if (!s->rx_close)
        return;
    s->rx_close = 0;
    if (rx_reason_owner == s) {
        reason_len = (size_t)s->rx_close_len - 2;
        rx_reason_owner = NULL;
    }
    /* Here the whole payload has arrived and its reason is valid UTF-8;
     * wslay is about to check the code and answer. */
    if (s->rx_close_len == 1) {
        /* RFC 6455 5.5.1: the body starts with a 2-byte code, so one byte
         * is a protocol error; wslay would answer with an empty close. */
        queue_close_first(s, ctx, PROTO_CLOSE_PROTOCOL_ERROR, NULL, 0);
        return;
    }
    if (s->rx_close_len < 2)
        return;
    code = (uint16_t)(s->rx_close_code[0] << 8 | s->rx_close_code[1]);
    /* 1012-1014 (service restart, try again later, bad gateway) are
     * registered with IANA after RFC 6455; wslay 1.1.1 knows only
     * 1000-1011 and would answer 1002. Echoed like any valid code. */
    if (code >= 1012 && code <= 1014)
        queue_close_first(s, ctx, code, rx_reason, reason_len);
}

static void send_reply(struct sess *s)
{
    struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)reply_buf.data,
                                reply_buf.len};

    if (wslay_event_queue_msg(s->ws, &m) != 0)
        log_debug("fd %d: reply dropped (closing)", s->conn->fd);
}

static void reply_error(struct sess *s, enum proto_error code, const char *why,
                        struct proto_json_span rid)
{
    proto_buf_reset(&reply_buf);
    if (proto_error_encode(&reply_buf, code, why, rid) == 0)
        send_reply(s);
}

/* Token bucket: max_control_per_s per second, bursts of twice that. Returns
 * 1 when the message may be handled. A client that keeps sending through a
 * full second's worth of refusals is closed with 1008. */
static int rate_ok(struct sess *s)
{
    double rate = (double)env->cfg->max_control_per_s, cap = 2 * rate;
    uint64_t now = conn_now_ms();

    s->tokens += (double)(now - s->refill_ms) * rate / 1000.0;
    if (s->tokens > cap)
        s->tokens = cap;
    s->refill_ms = now;
    if (s->tokens >= 1.0) {
        s->tokens -= 1.0;
        s->strikes = 0;
        return 1;
    }
    stats->errors_total[ERR_RATE_LIMIT]++;
    if (++s->strikes > (uint32_t)env->cfg->max_control_per_s) {
        log_info("fd %d: control messages over %lld/s for too long, closing", s->conn->fd,
                 env->cfg->max_control_per_s);
        sess_close(s->conn, PROTO_CLOSE_POLICY, "too many control messages");
    }
    return 0;
}

/* Checks what a subscribe to name may do: auth grant, then the
 * per-client subscription limit (re-subscribing is never over it).
 * Returns PROTO_OK or the error to answer with. */
static enum proto_error may_subscribe(struct sess *s, const char *name, size_t len,
                                      const char **why)
{
    if (env->cfg->auth_secret[0] != '\0' &&
        (s->grant == NULL || !auth_allows(s->grant, name, len))) {
        stats->errors_total[ERR_FORBIDDEN]++;
        *why = "your token does not grant this channel";
        return PROTO_ERR_FORBIDDEN;
    }
    if (s->client.nsubs >= (uint64_t)env->cfg->max_subscriptions_per_client &&
        !reg_is_subscribed(&s->client, name, len)) {
        stats->errors_total[ERR_SUB_LIMIT]++;
        *why = "too many subscriptions (max_subscriptions_per_client)";
        return PROTO_ERR_LIMIT;
    }
    return PROTO_OK;
}

static int hist_prepare(struct sess *s, const struct proto_request *req);
static void hist_start(struct sess *s);

static void handle_control_now(struct sess *s, const char *msg, size_t n)
{
    int read = 0;
    struct proto_request req;
    struct filter *f = NULL;
    const char *why;
    enum proto_error e;
    int r, empty;

    if (s->conn->state != CONN_OPEN)
        return;
    req.channel = &channel_buf;
    e = proto_request_decode(msg, n, &req, &why);
    if (!rate_ok(s)) {
        if (s->conn->state == CONN_OPEN)
            reply_error(s, PROTO_ERR_LIMIT, "too many control messages; slow down", req.rid);
        return;
    }
    if (e != PROTO_OK) {
        stats->errors_total[ERR_BAD_REQUEST]++;
        log_debug("fd %d: bad request: %s", s->conn->fd, why);
        reply_error(s, e, why, req.rid);
        return;
    }
    if (req.action == PROTO_ACTION_UNSUBSCRIBE) {
        r = reg_unsubscribe(env->reg, &s->client, channel_buf.data, channel_buf.len);
    } else {
        e = may_subscribe(s, channel_buf.data, channel_buf.len, &why);
        if (e == PROTO_OK && req.filter.n > 0) {
            f = filter_compile(req.filter.p, req.filter.n, &empty, &why);
            if (f == NULL && !empty) {
                stats->errors_total[ERR_BAD_FILTER]++;
                e = PROTO_ERR_BAD_FILTER;
            }
        }
        if (e != PROTO_OK) {
            reply_error(s, e, why, req.rid);
            return;
        }
        /* The first subscription of this client to a channel waits out of
         * its group while history is read: the missed messages (since), the
         * last N (history), or only the channel's position (once per
         * channel and worker, when it is not known yet). */
        read = env->hist != NULL && !reg_is_subscribed(&s->client, channel_buf.data,
                                                       channel_buf.len) &&
               (req.has_since || req.history > 0 ||
                reg_channel_pos(env->reg, channel_buf.data, channel_buf.len, NULL) ==
                    REG_HIST_UNKNOWN);
        if (read && hist_prepare(s, &req) != 0)
            read = 0;
        r = read ? reg_subscribe_held(env->reg, &s->client, channel_buf.data, channel_buf.len, f)
                 : reg_subscribe(env->reg, &s->client, channel_buf.data, channel_buf.len, f);
    }
    if (r < 0) {
        free(s->hp);
        s->hp = NULL;
        reply_error(s, PROTO_ERR_LIMIT, "out of memory", req.rid);
        return;
    }
    if (read) {
        /* The read starts once Redis has confirmed the SUBSCRIBE (then
         * every later publish reaches us); what the client sends meanwhile
         * waits. */
        s->held = 1;
        if (!(env->sub_pending != NULL &&
              env->sub_pending(env->arg, channel_buf.data, channel_buf.len) &&
              reg_defer_ack(env->reg, &s->client, channel_buf.data, channel_buf.len, req.rid.p,
                            req.rid.n) == 0))
            hist_start(s);
        return;
    }
    /* The first subscriber of a channel is acked once Redis has confirmed
     * the SUBSCRIBE, so that "acked, then published" is delivered; what the
     * client sends meanwhile waits (answers go in request order). */
    if (req.action == PROTO_ACTION_SUBSCRIBE && env->sub_pending != NULL &&
        env->sub_pending(env->arg, channel_buf.data, channel_buf.len) &&
        reg_defer_ack(env->reg, &s->client, channel_buf.data, channel_buf.len, req.rid.p,
                      req.rid.n) == 0) {
        s->held = 1;
        return;
    }
    proto_buf_reset(&reply_buf);
    if (req.action == PROTO_ACTION_SUBSCRIBE) {
        struct proto_pos pos;
        struct proto_ack_info info = {NULL, req.has_since ? 0 : -1};
        if (reg_channel_pos(env->reg, channel_buf.data, channel_buf.len, &pos) == REG_HIST_YES)
            info.pos = &pos;
        if (req.has_since)
            stats->history_unrecovered_total++; /* already subscribed: nothing to recover */
        if (proto_ack_encode_info(&reply_buf, req.action, channel_buf.data, channel_buf.len,
                                  req.rid, &info) == 0)
            send_reply(s);
        return;
    }
    if (proto_ack_encode(&reply_buf, req.action, channel_buf.data, channel_buf.len,
                         req.rid) == 0)
        send_reply(s);
}

static void rq_free(struct sess *s)
{
    struct sess_req *q;

    while ((q = s->rq_head) != NULL) {
        s->rq_head = q->next;
        free(q);
    }
    s->rq_tail = NULL;
    s->nrq = 0;
}

/* A control message: handled now, or after the held ack. */
static void handle_control(struct sess *s, const char *msg, size_t n)
{
    struct sess_req *q;

    if (!s->held) {
        handle_control_now(s, msg, n);
        return;
    }
    if (s->conn->state != CONN_OPEN)
        return;
    if (s->nrq >= SESS_MAX_WAITING || (q = malloc(sizeof(*q) + n)) == NULL) {
        stats->errors_total[ERR_RATE_LIMIT]++;
        log_info("fd %d: %d requests waiting for Redis to confirm a subscription, closing",
                 s->conn->fd, SESS_MAX_WAITING);
        sess_close(s->conn, PROTO_CLOSE_POLICY, "too many requests while waiting");
        return;
    }
    q->next = NULL;
    q->n = n;
    memcpy(q->msg, msg, n);
    if (s->rq_tail)
        s->rq_tail->next = q;
    else
        s->rq_head = q;
    s->rq_tail = q;
    s->nrq++;
}

static void msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    struct sess *s = user;
    static const char why[] = "binary frames are not accepted";

    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
        handle_control(s, (const char *)arg->msg, arg->msg_length);
        break;
    case WSLAY_BINARY_FRAME:
        stats->errors_total[ERR_WS_1003]++;
        wslay_event_queue_close(ctx, PROTO_CLOSE_UNSUPPORTED_DATA, (const uint8_t *)why,
                                sizeof(why) - 1);
        wslay_event_shutdown_read(ctx);
        break;
    default:
        break; /* wslay answers pings and closes itself */
    }
}

static const struct wslay_event_callbacks ws_callbacks = {
    recv_cb, send_cb, genmask_cb, frame_start_cb, frame_chunk_cb, frame_end_cb, msg_cb};

/* A client too far behind: what is queued will not be wanted any more.
 * Data or answers to its own frames, it is dropped the same way: counted,
 * its queue dropped, closed with 1008 after the frame already going out. */
static void slow_consumer(struct sess *s, int replies)
{
    struct conn *c = s->conn;

    stats->slow_consumer_disconnects_total++;
    if (replies)
        log_info("fd %d: slow consumer (over %d bytes of unread control replies), closing",
                 c->fd, CONN_MAX_CTRL_BYTES);
    else
        log_info("fd %d: slow consumer (over %lld pending bytes), closing", c->fd,
                 env->cfg->max_pending_bytes);
    stats->dropped_total[DROP_SLOW_CONSUMER] += conn_drop_queued(c);
    sess_close(c, PROTO_CLOSE_POLICY, "slow consumer");
}

/* Queues what wslay sent during one call (pongs, acks, errors, a close) as
 * one control reply and writes it at once. Returns 0, or -1 when the
 * connection is no longer open (a client with CONN_MAX_CTRL_BYTES of
 * replies unread is closed as a slow consumer; s->ws is then gone). Never
 * called inside wslay. */
static int flush_wsout(struct sess *s)
{
    int r = 0;

    if (wsout.len == 0)
        return 0;
    if (conn_send_ctrl(s->conn, wsout.data, wsout.len) == 0) {
        conn_flush(s->conn);
    } else if (errno == ENOBUFS) {
        slow_consumer(s, wsout.len > CONN_MAX_CTRL_BYTES - s->conn->ctrl_bytes);
        r = -1;
    } else {
        if (errno == ENOMEM)
            conn_kill(s->conn); /* cannot even queue a reply */
        r = -1;
    }
    proto_buf_reset(&wsout);
    return r;
}

static void ws_free(struct sess *s)
{
    if (s->ws == NULL)
        return;
    wslay_event_context_free(s->ws);
    s->ws = NULL;
    s->fed = s->consumed = 0;
    s->mid_message = 0;
    s->rx_close = 0;
    s->close_ours = 0;
    if (rx_reason_owner == s)
        rx_reason_owner = NULL;
}

static int ws_new(struct sess *s)
{
    if (wslay_event_context_server_init(&s->ws, &ws_callbacks, s) != 0) {
        s->ws = NULL;
        conn_kill(s->conn);
        return -1;
    }
    wslay_event_config_set_max_recv_msg_length(s->ws,
                                               (uint64_t)env->cfg->max_client_message_bytes);
    return 0;
}

/* The close sent tells what went wrong, for the counters (unless it echoes
 * a valid close of the peer's, which is no error). */
static void count_close(uint16_t code)
{
    switch (code) {
    case PROTO_CLOSE_PROTOCOL_ERROR: stats->errors_total[ERR_WS_1002]++; break;
    case PROTO_CLOSE_INVALID_PAYLOAD: stats->errors_total[ERR_WS_1007]++; break;
    case PROTO_CLOSE_TOO_BIG: stats->errors_total[ERR_WS_1009]++; break;
    default: break;
    }
}

/* What feed() and the handling of waiting requests do once wslay has been
 * given its turn (r: what wslay_event_recv returned, or 0): send what it
 * wants to, and act on closes decided meanwhile. Called with in_feed set. */
static void after_wslay(struct sess *s, int r)
{
    if (r == 0 && wslay_event_want_write(s->ws))
        r = wslay_event_send(s->ws);
    s->in_feed = 0;
    if (s->conn->state != CONN_OPEN) { /* closed meanwhile (slow consumer) */
        proto_buf_reset(&wsout);
        ws_free(s);
        return;
    }
    if (r == WSLAY_ERR_CALLBACK_FAILURE) {
        /* Our callbacks never fail, so wslay's frame parser refused a header
         * (a control frame over 125 bytes or fragmented, a non-minimal
         * length): wslay queued a close without a code; send 1002 instead. */
        proto_buf_reset(&wsout);
        stats->errors_total[ERR_WS_1002]++;
        ws_free(s);
        sess_close(s->conn, PROTO_CLOSE_PROTOCOL_ERROR, "protocol error");
        return;
    }
    if (r != 0) {
        proto_buf_reset(&wsout);
        conn_kill(s->conn);
        return;
    }
    if (flush_wsout(s) != 0)
        return;
    if (s->close_code != 0) {
        /* Decided while wslay was reading (rate limit): the answers earned
         * before it went out just above, the close goes after them. */
        uint16_t code = s->close_code;
        s->close_code = 0;
        ws_free(s);
        sess_close(s->conn, code, s->close_reason);
        return;
    }
    if (wslay_event_get_close_sent(s->ws)) {
        if (s->close_ours || !wslay_event_get_close_received(s->ws))
            count_close(wslay_event_get_status_code_sent(s->ws));
        ws_free(s);
        conn_end(s->conn);
        return;
    }
    if (s->fed == s->consumed && !s->mid_message && wslay_event_want_read(s->ws))
        ws_free(s);
}

/* Hands p[0..n) to wslay and acts on what it made of it. */
static void feed(struct sess *s, const char *p, size_t n)
{
    int r;

    if (s->ws == NULL && ws_new(s) != 0)
        return;
    s->feed = p;
    s->feed_len = n;
    s->fed += n;
    s->in_feed = 1;
    r = wslay_event_recv(s->ws);
    s->feed_len = 0;
    after_wslay(s, r);
}

static void on_read(struct conn *c)
{
    static char buf[16384];
    struct sess *s = c->owner;
    ssize_t n = conn_read(c, buf, sizeof(buf));

    if (n <= 0)
        return;
    s->last_rx_ms = conn_now_ms();
    s->ping_sent_ms = 0;
    feed(s, buf, (size_t)n);
}

static void on_tick(struct conn *c, uint64_t now)
{
    struct sess *s = c->owner;
    uint64_t ping_ms = (uint64_t)env->cfg->ping_interval_s * 1000;
    uint64_t pong_ms = (uint64_t)env->cfg->pong_timeout_s * 1000;

    if (s->grant != NULL && s->grant->exp != 0 && (int64_t)time(NULL) >= s->grant->exp) {
        stats->errors_total[ERR_TOKEN_EXPIRED]++;
        sess_close(c, PROTO_CLOSE_TOKEN_EXPIRED, "token expired");
        return;
    }
    if (ping_ms == 0)
        return;
    if (s->ping_sent_ms == 0) {
        if (now - s->last_rx_ms >= ping_ms && conn_send(c, env->ping) == 0)
            s->ping_sent_ms = now;
    } else if (now - s->ping_sent_ms >= pong_ms) {
        stats->errors_total[ERR_PONG_TIMEOUT]++;
        log_debug("fd %d: no pong in %llu ms, closing", c->fd, (unsigned long long)pong_ms);
        conn_kill(c);
    }
}

static void on_free(struct conn *c)
{
    struct sess *s = c->owner;

    if (s->hp != NULL) {
        hist_cancel(s->hp->req);
        free(s->hp);
        s->hp = NULL;
    }
    reg_unsubscribe_all(env->reg, &s->client);
    rq_free(s);
    if (s->on_resume) {
        struct sess **pp = &resume_list;
        while (*pp != s)
            pp = &(*pp)->resume_next;
        *pp = s->resume_next;
    }
    ws_free(s);
    auth_grant_free(s->grant);
    peer_release(s->peer);
    stats->connections--;
    free(s);
}

void sess_close(struct conn *c, uint16_t code, const char *reason)
{
    struct sess *s = c->owner;
    struct frame *f;

    if (c->state != CONN_OPEN || !sess_is_session(c))
        return;
    if (s->in_feed) {
        /* Inside wslay: read no further, and let feed() send what is
         * already answered before the close. */
        if (s->close_code == 0) {
            s->close_code = code;
            s->close_reason = reason;
        }
        wslay_event_shutdown_read(s->ws);
        return;
    }
    ws_free(s);
    f = frame_build_close(env->fb, code, reason);
    if (f != NULL) {
        conn_send(c, f);
        frame_unref(f);
    }
    conn_end(c);
}

int sess_deliver(void *arg, struct reg_client *cl, struct frame *f)
{
    struct sess *s = container_of(cl, struct sess, client);
    struct conn *c = s->conn;

    (void)arg;
    if (conn_send(c, f) == 0)
        return 1;
    if (errno == ENOBUFS && c->state == CONN_OPEN)
        slow_consumer(s, 0); /* too far behind */
    return 0;
}

/* Sends one text message outside of a feed (the error answers to
 * ?channels= at the start), creating wslay's context for it. */
static void send_text_now(struct sess *s)
{
    if (s->ws == NULL && ws_new(s) != 0)
        return;
    send_reply(s);
    if (wslay_event_send(s->ws) == 0 && flush_wsout(s) != 0)
        return;
    proto_buf_reset(&wsout);
    if (s->fed == s->consumed && !s->mid_message)
        ws_free(s);
}

static void resume_soon(struct sess *s)
{
    static const struct timeval now = {0, 0};

    if (s->on_resume)
        return;
    s->on_resume = 1;
    s->resume_next = resume_list;
    resume_list = s;
    if (evtimer_add(resume_ev, &now) != 0)
        log_error("cannot arm the session resume timer");
}

/* Handles the requests that waited behind a held ack, outside of any
 * registry walk (the settle that released the ack may be one). */
static void run_waiting(struct sess *s)
{
    struct sess_req *q;

    if (s->conn->state != CONN_OPEN || (s->ws == NULL && ws_new(s) != 0)) {
        rq_free(s);
        return;
    }
    s->in_feed = 1;
    while (!s->held && (q = s->rq_head) != NULL && s->conn->state == CONN_OPEN &&
           s->close_code == 0) {
        s->rq_head = q->next;
        if (s->rq_head == NULL)
            s->rq_tail = NULL;
        s->nrq--;
        handle_control_now(s, q->msg, q->n);
        free(q);
    }
    after_wslay(s, 0);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sess *s;

    (void)fd;
    (void)what;
    (void)arg;
    while ((s = resume_list) != NULL) {
        resume_list = s->resume_next;
        s->on_resume = 0;
        run_waiting(s);
    }
}

/* History. */

/* What a subscribe that reads history keeps until the read is back. */
static int hist_prepare(struct sess *s, const struct proto_request *req)
{
    struct sess_hist *h = malloc(sizeof(*h) + req->rid.n + req->channel->len);

    if (h == NULL)
        return -1;
    h->req = NULL;
    h->has_since = req->has_since;
    h->since = req->since;
    if (req->has_since) {
        h->mode = HIST_AFTER;
        h->arg = req->since.offset;
    } else {
        h->mode = HIST_LAST;
        h->arg = req->history; /* 0: only the position */
    }
    h->ridlen = req->rid.n;
    h->len = req->channel->len;
    if (h->ridlen > 0)
        memcpy(h->buf, req->rid.p, h->ridlen);
    memcpy(h->buf + h->ridlen, req->channel->data, h->len);
    s->hp = h;
    return 0;
}

static struct proto_buf hist_scratch;  /* non-JSON entries encoded as strings */
static struct reg_entry *hist_entries;
static size_t *hist_starts;            /* where each entry's string is in the scratch */
static size_t hist_entries_cap;

/* The entries as live messages would be: JSON byte for byte, anything else
 * as a JSON string, over max_message_bytes dropped. Returns how many. */
static size_t prepare_entries(const struct hist_entry *e, size_t n)
{
    size_t i, k = 0;

    if (n > hist_entries_cap) {
        struct reg_entry *ne = realloc(hist_entries, n * sizeof(*ne));
        size_t *ns;
        if (ne != NULL)
            hist_entries = ne;
        ns = ne ? realloc(hist_starts, n * sizeof(*ns)) : NULL;
        if (ns == NULL)
            return 0;
        hist_starts = ns;
        hist_entries_cap = n;
    }
    proto_buf_reset(&hist_scratch);
    for (i = 0; i < n; i++) {
        struct reg_entry *r = &hist_entries[k];
        if (e[i].n > (size_t)env->cfg->max_message_bytes)
            continue;
        r->offset = e[i].offset;
        r->is_json = proto_json_validate(e[i].p, e[i].n);
        if (r->is_json) {
            r->json = e[i].p;
            r->len = e[i].n;
        } else {
            hist_starts[k] = hist_scratch.len;
            if (proto_json_encode_string(&hist_scratch, e[i].p, e[i].n) != 0)
                continue;
            r->len = hist_scratch.len - hist_starts[k];
        }
        k++;
    }
    /* The scratch may have moved while it grew: point into it now. */
    for (i = 0; i < k; i++)
        if (!hist_entries[i].is_json)
            hist_entries[i].json = hist_scratch.data + hist_starts[i];
    return k;
}

static void hist_done(void *arg, const struct hist_result *res)
{
    struct sess *s = arg;
    struct sess_hist *h = s->hp;
    const char *name = h->buf + h->ridlen;
    struct proto_json_span rid = {h->buf, h->ridlen};
    struct proto_pos known;
    struct proto_ack_info info = {NULL, -1};
    const struct hist_entry *e = NULL;
    uint64_t last = res->ok ? res->pos.offset : 0, after = last;
    size_t n = 0, k, delivered;

    h->req = NULL;
    if (res->ok)
        reg_channel_learn(env->reg, name, h->len, &res->pos);
    if (h->has_since) {
        uint64_t since = h->since.offset;
        int recovered = res->ok && last > 0 && !res->too_far &&
                        h->since.epoch_len == res->pos.epoch_len &&
                        memcmp(h->since.epoch, res->pos.epoch, res->pos.epoch_len) == 0 &&
                        since <= last &&
                        (since == last || (res->n > 0 && res->e[0].offset == since + 1 &&
                                           res->e[res->n - 1].offset == last)) &&
                        !reg_held_disrupted(env->reg, &s->client, name, h->len);
        info.recovered = recovered;
        if (!recovered)
            log_debug("resume of '%.*s' since %llu: not recovered (ok %d, last %llu, too_far %d, "
                      "n %zu, first %llu, disrupted %d)",
                      (int)(h->len > 64 ? 64 : h->len), name, (unsigned long long)since, res->ok,
                      (unsigned long long)last, res->too_far, res->n,
                      (unsigned long long)(res->n ? res->e[0].offset : 0),
                      reg_held_disrupted(env->reg, &s->client, name, h->len));
        if (recovered) {
            e = res->e;
            n = res->n;
            after = since;
        }
        if (recovered)
            stats->history_recovered_total++;
        else
            stats->history_unrecovered_total++;
    } else if (h->arg > 0 && res->ok && res->n > 0 &&
               !reg_held_disrupted(env->reg, &s->client, name, h->len)) {
        e = res->e;
        n = res->n;
        after = e[0].offset - 1;
    }
    if (reg_channel_pos(env->reg, name, h->len, &known) == REG_HIST_YES)
        info.pos = &known;
    if (s->conn->state == CONN_OPEN) {
        proto_buf_reset(&reply_buf);
        if (proto_ack_encode_info(&reply_buf, PROTO_ACTION_SUBSCRIBE, name, h->len, rid,
                                  &info) == 0) {
            if (s->in_feed)
                send_reply(s); /* only when nothing follows (hist_start failed) */
            else
                send_text_now(s);
        }
    }
    /* The ack first, then history, then live. */
    k = n > 0 ? prepare_entries(e, n) : 0;
    delivered = reg_resume(env->reg, &s->client, name, h->len, hist_entries, k, after, last,
                           res->ok ? &res->pos : NULL);
    stats->history_messages_total += delivered;
    free(h);
    s->hp = NULL;
    s->held = 0;
    if (s->rq_head != NULL)
        resume_soon(s);
}

/* Sends the read (the SUBSCRIBE is confirmed, or the link is down). */
static void hist_start(struct sess *s)
{
    struct sess_hist *h = s->hp;
    struct hist_result none;

    h->req = hist_request(env->hist, h->buf + h->ridlen, h->len, h->mode, h->arg, hist_done, s);
    if (h->req != NULL)
        return;
    /* Out of memory: answered as if Redis had not. */
    memset(&none, 0, sizeof(none));
    hist_done(s, &none);
}

void sess_ack(void *arg, struct reg_client *cl, const char *name, size_t len, const char *rid,
              size_t ridlen)
{
    struct sess *s = container_of(cl, struct sess, client);
    struct proto_json_span r = {rid, ridlen};

    (void)arg;
    if (s->hp != NULL && s->hp->req == NULL && s->hp->len == len &&
        memcmp(s->hp->buf + s->hp->ridlen, name, len) == 0) {
        hist_start(s); /* confirmed: now the history, then the ack */
        return;
    }
    s->held = 0;
    if (s->conn->state != CONN_OPEN)
        return;
    proto_buf_reset(&reply_buf);
    if (proto_ack_encode(&reply_buf, PROTO_ACTION_SUBSCRIBE, name, len, r) == 0) {
        if (s->in_feed)
            send_reply(s);
        else
            send_text_now(s);
    }
    if (s->rq_head != NULL)
        resume_soon(s);
}

int sess_start(struct conn *c, const char *channels, size_t channels_len,
               const char *rest, size_t rest_len, struct auth_grant *grant,
               struct peer *peer)
{
    struct sess *s = calloc(1, sizeof(*s));
    const char *p = channels, *end = channels ? channels + channels_len : NULL, *why;
    struct proto_json_span no_rid = {NULL, 0};

    if (s == NULL) {
        auth_grant_free(grant);
        peer_release(peer);
        conn_kill(c);
        return -1;
    }
    s->conn = c;
    s->grant = grant;
    s->peer = peer;
    s->last_rx_ms = s->refill_ms = conn_now_ms();
    s->tokens = 2.0 * (double)env->cfg->max_control_per_s;
    conn_set_owner(c, &sess_ops, s);
    stats->connections++;
    stats->sessions_total++;
    /* ?channels= subscriptions get no ack; refusals get the error frame a
     * subscribe message would. */
    while (channels != NULL && p < end) {
        size_t n = strlen(p);
        enum proto_error e = may_subscribe(s, p, n, &why);
        if (e != PROTO_OK) {
            proto_buf_reset(&reply_buf);
            if (proto_error_encode(&reply_buf, e, why, no_rid) == 0)
                send_text_now(s);
        } else if (reg_subscribe(env->reg, &s->client, p, n, NULL) < 0) {
            conn_kill(c); /* ours now: freed through the session */
            return 0;
        }
        p += n + 1;
    }
    if (rest_len > 0)
        feed(s, rest, rest_len);
    return 0;
}

void sess_cleanup(void)
{
    proto_buf_free(&hist_scratch);
    free(hist_entries);
    free(hist_starts);
    hist_entries = NULL;
    hist_starts = NULL;
    hist_entries_cap = 0;
    if (resume_ev != NULL)
        event_free(resume_ev);
    resume_ev = NULL;
    resume_list = NULL;
    proto_buf_free(&reply_buf);
    proto_buf_free(&wsout);
    proto_buf_free(&channel_buf);
}

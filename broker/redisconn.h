/* redisconn.h: one Redis connection, its whole life.
 *
 * Every connection the broker opens to Redis (a worker's subscriber link,
 * a cluster shard, a sentinel, a topology query) is a struct rconn: this
 * module owns its state, its deadlines, its reconnect backoff and its
 * handshake, so that no user of Redis writes them again. Where to connect is
 * not its question: the owner sets the address (redisaddr.h provides them).
 *
 * Underneath is a libevent bufferevent and hiredis's reply reader
 * (redisReaderFeed / redisReaderGetReply): hiredis 0.14's async API cannot
 * carry sharded pub/sub (it asserts on `smessage` pushes), and one reader
 * path for every kind of connection keeps one set of rules.
 *
 * Life:
 *   IDLE       no socket; a retry timer may be pending (backoff)
 *   CONNECTING TCP connect in flight           (deadline RCONN_CONNECT_MS)
 *   HANDSHAKE  AUTH [user] password, SELECT db, PING sent; waiting for every
 *              answer                          (same deadline)
 *   READY      Redis has answered the handshake: the connection is usable.
 * A connection counts as up only once Redis has answered a command on it,
 * so a server that accepts and then refuses (NOAUTH) is never "up". While
 * READY, a PING goes out after RCONN_PING_IDLE_MS without input, and the
 * connection is dropped when a command (that PING included) stays
 * unanswered for RCONN_ANSWER_MS while nothing at all arrives.
 *
 * A lost connection is reported to hooks.on_lost with the reason and retried
 * after a jittered backoff: RCONN_BACKOFF_MIN_MS doubling to
 * RCONN_BACKOFF_MAX_MS, each delay drawn from [b/2, b]. The backoff returns
 * to its minimum only after a connection has stayed READY for
 * RCONN_STABLE_MS, so a server that accepts and drops at once (refused
 * credentials, an output-buffer limit hit again and again) is retried ever
 * more slowly, not in a loop. Repeated identical failures are logged once,
 * then once a minute with a count.
 *
 * Callbacks never run nested inside another callback of the same
 * connection, and nothing is freed under them: a drop decided while replies
 * are being read is carried out from a zero-delay timer. The owner must not
 * call rconn_free() from inside one of its hooks (it may call everything
 * else). */
#ifndef BROKER_REDISCONN_H
#define BROKER_REDISCONN_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "stats.h"

#define RCONN_CONNECT_MS 5000     /* TCP connect plus handshake */
#define RCONN_ANSWER_MS 10000     /* a command unanswered this long, with no input */
#define RCONN_PING_IDLE_MS 5000   /* READY and silent this long: PING */
#define RCONN_BACKOFF_MIN_MS 100
#define RCONN_BACKOFF_MAX_MS 5000
#define RCONN_STABLE_MS 10000     /* READY this long resets the backoff */

enum rconn_state { RCONN_IDLE = 0, RCONN_CONNECTING, RCONN_HANDSHAKE, RCONN_READY };

struct rconn;

/* What a connection needs besides an address; strings are copied. */
struct rconn_opts {
    const char *who;      /* names the connection in logs: "redis", "sentinel" */
    const char *user;     /* NULL: AUTH password (or no AUTH without a password) */
    const char *password; /* NULL: no AUTH */
    int db;               /* -1: no SELECT */
    int auth_optional;    /* an AUTH refusal is logged and ignored (sentinels, which
                             may have no password of their own) */
    int data_link;        /* carries subscriptions: becoming READY again after losing
                             a READY connection counts in redis_reconnects_total */
    /* Deadlines in ms; 0 takes RCONN_CONNECT_MS, RCONN_ANSWER_MS,
     * RCONN_PING_IDLE_MS (tests shorten them). */
    long connect_ms, answer_ms, ping_idle_ms;
    /* Tests only: returns a connected socket for host:port instead of a TCP
     * connect (the connection takes it), or -1 for a failed connect. */
    int (*dial)(void *arg, const char *host, int port);
    void *dial_arg;
};

struct rconn_hooks {
    /* The handshake was answered: commands may be sent. */
    void (*on_ready)(void *arg);
    /* A pub/sub push: message, smessage, pmessage, or a subscription
     * confirmation ((s|p)(un)subscribe). solicited is 1 for a confirmation
     * that answers a command of ours, 0 for one Redis sent by itself (a
     * sharded channel whose slot moved away) and for data pushes. r is
     * borrowed for the call. */
    void (*on_push)(void *arg, const redisReply *r, int solicited);
    /* The connection was lost (it is IDLE now and retries by itself after
     * its backoff, unless the owner changes the address or stops it). why
     * is STATS_LOSS_NREASONS when the owner closed it to connect again
     * (rconn_set_address to another address, rconn_reconnect): not a loss
     * of Redis's making, not counted. */
    void (*on_lost)(void *arg, enum stats_redis_loss why);
    void *arg;
};

/* Answers to rconn_command: r is the reply (borrowed for the call), or NULL
 * when the connection went away before it came. */
typedef void (*rconn_reply_fn)(void *arg, const redisReply *r);

/* Creates a connection without an address (IDLE, nothing happens until
 * rconn_set_address). Returns NULL on ENOMEM. */
struct rconn *rconn_new(struct event_base *base, const struct rconn_opts *opts,
                        const struct rconn_hooks *hooks);
/* Closes and frees. Pending command callbacks are not called. Safe on NULL.
 * Never from inside one of the connection's own hooks. */
void rconn_free(struct rconn *c);

/* Where to connect (host is copied). A connection that never started, or
 * that was stopped, connects now; one waiting out its backoff goes to the
 * new address when the backoff ends; a live one to another address is
 * closed (not counted as a loss) and connects to the new one at once.
 * The same address as now changes nothing. Returns 0, or -1 on ENOMEM. */
int rconn_set_address(struct rconn *c, const char *host, int port);

/* Connects to the current address now, if the connection was stopped
 * (rconn_stop); a connection waiting out its backoff is left to it. */
void rconn_start(struct rconn *c);

/* Closes quietly and stays IDLE: no on_lost, no retry. Pending command
 * callbacks get NULL (from a timer). */
void rconn_stop(struct rconn *c);

/* Closes quietly and connects again at once (on_lost is told with why ==
 * STATS_LOSS_NREASONS, which is not a loss): a fresh connection, to ask
 * what a subscribed one cannot. A connection waiting out its backoff is
 * left to it. */
void rconn_reconnect(struct rconn *c);

/* Drops the connection as a loss of the given reason: on_lost, then a retry
 * after the backoff (for an owner that got an answer it cannot use). */
void rconn_drop(struct rconn *c, enum stats_redis_loss why);

/* Sends a command (arguments binary safe). fn (may be NULL) gets the reply.
 * Returns 0 when queued; -1 when the connection is not READY (nothing sent;
 * fn is not called) or the write failed (counted in
 * stats->redis_send_failures_total; the connection is dropped). */
int rconn_command(struct rconn *c, rconn_reply_fn fn, void *arg, int argc,
                  const char *const *argv, const size_t *argl);

/* Told that Redis refused a subscription command (MOVED, NOPERM, ...):
 * err is the error reply, names[0..n) the channels of the refused chunk;
 * all borrowed for the call. */
typedef void (*rconn_sub_err_fn)(void *arg, const redisReply *err, const char *const *names,
                                 const size_t *lens, size_t n);

/* Sends `cmd name...` for a subscription command (SUBSCRIBE, SSUBSCRIBE,
 * UNSUBSCRIBE, SUNSUBSCRIBE), in chunks of at most 256 names. Redis answers
 * each name with a confirmation push, passed to on_push as solicited; an
 * error reply goes to on_err (may be NULL: logged), once per chunk. Nothing
 * is called when the connection goes away meanwhile (on_lost says it).
 * Same returns as rconn_command. */
int rconn_subscribe_cmd(struct rconn *c, const char *cmd, const char *const *names,
                        const size_t *lens, size_t n, rconn_sub_err_fn on_err, void *arg);

enum rconn_state rconn_state(const struct rconn *c);
static inline int rconn_is_ready(const struct rconn *c)
{
    return rconn_state(c) == RCONN_READY;
}
/* The current address (NULL before the first rconn_set_address). */
const char *rconn_host(const struct rconn *c);
int rconn_port(const struct rconn *c);

/* The next retry delay for backoff state *b (ms), drawn from [*b/2, *b]
 * with rnd, and *b doubled up to RCONN_BACKOFF_MAX_MS. Pure: for tests. */
long rconn_backoff_next(long *b, uint32_t rnd);

/* 1 when r is the answer to a PING in either form Redis sends it: +PONG
 * outside pub/sub mode, ["pong", ""] inside it (RESP2). */
int rconn_is_pong(const redisReply *r);

/* The loss reason an error reply to the handshake stands for:
 * STATS_LOSS_AUTH for NOAUTH, WRONGPASS, NOPERM and AUTH failures,
 * STATS_LOSS_ERROR otherwise. */
enum stats_redis_loss rconn_error_kind(const char *err, size_t len);

#endif

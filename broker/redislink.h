/* redislink.h: the worker's subscriber connection to Redis.
 *
 * One hiredis async context, attached to the worker's libevent loop. hiredis
 * 0.14 never reconnects by itself: when the connection fails or drops, the
 * link retries with exponential backoff (100 ms doubling to at most 5 s),
 * sends AUTH and SELECT when the URL asks for them, and then calls
 * hooks.on_up so the owner can resubscribe every channel in use. While the
 * link is down, rlink_subscribe() and rlink_unsubscribe() do nothing: the
 * full set is sent on the next on_up.
 *
 * The link always reads: Redis drops a subscriber whose output buffer
 * passes its pub/sub limit, so nothing here waits on clients. */
#ifndef BROKER_REDISLINK_H
#define BROKER_REDISLINK_H

#include <stddef.h>

#include <event2/event.h>

struct cfg;

struct rlink_hooks {
    /* A published message; both buffers are borrowed for the call. */
    void (*on_message)(void *arg, const char *channel, size_t clen, const char *payload,
                       size_t plen);
    /* The link is ready (connected, authenticated, db selected). */
    void (*on_up)(void *arg);
    /* The link went down (it will retry by itself). */
    void (*on_down)(void *arg);
    void *arg;
};

struct rlink;
struct redisAsyncContext;

/* Starts a hiredis async connection to host:port on base, with data and the
 * two callbacks set: the one way every module here opens one. Returns the
 * context, or NULL (after logging why, with `who` naming the caller) when
 * it could not even start; nothing is left to free then. */
struct redisAsyncContext *rlink_async_connect(
    struct event_base *base, const char *who, const char *host, int port, void *data,
    void (*on_connect)(const struct redisAsyncContext *, int),
    void (*on_disconnect)(const struct redisAsyncContext *, int));

/* Starts connecting at once. host, port, credentials and db are read from
 * cfg and copied. Returns NULL on ENOMEM. */
struct rlink *rlink_new(struct event_base *base, const struct cfg *cfg,
                        const struct rlink_hooks *hooks);
/* Disconnects and frees, without calling on_down. Safe on NULL. */
void rlink_free(struct rlink *rl);

/* 1 while the link is ready. */
int rlink_is_up(const struct rlink *rl);

/* Send SUBSCRIBE/UNSUBSCRIBE for the given channels when the link is up
 * (channel names are sent as binary-safe arguments, never interpolated).
 * Return 0, or -1 when the link is down or the command could not be queued
 * (the next on_up resubscribes what is needed). */
int rlink_subscribe(struct rlink *rl, const char *const *names, const size_t *lens, size_t n);
int rlink_unsubscribe(struct rlink *rl, const char *name, size_t len);

#endif

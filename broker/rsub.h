/* rsub.h: a subscriber to Redis, whatever stands behind it.
 *
 * The worker sees this interface only. Two backends implement it:
 * nodesub.c (one connection to one node: standalone, the primary Sentinel
 * names, one node of a cluster in global mode) and shardsub.c (sharded
 * pub/sub on a cluster: one connection per shard). redis.h picks one from
 * the configuration.
 *
 * A backend keeps every channel it was asked for and subscribes it again by
 * itself wherever it must (a reconnect, a failover, a slot move), so the
 * caller says once what it wants and never resends. Redis's confirmation of
 * each subscription is reported (on_settled), so that a client's ack can
 * mean "publishes from now on reach you". */
#ifndef BROKER_RSUB_H
#define BROKER_RSUB_H

#include <stddef.h>

#include "redisconn.h"

struct rsub_hooks {
    /* A published message; both buffers are borrowed for the call. */
    void (*on_message)(void *arg, const char *channel, size_t clen, const char *payload,
                       size_t plen);
    /* Every link the wanted channels need is up again (subscriptions are on
     * their way). */
    void (*on_up)(void *arg);
    /* A link went down; the backend reconnects and resubscribes by itself. */
    void (*on_down)(void *arg);
    /* Redis confirmed the subscription of channel, or refused it (it will be
     * tried again): nothing more to wait for. Borrowed for the call. */
    void (*on_settled)(void *arg, const char *channel, size_t clen);
    /* A command connection to a primary became ready (the owner loads what
     * it needs there, e.g. the history library). c is borrowed. May be
     * NULL. */
    void (*on_command_ready)(void *arg, struct rconn *c);
    void *arg;
};

struct rsub;

struct rsub_ops {
    int (*subscribe)(struct rsub *s, const char *name, size_t len);
    void (*unsubscribe)(struct rsub *s, const char *name, size_t len);
    int (*is_up)(const struct rsub *s);
    int (*is_pending)(const struct rsub *s, const char *name, size_t len);
    int (*command)(struct rsub *s, const char *name, size_t len, int argc,
                   const char *const *argv, const size_t *argl, rconn_reply_fn fn, void *arg);
    void (*free)(struct rsub *s);
};

/* The common head of every backend. */
struct rsub {
    const struct rsub_ops *ops;
    struct rsub_hooks hooks;
};

/* Wants channel name[0..len) (copied) from now on; subscribing a channel
 * already wanted changes nothing. Returns 0, or -1 on ENOMEM (not wanted). */
static inline int rsub_subscribe(struct rsub *s, const char *name, size_t len)
{
    return s->ops->subscribe(s, name, len);
}

/* No longer wants it. */
static inline void rsub_unsubscribe(struct rsub *s, const char *name, size_t len)
{
    s->ops->unsubscribe(s, name, len);
}

/* 1 while every link the wanted channels need is up (with none wanted: while
 * Redis answers). */
static inline int rsub_is_up(const struct rsub *s)
{
    return s->ops->is_up(s);
}

/* 1 when a SUBSCRIBE of name is on its way over a link that is up, so that
 * on_settled will follow; 0 when it is confirmed already, or when its link
 * is down (nothing will be confirmed before the link is back). */
static inline int rsub_is_pending(const struct rsub *s, const char *name, size_t len)
{
    return s->ops->is_pending(s, name, len);
}

/* Sends a command about channel name[0..len) to the primary that owns it,
 * over a command connection of its own (a subscribed connection cannot run
 * commands). fn gets the reply, or NULL when the connection went away.
 * Returns 0 when sent, -1 when that primary's command connection is not
 * ready (nothing sent, fn is not called). */
static inline int rsub_command(struct rsub *s, const char *name, size_t len, int argc,
                               const char *const *argv, const size_t *argl, rconn_reply_fn fn,
                               void *arg)
{
    return s->ops->command(s, name, len, argc, argv, argl, fn, arg);
}

/* Closes every link and frees. Safe on NULL. Never from a hook. */
static inline void rsub_free(struct rsub *s)
{
    if (s != NULL)
        s->ops->free(s);
}

#endif

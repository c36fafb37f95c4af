/* redisaddr.h: where a Redis connection should go.
 *
 * An address provider answers one question through one callback: "connect
 * to host:port". Three kinds exist: a fixed address (standalone), a list
 * tried in turn (the seeds of a cluster, the nodes it told us about, the
 * sentinels), and Sentinel (sentinel.h), which asks the sentinels where the
 * primary is and reports every failover. The connection's owner wires them:
 * provider -> rconn_set_address, and a connection that fails ->
 * raddr_failed(), after which a provider may name another address. A
 * provider never sees the connection, and the connection never sees the
 * provider. */
#ifndef BROKER_REDISADDR_H
#define BROKER_REDISADDR_H

#include <stddef.h>

/* host is borrowed for the call. */
typedef void (*raddr_fn)(void *arg, const char *host, int port);

struct raddr;

struct raddr_ops {
    void (*start)(struct raddr *p);
    void (*failed)(struct raddr *p);
    void (*free)(struct raddr *p);
};

/* The common head of every provider. */
struct raddr {
    const struct raddr_ops *ops;
    raddr_fn fn;
    void *arg;
};

/* Reports the first address: at once (fixed, list), or when known
 * (Sentinel). */
static inline void raddr_start(struct raddr *p)
{
    p->ops->start(p);
}

/* The address last reported did not work: a list reports the next one,
 * Sentinel asks again (at most once a second), a fixed address stays. */
static inline void raddr_failed(struct raddr *p)
{
    p->ops->failed(p);
}

/* Safe on NULL. */
static inline void raddr_free(struct raddr *p)
{
    if (p != NULL)
        p->ops->free(p);
}

/* A fixed address. Returns NULL on ENOMEM. */
struct raddr *raddr_fixed_new(const char *host, int port, raddr_fn fn, void *arg);

/* The entries of a "host:port,host:port" list (validated by the
 * configuration), in turn. Returns NULL on ENOMEM or an empty or malformed
 * list. */
struct raddr *raddr_list_new(const char *list, raddr_fn fn, void *arg);

/* Adds host:port to a list's rotation, after the entries it has (a cluster
 * node learned from the topology); entries already there and lists that are
 * full (RADDR_LIST_MAX) are left as they are. p must come from
 * raddr_list_new. Returns 0, or -1 on ENOMEM. */
#define RADDR_LIST_MAX 64
int raddr_list_learn(struct raddr *p, const char *host, int port);

/* Number of entries in a list provider. */
int raddr_list_count(const struct raddr *p);

#endif

/* sentinel.h: the address of a primary, according to Redis Sentinel.
 *
 * An address provider (redisaddr.h): one connection (redisconn.h) to one of
 * the sentinels at a time asks SENTINEL get-master-addr-by-name, reports the
 * answer, then subscribes to +switch-master and reports every failover of
 * that primary. A sentinel that is lost, refuses, or does not know the
 * primary is replaced by the next one of the list (with the connection's
 * backoff), which is asked again, so that a failover missed meanwhile is
 * still learned. raddr_failed() (the primary reported does not answer) asks
 * again on a fresh connection, at most once a second. The provider knows
 * nothing of who uses the address. */
#ifndef BROKER_SENTINEL_H
#define BROKER_SENTINEL_H

#include <event2/event.h>

#include "redisaddr.h"
#include "redisconn.h"

/* sentinels is a "host:port,..." list, master the primary's name; both are
 * copied. auth gives the credentials sent to each sentinel (AUTH refusals
 * are tolerated: a sentinel may have no password of its own) and, in tests,
 * a dial function. Nothing happens before raddr_start(). Returns NULL on
 * ENOMEM or an empty list. */
struct raddr *raddr_sentinel_new(struct event_base *base, const char *sentinels,
                                 const char *master, const struct rconn_opts *auth,
                                 raddr_fn fn, void *arg);

#endif

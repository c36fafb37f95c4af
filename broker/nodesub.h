/* nodesub.h: the subscriber backend of one Redis node (rsub.h).
 *
 * One connection (redisconn.h) to wherever an address provider
 * (redisaddr.h) points: a fixed standalone server, the primary Sentinel
 * names, or one node of a cluster in global mode (plain SUBSCRIBE reaches
 * every PUBLISH there). Every wanted channel is SUBSCRIBEd whenever the
 * connection becomes ready; a channel Redis refuses is tried again every few
 * seconds. When the connection fails, the provider is told
 * (raddr_failed), so that a list moves to its next node and Sentinel is
 * asked again. */
#ifndef BROKER_NODESUB_H
#define BROKER_NODESUB_H

#include <event2/event.h>

#include "redisaddr.h"
#include "redisconn.h"
#include "rsub.h"

/* Takes ownership of addr (whatever happens; its fn and arg are set here)
 * and starts it. opts (credentials, db) is copied. Returns NULL on ENOMEM. */
struct rsub *nodesub_new(struct event_base *base, struct raddr *addr,
                         const struct rconn_opts *opts, const struct rsub_hooks *hooks);

#endif

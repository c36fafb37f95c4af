/* shardsub.h: the subscriber backend of sharded pub/sub on a Redis Cluster
 * (rsub.h).
 *
 * Each channel lives in the hash slot of its name and is SSUBSCRIBEd on the
 * primary serving that slot (cluster.h's map), over one connection
 * (redisconn.h) per shard this worker needs. The map is asked again when it
 * may have changed: an unsolicited `sunsubscribe` (the slot moved away), a
 * MOVED, CLUSTERDOWN or TRYAGAIN answer, a lost shard. Channels are then
 * placed again: unsubscribed where they were, subscribed where they now
 * live. A shard connection that serves nothing is closed. Publishers use
 * SPUBLISH. */
#ifndef BROKER_SHARDSUB_H
#define BROKER_SHARDSUB_H

#include <event2/event.h>

#include "redisconn.h"
#include "rsub.h"

/* seeds: "host:port,..." (copied); opts: credentials, copied. Asks for the
 * map at once. Returns NULL on ENOMEM. */
struct rsub *shardsub_new(struct event_base *base, const char *seeds,
                          const struct rconn_opts *opts, const struct rsub_hooks *hooks);

#endif

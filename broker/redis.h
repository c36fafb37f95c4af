/* redis.h: the worker's subscriber to Redis, built from the configuration.
 *
 *   redis_mode standalone          nodesub over a fixed address (redis_url)
 *   redis_mode sentinel            nodesub over Sentinel's primary
 *   redis_mode cluster, global     nodesub over the seeds, in turn
 *   redis_mode cluster, sharded    shardsub over the cluster's slot map
 * with redis_url's credentials and database everywhere they apply. */
#ifndef BROKER_REDIS_H
#define BROKER_REDIS_H

#include <event2/event.h>

#include "rsub.h"

struct cfg;

/* Starts connecting at once. Returns NULL on ENOMEM (logged). */
struct rsub *redis_subscriber_new(struct event_base *base, const struct cfg *cfg,
                                  const struct rsub_hooks *hooks);

#endif

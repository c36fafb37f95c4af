/* cluster.h: sharded Pub/Sub on a Redis Cluster (Redis 7 SSUBSCRIBE).
 *
 * Each channel lives in the hash slot of its name (CRC16 as Redis computes
 * it, hash tags honoured) and is SSUBSCRIBEd on the primary that owns that
 * slot, over one connection per shard this worker needs. The topology comes
 * from CLUSTER SLOTS, asked of the seed nodes (redis_cluster_nodes) in turn,
 * and is asked again whenever it may have changed: an unsolicited
 * `sunsubscribe` (the slot moved), a MOVED or CLUSTERDOWN error, a lost
 * shard connection; channels are then resubscribed where they now live.
 *
 * hiredis 0.14's async API does not understand SSUBSCRIBE replies (no
 * `smessage` handling; an unexpected push trips its assertions), so shard
 * connections are driven here with libevent bufferevents and replies are
 * parsed with hiredis's reader API (redisReaderFeed/GetReply). The topology
 * query is an ordinary command and goes through hiredis async.
 *
 * The interface is redislink's (redislink.c forwards to it in cluster mode
 * with cluster_pubsub sharded). */
#ifndef BROKER_CLUSTER_H
#define BROKER_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "redislink.h"

struct cfg;
struct clu;

/* The hash slot of a channel (or key) name: CRC16/XMODEM of the name, or of
 * the part between the first '{' and the next '}' when it is not empty,
 * modulo 16384. */
unsigned clu_slot(const char *name, size_t len);

/* Starts discovering the topology at once. Returns NULL on ENOMEM. */
struct clu *clu_new(struct event_base *base, const struct cfg *cfg,
                    const struct rlink_hooks *hooks);
void clu_free(struct clu *cl);

/* 1 while the topology is known and every shard holding our channels is
 * connected. */
int clu_is_up(const struct clu *cl);

/* Same contracts as rlink_subscribe / rlink_unsubscribe, except that the
 * channels are remembered while links are down and subscribed when they
 * come back (cluster mode never calls on_up to resubscribe). */
int clu_subscribe(struct clu *cl, const char *const *names, const size_t *lens, size_t n);
int clu_unsubscribe(struct clu *cl, const char *name, size_t len);

#endif

/* cluster.h: a Redis Cluster's map: which primary serves each hash slot.
 *
 * The map comes from CLUSTER SLOTS, asked over one connection
 * (redisconn.h) of an address provider that tries the seeds
 * (redis_cluster_nodes) and then every node a map named, in turn (so that a
 * cluster whose seeds are all gone is still found). It is asked again
 * whenever a user says it may have changed (clu_map_refresh: a slot that
 * moved, a MOVED answer, a lost shard); between questions the connection is
 * closed. Users learn of every new map through on_change. A MOVED answer's
 * owner is applied at once (clu_map_moved), before the next full map.
 *
 * clu_slot() is the slot function Redis uses, for channels and keys alike. */
#ifndef BROKER_CLUSTER_H
#define BROKER_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "redisconn.h"

#define CLU_SLOTS 16384

/* The hash slot of a channel (or key) name: CRC16/XMODEM of the name, or of
 * the part between the first '{' and the next '}' when that is not empty,
 * modulo 16384. */
unsigned clu_slot(const char *name, size_t len);

struct clu_node {
    char host[128];
    int port;
};

struct clu_map_hooks {
    /* A new map (or a MOVED owner) was applied: place channels again. */
    void (*on_change)(void *arg);
    void *arg;
};

struct clu_map;

/* seeds is a "host:port,..." list (copied); opts gives credentials (and a
 * dial function in tests). Asks for the map at once. Returns NULL on
 * ENOMEM or an empty list. */
struct clu_map *clu_map_new(struct event_base *base, const char *seeds,
                            const struct rconn_opts *opts, const struct clu_map_hooks *hooks);
/* Safe on NULL. Never from on_change. */
void clu_map_free(struct clu_map *m);

/* Asks for the map again within delay_ms (0: now). Requests coalesce: one
 * question is in flight at a time, and one asked meanwhile follows it. */
void clu_map_refresh(struct clu_map *m, long delay_ms);

/* 1 once a map has been received. */
int clu_map_known(const struct clu_map *m);

/* The primary serving slot, or NULL when none does. The node stays valid
 * until the next on_change. */
const struct clu_node *clu_map_owner(const struct clu_map *m, unsigned slot);

/* The primaries of the current map: *nodes (valid until the next
 * on_change) and how many. */
size_t clu_map_nodes(const struct clu_map *m, const struct clu_node **nodes);

/* 1 when host:port serves slots in the current map. */
int clu_map_serves(const struct clu_map *m, const char *host, int port);

/* A node answered "MOVED <slot> <host>:<port>" (arg points after "MOVED "):
 * the slot's owner is set now and on_change follows. Returns 0, or -1 when
 * arg is malformed (nothing changed). */
int clu_map_moved(struct clu_map *m, const char *arg, size_t len);

#endif

/* chanset.h: the channels a Redis subscriber wants, with their state.
 *
 * Both subscriber backends (nodesub.c, shardsub.c) keep here every channel
 * this worker's clients want, so that they resubscribe by themselves after
 * a reconnect, a failover or a slot move, and know when Redis has confirmed
 * a subscription. A keyed hash table (SipHash: clients choose the names),
 * one allocation per channel. */
#ifndef BROKER_CHANSET_H
#define BROKER_CHANSET_H

#include <stddef.h>
#include <stdint.h>

enum cset_state {
    CSET_WANT = 0, /* wanted, no SUBSCRIBE on the wire */
    CSET_SENT,     /* SUBSCRIBE sent, confirmations outstanding */
    CSET_LIVE,     /* confirmed: publishes reach us */
    CSET_GONE      /* no longer wanted; kept until its confirmations are in */
};

struct cset_item {
    struct cset_item *next; /* hash chain */
    uint64_t hash;
    void *on;               /* the backend's: the shard it is placed on */
    uint32_t pending;       /* subscribe confirmations still expected */
    uint16_t slot;          /* cluster hash slot (sharded backend) */
    uint8_t state;          /* enum cset_state */
    uint32_t len;
    char name[];
};

struct cset;

/* Returns NULL on ENOMEM. */
struct cset *cset_new(void);
/* Frees every item. Safe on NULL. */
void cset_free(struct cset *s);

struct cset_item *cset_find(const struct cset *s, const char *name, size_t len);
/* Adds a channel in state CSET_WANT (the caller checked it is not there).
 * Returns the item, or NULL on ENOMEM. */
struct cset_item *cset_add(struct cset *s, const char *name, size_t len);
/* Removes and frees it. */
void cset_remove(struct cset *s, struct cset_item *it);

/* Calls fn for every item; fn may cset_remove() the item it is given. */
void cset_foreach(struct cset *s, void (*fn)(void *arg, struct cset_item *it), void *arg);

size_t cset_count(const struct cset *s);

#endif

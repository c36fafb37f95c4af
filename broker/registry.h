/* registry.h: channels, their subscriber groups, and who subscribes to what.
 *
 * Indexed both ways, as Redis's pubsub.c: a channel lists its groups and a
 * group its subscribers (doubly linked: O(1) removal); a client lists its
 * subscriptions. A group is the set of a channel's subscribers that receive
 * the same messages, and so share one batch and one frame per flush. The
 * channel is refcounted by its subscribers: the first one triggers
 * hooks.on_first (SUBSCRIBE in Redis), the last one hooks.on_last
 * (UNSUBSCRIBE).
 *
 * The registry never touches sockets: a flushed frame reaches each
 * subscriber through hooks.deliver, with the struct reg_client that the
 * session embeds (it gets back to itself with container_of). */
#ifndef BROKER_REGISTRY_H
#define BROKER_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "frame.h"
#include "protocol/history.h"

struct reg_sub;
struct filter;

/* Embedded in each session; zero-initialised means "no subscriptions". */
struct reg_client {
    struct reg_sub *subs;
    uint32_t nsubs;
};

struct reg_hooks {
    /* A channel got its first subscriber / lost its last one. name is
     * borrowed for the call. */
    void (*on_first)(void *arg, const char *name, size_t len);
    void (*on_last)(void *arg, const char *name, size_t len);
    /* Queue f (borrowed: take a reference to keep it) on cl's connection.
     * Returns 1 when f was queued, 0 when it was not (the connection is
     * closing, or is too far behind and is being closed for it): only
     * frames queued count as sent. */
    int (*deliver)(void *arg, struct reg_client *cl, struct frame *f);
    /* A subscribe ack that waited for Redis (reg_defer_ack) may go now.
     * name and rid (raw JSON, ridlen 0: none) are borrowed for the call. */
    void (*on_ack)(void *arg, struct reg_client *cl, const char *name, size_t len,
                   const char *rid, size_t ridlen);
    void *arg;
};

struct reg;

/* Returns NULL on ENOMEM. The batcher is created here (it calls back into
 * the registry on every flush) from the loop and frame builder given. */
struct reg *reg_new(struct event_base *base, struct frame_builder *fb,
                    const struct reg_hooks *hooks);
/* Frees every channel, group and subscription. Clients must not be used
 * with the registry afterwards. Safe on NULL. */
void reg_free(struct reg *r);

struct batcher *reg_batcher(struct reg *r);

enum reg_result {
    REG_ADDED = 0,    /* a new subscription */
    REG_SAME = 1,     /* already subscribed with an equal filter: no change */
    REG_REPLACED = 2  /* already subscribed: the filter was replaced */
};

/* Subscribes cl to channel name[0..len) with filter f (NULL: every
 * payload), taking ownership of f whatever happens. One subscription per
 * channel per client: subscribing again replaces the filter. Subscribers
 * with equal filters share a group (one evaluation and one frame per
 * flush). Returns an enum reg_result, or -1 on ENOMEM (nothing changed). */
int reg_subscribe(struct reg *r, struct reg_client *cl, const char *name, size_t len,
                  struct filter *f);
/* The same, but cl is held: it receives nothing of the channel (its
 * history is being read) until reg_resume(), which hands it what history
 * gave and what arrived live meanwhile. An existing subscription is not
 * held (REG_SAME or REG_REPLACED). */
int reg_subscribe_held(struct reg *r, struct reg_client *cl, const char *name, size_t len,
                       struct filter *f);

/* 1 when cl is subscribed to channel name[0..len). */
int reg_is_subscribed(const struct reg_client *cl, const char *name, size_t len);

/* Returns 0 when removed, 1 when cl was not subscribed. */
int reg_unsubscribe(struct reg *r, struct reg_client *cl, const char *name, size_t len);
/* Drops every subscription of cl (the client is going away). */
void reg_unsubscribe_all(struct reg *r, struct reg_client *cl);

/* Adds one message (its JSON text, copied into the batch of each group
 * whose filter it passes) to channel name[0..len). is_json tells whether
 * the text is the payload itself (1) or the payload encoded as a JSON string
 * because it was not JSON (0: it matches unfiltered groups only). Unknown
 * channels are ignored: a message can still arrive after the last
 * subscriber left. Returns the number of groups that took it. */
size_t reg_publish(struct reg *r, const char *name, size_t len, const char *json,
                   size_t jlen, int is_json, const struct proto_pos *pos);

/* History (PROTOCOL.md section 7). pos, when not NULL with offset > 0 in
 * reg_publish above, is the message's place in the channel's history. */
enum reg_hist {
    REG_HIST_UNKNOWN = 0, /* never asked, no history message seen */
    REG_HIST_PLAIN,       /* Redis said the channel has no history */
    REG_HIST_YES          /* it has: its position is known */
};

/* The channel's history state (an enum reg_hist), and its last known
 * position into *pos (may be NULL). */
int reg_channel_pos(const struct reg *r, const char *name, size_t len, struct proto_pos *pos);

/* What a read found: pos (NULL or offset 0: no history). */
void reg_channel_learn(struct reg *r, const char *name, size_t len, const struct proto_pos *pos);

/* One message of history, prepared as live ones are (json is the payload,
 * or its string encoding when is_json is 0). Borrowed. */
struct reg_entry {
    uint64_t offset;
    const char *json;
    size_t len;
    int is_json;
};

/* 1 when what cl's held subscription to the channel waits for cannot be
 * trusted: the live messages kept meanwhile overflowed, or the channel's
 * epoch changed (its history was created afresh). */
int reg_held_disrupted(const struct reg *r, const struct reg_client *cl, const char *name,
                       size_t len);

/* Ends the wait of cl's held subscription: delivers (through the deliver
 * hook, in frames of its own, filtered as live ones are) the entries
 * e[0..n) past offset `after`, then the live messages that arrived while it
 * waited and are past upto (the read's last offset) or plain publishes;
 * from then on cl has every offset up to the largest of those, and it joins
 * its group with the first live message past that. epoch names the
 * history the entries come from. Returns how many messages it delivered. */
size_t reg_resume(struct reg *r, struct reg_client *cl, const char *name, size_t len,
                  const struct reg_entry *e, size_t n, uint64_t after, uint64_t upto,
                  const struct proto_pos *epoch);

/* Holds cl's ack of its subscribe to channel name[0..len) (to which cl is
 * subscribed) until reg_settle() of that channel: for the first subscriber
 * of a channel, "acked" must mean "publishes from now on are delivered",
 * which is true only once Redis has confirmed the SUBSCRIBE. rid[0..ridlen)
 * is copied. An unsubscribe of the channel by cl sends the held ack first;
 * a client leaving drops it. Returns 0, or -1 on ENOMEM (the caller acks at
 * once). */
int reg_defer_ack(struct reg *r, struct reg_client *cl, const char *name, size_t len,
                  const char *rid, size_t ridlen);

/* Sends every ack held for channel name[0..len) (Redis confirmed or refused
 * the subscription), through hooks.on_ack. */
void reg_settle(struct reg *r, const char *name, size_t len);
/* The same for every channel (the Redis link went down: nothing will be
 * confirmed before it is back, and delivery starts when it is). */
void reg_settle_all(struct reg *r);

/* Calls fn for every channel with at least one subscriber. */
void reg_foreach_channel(struct reg *r, void (*fn)(void *arg, const char *name, size_t len),
                         void *arg);

size_t reg_channel_count(const struct reg *r);
size_t reg_subscription_count(const struct reg *r);

#endif

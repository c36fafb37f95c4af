/* sentinel.h: where the primary is, according to Redis Sentinel.
 *
 * One hiredis async connection to one of redis_sentinels at a time: it asks
 * SENTINEL get-master-addr-by-name for redis_master_name, reports the
 * answer, then subscribes to +switch-master and reports every failover of
 * that primary. When the sentinel goes away, the next one in the list is
 * tried (with backoff) and asked again, so a failover that happened while
 * no sentinel was connected is still learned. */
#ifndef BROKER_SENTINEL_H
#define BROKER_SENTINEL_H

#include <event2/event.h>

struct cfg;
struct sent;

/* host is borrowed for the call. */
typedef void (*sent_master_fn)(void *arg, const char *host, int port);

/* Starts at once. Returns NULL on ENOMEM. */
struct sent *sent_new(struct event_base *base, const struct cfg *cfg, sent_master_fn fn,
                      void *arg);
void sent_free(struct sent *s);

/* Asks the sentinels again soon (the primary we were told about does not
 * answer). At most once a second. */
void sent_requery(struct sent *s);

#endif

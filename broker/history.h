/* history.h: reading channel history from Redis, coalesced.
 *
 * A worker reads a channel's history (histlib.h's broker_range) over the
 * command connection to the primary that owns the channel (rsub.h). Reads
 * are the cost of a reconnect storm: when a node dies, thousands of clients
 * of one channel resume through one worker within milliseconds of each
 * other. So requests for one channel made within HIST_COALESCE_MS share one
 * read: every "after offset S" request of the batch is served by one read
 * from the smallest S, every "last N" request by one read of the largest N,
 * and a request the read did not reach (it asked from further back than
 * others, beyond what one read returns) is asked again on its own.
 *
 * A read returns at most recover_max entries: a request further behind than
 * that is answered without them (too_far), and its client starts from now.
 * Callbacks run from the loop (a timer or a Redis reply), never from inside
 * hist_request(). */
#ifndef BROKER_HISTORY_H
#define BROKER_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "protocol/history.h"
#include "rsub.h"

#define HIST_COALESCE_MS 2

enum hist_mode {
    HIST_AFTER = 0, /* the entries after an offset (a resume) */
    HIST_LAST,      /* the last N entries (history on subscribe; N 0: only the position) */
};

/* One entry of a channel's history; p is borrowed for the callback. */
struct hist_entry {
    uint64_t offset;
    const char *p;
    size_t n;
};

/* What a read found, for one request. */
struct hist_result {
    int ok;               /* 0: Redis did not answer or refused: nothing is known */
    struct proto_pos pos; /* the channel's epoch and last offset; offset 0: no history */
    uint64_t first;       /* the oldest offset still kept; 0: none */
    int too_far;          /* HIST_AFTER: more missed than one read returns */
    const struct hist_entry *e; /* ascending offsets; borrowed for the callback */
    size_t n;
};

typedef void (*hist_fn)(void *arg, const struct hist_result *res);

struct hist;
struct hist_req;

/* sub is borrowed and must outlive h. Returns NULL on ENOMEM. */
struct hist *hist_new(struct event_base *base, struct rsub *sub);
/* Cancels what is pending (without callbacks) and frees. Safe on NULL. */
void hist_free(struct hist *h);

/* recover_max (live-reloadable): entries one read returns at most. */
void hist_configure(struct hist *h, long long recover_max);

/* Asks for channel name[0..len): the entries after offset arg (HIST_AFTER)
 * or the last arg (HIST_LAST, at most recover_max). fn(fnarg, result) is
 * called exactly once, later, unless hist_cancel() comes first. Returns the
 * request, or NULL on ENOMEM (fn is never called then). */
struct hist_req *hist_request(struct hist *h, const char *name, size_t len, enum hist_mode mode,
                              uint64_t arg, hist_fn fn, void *fnarg);

/* The requester is going away: fn will not be called. q is freed (now or
 * when its read returns). */
void hist_cancel(struct hist_req *q);

#endif

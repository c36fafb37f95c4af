/* batch.h: per-group pending payloads, flushed as one shared frame.
 *
 * A batch collects the JSON texts of the messages a group of subscribers is
 * to receive, already inside the envelope
 *   {"type":"batch","channel":"...","messages":[M1,M2,...]}
 * so that a flush only closes the array, lets wslay write the frame header
 * into the headroom, and hands the one frame to the batch's owner (emit),
 * which queues it by reference on every subscriber. The batcher flushes
 * every dirty batch when its timer fires (batch_interval_ms after the first
 * pending message), a batch that reaches batch_max_bytes at once, and with
 * an interval of 0 each message as it arrives.
 *
 * The batcher knows nothing of channels or subscribers: a struct batch lives
 * inside its owner (a registry group), which gets it back in emit(). */
#ifndef BROKER_BATCH_H
#define BROKER_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#include "frame.h"
#include "protocol/buf.h"
#include "protocol/history.h"

struct batch {
    struct proto_buf buf; /* headroom + envelope + payloads; empty when idle */
    struct proto_pos pos; /* the last history message in buf; offset 0: none */
    uint32_t count;       /* messages in buf */
    uint32_t last_len;    /* size of the previous flush, to size the next */
    struct batch *prev, *next; /* on the dirty list */
    uint8_t dirty;
};

struct batcher;

/* Receives each flushed frame (refs == 1, released by the batcher after
 * emit returns: take a reference to keep it) and how many messages it
 * carries. */
typedef void (*batch_emit_fn)(void *arg, struct batch *b, struct frame *f, uint32_t count);

/* Returns NULL on ENOMEM. The builder is borrowed and must outlive the
 * batcher. */
struct batcher *batcher_new(struct event_base *base, struct frame_builder *fb,
                            batch_emit_fn emit, void *arg);
/* Flushes what is pending, then frees. Safe on NULL. */
void batcher_free(struct batcher *bt);
/* Applies batch_interval_ms and batch_max_bytes (also on reload). */
void batcher_configure(struct batcher *bt, long long interval_ms, long long max_bytes);

/* Appends one payload's JSON text (json[0..len), copied) to b, whose channel
 * is channel[0..channel_len). pos (NULL or offset 0: none) is the message's
 * place in the channel's history: the batch then ends with the position of
 * its last such message, and a batch never mixes two epochs (it is flushed
 * first). May flush b at once. Returns 0, or -1 on ENOMEM (the message is
 * dropped for this batch and counted). */
int batch_append(struct batcher *bt, struct batch *b, const char *channel,
                 size_t channel_len, const char *json, size_t len, const struct proto_pos *pos);

/* Flushes b now, if it holds anything. */
void batch_flush(struct batcher *bt, struct batch *b);

/* batch_max_bytes as configured. */
size_t batcher_max_bytes(const struct batcher *bt);

/* Builds one batch frame outside any batch (history for one client):
 * buf must hold FRAME_HEADROOM bytes, the envelope and the payloads, as a
 * batch's buf does; it is closed here (with pos when offset > 0) and taken.
 * Returns the frame (refs == 1, msgs == count) or NULL on ENOMEM. */
struct frame *batch_frame(struct batcher *bt, struct proto_buf *buf, uint32_t count,
                          const struct proto_pos *pos);

/* Flushes every dirty batch now. */
void batch_flush_all(struct batcher *bt);

/* Forgets b's pending messages (its owner is going away). */
void batch_discard(struct batcher *bt, struct batch *b);

#endif

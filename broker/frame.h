/* frame.h: refcounted WebSocket frames, built once and shared.
 *
 * A batch frame is built once per flush and queued on every subscriber's
 * connection by reference: each queue holds one ref, and the last
 * frame_unref() frees it. Private frames (an HTTP response, an ack, a pong)
 * have a single owner and the same lifetime rules.
 *
 * Frames are built by wslay's frame API: the payload is assembled in a
 * proto_buf that starts with FRAME_HEADROOM spare bytes, and
 * frame_build_text() lets wslay_frame_send() write the header into that
 * headroom, so the payload is never copied again. */
#ifndef BROKER_FRAME_H
#define BROKER_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include <wslay/wslay.h>

#include "protocol/buf.h"

/* The longest server frame header: 2 bytes and a 64-bit length. */
#define FRAME_HEADROOM 10

struct frame {
    uint32_t refs;
    uint32_t off;  /* the frame is data[off..len) */
    uint32_t msgs; /* messages a batch frame carries (0 for others) */
    uint8_t ctrl;  /* a control reply, counted in its connection's ctrl_bytes
                      (conn_send_ctrl); 0 for every other frame */
    size_t len;
    char *data;
};

/* A frame holding a copy of p[0..n). Returns NULL on ENOMEM. refs == 1. */
struct frame *frame_copy(const void *p, size_t n);

/* One per worker: wraps a wslay frame context. */
struct frame_builder;

/* Creates a builder. Returns NULL on ENOMEM. */
struct frame_builder *frame_builder_new(void);
/* Safe on NULL. */
void frame_builder_free(struct frame_builder *fb);

/* Turns payload (which must begin with FRAME_HEADROOM bytes of room, the
 * frame's payload after them) into one unmasked, final frame of the given
 * wslay opcode (WSLAY_TEXT_FRAME, WSLAY_PING, WSLAY_CONNECTION_CLOSE).
 * Takes ownership of payload's memory and leaves payload empty. Returns the
 * frame with refs == 1, or NULL on error (payload is then freed). */
struct frame *frame_build(struct frame_builder *fb, uint8_t opcode,
                          struct proto_buf *payload);

/* A close frame with a status code and a reason of at most 123 bytes.
 * Returns NULL on ENOMEM. */
struct frame *frame_build_close(struct frame_builder *fb, uint16_t code,
                                const char *reason);

static inline struct frame *frame_ref(struct frame *f)
{
    f->refs++;
    return f;
}

/* Drops one reference; frees the frame with the last. Safe on NULL. */
void frame_unref(struct frame *f);

static inline const char *frame_bytes(const struct frame *f)
{
    return f->data + f->off;
}

static inline size_t frame_size(const struct frame *f)
{
    return f->len - f->off;
}

#endif

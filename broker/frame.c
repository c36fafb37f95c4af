/* frame.c: refcounted frames and the one-copy frame builder (see frame.h). */
#include "frame.h"

#include <stdlib.h>
#include <string.h>

struct frame *frame_copy(const void *p, size_t n)
{
    struct frame *f = malloc(sizeof(*f));

    if (f == NULL)
        return NULL;
    f->data = malloc(n ? n : 1);
    if (f->data == NULL) {
        free(f);
        return NULL;
    }
    memcpy(f->data, p, n);
    f->refs = 1;
    f->off = 0;
    f->msgs = 0;
    f->ctrl = 0;
    f->len = n;
    return f;
}

void frame_unref(struct frame *f)
{
    if (f == NULL || --f->refs > 0)
        return;
    free(f->data);
    free(f);
}

struct frame_builder {
    wslay_frame_context_ptr ctx;
    struct frame *f;  /* the frame being built */
    int header_done;
};

/* wslay hands us the header first, then the payload it was given. The header
 * goes right in front of the payload, inside the headroom; the payload is
 * already where it belongs. Taking every byte offered means wslay finishes a
 * frame within one wslay_frame_send() call. */
static ssize_t build_send_cb(const uint8_t *data, size_t len, int flags, void *user)
{
    struct frame_builder *fb = user;
    struct frame *f = fb->f;

    (void)flags;
    if (!fb->header_done) {
        if (len > FRAME_HEADROOM)
            return WSLAY_ERR_INVALID_ARGUMENT;
        memcpy(f->data + FRAME_HEADROOM - len, data, len);
        f->off = (uint32_t)(FRAME_HEADROOM - len);
        fb->header_done = 1;
        return (ssize_t)len;
    }
    if ((const char *)data != f->data + FRAME_HEADROOM)
        return WSLAY_ERR_INVALID_ARGUMENT;
    return (ssize_t)len;
}

/* The builder only sends unmasked server frames: these are never called. */
static ssize_t no_recv(uint8_t *buf, size_t len, int flags, void *user)
{
    (void)buf, (void)len, (void)flags, (void)user;
    return WSLAY_ERR_INVALID_ARGUMENT;
}

static int no_mask(uint8_t *buf, size_t len, void *user)
{
    (void)buf, (void)len, (void)user;
    return -1;
}

static const struct wslay_frame_callbacks builder_cbs = {build_send_cb, no_recv, no_mask};

struct frame_builder *frame_builder_new(void)
{
    struct frame_builder *fb = calloc(1, sizeof(*fb));

    if (fb == NULL)
        return NULL;
    if (wslay_frame_context_init(&fb->ctx, &builder_cbs, fb) != 0) {
        free(fb);
        return NULL;
    }
    return fb;
}

void frame_builder_free(struct frame_builder *fb)
{
    if (fb == NULL)
        return;
    wslay_frame_context_free(fb->ctx);
    free(fb);
}

struct frame *frame_build(struct frame_builder *fb, uint8_t opcode,
                          struct proto_buf *payload)
{
    struct frame *f;
    struct wslay_frame_iocb io;
    ssize_t r;

    if (payload->len < FRAME_HEADROOM || (f = malloc(sizeof(*f))) == NULL) {
        proto_buf_free(payload);
        return NULL;
    }
    f->refs = 1;
    f->off = 0;
    f->msgs = 0;
    f->ctrl = 0;
    f->len = payload->len;
    f->data = payload->data;
    payload->data = NULL;
    payload->len = payload->cap = 0;

    memset(&io, 0, sizeof(io));
    io.fin = 1;
    io.opcode = opcode;
    io.payload_length = f->len - FRAME_HEADROOM;
    io.data = (const uint8_t *)f->data + FRAME_HEADROOM;
    io.data_length = io.payload_length;
    fb->f = f;
    fb->header_done = 0;
    r = wslay_frame_send(fb->ctx, &io);
    fb->f = NULL;
    if (r < 0 || (uint64_t)r != io.payload_length || !fb->header_done) {
        /* Only a broken invariant gets here; start the context afresh so a
         * half-sent header cannot leak into the next frame. */
        wslay_frame_context_ptr fresh;
        if (wslay_frame_context_init(&fresh, &builder_cbs, fb) == 0) {
            wslay_frame_context_free(fb->ctx);
            fb->ctx = fresh;
        }
        frame_unref(f);
        return NULL;
    }
    return f;
}

struct frame *frame_build_close(struct frame_builder *fb, uint16_t code,
                                const char *reason)
{
    struct proto_buf b = {0};
    size_t rl = reason ? strlen(reason) : 0;
    char head[FRAME_HEADROOM + 2];

    if (rl > 123)
        rl = 123;
    memset(head, 0, FRAME_HEADROOM);
    head[FRAME_HEADROOM] = (char)(code >> 8);
    head[FRAME_HEADROOM + 1] = (char)(code & 0xFF);
    if (proto_buf_append(&b, head, sizeof(head)) != 0 ||
        proto_buf_append(&b, reason, rl) != 0) {
        proto_buf_free(&b);
        return NULL;
    }
    return frame_build(fb, WSLAY_CONNECTION_CLOSE, &b);
}

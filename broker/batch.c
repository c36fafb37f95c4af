/* batch.c: batching and the flush timer (see batch.h). */
#include "batch.h"

#include <stdlib.h>
#include <string.h>

#include "protocol/codec.h"
#include "stats.h"

struct batcher {
    struct event *timer;
    struct frame_builder *fb;
    batch_emit_fn emit;
    void *arg;
    long long interval_ms;
    size_t max_bytes;
    struct batch *dirty; /* doubly linked, so a discarded batch leaves in O(1) */
};

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    batch_flush_all(arg);
}

struct batcher *batcher_new(struct event_base *base, struct frame_builder *fb,
                            batch_emit_fn emit, void *arg)
{
    struct batcher *bt = calloc(1, sizeof(*bt));

    if (bt == NULL)
        return NULL;
    bt->timer = evtimer_new(base, timer_cb, bt);
    if (bt->timer == NULL) {
        free(bt);
        return NULL;
    }
    bt->fb = fb;
    bt->emit = emit;
    bt->arg = arg;
    bt->interval_ms = 200;
    bt->max_bytes = 65536;
    return bt;
}

void batcher_free(struct batcher *bt)
{
    if (bt == NULL)
        return;
    batch_flush_all(bt);
    event_free(bt->timer);
    free(bt);
}

void batcher_configure(struct batcher *bt, long long interval_ms, long long max_bytes)
{
    bt->interval_ms = interval_ms;
    bt->max_bytes = (size_t)max_bytes;
    /* Whatever waits under the old interval goes out now. */
    batch_flush_all(bt);
}

static void dirty_remove(struct batcher *bt, struct batch *b)
{
    if (!b->dirty)
        return;
    if (b->prev)
        b->prev->next = b->next;
    else
        bt->dirty = b->next;
    if (b->next)
        b->next->prev = b->prev;
    b->prev = b->next = NULL;
    b->dirty = 0;
}

static void dirty_add(struct batcher *bt, struct batch *b)
{
    if (b->dirty)
        return;
    if (bt->dirty == NULL && bt->interval_ms > 0) {
        struct timeval tv = {bt->interval_ms / 1000, (bt->interval_ms % 1000) * 1000};
        evtimer_add(bt->timer, &tv);
    }
    b->prev = NULL;
    b->next = bt->dirty;
    if (bt->dirty)
        bt->dirty->prev = b;
    bt->dirty = b;
    b->dirty = 1;
}

static void flush_one(struct batcher *bt, struct batch *b)
{
    struct frame *f;
    uint32_t count = b->count;

    dirty_remove(bt, b);
    if (b->count == 0)
        return;
    b->count = 0;
    b->last_len = b->buf.len > UINT32_MAX ? UINT32_MAX : (uint32_t)b->buf.len;
    if (proto_buf_append(&b->buf, PROTO_BATCH_CLOSE, 2) != 0) {
        stats->dropped_total[DROP_NOMEM] += count;
        proto_buf_free(&b->buf);
        return;
    }
    /* frame_build takes b->buf's memory and leaves it empty. */
    f = frame_build(bt->fb, WSLAY_TEXT_FRAME, &b->buf);
    if (f == NULL) {
        stats->dropped_total[DROP_NOMEM] += count;
        return;
    }
    f->msgs = count;
    bt->emit(bt->arg, b, f, count);
    frame_unref(f);
}

int batch_append(struct batcher *bt, struct batch *b, const char *channel,
                 size_t channel_len, const char *json, size_t len)
{
    static const char room[FRAME_HEADROOM];
    struct proto_buf *buf = &b->buf;
    size_t mark = buf->len;

    if (b->count == 0) {
        buf->len = 0;
        if (proto_buf_reserve(buf, b->last_len > len ? b->last_len : len + 128) != 0 ||
            proto_buf_append(buf, room, sizeof(room)) != 0 ||
            proto_batch_open(buf, channel, channel_len) != 0)
            goto nomem;
    } else if (proto_buf_append(buf, PROTO_BATCH_SEP, 1) != 0) {
        goto nomem;
    }
    if (proto_buf_append(buf, json, len) != 0)
        goto nomem;
    b->count++;
    if (bt->interval_ms == 0 || buf->len - FRAME_HEADROOM >= bt->max_bytes)
        flush_one(bt, b);
    else
        dirty_add(bt, b);
    return 0;
nomem:
    buf->len = b->count ? mark : 0;
    stats->dropped_total[DROP_NOMEM]++;
    return -1;
}

void batch_flush_all(struct batcher *bt)
{
    /* Emitting never appends to a batch, so the list only shrinks here. */
    while (bt->dirty != NULL)
        flush_one(bt, bt->dirty);
    evtimer_del(bt->timer);
}

void batch_discard(struct batcher *bt, struct batch *b)
{
    dirty_remove(bt, b);
    b->count = 0;
    proto_buf_free(&b->buf);
}

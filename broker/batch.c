/* batch.c: batching and the flush timer (see batch.h). */
#include "batch.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "protocol/codec.h"
#include "stats.h"
#include "util.h"

struct batcher {
    struct event *timer;
    struct frame_builder *fb;
    batch_emit_fn emit;
    void *arg;
    long long interval_ms;
    size_t max_bytes;
    uint64_t last_flush_ms; /* when the timer last flushed */
    struct batch *dirty; /* doubly linked, so a discarded batch leaves in O(1) */
};

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct batcher *bt = arg;

    (void)fd;
    (void)what;
    bt->last_flush_ms = mono_ms();
    batch_flush_all(bt);
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

/* The first pending message arms the timer. After a quiet spell it waits a
 * whole interval; under steady load the flushes keep their own rhythm
 * (last flush + interval), so the time a flush spends writing to every
 * client, during which Redis input waits unread, does not stretch each
 * cycle: the next flush is due at once when that time was longer. */
static void arm_timer(struct batcher *bt)
{
    uint64_t now = mono_ms(), iv = (uint64_t)bt->interval_ms, due;
    struct timeval tv;

    if (bt->last_flush_ms != 0 && now - bt->last_flush_ms < 2 * iv)
        due = bt->last_flush_ms + iv;
    else
        due = now + iv;
    due = due > now ? due - now : 0;
    tv.tv_sec = (time_t)(due / 1000);
    tv.tv_usec = (suseconds_t)(due % 1000) * 1000;
    evtimer_add(bt->timer, &tv);
}

static void dirty_add(struct batcher *bt, struct batch *b)
{
    if (b->dirty)
        return;
    if (bt->dirty == NULL && bt->interval_ms > 0)
        arm_timer(bt);
    b->prev = NULL;
    b->next = bt->dirty;
    if (bt->dirty)
        bt->dirty->prev = b;
    bt->dirty = b;
    b->dirty = 1;
}

struct frame *batch_frame(struct batcher *bt, struct proto_buf *buf, uint32_t count,
                          const struct proto_pos *pos)
{
    struct frame *f;
    int r = pos != NULL && pos->offset > 0 ? proto_batch_close_pos(buf, pos)
                                           : proto_buf_append(buf, PROTO_BATCH_CLOSE, 2);

    if (r != 0) {
        proto_buf_free(buf);
        return NULL;
    }
    /* frame_build takes buf's memory and leaves it empty. */
    if ((f = frame_build(bt->fb, WSLAY_TEXT_FRAME, buf)) != NULL)
        f->msgs = count;
    return f;
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
    f = batch_frame(bt, &b->buf, count, &b->pos);
    b->pos.offset = 0;
    if (f == NULL) {
        stats->dropped_total[DROP_NOMEM] += count;
        return;
    }
    bt->emit(bt->arg, b, f, count);
    frame_unref(f);
}

void batch_flush(struct batcher *bt, struct batch *b)
{
    flush_one(bt, b);
}

size_t batcher_max_bytes(const struct batcher *bt)
{
    return bt->max_bytes;
}

int batch_append(struct batcher *bt, struct batch *b, const char *channel,
                 size_t channel_len, const char *json, size_t len, const struct proto_pos *pos)
{
    static const char room[FRAME_HEADROOM];
    struct proto_buf *buf = &b->buf;
    size_t mark;

    /* One epoch per batch: its position must name one history. */
    if (pos != NULL && pos->offset > 0 && b->count > 0 && b->pos.offset > 0 &&
        (b->pos.epoch_len != pos->epoch_len ||
         memcmp(b->pos.epoch, pos->epoch, pos->epoch_len) != 0))
        flush_one(bt, b);
    mark = buf->len;
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
    if (pos != NULL && pos->offset > 0)
        b->pos = *pos;
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

/* test_registry.c: the registry and the batcher (broker/registry.h,
 * broker/batch.h) without sockets: clients are bare struct reg_client, the
 * deliver hook records which frame reached whom (and may refuse, as a slow
 * consumer's session does), the first/last hooks record Redis traffic. */
#include <stdlib.h>

#include <event2/event.h>

#include "broker/batch.h"
#include "broker/filter.h"
#include "broker/frame.h"
#include "broker/registry.h"
#include "broker/stats.h"
#include "t.h"

#define MAXC 8

static struct reg_client cl[MAXC];
static struct frame *last[MAXC]; /* the last frame each client got (a ref) */
static int frames_to[MAXC];
static int refuse[MAXC];         /* deliver says "not queued" (slow consumer) */
static int firsts, lasts;
static char last_first[64], last_last[64];
static int acks[MAXC];
static char ack_rid[MAXC][32];

static int idx(const struct reg_client *c)
{
    return (int)(c - cl);
}

static void on_first(void *arg, const char *name, size_t len)
{
    (void)arg;
    firsts++;
    snprintf(last_first, sizeof(last_first), "%.*s", (int)len, name);
}

static void on_last(void *arg, const char *name, size_t len)
{
    (void)arg;
    lasts++;
    snprintf(last_last, sizeof(last_last), "%.*s", (int)len, name);
}

static int deliver(void *arg, struct reg_client *c, struct frame *f)
{
    int i = idx(c);

    (void)arg;
    if (refuse[i])
        return 0;
    frame_unref(last[i]);
    last[i] = frame_ref(f);
    frames_to[i]++;
    return 1;
}

static void on_ack(void *arg, struct reg_client *c, const char *name, size_t len,
                   const char *rid, size_t ridlen)
{
    (void)arg;
    (void)name;
    (void)len;
    acks[idx(c)]++;
    snprintf(ack_rid[idx(c)], sizeof(ack_rid[0]), "%.*s", (int)ridlen, rid);
}

/* The payload of a server frame (after its 2- or 4-byte header). */
static const char *payload(const struct frame *f, size_t *n)
{
    const unsigned char *p = (const unsigned char *)frame_bytes(f);
    size_t len = p[1] & 0x7f, hdr = 2;

    if (len == 126) {
        len = (size_t)p[2] << 8 | p[3];
        hdr = 4;
    }
    *n = len;
    return (const char *)p + hdr;
}

#define CHECK_PAYLOAD(f, lit)                            \
    do {                                                 \
        size_t n_;                                       \
        const char *p_ = payload((f), &n_);              \
        CHECK_MEM(p_, n_, lit);                          \
    } while (0)

static struct filter *filt(const char *json)
{
    int empty;
    const char *why;
    struct filter *f = filter_compile(json, strlen(json), &empty, &why);

    if (f == NULL)
        abort();
    return f;
}

static void reset_seen(void)
{
    int i;

    for (i = 0; i < MAXC; i++) {
        frame_unref(last[i]);
        last[i] = NULL;
        frames_to[i] = 0;
        refuse[i] = 0;
        acks[i] = 0;
        ack_rid[i][0] = '\0';
    }
}

static void pub(struct reg *r, const char *ch, const char *json)
{
    reg_publish(r, ch, strlen(ch), json, strlen(json), 1, NULL);
}

static void test_first_last_and_groups(struct reg *r)
{
    struct batcher *bt = reg_batcher(r);

    batcher_configure(bt, 0, 65536); /* each message at once */
    reset_seen();
    firsts = lasts = 0;
    CHECK(reg_subscribe(r, &cl[0], "c", 1, NULL) == REG_ADDED);
    CHECK(firsts == 1 && strcmp(last_first, "c") == 0);
    CHECK(reg_subscribe(r, &cl[1], "c", 1, NULL) == REG_ADDED);
    CHECK(reg_subscribe(r, &cl[2], "c", 1, filt("{\"x\":1,\"y\":{\"$gt\":0}}")) == REG_ADDED);
    /* The same filter with its keys in another order: the same group. */
    CHECK(reg_subscribe(r, &cl[3], "c", 1, filt("{\"y\":{\"$gt\":0},\"x\":1}")) == REG_ADDED);
    CHECK(firsts == 1 && reg_channel_count(r) == 1 && reg_subscription_count(r) == 4);
    CHECK(reg_is_subscribed(&cl[2], "c", 1) && !reg_is_subscribed(&cl[2], "d", 1));

    pub(r, "c", "{\"x\":1,\"y\":5}");
    /* Every member of a group gets the very same frame. */
    CHECK(frames_to[0] == 1 && frames_to[1] == 1 && frames_to[2] == 1 && frames_to[3] == 1);
    CHECK(last[0] == last[1] && last[2] == last[3] && last[0] != last[2]);
    CHECK_PAYLOAD(last[0], "{\"type\":\"batch\",\"channel\":\"c\",\"messages\":[{\"x\":1,\"y\":5}]}");
    CHECK_PAYLOAD(last[2], "{\"type\":\"batch\",\"channel\":\"c\",\"messages\":[{\"x\":1,\"y\":5}]}");
    pub(r, "c", "{\"x\":2}");
    CHECK(frames_to[0] == 2 && frames_to[1] == 2 && frames_to[2] == 1 && frames_to[3] == 1);
    /* A non-JSON payload (encoded as a string) reaches unfiltered groups only. */
    reg_publish(r, "c", 1, "\"raw\"", 5, 0, NULL);
    CHECK(frames_to[0] == 3 && frames_to[2] == 1);
    /* Unknown channels are ignored. */
    CHECK(reg_publish(r, "nope", 4, "1", 1, 1, NULL) == 0);

    /* Refilter: a new filter moves the subscription; the same one is no change. */
    CHECK(reg_subscribe(r, &cl[1], "c", 1, filt("{\"x\":2}")) == REG_REPLACED);
    CHECK(reg_subscribe(r, &cl[1], "c", 1, filt("{\"x\":2}")) == REG_SAME);
    CHECK(reg_subscription_count(r) == 4 && firsts == 1);
    pub(r, "c", "{\"x\":2}");
    CHECK(frames_to[0] == 4 && frames_to[1] == 4 && frames_to[2] == 1);
    CHECK(last[0] != last[1]);

    /* The last subscriber out unsubscribes in Redis, once. */
    CHECK(reg_unsubscribe(r, &cl[0], "c", 1) == 0);
    CHECK(reg_unsubscribe(r, &cl[0], "c", 1) == 1);
    CHECK(reg_unsubscribe(r, &cl[1], "c", 1) == 0);
    CHECK(reg_unsubscribe(r, &cl[2], "c", 1) == 0);
    CHECK(lasts == 0);
    reg_unsubscribe_all(r, &cl[3]);
    CHECK(lasts == 1 && strcmp(last_last, "c") == 0);
    CHECK(reg_channel_count(r) == 0 && reg_subscription_count(r) == 0);
    CHECK(cl[3].subs == NULL && cl[3].nsubs == 0);
}

static void test_batching(struct reg *r)
{
    struct batcher *bt = reg_batcher(r);

    batcher_configure(bt, 200, 65536);
    reset_seen();
    CHECK(reg_subscribe(r, &cl[0], "b", 1, NULL) == REG_ADDED);
    pub(r, "b", "1");
    pub(r, "b", "{\"k\":[1,2]}");
    pub(r, "b", "\"s\"");
    CHECK(frames_to[0] == 0); /* waits for the interval */
    batch_flush_all(bt);
    CHECK(frames_to[0] == 1);
    CHECK_PAYLOAD(last[0], "{\"type\":\"batch\",\"channel\":\"b\",\"messages\":[1,{\"k\":[1,2]},\"s\"]}");
    CHECK(last[0]->msgs == 3);
    batch_flush_all(bt); /* nothing new: no frame */
    CHECK(frames_to[0] == 1);
    /* A batch reaching batch_max_bytes goes at once. */
    batcher_configure(bt, 200, 256);
    {
        char big[300];
        memset(big, 'x', sizeof(big));
        big[0] = '"';
        big[sizeof(big) - 2] = '"';
        big[sizeof(big) - 1] = '\0';
        pub(r, "b", big);
    }
    CHECK(frames_to[0] == 2 && last[0]->msgs == 1);
    reg_unsubscribe_all(r, &cl[0]);
}

static void test_slow_consumer_counts(struct reg *r)
{
    uint64_t frames = stats->frames_sent_total, msgs = stats->messages_delivered_total;

    batcher_configure(reg_batcher(r), 0, 65536);
    reset_seen();
    CHECK(reg_subscribe(r, &cl[0], "s", 1, NULL) == REG_ADDED);
    CHECK(reg_subscribe(r, &cl[1], "s", 1, NULL) == REG_ADDED);
    CHECK(reg_subscribe(r, &cl[2], "s", 1, NULL) == REG_ADDED);
    refuse[1] = 1;
    pub(r, "s", "7");
    /* Only frames that were queued count as sent. */
    CHECK(frames_to[0] == 1 && frames_to[1] == 0 && frames_to[2] == 1);
    CHECK(stats->frames_sent_total - frames == 2);
    CHECK(stats->messages_delivered_total - msgs == 2);
    reg_unsubscribe_all(r, &cl[0]);
    reg_unsubscribe_all(r, &cl[1]);
    reg_unsubscribe_all(r, &cl[2]);
}

static void test_held_acks(struct reg *r)
{
    reset_seen();
    CHECK(reg_subscribe(r, &cl[0], "h", 1, NULL) == REG_ADDED);
    CHECK(reg_subscribe(r, &cl[1], "h", 1, NULL) == REG_ADDED);
    CHECK(reg_subscribe(r, &cl[2], "h2", 2, NULL) == REG_ADDED);
    CHECK(reg_defer_ack(r, &cl[0], "h", 1, "1", 1) == 0);
    CHECK(reg_defer_ack(r, &cl[1], "h", 1, "\"b\"", 3) == 0);
    CHECK(reg_defer_ack(r, &cl[2], "h2", 2, NULL, 0) == 0);
    CHECK(reg_defer_ack(r, &cl[2], "nope", 4, "1", 1) == -1); /* not a channel */
    CHECK(acks[0] == 0 && acks[1] == 0);
    reg_settle(r, "h", 1);
    CHECK(acks[0] == 1 && acks[1] == 1 && acks[2] == 0);
    CHECK(strcmp(ack_rid[0], "1") == 0 && strcmp(ack_rid[1], "\"b\"") == 0);
    reg_settle(r, "h", 1); /* nothing held any more */
    CHECK(acks[0] == 1);
    reg_settle_all(r);
    CHECK(acks[2] == 1 && ack_rid[2][0] == '\0');

    /* An unsubscribe sends the held ack first; a client leaving drops it. */
    CHECK(reg_defer_ack(r, &cl[0], "h", 1, "9", 1) == 0);
    CHECK(reg_defer_ack(r, &cl[1], "h", 1, "8", 1) == 0);
    CHECK(reg_unsubscribe(r, &cl[0], "h", 1) == 0);
    CHECK(acks[0] == 2 && strcmp(ack_rid[0], "9") == 0);
    reg_unsubscribe_all(r, &cl[1]);
    CHECK(acks[1] == 1);
    reg_settle_all(r);
    CHECK(acks[1] == 1);
    reg_unsubscribe_all(r, &cl[2]);
    CHECK(reg_channel_count(r) == 0);
}

int main(void)
{
    struct event_base *base = event_base_new();
    struct frame_builder *fb = frame_builder_new();
    struct reg_hooks h = {on_first, on_last, deliver, on_ack, NULL};
    struct reg *r;

    if (base == NULL || fb == NULL || (r = reg_new(base, fb, &h)) == NULL)
        return 2;
    test_first_last_and_groups(r);
    test_batching(r);
    test_slow_consumer_counts(r);
    test_held_acks(r);
    reset_seen();
    reg_free(r);
    frame_builder_free(fb);
    filter_cleanup();
    event_base_free(base);
    return t_done("registry");
}

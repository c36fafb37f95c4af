/* test_history.c: the history position codec (protocol/history.h), the
 * since/history members of a subscribe and the acks that answer them
 * (protocol/codec.h), and the merge of history with live delivery in the
 * registry (reg_subscribe_held / reg_resume, broker/registry.h). */
#include <stdlib.h>

#include <event2/event.h>

#include "broker/filter.h"
#include "broker/frame.h"
#include "broker/registry.h"
#include "broker/stats.h"
#include "protocol/codec.h"
#include "protocol/history.h"
#include "t.h"

static void test_strip(void)
{
    struct proto_pos pos;
    const char *p;
    size_t n;
    static const char good[] = "\0H42:k3x9\0{\"a\":1}";
    struct proto_buf b = {0};

    CHECK(proto_pos_strip(good, sizeof(good) - 1, &pos, &p, &n) == 1);
    CHECK(pos.offset == 42 && pos.epoch_len == 4 && strcmp(pos.epoch, "k3x9") == 0);
    CHECK_MEM(p, n, "{\"a\":1}");
    /* An empty payload after the prefix is a payload. */
    CHECK(proto_pos_strip("\0H1:a\0", 6, &pos, &p, &n) == 1 && n == 0 && pos.offset == 1);
    /* A plain payload: untouched. */
    CHECK(proto_pos_strip("{\"x\":1}", 7, &pos, &p, &n) == 0 && n == 7);
    CHECK(proto_pos_strip("", 0, &pos, &p, &n) == 0 && n == 0);
    CHECK(proto_pos_strip("\0", 1, &pos, &p, &n) == 0);
    CHECK(proto_pos_strip("\0X1:a\0z", 7, &pos, &p, &n) == 0);
    /* Malformed prefixes: refused, not taken as plain. */
    CHECK(proto_pos_strip("\0H", 2, &pos, &p, &n) == -1);
    CHECK(proto_pos_strip("\0H:a\0z", 6, &pos, &p, &n) == -1);          /* no offset */
    CHECK(proto_pos_strip("\0H0:a\0z", 7, &pos, &p, &n) == -1);         /* offset 0 */
    CHECK(proto_pos_strip("\0H01:a\0z", 8, &pos, &p, &n) == -1);        /* leading zero */
    CHECK(proto_pos_strip("\0H1x:a\0z", 8, &pos, &p, &n) == -1);
    CHECK(proto_pos_strip("\0H1:\0z", 6, &pos, &p, &n) == -1);          /* empty epoch */
    CHECK(proto_pos_strip("\0H1:A\0z", 7, &pos, &p, &n) == -1);         /* not [0-9a-z] */
    CHECK(proto_pos_strip("\0H1:a", 5, &pos, &p, &n) == -1);            /* no NUL */
    CHECK(proto_pos_strip("\0H12345678901234567890:a\0", 25, &pos, &p, &n) == -1);
    /* Redis counts in int64: 19 digits at most. */
    CHECK(proto_pos_strip("\0H9223372036854775807:a\0x", 26, &pos, &p, &n) == 1 &&
          pos.offset == 9223372036854775807ull);
    CHECK(proto_pos_strip("\0H18446744073709551615:a\0x", 27, &pos, &p, &n) == -1);
    {
        char e[40];
        memset(e, 'a', sizeof(e));
        memcpy(e, "\0H1:", 4);
        e[4 + PROTO_EPOCH_MAX + 1] = '\0';
        CHECK(proto_pos_strip(e, 4 + PROTO_EPOCH_MAX + 2, &pos, &p, &n) == -1); /* epoch too long */
        e[4 + PROTO_EPOCH_MAX] = '\0';
        CHECK(proto_pos_strip(e, 4 + PROTO_EPOCH_MAX + 1, &pos, &p, &n) == 1);
    }
    /* The prefix the library writes, written here, reads back. */
    pos.offset = 7;
    pos.epoch_len = 3;
    memcpy(pos.epoch, "abc", 4);
    CHECK(proto_pos_prefix(&b, &pos) == 0);
    CHECK(proto_buf_append(&b, "x", 1) == 0);
    {
        struct proto_pos back;
        CHECK(proto_pos_strip(b.data, b.len, &back, &p, &n) == 1 && back.offset == 7 &&
              strcmp(back.epoch, "abc") == 0 && n == 1 && *p == 'x');
    }
    proto_buf_reset(&b);
    CHECK(proto_batch_close_pos(&b, &pos) == 0);
    CHECK_MEM(b.data, b.len, "],\"offset\":7,\"epoch\":\"abc\"}");
    proto_buf_free(&b);
}

static enum proto_error decode(const char *msg, struct proto_request *req, struct proto_buf *ch,
                               const char **why)
{
    req->channel = ch;
    return proto_request_decode(msg, strlen(msg), req, why);
}

static void test_requests_and_acks(void)
{
    struct proto_request req;
    struct proto_buf ch = {0}, out = {0};
    struct proto_pos pos = {42, 4, "k3x9"};
    struct proto_ack_info info = {&pos, 1};
    const char *why;
    struct proto_json_span rid = {"7", 1};

    CHECK(decode("{\"action\":\"subscribe\",\"channel\":\"c\",\"since\":{\"offset\":42,"
                 "\"epoch\":\"k3x9\"}}", &req, &ch, &why) == PROTO_OK);
    CHECK(req.has_since && req.since.offset == 42 && strcmp(req.since.epoch, "k3x9") == 0);
    CHECK(req.history == 0);
    CHECK(decode("{\"action\":\"subscribe\",\"channel\":\"c\",\"history\":10}", &req, &ch, &why) ==
          PROTO_OK && req.history == 10 && !req.has_since);
    CHECK(decode("{\"action\":\"subscribe\",\"channel\":\"c\",\"history\":0,\"since\":null}", &req,
                 &ch, &why) == PROTO_OK && req.history == 0 && !req.has_since);
    /* An epoch we never issue: kept as one that matches nothing. */
    CHECK(decode("{\"action\":\"subscribe\",\"channel\":\"c\",\"since\":{\"offset\":0,"
                 "\"epoch\":\"NOT ours\"}}", &req, &ch, &why) == PROTO_OK &&
          req.has_since && req.since.offset == 0 && strcmp(req.since.epoch, "-") == 0);
    {
        static const char *const bad[] = {
            "{\"action\":\"subscribe\",\"channel\":\"c\",\"history\":1,\"since\":{\"offset\":1,\"epoch\":\"a\"}}",
            "{\"action\":\"subscribe\",\"channel\":\"c\",\"since\":{\"offset\":1}}",
            "{\"action\":\"subscribe\",\"channel\":\"c\",\"since\":{\"epoch\":\"a\"}}",
            "{\"action\":\"subscribe\",\"channel\":\"c\",\"since\":{\"offset\":-1,\"epoch\":\"a\"}}",
            "{\"action\":\"subscribe\",\"channel\":\"c\",\"since\":{\"offset\":1.5,\"epoch\":\"a\"}}",
            "{\"action\":\"subscribe\",\"channel\":\"c\",\"since\":{\"offset\":1,\"epoch\":5}}",
            "{\"action\":\"subscribe\",\"channel\":\"c\",\"since\":[1,\"a\"]}",
            "{\"action\":\"subscribe\",\"channel\":\"c\",\"since\":{\"offset\":123456789012345678901,\"epoch\":\"a\"}}",
            "{\"action\":\"subscribe\",\"channel\":\"c\",\"history\":-1}",
            "{\"action\":\"subscribe\",\"channel\":\"c\",\"history\":1e3}",
            "{\"action\":\"subscribe\",\"channel\":\"c\",\"history\":\"5\"}",
            "{\"action\":\"subscribe\",\"channel\":\"c\",\"history\":1000001}",
            "{\"action\":\"subscribe\",\"channel\":\"c\",\"history\":007}",
        };
        size_t i;
        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            int r = decode(bad[i], &req, &ch, &why) == PROTO_ERR_BAD_REQUEST;
            if (!r)
                fprintf(stderr, "accepted: %s\n", bad[i]);
            CHECK(r);
        }
    }
    /* An unsubscribe ignores them. */
    CHECK(decode("{\"action\":\"unsubscribe\",\"channel\":\"c\",\"history\":\"x\"}", &req, &ch,
                 &why) == PROTO_OK);
    CHECK(proto_ack_encode_info(&out, PROTO_ACTION_SUBSCRIBE, "c", 1, rid, &info) == 0);
    CHECK_MEM(out.data, out.len,
              "{\"type\":\"ack\",\"action\":\"subscribe\",\"channel\":\"c\",\"rid\":7,"
              "\"recovered\":true,\"offset\":42,\"epoch\":\"k3x9\"}");
    proto_buf_reset(&out);
    info.recovered = -1;
    info.pos = NULL;
    CHECK(proto_ack_encode_info(&out, PROTO_ACTION_SUBSCRIBE, "c", 1, rid, &info) == 0);
    CHECK_MEM(out.data, out.len, "{\"type\":\"ack\",\"action\":\"subscribe\",\"channel\":\"c\",\"rid\":7}");
    proto_buf_reset(&out);
    info.recovered = 0;
    CHECK(proto_ack_encode_info(&out, PROTO_ACTION_SUBSCRIBE, "c", 1, (struct proto_json_span){0, 0},
                                &info) == 0);
    CHECK_MEM(out.data, out.len,
              "{\"type\":\"ack\",\"action\":\"subscribe\",\"channel\":\"c\",\"recovered\":false}");
    proto_buf_free(&out);
    proto_buf_free(&ch);
}

/* The registry's merge of history and live. */

static struct reg_client cl[4];
static struct proto_buf got[4]; /* the payloads each client got, joined */

static int deliver(void *arg, struct reg_client *c, struct frame *f)
{
    const unsigned char *p = (const unsigned char *)frame_bytes(f);
    size_t len = p[1] & 0x7f, hdr = 2;

    (void)arg;
    if (len == 126) {
        len = (size_t)p[2] << 8 | p[3];
        hdr = 4;
    }
    proto_buf_append(&got[c - cl], (const char *)p + hdr, len);
    proto_buf_append_byte(&got[c - cl], '\n');
    return 1;
}

static void nop(void *arg, const char *name, size_t len)
{
    (void)arg, (void)name, (void)len;
}

static struct proto_pos at(uint64_t off)
{
    struct proto_pos p = {off, 1, "e"};

    return p;
}

static void live(struct reg *r, uint64_t off)
{
    char json[32];
    struct proto_pos p = at(off);

    snprintf(json, sizeof(json), "%llu", (unsigned long long)off);
    reg_publish(r, "c", 1, json, strlen(json), 1, off ? &p : NULL);
}

static void test_merge(void)
{
    struct event_base *base = event_base_new();
    struct frame_builder *fb = frame_builder_new();
    struct reg_hooks h = {nop, nop, deliver, NULL, NULL};
    struct reg *r = reg_new(base, fb, &h);
    struct reg_entry e[5];
    struct proto_pos epos = at(10);
    char texts[5][8];
    int i;

    if (r == NULL)
        abort();
    batcher_configure(reg_batcher(r), 0, 65536);
    /* Client 0 follows live all along; client 1 resumes after 5. */
    CHECK(reg_subscribe(r, &cl[0], "c", 1, NULL) == REG_ADDED);
    CHECK(reg_subscribe_held(r, &cl[1], "c", 1, NULL) == REG_ADDED);
    /* Live 9 and 10 arrive while client 1's read is in flight (the read
     * will see up to 8 only). */
    live(r, 9);
    live(r, 10);
    CHECK(got[1].len == 0); /* held: nothing live */
    for (i = 0; i < 5; i++) {
        snprintf(texts[i], sizeof(texts[i]), "%d", 4 + i);
        e[i].offset = (uint64_t)(4 + i);
        e[i].json = texts[i];
        e[i].len = strlen(texts[i]);
        e[i].is_json = 1;
    }
    /* History 4-8 (from a read that saw up to 8), after 5: 6 7 8, then the
     * live 9 10 kept meanwhile. */
    CHECK(reg_resume(r, &cl[1], "c", 1, e, 5, 5, 8, &epos) == 5);
    CHECK_MEM(got[1].data, got[1].len,
              "{\"type\":\"batch\",\"channel\":\"c\",\"messages\":[6,7,8,9,10],\"offset\":10,"
              "\"epoch\":\"e\"}\n");
    /* A late live copy of 10 (a push that came after the read) is not sent
     * twice; 11 comes through the group. */
    proto_buf_reset(&got[1]);
    live(r, 10);
    CHECK(got[1].len == 0);
    live(r, 11);
    CHECK_MEM(got[1].data, got[1].len,
              "{\"type\":\"batch\",\"channel\":\"c\",\"messages\":[11],\"offset\":11,"
              "\"epoch\":\"e\"}\n");
    /* Client 0 saw every live message. */
    CHECK(strstr(got[0].data, "[9]") && strstr(got[0].data, "[10]") && strstr(got[0].data, "[11]"));

    /* A read that saw further than live: 12 13 in history, live 12 arrives
     * later (it is skipped for client 2), 14 joins it. */
    CHECK(reg_subscribe_held(r, &cl[2], "c", 1, NULL) == REG_ADDED);
    e[0].offset = 12;
    e[0].json = "12";
    e[0].len = 2;
    e[1].offset = 13;
    e[1].json = "13";
    e[1].len = 2;
    CHECK(reg_resume(r, &cl[2], "c", 1, e, 2, 11, 13, &epos) == 2);
    live(r, 12);
    live(r, 13);
    live(r, 14);
    CHECK_MEM(got[2].data, got[2].len,
              "{\"type\":\"batch\",\"channel\":\"c\",\"messages\":[12,13],\"offset\":13,"
              "\"epoch\":\"e\"}\n"
              "{\"type\":\"batch\",\"channel\":\"c\",\"messages\":[14],\"offset\":14,"
              "\"epoch\":\"e\"}\n");
    /* A plain publish is never in history: it joins at once. */
    CHECK(reg_subscribe_held(r, &cl[3], "c", 1, NULL) == REG_ADDED);
    CHECK(reg_resume(r, &cl[3], "c", 1, NULL, 0, 14, 14, &epos) == 0);
    live(r, 0);
    CHECK_MEM(got[3].data, got[3].len, "{\"type\":\"batch\",\"channel\":\"c\",\"messages\":[0]}\n");
    /* The channel's position is what live delivery saw. */
    {
        struct proto_pos p;
        CHECK(reg_channel_pos(r, "c", 1, &p) == REG_HIST_YES && p.offset == 14);
    }
    /* Leaving while held frees everything (the test runs under ASan). */
    CHECK(reg_subscribe_held(r, &cl[3], "d", 1, NULL) == REG_ADDED);
    reg_unsubscribe_all(r, &cl[3]);
    for (i = 0; i < 4; i++) {
        reg_unsubscribe_all(r, &cl[i]);
        proto_buf_free(&got[i]);
    }
    CHECK(reg_channel_count(r) == 0);
    reg_free(r);
    frame_builder_free(fb);
    filter_cleanup();
    event_base_free(base);
}

int main(void)
{
    test_strip();
    test_requests_and_acks();
    test_merge();
    return t_done("history");
}

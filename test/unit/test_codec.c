/* test_codec.c: control message decoding, the ack/error/batch encoders and
 * channel name rules (protocol/codec.h). */
#include <stdlib.h>

#include "protocol/codec.h"
#include "t.h"

static struct proto_buf chan;
static struct proto_request req;
static const char *why;
static char *msg_copy;

/* Decodes an exact-size heap copy of s (so that ASan sees overreads); the
 * copy lives until the next call, because req's spans point into it. */
static enum proto_error dec_n(const char *s, size_t n)
{
    free(msg_copy);
    msg_copy = malloc(n ? n : 1);
    if (msg_copy == NULL)
        abort();
    memcpy(msg_copy, s, n);
    req.channel = &chan;
    why = "unset";
    return proto_request_decode(msg_copy, n, &req, &why);
}

#define DEC(lit) dec_n(lit, sizeof(lit) - 1)

static enum proto_error dec_str(const char *s)
{
    return dec_n(s, strlen(s));
}

static void test_decode_ok(void)
{
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"news\"}") == PROTO_OK);
    CHECK(req.action == PROTO_ACTION_SUBSCRIBE);
    CHECK_MEM(chan.data, chan.len, "news");
    CHECK(req.rid.n == 0);
    CHECK(req.filter.n == 0);
    CHECK(why == NULL);

    CHECK(DEC("{\"action\":\"unsubscribe\",\"channel\":\"news\"}") == PROTO_OK);
    CHECK(req.action == PROTO_ACTION_UNSUBSCRIBE);
    CHECK_MEM(chan.data, chan.len, "news");

    CHECK(DEC(" \n{ \"channel\" : \"a.b:c\" , \"action\" : \"subscribe\" }\r\n ") ==
          PROTO_OK);
    CHECK(req.action == PROTO_ACTION_SUBSCRIBE);
    CHECK_MEM(chan.data, chan.len, "a.b:c");

    /* unknown members are ignored */
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"x\",\"extra\":[1,{\"y\":2}]}") ==
          PROTO_OK);
    CHECK_MEM(chan.data, chan.len, "x");

    /* later duplicates win */
    CHECK(DEC("{\"action\":\"unsubscribe\",\"action\":\"subscribe\",\"channel\":\"a\","
              "\"channel\":\"b\"}") == PROTO_OK);
    CHECK(req.action == PROTO_ACTION_SUBSCRIBE);
    CHECK_MEM(chan.data, chan.len, "b");

    /* escaped keys and values */
    CHECK(DEC("{\"\\u0061ction\":\"sub\\u0073cribe\",\"ch\\u0061nnel\":\"x\"}") == PROTO_OK);
    CHECK(req.action == PROTO_ACTION_SUBSCRIBE);
    CHECK_MEM(chan.data, chan.len, "x");
}

static void test_decode_identifier(void)
{
    CHECK(DEC("{\"action\":\"subscribe\",\"identifier\":\"room:1\"}") == PROTO_OK);
    CHECK_MEM(chan.data, chan.len, "room:1");
    CHECK(DEC("{\"action\":\"unsubscribe\",\"identifier\":\"room:1\"}") == PROTO_OK);
    CHECK(req.action == PROTO_ACTION_UNSUBSCRIBE);
    CHECK_MEM(chan.data, chan.len, "room:1");
    /* channel wins over identifier, whatever the order */
    CHECK(DEC("{\"action\":\"subscribe\",\"identifier\":\"i\",\"channel\":\"c\"}") ==
          PROTO_OK);
    CHECK_MEM(chan.data, chan.len, "c");
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"c\",\"identifier\":\"i\"}") ==
          PROTO_OK);
    CHECK_MEM(chan.data, chan.len, "c");
    /* a bad identifier is an error too */
    CHECK(DEC("{\"action\":\"subscribe\",\"identifier\":5}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":\"subscribe\",\"identifier\":\"\"}") == PROTO_ERR_BAD_REQUEST);
}

static void test_decode_rid(void)
{
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"c\",\"rid\":\"r-1\"}") == PROTO_OK);
    CHECK_MEM(req.rid.p, req.rid.n, "\"r-1\"");
    CHECK(DEC("{\"rid\":42,\"action\":\"subscribe\",\"channel\":\"c\"}") == PROTO_OK);
    CHECK_MEM(req.rid.p, req.rid.n, "42");
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"c\",\"rid\":-1.5e3}") == PROTO_OK);
    CHECK_MEM(req.rid.p, req.rid.n, "-1.5e3");
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"c\",\"rid\": {\"a\": [1, \"}\"]} }") ==
          PROTO_OK);
    CHECK_MEM(req.rid.p, req.rid.n, "{\"a\": [1, \"}\"]}");
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"c\",\"rid\":[1,2,[3]]}") == PROTO_OK);
    CHECK_MEM(req.rid.p, req.rid.n, "[1,2,[3]]");
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"c\",\"rid\":null}") == PROTO_OK);
    CHECK_MEM(req.rid.p, req.rid.n, "null");
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"c\",\"rid\":true}") == PROTO_OK);
    CHECK_MEM(req.rid.p, req.rid.n, "true");
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"c\",\"rid\":\"\\u00e9\\\"\"}") ==
          PROTO_OK);
    CHECK_MEM(req.rid.p, req.rid.n, "\"\\u00e9\\\"\"");
    /* the rid is filled on errors once the message is a valid object */
    CHECK(DEC("{\"action\":\"bogus\",\"rid\":7}") == PROTO_ERR_BAD_REQUEST);
    CHECK_MEM(req.rid.p, req.rid.n, "7");
    CHECK(DEC("{\"rid\":\"x\",\"action\":\"subscribe\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK_MEM(req.rid.p, req.rid.n, "\"x\"");
    CHECK(DEC("{\"rid\":8,\"action\":\"subscribe\",\"channel\":\"\"}") ==
          PROTO_ERR_BAD_REQUEST);
    CHECK_MEM(req.rid.p, req.rid.n, "8");
    /* but never from invalid JSON */
    CHECK(DEC("{\"rid\":9,\"action\":\"subscribe\",\"channel\":\"c\"") ==
          PROTO_ERR_BAD_REQUEST);
    CHECK(req.rid.n == 0);
    CHECK(DEC("{\"rid\":9,\"action\":\"subscribe\",\"channel\":\"c\"} x") ==
          PROTO_ERR_BAD_REQUEST);
    CHECK(req.rid.n == 0);
    CHECK(DEC("{\"rid\":9,\"action\":\"subscribe\",\"channel\":\"c\",}") ==
          PROTO_ERR_BAD_REQUEST);
    CHECK(req.rid.n == 0);
    CHECK(req.action == PROTO_ACTION_NONE);
}

static void test_decode_filter(void)
{
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"c\",\"filter\":{\"field\":\"x\","
              "\"eq\":[1,\"a\"]}}") == PROTO_OK);
    CHECK_MEM(req.filter.p, req.filter.n, "{\"field\":\"x\",\"eq\":[1,\"a\"]}");
    CHECK(req.rid.n == 0);
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"c\",\"filter\":null,\"rid\":1}") ==
          PROTO_OK);
    CHECK_MEM(req.filter.p, req.filter.n, "null");
    /* the previous call's spans are cleared */
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"c\"}") == PROTO_OK);
    CHECK(req.filter.n == 0);
    CHECK(req.rid.n == 0);
}

static void test_decode_errors(void)
{
    /* invalid JSON */
    CHECK(DEC("") == PROTO_ERR_BAD_REQUEST);
    CHECK(why != NULL);
    CHECK(DEC("{") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("subscribe news") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"\xFF\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"a\x01\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":\"subscribe\"}{\"x\":1}") == PROTO_ERR_BAD_REQUEST);
    /* not an object */
    CHECK(DEC("[{\"action\":\"subscribe\",\"channel\":\"c\"}]") == PROTO_ERR_BAD_REQUEST);
    CHECK(why != NULL);
    CHECK(DEC("\"subscribe\"") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("null") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("42") == PROTO_ERR_BAD_REQUEST);
    CHECK(req.rid.n == 0);
    /* action */
    CHECK(DEC("{}") == PROTO_ERR_BAD_REQUEST);
    CHECK(why != NULL && strstr(why, "action") != NULL);
    CHECK(DEC("{\"channel\":\"c\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(why != NULL && strstr(why, "action") != NULL);
    CHECK(DEC("{\"action\":\"publish\",\"channel\":\"c\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(why != NULL && strstr(why, "action") != NULL);
    CHECK(req.action == PROTO_ACTION_NONE);
    CHECK(DEC("{\"action\":\"Subscribe\",\"channel\":\"c\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":\"subscribe \",\"channel\":\"c\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":\"\",\"channel\":\"c\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":1,\"channel\":\"c\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":null,\"channel\":\"c\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":true,\"channel\":\"c\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":[\"subscribe\"],\"channel\":\"c\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":{\"subscribe\":1},\"channel\":\"c\"}") == PROTO_ERR_BAD_REQUEST);
    /* channel */
    CHECK(DEC("{\"action\":\"subscribe\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(why != NULL && strstr(why, "channel") != NULL);
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":5}") == PROTO_ERR_BAD_REQUEST);
    CHECK(why != NULL && strstr(why, "channel") != NULL);
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":null}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":[\"c\"]}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":{\"c\":1}}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":false}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(why != NULL && strstr(why, "channel") != NULL);
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"a\\u0001b\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"\\u0000\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"a\\nb\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"a\\tb\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"\\u007f\"}") == PROTO_ERR_BAD_REQUEST);
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"a\x7F\"}") == PROTO_ERR_BAD_REQUEST);
}

static void test_decode_channel_names(void)
{
    char msg[2048], name[1024];
    size_t i;

    /* escapes are decoded */
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"ch\\u0061n\\/x\\\\y\\\"z\"}") ==
          PROTO_OK);
    CHECK_MEM(chan.data, chan.len, "chan/x\\y\"z");
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"\\ud83d\\ude00 \xC3\xA9\"}") ==
          PROTO_OK);
    CHECK_MEM(chan.data, chan.len, "\xF0\x9F\x98\x80 \xC3\xA9");
    /* a lone surrogate escape becomes U+FFFD, which is a valid name */
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"\\ud800\"}") == PROTO_OK);
    CHECK_MEM(chan.data, chan.len, "\xEF\xBF\xBD");

    /* length: PROTO_CHANNEL_MAX bytes pass, one more fails */
    memset(name, 'a', PROTO_CHANNEL_MAX);
    name[PROTO_CHANNEL_MAX] = '\0';
    snprintf(msg, sizeof(msg), "{\"action\":\"subscribe\",\"channel\":\"%s\"}", name);
    CHECK(dec_str(msg) == PROTO_OK);
    CHECK(chan.len == PROTO_CHANNEL_MAX);
    name[PROTO_CHANNEL_MAX] = 'a';
    name[PROTO_CHANNEL_MAX + 1] = '\0';
    snprintf(msg, sizeof(msg), "{\"action\":\"subscribe\",\"channel\":\"%s\"}", name);
    CHECK(dec_str(msg) == PROTO_ERR_BAD_REQUEST);
    /* the limit is on decoded bytes: 128 two-byte characters fit, 129 not */
    name[0] = '\0';
    for (i = 0; i < PROTO_CHANNEL_MAX / 2; i++)
        strcat(name, "\\u00e9");
    snprintf(msg, sizeof(msg), "{\"action\":\"subscribe\",\"channel\":\"%s\"}", name);
    CHECK(dec_str(msg) == PROTO_OK);
    CHECK(chan.len == PROTO_CHANNEL_MAX);
    strcat(name, "\\u00e9");
    snprintf(msg, sizeof(msg), "{\"action\":\"subscribe\",\"channel\":\"%s\"}", name);
    CHECK(dec_str(msg) == PROTO_ERR_BAD_REQUEST);

    /* the caller's buffer is reset, not appended to */
    proto_buf_reset(&chan);
    proto_buf_append_str(&chan, "stale");
    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"new\"}") == PROTO_OK);
    CHECK_MEM(chan.data, chan.len, "new");
}

static void test_channel_valid(void)
{
    char big[PROTO_CHANNEL_MAX + 2];

    CHECK(proto_channel_valid("", 0) == 0);
    CHECK(proto_channel_valid("a", 1) == 1);
    CHECK(proto_channel_valid("news.sports:1/2-x_y", 19) == 1);
    CHECK(proto_channel_valid("a b", 3) == 1);
    CHECK(proto_channel_valid("*", 1) == 1);
    CHECK(proto_channel_valid("\xC3\xA9\xF0\x9F\x98\x80", 6) == 1);
    CHECK(proto_channel_valid("\0", 1) == 0);
    CHECK(proto_channel_valid("a\x01", 2) == 0);
    CHECK(proto_channel_valid("\x1F", 1) == 0);
    CHECK(proto_channel_valid("a\tb", 3) == 0);
    CHECK(proto_channel_valid("a\nb", 3) == 0);
    CHECK(proto_channel_valid("\x7F", 1) == 0);
    CHECK(proto_channel_valid(" ", 1) == 1);
    CHECK(proto_channel_valid("\xFF", 1) == 0);
    CHECK(proto_channel_valid("\xC3", 1) == 0);
    CHECK(proto_channel_valid("\xED\xA0\x80", 3) == 0);
    CHECK(proto_channel_valid("\xC0\x80", 2) == 0);
    CHECK(proto_channel_valid("ab\x01", 2) == 1); /* n bounds the name */
    memset(big, 'x', sizeof(big));
    CHECK(proto_channel_valid(big, PROTO_CHANNEL_MAX) == 1);
    CHECK(proto_channel_valid(big, PROTO_CHANNEL_MAX + 1) == 0);
    CHECK(proto_channel_valid(big, PROTO_CHANNEL_MAX + 2) == 0);
}

static struct proto_json_span sp(const char *s)
{
    struct proto_json_span r = {s, s ? strlen(s) : 0};
    return r;
}

#define CHECK_OUT(b, want)                                                     \
    do {                                                                       \
        CHECK_MEM((b).data, (b).len, want);                                    \
        CHECK(proto_json_validate((b).data, (b).len) == 1);                    \
        proto_buf_reset(&(b));                                                 \
    } while (0)

static void test_ack_encode(void)
{
    struct proto_buf b = {0};
    struct proto_json_span none = {NULL, 0};

    CHECK(proto_ack_encode(&b, PROTO_ACTION_SUBSCRIBE, "news", 4, none) == 0);
    CHECK_OUT(b, "{\"type\":\"ack\",\"action\":\"subscribe\",\"channel\":\"news\"}");
    CHECK(proto_ack_encode(&b, PROTO_ACTION_UNSUBSCRIBE, "news", 4, none) == 0);
    CHECK_OUT(b, "{\"type\":\"ack\",\"action\":\"unsubscribe\",\"channel\":\"news\"}");
    CHECK(proto_ack_encode(&b, PROTO_ACTION_SUBSCRIBE, "news", 4, sp("7")) == 0);
    CHECK_OUT(b, "{\"type\":\"ack\",\"action\":\"subscribe\",\"channel\":\"news\",\"rid\":7}");
    CHECK(proto_ack_encode(&b, PROTO_ACTION_SUBSCRIBE, "c", 1, sp("\"r\\u00e9\"")) == 0);
    CHECK_OUT(b, "{\"type\":\"ack\",\"action\":\"subscribe\",\"channel\":\"c\","
                 "\"rid\":\"r\\u00e9\"}");
    CHECK(proto_ack_encode(&b, PROTO_ACTION_SUBSCRIBE, "c", 1, sp("{\"a\":[1,null]}")) == 0);
    CHECK_OUT(b, "{\"type\":\"ack\",\"action\":\"subscribe\",\"channel\":\"c\","
                 "\"rid\":{\"a\":[1,null]}}");
    CHECK(proto_ack_encode(&b, PROTO_ACTION_SUBSCRIBE, "c", 1, sp("null")) == 0);
    CHECK_OUT(b, "{\"type\":\"ack\",\"action\":\"subscribe\",\"channel\":\"c\",\"rid\":null}");
    /* a channel needing escapes */
    CHECK(proto_ack_encode(&b, PROTO_ACTION_SUBSCRIBE, "a\"b\\c\x01/\xC3\xA9", 9, none) == 0);
    CHECK_OUT(b, "{\"type\":\"ack\",\"action\":\"subscribe\",\"channel\":"
                 "\"a\\\"b\\\\c\\u0001/\xC3\xA9\"}");
    /* invalid UTF-8 is repaired rather than sent */
    CHECK(proto_ack_encode(&b, PROTO_ACTION_SUBSCRIBE, "x\xFF", 2, none) == 0);
    CHECK_OUT(b, "{\"type\":\"ack\",\"action\":\"subscribe\",\"channel\":\"x\xEF\xBF\xBD\"}");
    /* channel_len bounds the name */
    CHECK(proto_ack_encode(&b, PROTO_ACTION_SUBSCRIBE, "abcdef", 3, none) == 0);
    CHECK_OUT(b, "{\"type\":\"ack\",\"action\":\"subscribe\",\"channel\":\"abc\"}");
    /* encoders append */
    proto_buf_append_str(&b, "[");
    CHECK(proto_ack_encode(&b, PROTO_ACTION_SUBSCRIBE, "a", 1, none) == 0);
    proto_buf_append_str(&b, ",");
    CHECK(proto_ack_encode(&b, PROTO_ACTION_UNSUBSCRIBE, "b", 1, sp("2")) == 0);
    proto_buf_append_str(&b, "]");
    CHECK_OUT(b, "[{\"type\":\"ack\",\"action\":\"subscribe\",\"channel\":\"a\"},"
                 "{\"type\":\"ack\",\"action\":\"unsubscribe\",\"channel\":\"b\",\"rid\":2}]");
    proto_buf_free(&b);
}

static void test_error_encode(void)
{
    struct proto_buf b = {0};
    struct proto_json_span none = {NULL, 0};

    CHECK(proto_error_encode(&b, PROTO_ERR_BAD_REQUEST, "missing action", none) == 0);
    CHECK_OUT(b, "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"missing action\"}");
    CHECK(proto_error_encode(&b, PROTO_ERR_BAD_REQUEST, "missing action", sp("\"x\"")) == 0);
    CHECK_OUT(b, "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"missing action\","
                 "\"rid\":\"x\"}");
    CHECK(proto_error_encode(&b, PROTO_ERR_BAD_FILTER, "bad", sp("[1]")) == 0);
    CHECK_OUT(b, "{\"type\":\"error\",\"code\":\"bad_filter\",\"message\":\"bad\",\"rid\":[1]}");
    CHECK(proto_error_encode(&b, PROTO_ERR_FORBIDDEN, "no", none) == 0);
    CHECK_OUT(b, "{\"type\":\"error\",\"code\":\"forbidden\",\"message\":\"no\"}");
    CHECK(proto_error_encode(&b, PROTO_ERR_LIMIT, "too many \"subs\"\n", none) == 0);
    CHECK_OUT(b, "{\"type\":\"error\",\"code\":\"limit\",\"message\":\"too many "
                 "\\\"subs\\\"\\n\"}");
    CHECK(proto_error_encode(&b, PROTO_ERR_BAD_REQUEST, "", none) == 0);
    CHECK_OUT(b, "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"\"}");
    proto_buf_free(&b);

    CHECK(strcmp(proto_error_name(PROTO_ERR_BAD_REQUEST), "bad_request") == 0);
    CHECK(strcmp(proto_error_name(PROTO_ERR_BAD_FILTER), "bad_filter") == 0);
    CHECK(strcmp(proto_error_name(PROTO_ERR_FORBIDDEN), "forbidden") == 0);
    CHECK(strcmp(proto_error_name(PROTO_ERR_LIMIT), "limit") == 0);
    CHECK(strcmp(proto_action_name(PROTO_ACTION_SUBSCRIBE), "subscribe") == 0);
    CHECK(strcmp(proto_action_name(PROTO_ACTION_UNSUBSCRIBE), "unsubscribe") == 0);
}

static void test_batch(void)
{
    struct proto_buf b = {0};

    CHECK(proto_batch_open(&b, "news", 4) == 0);
    CHECK_MEM(b.data, b.len, "{\"type\":\"batch\",\"channel\":\"news\",\"messages\":[");
    CHECK(proto_json_validate(b.data, b.len) == 0); /* open alone is not JSON */
    CHECK(proto_buf_append_str(&b, PROTO_BATCH_CLOSE) == 0);
    CHECK_OUT(b, "{\"type\":\"batch\",\"channel\":\"news\",\"messages\":[]}");

    CHECK(proto_batch_open(&b, "a\"b\n", 4) == 0);
    CHECK(proto_buf_append_str(&b, "{\"n\":1}") == 0);
    CHECK(proto_buf_append_str(&b, PROTO_BATCH_SEP) == 0);
    CHECK(proto_buf_append_str(&b, "\"two\"") == 0);
    CHECK(proto_buf_append_str(&b, PROTO_BATCH_SEP) == 0);
    CHECK(proto_json_encode_string(&b, "not json \xFF", 10) == 0);
    CHECK(proto_buf_append_str(&b, PROTO_BATCH_CLOSE) == 0);
    CHECK_OUT(b, "{\"type\":\"batch\",\"channel\":\"a\\\"b\\n\",\"messages\":"
                 "[{\"n\":1},\"two\",\"not json \xEF\xBF\xBD\"]}");
    proto_buf_free(&b);
}

static int ends_with(const struct proto_buf *b, const char *tail)
{
    size_t n = strlen(tail);

    return b->len >= n && memcmp(b->data + b->len - n, tail, n) == 0;
}

/* A decoded request's rid and channel, echoed through the ack encoder,
 * give valid JSON with the rid byte for byte. */
static void test_roundtrip(void)
{
    struct proto_buf b = {0};

    CHECK(DEC("{\"action\":\"subscribe\",\"channel\":\"q\\\"\\u00e9\","
              "\"rid\":{\"k\":[1,\"x\"]}}") == PROTO_OK);
    CHECK(proto_ack_encode(&b, req.action, chan.data, chan.len, req.rid) == 0);
    CHECK_OUT(b, "{\"type\":\"ack\",\"action\":\"subscribe\",\"channel\":\"q\\\"\xC3\xA9\","
                 "\"rid\":{\"k\":[1,\"x\"]}}");
    CHECK(DEC("{\"action\":\"nope\",\"rid\":[true]}") == PROTO_ERR_BAD_REQUEST);
    CHECK(proto_error_encode(&b, PROTO_ERR_BAD_REQUEST, why, req.rid) == 0);
    CHECK(proto_json_validate(b.data, b.len) == 1);
    CHECK(ends_with(&b, ",\"rid\":[true]}"));
    proto_buf_free(&b);
}

int main(void)
{
    test_decode_ok();
    test_decode_identifier();
    test_decode_rid();
    test_decode_filter();
    test_decode_errors();
    test_decode_channel_names();
    test_channel_valid();
    test_ack_encode();
    test_error_encode();
    test_batch();
    test_roundtrip();
    free(msg_copy);
    proto_buf_free(&chan);
    return t_done("codec");
}

/* test_httpreq.c: the HTTP request head parser, header and query helpers, and
 * the WebSocket handshake key functions (protocol/httpreq.h). */
#include <stdlib.h>

#include "protocol/httpreq.h"
#include "t.h"

static struct proto_http_req req;
static char *copy;

/* Parses an exact-size heap copy, so that ASan sees reads past len; the copy
 * lives until the next call, because req's spans point into it. */
static enum proto_http_status parse_n(const char *s, size_t n)
{
    free(copy);
    copy = malloc(n ? n : 1);
    if (copy == NULL)
        abort();
    memcpy(copy, s, n);
    memset(&req, 0, sizeof(req));
    return proto_http_parse(copy, n, &req);
}

#define PARSE(lit) parse_n(lit, sizeof(lit) - 1)

static struct proto_json_span sp(const char *s)
{
    struct proto_json_span r = {s, strlen(s)};
    return r;
}

static const char upgrade[] =
    "GET /ws?channels=a,b&token=x%20y HTTP/1.1\r\n"
    "Host: example.com:8080\r\n"
    "Upgrade: websocket\r\n"
    "Connection: keep-alive, Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Origin: http://example.com\r\n"
    "X-Empty:\r\n"
    "X-Spaces: \t padded value \t \r\n"
    "\r\n";

static void test_upgrade_request(void)
{
    const char *buf = upgrade;
    size_t n = sizeof(upgrade) - 1;
    struct proto_json_span v;

    /* parsed in place: spans point into buf */
    memset(&req, 0, sizeof(req));
    CHECK(proto_http_parse(buf, n, &req) == PROTO_HTTP_DONE);
    CHECK(req.head_len == n);
    CHECK_MEM(req.method.p, req.method.n, "GET");
    CHECK_MEM(req.target.p, req.target.n, "/ws?channels=a,b&token=x%20y");
    CHECK_MEM(req.path.p, req.path.n, "/ws");
    CHECK_MEM(req.query.p, req.query.n, "channels=a,b&token=x%20y");
    CHECK(req.minor == 1);
    CHECK(req.nheaders == 8);
    CHECK_MEM(req.headers[0].name.p, req.headers[0].name.n, "Host");
    CHECK_MEM(req.headers[0].value.p, req.headers[0].value.n, "example.com:8080");
    CHECK_MEM(req.headers[4].name.p, req.headers[4].name.n, "Sec-WebSocket-Version");
    CHECK_MEM(req.headers[4].value.p, req.headers[4].value.n, "13");
    CHECK(req.headers[0].name.p >= buf && req.headers[0].name.p < buf + n);

    v = proto_http_header(&req, "upgrade");
    CHECK_MEM(v.p, v.n, "websocket");
    v = proto_http_header(&req, "SEC-WEBSOCKET-KEY");
    CHECK_MEM(v.p, v.n, "dGhlIHNhbXBsZSBub25jZQ==");
    v = proto_http_header(&req, "Connection");
    CHECK_MEM(v.p, v.n, "keep-alive, Upgrade");
    CHECK(proto_http_has_token(v, "upgrade") == 1);
    CHECK(proto_http_has_token(v, "keep-alive") == 1);
    CHECK(proto_http_has_token(v, "close") == 0);
    v = proto_http_header(&req, "x-spaces");
    CHECK_MEM(v.p, v.n, "padded value");
    v = proto_http_header(&req, "X-Empty");
    CHECK(v.p != NULL);
    CHECK(v.n == 0);
    v = proto_http_header(&req, "X-Missing");
    CHECK(v.p == NULL);
    CHECK(v.n == 0);
    v = proto_http_header(&req, "Hos");
    CHECK(v.p == NULL);
    v = proto_http_header(&req, "Hostx");
    CHECK(v.p == NULL);

    /* bytes after the head (a pipelined body) are not consumed */
    {
        char more[sizeof(upgrade) + 16];
        memcpy(more, upgrade, n);
        memcpy(more + n, "GET / HTTP/1.1\r\n", 16);
        CHECK(parse_n(more, n + 16) == PROTO_HTTP_DONE);
        CHECK(req.head_len == n);
    }
}

static void test_simple_requests(void)
{
    struct proto_json_span v;

    CHECK(PARSE("GET / HTTP/1.0\r\n\r\n") == PROTO_HTTP_DONE);
    CHECK(req.minor == 0);
    CHECK(req.nheaders == 0);
    CHECK_MEM(req.path.p, req.path.n, "/");
    CHECK(req.query.n == 0);
    CHECK(req.head_len == 18);

    CHECK(PARSE("GET /healthz? HTTP/1.1\r\n\r\n") == PROTO_HTTP_DONE);
    CHECK_MEM(req.path.p, req.path.n, "/healthz");
    CHECK(req.query.n == 0);

    CHECK(PARSE("POST /a/b?x=1?y HTTP/1.1\r\nContent-Length: 0\r\n\r\n") == PROTO_HTTP_DONE);
    CHECK_MEM(req.method.p, req.method.n, "POST");
    CHECK_MEM(req.path.p, req.path.n, "/a/b");
    CHECK_MEM(req.query.p, req.query.n, "x=1?y");

    /* bare LF line ends, and a mix */
    CHECK(PARSE("GET /ws HTTP/1.1\nHost: h\nUpgrade: websocket\r\n\n") == PROTO_HTTP_DONE);
    CHECK(req.nheaders == 2);
    CHECK(req.head_len == 46);
    v = proto_http_header(&req, "host");
    CHECK_MEM(v.p, v.n, "h");
    v = proto_http_header(&req, "upgrade");
    CHECK_MEM(v.p, v.n, "websocket");

    /* leading empty lines are ignored (and count in head_len) */
    CHECK(PARSE("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n") == PROTO_HTTP_DONE);
    CHECK_MEM(req.method.p, req.method.n, "GET");
    CHECK(req.nheaders == 1);
    CHECK(req.head_len == 31);
    CHECK(PARSE("\n\nGET / HTTP/1.1\n\n") == PROTO_HTTP_DONE);
    CHECK(PARSE("\r\n") == PROTO_HTTP_INCOMPLETE);

    /* methods are any token */
    CHECK(PARSE("M-SEARCH * HTTP/1.1\r\n\r\n") == PROTO_HTTP_BAD); /* target must be '/' */
    CHECK(PARSE("X~Y! / HTTP/1.1\r\n\r\n") == PROTO_HTTP_DONE);
    CHECK_MEM(req.method.p, req.method.n, "X~Y!");

    /* the first of repeated fields wins in proto_http_header */
    CHECK(PARSE("GET / HTTP/1.1\r\nA: 1\r\na: 2\r\n\r\n") == PROTO_HTTP_DONE);
    v = proto_http_header(&req, "A");
    CHECK_MEM(v.p, v.n, "1");
}

/* Every proper prefix of a complete head is incomplete, never bad. */
static void test_incomplete_prefixes(void)
{
    static const char lf_only[] = "GET /x?y=1 HTTP/1.0\nA: b\n\n";
    static const char leading[] = "\r\n\nGET / HTTP/1.1\r\nA:b\r\n\r\n";
    size_t i, wrong = 0;

    for (i = 0; i < sizeof(upgrade) - 1; i++)
        if (parse_n(upgrade, i) != PROTO_HTTP_INCOMPLETE)
            wrong++;
    CHECK(wrong == 0);
    CHECK(parse_n(upgrade, sizeof(upgrade) - 1) == PROTO_HTTP_DONE);
    wrong = 0;
    for (i = 0; i < sizeof(lf_only) - 1; i++)
        if (parse_n(lf_only, i) != PROTO_HTTP_INCOMPLETE)
            wrong++;
    CHECK(wrong == 0);
    CHECK(parse_n(lf_only, sizeof(lf_only) - 1) == PROTO_HTTP_DONE);
    wrong = 0;
    for (i = 0; i < sizeof(leading) - 1; i++)
        if (parse_n(leading, i) != PROTO_HTTP_INCOMPLETE)
            wrong++;
    CHECK(wrong == 0);
    CHECK(parse_n(leading, sizeof(leading) - 1) == PROTO_HTTP_DONE);
}

static void test_bad_request_line(void)
{
    CHECK(PARSE("GET\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET HTTP/1.1\r\n\r\n") == PROTO_HTTP_BAD);       /* no target */
    CHECK(PARSE("GET  HTTP/1.1\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET ws HTTP/1.1\r\n\r\n") == PROTO_HTTP_BAD);    /* not '/' */
    CHECK(PARSE("GET http://h/ws HTTP/1.1\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/2.0\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/1.2\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/0.9\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / http/1.1\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/1.10\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/1.\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/1\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET /\r\n\r\n") == PROTO_HTTP_BAD);               /* no version */
    CHECK(PARSE("GET / \r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET  / HTTP/1.1\r\n\r\n") == PROTO_HTTP_BAD);     /* extra spaces */
    CHECK(PARSE("GET /  HTTP/1.1\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/1.1 \r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE(" GET / HTTP/1.1\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET\t/ HTTP/1.1\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET /\tx HTTP/1.1\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET /a\x01 HTTP/1.1\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET /a\x7F HTTP/1.1\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("G(T / HTTP/1.1\r\n\r\n") == PROTO_HTTP_BAD);     /* not a token */
    CHECK(PARSE("G\xC3\xA9T / HTTP/1.1\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/1.1\r\r\n\r\n") == PROTO_HTTP_BAD);
}

static void test_bad_fields(void)
{
    CHECK(PARSE("GET / HTTP/1.1\r\nHost example.com\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/1.1\r\nHost : h\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/1.1\r\nHost\t: h\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/1.1\r\n: h\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/1.1\r\nHo st: h\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/1.1\r\nH(o): h\r\n\r\n") == PROTO_HTTP_BAD);
    /* obs-fold */
    CHECK(PARSE("GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/1.1\r\n Host: h\r\n\r\n") == PROTO_HTTP_BAD);
    /* control characters in values; HTAB is allowed */
    CHECK(PARSE("GET / HTTP/1.1\r\nX-A: a\x01z\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/1.1\r\nX-A: a\x7Fz\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/1.1\r\nX-A: a\0z\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/1.1\r\nX-A: a\rz\r\n\r\n") == PROTO_HTTP_BAD);
    CHECK(PARSE("GET / HTTP/1.1\r\nX-A: a\tz\r\n\r\n") == PROTO_HTTP_DONE);
    CHECK(PARSE("GET / HTTP/1.1\r\nX-A: \xC3\xA9\r\n\r\n") == PROTO_HTTP_DONE); /* obs-text */
}

static void test_limits(void)
{
    struct proto_buf b = {0};
    size_t i, pad;

    /* exactly PROTO_HTTP_MAX_HEADERS fields */
    proto_buf_append_str(&b, "GET / HTTP/1.1\r\n");
    for (i = 0; i < PROTO_HTTP_MAX_HEADERS; i++)
        proto_buf_printf(&b, "X-H%zu: %zu\r\n", i, i);
    proto_buf_append_str(&b, "\r\n");
    CHECK(parse_n(b.data, b.len) == PROTO_HTTP_DONE);
    CHECK(req.nheaders == PROTO_HTTP_MAX_HEADERS);
    /* one more */
    b.len -= 2;
    proto_buf_append_str(&b, "X-Last: 1\r\n\r\n");
    CHECK(parse_n(b.data, b.len) == PROTO_HTTP_TOO_LARGE);

    /* a head of exactly PROTO_HTTP_MAX_HEAD bytes */
    proto_buf_reset(&b);
    proto_buf_append_str(&b, "GET / HTTP/1.1\r\nX-Pad: ");
    pad = PROTO_HTTP_MAX_HEAD - b.len - 4;
    for (i = 0; i < pad; i++)
        proto_buf_append_byte(&b, 'p');
    proto_buf_append_str(&b, "\r\n\r\n");
    CHECK(b.len == PROTO_HTTP_MAX_HEAD);
    CHECK(parse_n(b.data, b.len) == PROTO_HTTP_DONE);
    CHECK(req.head_len == PROTO_HTTP_MAX_HEAD);
    /* its proper prefix is only incomplete */
    CHECK(parse_n(b.data, b.len - 1) == PROTO_HTTP_INCOMPLETE);
    /* one byte more */
    proto_buf_reset(&b);
    proto_buf_append_str(&b, "GET / HTTP/1.1\r\nX-Pad: ");
    for (i = 0; i < pad + 1; i++)
        proto_buf_append_byte(&b, 'p');
    proto_buf_append_str(&b, "\r\n\r\n");
    CHECK(b.len == PROTO_HTTP_MAX_HEAD + 1);
    CHECK(parse_n(b.data, b.len) == PROTO_HTTP_TOO_LARGE);
    /* as soon as the buffer holds MAX_HEAD bytes without the blank line */
    CHECK(parse_n(b.data, PROTO_HTTP_MAX_HEAD) == PROTO_HTTP_TOO_LARGE);
    CHECK(parse_n(b.data, PROTO_HTTP_MAX_HEAD - 1) == PROTO_HTTP_INCOMPLETE);

    /* a request line longer than the limit */
    proto_buf_reset(&b);
    proto_buf_append_str(&b, "GET /");
    while (b.len < PROTO_HTTP_MAX_HEAD + 100)
        proto_buf_append_byte(&b, 'a');
    CHECK(parse_n(b.data, b.len) == PROTO_HTTP_TOO_LARGE);
    proto_buf_append_str(&b, " HTTP/1.1\r\n\r\n");
    CHECK(parse_n(b.data, b.len) == PROTO_HTTP_TOO_LARGE);

    /* many empty lines before the request also count */
    proto_buf_reset(&b);
    while (b.len < PROTO_HTTP_MAX_HEAD)
        proto_buf_append_str(&b, "\r\n");
    proto_buf_append_str(&b, "GET / HTTP/1.1\r\n\r\n");
    CHECK(parse_n(b.data, b.len) == PROTO_HTTP_TOO_LARGE);
    proto_buf_free(&b);
}

/* Repeated fields: counted by name, and list fields read across every
 * line, as the broker's upgrade does (a repeated Sec-WebSocket-Key is a
 * 400 there; repeated Connection lines are one list). */
static void test_repeated_fields(void)
{
    CHECK(PARSE("GET /ws HTTP/1.1\r\n"
                "Host: h\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "sec-websocket-key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"
                "Connection: keep-alive\r\n"
                "Upgrade: h2c\r\n"
                "CONNECTION: Upgrade\r\n"
                "Upgrade: websocket\r\n"
                "\r\n") == PROTO_HTTP_DONE);
    CHECK(proto_http_header_count(&req, "Sec-WebSocket-Key") == 2);
    CHECK(proto_http_header_count(&req, "SEC-WEBSOCKET-KEY") == 2);
    CHECK(proto_http_header_count(&req, "Host") == 1);
    CHECK(proto_http_header_count(&req, "Origin") == 0);
    CHECK(proto_http_header_count(&req, "Sec-WebSocket-Ke") == 0);
    CHECK(proto_http_header_count(&req, "Connection") == 2);
    /* proto_http_header alone sees the first line only */
    CHECK(proto_http_has_token(proto_http_header(&req, "Connection"), "upgrade") == 0);
    CHECK(proto_http_header_has_token(&req, "Connection", "upgrade") == 1);
    CHECK(proto_http_header_has_token(&req, "connection", "keep-alive") == 1);
    CHECK(proto_http_header_has_token(&req, "Upgrade", "websocket") == 1);
    CHECK(proto_http_header_has_token(&req, "Upgrade", "h2c") == 1);
    CHECK(proto_http_header_has_token(&req, "Upgrade", "upgrade") == 0);
    CHECK(proto_http_header_has_token(&req, "Connection", "close") == 0);
    CHECK(proto_http_header_has_token(&req, "Origin", "upgrade") == 0);
    /* a token is never made of two lines */
    CHECK(PARSE("GET / HTTP/1.1\r\nConnection: up\r\nConnection: grade\r\n\r\n") ==
          PROTO_HTTP_DONE);
    CHECK(proto_http_header_has_token(&req, "Connection", "upgrade") == 0);
    CHECK(PARSE("GET / HTTP/1.1\r\n\r\n") == PROTO_HTTP_DONE);
    CHECK(proto_http_header_count(&req, "Host") == 0);
    CHECK(proto_http_header_has_token(&req, "Connection", "upgrade") == 0);
}

static void test_has_token(void)
{
    CHECK(proto_http_has_token(sp("keep-alive, Upgrade"), "upgrade") == 1);
    CHECK(proto_http_has_token(sp("Upgrade"), "upgrade") == 1);
    CHECK(proto_http_has_token(sp("UPGRADE"), "Upgrade") == 1);
    CHECK(proto_http_has_token(sp("upgrade,keep-alive"), "keep-alive") == 1);
    CHECK(proto_http_has_token(sp(" ,, upgrade \t, "), "upgrade") == 1);
    CHECK(proto_http_has_token(sp("upgrades"), "upgrade") == 0);
    CHECK(proto_http_has_token(sp("keep-alive, upgrades"), "upgrade") == 0);
    CHECK(proto_http_has_token(sp("xupgrade"), "upgrade") == 0);
    CHECK(proto_http_has_token(sp("upgrade x"), "upgrade") == 0);
    CHECK(proto_http_has_token(sp(""), "upgrade") == 0);
    CHECK(proto_http_has_token(sp(", ,"), "upgrade") == 0);
    {
        struct proto_json_span none = {NULL, 0};
        CHECK(proto_http_has_token(none, "upgrade") == 0);
    }
}

/* Looks up name in query into a reset out; returns the status. */
static int qp(const char *query, const char *name, struct proto_buf *out)
{
    proto_buf_reset(out);
    return proto_http_query_param(sp(query), name, out);
}

static void test_query_param(void)
{
    struct proto_buf b = {0};

    CHECK(qp("channels=a,b&token=xyz", "channels", &b) == 1);
    CHECK_MEM(b.data, b.len, "a,b");
    CHECK(qp("channels=a,b&token=xyz", "token", &b) == 1);
    CHECK_MEM(b.data, b.len, "xyz");
    CHECK(qp("channels=a,b&token=xyz", "tok", &b) == 0);
    CHECK(qp("channels=a,b&token=xyz", "user", &b) == 0);
    CHECK(b.len == 0);
    CHECK(qp("", "a", &b) == 0);
    /* empty values */
    CHECK(qp("a=&b=2", "a", &b) == 1);
    CHECK(b.len == 0);
    CHECK(qp("a&b=2", "a", &b) == 1);
    CHECK(b.len == 0);
    CHECK(qp("b=2&a", "a", &b) == 1);
    CHECK(b.len == 0);
    /* percent-decoding; '+' stays '+' */
    CHECK(qp("t=x%20y%2Fz%2f%41+b", "t", &b) == 1);
    CHECK_MEM(b.data, b.len, "x y/z/A+b");
    CHECK(qp("t=%E2%82%AC", "t", &b) == 1);
    CHECK_MEM(b.data, b.len, "\xE2\x82\xAC");
    CHECK(qp("t=%3D%26", "t", &b) == 1);
    CHECK_MEM(b.data, b.len, "=&");
    CHECK(qp("t=a=b", "t", &b) == 1);
    CHECK_MEM(b.data, b.len, "a=b");
    /* malformed escapes */
    CHECK(qp("t=%", "t", &b) == -1);
    CHECK(qp("t=%2", "t", &b) == -1);
    CHECK(qp("t=%2&u=1", "t", &b) == -1);
    CHECK(qp("t=%zz", "t", &b) == -1);
    CHECK(qp("t=%g0", "t", &b) == -1);
    CHECK(qp("t=ok&u=%", "t", &b) == 1); /* only the requested value is decoded */
    /* a name that is a prefix of another name */
    CHECK(qp("channels=a&ch=b", "ch", &b) == 1);
    CHECK_MEM(b.data, b.len, "b");
    CHECK(qp("ch=b&channels=a", "channels", &b) == 1);
    CHECK_MEM(b.data, b.len, "a");
    CHECK(qp("channels=a", "ch", &b) == 0);
    CHECK(qp("ch=b", "channels", &b) == 0);
    CHECK(qp("xch=b", "ch", &b) == 0);
    /* the first occurrence wins */
    CHECK(qp("a=1&a=2", "a", &b) == 1);
    CHECK_MEM(b.data, b.len, "1");
    /* appends to what out holds */
    proto_buf_reset(&b);
    proto_buf_append_str(&b, ">");
    CHECK(proto_http_query_param(sp("a=1"), "a", &b) == 1);
    CHECK_MEM(b.data, b.len, ">1");

    /* on a parsed request */
    CHECK(PARSE("GET /ws?ch=x%2Cy&channels=z HTTP/1.1\r\n\r\n") == PROTO_HTTP_DONE);
    proto_buf_reset(&b);
    CHECK(proto_http_query_param(req.query, "ch", &b) == 1);
    CHECK_MEM(b.data, b.len, "x,y");
    CHECK(PARSE("GET /ws HTTP/1.1\r\n\r\n") == PROTO_HTTP_DONE);
    proto_buf_reset(&b);
    CHECK(proto_http_query_param(req.query, "ch", &b) == 0);
    proto_buf_free(&b);
}

static void test_ws_key(void)
{
    struct proto_json_span none = {NULL, 0};
    char out[29];

    CHECK(proto_ws_key_valid(sp("dGhlIHNhbXBsZSBub25jZQ==")) == 1);
    CHECK(proto_ws_key_valid(sp("AAAAAAAAAAAAAAAAAAAAAA==")) == 1);
    CHECK(proto_ws_key_valid(sp("+/+/+/+/+/+/+/+/+/+/+w==")) == 1);
    CHECK(proto_ws_key_valid(sp("dGhlIHNhbXBsZSBub25jZQ=")) == 0);
    CHECK(proto_ws_key_valid(sp("dGhlIHNhbXBsZSBub25jZQ===")) == 0);
    CHECK(proto_ws_key_valid(sp("dGhlIHNhbXBsZSBub25jZQAA")) == 0);
    CHECK(proto_ws_key_valid(sp("dGhlIHNhbXBsZSBub25jZ===")) == 0);
    CHECK(proto_ws_key_valid(sp("dGhlIHNhbXBsZSBub25jZ-==")) == 0);
    CHECK(proto_ws_key_valid(sp("dGhlIHNhbXBsZSBub25j ZQ==")) == 0);
    CHECK(proto_ws_key_valid(sp("dGhlIHNhbXBsZSBub2 jZQ==")) == 0);
    CHECK(proto_ws_key_valid(sp("")) == 0);
    CHECK(proto_ws_key_valid(none) == 0);

    memset(out, 'X', sizeof(out));
    proto_ws_accept(sp("dGhlIHNhbXBsZSBub25jZQ=="), out);
    CHECK(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
    /* from a parsed request, as the server does */
    CHECK(PARSE("GET / HTTP/1.1\r\nSec-WebSocket-Key:  x3JJHMbDL1EzLkh9GBhXDw== \r\n\r\n") ==
          PROTO_HTTP_DONE);
    CHECK(proto_ws_key_valid(proto_http_header(&req, "sec-websocket-key")) == 1);
    proto_ws_accept(proto_http_header(&req, "sec-websocket-key"), out);
    CHECK(strcmp(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=") == 0);
}

int main(void)
{
    test_upgrade_request();
    test_simple_requests();
    test_incomplete_prefixes();
    test_bad_request_line();
    test_bad_fields();
    test_limits();
    test_has_token();
    test_repeated_fields();
    test_query_param();
    test_ws_key();
    free(copy);
    return t_done("httpreq");
}

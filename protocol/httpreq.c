/* httpreq.c: HTTP request head parser and WebSocket handshake helpers
 * (see httpreq.h). */
#include "httpreq.h"

#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

static int is_tchar(unsigned char c)
{
    /* RFC 9110 token characters. */
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

static int span_ieq(struct proto_json_span s, const char *lit)
{
    size_t i, n = strlen(lit);

    if (s.n != n)
        return 0;
    for (i = 0; i < n; i++)
        if (lower((unsigned char)s.p[i]) != lower((unsigned char)lit[i]))
            return 0;
    return 1;
}

/* Finds the end of the line starting at p: returns a pointer to its LF and
 * sets *content_end past the last content byte (before an optional CR). */
static const char *line_end(const char *p, const char *end, const char **content_end)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));

    if (lf == NULL)
        return NULL;
    *content_end = (lf > p && lf[-1] == '\r') ? lf - 1 : lf;
    return lf;
}

static int parse_request_line(const char *p, const char *e, struct proto_http_req *req)
{
    const char *s = p;

    while (p < e && is_tchar((unsigned char)*p))
        p++;
    if (p == s || p >= e || *p != ' ')
        return -1;
    req->method.p = s;
    req->method.n = (size_t)(p - s);
    s = ++p;
    while (p < e && *p != ' ') {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7F)
            return -1;
        p++;
    }
    if (p == s || p >= e || *s != '/')
        return -1;
    req->target.p = s;
    req->target.n = (size_t)(p - s);
    p++;
    if (e - p != 8 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1'))
        return -1;
    req->minor = p[7] - '0';
    {
        const char *q = memchr(req->target.p, '?', req->target.n);
        req->path.p = req->target.p;
        req->path.n = q ? (size_t)(q - req->target.p) : req->target.n;
        req->query.p = q ? q + 1 : req->target.p + req->target.n;
        req->query.n = q ? req->target.n - req->path.n - 1 : 0;
    }
    return 0;
}

static int parse_field(const char *p, const char *e, struct proto_http_header *h)
{
    const char *s = p;

    while (p < e && is_tchar((unsigned char)*p))
        p++;
    if (p == s || p >= e || *p != ':')
        return -1;
    h->name.p = s;
    h->name.n = (size_t)(p - s);
    p++;
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    for (s = p; s < e; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && c != '\t') || c == 0x7F)
            return -1;
    }
    h->value.p = p;
    h->value.n = (size_t)(e - p);
    return 0;
}

enum proto_http_status proto_http_parse(const char *buf, size_t len,
                                        struct proto_http_req *req)
{
    const char *p = buf, *end = buf + len, *lf, *ce;
    size_t limit = len < PROTO_HTTP_MAX_HEAD ? len : PROTO_HTTP_MAX_HEAD;

    /* Only the first PROTO_HTTP_MAX_HEAD bytes may hold the head. */
    end = buf + limit;
    req->nheaders = 0;
    /* RFC 9112 2.2: ignore at least one empty line before the request line. */
    while (p < end && (*p == '\r' || *p == '\n'))
        p++;
    if ((lf = line_end(p, end, &ce)) == NULL)
        return len >= PROTO_HTTP_MAX_HEAD ? PROTO_HTTP_TOO_LARGE : PROTO_HTTP_INCOMPLETE;
    if (parse_request_line(p, ce, req) != 0)
        return PROTO_HTTP_BAD;
    p = lf + 1;
    for (;;) {
        if ((lf = line_end(p, end, &ce)) == NULL)
            return len >= PROTO_HTTP_MAX_HEAD ? PROTO_HTTP_TOO_LARGE
                                              : PROTO_HTTP_INCOMPLETE;
        if (ce == p) { /* blank line: end of head */
            req->head_len = (size_t)(lf + 1 - buf);
            return PROTO_HTTP_DONE;
        }
        if (*p == ' ' || *p == '\t') /* obs-fold */
            return PROTO_HTTP_BAD;
        if (req->nheaders == PROTO_HTTP_MAX_HEADERS)
            return PROTO_HTTP_TOO_LARGE;
        if (parse_field(p, ce, &req->headers[req->nheaders]) != 0)
            return PROTO_HTTP_BAD;
        req->nheaders++;
        p = lf + 1;
    }
}

struct proto_json_span proto_http_header(const struct proto_http_req *req,
                                         const char *name)
{
    struct proto_json_span none = {NULL, 0};
    size_t i;

    for (i = 0; i < req->nheaders; i++)
        if (span_ieq(req->headers[i].name, name))
            return req->headers[i].value;
    return none;
}

size_t proto_http_header_count(const struct proto_http_req *req, const char *name)
{
    size_t i, n = 0;

    for (i = 0; i < req->nheaders; i++)
        if (span_ieq(req->headers[i].name, name))
            n++;
    return n;
}

int proto_http_header_has_token(const struct proto_http_req *req, const char *name,
                                const char *token)
{
    size_t i;

    for (i = 0; i < req->nheaders; i++)
        if (span_ieq(req->headers[i].name, name) &&
            proto_http_has_token(req->headers[i].value, token))
            return 1;
    return 0;
}

int proto_http_has_token(struct proto_json_span v, const char *token)
{
    const char *p = v.p, *end;

    if (v.p == NULL)
        return 0;
    end = v.p + v.n;
    while (p < end) {
        const char *s, *e;
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        s = p;
        while (p < end && *p != ',')
            p++;
        e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        struct proto_json_span t = {s, (size_t)(e - s)};
        if (t.n && span_ieq(t, token))
            return 1;
    }
    return 0;
}

static int hexv(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int proto_http_query_raw(struct proto_json_span q, const char *name,
                         struct proto_json_span *value)
{
    const char *p = q.p, *end;
    size_t nlen = strlen(name);

    if (q.n == 0)
        return 0;
    end = q.p + q.n;
    while (p < end) {
        const char *s = p, *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        p = amp ? amp + 1 : end;
        if ((size_t)(e - s) < nlen || memcmp(s, name, nlen) != 0)
            continue;
        s += nlen;
        if (s < e && *s != '=')
            continue;
        if (s < e)
            s++;
        value->p = s;
        value->n = (size_t)(e - s);
        return 1;
    }
    return 0;
}

int proto_http_pct_decode(struct proto_json_span v, struct proto_buf *out)
{
    const char *s = v.p, *e = v.p + v.n;

    if (v.n == 0)
        return 0;
    while (s < e) {
        char c = *s++;
        if (c == '%') {
            int hi, lo;
            if (e - s < 2 || (hi = hexv((unsigned char)s[0])) < 0 ||
                (lo = hexv((unsigned char)s[1])) < 0)
                return -1;
            c = (char)(hi << 4 | lo);
            s += 2;
        }
        if (proto_buf_append_byte(out, c) != 0)
            return -1;
    }
    return 0;
}

int proto_http_query_param(struct proto_json_span q, const char *name,
                           struct proto_buf *out)
{
    struct proto_json_span v;

    if (!proto_http_query_raw(q, name, &v))
        return 0;
    return proto_http_pct_decode(v, out) == 0 ? 1 : -1;
}

static int is_b64(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '+' || c == '/';
}

int proto_ws_key_valid(struct proto_json_span key)
{
    size_t i;

    /* 16 bytes encode to 22 characters and "==". */
    if (key.p == NULL || key.n != 24 || key.p[22] != '=' || key.p[23] != '=')
        return 0;
    for (i = 0; i < 22; i++)
        if (!is_b64((unsigned char)key.p[i]))
            return 0;
    return 1;
}

void proto_ws_accept(struct proto_json_span key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char in[64 + sizeof(guid)], md[SHA_DIGEST_LENGTH];
    size_t n = key.n > 64 ? 64 : key.n;

    memcpy(in, key.p, n);
    memcpy(in + n, guid, sizeof(guid) - 1);
    SHA1(in, n + sizeof(guid) - 1, md);
    EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH);
}

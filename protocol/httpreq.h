/* httpreq.h: HTTP/1.x request heads and the WebSocket opening handshake.
 *
 * proto_http_parse() reads a request head (request line and header fields,
 * RFC 9112) from a buffer that may still be incomplete; the parsed request
 * borrows that buffer. proto_ws_accept() computes Sec-WebSocket-Accept
 * (RFC 6455 section 4.2.2). */
#ifndef PROTO_HTTPREQ_H
#define PROTO_HTTPREQ_H

#include <stddef.h>

#include "buf.h"
#include "json.h"

/* Request heads longer than this get 431 (Request Header Fields Too Large). */
#define PROTO_HTTP_MAX_HEAD 8192
#define PROTO_HTTP_MAX_HEADERS 64

struct proto_http_header {
    struct proto_json_span name;
    struct proto_json_span value; /* surrounding whitespace removed */
};

struct proto_http_req {
    struct proto_json_span method;
    struct proto_json_span target; /* as sent: path and query */
    struct proto_json_span path;
    struct proto_json_span query;  /* after '?', n == 0 when none */
    int minor;                     /* HTTP/1.<minor> */
    size_t head_len;               /* bytes of the head, blank line included */
    size_t nheaders;
    struct proto_http_header headers[PROTO_HTTP_MAX_HEADERS];
};

enum proto_http_status {
    PROTO_HTTP_INCOMPLETE = 0, /* need more bytes */
    PROTO_HTTP_DONE = 1,       /* req is filled; head_len bytes consumed */
    PROTO_HTTP_BAD = -1,       /* malformed: answer 400 */
    PROTO_HTTP_TOO_LARGE = -2  /* head over PROTO_HTTP_MAX_HEAD or too many
                                  fields: answer 431 */
};

/* Parses buf[0..len). Lines end in CRLF (a bare LF is accepted, as nginx
 * does). The method must be a token, the target must start with '/', the
 * version must be HTTP/1.0 or HTTP/1.1; field names are tokens with no
 * whitespace before the colon; obsolete line folding is refused. */
enum proto_http_status proto_http_parse(const char *buf, size_t len,
                                        struct proto_http_req *req);

/* The value of the first field named name (ASCII case-insensitive), or a
 * span with p == NULL when absent. For a field that may appear once only,
 * check proto_http_header_count() first. */
struct proto_json_span proto_http_header(const struct proto_http_req *req,
                                         const char *name);

/* How many fields are named name (ASCII case-insensitive). */
size_t proto_http_header_count(const struct proto_http_req *req, const char *name);

/* 1 when the comma-separated field value contains token (case-insensitive). */
int proto_http_has_token(struct proto_json_span value, const char *token);

/* 1 when any field named name contains token: a list field may be split
 * over several lines, which mean the same as one line joined by commas
 * (RFC 9110 5.3), e.g. "Connection: keep-alive" then "Connection: Upgrade". */
int proto_http_header_has_token(const struct proto_http_req *req, const char *name,
                                const char *token);

/* Finds parameter name in a query string and appends its percent-decoded
 * value ('+' stays '+') to out. Returns 1 when found, 0 when absent, -1 when
 * the value has a malformed escape or memory runs out. */
int proto_http_query_param(struct proto_json_span query, const char *name,
                           struct proto_buf *out);

/* The same without decoding: *value is the raw text of the parameter's
 * value (borrowed from query), for lists whose separators must be split
 * before decoding. Returns 1 when found, 0 when absent. */
int proto_http_query_raw(struct proto_json_span query, const char *name,
                         struct proto_json_span *value);

/* Appends the percent-decoding of s to out. Returns 0, or -1 on a malformed
 * escape or ENOMEM. */
int proto_http_pct_decode(struct proto_json_span s, struct proto_buf *out);

/* 1 when key is a valid Sec-WebSocket-Key: base64 of 16 bytes. */
int proto_ws_key_valid(struct proto_json_span key);

/* Writes the 28-character Sec-WebSocket-Accept for key and a NUL into out. */
void proto_ws_accept(struct proto_json_span key, char out[29]);

#endif

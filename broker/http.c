/* http.c: request heads, the WebSocket upgrade, /healthz, /metrics and the
 * files of static_dir (see http.h). */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "auth.h"
#include "config.h"
#include "docroot.h"
#include "log.h"
#include "metrics.h"
#include "peer.h"
#include "protocol/codec.h"
#include "protocol/httpreq.h"
#include "session.h"
#include "stats.h"

/* A ?channels= list may name at most this many channels. */
#define HTTP_MAX_QUERY_CHANNELS 100

struct http_conn {
    struct proto_buf head;
    uint64_t deadline_ms;
    struct cidr_addr peer; /* the TCP peer (family 0: unknown) */
    uint8_t peer_unix;     /* came through a Unix-socket listener */
};

static struct http_env *env;

static void on_read(struct conn *c);
static void on_tick(struct conn *c, uint64_t now);
static void on_free(struct conn *c);

static const struct conn_ops http_ops = {on_read, on_tick, on_free};

void http_init(struct http_env *e)
{
    env = e;
}

/* Over max_connections: answer 503 at once, without reading the request
 * (the write fits in any socket buffer), and close. */
static void refuse_busy(int fd)
{
    static const char resp[] = "HTTP/1.1 503 Service Unavailable\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n"
                               "Content-Length: 17\r\n"
                               "Retry-After: 1\r\n"
                               "Connection: close\r\n\r\n"
                               "too many clients\n";

    stats->errors_total[ERR_HTTP_503]++;
    if (write(fd, resp, sizeof(resp) - 1) < 0) {
        /* the client is gone already */
    }
    shutdown(fd, SHUT_WR);
    close(fd);
}

static void peer_of(struct http_conn *h, const struct sockaddr *sa, socklen_t salen)
{
    if (sa == NULL)
        return;
    if (sa->sa_family == AF_UNIX) {
        h->peer_unix = 1;
    } else if (sa->sa_family == AF_INET && salen >= (socklen_t)sizeof(struct sockaddr_in)) {
        h->peer.family = 4;
        memcpy(h->peer.b, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6 && salen >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        char text[CIDR_ADDRSTRLEN];
        /* Through text, so that an IPv4-mapped address comes out as IPv4. */
        if (inet_ntop(AF_INET6, a6, text, sizeof(text)) != NULL)
            cidr_addr_parse(text, strlen(text), &h->peer);
    }
}

void http_accept(struct conn_set *set, int fd, const struct sockaddr *sa, socklen_t salen)
{
    struct http_conn *h;
    struct conn *c;

    stats->connections_total++;
    if (conn_set_count(set) >= env->max_connections) {
        refuse_busy(fd);
        return;
    }
    if ((h = calloc(1, sizeof(*h))) == NULL) {
        close(fd);
        return;
    }
    h->deadline_ms = conn_now_ms() + (uint64_t)env->cfg->handshake_timeout_ms;
    peer_of(h, sa, salen);
    if ((c = conn_new(set, fd, &http_ops, h)) == NULL) {
        free(h);
        return;
    }
    /* Clients send their request as soon as they are connected, so it is
     * often here already: read it now rather than a loop turn later. */
    on_read(c);
}

static void on_free_state(struct http_conn *h)
{
    proto_buf_free(&h->head);
    free(h);
}

static void on_free(struct conn *c)
{
    on_free_state(c->owner);
}

static void on_tick(struct conn *c, uint64_t now)
{
    struct http_conn *h = c->owner;

    if (now >= h->deadline_ms) {
        stats->errors_total[ERR_HANDSHAKE_TIMEOUT]++;
        log_debug("fd %d: no complete request within %lld ms, closing", c->fd,
                  env->cfg->handshake_timeout_ms);
        conn_kill(c);
    }
}

/* Sends a complete response and closes after it. */
static void respond(struct conn *c, int status, const char *reason, const char *headers,
                    const char *body, int head_only)
{
    char buf[1024];
    int n;

    n = snprintf(buf, sizeof(buf),
                 "HTTP/1.1 %d %s\r\n"
                 "Content-Type: text/plain; charset=utf-8\r\n"
                 "Content-Length: %zu\r\n"
                 "Connection: close\r\n"
                 "%s"
                 "\r\n"
                 "%s",
                 status, reason, strlen(body), headers ? headers : "", head_only ? "" : body);
    if (n > 0 && (size_t)n < sizeof(buf))
        conn_send_copy(c, buf, (size_t)n);
    conn_end(c);
    conn_flush(c);
}

/* GET /metrics: Prometheus text exposition summed over every worker. */
static void metrics_respond(struct conn *c, int head_only, int allowed)
{
    struct proto_buf body = {0}, out = {0};

    if (!allowed) {
        respond(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n", "method not allowed\n", 0);
        return;
    }
    if (metrics_render(&body) != 0 ||
        proto_buf_printf(&out,
                         "HTTP/1.1 200 OK\r\n"
                         "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                         "Content-Length: %zu\r\n"
                         "Cache-Control: no-store\r\n"
                         "Connection: close\r\n\r\n",
                         body.len) != 0 ||
        (!head_only && proto_buf_append(&out, body.data, body.len) != 0)) {
        conn_kill(c);
    } else {
        conn_send_copy(c, out.data, out.len);
        conn_end(c);
    }
    proto_buf_free(&body);
    proto_buf_free(&out);
}

static void reject(struct conn *c, enum stats_err e, int status, const char *reason,
                   const char *headers, const char *body)
{
    stats->errors_total[e]++;
    log_debug("fd %d: HTTP %d: %s", c->fd, status, body);
    respond(c, status, reason, headers, body, 0);
}

static int path_is(const struct proto_http_req *r, const char *path)
{
    size_t n = strlen(path);
    return r->path.n == n && memcmp(r->path.p, path, n) == 0;
}

static int method_is(const struct proto_http_req *r, const char *m)
{
    size_t n = strlen(m);
    return r->method.n == n && memcmp(r->method.p, m, n) == 0;
}

/* Collects ?channels=a,b as NUL-separated names in out. The list is split
 * on ',' before each name is percent-decoded, so "%2C" is a comma inside a
 * name. Returns 0, or -1 when the list is malformed (a bad escape, an
 * invalid or empty name, too many names). */
static int query_channels(const struct proto_http_req *r, struct proto_buf *out)
{
    struct proto_json_span raw, item;
    const char *p, *end;
    size_t count = 0, start;

    if (!proto_http_query_raw(r->query, "channels", &raw))
        return 0;
    p = raw.p;
    end = raw.p + raw.n;
    for (;;) {
        const char *comma = p < end ? memchr(p, ',', (size_t)(end - p)) : NULL;
        item.p = p;
        item.n = (size_t)((comma ? comma : end) - p);
        start = out->len;
        if (++count > HTTP_MAX_QUERY_CHANNELS || proto_http_pct_decode(item, out) != 0 ||
            out->len == start || !proto_channel_valid(out->data + start, out->len - start) ||
            proto_buf_append_byte(out, '\0') != 0)
            return -1;
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}

/* 1 when the request's Origin may connect: allowed_origins is empty, the
 * request has no Origin (not a browser), or it is listed. */
static int origin_ok(const struct proto_http_req *r)
{
    const char *list = env->cfg->allowed_origins, *p = list;
    struct proto_json_span o = proto_http_header(r, "Origin");

    if (*list == '\0' || o.p == NULL)
        return 1;
    while (*p) {
        size_t n;
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        n = strcspn(p, " ,\t");
        if (n > 0 && n == o.n && strncasecmp(p, o.p, n) == 0)
            return 1;
        p += n;
    }
    return 0;
}

/* With auth_secret set: the token from ?token= or Authorization: Bearer,
 * verified. Returns 0 with *grant set (NULL when auth is off), or -1 after
 * answering 401. */
static int authenticate(struct conn *c, const struct proto_http_req *r,
                        struct auth_grant **grant)
{
    const char *secret = env->cfg->auth_secret, *why = "no token";
    struct proto_json_span h = proto_http_header(r, "Authorization");
    struct proto_buf tok = {0};
    int found;

    *grant = NULL;
    if (*secret == '\0')
        return 0;
    found = proto_http_query_param(r->query, "token", &tok);
    if (found == 0 && h.p != NULL && h.n > 7 && strncasecmp(h.p, "Bearer ", 7) == 0) {
        found = proto_buf_append(&tok, h.p + 7, h.n - 7) == 0 ? 1 : -1;
    }
    if (found == 1)
        *grant = auth_verify(secret, strlen(secret), tok.data, tok.len, (int64_t)time(NULL),
                             &why);
    proto_buf_free(&tok);
    if (*grant != NULL)
        return 0;
    stats->errors_total[ERR_HTTP_401]++;
    log_info("fd %d: handshake refused (401): %s", c->fd, found < 0 ? "malformed token" : why);
    respond(c, 401, "Unauthorized", "WWW-Authenticate: Bearer\r\n", "unauthorized\n", 0);
    return -1;
}

/* Answers 400 and returns 1 when a field that may appear once only does
 * not: which of two values the broker would read need not be the one a
 * proxy in front of it checked. names ends with NULL. List fields
 * (Connection, Upgrade) may repeat and are read whole instead. */
static int refuse_repeated(struct conn *c, const struct proto_http_req *r,
                           const char *const *names)
{
    char body[96];
    int n;

    for (; *names != NULL; names++) {
        if (proto_http_header_count(r, *names) <= 1)
            continue;
        n = snprintf(body, sizeof(body), "repeated %s header\n", *names);
        reject(c, ERR_HTTP_400, 400, "Bad Request", NULL,
               n > 0 && (size_t)n < sizeof(body) ? body : "repeated header\n");
        return 1;
    }
    return 0;
}

static void upgrade(struct conn *c, const struct proto_http_req *r, const char *rest,
                    size_t rest_len)
{
    struct http_conn *h = c->owner;
    /* RFC 6455 11.3.1 and 11.3.5 (the key and the version), RFC 6454 7.3
     * (Origin, which allowed_origins checks), and Authorization, which
     * carries the token and is no list. */
    static const char *const single[] = {"Sec-WebSocket-Key", "Sec-WebSocket-Version", "Origin",
                                         "Authorization", NULL};
    struct proto_json_span key = proto_http_header(r, "Sec-WebSocket-Key");
    struct proto_json_span ver = proto_http_header(r, "Sec-WebSocket-Version");
    struct proto_buf channels = {0};
    struct auth_grant *grant = NULL;
    struct cidr_addr client;
    struct peer *peer = NULL;
    char accept[29], resp[160];
    int n, known;

    if (!method_is(r, "GET")) {
        reject(c, ERR_HTTP_405, 405, "Method Not Allowed", "Allow: GET\r\n",
               "the WebSocket endpoint takes GET only\n");
        return;
    }
    if (refuse_repeated(c, r, single))
        return;
    if (!proto_http_header_has_token(r, "Upgrade", "websocket") ||
        !proto_http_header_has_token(r, "Connection", "upgrade")) {
        reject(c, ERR_HTTP_426, 426, "Upgrade Required",
               "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
               "this endpoint speaks WebSocket only\n");
        return;
    }
    if (ver.p == NULL || ver.n != 2 || memcmp(ver.p, "13", 2) != 0) {
        reject(c, ERR_HTTP_426, 426, "Upgrade Required", "Sec-WebSocket-Version: 13\r\n",
               "unsupported WebSocket version (13 is supported)\n");
        return;
    }
    if (r->minor < 1 || proto_http_header(r, "Host").p == NULL) {
        reject(c, ERR_HTTP_400, 400, "Bad Request", NULL,
               "a WebSocket handshake needs HTTP/1.1 and a Host header\n");
        return;
    }
    if (!proto_ws_key_valid(key)) {
        reject(c, ERR_HTTP_400, 400, "Bad Request", NULL, "invalid Sec-WebSocket-Key\n");
        return;
    }
    if (!origin_ok(r)) {
        reject(c, ERR_HTTP_403, 403, "Forbidden", NULL, "origin not allowed\n");
        return;
    }
    known = peer_resolve(env->trusted, env->ntrusted, h->peer_unix, &h->peer, r, &client);
    if (known && env->cfg->max_connections_per_ip > 0 &&
        peer_count(env->peers, &client) >= (unsigned long long)env->cfg->max_connections_per_ip) {
        char text[CIDR_ADDRSTRLEN];
        cidr_addr_format(&client, text);
        log_info("fd %d: %s: over max_connections_per_ip (%lld), 503", c->fd, text,
                 env->cfg->max_connections_per_ip);
        reject(c, ERR_IP_LIMIT, 503, "Service Unavailable", "Retry-After: 1\r\n",
               "too many connections from your address\n");
        return;
    }
    if (authenticate(c, r, &grant) != 0)
        return;
    if (query_channels(r, &channels) != 0) {
        auth_grant_free(grant);
        proto_buf_free(&channels);
        reject(c, ERR_HTTP_400, 400, "Bad Request", NULL,
               "invalid ?channels= list (comma-separated names of 1-256 bytes, "
               "no control characters, at most 100)\n");
        return;
    }
    proto_ws_accept(key, accept);
    n = snprintf(resp, sizeof(resp),
                 "HTTP/1.1 101 Switching Protocols\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\n"
                 "\r\n",
                 accept);
    if (conn_send_copy(c, resp, (size_t)n) != 0 ||
        (known && (peer = peer_hold(env->peers, &client)) == NULL)) {
        proto_buf_free(&channels);
        auth_grant_free(grant);
        conn_kill(c);
        return;
    }
    /* The session takes the connection over (conn_set_owner); the request
     * state, which rest points into, goes only once it has: a failed start
     * kills the connection while it still belongs to us. */
    if (sess_start(c, channels.len ? channels.data : NULL, channels.len, rest, rest_len,
                   grant, peer) == 0) {
        on_free_state(h);
        conn_flush(c);
    }
    proto_buf_free(&channels);
}

/* GET or HEAD of a file of static_dir: its response, read from memory
 * (docroot.h) and queued by reference. Returns 0 when it answered, -1 when
 * the path is not such a file (the caller sends 404). */
static int serve_static(struct conn *c, const struct proto_http_req *r)
{
    int head = method_is(r, "HEAD");
    struct frame *f;

    if (!head && !method_is(r, "GET"))
        return -1;
    if ((f = docroot_find(env->docroot, r->path.p, r->path.n, head)) == NULL)
        return -1;
    /* Only a file larger than max_pending_bytes can be refused here. */
    if (conn_send(c, f) != 0) {
        log_debug("fd %d: %zu-byte static response over max_pending_bytes", c->fd,
                  frame_size(f));
        conn_kill(c);
        return 0;
    }
    conn_end(c);
    return 0;
}

static void route(struct conn *c, const struct proto_http_req *r, const char *rest,
                  size_t rest_len)
{
    /* RFC 9112 3.2: more than one Host is a 400, whatever the path. */
    static const char *const host[] = {"Host", NULL};

    if (refuse_repeated(c, r, host))
        return;
    if (path_is(r, env->cfg->ws_path)) {
        upgrade(c, r, rest, rest_len);
        return;
    }
    if (path_is(r, "/healthz")) {
        int head = method_is(r, "HEAD");
        if (!head && !method_is(r, "GET")) {
            reject(c, ERR_HTTP_405, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n",
                   "method not allowed\n");
            return;
        }
        if (env->healthy(env->arg))
            respond(c, 200, "OK", "Cache-Control: no-store\r\n", "ok\n", head);
        else
            respond(c, 503, "Service Unavailable", "Cache-Control: no-store\r\n",
                    "redis down\n", head);
        return;
    }
    if (path_is(r, "/metrics")) {
        metrics_respond(c, method_is(r, "HEAD"), method_is(r, "GET") || method_is(r, "HEAD"));
        return;
    }
    if (serve_static(c, r) == 0)
        return;
    reject(c, ERR_HTTP_404, 404, "Not Found", NULL, "not found\n");
}

/* 1 when the bytes from `from` on may complete a head (a blank line), so
 * that a slow client does not make us parse the same head again per byte. */
static int may_end_head(const struct proto_buf *b, size_t from)
{
    size_t i = from > 3 ? from - 3 : 0;

    for (; i + 1 < b->len; i++)
        if (b->data[i] == '\n' && (b->data[i + 1] == '\n' ||
                                   (b->data[i + 1] == '\r' && i + 2 < b->len &&
                                    b->data[i + 2] == '\n')))
            return 1;
    return 0;
}

static void on_read(struct conn *c)
{
    struct http_conn *h = c->owner;
    struct proto_http_req req;
    size_t room, before = h->head.len;
    ssize_t n;

    /* One byte past the limit tells "too large" from "exactly full". */
    room = PROTO_HTTP_MAX_HEAD + 1 - h->head.len;
    if (proto_buf_reserve(&h->head, room) != 0) {
        conn_kill(c);
        return;
    }
    n = conn_read(c, h->head.data + h->head.len, room);
    if (n <= 0)
        return;
    h->head.len += (size_t)n;
    if (!may_end_head(&h->head, before) && h->head.len <= PROTO_HTTP_MAX_HEAD)
        return;
    switch (proto_http_parse(h->head.data, h->head.len, &req)) {
    case PROTO_HTTP_INCOMPLETE:
        return;
    case PROTO_HTTP_TOO_LARGE:
        reject(c, ERR_HTTP_431, 431, "Request Header Fields Too Large", NULL,
               "request head over 8 KiB\n");
        return;
    case PROTO_HTTP_BAD:
        reject(c, ERR_HTTP_400, 400, "Bad Request", NULL, "malformed request\n");
        return;
    case PROTO_HTTP_DONE:
        route(c, &req, h->head.data + req.head_len, h->head.len - req.head_len);
        return;
    }
}

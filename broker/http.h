/* http.h: the HTTP side of the listen port.
 *
 * A new connection first reads one request head (at most 8 KiB; slower than
 * handshake_timeout_ms and it is closed). Then:
 *   over max_connections (at accept)             -> 503
 *   GET <ws_path> with a valid RFC 6455 upgrade  -> 101, and the connection
 *                                                  becomes a session
 *   Origin not in allowed_origins                -> 403
 *   auth_secret set and no valid token           -> 401
 *   GET <ws_path> without an upgrade             -> 426
 *   Sec-WebSocket-Version other than 13          -> 426 + Sec-WebSocket-Version: 13
 *   GET|HEAD /healthz                            -> 200 "ok" / 503 while Redis is down
 *   GET|HEAD /metrics                            -> 200, Prometheus text
 *   GET|HEAD of a file of static_dir ("/" is     -> 200, from memory (docroot.h)
 *   /index.html)
 *   malformed head                               -> 400
 *   head over 8 KiB                              -> 431
 *   any other path                               -> 404
 * Every answer but 101 closes the connection (Connection: close). */
#ifndef BROKER_HTTP_H
#define BROKER_HTTP_H

#include <sys/socket.h>

#include "cidr.h"
#include "conn.h"

struct cfg;
struct peer_table;
struct docroot;

struct http_env {
    const struct cfg *cfg;
    const struct docroot *docroot; /* static_dir's files; NULL: none */
    size_t max_connections; /* per worker, resolved from cfg (0: auto) */
    struct cidr trusted[CIDR_MAX]; /* trusted_proxies, parsed */
    int ntrusted;
    struct peer_table *peers;      /* sessions per client address */
    int (*healthy)(void *arg); /* 1 while the Redis link is up */
    void *arg;
};

/* Sets the environment of every HTTP connection; env is borrowed. */
void http_init(struct http_env *env);

/* Takes an accepted, non-blocking socket; sa[0..salen) is its peer's
 * address (AF_UNIX for a Unix-socket listener), borrowed for the call. */
void http_accept(struct conn_set *set, int fd, const struct sockaddr *sa, socklen_t salen);

#endif

/* peer.h: who a client is, behind the proxies the broker trusts.
 *
 * Behind nginx every TCP peer is nginx. A request from a trusted peer (a
 * Unix-socket peer, or a TCP peer inside trusted_proxies) names the client:
 * X-Forwarded-For is read from the right, skipping addresses that are
 * trusted proxies themselves (nginx's real_ip_recursive), and X-Real-IP is
 * the fallback; an untrusted peer is the client, whatever its headers say.
 *
 * A worker counts its WebSocket sessions per client address
 * (max_connections_per_ip): one refcounted entry per distinct address, held
 * by each session from that address, gone with the last. */
#ifndef BROKER_PEER_H
#define BROKER_PEER_H

#include <stddef.h>
#include <stdint.h>

#include "cidr.h"
#include "protocol/httpreq.h"

struct peer;
struct peer_table;

/* Returns NULL on ENOMEM. */
struct peer_table *peer_table_new(void);
/* Every entry must have been released. Safe on NULL. */
void peer_table_free(struct peer_table *t);

/* The client's address for request r that came from the connection's peer:
 * peer_is_unix, or the TCP peer address *peer. Returns 1 with *out set, or
 * 0 when it cannot be known (a Unix-socket peer that named no valid
 * address). */
int peer_resolve(const struct cidr *trusted, int ntrusted, int peer_is_unix,
                 const struct cidr_addr *peer, const struct proto_http_req *r,
                 struct cidr_addr *out);

/* Sessions currently held from address a. */
unsigned peer_count(const struct peer_table *t, const struct cidr_addr *a);

/* Holds one session of address a (the entry is created when new). Returns
 * the entry, or NULL on ENOMEM. */
struct peer *peer_hold(struct peer_table *t, const struct cidr_addr *a);
/* Releases one hold (the entry goes with the last). Safe on NULL. */
void peer_release(struct peer *p);

/* The address's text (valid while held). */
const char *peer_text(const struct peer *p);

#endif

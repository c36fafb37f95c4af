/* session.h: one WebSocket client, from the 101 response to its close.
 *
 * Reads go through wslay's event API (masking, fragmentation, UTF-8 checks,
 * pings, the close handshake, max message size); text messages are control
 * messages (protocol/codec.h) answered with an ack or an error. Data frames
 * reach the session through the registry's deliver hook and are queued on
 * the connection by reference.
 *
 * A wslay event context holds two 4 KiB buffers, far more than an idle
 * client should cost, so a session creates it when bytes arrive and frees it
 * again once every byte it was given belongs to a complete frame and no
 * fragmented message is open. An idle session is the struct below plus its
 * connection. */
#ifndef BROKER_SESSION_H
#define BROKER_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "frame.h"
#include "registry.h"

struct cfg;
struct auth_grant;
struct peer;

/* What every session of a worker shares; owned by the worker, which must
 * keep it valid while sessions exist (cfg may be swapped on reload). */
struct hist;

struct sess_env {
    struct event_base *base;
    struct reg *reg;
    struct hist *hist;  /* history reads (history.h); NULL: no history */
    struct frame_builder *fb;
    const struct cfg *cfg;
    struct frame *ping; /* one shared ping frame */
    /* 1 while Redis has yet to confirm the subscription of name (the ack of
     * a subscribe to it waits for reg_settle). */
    int (*sub_pending)(void *arg, const char *name, size_t len);
    void *arg;
};

/* Sets the environment of every session; env is borrowed. Returns 0, or -1
 * on ENOMEM. */
int sess_init(struct sess_env *env);

/* The registry's deliver hook: queues f (borrowed; the queue takes its own
 * reference) on cl's session. Returns 1 when queued; 0 when the session is
 * closing, or when the frame would put it over max_pending_bytes: it is
 * then closed as a slow consumer (1008) and its unsent frames dropped. */
int sess_deliver(void *arg, struct reg_client *cl, struct frame *f);

/* The registry's on_ack hook: sends a subscribe ack that waited for Redis. */
void sess_ack(void *arg, struct reg_client *cl, const char *name, size_t len, const char *rid,
              size_t ridlen);

/* Turns an upgraded connection into a session. channels (may be NULL) holds
 * the already-validated names of ?channels=, as consecutive NUL-separated
 * strings of total length channels_len; they are subscribed without acks
 * (a channel the grant does not allow gets an error frame `forbidden`).
 * rest[0..rest_len) are bytes that followed the HTTP request head. grant is
 * what the client's token allows (NULL when auth is off), peer one hold of
 * the client's address entry (NULL when unknown); the session takes both,
 * whatever happens. Returns 0 once the session owns the connection (conn_set_owner; it
 * may have closed it already); -1 on ENOMEM before that, with the
 * connection killed and still the caller's, to be freed through the
 * caller's ops. */
int sess_start(struct conn *c, const char *channels, size_t channels_len,
               const char *rest, size_t rest_len, struct auth_grant *grant,
               struct peer *peer);

/* Sends close frame `code` with `reason` (a static string) and closes
 * gracefully, if c is an open session. Called while the session's own input
 * is being read, it stops reading there and closes once the answers already
 * due have been queued. */
void sess_close(struct conn *c, uint16_t code, const char *reason);

/* Frees the scratch buffers shared by sessions (at exit). */
void sess_cleanup(void);

/* 1 when c belongs to a session (it passed the handshake). */
int sess_is_session(const struct conn *c);

#endif

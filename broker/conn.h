/* conn.h: one client socket: its events, its queue of frames, its close.
 *
 * A connection queues frames by reference (struct frame, refcounted) and
 * writes them with writev() once per loop iteration, after every other
 * callback of that iteration has run (Redis's handleClientsWithPendingWrites):
 * a client subscribed to ten channels gets ten frames in one system call.
 *
 * Owners (the HTTP reader, then the WebSocket session) plug in through
 * struct conn_ops. A connection is never freed inside a callback: conn_kill()
 * marks it and the set frees it, calling ops->on_free, when the current
 * iteration's callbacks are done.
 *
 * Closing is graceful by default (conn_end): queued frames are written, the
 * write side is shut down, and input is read and discarded until the peer
 * closes or a deadline passes, so that the peer sees the last frame instead
 * of a reset (nginx's lingering close). */
#ifndef BROKER_CONN_H
#define BROKER_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "frame.h"

struct conn;
struct conn_set;

/* Queued frames a connection holds without allocating (most hold one at a
 * time: a batch frame between a flush and the write pass). */
#define CONN_INLINE_Q 2

/* Bytes of control replies (conn_send_ctrl: pongs, acks, errors, the
 * answers to a client's own frames) a connection may have queued, far below
 * max_pending_bytes. Each reply is a private copy, never shared like a
 * batch frame, and a client that sends pings or requests without reading
 * the answers decides alone how many there are: at 8 MiB of them per
 * connection, 40 such clients pinned 179 MB. A client that reads holds
 * none of these for longer than a write. */
#define CONN_MAX_CTRL_BYTES (64 * 1024)

struct conn_ops {
    /* The socket is readable; read with conn_read(). Called only while the
     * connection is open. */
    void (*on_read)(struct conn *c);
    /* About once a second while open; now_ms is CLOCK_MONOTONIC in ms. */
    void (*on_tick)(struct conn *c, uint64_t now_ms);
    /* The connection is about to be freed, outside any other callback of
     * its own: release what the owner holds. */
    void (*on_free)(struct conn *c);
};

enum conn_state {
    CONN_OPEN = 0,
    CONN_DRAINING, /* writing what is queued, then shutting down writes */
    CONN_LINGER,   /* writes shut down; discarding input until EOF */
    CONN_DEAD      /* to be freed at the end of this iteration */
};

struct conn {
    /* What a flush and the write pass touch comes first, within 64 bytes:
     * at 10,000 clients every connection is a cache miss, so one line is
     * read per client and not three. */
    int fd;
    uint8_t state;
    uint8_t in_pending; /* on the set's list of connections to write */
    uint8_t wev_on;     /* waiting for the socket to become writable */
    struct conn *link;        /* pending-write list, then dead list */
    struct frame **q;         /* ring of queued frames: qi, or the heap once grown */
    uint32_t qhead, qlen, qcap; /* qcap is a power of two */
    uint32_t qoff;            /* bytes of q[qhead] already written */
    size_t out_bytes;         /* bytes queued and not yet written */
    struct conn_set *set;
    struct frame *qi[CONN_INLINE_Q]; /* the ring while it fits: no allocation */
    const struct conn_ops *ops;
    void *owner;
    size_t ctrl_bytes;        /* of out_bytes, those of queued control replies */
    struct conn *prev, *next; /* every connection of the set */
    uint64_t deadline_ms;     /* DRAINING/LINGER: kill after this */
    struct event rev;
    struct event wev;
};

/* Creates the set of connections of one event loop. Returns NULL on ENOMEM.
 * max_pending_bytes bounds each connection's queue (see conn_send). */
struct conn_set *conn_set_new(struct event_base *base, size_t max_pending_bytes);
void conn_set_set_max_pending(struct conn_set *s, size_t max_pending_bytes);
/* Frees every connection (on_free is called for each) and the set. */
void conn_set_free(struct conn_set *s);
/* Number of connections in the set, in any state. */
size_t conn_set_count(const struct conn_set *s);
/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t conn_now_ms(void);

/* Visits every open connection. fn may conn_end() or conn_kill() it. */
void conn_set_foreach(struct conn_set *s, void (*fn)(struct conn *c, void *arg), void *arg);

/* Takes the accepted socket fd, which must be non-blocking already. Returns
 * NULL and closes fd on failure. */
struct conn *conn_new(struct conn_set *s, int fd, const struct conn_ops *ops, void *owner);

/* Hands c to a new owner: from now on ops and owner receive its callbacks
 * (on_free included). The old owner keeps what it holds and releases it
 * itself once the handover has succeeded; until this is called, a failure
 * (conn_kill) frees through the old owner, which is still whole. */
void conn_set_owner(struct conn *c, const struct conn_ops *ops, void *owner);

/* Reads up to len bytes. Returns the count (> 0), 0 when nothing is
 * available now, or -1 when the peer closed or the socket failed; the
 * connection is then killed. */
ssize_t conn_read(struct conn *c, void *buf, size_t len);

/* Queues f, taking a reference of its own. Returns 0; or -1 when the
 * connection is not open (errno EPIPE; nothing queued) or when the queue
 * would exceed max_pending_bytes (errno ENOBUFS; nothing queued; the caller
 * decides). */
int conn_send(struct conn *c, struct frame *f);
/* Queues a private copy of p[0..n) (an HTTP response). Same returns as
 * conn_send, and errno ENOMEM when the copy cannot be made. */
int conn_send_copy(struct conn *c, const void *p, size_t n);
/* The same for a control reply: also -1 with errno ENOBUFS (nothing
 * queued) when the connection's queued control replies would exceed
 * CONN_MAX_CTRL_BYTES. */
int conn_send_ctrl(struct conn *c, const void *p, size_t n);

/* Writes what is queued now instead of at the end of the iteration: for
 * answers to one client (an HTTP response, the 101, an ack), where the
 * delay would only add latency. Batch frames stay deferred, so that a
 * client's frames of one flush leave in one writev. */
void conn_flush(struct conn *c);

/* Drops queued frames that have not started to go out (a frame partly
 * written is kept, so the stream stays well formed), control replies
 * included. Returns the number of batched messages those frames carried. */
uint64_t conn_drop_queued(struct conn *c);

/* Graceful close: write what is queued, shut down writes, linger. Once
 * called, on_read and on_tick are no longer called. */
void conn_end(struct conn *c);
/* Immediate close; the connection is freed at the end of the iteration. */
void conn_kill(struct conn *c);

#endif

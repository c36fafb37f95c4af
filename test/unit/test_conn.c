/* test_conn.c: handing a connection from one owner to another
 * (conn_set_owner, broker/conn.h) over a socketpair: a connection killed
 * before the handover is freed through its first owner, one killed after it
 * through the second, each exactly once, and never while a callback runs. */
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/util.h>

#include "broker/conn.h"
#include "t.h"

static int freed_a, freed_b;

static void on_read(struct conn *c)
{
    char buf[64];

    (void)conn_read(c, buf, sizeof(buf));
}

static void on_tick(struct conn *c, uint64_t now)
{
    (void)c;
    (void)now;
}

static void free_a(struct conn *c)
{
    CHECK(c->owner == &freed_a);
    freed_a++;
}

static void free_b(struct conn *c)
{
    CHECK(c->owner == &freed_b);
    freed_b++;
}

static const struct conn_ops ops_a = {on_read, on_tick, free_a};
static const struct conn_ops ops_b = {on_read, on_tick, free_b};

static struct conn *make(struct conn_set *set, int *peer)
{
    int sv[2];

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 || evutil_make_socket_nonblocking(sv[0]))
        abort();
    *peer = sv[1];
    return conn_new(set, sv[0], &ops_a, &freed_a);
}

int main(void)
{
    struct event_base *base = event_base_new();
    struct conn_set *set = base ? conn_set_new(base, 1 << 20) : NULL;
    struct conn *c;
    int peer;

    if (set == NULL)
        return 2;
    /* A failed handover: killed while still the first owner's. */
    c = make(set, &peer);
    CHECK(c != NULL && conn_set_count(set) == 1);
    conn_kill(c);
    CHECK(freed_a == 0); /* not inside the caller's stack */
    event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK(freed_a == 1 && freed_b == 0 && conn_set_count(set) == 0);
    close(peer);

    /* A handover, then a kill: the new owner frees, once. */
    c = make(set, &peer);
    conn_set_owner(c, &ops_b, &freed_b);
    CHECK(c->ops == &ops_b && c->owner == &freed_b);
    conn_kill(c);
    event_base_loop(base, EVLOOP_NONBLOCK);
    CHECK(freed_a == 1 && freed_b == 1 && conn_set_count(set) == 0);
    close(peer);

    /* Connections left at the end are freed through their owner. */
    c = make(set, &peer);
    conn_set_owner(c, &ops_b, &freed_b);
    conn_set_free(set);
    CHECK(freed_b == 2 && freed_a == 1);
    close(peer);
    event_base_free(base);
    return t_done("conn");
}

/* fuzz_ws.c: the WebSocket receive path of a session, as the daemon runs
 * it: the input is what a client sends after the 101 (frames), handed to
 * sess_start() like bytes that followed the request head, then read back
 * by wslay, decoded as control messages and answered through the
 * connection's queue into a real socket. */
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "broker/config.h"
#include "broker/conn.h"
#include "broker/frame.h"
#include "broker/registry.h"
#include "broker/session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct event_base *base;
static struct conn_set *set;
static struct reg *reg;
static struct sess_env env;
static struct cfg cfg;

static void nop(void *arg, const char *name, size_t len)
{
    (void)arg, (void)name, (void)len;
}

static void setup(void)
{
    struct reg_hooks h = {nop, nop, sess_deliver, sess_ack, NULL};
    struct frame_builder *fb;

    if (cfg_defaults(&cfg) != 0 || (base = event_base_new()) == NULL ||
        (fb = frame_builder_new()) == NULL ||
        (set = conn_set_new(base, 1 << 20)) == NULL || (reg = reg_new(base, fb, &h)) == NULL)
        abort();
    batcher_configure(reg_batcher(reg), 0, 65536);
    env.reg = reg;
    env.fb = fb;
    env.cfg = &cfg;
    env.base = base;
    if (sess_init(&env) != 0)
        abort();
}

static void noread(struct conn *c)
{
    (void)c;
}

static const struct conn_ops bare = {noread, NULL, NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2], i;
    char sink[65536];
    struct conn *c;

    if (base == NULL)
        setup();
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
        return 0;
    if ((c = conn_new(set, sv[0], &bare, NULL)) == NULL) {
        close(sv[1]);
        return 0;
    }
    sess_start(c, NULL, 0, (const char *)data, size, NULL, NULL);
    /* Publish on a channel the input may have subscribed to. */
    reg_publish(reg, "a", 1, "{\"x\":1}", 7, 1, NULL);
    event_base_loop(base, EVLOOP_NONBLOCK);
    while (read(sv[1], sink, sizeof(sink)) > 0)
        ;
    /* The peer goes away; whatever state the session is in, it must then be
     * freed within a few iterations (c may already be gone: not touched). */
    close(sv[1]);
    for (i = 0; i < 8 && conn_set_count(set) > 0; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    if (conn_set_count(set) != 0)
        abort();
    return 0;
}

/* listen.h: the listening sockets the master binds for its workers.
 *
 * Every `listen` line gives each worker sockets of its own, bound before the
 * first fork so that a bad address fails at start:
 *   HOST:PORT   one SO_REUSEPORT socket per worker on the same address
 *               (after a plain bind has checked that nothing else, such as
 *               another broker, holds the port)
 *   unix:PATH   one socket file per worker, PATH.1, PATH.2, ..., so that
 *               nginx can balance across workers with least_conn (a shared
 *               Unix socket wakes whichever worker the kernel likes); files
 *               get listen_socket_mode and listen_socket_group. A file left
 *               by a broker that died (nothing accepts on it) is replaced; a
 *               file a running broker accepts on is refused, like a busy
 *               port.
 * The master keeps the sockets across worker restarts (a replaced worker
 * inherits its backlog) and, at exit, removes the socket files it created,
 * if they are still the ones it bound. */
#ifndef BROKER_LISTEN_H
#define BROKER_LISTEN_H

#include <stdint.h>

#include "config.h"

struct lsn_sock {
    int fd;
    uint8_t is_unix;
    const struct cfg_listen *l; /* borrowed from the configuration */
};

struct lsn_set;

/* Binds every listener for every worker. Returns NULL after logging why. */
struct lsn_set *lsn_open(const struct cfg *cfg, int nworkers);

/* In a worker after fork: moves worker i's sockets into out (at most
 * CFG_MAX_LISTEN; the caller owns them from then on) and closes every other
 * socket of the set. Returns how many. */
int lsn_take(struct lsn_set *s, int i, struct lsn_sock *out);

/* Closes every socket (the master stops accepting). */
void lsn_close(struct lsn_set *s);

/* Closes what is open, removes the socket files this process created and
 * still finds as it bound them (in the master only: a worker leaves them),
 * and frees. Safe on NULL. */
void lsn_free(struct lsn_set *s);

/* Writes "127.0.0.1:8080, unix:/run/broker.sock.N" into buf, for logs. */
void lsn_describe(const struct cfg *cfg, char *buf, size_t len);

#endif

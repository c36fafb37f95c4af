/* worker.h: one worker process: one libevent loop serving clients.
 *
 * The worker accepts on the socket the master bound for it, connects to
 * Redis, and wires the modules of the data path:
 *   rsub (redis.h) -> (validate) -> registry -> batch -> session/conn
 * and of the control path:
 *   conn -> http -> session -> registry -> rsub.
 * SIGTERM or SIGINT stops it gracefully: no more accepts, pending batches
 * flushed, close 1001 to every client, exit when they are gone or after
 * shutdown_timeout_s; a second signal exits at once. */
#ifndef BROKER_WORKER_H
#define BROKER_WORKER_H

struct cfg;
struct lsn_sock;

/* Runs until stopped, accepting on socks[0..n) (bound, listening,
 * non-blocking sockets: TCP or Unix, listen.h). Takes ownership of every one
 * in every case: each is closed by the time worker_run returns, by the
 * listener that took it or, when the worker fails before making one, by
 * worker_run itself; the caller must not close them. cfg is the worker's own copy:
 * SIGHUP re-reads cfg->file and applies the keys a reload may change,
 * SIGUSR1 reopens the log file. Returns the process exit status: 0 after a
 * clean stop, 1 when the worker could not start. */
int worker_run(struct cfg *cfg, struct lsn_sock *socks, int n);

#endif

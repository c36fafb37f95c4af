/* master.h: the master process: binds, forks and supervises the workers.
 *
 * The master binds one listening socket per worker (SO_REUSEPORT on the
 * same address) before forking, so a bad `listen` fails at start, and keeps
 * them: a worker that dies is replaced by one that inherits the same socket,
 * and connections waiting in its backlog are not lost. It does no client
 * I/O. Signals are taken synchronously with sigtimedwait() (no handlers):
 *   SIGCHLD          reap; a dead worker is replaced at once, or with a
 *                    backoff (1 s doubling to 30 s) when it keeps dying young
 *   SIGTERM, SIGINT  graceful stop: workers close clients with 1001 and exit;
 *                    the master exits 0 when they are gone (a worker still
 *                    there after shutdown_timeout_s + 2 s is killed); a
 *                    second signal makes workers exit at once
 *   SIGHUP           reload: the file is read again; if it is invalid the
 *                    error (FILE:LINE) is logged and nothing changes; else
 *                    live keys apply in every worker, and keys that need a
 *                    restart are named in the log
 *   SIGUSR1          reopen the log file (logrotate), in every process */
#ifndef BROKER_MASTER_H
#define BROKER_MASTER_H

struct cfg;

/* Runs the master until it stops. cfg is the loaded configuration (reloads
 * update it). on_bound (may be NULL) is called once, in the master, after
 * every listening socket is bound and before the first worker is forked:
 * the moment this process is known to own the port (the pid file is written
 * then). A nonzero return from it stops the start, and master_run returns 1.
 * Returns the exit status; in a worker process (after fork) it returns the
 * worker's status with *is_worker set, and the caller only cleans up and
 * exits. */
int master_run(struct cfg *cfg, int (*on_bound)(void *arg), void *arg, int *is_worker);

#endif

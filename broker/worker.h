/* worker.h: one worker process: one libevent loop serving clients.
 *
 * The worker binds the listen address (SO_REUSEPORT, so several workers can
 * share it), connects to Redis, and wires the modules of the data path:
 *   redislink -> (validate) -> registry -> batch -> session/conn
 * and of the control path:
 *   conn -> http -> session -> registry -> redislink.
 * SIGTERM or SIGINT stops it gracefully: no more accepts, pending batches
 * flushed, close 1001 to every client, exit when they are gone or after
 * shutdown_timeout_s; a second signal exits at once. */
#ifndef BROKER_WORKER_H
#define BROKER_WORKER_H

struct cfg;

/* Runs until stopped. cfg is borrowed. Returns the process exit status:
 * 0 after a clean stop, 1 when the worker could not start. */
int worker_run(const struct cfg *cfg);

#endif

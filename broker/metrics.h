/* metrics.h: counters of every worker in memory shared with the master,
 * and their Prometheus text exposition for GET /metrics.
 *
 * The master maps one region before forking: a slot of struct stats per
 * worker, plus the totals of workers that have exited, so that a counter
 * never goes backwards when a worker is replaced. Each worker writes only
 * its own slot (plain increments: one writer); whichever worker answers
 * /metrics reads every slot and sums them. The master is the only writer
 * of the rest (which slots are live, the retired totals), and moves a dead
 * worker's counters to the retired totals under a seqlock, so that a
 * reader sees either the slot or the totals that took it in, never both or
 * neither (metrics.c explains the memory order). */
#ifndef BROKER_METRICS_H
#define BROKER_METRICS_H

#include <stdint.h>

#include "protocol/buf.h"

#define METRICS_MAX_WORKERS 256

/* Maps the shared region for nworkers slots (master, before forking).
 * Returns 0, or -1 with errno set. Until then `stats` is process-local. */
int metrics_init(int nworkers);
/* Unmaps the region (master, at exit). */
void metrics_free(void);

/* In the master, once slot i's worker is forked: marks the slot live. */
void metrics_worker_started(int slot);

/* In a worker: points `stats` at slot i (0-based), which is zero. */
void metrics_attach(int slot);

/* In the master, after reaping slot i's worker: adds its counters to the
 * retired totals, clears the slot, marks it not live, and counts a restart
 * when restart is 1, all at once for readers. */
void metrics_worker_exited(int slot, int restart);

/* Appends the exposition (text format 0.0.4) summed over all workers, from
 * one consistent reading of the region. Returns 0, or -1 with errno ENOMEM,
 * or EAGAIN when the master seems stuck in the middle of an update (killed
 * there: then nothing is consistent any more). */
int metrics_render(struct proto_buf *out);

#endif

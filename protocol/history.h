/* history.h: channel history on the wire (PROTOCOL.md section 7).
 *
 * A message published through the broker's Redis function broker_publish
 * reaches subscribers of Redis as
 *     "\0H" <offset> ":" <epoch> "\0" <payload>
 * where offset is the message's position in its channel (1, 2, 3, ...) and
 * epoch names the channel's history (a new one whenever the history was
 * created afresh, after it expired or Redis lost it). The broker strips the
 * prefix and carries the position in its batches and acks. A plain PUBLISH
 * never starts with NUL (no JSON does), so both kinds mix on one channel. */
#ifndef PROTO_HISTORY_H
#define PROTO_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "json.h"

/* Longest epoch: base-36 digits [0-9a-z]. */
#define PROTO_EPOCH_MAX 32

/* A position in a channel's history; offset 0: none (a plain publish). */
struct proto_pos {
    uint64_t offset;
    uint8_t epoch_len;
    char epoch[PROTO_EPOCH_MAX + 1]; /* NUL-terminated */
};

/* 1 when e[0..n) is a valid epoch: 1 to PROTO_EPOCH_MAX of [0-9a-z]. */
int proto_epoch_valid(const char *e, size_t n);

/* Recognises the prefix of p[0..n). Returns 1 with *pos filled and
 * *payload and *plen past the prefix; 0 when p has none (a plain PUBLISH:
 * they are p and n); -1 when it starts like one but is malformed
 * (offset not a positive decimal, epoch invalid, no closing NUL). */
int proto_pos_strip(const char *p, size_t n, struct proto_pos *pos, const char **payload,
                    size_t *plen);

/* Writes the prefix for pos into out (appended). Returns 0, or -1 on ENOMEM. */
int proto_pos_prefix(struct proto_buf *out, const struct proto_pos *pos);

/* Appends `,"offset":N,"epoch":"E"` (the members a batch or an ack of a
 * history channel carries). Returns 0, or -1 on ENOMEM. */
int proto_pos_members(struct proto_buf *out, const struct proto_pos *pos);

/* The end of a batch of a history channel: `],"offset":N,"epoch":"E"}` in
 * place of PROTO_BATCH_CLOSE. Returns 0, or -1 on ENOMEM. */
int proto_batch_close_pos(struct proto_buf *out, const struct proto_pos *pos);

/* Decodes the "since" member of a subscribe: {"offset":N,"epoch":"E"} with
 * N a non-negative integer and E a string of at most 64 bytes (an epoch the
 * broker never issued simply does not match). Returns 0, or -1 with *why. */
int proto_since_decode(struct proto_json_span v, struct proto_pos *since, const char **why);

#endif

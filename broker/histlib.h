/* histlib.h: channel history in Redis, as a Redis function library.
 *
 * Publishers that want history call, with any Redis client,
 *     FCALL broker_publish 1 <channel> <payload> [history_size] [history_ttl_s]
 * which atomically takes the channel's next offset (1, 2, 3, ...), appends
 * (offset, payload) to the channel's stream (capped at history_size entries,
 * expiring history_ttl_s after the last publish), starts a new random epoch
 * when the channel had no history, and publishes the payload on the channel
 * (PUBLISH; SPUBLISH in sharded cluster mode) behind the prefix
 * protocol/history.h describes. It returns the offset. The broker reads with
 *     FCALL_RO broker_range 1 <channel> <count> after <offset> | last
 * Keys live in the channel's hash slot: `broker:{<tag>}:<channel>:s` and
 * `:m` for a channel with a hash tag {<tag>}, `broker:{<channel>}:s` and
 * `:m` otherwise (a channel holding `}` without a hash tag cannot have
 * history).
 *
 * The library's text carries the defaults and the publish command, so each
 * broker loads it into every primary it uses whenever a command connection
 * becomes ready, and replaces it only when what Redis has differs (brokers
 * sharing Redis must agree on history_size, history_ttl_s and the mode). */
#ifndef BROKER_HISTLIB_H
#define BROKER_HISTLIB_H

#include "protocol/buf.h"
#include "redisconn.h"

#define HLIB_VERSION 1

/* Writes the library's code into out (reset first). Returns 0, or -1 on
 * ENOMEM. */
int hlib_code(struct proto_buf *out, long long size, long long ttl_s, int sharded);

/* Loads the library over c (READY) unless Redis has it already, logging
 * what happened. Nothing to free. */
void hlib_load(struct rconn *c, long long size, long long ttl_s, int sharded);

#endif

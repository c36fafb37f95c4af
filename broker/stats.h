/* stats.h: the worker's counters, the source of /metrics and the stats log.
 *
 * Counters are plain integers bumped on the path that does the work (no
 * atomics: one process writes its own struct). `stats` points at this
 * process's struct; it is the one global of the data path, as Redis keeps
 * server.stat_*. */
#ifndef BROKER_STATS_H
#define BROKER_STATS_H

#include <stdint.h>

/* Why a Redis payload or client request was refused or dropped. */
enum stats_drop {
    DROP_OVERSIZE = 0, /* Redis payload over max_message_bytes */
    DROP_NOMEM,        /* allocation failed while batching */
    DROP_SLOW_CONSUMER,/* queued for a slow consumer when it was closed */
    DROP_NREASONS
};

/* Client-caused errors, by the answer they got. */
enum stats_err {
    ERR_HTTP_400 = 0,
    ERR_HTTP_404,
    ERR_HTTP_405,
    ERR_HTTP_426,
    ERR_HTTP_431,
    ERR_HTTP_401,         /* missing or invalid token */
    ERR_HTTP_403,         /* Origin not allowed */
    ERR_HTTP_503,         /* max_connections reached */
    ERR_HANDSHAKE_TIMEOUT,
    ERR_BAD_REQUEST,      /* control message answered with bad_request */
    ERR_BAD_FILTER,       /* subscribe answered with bad_filter */
    ERR_WS_1002,          /* protocol error */
    ERR_WS_1003,          /* binary frame */
    ERR_WS_1007,          /* invalid UTF-8 */
    ERR_WS_1009,          /* message too big */
    ERR_PONG_TIMEOUT,
    ERR_FORBIDDEN,        /* subscribe outside the token's channels */
    ERR_SUB_LIMIT,        /* max_subscriptions_per_client */
    ERR_RATE_LIMIT,       /* control message over max_control_per_s */
    ERR_TOKEN_EXPIRED,    /* closed with 4001 */
    ERR_IP_LIMIT,         /* 503: max_connections_per_ip reached */
    ERR_NREASONS
};

/* Why a Redis connection (subscriber link, shard, sentinel, topology query)
 * was lost, for broker_redis_link_losses_total{reason}. */
enum stats_redis_loss {
    STATS_LOSS_CONNECT = 0, /* the TCP connect failed */
    STATS_LOSS_CLOSED,      /* Redis (or the network) closed it */
    STATS_LOSS_OVERLOAD,    /* closed while messages poured in: most likely Redis's
                               client-output-buffer-limit pubsub (the worker fell behind) */
    STATS_LOSS_TIMEOUT,     /* connect, handshake, a command or a PING unanswered */
    STATS_LOSS_AUTH,        /* NOAUTH, WRONGPASS, NOPERM: the credentials */
    STATS_LOSS_ERROR,       /* another error answer or a protocol error */
    STATS_LOSS_NREASONS
};

struct stats {
    uint64_t connections;       /* gauge: open WebSocket sessions */
    uint64_t connections_total; /* accepted TCP connections */
    uint64_t sessions_total;    /* completed WebSocket upgrades */
    uint64_t subscriptions;     /* gauge */
    uint64_t channels;          /* gauge: channels subscribed in Redis */
    uint64_t redis_up;          /* gauge: 1 while the link is ready */
    uint64_t redis_reconnects_total;
    uint64_t redis_messages_total;
    uint64_t redis_bytes_total;
    uint64_t redis_send_failures_total; /* commands that could not be written */
    uint64_t history_requests_total;    /* history asked for (resumes, history N, probes) */
    uint64_t history_reads_total;       /* reads sent to Redis for them */
    uint64_t history_recovered_total;   /* resumes answered "recovered":true */
    uint64_t history_unrecovered_total; /* resumes answered "recovered":false */
    uint64_t history_messages_total;    /* messages delivered from history */
    uint64_t history_dropped_total;     /* payloads with a malformed history prefix */
    uint64_t redis_link_losses_total[STATS_LOSS_NREASONS];
    uint64_t frames_sent_total;        /* data frames queued to clients */
    uint64_t messages_delivered_total; /* messages in those frames */
    uint64_t bytes_sent_total;         /* bytes written to client sockets */
    uint64_t slow_consumer_disconnects_total;
    uint64_t accept_errors_total;      /* accept() failures (EMFILE, ...) */
    uint64_t dropped_total[DROP_NREASONS];
    uint64_t errors_total[ERR_NREASONS];
};

extern struct stats *stats;

const char *stats_drop_name(enum stats_drop d);
const char *stats_err_name(enum stats_err e);
const char *stats_loss_name(enum stats_redis_loss l);

#endif

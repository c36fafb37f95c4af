/* stats.c: counter storage and label names (see stats.h). */
#include "stats.h"

static struct stats local_stats;
struct stats *stats = &local_stats;

const char *stats_drop_name(enum stats_drop d)
{
    static const char *const n[DROP_NREASONS] = {"oversize", "nomem", "slow_consumer"};
    return n[d];
}

const char *stats_err_name(enum stats_err e)
{
    static const char *const n[ERR_NREASONS] = {
        "http_400", "http_404", "http_405", "http_426", "http_431", "http_401", "http_403",
        "http_503", "handshake_timeout", "bad_request", "bad_filter", "ws_1002", "ws_1003",
        "ws_1007", "ws_1009", "pong_timeout", "forbidden", "subscription_limit", "rate_limit",
        "token_expired", "ip_limit"};
    return n[e];
}

const char *stats_loss_name(enum stats_redis_loss l)
{
    static const char *const n[STATS_LOSS_NREASONS] = {"connect", "closed", "overload",
                                                       "timeout", "auth", "error"};
    return n[l];
}

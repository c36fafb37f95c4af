/* redis.c: which subscriber backend, over which addresses (see redis.h). */
#include "redis.h"

#include <stddef.h>

#include "config.h"
#include "log.h"
#include "nodesub.h"
#include "redisaddr.h"
#include "redisconn.h"
#include "sentinel.h"
#include "shardsub.h"

struct rsub *redis_subscriber_new(struct event_base *base, const struct cfg *cfg,
                                  const struct rsub_hooks *hooks)
{
    struct rconn_opts o = {0};
    struct raddr *addr = NULL;
    struct rsub *s;

    o.who = "redis";
    o.user = cfg->redis_user;
    o.password = cfg->redis_password;
    o.db = cfg->redis_db;
    o.data_link = 1;
    switch (cfg->redis_mode) {
    case CFG_REDIS_CLUSTER:
        if (cfg->cluster_sharded) {
            log_info("cluster: sharded pub/sub (SSUBSCRIBE per shard)");
            s = shardsub_new(base, cfg->redis_cluster_nodes, &o, hooks);
            goto done;
        }
        /* Global: plain SUBSCRIBE on one node; PUBLISH reaches every node. */
        o.db = -1;
        addr = raddr_list_new(cfg->redis_cluster_nodes, NULL, NULL);
        break;
    case CFG_REDIS_SENTINEL:
        addr = raddr_sentinel_new(base, cfg->redis_sentinels, cfg->redis_master_name, &o,
                                  NULL, NULL);
        break;
    default:
        addr = raddr_fixed_new(cfg->redis_host, cfg->redis_port, NULL, NULL);
        break;
    }
    s = addr ? nodesub_new(base, addr, &o, hooks) : NULL;
done:
    if (s == NULL)
        log_error("redis: out of memory starting the subscriber");
    return s;
}

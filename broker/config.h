/* config.h: the configuration file and its one table of keys.
 *
 * A file is `key value` per line; blank lines and lines whose first
 * non-blank character is '#' are ignored. Every key appears in cfg_keys[]
 * (config.c) with its type, default, bounds and whether a reload may change
 * it; parsing, `broker -t`, the defaults in `--help` and the checked
 * broker.conf.example all follow from that table. */
#ifndef BROKER_CONFIG_H
#define BROKER_CONFIG_H

#include <stddef.h>
#include <stdio.h>

enum cfg_redis_mode { CFG_REDIS_STANDALONE = 0, CFG_REDIS_SENTINEL, CFG_REDIS_CLUSTER };

/* Listeners the `listen` key may name at most. */
#define CFG_MAX_LISTEN 8
/* Longest Unix socket path (sun_path is 108 bytes; workers append ".N"). */
#define CFG_UNIX_PATH_MAX 100

/* One `listen` line: HOST:PORT, or unix:PATH (path set, host NULL). */
struct cfg_listen {
    char *host;
    int port;
    char *path;
};

struct cfg {
    /* listen HOST:PORT | unix:PATH, one or more lines */
    struct cfg_listen listen[CFG_MAX_LISTEN];
    int nlisten;
    char *listen_host;    /* the first TCP listener's (borrowed from listen[]), or NULL */
    int listen_port;
    long long listen_socket_mode;  /* permissions of Unix socket files */
    char *listen_socket_group;     /* their group; "" leaves the process's */
    char *trusted_proxies;         /* networks whose X-Forwarded-For is believed */
    long long max_connections_per_ip;
    long long history_size;        /* defaults of broker_publish (histlib.h) */
    long long history_ttl_s;
    long long history_recover_max; /* messages one resume may recover */

    /* redis_url redis://[[user]:password@]host[:port][/db] */
    char *redis_url;
    char *redis_host;
    int redis_port;
    char *redis_user;     /* NULL unless given */
    char *redis_password; /* NULL unless given */
    int redis_db;         /* -1 unless given */
    int redis_mode;       /* enum cfg_redis_mode */
    char *redis_sentinels;     /* "host:port,..." */
    char *redis_master_name;
    char *redis_cluster_nodes; /* "host:port,..." */
    int cluster_sharded;       /* cluster_pubsub sharded (1) or global (0) */

    long long batch_interval_ms;
    long long batch_max_bytes;
    long long max_message_bytes;
    char *ws_path;
    long long max_client_message_bytes;
    long long handshake_timeout_ms;
    long long ping_interval_s;
    long long pong_timeout_s;
    long long max_pending_bytes;
    long long shutdown_timeout_s;
    int workers;          /* 0: auto */
    long long stats_interval_s;
    char *pid_file;
    char *auth_secret;       /* "" when auth is off */
    char *auth_secret_file;
    char *allowed_origins;   /* space-separated; "" allows any */
    long long max_connections;
    long long max_subscriptions_per_client;
    long long max_control_per_s;
    char *static_dir;        /* "" when off */
    int log_level;
    char *log_file;

    char *file; /* the file this was loaded from, or NULL for defaults */
};

/* Fills c with every default. Returns 0, or -1 on ENOMEM. */
int cfg_defaults(struct cfg *c);

/* Loads path over the defaults. Returns 0; or -1 with err holding
 * "FILE:LINE: ..." naming the key (or "FILE: ..." when the file cannot be
 * read). On failure c is left freed. */
int cfg_load(struct cfg *c, const char *path, char *err, size_t errlen);

/* The same from an open stream, named path in messages (c->file = path). */
int cfg_load_stream(struct cfg *c, FILE *f, const char *path, char *err, size_t errlen);

/* Frees what c owns; c may then be reloaded. Safe on a zeroed cfg. */
void cfg_free(struct cfg *c);

/* Writes the key table (name, default, meaning) for --help. */
void cfg_print_keys(FILE *out);

/* Lists, into buf, the keys whose values differ between a and b and that a
 * reload cannot change (they need a restart). Returns how many. */
int cfg_diff_restart(const struct cfg *a, const struct cfg *b, char *buf, size_t len);

/* Walks a host:port list (redis_sentinels, redis_cluster_nodes): copies the
 * next entry into host and *port and advances *list. Returns 1, 0 at the
 * end, -1 on a malformed entry or one that does not fit hostlen. */
int cfg_addr_next(const char **list, char *host, size_t hostlen, int *port);

/* Copies into dst every key of src that a reload may change. Returns 0, or
 * -1 on ENOMEM (dst keeps what it had for the keys not yet copied). */
int cfg_apply_reload(struct cfg *dst, const struct cfg *src);

/* The number of workers to run on a machine with ncpus online CPUs (as
 * sysconf(_SC_NPROCESSORS_ONLN) says; -1 when unknown): `workers`, or for
 * auto ncpus minus one, at least 1 and at most METRICS_MAX_WORKERS (the
 * slots of the shared metrics region). *capped is set to 1 when auto would
 * have asked for more than that, else 0; an explicit number over it never
 * gets here (the file is refused). */
int cfg_workers(const struct cfg *c, long ncpus, int *capped);

#endif

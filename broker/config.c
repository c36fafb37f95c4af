/* config.c: the key table, the file parser and value setters (see config.h).
 *
 * Defaults are written as text and go through the same setter as a file
 * value, so a default can never be something the file could not say. */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cidr.h"
#include "log.h"
#include "metrics.h"

#define CFG_RELOAD 1u /* a reload may change it */
#define CFG_SECRET 2u /* its value is never echoed in a message */
#define CFG_MULTI 4u  /* may be given on several lines, each adding a value */

struct cfg_key;
typedef int (*cfg_setter)(struct cfg *c, const struct cfg_key *k, const char *v,
                          char *why, size_t whylen);

struct cfg_key {
    const char *name;
    const char *def;
    cfg_setter set;
    size_t off;
    long long min, max;
    unsigned flags;
    const char *help;
};

static int set_int(struct cfg *, const struct cfg_key *, const char *, char *, size_t);
static int set_bytes(struct cfg *, const struct cfg_key *, const char *, char *, size_t);
static int set_listen(struct cfg *, const struct cfg_key *, const char *, char *, size_t);
static int set_mode(struct cfg *, const struct cfg_key *, const char *, char *, size_t);
static int set_cidrs(struct cfg *, const struct cfg_key *, const char *, char *, size_t);
static int set_redis_url(struct cfg *, const struct cfg_key *, const char *, char *, size_t);
static int set_path(struct cfg *, const struct cfg_key *, const char *, char *, size_t);
static int set_str(struct cfg *, const struct cfg_key *, const char *, char *, size_t);
static int set_log_level(struct cfg *, const struct cfg_key *, const char *, char *, size_t);
static int set_workers(struct cfg *, const struct cfg_key *, const char *, char *, size_t);
static int set_secret(struct cfg *, const struct cfg_key *, const char *, char *, size_t);
static int set_redis_mode(struct cfg *, const struct cfg_key *, const char *, char *, size_t);
static int set_cluster_pubsub(struct cfg *, const struct cfg_key *, const char *, char *,
                              size_t);
static int set_addr_list(struct cfg *, const struct cfg_key *, const char *, char *, size_t);
static int set_secret_file(struct cfg *, const struct cfg_key *, const char *, char *, size_t);
static int set_dir(struct cfg *, const struct cfg_key *, const char *, char *, size_t);

#define OFF(f) offsetof(struct cfg, f)
#define STR_(x) #x
#define STR(x) STR_(x)
#define KiB 1024LL
#define MiB (1024LL * 1024)

static const struct cfg_key cfg_keys[] = {
    {"listen", "127.0.0.1:8080", set_listen, 0, 0, 0, CFG_MULTI,
     "HOST:PORT or unix:PATH the WebSocket and HTTP endpoint listens on; one line per "
     "listener, up to 8 (unix:PATH gives each worker its own socket PATH.1, PATH.2, ...)"},
    {"listen_socket_mode", "0660", set_mode, OFF(listen_socket_mode), 0, 0777, 0,
     "permissions (octal) of the Unix socket files"},
    {"listen_socket_group", "", set_str, OFF(listen_socket_group), 0, 0, 0,
     "group of the Unix socket files (e.g. www-data, so that nginx may connect); empty: "
     "the broker's own"},
    {"trusted_proxies", "", set_cidrs, OFF(trusted_proxies), 0, 0, CFG_RELOAD,
     "networks (CIDR, comma-separated) of proxies whose X-Forwarded-For / X-Real-IP name "
     "the client; Unix-socket peers are always trusted"},
    {"history_size", "100", set_int, OFF(history_size), 1, 1000000, 0,
     "messages broker_publish keeps per channel by default (FCALL broker_publish 1 CHANNEL "
     "PAYLOAD [SIZE] [TTL_S]); every broker sharing Redis must agree"},
    {"history_ttl_s", "300", set_int, OFF(history_ttl_s), 1, 31536000, 0,
     "seconds a channel's history lives after its last broker_publish, by default"},
    {"history_recover_max", "1000", set_int, OFF(history_recover_max), 1, 100000, CFG_RELOAD,
     "messages a resume (since) or history request may deliver at most; a client further "
     "behind gets recovered:false"},
    {"max_connections_per_ip", "0", set_int, OFF(max_connections_per_ip), 0, 10000000,
     CFG_RELOAD, "WebSocket sessions per client address per worker, over it 503; 0: no limit"},
    {"redis_url", "redis://127.0.0.1:6379", set_redis_url, 0, 0, 0, CFG_SECRET,
     "redis://[[user]:password@]host[:port][/db]; AUTH and SELECT are sent when given"},
    {"redis_mode", "standalone", set_redis_mode, 0, 0, 0, 0,
     "standalone, sentinel (redis_sentinels, redis_master_name) or cluster "
     "(redis_cluster_nodes)"},
    {"redis_sentinels", "", set_addr_list, OFF(redis_sentinels), 0, 0, 0,
     "sentinel mode: comma-separated host:port of the sentinels"},
    {"redis_master_name", "mymaster", set_str, OFF(redis_master_name), 0, 0, 0,
     "sentinel mode: the name the sentinels know the primary by"},
    {"redis_cluster_nodes", "", set_addr_list, OFF(redis_cluster_nodes), 0, 0, 0,
     "cluster mode: comma-separated host:port of some cluster nodes (seeds)"},
    {"cluster_pubsub", "sharded", set_cluster_pubsub, 0, 0, 0, 0,
     "cluster mode: sharded (SSUBSCRIBE per shard; publishers use SPUBLISH) or global "
     "(SUBSCRIBE on one node; publishers use PUBLISH)"},
    {"batch_interval_ms", "200", set_int, OFF(batch_interval_ms), 0, 60000, CFG_RELOAD,
     "how often pending messages are flushed, per channel; 0 sends each message at once"},
    {"batch_max_bytes", "65536", set_bytes, OFF(batch_max_bytes), 256, 64 * MiB, CFG_RELOAD,
     "a channel's pending batch that reaches this size is flushed at once"},
    {"max_message_bytes", "1048576", set_bytes, OFF(max_message_bytes), 1, 512 * MiB,
     CFG_RELOAD, "larger Redis payloads are dropped, logged and counted"},
    {"ws_path", "/ws", set_path, OFF(ws_path), 0, 0, 0,
     "URL path of the WebSocket endpoint"},
    {"max_client_message_bytes", "4096", set_bytes, OFF(max_client_message_bytes), 64,
     16 * MiB, CFG_RELOAD, "larger client messages are refused with close 1009"},
    {"handshake_timeout_ms", "5000", set_int, OFF(handshake_timeout_ms), 100, 600000,
     CFG_RELOAD, "a connection that has not completed its HTTP request by then is closed"},
    {"ping_interval_s", "30", set_int, OFF(ping_interval_s), 0, 86400, CFG_RELOAD,
     "a client silent this long is pinged; 0 turns pings off"},
    {"pong_timeout_s", "10", set_int, OFF(pong_timeout_s), 1, 3600, CFG_RELOAD,
     "a pinged client that stays silent this long is disconnected"},
    {"max_pending_bytes", "8388608", set_bytes, OFF(max_pending_bytes), 64 * KiB,
     4096 * MiB, CFG_RELOAD,
     "a client with more unsent bytes than this is a slow consumer and is closed (1008)"},
    {"shutdown_timeout_s", "10", set_int, OFF(shutdown_timeout_s), 1, 3600, CFG_RELOAD,
     "on SIGTERM/SIGINT, clients get close 1001 and this long to go before exit"},
    /* Each worker has a slot in the shared metrics region, which is sized
     * at compile time: a number over it is an error, and auto stops there
     * (cfg_workers). */
    {"workers", "auto", set_workers, 0, 1, METRICS_MAX_WORKERS, 0,
     "worker processes: a number from 1 to " STR(METRICS_MAX_WORKERS) ", or auto for the CPU "
     "count minus one (at least 1, at most " STR(METRICS_MAX_WORKERS) ")"},
    {"stats_interval_s", "15", set_int, OFF(stats_interval_s), 0, 86400, CFG_RELOAD,
     "each worker logs a one-line summary this often; 0 turns it off"},
    {"pid_file", "", set_str, OFF(pid_file), 0, 0, 0,
     "file the master writes its process id to; empty means none"},
    {"auth_secret", "", set_secret, OFF(auth_secret), 0, 0, CFG_RELOAD | CFG_SECRET,
     "HS256 key: when set, every handshake needs a valid JWT (?token= or Bearer)"},
    {"auth_secret_file", "", set_secret_file, OFF(auth_secret_file), 0, 0, CFG_RELOAD,
     "file holding auth_secret (trailing newline ignored), instead of auth_secret"},
    {"allowed_origins", "", set_str, OFF(allowed_origins), 0, 0, CFG_RELOAD,
     "space-separated Origins allowed to connect (e.g. https://app.example); empty: any"},
    {"max_connections", "0", set_int, OFF(max_connections), 0, 10000000, CFG_RELOAD,
     "connections per worker, over it 503; 0: what the open-file limit allows minus 64"},
    {"max_subscriptions_per_client", "100", set_int, OFF(max_subscriptions_per_client), 1,
     1000000, CFG_RELOAD, "more subscriptions get error limit"},
    {"max_control_per_s", "50", set_int, OFF(max_control_per_s), 1, 1000000, CFG_RELOAD,
     "control messages per second per client (bursts of twice that); over it error limit, "
     "then close 1008 if it goes on"},
    {"static_dir", "", set_dir, OFF(static_dir), 0, 0, CFG_RELOAD,
     "directory served at / (GET and HEAD only; e.g. protocol/demo), read into memory at "
     "start and on reload (1 MiB per file, 8 MiB in all); empty: off"},
    {"log_level", "info", set_log_level, OFF(log_level), 0, 0, CFG_RELOAD,
     "error, warn, info or debug"},
    {"log_file", "", set_str, OFF(log_file), 0, 0, 0,
     "file to append the log to; empty means stderr"},
};

#define NKEYS (sizeof(cfg_keys) / sizeof(cfg_keys[0]))

static long long *int_field(struct cfg *c, const struct cfg_key *k)
{
    return (long long *)((char *)c + k->off);
}

static char **str_field(struct cfg *c, const struct cfg_key *k)
{
    return (char **)((char *)c + k->off);
}

static int parse_ll(const char *v, long long *out, int allow_suffix)
{
    char *end;
    long long n, mult = 1;

    if (!isdigit((unsigned char)*v))
        return -1;
    errno = 0;
    n = strtoll(v, &end, 10);
    if (errno != 0)
        return -1;
    if (allow_suffix && *end != '\0' && end[1] == '\0') {
        switch (tolower((unsigned char)*end)) {
        case 'k': mult = KiB; break;
        case 'm': mult = MiB; break;
        case 'g': mult = 1024 * MiB; break;
        default: return -1;
        }
        end++;
    }
    if (*end != '\0' || n > LLONG_MAX / mult)
        return -1;
    *out = n * mult;
    return 0;
}

static int set_number(struct cfg *c, const struct cfg_key *k, const char *v,
                      char *why, size_t whylen, int bytes)
{
    long long n;

    if (parse_ll(v, &n, bytes) != 0 || n < k->min || n > k->max) {
        snprintf(why, whylen, "expected %s from %lld to %lld",
                 bytes ? "a byte count (suffix k, m or g allowed)" : "an integer",
                 k->min, k->max);
        return -1;
    }
    *int_field(c, k) = n;
    return 0;
}

static int set_int(struct cfg *c, const struct cfg_key *k, const char *v, char *why,
                   size_t whylen)
{
    return set_number(c, k, v, why, whylen, 0);
}

static int set_bytes(struct cfg *c, const struct cfg_key *k, const char *v, char *why,
                     size_t whylen)
{
    return set_number(c, k, v, why, whylen, 1);
}

static int replace_str(char **field, const char *v, size_t n)
{
    char *s = malloc(n + 1);

    if (s == NULL)
        return -1;
    memcpy(s, v, n);
    s[n] = '\0';
    free(*field);
    *field = s;
    return 0;
}

static int set_str(struct cfg *c, const struct cfg_key *k, const char *v, char *why,
                   size_t whylen)
{
    if (replace_str(str_field(c, k), v, strlen(v)) != 0) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    return 0;
}

static int set_log_level(struct cfg *c, const struct cfg_key *k, const char *v,
                         char *why, size_t whylen)
{
    int l = log_level_parse(v);

    (void)k; /* the field is fixed: struct cfg.log_level */
    if (l < 0) {
        snprintf(why, whylen, "expected error, warn, info or debug");
        return -1;
    }
    c->log_level = l;
    return 0;
}

static int set_workers(struct cfg *c, const struct cfg_key *k, const char *v, char *why,
                       size_t whylen)
{
    long long n;

    if (strcmp(v, "auto") == 0) {
        c->workers = 0;
        return 0;
    }
    if (parse_ll(v, &n, 0) != 0 || n < k->min || n > k->max) {
        snprintf(why, whylen, "expected auto or a number from %lld to %lld", k->min, k->max);
        return -1;
    }
    c->workers = (int)n;
    return 0;
}

static int set_secret(struct cfg *c, const struct cfg_key *k, const char *v, char *why,
                      size_t whylen)
{
    if (c->auth_secret_file && *c->auth_secret_file) {
        snprintf(why, whylen, "give auth_secret or auth_secret_file, not both");
        return -1;
    }
    return set_str(c, k, v, why, whylen);
}

/* Reads the secret from a file, so that it stays out of the main config. */
static int set_secret_file(struct cfg *c, const struct cfg_key *k, const char *v, char *why,
                           size_t whylen)
{
    char buf[4097];
    size_t n;
    FILE *f;

    if (*v == '\0')
        return set_str(c, k, v, why, whylen);
    if (c->auth_secret && *c->auth_secret) {
        snprintf(why, whylen, "give auth_secret or auth_secret_file, not both");
        return -1;
    }
    if ((f = fopen(v, "r")) == NULL) {
        snprintf(why, whylen, "cannot read: %s", strerror(errno));
        return -1;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n == 0 || n >= sizeof(buf) - 1) {
        snprintf(why, whylen, "the file must hold a secret of 1 to 4095 bytes");
        return -1;
    }
    if (replace_str(&c->auth_secret, buf, n) != 0 || set_str(c, k, v, why, whylen) != 0) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    return 0;
}

/* A directory that must exist and be readable now (empty: none), so that a
 * mistyped static_dir is an error at FILE:LINE rather than a site of 404s.
 * What is in it is checked by `broker -t` (docroot.h). */
static int set_dir(struct cfg *c, const struct cfg_key *k, const char *v, char *why,
                   size_t whylen)
{
    DIR *d;

    if (*v != '\0') {
        if ((d = opendir(v)) == NULL) {
            snprintf(why, whylen, "cannot open the directory: %s", strerror(errno));
            return -1;
        }
        closedir(d);
    }
    return set_str(c, k, v, why, whylen);
}

static int split_host_port(const char *v, size_t n, char **host, int *port, int defport);

static int set_redis_mode(struct cfg *c, const struct cfg_key *k, const char *v, char *why,
                          size_t whylen)
{
    static const char *const modes[] = {"standalone", "sentinel", "cluster"};
    int i;

    (void)k;
    for (i = 0; i < 3; i++) {
        if (strcmp(v, modes[i]) == 0) {
            c->redis_mode = i;
            return 0;
        }
    }
    snprintf(why, whylen, "expected standalone, sentinel or cluster");
    return -1;
}

static int set_cluster_pubsub(struct cfg *c, const struct cfg_key *k, const char *v,
                              char *why, size_t whylen)
{
    (void)k;
    if (strcmp(v, "sharded") == 0)
        c->cluster_sharded = 1;
    else if (strcmp(v, "global") == 0)
        c->cluster_sharded = 0;
    else {
        snprintf(why, whylen, "expected sharded or global");
        return -1;
    }
    return 0;
}

/* A comma-separated list of host:port (IPv6 in brackets), kept as text and
 * split by the module that uses it (cfg_addr_next). */
static int set_addr_list(struct cfg *c, const struct cfg_key *k, const char *v, char *why,
                         size_t whylen)
{
    const char *p = v;
    char *host = NULL;
    int port;

    while (*p) {
        size_t n = strcspn(p, ",");
        if (split_host_port(p, n, &host, &port, 0) != 0) {
            free(host);
            snprintf(why, whylen, "expected host:port[,host:port...]");
            return -1;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    free(host);
    return set_str(c, k, v, why, whylen);
}

int cfg_addr_next(const char **list, char *host, size_t hostlen, int *port)
{
    const char *p = *list;
    char *h = NULL;
    size_t n;

    while (*p == ',' || *p == ' ')
        p++;
    if (*p == '\0')
        return 0;
    n = strcspn(p, ",");
    if (split_host_port(p, n, &h, port, 0) != 0 || strlen(h) >= hostlen) {
        free(h);
        return -1;
    }
    snprintf(host, hostlen, "%s", h);
    free(h);
    *list = p + n;
    return 1;
}

static int set_path(struct cfg *c, const struct cfg_key *k, const char *v, char *why,
                    size_t whylen)
{
    const char *p;

    if (v[0] != '/' || strlen(v) > 255) {
        snprintf(why, whylen, "expected a URL path starting with '/'");
        return -1;
    }
    for (p = v; *p; p++) {
        if ((unsigned char)*p <= 0x20 || *p == '?' || *p == '#' || (unsigned char)*p == 0x7F) {
            snprintf(why, whylen, "expected a URL path without spaces, '?' or '#'");
            return -1;
        }
    }
    return set_str(c, k, v, why, whylen);
}

/* Splits "host:port" or "[v6]:port" (port optional when defport > 0). */
static int split_host_port(const char *v, size_t n, char **host, int *port, int defport)
{
    const char *hs = v, *he, *ps = NULL;
    long long p;
    char num[8];

    if (n > 0 && v[0] == '[') {
        const char *rb = memchr(v, ']', n);
        if (rb == NULL)
            return -1;
        hs = v + 1;
        he = rb;
        if (rb + 1 < v + n) {
            if (rb[1] != ':')
                return -1;
            ps = rb + 2;
        }
    } else {
        const char *colon = NULL, *q;
        for (q = v; q < v + n; q++)
            if (*q == ':')
                colon = q;
        he = colon ? colon : v + n;
        ps = colon ? colon + 1 : NULL;
        if (colon && memchr(v, ':', (size_t)(colon - v)) != NULL)
            return -1; /* bare IPv6 needs brackets */
    }
    if (he == hs)
        return -1;
    if (ps == NULL) {
        if (defport <= 0)
            return -1;
        *port = defport;
    } else {
        size_t plen = (size_t)(v + n - ps);
        if (plen == 0 || plen >= sizeof(num))
            return -1;
        memcpy(num, ps, plen);
        num[plen] = '\0';
        if (parse_ll(num, &p, 0) != 0 || p < 1 || p > 65535)
            return -1;
        *port = (int)p;
    }
    return replace_str(host, hs, (size_t)(he - hs));
}

static void listen_clear(struct cfg *c)
{
    int i;

    for (i = 0; i < c->nlisten; i++) {
        free(c->listen[i].host);
        free(c->listen[i].path);
    }
    memset(c->listen, 0, sizeof(c->listen));
    c->nlisten = 0;
    c->listen_host = NULL;
    c->listen_port = 0;
}

/* Adds one listener; listen_host/listen_port follow the first TCP one. */
static int set_listen(struct cfg *c, const struct cfg_key *k, const char *v, char *why,
                      size_t whylen)
{
    struct cfg_listen *l;
    int i;

    (void)k;
    if (c->nlisten == CFG_MAX_LISTEN) {
        snprintf(why, whylen, "at most %d listen lines", CFG_MAX_LISTEN);
        return -1;
    }
    l = &c->listen[c->nlisten];
    if (strncmp(v, "unix:", 5) == 0) {
        const char *path = v + 5;
        if (path[0] != '/' || strlen(path) > CFG_UNIX_PATH_MAX) {
            snprintf(why, whylen, "expected unix:/absolute/path of at most %d bytes",
                     CFG_UNIX_PATH_MAX);
            return -1;
        }
        for (i = 0; i < c->nlisten; i++)
            if (c->listen[i].path && strcmp(c->listen[i].path, path) == 0) {
                snprintf(why, whylen, "this socket is listed twice");
                return -1;
            }
        if (replace_str(&l->path, path, strlen(path)) != 0) {
            snprintf(why, whylen, "out of memory");
            return -1;
        }
        c->nlisten++;
        return 0;
    }
    if (split_host_port(v, strlen(v), &l->host, &l->port, 0) != 0) {
        free(l->host);
        l->host = NULL;
        snprintf(why, whylen, "expected HOST:PORT with a port from 1 to 65535, or unix:PATH");
        return -1;
    }
    for (i = 0; i < c->nlisten; i++)
        if (c->listen[i].host && c->listen[i].port == l->port &&
            strcmp(c->listen[i].host, l->host) == 0) {
            free(l->host);
            l->host = NULL;
            snprintf(why, whylen, "this address is listed twice");
            return -1;
        }
    c->nlisten++;
    if (c->listen_host == NULL) {
        c->listen_host = l->host;
        c->listen_port = l->port;
    }
    return 0;
}

static int set_mode(struct cfg *c, const struct cfg_key *k, const char *v, char *why,
                    size_t whylen)
{
    char *end;
    long m;

    if (*v < '0' || *v > '7' || (m = strtol(v, &end, 8), *end != '\0') || m < k->min ||
        m > k->max) {
        snprintf(why, whylen, "expected an octal mode from 0 to 0777, like 0660");
        return -1;
    }
    *int_field(c, k) = m;
    return 0;
}

static int set_cidrs(struct cfg *c, const struct cfg_key *k, const char *v, char *why,
                     size_t whylen)
{
    struct cidr nets[CIDR_MAX];
    const char *bad;
    size_t badlen;

    if (cidr_list_parse(v, nets, CIDR_MAX, &bad, &badlen) < 0) {
        snprintf(why, whylen, "'%.*s' is not a network (ADDR or ADDR/BITS; at most %d)",
                 (int)(badlen > 64 ? 64 : badlen), bad, CIDR_MAX);
        return -1;
    }
    return set_str(c, k, v, why, whylen);
}

static int pct_decode(const char *s, size_t n, char **out)
{
    char *d = malloc(n + 1);
    size_t i, j = 0;

    if (d == NULL)
        return -1;
    for (i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            d[j++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else if (s[i] == '%') {
            free(d);
            return -1;
        } else {
            d[j++] = s[i];
        }
    }
    d[j] = '\0';
    free(*out);
    *out = d;
    return 0;
}

static int set_redis_url(struct cfg *c, const struct cfg_key *k, const char *v,
                         char *why, size_t whylen)
{
    const char *p = v, *at, *slash, *hostpart;
    size_t hostlen;
    long long db = -1;

    (void)k;
    free(c->redis_user);
    free(c->redis_password);
    c->redis_user = c->redis_password = NULL;
    c->redis_db = -1;
    if (strncmp(p, "redis://", 8) != 0)
        goto bad;
    p += 8;
    slash = strchr(p, '/');
    at = memchr(p, '@', slash ? (size_t)(slash - p) : strlen(p));
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon == NULL)
            goto bad;
        if (colon > p && pct_decode(p, (size_t)(colon - p), &c->redis_user) != 0)
            goto bad;
        if (pct_decode(colon + 1, (size_t)(at - colon - 1), &c->redis_password) != 0)
            goto bad;
        hostpart = at + 1;
    } else {
        hostpart = p;
    }
    hostlen = slash ? (size_t)(slash - hostpart) : strlen(hostpart);
    if (split_host_port(hostpart, hostlen, &c->redis_host, &c->redis_port, 6379) != 0)
        goto bad;
    if (slash != NULL && slash[1] != '\0') {
        if (parse_ll(slash + 1, &db, 0) != 0 || db > 1000000)
            goto bad;
    }
    c->redis_db = (int)db;
    if (replace_str(&c->redis_url, v, strlen(v)) != 0)
        goto bad;
    return 0;
bad:
    snprintf(why, whylen, "expected redis://[[user]:password@]host[:port][/db]");
    return -1;
}

static const struct cfg_key *find_key(const char *name)
{
    size_t i;

    for (i = 0; i < NKEYS; i++)
        if (strcmp(cfg_keys[i].name, name) == 0)
            return &cfg_keys[i];
    return NULL;
}

int cfg_defaults(struct cfg *c)
{
    char why[256];
    size_t i;

    memset(c, 0, sizeof(*c));
    c->redis_db = -1;
    for (i = 0; i < NKEYS; i++) {
        if (cfg_keys[i].set(c, &cfg_keys[i], cfg_keys[i].def, why, sizeof(why)) != 0) {
            cfg_free(c);
            return -1;
        }
    }
    return 0;
}

void cfg_free(struct cfg *c)
{
    listen_clear(c);
    free(c->listen_socket_group);
    free(c->trusted_proxies);
    free(c->redis_url);
    free(c->redis_host);
    free(c->redis_user);
    free(c->redis_password);
    free(c->ws_path);
    free(c->log_file);
    free(c->static_dir);
    free(c->redis_sentinels);
    free(c->redis_master_name);
    free(c->redis_cluster_nodes);
    free(c->pid_file);
    free(c->auth_secret);
    free(c->auth_secret_file);
    free(c->allowed_origins);
    free(c->file);
    memset(c, 0, sizeof(*c));
}

static char *trim(char *s)
{
    char *e;

    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        e--;
    *e = '\0';
    return s;
}

/* Parses the lines of f, named path in messages, over c (which holds the
 * defaults). Returns 0, or -1 with err filled. */
static int parse_stream(struct cfg *c, FILE *f, const char *path, char *err, size_t errlen)
{
    char *line = NULL, why[256];
    size_t cap = 0;
    ssize_t n;
    unsigned char seen[NKEYS] = {0};
    int lineno = 0, rc = -1;

    while ((n = getline(&line, &cap, f)) >= 0) {
        char *s, *key, *val;
        const struct cfg_key *k;

        lineno++;
        if (n > 4096) {
            snprintf(err, errlen, "%s:%d: line longer than 4096 bytes", path, lineno);
            goto done;
        }
        if (memchr(line, '\0', (size_t)n) != NULL) {
            snprintf(err, errlen, "%s:%d: NUL byte in line", path, lineno);
            goto done;
        }
        s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        key = s;
        while (*s && *s != ' ' && *s != '\t')
            s++;
        if (*s)
            *s++ = '\0';
        val = trim(s);
        if ((k = find_key(key)) == NULL) {
            snprintf(err, errlen, "%s:%d: unknown key '%.64s'", path, lineno, key);
            goto done;
        }
        if (seen[k - cfg_keys] && !(k->flags & CFG_MULTI)) {
            snprintf(err, errlen, "%s:%d: key '%s' given twice", path, lineno, key);
            goto done;
        }
        /* The file's lines of a repeatable key replace its default. */
        if (!seen[k - cfg_keys] && k->set == set_listen)
            listen_clear(c);
        seen[k - cfg_keys] = 1;
        if (*val == '\0' && k->set != set_str && k->set != set_secret &&
            k->set != set_secret_file && k->set != set_addr_list && k->set != set_dir &&
            k->set != set_cidrs) {
            snprintf(err, errlen, "%s:%d: key '%s': missing value", path, lineno, key);
            goto done;
        }
        if (k->set(c, k, val, why, sizeof(why)) != 0) {
            /* A secret is never echoed into a log. */
            snprintf(err, errlen, "%s:%d: key '%s': invalid value '%.128s' (%s)", path, lineno,
                     key, (k->flags & CFG_SECRET) ? "(hidden)" : val, why);
            goto done;
        }
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    free(line);
    return rc;
}

/* Keys that only make sense together. */
static int check_modes(const struct cfg *c, const char *path, char *err, size_t errlen)
{
    if (c->redis_mode == CFG_REDIS_SENTINEL && *c->redis_sentinels == '\0') {
        snprintf(err, errlen, "%s: key 'redis_mode': sentinel needs redis_sentinels", path);
        return -1;
    }
    if (c->redis_mode == CFG_REDIS_CLUSTER && *c->redis_cluster_nodes == '\0') {
        snprintf(err, errlen, "%s: key 'redis_mode': cluster needs redis_cluster_nodes", path);
        return -1;
    }
    return 0;
}

int cfg_load_stream(struct cfg *c, FILE *f, const char *path, char *err, size_t errlen)
{
    if (cfg_defaults(c) != 0) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    if (parse_stream(c, f, path, err, errlen) != 0 || check_modes(c, path, err, errlen) != 0) {
        cfg_free(c);
        return -1;
    }
    if ((c->file = strdup(path)) == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        cfg_free(c);
        return -1;
    }
    return 0;
}

int cfg_load(struct cfg *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    int r;

    if (f == NULL) {
        memset(c, 0, sizeof(*c));
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    r = cfg_load_stream(c, f, path, err, errlen);
    fclose(f);
    return r;
}

void cfg_print_keys(FILE *out)
{
    size_t i;

    for (i = 0; i < NKEYS; i++)
        fprintf(out, "  %-26s default %-24s %s%s\n", cfg_keys[i].name,
                *cfg_keys[i].def ? cfg_keys[i].def : "(empty)", cfg_keys[i].help,
                (cfg_keys[i].flags & CFG_RELOAD) ? "" : " [restart]");
}

static int value_equal(const struct cfg *a, const struct cfg *b, const struct cfg_key *k)
{
    if (k->set == set_int || k->set == set_bytes)
        return *int_field((struct cfg *)a, k) == *int_field((struct cfg *)b, k);
    if (k->set == set_listen) {
        int i;
        if (a->nlisten != b->nlisten)
            return 0;
        for (i = 0; i < a->nlisten; i++) {
            const struct cfg_listen *x = &a->listen[i], *y = &b->listen[i];
            if ((x->path == NULL) != (y->path == NULL) ||
                (x->path ? strcmp(x->path, y->path) != 0
                         : x->port != y->port || strcmp(x->host, y->host) != 0))
                return 0;
        }
        return 1;
    }
    if (k->set == set_mode)
        return *int_field((struct cfg *)a, k) == *int_field((struct cfg *)b, k);
    if (k->set == set_redis_url)
        return strcmp(a->redis_url, b->redis_url) == 0;
    if (k->set == set_log_level)
        return a->log_level == b->log_level;
    if (k->set == set_workers)
        return a->workers == b->workers;
    if (k->set == set_redis_mode)
        return a->redis_mode == b->redis_mode;
    if (k->set == set_cluster_pubsub)
        return a->cluster_sharded == b->cluster_sharded;
    return strcmp(*str_field((struct cfg *)a, k), *str_field((struct cfg *)b, k)) == 0;
}

int cfg_diff_restart(const struct cfg *a, const struct cfg *b, char *buf, size_t len)
{
    size_t i, used = 0;
    int n = 0;

    if (len)
        buf[0] = '\0';
    for (i = 0; i < NKEYS; i++) {
        if ((cfg_keys[i].flags & CFG_RELOAD) || value_equal(a, b, &cfg_keys[i]))
            continue;
        if (used < len) {
            int r = snprintf(buf + used, len - used, "%s%s", n ? ", " : "", cfg_keys[i].name);
            if (r > 0)
                used += (size_t)r;
        }
        n++;
    }
    return n;
}

int cfg_apply_reload(struct cfg *dst, const struct cfg *src)
{
    size_t i;

    for (i = 0; i < NKEYS; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        if (!(k->flags & CFG_RELOAD))
            continue;
        if (k->set == set_int || k->set == set_bytes) {
            *int_field(dst, k) = *int_field((struct cfg *)src, k);
        } else if (k->set == set_log_level) {
            dst->log_level = src->log_level;
        } else {
            const char *v = *str_field((struct cfg *)src, k);
            if (replace_str(str_field(dst, k), v, strlen(v)) != 0)
                return -1;
        }
    }
    return 0;
}

int cfg_workers(const struct cfg *c, long ncpus, int *capped)
{
    *capped = 0;
    if (c->workers > 0)
        return c->workers; /* within bounds: set_workers checked it */
    if (ncpus <= 2)
        return 1; /* also when the count is unknown (-1) */
    if (ncpus - 1 > METRICS_MAX_WORKERS) {
        *capped = 1;
        return METRICS_MAX_WORKERS;
    }
    return (int)(ncpus - 1);
}

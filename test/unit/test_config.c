/* test_config.c: defaults, the file parser and its errors, redis_url and
 * listen parsing, restart diffs, and broker.conf.example against the key
 * table (broker/config.h). Run from the repository root. */
#include <stdlib.h>
#include <unistd.h>

#include "broker/config.h"
#include "broker/log.h"
#include "broker/metrics.h"
#include "t.h"

static char path[64]; /* the last temp file written; kept for messages */
static char err[1024];

/* Writes text to a fresh temp file, loads it into c and removes the file.
 * Returns cfg_load's status. */
static int load(struct cfg *c, const char *text)
{
    int fd, r;
    size_t n = strlen(text);

    snprintf(path, sizeof(path), "/tmp/test_config_XXXXXX");
    fd = mkstemp(path);
    if (fd < 0 || write(fd, text, n) != (ssize_t)n) {
        perror("temp file");
        abort();
    }
    close(fd);
    err[0] = '\0';
    r = cfg_load(c, path, err, sizeof(err));
    unlink(path);
    return r;
}

/* 1 when err names the temp file and line ("PATH:LINE") and holds word. */
static int err_names(int line, const char *word)
{
    char where[96];

    snprintf(where, sizeof(where), "%s:%d", path, line);
    if (strstr(err, where) == NULL || (word && strstr(err, word) == NULL)) {
        fprintf(stderr, "  error text was: %s\n", err);
        return 0;
    }
    return 1;
}

static int streq(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

static void test_defaults(void)
{
    struct cfg c;
    int capped;

    CHECK(cfg_defaults(&c) == 0);
    CHECK(streq(c.listen_host, "127.0.0.1"));
    CHECK(c.listen_port == 8080);
    CHECK(streq(c.redis_url, "redis://127.0.0.1:6379"));
    CHECK(streq(c.redis_host, "127.0.0.1"));
    CHECK(c.redis_port == 6379);
    CHECK(c.redis_user == NULL);
    CHECK(c.redis_password == NULL);
    CHECK(c.redis_db == -1);
    CHECK(c.batch_interval_ms == 200);
    CHECK(c.batch_max_bytes == 65536);
    CHECK(c.max_message_bytes == 1048576);
    CHECK(streq(c.ws_path, "/ws"));
    CHECK(c.max_client_message_bytes == 4096);
    CHECK(c.handshake_timeout_ms == 5000);
    CHECK(c.ping_interval_s == 30);
    CHECK(c.pong_timeout_s == 10);
    CHECK(c.max_pending_bytes == 8388608);
    CHECK(c.shutdown_timeout_s == 10);
    CHECK(c.workers == 0); /* auto */
    CHECK(cfg_workers(&c, 4, &capped) == 3 && !capped);
    CHECK(c.stats_interval_s == 15);
    CHECK(streq(c.pid_file, ""));
    CHECK(streq(c.auth_secret, ""));
    CHECK(streq(c.auth_secret_file, ""));
    CHECK(streq(c.allowed_origins, ""));
    CHECK(c.max_connections == 0);
    CHECK(c.max_subscriptions_per_client == 100);
    CHECK(c.max_control_per_s == 50);
    CHECK(c.log_level == LOG_INFO);
    CHECK(c.log_file != NULL && c.log_file[0] == '\0');
    CHECK(c.file == NULL);
    cfg_free(&c);
    CHECK(c.listen_host == NULL);
    cfg_free(&c); /* safe twice, and on a zeroed cfg */
}

static void test_every_key(void)
{
    struct cfg c;
    int capped;

    CHECK(load(&c,
               "# a comment\n"
               "   # an indented comment\n"
               "\n"
               "   \t \n"
               "listen 0.0.0.0:9000\n"
               "redis_url redis://user:pw@redis.local:6380/2\n"
               "batch_interval_ms 0\n"
               "batch_max_bytes 1m\n"
               "max_message_bytes\t2k\n"
               "ws_path /stream/v1\n"
               "  max_client_message_bytes   8192  \n"
               "handshake_timeout_ms 100\r\n"
               "ping_interval_s 0\n"
               "pong_timeout_s 3600\n"
               "max_pending_bytes 1g\n"
               "shutdown_timeout_s 1\n"
               "workers 4\n"
               "stats_interval_s 0\n"
               "pid_file /run/broker.pid\n"
               "auth_secret s3cret value\n"
               "allowed_origins https://a.example http://b.example:8080\n"
               "max_connections 10000000\n"
               "max_subscriptions_per_client 1\n"
               "max_control_per_s 1000000\n"
               "log_level debug\n"
               "log_file /var/log/broker#1.log") == 0);
    CHECK(err[0] == '\0');
    CHECK(streq(c.listen_host, "0.0.0.0"));
    CHECK(c.listen_port == 9000);
    CHECK(streq(c.redis_url, "redis://user:pw@redis.local:6380/2"));
    CHECK(streq(c.redis_host, "redis.local"));
    CHECK(c.redis_port == 6380);
    CHECK(streq(c.redis_user, "user"));
    CHECK(streq(c.redis_password, "pw"));
    CHECK(c.redis_db == 2);
    CHECK(c.batch_interval_ms == 0);
    CHECK(c.batch_max_bytes == 1024 * 1024);
    CHECK(c.max_message_bytes == 2048);
    CHECK(streq(c.ws_path, "/stream/v1"));
    CHECK(c.max_client_message_bytes == 8192);
    CHECK(c.handshake_timeout_ms == 100);
    CHECK(c.ping_interval_s == 0);
    CHECK(c.pong_timeout_s == 3600);
    CHECK(c.max_pending_bytes == 1024LL * 1024 * 1024);
    CHECK(c.shutdown_timeout_s == 1);
    CHECK(c.workers == 4);
    CHECK(cfg_workers(&c, 1, &capped) == 4 && !capped);
    CHECK(c.stats_interval_s == 0);
    CHECK(streq(c.pid_file, "/run/broker.pid"));
    CHECK(streq(c.auth_secret, "s3cret value"));
    CHECK(streq(c.allowed_origins, "https://a.example http://b.example:8080"));
    CHECK(c.max_connections == 10000000);
    CHECK(c.max_subscriptions_per_client == 1);
    CHECK(c.max_control_per_s == 1000000);
    CHECK(c.log_level == LOG_DEBUG);
    CHECK(streq(c.log_file, "/var/log/broker#1.log")); /* a later # is value */
    CHECK(streq(c.file, path));
    cfg_free(&c);

    /* an empty file gives the defaults */
    CHECK(load(&c, "") == 0);
    CHECK(c.listen_port == 8080);
    CHECK(streq(c.file, path));
    cfg_free(&c);
    CHECK(load(&c, "# only comments\n\n#\n") == 0);
    cfg_free(&c);
}

static void test_file_errors(void)
{
    struct cfg c;
    char dir[] = "/tmp/test_config_dir_XXXXXX";

    CHECK(load(&c, "# x\n\nbogus_key 1\n") == -1);
    CHECK(err_names(3, "bogus_key"));
    CHECK(c.listen_host == NULL); /* left freed */

    CHECK(load(&c, "Listen 127.0.0.1:1\n") == -1); /* keys are case-sensitive */
    CHECK(err_names(1, "Listen"));

    CHECK(load(&c, "ping_interval_s 5\nlog_level info\nping_interval_s 6\n") == -1);
    CHECK(err_names(3, "ping_interval_s"));

    CHECK(load(&c, "\nbatch_interval_ms\n") == -1);
    CHECK(err_names(2, "batch_interval_ms"));
    CHECK(load(&c, "batch_interval_ms   \t \n") == -1);
    CHECK(err_names(1, "batch_interval_ms"));
    CHECK(load(&c, "listen\n") == -1);
    CHECK(err_names(1, "listen"));
    CHECK(load(&c, "redis_url\n") == -1);
    CHECK(err_names(1, "redis_url"));
    CHECK(load(&c, "ws_path\n") == -1);
    CHECK(err_names(1, "ws_path"));
    CHECK(load(&c, "log_level\n") == -1);
    CHECK(err_names(1, "log_level"));
    /* log_file may be empty: that means stderr */
    CHECK(load(&c, "log_file\n") == 0);
    CHECK(streq(c.log_file, ""));
    cfg_free(&c);

    /* a line too long for the reader */
    {
        char *big = malloc(6000);
        memcpy(big, "log_file /", 10);
        memset(big + 10, 'a', 5000);
        strcpy(big + 5010, "\nbogus 1\n");
        CHECK(load(&c, big) == -1);
        CHECK(err_names(1, NULL));
        free(big);
    }

    /* cfg_load_stream names the stream as told; NUL bytes are refused */
    {
        static const char text[] = "log_level warn\nlog_file /a\0b\n";
        FILE *f = fmemopen((void *)text, sizeof(text) - 1, "r");
        CHECK(f != NULL);
        if (f != NULL) {
            CHECK(cfg_load_stream(&c, f, "mem.conf", err, sizeof(err)) == -1);
            CHECK(strstr(err, "mem.conf:2") != NULL);
            fclose(f);
        }
        f = fmemopen((void *)text, 15, "r");
        if (f != NULL) {
            CHECK(cfg_load_stream(&c, f, "mem.conf", err, sizeof(err)) == 0);
            CHECK(c.log_level == LOG_WARN);
            CHECK(streq(c.file, "mem.conf"));
            cfg_free(&c);
            fclose(f);
        }
    }

    /* files that cannot be read */
    CHECK(cfg_load(&c, "/nonexistent/dir/broker.conf", err, sizeof(err)) == -1);
    CHECK(strstr(err, "/nonexistent/dir/broker.conf") != NULL);
    CHECK(c.listen_host == NULL);
    if (mkdtemp(dir) != NULL) {
        err[0] = '\0';
        CHECK(cfg_load(&c, dir, err, sizeof(err)) == -1);
        CHECK(strstr(err, dir) != NULL);
        rmdir(dir);
    }
}

struct numkey {
    const char *name;
    long long min, max;
    int bytes;
};

static const struct numkey numkeys[] = {
    {"batch_interval_ms", 0, 60000, 0},
    {"batch_max_bytes", 256, 64LL << 20, 1},
    {"max_message_bytes", 1, 512LL << 20, 1},
    {"max_client_message_bytes", 64, 16LL << 20, 1},
    {"handshake_timeout_ms", 100, 600000, 0},
    {"ping_interval_s", 0, 86400, 0},
    {"pong_timeout_s", 1, 3600, 0},
    {"max_pending_bytes", 64LL << 10, 4096LL << 20, 1},
    {"shutdown_timeout_s", 1, 3600, 0},
    {"stats_interval_s", 0, 86400, 0},
    {"max_connections", 0, 10000000, 0},
    {"max_subscriptions_per_client", 1, 1000000, 0},
    {"max_control_per_s", 1, 1000000, 0},
};

/* Loads "name value" alone on line 2; returns the status and, on success,
 * the field's value in *out. */
static int load_num(const char *name, const char *value, long long *out)
{
    struct cfg c;
    char text[256];
    int r;

    snprintf(text, sizeof(text), "# numbers\n%s %s\n", name, value);
    r = load(&c, text);
    if (r == 0) {
        if (strcmp(name, "batch_interval_ms") == 0) *out = c.batch_interval_ms;
        else if (strcmp(name, "batch_max_bytes") == 0) *out = c.batch_max_bytes;
        else if (strcmp(name, "max_message_bytes") == 0) *out = c.max_message_bytes;
        else if (strcmp(name, "max_client_message_bytes") == 0) *out = c.max_client_message_bytes;
        else if (strcmp(name, "handshake_timeout_ms") == 0) *out = c.handshake_timeout_ms;
        else if (strcmp(name, "ping_interval_s") == 0) *out = c.ping_interval_s;
        else if (strcmp(name, "pong_timeout_s") == 0) *out = c.pong_timeout_s;
        else if (strcmp(name, "max_pending_bytes") == 0) *out = c.max_pending_bytes;
        else if (strcmp(name, "shutdown_timeout_s") == 0) *out = c.shutdown_timeout_s;
        else if (strcmp(name, "stats_interval_s") == 0) *out = c.stats_interval_s;
        else if (strcmp(name, "max_connections") == 0) *out = c.max_connections;
        else if (strcmp(name, "max_subscriptions_per_client") == 0)
            *out = c.max_subscriptions_per_client;
        else if (strcmp(name, "max_control_per_s") == 0) *out = c.max_control_per_s;
        else if (strcmp(name, "workers") == 0) *out = c.workers;
        else *out = -12345;
        cfg_free(&c);
    }
    return r;
}

/* 1 when loading name=value fails with an error naming the line and key. */
static int num_refused(const char *name, const char *value)
{
    long long v;

    if (load_num(name, value, &v) != -1) {
        fprintf(stderr, "  %s %s was accepted\n", name, value);
        return 0;
    }
    return err_names(2, name);
}

static void test_numbers(void)
{
    static const char *const junk[] = {
        "abc", "-1", "+1", "1.5", "1e3", "0x10", "10 20", "1,000", " ", "99999999999999999999",
        "-0"};
    size_t i, j;
    char v[64];
    long long got;

    for (i = 0; i < sizeof(numkeys) / sizeof(numkeys[0]); i++) {
        const struct numkey *k = &numkeys[i];
        for (j = 0; j < sizeof(junk) / sizeof(junk[0]); j++)
            if (strcmp(junk[j], " ") != 0) /* " " is a missing value, tested above */
                CHECK(num_refused(k->name, junk[j]));
        snprintf(v, sizeof(v), "%lld", k->min);
        CHECK(load_num(k->name, v, &got) == 0 && got == k->min);
        snprintf(v, sizeof(v), "%lld", k->max);
        CHECK(load_num(k->name, v, &got) == 0 && got == k->max);
        snprintf(v, sizeof(v), "%lld", k->max + 1);
        CHECK(num_refused(k->name, v));
        if (k->min > 0) {
            snprintf(v, sizeof(v), "%lld", k->min - 1);
            CHECK(num_refused(k->name, v));
        }
        if (!k->bytes) {
            CHECK(num_refused(k->name, "1k"));
            CHECK(num_refused(k->name, "1m"));
        }
    }

    /* byte suffixes are binary and case-insensitive */
    CHECK(load_num("batch_max_bytes", "64k", &got) == 0 && got == 65536);
    CHECK(load_num("batch_max_bytes", "64K", &got) == 0 && got == 65536);
    CHECK(load_num("batch_max_bytes", "2m", &got) == 0 && got == 2 * 1024 * 1024);
    CHECK(load_num("batch_max_bytes", "64M", &got) == 0 && got == 64LL << 20);
    CHECK(num_refused("batch_max_bytes", "65m"));
    CHECK(load_num("max_pending_bytes", "1g", &got) == 0 && got == 1LL << 30);
    CHECK(load_num("max_pending_bytes", "4G", &got) == 0 && got == 4LL << 30);
    CHECK(load_num("max_pending_bytes", "4096m", &got) == 0 && got == 4LL << 30);
    CHECK(num_refused("max_pending_bytes", "4097m"));
    CHECK(num_refused("max_pending_bytes", "5g"));
    CHECK(load_num("max_pending_bytes", "64k", &got) == 0 && got == 65536);
    CHECK(num_refused("max_pending_bytes", "63k"));
    CHECK(num_refused("max_pending_bytes", "9999999999999999g"));
    CHECK(num_refused("batch_max_bytes", "1t"));
    CHECK(num_refused("batch_max_bytes", "1kb"));
    CHECK(num_refused("batch_max_bytes", "1 k"));
    CHECK(num_refused("batch_max_bytes", "k"));
    CHECK(num_refused("batch_max_bytes", "-1k"));
    CHECK(load_num("max_message_bytes", "1", &got) == 0 && got == 1);
    CHECK(load_num("batch_interval_ms", "007", &got) == 0 && got == 7);
}

/* Loads "redis_url url"; returns the status with c filled on success. */
static int load_url(struct cfg *c, const char *url)
{
    char text[512];

    snprintf(text, sizeof(text), "redis_url %s\n", url);
    return load(c, text);
}

static void test_redis_url(void)
{
    static const char *const bad[] = {
        "http://h", "redis:/h", "redis//h", "rediss://h", "redis://",
        "redis://:6379", "redis://h:0", "redis://h:70000", "redis://h:65536",
        "redis://h:-1", "redis://h:abc", "redis://h:", "redis://h/x", "redis://h/-1",
        "redis://h/1x", "redis://h/1000001", "redis://user@h", "redis://::1:6379",
        "redis://[::1", "redis://[::1]x", "redis://[]:1", "redis://u:p%zz@h",
        "redis://u:p%4@h"};
    struct cfg c;
    size_t i;

    CHECK(load_url(&c, "redis://h") == 0);
    CHECK(streq(c.redis_host, "h"));
    CHECK(c.redis_port == 6379);
    CHECK(c.redis_user == NULL);
    CHECK(c.redis_password == NULL);
    CHECK(c.redis_db == -1);
    CHECK(streq(c.redis_url, "redis://h"));
    cfg_free(&c);

    CHECK(load_url(&c, "redis://h:1234") == 0);
    CHECK(streq(c.redis_host, "h"));
    CHECK(c.redis_port == 1234);
    CHECK(c.redis_db == -1);
    cfg_free(&c);

    CHECK(load_url(&c, "redis://:pw@h:1/3") == 0);
    CHECK(streq(c.redis_host, "h"));
    CHECK(c.redis_port == 1);
    CHECK(c.redis_user == NULL);
    CHECK(streq(c.redis_password, "pw"));
    CHECK(c.redis_db == 3);
    cfg_free(&c);

    CHECK(load_url(&c, "redis://user:pw@h") == 0);
    CHECK(streq(c.redis_host, "h"));
    CHECK(c.redis_port == 6379);
    CHECK(streq(c.redis_user, "user"));
    CHECK(streq(c.redis_password, "pw"));
    CHECK(c.redis_db == -1);
    cfg_free(&c);

    CHECK(load_url(&c, "redis://[::1]:6379") == 0);
    CHECK(streq(c.redis_host, "::1"));
    CHECK(c.redis_port == 6379);
    cfg_free(&c);

    CHECK(load_url(&c, "redis://[fe80::1]:6380/0") == 0);
    CHECK(streq(c.redis_host, "fe80::1"));
    CHECK(c.redis_port == 6380);
    CHECK(c.redis_db == 0);
    cfg_free(&c);

    CHECK(load_url(&c, "redis://[::1]") == 0);
    CHECK(streq(c.redis_host, "::1"));
    CHECK(c.redis_port == 6379);
    cfg_free(&c);

    CHECK(load_url(&c, "redis://h:65535/") == 0);
    CHECK(c.redis_port == 65535);
    CHECK(c.redis_db == -1);
    cfg_free(&c);

    CHECK(load_url(&c, "redis://u%3Ax:p%40ss%2f@h/15") == 0);
    CHECK(streq(c.redis_user, "u:x"));
    CHECK(streq(c.redis_password, "p@ss/"));
    CHECK(c.redis_db == 15);
    cfg_free(&c);

    CHECK(load_url(&c, "redis://u:@h") == 0);
    CHECK(streq(c.redis_user, "u"));
    CHECK(streq(c.redis_password, ""));
    cfg_free(&c);

    /* the Redis password is a secret too: an invalid URL is not echoed with it */
    CHECK(load_url(&c, "redis://:hunter2@h:0") == -1);
    CHECK(err_names(1, "redis_url"));
    CHECK(strstr(err, "hunter2") == NULL);

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int r = load_url(&c, bad[i]);
        if (r == 0) {
            fprintf(stderr, "  redis_url %s was accepted\n", bad[i]);
            cfg_free(&c);
        }
        CHECK(r == -1);
        CHECK(err_names(1, "redis_url"));
    }
}

static int load_listen(struct cfg *c, const char *v)
{
    char text[256];

    snprintf(text, sizeof(text), "listen %s\n", v);
    return load(c, text);
}

static void test_listen(void)
{
    static const char *const bad[] = {
        "localhost", "127.0.0.1", "h:0", "h:65536", "h:70000", "h:", ":80", "::1:80",
        "[::1]", "[::1]80", "[::1", "[]:80", "h:8x", "h:-1", "h:+80"};
    struct cfg c;
    size_t i;

    CHECK(load_listen(&c, "0.0.0.0:80") == 0);
    CHECK(streq(c.listen_host, "0.0.0.0"));
    CHECK(c.listen_port == 80);
    cfg_free(&c);
    CHECK(load_listen(&c, "localhost:65535") == 0);
    CHECK(streq(c.listen_host, "localhost"));
    CHECK(c.listen_port == 65535);
    cfg_free(&c);
    CHECK(load_listen(&c, "[::1]:80") == 0);
    CHECK(streq(c.listen_host, "::1"));
    CHECK(c.listen_port == 80);
    cfg_free(&c);
    CHECK(load_listen(&c, "[::]:1") == 0);
    CHECK(streq(c.listen_host, "::"));
    CHECK(c.listen_port == 1);
    cfg_free(&c);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int r = load_listen(&c, bad[i]);
        if (r == 0) {
            fprintf(stderr, "  listen %s was accepted\n", bad[i]);
            cfg_free(&c);
        }
        CHECK(r == -1);
        CHECK(err_names(1, "listen"));
    }
}

static void test_ws_path_log(void)
{
    struct cfg c;
    char text[400];

    CHECK(load(&c, "ws_path /\n") == 0);
    CHECK(streq(c.ws_path, "/"));
    cfg_free(&c);
    CHECK(load(&c, "ws_path /a/b-c_d.e~f%20\n") == 0);
    CHECK(streq(c.ws_path, "/a/b-c_d.e~f%20"));
    cfg_free(&c);
    CHECK(load(&c, "ws_path ws\n") == -1);
    CHECK(err_names(1, "ws_path"));
    CHECK(load(&c, "ws_path http://h/ws\n") == -1);
    CHECK(err_names(1, "ws_path"));
    CHECK(load(&c, "ws_path /a b\n") == -1);
    CHECK(err_names(1, "ws_path"));
    CHECK(load(&c, "ws_path /a?b\n") == -1);
    CHECK(err_names(1, "ws_path"));
    CHECK(load(&c, "ws_path /a#b\n") == -1);
    CHECK(err_names(1, "ws_path"));
    CHECK(load(&c, "ws_path /a\x7F\n") == -1);
    CHECK(load(&c, "ws_path /a\x01\n") == -1);
    memset(text, 0, sizeof(text));
    memcpy(text, "ws_path /", 9);
    memset(text + 9, 'p', 254); /* 255 bytes of path */
    CHECK(load(&c, text) == 0);
    CHECK(c.ws_path != NULL && strlen(c.ws_path) == 255);
    cfg_free(&c);
    text[9 + 254] = 'p'; /* 256 */
    CHECK(load(&c, text) == -1);
    CHECK(err_names(1, "ws_path"));

    CHECK(load(&c, "log_level error\n") == 0);
    CHECK(c.log_level == LOG_ERROR);
    cfg_free(&c);
    CHECK(load(&c, "log_level warn\n") == 0);
    CHECK(c.log_level == LOG_WARN);
    cfg_free(&c);
    CHECK(load(&c, "log_level info\n") == 0);
    CHECK(c.log_level == LOG_INFO);
    cfg_free(&c);
    CHECK(load(&c, "log_level debug\n") == 0);
    CHECK(c.log_level == LOG_DEBUG);
    cfg_free(&c);
    CHECK(load(&c, "log_level verbose\n") == -1);
    CHECK(err_names(1, "log_level"));
    CHECK(load(&c, "log_level warning\n") == -1);
    CHECK(err_names(1, "log_level"));
    CHECK(load(&c, "log_level 2\n") == -1);
    CHECK(err_names(1, "log_level"));
}

static void test_workers(void)
{
    struct cfg c;
    long long got;
    char over[32];
    int capped;

    CHECK(load(&c, "workers auto\n") == 0);
    CHECK(c.workers == 0);
    /* auto: the CPUs minus one, at least 1, at most the metrics slots; a
     * machine with more CPUs than that gets the cap and says so. */
    CHECK(cfg_workers(&c, -1, &capped) == 1 && !capped); /* count unknown */
    CHECK(cfg_workers(&c, 1, &capped) == 1 && !capped);
    CHECK(cfg_workers(&c, 2, &capped) == 1 && !capped);
    CHECK(cfg_workers(&c, 3, &capped) == 2 && !capped);
    CHECK(cfg_workers(&c, METRICS_MAX_WORKERS + 1, &capped) == METRICS_MAX_WORKERS &&
          !capped);
    CHECK(cfg_workers(&c, METRICS_MAX_WORKERS + 2, &capped) == METRICS_MAX_WORKERS &&
          capped);
    CHECK(cfg_workers(&c, 4096, &capped) == METRICS_MAX_WORKERS && capped);
    cfg_free(&c);
    CHECK(load(&c, "workers 7\n") == 0);
    CHECK(cfg_workers(&c, 4096, &capped) == 7 && !capped);
    cfg_free(&c);
    CHECK(load_num("workers", "1", &got) == 0 && got == 1);
    CHECK(load_num("workers", "256", &got) == 0 && got == METRICS_MAX_WORKERS);
    CHECK(num_refused("workers", "0"));
    /* An explicit number over the cap is an error naming FILE:LINE. */
    snprintf(over, sizeof(over), "%d", METRICS_MAX_WORKERS + 1);
    CHECK(num_refused("workers", over));
    CHECK(load(&c, "# many\nworkers 1000\n") == -1);
    CHECK(err_names(2, "workers"));
    CHECK(strstr(err, "1 to 256") != NULL);
    CHECK(num_refused("workers", "-1"));
    CHECK(num_refused("workers", "Auto"));
    CHECK(num_refused("workers", "autox"));
    CHECK(num_refused("workers", "2k"));
    CHECK(load(&c, "workers\n") == -1);
    CHECK(err_names(1, "workers"));
}

/* Writes text to a new temp file; the caller unlinks name. */
static void temp_file(char *name, size_t len, const char *text)
{
    int fd;
    size_t n = strlen(text);

    snprintf(name, len, "/tmp/test_config_secret_XXXXXX");
    fd = mkstemp(name);
    if (fd < 0 || write(fd, text, n) != (ssize_t)n) {
        perror("temp file");
        abort();
    }
    close(fd);
}

static void test_static_dir(void)
{
    struct cfg c;
    char dir[64], file[64], text[128];

    CHECK(load(&c, "static_dir\n") == 0);
    CHECK(streq(c.static_dir, ""));
    cfg_free(&c);
    snprintf(dir, sizeof(dir), "/tmp/test_config_dir_XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    snprintf(text, sizeof(text), "static_dir %s\n", dir);
    CHECK(load(&c, text) == 0);
    CHECK(streq(c.static_dir, dir));
    cfg_free(&c);
    CHECK(rmdir(dir) == 0);
    /* Gone now: a directory that cannot be opened is an error at its line. */
    CHECK(load(&c, text) == -1);
    CHECK(err_names(1, "static_dir"));
    CHECK(strstr(err, "cannot open the directory") != NULL);
    temp_file(file, sizeof(file), "not a directory");
    snprintf(text, sizeof(text), "# x\nstatic_dir %s\n", file);
    CHECK(load(&c, text) == -1);
    CHECK(err_names(2, "static_dir"));
    unlink(file);
}

static void test_auth_secret(void)
{
    struct cfg c;
    char sf[64], empty[64], text[256];

    temp_file(sf, sizeof(sf), "from-file\r\n\n");
    temp_file(empty, sizeof(empty), "\n");

    snprintf(text, sizeof(text), "auth_secret_file %s\n", sf);
    CHECK(load(&c, text) == 0);
    CHECK(streq(c.auth_secret, "from-file")); /* trailing newlines dropped */
    CHECK(streq(c.auth_secret_file, sf));
    cfg_free(&c);

    /* an empty auth_secret before the file does not matter */
    snprintf(text, sizeof(text), "auth_secret\nauth_secret_file %s\n", sf);
    CHECK(load(&c, text) == 0);
    CHECK(streq(c.auth_secret, "from-file"));
    cfg_free(&c);

    /* after the file, an empty auth_secret must not silently turn auth off */
    snprintf(text, sizeof(text), "auth_secret_file %s\nauth_secret\n", sf);
    if (load(&c, text) == 0) {
        CHECK(streq(c.auth_secret, "from-file"));
        cfg_free(&c);
    }

    /* both given, in either order */
    snprintf(text, sizeof(text), "auth_secret_file %s\nauth_secret hunter2\n", sf);
    CHECK(load(&c, text) == -1);
    CHECK(err_names(2, "auth_secret"));
    CHECK(strstr(err, "hunter2") == NULL); /* never echoed */
    snprintf(text, sizeof(text), "auth_secret hunter2\nauth_secret_file %s\n", sf);
    CHECK(load(&c, text) == -1);
    CHECK(err_names(2, "auth_secret_file"));
    CHECK(strstr(err, "hunter2") == NULL);

    /* unreadable or empty secret files */
    CHECK(load(&c, "auth_secret_file /nonexistent/secret\n") == -1);
    CHECK(err_names(1, "auth_secret_file"));
    snprintf(text, sizeof(text), "auth_secret_file %s\n", empty);
    CHECK(load(&c, text) == -1);
    CHECK(err_names(1, "auth_secret_file"));

    unlink(sf);
    unlink(empty);
}

static void test_apply_reload(void)
{
    struct cfg a, b;

    CHECK(cfg_defaults(&a) == 0);
    CHECK(load(&b, "listen 0.0.0.0:1\nws_path /x\nbatch_interval_ms 7\nlog_level error\n"
                   "allowed_origins https://o.example\nmax_pending_bytes 1m\nworkers 3\n") == 0);
    CHECK(cfg_apply_reload(&a, &b) == 0);
    CHECK(a.batch_interval_ms == 7);
    CHECK(a.log_level == LOG_ERROR);
    CHECK(streq(a.allowed_origins, "https://o.example"));
    CHECK(a.max_pending_bytes == 1024 * 1024);
    /* restart-only keys stay */
    CHECK(streq(a.listen_host, "127.0.0.1"));
    CHECK(a.listen_port == 8080);
    CHECK(streq(a.ws_path, "/ws"));
    CHECK(a.workers == 0);
    cfg_free(&b);
    cfg_free(&a);
}

static void test_diff_restart(void)
{
    struct cfg a, b;
    char buf[256];

    CHECK(cfg_defaults(&a) == 0);
    CHECK(load(&b, "batch_interval_ms 5\nlog_level debug\nping_interval_s 1\n"
                   "max_pending_bytes 1m\n") == 0);
    CHECK(cfg_diff_restart(&a, &b, buf, sizeof(buf)) == 0);
    CHECK(buf[0] == '\0');
    cfg_free(&b);

    CHECK(load(&b, "listen 127.0.0.1:8081\nws_path /other\nbatch_interval_ms 5\n") == 0);
    CHECK(cfg_diff_restart(&a, &b, buf, sizeof(buf)) == 2);
    CHECK(strstr(buf, "listen") != NULL);
    CHECK(strstr(buf, "ws_path") != NULL);
    CHECK(strstr(buf, "batch_interval_ms") == NULL);
    /* a short buffer still gets the count, and a terminated prefix */
    memset(buf, 'Z', sizeof(buf));
    CHECK(cfg_diff_restart(&a, &b, buf, 5) == 2);
    CHECK(memchr(buf, '\0', 5) != NULL);
    CHECK(buf[5] == 'Z');
    CHECK(cfg_diff_restart(&a, &b, NULL, 0) == 2);
    cfg_free(&b);

    CHECK(load(&b, "listen 0.0.0.0:8080\n") == 0); /* host only */
    CHECK(cfg_diff_restart(&a, &b, buf, sizeof(buf)) == 1);
    CHECK(strcmp(buf, "listen") == 0);
    cfg_free(&b);

    CHECK(load(&b, "redis_url redis://127.0.0.1:6380\nlog_file /tmp/x.log\n") == 0);
    CHECK(cfg_diff_restart(&a, &b, buf, sizeof(buf)) == 2);
    CHECK(strstr(buf, "redis_url") != NULL);
    CHECK(strstr(buf, "log_file") != NULL);
    cfg_free(&b);

    CHECK(load(&b, "workers 2\npid_file /tmp/p\nmax_connections 5\n") == 0);
    CHECK(cfg_diff_restart(&a, &b, buf, sizeof(buf)) == 2);
    CHECK(strstr(buf, "workers") != NULL);
    CHECK(strstr(buf, "pid_file") != NULL);
    CHECK(strstr(buf, "max_connections") == NULL);
    cfg_free(&b);
    cfg_free(&a);
}

/* ---- broker.conf.example follows the key table ---- */

#define MAXKEYS 64

struct kv {
    char key[64];
    char val[256];
    int count;
};

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

static struct kv *find_kv(struct kv *t, int n, const char *key)
{
    int i;

    for (i = 0; i < n; i++)
        if (strcmp(t[i].key, key) == 0)
            return &t[i];
    return NULL;
}

static void test_example_file(void)
{
    static struct kv printed[MAXKEYS], example[MAXKEYS];
    int np = 0, ne = 0, i;
    char *text = NULL, *line, *save;
    size_t textlen = 0;
    FILE *f;
    char buf[1024];
    struct cfg def, ex;

    /* the table, as --help prints it */
    f = open_memstream(&text, &textlen);
    CHECK(f != NULL);
    if (f == NULL)
        return;
    cfg_print_keys(f);
    fclose(f);
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char key[64], word[64], def_val[256];
        if (line[0] != ' ' && line[0] != '\t')
            continue;
        if (sscanf(line, "%63s %63s %255s", key, word, def_val) != 3 ||
            strcmp(word, "default") != 0) {
            fprintf(stderr, "  unexpected --help line: %s\n", line);
            CHECK(0);
            continue;
        }
        if (np == MAXKEYS)
            break;
        snprintf(printed[np].key, sizeof(printed[np].key), "%s", key);
        snprintf(printed[np].val, sizeof(printed[np].val), "%s",
                 strcmp(def_val, "(empty)") == 0 ? "" : def_val);
        np++;
    }
    free(text);
    CHECK(np >= 23);

    /* the example file */
    f = fopen("broker.conf.example", "r");
    CHECK(f != NULL);
    if (f == NULL) {
        fprintf(stderr, "  broker.conf.example not found: run from the repository root\n");
        return;
    }
    while (fgets(buf, sizeof(buf), f) != NULL) {
        char *s = trim(buf), *v;
        struct kv *e;
        if (*s == '\0' || *s == '#')
            continue;
        v = s;
        while (*v && *v != ' ' && *v != '\t')
            v++;
        if (*v)
            *v++ = '\0';
        v = trim(v);
        if ((e = find_kv(example, ne, s)) != NULL) {
            e->count++;
            continue;
        }
        if (ne == MAXKEYS)
            break;
        snprintf(example[ne].key, sizeof(example[ne].key), "%s", s);
        snprintf(example[ne].val, sizeof(example[ne].val), "%s", v);
        example[ne].count = 1;
        ne++;
    }
    fclose(f);

    for (i = 0; i < np; i++) {
        struct kv *e = find_kv(example, ne, printed[i].key);
        if (e == NULL) {
            fprintf(stderr, "  key %s missing from broker.conf.example\n", printed[i].key);
            CHECK(0);
        } else if (strcmp(e->val, printed[i].val) != 0) {
            fprintf(stderr, "  key %s: example has '%s', default is '%s'\n", printed[i].key,
                    e->val, printed[i].val);
            CHECK(0);
        } else {
            CHECK(e->count == 1);
        }
    }
    /* and nothing in the example that the table does not know */
    for (i = 0; i < ne; i++) {
        if (find_kv(printed, np, example[i].key) == NULL) {
            fprintf(stderr, "  broker.conf.example has unknown key %s\n", example[i].key);
            CHECK(0);
        }
    }
    CHECK(ne == np);

    /* the example loads, and changes nothing */
    CHECK(cfg_defaults(&def) == 0);
    err[0] = '\0';
    CHECK(cfg_load(&ex, "broker.conf.example", err, sizeof(err)) == 0);
    if (err[0])
        fprintf(stderr, "  %s\n", err);
    if (ex.listen_host != NULL) {
        CHECK(cfg_diff_restart(&def, &ex, buf, sizeof(buf)) == 0);
        CHECK(ex.batch_interval_ms == def.batch_interval_ms);
        CHECK(ex.max_pending_bytes == def.max_pending_bytes);
        CHECK(ex.log_level == def.log_level);
        CHECK(streq(ex.log_file, def.log_file));
        cfg_free(&ex);
    }
    cfg_free(&def);
}

int main(void)
{
    test_defaults();
    test_every_key();
    test_file_errors();
    test_numbers();
    test_redis_url();
    test_listen();
    test_ws_path_log();
    test_workers();
    test_static_dir();
    test_auth_secret();
    test_apply_reload();
    test_diff_restart();
    test_example_file();
    return t_done("config");
}

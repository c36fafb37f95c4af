/* main.c: command line, configuration check, the pid file, and the start of
 * the master. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "config.h"
#include "docroot.h"
#include "histlib.h"
#include "log.h"
#include "master.h"
#include "version.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: broker [-c FILE] [-t]\n"
            "       broker [-c FILE] --history-library\n"
            "       broker --version | --help\n"
            "\n"
            "Bridges Redis Pub/Sub to WebSocket clients.\n"
            "\n"
            "  -c FILE    configuration file (`key value` per line, # comments);\n"
            "             without it every key has its default\n"
            "  -t         check the configuration and exit: 0 when valid, else 1\n"
            "  --history-library\n"
            "             print the Redis function library of channel history (with\n"
            "             FILE's history_size, history_ttl_s and mode), which the broker\n"
            "             loads itself; e.g. | redis-cli -x FUNCTION LOAD REPLACE\n"
            "  --version  print the version and exit\n"
            "  --help     print this help and exit\n"
            "\n"
            "Configuration keys ([restart]: a reload cannot change it):\n");
    cfg_print_keys(out);
}

/* Connections are file descriptors: take the hard limit, as nginx's
 * worker_rlimit_nofile would. */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The pid file names the master that owns the port. It is written only once
 * the listening sockets are bound (master_run's on_bound), so a second start
 * that fails on a busy port never touches the running broker's file; and it
 * is removed at exit only if this process wrote it and it still holds our
 * pid (an operator or a newer broker may have replaced it since). */
struct pidfile {
    const char *path; /* borrowed from the configuration; NULL or "" for none */
    int written;
};

/* master_run's on_bound hook. Returns 0, or -1 after logging why. */
static int pidfile_write(void *arg)
{
    struct pidfile *p = arg;
    char buf[32];
    int fd, n;
    ssize_t w;

    if (p->path == NULL || *p->path == '\0')
        return 0;
    n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    fd = open(p->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        goto fail;
    if ((w = write(fd, buf, (size_t)n)) != n) {
        if (w >= 0)
            errno = ENOSPC; /* a short write of a few bytes: the disk is full */
        close(fd);
        goto fail;
    }
    if (close(fd) != 0)
        goto fail;
    p->written = 1;
    return 0;
fail:
    log_error("pid_file %s: %s", p->path, strerror(errno));
    return -1;
}

/* Unlinks the pid file if this process wrote it and it still names us. */
static void pidfile_remove(const struct pidfile *p)
{
    char buf[32];
    ssize_t n;
    long pid;
    char *end;
    int fd;

    if (!p->written)
        return;
    if ((fd = open(p->path, O_RDONLY | O_CLOEXEC)) < 0) {
        log_warn("pid_file %s: %s; nothing removed", p->path, strerror(errno));
        return;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        log_warn("pid_file %s: empty or unreadable; left in place", p->path);
        return;
    }
    buf[n] = '\0';
    pid = strtol(buf, &end, 10);
    if (end == buf || (*end != '\n' && *end != '\0') || pid != (long)getpid()) {
        log_warn("pid_file %s no longer holds pid %ld; left in place", p->path,
                 (long)getpid());
        return;
    }
    if (unlink(p->path) != 0)
        log_warn("pid_file %s: unlink: %s", p->path, strerror(errno));
}

/* `broker -t`: every file of static_dir that would not be served is an
 * error, named with the key. */
struct static_check {
    const char *file; /* the configuration file, for messages */
    const char *dir;
    int bad;
};

static void static_skipped(void *arg, const char *path, const char *why)
{
    struct static_check *k = arg;

    k->bad++;
    fprintf(stderr, "broker: %s: key 'static_dir': %s%s would not be served: %s\n", k->file,
            k->dir, path, why);
}

/* Returns 0 when static_dir is off or every file in it can be served. */
static int static_check(const struct cfg *cfg, const char *file)
{
    struct static_check k = {file ? file : "(defaults)", cfg->static_dir, 0};
    struct docroot *d;
    char err[256];

    if (*cfg->static_dir == '\0')
        return 0;
    if ((d = docroot_load(cfg->static_dir, static_skipped, &k, err, sizeof(err))) == NULL) {
        fprintf(stderr, "broker: %s: key 'static_dir': %s: %s\n", k.file, cfg->static_dir, err);
        return -1;
    }
    if (k.bad == 0)
        printf("broker: static_dir %s: %zu files, %zu bytes (at most %d per file, %d in all)\n",
               cfg->static_dir, docroot_count(d), docroot_bytes(d), DOCROOT_FILE_MAX,
               DOCROOT_TOTAL_MAX);
    docroot_free(d);
    return k.bad ? -1 : 0;
}

int main(int argc, char **argv)
{
    const char *file = NULL;
    int test = 0, i, rc, is_worker = 0, library = 0;
    struct cfg cfg;
    struct pidfile pid;
    char err[1024];

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            file = argv[++i];
        } else if (strcmp(argv[i], "-t") == 0) {
            test = 1;
        } else if (strcmp(argv[i], "--history-library") == 0) {
            library = 1;
        } else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-v") == 0) {
            printf("broker %s\n", BROKER_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "broker: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 1;
        }
    }
    if (file != NULL) {
        if (cfg_load(&cfg, file, err, sizeof(err)) != 0) {
            fprintf(stderr, "broker: %s\n", err);
            return 1;
        }
    } else if (cfg_defaults(&cfg) != 0) {
        fprintf(stderr, "broker: out of memory\n");
        return 1;
    }
    if (library) {
        struct proto_buf code = {0};
        rc = hlib_code(&code, cfg.history_size, cfg.history_ttl_s,
                       cfg.redis_mode == CFG_REDIS_CLUSTER && cfg.cluster_sharded);
        if (rc == 0)
            fwrite(code.data, 1, code.len, stdout);
        proto_buf_free(&code);
        cfg_free(&cfg);
        return rc == 0 ? 0 : 1;
    }
    if (test) {
        long ncpus = sysconf(_SC_NPROCESSORS_ONLN);
        int capped, n = cfg_workers(&cfg, ncpus, &capped);
        if (capped)
            printf("broker: workers auto: %ld CPUs online, capped at %d workers\n", ncpus, n);
        if (static_check(&cfg, file) != 0) {
            cfg_free(&cfg);
            return 1;
        }
        printf("broker: configuration %s is valid\n", file ? file : "(defaults)");
        cfg_free(&cfg);
        return 0;
    }
    log_set_level((enum log_level)cfg.log_level);
    if (log_open(cfg.log_file) != 0) {
        fprintf(stderr, "broker: cannot open log_file %s\n", cfg.log_file);
        cfg_free(&cfg);
        return 1;
    }
    log_info("broker %s starting (config %s)", BROKER_VERSION, file ? file : "defaults");
    raise_nofile();
    if (cfg.auth_secret[0] == '\0')
        log_warn("auth_secret is not set: any client may subscribe to any channel");
    else if (strlen(cfg.auth_secret) < 32)
        log_warn("auth_secret is shorter than 32 bytes: tokens are easier to forge");
    pid.path = cfg.pid_file;
    pid.written = 0;
    rc = master_run(&cfg, pidfile_write, &pid, &is_worker);
    if (!is_worker)
        pidfile_remove(&pid);
    log_close();
    cfg_free(&cfg);
    return rc;
}

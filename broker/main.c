/* main.c: command line, configuration check, and the start of the worker. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <sys/resource.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "master.h"
#include "version.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: broker [-c FILE] [-t]\n"
            "       broker --version | --help\n"
            "\n"
            "Bridges Redis Pub/Sub to WebSocket clients.\n"
            "\n"
            "  -c FILE    configuration file (`key value` per line, # comments);\n"
            "             without it every key has its default\n"
            "  -t         check the configuration and exit: 0 when valid, else 1\n"
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

static int write_pid(const char *path)
{
    FILE *f = fopen(path, "w");

    if (f == NULL)
        return -1;
    fprintf(f, "%ld\n", (long)getpid());
    return fclose(f);
}

int main(int argc, char **argv)
{
    const char *file = NULL;
    int test = 0, i, rc, is_worker = 0;
    struct cfg cfg;
    char err[1024];

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            file = argv[++i];
        } else if (strcmp(argv[i], "-t") == 0) {
            test = 1;
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
    if (test) {
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
    if (cfg.pid_file && *cfg.pid_file && write_pid(cfg.pid_file) != 0) {
        log_error("pid_file %s: %s", cfg.pid_file, strerror(errno));
        log_close();
        cfg_free(&cfg);
        return 1;
    }
    rc = master_run(&cfg, &is_worker);
    if (!is_worker && cfg.pid_file && *cfg.pid_file)
        unlink(cfg.pid_file);
    log_close();
    cfg_free(&cfg);
    return rc;
}

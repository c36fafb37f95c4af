/* log.c: event log (see log.h). */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_level cur_level = LOG_INFO;
static int worker_id;
static int log_fd = STDERR_FILENO;
static char *log_path;

void log_set_worker(int id)
{
    worker_id = id;
}

void log_set_level(enum log_level level)
{
    cur_level = level;
}

enum log_level log_get_level(void)
{
    return cur_level;
}

static const char *const names[] = {"error", "warn", "info", "debug"};

int log_level_parse(const char *s)
{
    int i;

    for (i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

const char *log_level_name(enum log_level level)
{
    return names[level];
}

static int open_path(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

int log_open(const char *path)
{
    int fd;
    char *copy;

    if (path == NULL || *path == '\0') {
        log_close();
        return 0;
    }
    if ((copy = strdup(path)) == NULL)
        return -1;
    if ((fd = open_path(path)) < 0) {
        free(copy);
        return -1;
    }
    log_close();
    log_fd = fd;
    log_path = copy;
    return 0;
}

int log_reopen(void)
{
    int fd;

    if (log_path == NULL)
        return 0;
    if ((fd = open_path(log_path)) < 0)
        return -1;
    /* dup2 swaps the file in one step, so no line is written to a closed fd. */
    if (dup2(fd, log_fd) < 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

void log_close(void)
{
    if (log_fd != STDERR_FILENO)
        close(log_fd);
    log_fd = STDERR_FILENO;
    free(log_path);
    log_path = NULL;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    size_t n;
    int r, saved = errno;
    va_list ap;

    if (level > cur_level)
        return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    r = snprintf(line + n, sizeof(line) - n, ".%03dZ [%s] %c%d ",
                 (int)(tv.tv_usec / 1000), names[level], worker_id ? 'w' : 'm',
                 worker_id);
    n += (size_t)r;
    va_start(ap, fmt);
    r = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (r < 0)
        r = 0;
    n += (size_t)r;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    /* One write per line keeps lines from several processes whole. */
    if (write(log_fd, line, n) < 0) {
        /* Nowhere left to report it. */
    }
    errno = saved;
}

/* log.h: one line per event on stderr or a log file:
 *   2026-11-23T09:00:00.123Z [info] w1 message
 * with the time (UTC, ms), the level and the worker id (m for the master).
 * Counts belong in metrics, not here: nothing on the hot path logs per
 * message. */
#ifndef BROKER_LOG_H
#define BROKER_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Sets the process's identity in every line: 0 is the master (or the only
 * process), N >= 1 a worker. */
void log_set_worker(int id);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parses "error", "warn", "info", "debug"; returns -1 for anything else. */
int log_level_parse(const char *s);
const char *log_level_name(enum log_level level);

/* Sends lines to path (appending), or to stderr when path is NULL or empty.
 * Returns 0, or -1 with errno set when the file cannot be opened; the old
 * destination is kept then. */
int log_open(const char *path);
/* Reopens the current file (after logrotate moved it). */
int log_reopen(void);
void log_close(void);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                   \
    do {                                                 \
        if (log_get_level() >= LOG_DEBUG)                \
            log_msg(LOG_DEBUG, __VA_ARGS__);             \
    } while (0)

#endif

/* t.h: the unit tests' harness, in the spirit of hiredis's test.c: each
 * check prints what failed and where; main() returns t_done(). */
#ifndef TEST_T_H
#define TEST_T_H

#include <stdio.h>
#include <string.h>

static int t_failed, t_run;

#define CHECK(cond)                                                          \
    do {                                                                     \
        t_run++;                                                             \
        if (!(cond)) {                                                       \
            t_failed++;                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
        }                                                                    \
    } while (0)

/* Compares a (pointer, length) pair with a C string, printing both. */
#define CHECK_MEM(p, n, lit)                                                   \
    do {                                                                       \
        const char *t_p = (const char *)(p);                                   \
        size_t t_n = (n);                                                      \
        t_run++;                                                               \
        if (t_n != strlen(lit) || memcmp(t_p, lit, t_n) != 0) {                \
            t_failed++;                                                        \
            fprintf(stderr, "%s:%d: got '%.*s', want '%s'\n", __FILE__,        \
                    __LINE__, (int)t_n, t_p, lit);                             \
        }                                                                      \
    } while (0)

static inline int t_done(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, t_run, t_failed);
    return t_failed ? 1 : 0;
}

#endif

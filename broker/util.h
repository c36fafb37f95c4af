/* util.h: the few macros every module of the daemon shares. */
#ifndef BROKER_UTIL_H
#define BROKER_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* The struct that embeds member, from a pointer to the member (wslay's and
 * h2o's way of reaching an owner from an embedded node). */
#define container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Milliseconds of CLOCK_MONOTONIC: every timeout and rate here uses it. */
static inline uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#endif

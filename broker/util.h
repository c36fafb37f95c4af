/* util.h: the few macros every module of the daemon shares. */
#ifndef BROKER_UTIL_H
#define BROKER_UTIL_H

#include <stddef.h>

/* The struct that embeds member, from a pointer to the member (wslay's and
 * h2o's way of reaching an owner from an embedded node). */
#define container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif

/* filter.h: server-side filters on JSON payloads, compiled once per
 * subscription and evaluated once per message per distinct filter.
 *
 * A filter is a JSON object; every condition must hold (AND):
 *   {"symbol":"ACME"}                         equality (scalar or null)
 *   {"order.side":{"$in":["buy","sell"]}}     dotted path, operator object
 *   {"price":{"$gte":100,"$lt":200}}          several operators on one path
 *   {"meta.tag":{"$exists":false}}
 * Operators: $eq $ne $in $nin $gt $gte $lt $lte $exists. Numbers compare
 * numerically (1 equals 1.0), strings by bytes, nothing converts between
 * types; ordering operators on mismatched types do not match. A path that
 * is missing matches only $ne, $nin and {"$exists":false}. A path segment
 * made of digits indexes an array; when the value at the end of a path is
 * an array, $eq/$in/ordering match if some element matches, and $ne/$nin
 * if no element equals (as MongoDB does). Equality to null matches an
 * explicit null only. The empty filter {} is no filter at all; a payload
 * that is not a JSON object matches no other filter.
 *
 * The registry sees filters as opaque: it groups subscriptions by
 * filter_key() (equal for filters that mean the same thing, whatever their
 * key order) and asks filter_match() with a struct filter_msg that parses
 * the payload (into a token index, not a tree) on the first question and
 * answers every later one from that one pass. */
#ifndef BROKER_FILTER_H
#define BROKER_FILTER_H

#include <stddef.h>

/* Limits, answered with bad_filter when passed. */
#define FILTER_MAX_CONDITIONS 32  /* operators over all paths */
#define FILTER_MAX_PATH_DEPTH 16  /* segments of one dotted path */
#define FILTER_MAX_PATH_BYTES 256
#define FILTER_MAX_IN_ITEMS 256   /* elements of a $in/$nin list */
#define FILTER_MAX_STRING_BYTES 1024

struct filter;

/* Compiles the filter whose JSON text is json[0..len). Returns the filter;
 * or NULL with *empty = 1 for {} (no filter); or NULL with *empty = 0 and
 * a static message in *why when the text is not a valid filter (or memory
 * runs out). The caller owns the filter. */
struct filter *filter_compile(const char *json, size_t len, int *empty, const char **why);

/* Frees f. Safe on NULL. */
void filter_free(struct filter *f);

/* The canonical text of f, equal for equivalent filters; borrowed from f. */
const char *filter_key(const struct filter *f, size_t *len);

/* One payload under evaluation. Initialise with filter_msg_init(), ask any
 * number of filter_match(), then filter_msg_release(). */
struct filter_msg {
    const char *text; /* borrowed payload */
    size_t len;
    size_t ntoks;     /* tokens in the worker's index, once parsed */
    int state;        /* 0 not parsed yet, 1 parsed object, 2 not an object */
};

/* is_json: the payload was found to be valid JSON (else it is never an
 * object and is never parsed). */
void filter_msg_init(struct filter_msg *m, const char *text, size_t len, int is_json);
void filter_msg_release(struct filter_msg *m);

/* 1 when the payload satisfies f, else 0. One payload at a time: the token
 * index is the worker's, reused by the next filter_msg. */
int filter_match(const struct filter *f, struct filter_msg *m);

/* Frees the worker's token buffer (at exit). */
void filter_cleanup(void);

#endif

/* filter.c: the filter compiler (on jansson) and the evaluator (on a token
 * index of the payload) (see filter.h). */
#include "filter.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "protocol/buf.h"
#include "protocol/json.h"

enum fop { OP_EQ, OP_NE, OP_IN, OP_NIN, OP_GT, OP_GTE, OP_LT, OP_LTE, OP_EXISTS };

static const char *const op_names[] = {"$eq", "$ne", "$in", "$nin", "$gt",
                                       "$gte", "$lt", "$lte", "$exists"};
#define NOPS (sizeof(op_names) / sizeof(op_names[0]))

struct fseg {
    const char *name; /* points into fcond.path_buf */
    size_t len;       /* strlen(name) */
    long index;       /* >= 0 when the segment is all digits (array index) */
};

struct fcond {
    char *path;           /* the dotted path as written */
    char *path_buf;       /* path with '.' replaced by NUL */
    struct fseg segs[FILTER_MAX_PATH_DEPTH];
    size_t nsegs;
    enum fop op;
    json_t *operand;      /* owned; $in/$nin: sorted, deduplicated array */
    char *dump;           /* operand's canonical text */
};

struct filter {
    struct fcond *conds;
    size_t n;
    char *key;
    size_t keylen;
};

static void cond_clear(struct fcond *c)
{
    free(c->path);
    free(c->path_buf);
    json_decref(c->operand);
    free(c->dump);
}

void filter_free(struct filter *f)
{
    size_t i;

    if (f == NULL)
        return;
    for (i = 0; i < f->n; i++)
        cond_clear(&f->conds[i]);
    free(f->conds);
    free(f->key);
    free(f);
}

const char *filter_key(const struct filter *f, size_t *len)
{
    *len = f->keylen;
    return f->key;
}

static int is_scalar(const json_t *v)
{
    return json_is_string(v) || json_is_number(v) || json_is_boolean(v) || json_is_null(v);
}

/* An integral real within 2^53 means the same as the integer: store it as
 * one, so that {"a":1} and {"a":1.0} share a group. */
static json_t *normalize(json_t *v)
{
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d >= -9007199254740992.0 && d <= 9007199254740992.0 && d == (double)(long long)d)
            return json_integer((json_int_t)d);
    }
    return json_incref(v);
}

static char *dump(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
}

static int cmp_dump(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    return strcmp(*x, *y);
}

/* A set operand ($in/$nin) in canonical order without duplicates. */
static json_t *normalize_set(json_t *arr, const char **why)
{
    size_t n = json_array_size(arr), i;
    char **texts = NULL;
    json_t *out = NULL;

    if (n > FILTER_MAX_IN_ITEMS) {
        *why = "$in/$nin lists are limited to 256 items";
        return NULL;
    }
    if ((texts = calloc(n + 1, sizeof(*texts))) == NULL)
        goto nomem;
    for (i = 0; i < n; i++) {
        json_t *e = json_array_get(arr, i), *ne;
        if (!is_scalar(e)) {
            *why = "$in/$nin lists may hold strings, numbers, booleans and null only";
            goto fail;
        }
        if (json_is_string(e) && json_string_length(e) > FILTER_MAX_STRING_BYTES) {
            *why = "filter strings are limited to 1024 bytes";
            goto fail;
        }
        ne = normalize(e);
        texts[i] = ne ? dump(ne) : NULL;
        json_decref(ne);
        if (texts[i] == NULL)
            goto nomem;
    }
    qsort(texts, n, sizeof(*texts), cmp_dump);
    if ((out = json_array()) == NULL)
        goto nomem;
    for (i = 0; i < n; i++) {
        json_t *e;
        if (i > 0 && strcmp(texts[i], texts[i - 1]) == 0)
            continue;
        e = json_loads(texts[i], JSON_DECODE_ANY, NULL);
        if (e == NULL || json_array_append_new(out, e) != 0)
            goto nomem;
    }
    for (i = 0; i < n; i++)
        free(texts[i]);
    free(texts);
    return out;
nomem:
    *why = "out of memory";
fail:
    if (texts != NULL)
        for (i = 0; i < n; i++)
            free(texts[i]);
    free(texts);
    json_decref(out);
    return NULL;
}

static int parse_path(struct fcond *c, const char *key, size_t keylen, const char **why)
{
    char *p;
    size_t i;

    if (keylen == 0 || keylen > FILTER_MAX_PATH_BYTES || strlen(key) != keylen) {
        *why = "filter paths are 1 to 256 bytes without NUL";
        return -1;
    }
    if ((c->path = strdup(key)) == NULL || (c->path_buf = strdup(key)) == NULL) {
        *why = "out of memory";
        return -1;
    }
    p = c->path_buf;
    c->nsegs = 0;
    for (;;) {
        char *dot = strchr(p, '.');
        struct fseg *s;
        if (dot)
            *dot = '\0';
        if (*p == '\0') {
            *why = "filter paths may not have empty segments";
            return -1;
        }
        if (c->nsegs == FILTER_MAX_PATH_DEPTH) {
            *why = "filter paths are limited to 16 segments";
            return -1;
        }
        s = &c->segs[c->nsegs++];
        s->name = p;
        s->len = strlen(p);
        s->index = -1;
        if (s->len <= 9) {
            long v = 0;
            for (i = 0; p[i] >= '0' && p[i] <= '9'; i++)
                v = v * 10 + (p[i] - '0');
            if (p[i] == '\0')
                s->index = v;
        }
        if (dot == NULL)
            return 0;
        p = dot + 1;
    }
}

static int find_op(const char *name)
{
    size_t i;

    for (i = 0; i < NOPS; i++)
        if (strcmp(name, op_names[i]) == 0)
            return (int)i;
    return -1;
}

/* Checks operand v for operator op and stores its canonical form in c. */
static int set_operand(struct fcond *c, enum fop op, json_t *v, const char **why)
{
    c->op = op;
    switch (op) {
    case OP_EQ:
    case OP_NE:
        if (!is_scalar(v)) {
            *why = "equality takes a string, number, boolean or null";
            return -1;
        }
        c->operand = normalize(v);
        break;
    case OP_IN:
    case OP_NIN:
        if (!json_is_array(v)) {
            *why = "$in and $nin take an array";
            return -1;
        }
        if ((c->operand = normalize_set(v, why)) == NULL)
            return -1;
        break;
    case OP_GT:
    case OP_GTE:
    case OP_LT:
    case OP_LTE:
        if (!json_is_number(v) && !json_is_string(v)) {
            *why = "$gt, $gte, $lt and $lte take a number or a string";
            return -1;
        }
        c->operand = normalize(v);
        break;
    case OP_EXISTS:
        if (!json_is_boolean(v)) {
            *why = "$exists takes true or false";
            return -1;
        }
        c->operand = json_incref(v);
        break;
    }
    if (json_is_string(c->operand) && json_string_length(c->operand) > FILTER_MAX_STRING_BYTES) {
        *why = "filter strings are limited to 1024 bytes";
        return -1;
    }
    if (c->operand == NULL || (c->dump = dump(c->operand)) == NULL) {
        *why = "out of memory";
        return -1;
    }
    return 0;
}

static struct fcond *new_cond(struct filter *f, size_t *cap, const char **why)
{
    if (f->n == FILTER_MAX_CONDITIONS) {
        *why = "filters are limited to 32 conditions";
        return NULL;
    }
    if (f->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 4;
        struct fcond *nc = realloc(f->conds, ncap * sizeof(*nc));
        if (nc == NULL) {
            *why = "out of memory";
            return NULL;
        }
        f->conds = nc;
        *cap = ncap;
    }
    memset(&f->conds[f->n], 0, sizeof(f->conds[0]));
    return &f->conds[f->n++];
}

/* Compiles one "path": value member into one or more conditions. */
static int compile_member(struct filter *f, size_t *cap, const char *key, size_t keylen,
                          json_t *value, const char **why)
{
    struct fcond *c;

    if (json_is_object(value)) {
        const char *opname;
        json_t *operand;

        if (json_object_size(value) == 0) {
            *why = "empty operator object";
            return -1;
        }
        json_object_foreach(value, opname, operand) {
            int op = opname[0] == '$' ? find_op(opname) : -1;
            if (opname[0] != '$') {
                *why = "an operator object may hold operators ($eq, $in, ...) only";
                return -1;
            }
            if (op < 0) {
                *why = "unknown operator (use $eq $ne $in $nin $gt $gte $lt $lte $exists)";
                return -1;
            }
            if ((c = new_cond(f, cap, why)) == NULL || parse_path(c, key, keylen, why) != 0 ||
                set_operand(c, (enum fop)op, operand, why) != 0)
                return -1;
        }
        return 0;
    }
    if (json_is_array(value)) {
        *why = "arrays are allowed only as $in/$nin operands";
        return -1;
    }
    if ((c = new_cond(f, cap, why)) == NULL || parse_path(c, key, keylen, why) != 0)
        return -1;
    return set_operand(c, OP_EQ, value, why);
}

static int cmp_cond(const void *a, const void *b)
{
    const struct fcond *x = a, *y = b;
    int r = strcmp(x->path, y->path);

    if (r == 0)
        r = (int)x->op - (int)y->op;
    if (r == 0)
        r = strcmp(x->dump, y->dump);
    return r;
}

static int build_key(struct filter *f)
{
    struct proto_buf b = {0};
    size_t i;

    qsort(f->conds, f->n, sizeof(*f->conds), cmp_cond);
    for (i = 0; i < f->n; i++) {
        const struct fcond *c = &f->conds[i];
        /* NUL cannot occur in a path (refused) nor in a compact dump. */
        if (proto_buf_append(&b, c->path, strlen(c->path) + 1) != 0 ||
            proto_buf_append(&b, op_names[c->op], strlen(op_names[c->op]) + 1) != 0 ||
            proto_buf_append(&b, c->dump, strlen(c->dump) + 1) != 0) {
            proto_buf_free(&b);
            return -1;
        }
    }
    f->key = b.data;
    f->keylen = b.len;
    return 0;
}

struct filter *filter_compile(const char *json, size_t len, int *empty, const char **why)
{
    json_t *root, *value;
    struct filter *f = NULL;
    size_t cap = 0;
    void *it;

    *empty = 0;
    root = json_loadb(json, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
    if (root == NULL) {
        *why = "filter is not valid JSON (or repeats a key)";
        return NULL;
    }
    if (!json_is_object(root)) {
        *why = "filter must be a JSON object";
        goto fail;
    }
    if (json_object_size(root) == 0) {
        *empty = 1;
        goto fail;
    }
    if ((f = calloc(1, sizeof(*f))) == NULL) {
        *why = "out of memory";
        goto fail;
    }
    for (it = json_object_iter(root); it != NULL; it = json_object_iter_next(root, it)) {
        value = json_object_iter_value(it);
        if (compile_member(f, &cap, json_object_iter_key(it), json_object_iter_key_len(it),
                           value, why) != 0)
            goto fail;
    }
    if (build_key(f) != 0) {
        *why = "out of memory";
        goto fail;
    }
    json_decref(root);
    return f;
fail:
    filter_free(f);
    json_decref(root);
    return NULL;
}

/* Evaluation, on a token index of the payload built once per message
 * (protocol/json.h): only the values a filter's paths reach are decoded,
 * and nothing is allocated per message once the worker's token buffer has
 * grown to its payloads' size. (A jansson tree per payload cost ~40 us for
 * 3 KB, most of it copying one long string byte by byte; the index costs a
 * few.) */

static struct proto_json_tok *toks;   /* the worker's token buffer */
static size_t toks_cap;
static struct proto_buf scratch;      /* a decoded key or string value */

void filter_msg_init(struct filter_msg *m, const char *text, size_t len, int is_json)
{
    m->text = text;
    m->len = len;
    m->ntoks = 0;
    m->state = is_json ? 0 : 2;
}

void filter_msg_release(struct filter_msg *m)
{
    m->ntoks = 0;
    m->state = 2;
}

void filter_cleanup(void)
{
    free(toks);
    toks = NULL;
    toks_cap = 0;
    proto_buf_free(&scratch);
}

/* Tokenizes the payload on the first question; 1 when it is an object. */
static int msg_ready(struct filter_msg *m)
{
    long n;

    if (m->state == 0) {
        size_t i = 0;
        m->state = 2;
        /* Only objects can match: no index for anything else. */
        while (i < m->len && (m->text[i] == ' ' || m->text[i] == '\t' || m->text[i] == '\n' ||
                              m->text[i] == '\r'))
            i++;
        if (i == m->len || m->text[i] != '{')
            return 0;
        n = proto_json_tokenize(m->text, m->len, &toks, &toks_cap);
        if (n > 0 && toks[0].type == PROTO_JSON_OBJECT) {
            m->ntoks = (size_t)n;
            m->state = 1;
        }
    }
    return m->state == 1;
}

/* The bytes of string token t, decoded when it has escapes (into scratch,
 * valid until the next call). */
static const char *tok_str(const struct filter_msg *m, const struct proto_json_tok *t,
                           size_t *len)
{
    const char *raw = m->text + t->start + 1;
    size_t n = t->len - 2;
    struct proto_json_span sp = {m->text + t->start, t->len};

    if (memchr(raw, '\\', n) == NULL) {
        *len = n;
        return raw;
    }
    proto_buf_reset(&scratch);
    if (proto_json_string_decode(&scratch, sp) != 0) {
        *len = 0;
        return "";
    }
    *len = scratch.len;
    return scratch.data ? scratch.data : "";
}

/* The token a condition's path leads to, or -1 when it is missing. As
 * jansson did, the last of duplicate keys wins. */
static long resolve(const struct filter_msg *m, const struct fcond *c)
{
    size_t cur = 0, i, s;

    for (s = 0; s < c->nsegs; s++) {
        const struct proto_json_tok *t = &toks[cur];
        long found = -1;
        if (t->type == PROTO_JSON_OBJECT) {
            size_t want = c->segs[s].len;
            for (i = cur + 1; i + 1 < t->end; i = toks[i + 1].end) {
                size_t kl;
                const char *k = tok_str(m, &toks[i], &kl);
                if (kl == want && memcmp(k, c->segs[s].name, kl) == 0)
                    found = (long)(i + 1);
            }
        } else if (t->type == PROTO_JSON_ARRAY && c->segs[s].index >= 0) {
            long k = 0;
            for (i = cur + 1; i < t->end; i = toks[i].end, k++) {
                if (k == c->segs[s].index) {
                    found = (long)i;
                    break;
                }
            }
        }
        if (found < 0)
            return -1;
        cur = (size_t)found;
    }
    return (long)cur;
}

/* A number token as an exact integer when it is one that fits, else as a
 * double. */
static void tok_number(const struct filter_msg *m, const struct proto_json_tok *t,
                       int *is_int, long long *iv, double *dv)
{
    const char *p = m->text + t->start;
    size_t n = t->len, neg = n > 0 && *p == '-';
    char *endp;

    *is_int = 0;
    /* The common case, an integer of at most 18 digits (which cannot
     * overflow), without libc. */
    if (n > neg && n - neg <= 18) {
        size_t i = neg;
        long long v = 0;
        while (i < n && p[i] >= '0' && p[i] <= '9')
            v = v * 10 + (p[i++] - '0');
        if (i == n) {
            *is_int = 1;
            *iv = neg ? -v : v;
            *dv = (double)*iv;
            return;
        }
    }
    /* Only objects are tokenized, so a number is always followed by a
     * delimiter of the validated text (',', ']', '}' or space): libc's
     * parsers stop at its end, with no copy. */
    errno = 0;
    *iv = strtoll(p, &endp, 10);
    if (errno == 0 && endp == p + n) {
        *is_int = 1;
        *dv = (double)*iv;
        return;
    }
    *dv = strtod(p, NULL);
}

/* Three-way comparison of a payload token with an operand of the same
 * family (numbers, or strings); -1 when they cannot be ordered. */
static int order(const struct filter_msg *m, const struct proto_json_tok *t, const json_t *op,
                 int *r)
{
    if (t->type == PROTO_JSON_NUMBER && json_is_number(op)) {
        int is_int;
        long long iv = 0;
        double dv = 0;
        tok_number(m, t, &is_int, &iv, &dv);
        if (is_int && json_is_integer(op)) {
            json_int_t y = json_integer_value(op);
            *r = (iv > y) - (iv < y);
        } else {
            double y = json_number_value(op);
            *r = (dv > y) - (dv < y);
        }
        return 0;
    }
    if (t->type == PROTO_JSON_STRING && json_is_string(op)) {
        size_t la, lb = json_string_length(op);
        const char *a = tok_str(m, t, &la);
        int c = memcmp(a, json_string_value(op), la < lb ? la : lb);
        *r = c != 0 ? (c > 0) - (c < 0) : (la > lb) - (la < lb);
        return 0;
    }
    return -1;
}

static int equal(const struct filter_msg *m, const struct proto_json_tok *t, const json_t *op)
{
    int r;

    if (order(m, t, op, &r) == 0)
        return r == 0;
    switch (t->type) {
    case PROTO_JSON_TRUE: return json_is_true(op);
    case PROTO_JSON_FALSE: return json_is_false(op);
    case PROTO_JSON_NULL: return json_is_null(op);
    default: return 0;
    }
}

/* The positive form of a condition on one value that is present. */
static int test(const struct filter_msg *m, enum fop op, const struct proto_json_tok *t,
                const json_t *operand)
{
    size_t i;
    int r;

    switch (op) {
    case OP_EQ:
        return equal(m, t, operand);
    case OP_IN:
        for (i = 0; i < json_array_size(operand); i++)
            if (equal(m, t, json_array_get(operand, i)))
                return 1;
        return 0;
    case OP_GT:
        return order(m, t, operand, &r) == 0 && r > 0;
    case OP_GTE:
        return order(m, t, operand, &r) == 0 && r >= 0;
    case OP_LT:
        return order(m, t, operand, &r) == 0 && r < 0;
    case OP_LTE:
        return order(m, t, operand, &r) == 0 && r <= 0;
    default:
        return 0;
    }
}

/* Arrays at the end of a path match when one of their elements does. */
static int test_any(const struct filter_msg *m, enum fop op, size_t at, const json_t *operand)
{
    const struct proto_json_tok *t = &toks[at];
    size_t i;

    if (t->type != PROTO_JSON_ARRAY)
        return test(m, op, t, operand);
    for (i = at + 1; i < t->end; i = toks[i].end)
        if (test(m, op, &toks[i], operand))
            return 1;
    return 0;
}

static int eval(const struct filter_msg *m, const struct fcond *c)
{
    long v = resolve(m, c);

    switch (c->op) {
    case OP_EXISTS:
        return (v >= 0) == json_is_true(c->operand);
    case OP_NE:
        return v < 0 || !test_any(m, OP_EQ, (size_t)v, c->operand);
    case OP_NIN:
        return v < 0 || !test_any(m, OP_IN, (size_t)v, c->operand);
    default:
        return v >= 0 && test_any(m, c->op, (size_t)v, c->operand);
    }
}

int filter_match(const struct filter *f, struct filter_msg *m)
{
    size_t i;

    if (!msg_ready(m))
        return 0;
    for (i = 0; i < f->n; i++)
        if (!eval(m, &f->conds[i]))
            return 0;
    return 1;
}

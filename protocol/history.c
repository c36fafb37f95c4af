/* history.c: positions in a channel's history (see history.h). */
#include "history.h"

#include <string.h>

int proto_epoch_valid(const char *e, size_t n)
{
    size_t i;

    if (n == 0 || n > PROTO_EPOCH_MAX)
        return 0;
    for (i = 0; i < n; i++)
        if (!((e[i] >= '0' && e[i] <= '9') || (e[i] >= 'a' && e[i] <= 'z')))
            return 0;
    return 1;
}

/* A positive decimal of at most 19 digits (fits uint64_t). */
static int parse_offset(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (n == 0 || n > 19 || p[0] == '0')
        return -1;
    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return 0;
}

int proto_pos_strip(const char *p, size_t n, struct proto_pos *pos, const char **payload,
                    size_t *plen)
{
    const char *colon, *nul, *end = p + n;

    *payload = p;
    *plen = n;
    if (n < 2 || p[0] != '\0' || p[1] != 'H')
        return 0;
    colon = memchr(p + 2, ':', (size_t)(n - 2));
    if (colon == NULL || parse_offset(p + 2, (size_t)(colon - p - 2), &pos->offset) != 0)
        return -1;
    nul = memchr(colon + 1, '\0', (size_t)(end - colon - 1));
    if (nul == NULL || !proto_epoch_valid(colon + 1, (size_t)(nul - colon - 1)))
        return -1;
    pos->epoch_len = (uint8_t)(nul - colon - 1);
    memcpy(pos->epoch, colon + 1, pos->epoch_len);
    pos->epoch[pos->epoch_len] = '\0';
    *payload = nul + 1;
    *plen = (size_t)(end - nul - 1);
    return 1;
}

static int append_u64(struct proto_buf *out, uint64_t v)
{
    char d[24];
    int i = (int)sizeof(d);

    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    return proto_buf_append(out, d + i, sizeof(d) - (size_t)i);
}

int proto_pos_prefix(struct proto_buf *out, const struct proto_pos *pos)
{
    if (proto_buf_append(out, "\0H", 2) != 0 || append_u64(out, pos->offset) != 0 ||
        proto_buf_append_byte(out, ':') != 0 ||
        proto_buf_append(out, pos->epoch, pos->epoch_len) != 0)
        return -1;
    return proto_buf_append_byte(out, '\0');
}

int proto_pos_members(struct proto_buf *out, const struct proto_pos *pos)
{
    /* The epoch is [0-9a-z]: no escaping. */
    if (proto_buf_append_str(out, ",\"offset\":") != 0 || append_u64(out, pos->offset) != 0 ||
        proto_buf_append_str(out, ",\"epoch\":\"") != 0 ||
        proto_buf_append(out, pos->epoch, pos->epoch_len) != 0)
        return -1;
    return proto_buf_append_byte(out, '"');
}

int proto_batch_close_pos(struct proto_buf *out, const struct proto_pos *pos)
{
    if (proto_buf_append_byte(out, ']') != 0 || proto_pos_members(out, pos) != 0)
        return -1;
    return proto_buf_append_byte(out, '}');
}

int proto_since_decode(struct proto_json_span v, struct proto_pos *since, const char **why)
{
    struct proto_json_obj_iter it;
    struct proto_json_span key, val, off = {0}, ep = {0};
    struct proto_buf e = {0};
    uint64_t o = 0;
    size_t i;
    int r, rc = -1;

    *why = "since must be {\"offset\":N,\"epoch\":\"...\"}";
    if (proto_json_type_of(v) != PROTO_JSON_OBJECT || proto_json_obj_begin(&it, v.p, v.n) != 0)
        return -1;
    while ((r = proto_json_obj_next(&it, &key, &val)) == 1) {
        if (proto_json_string_eq(key, "offset"))
            off = val;
        else if (proto_json_string_eq(key, "epoch"))
            ep = val;
    }
    if (r < 0 || off.n == 0 || ep.n == 0 || proto_json_type_of(ep) != PROTO_JSON_STRING)
        return -1;
    /* A plain non-negative integer: digits only, no sign, fraction or exponent. */
    if (off.n > 19 || (off.n > 1 && off.p[0] == '0'))
        return -1;
    for (i = 0; i < off.n; i++) {
        if (off.p[i] < '0' || off.p[i] > '9')
            return -1;
        o = o * 10 + (uint64_t)(off.p[i] - '0');
    }
    if (proto_json_string_decode(&e, ep) != 0 || e.len > 64)
        goto done;
    since->offset = o;
    /* An epoch we would never issue is kept as a non-matching mark. */
    if (proto_epoch_valid(e.data, e.len)) {
        since->epoch_len = (uint8_t)e.len;
        memcpy(since->epoch, e.data, e.len);
    } else {
        since->epoch_len = 1;
        since->epoch[0] = '-';
    }
    since->epoch[since->epoch_len] = '\0';
    rc = 0;
    *why = NULL;
done:
    proto_buf_free(&e);
    return rc;
}

/* codec.c: control messages and the batch envelope (see codec.h). */
#include "codec.h"

#include <string.h>

int proto_channel_valid(const char *name, size_t n)
{
    size_t i;

    if (n == 0 || n > PROTO_CHANNEL_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7F)
            return 0;
    }
    return proto_utf8_valid(name, n);
}

/* "since" and "history" of a subscribe (null counts as absent). */
static int decode_resume(struct proto_request *req, struct proto_json_span since,
                         struct proto_json_span history, const char **why)
{
    uint64_t h = 0;
    size_t i;

    if (since.n > 0 && proto_json_type_of(since) == PROTO_JSON_NULL)
        since.n = 0;
    if (history.n > 0 && proto_json_type_of(history) == PROTO_JSON_NULL)
        history.n = 0;
    if (since.n > 0 && history.n > 0) {
        *why = "history and since cannot be combined";
        return -1;
    }
    if (since.n > 0) {
        if (proto_since_decode(since, &req->since, why) != 0)
            return -1;
        req->has_since = 1;
    }
    if (history.n > 0) {
        *why = "history must be an integer from 0 to 1000000";
        if (history.n > 7 || (history.n > 1 && history.p[0] == '0'))
            return -1;
        for (i = 0; i < history.n; i++) {
            if (history.p[i] < '0' || history.p[i] > '9')
                return -1;
            h = h * 10 + (uint64_t)(history.p[i] - '0');
        }
        if (h > PROTO_HISTORY_MAX)
            return -1;
        req->history = (uint32_t)h;
    }
    return 0;
}

enum proto_error proto_request_decode(const char *msg, size_t n,
                                      struct proto_request *req, const char **why)
{
    struct proto_json_obj_iter it;
    struct proto_json_span key, val, action = {0}, channel = {0}, ident = {0}, since = {0},
                                     history = {0};
    int r;

    req->action = PROTO_ACTION_NONE;
    req->rid.p = req->filter.p = NULL;
    req->rid.n = req->filter.n = 0;
    req->has_since = 0;
    req->history = 0;
    proto_buf_reset(req->channel);

    /* Validate the whole text first so that no member of an invalid message
     * (not even its rid) is used. */
    if (!proto_json_validate(msg, n)) {
        *why = "invalid JSON";
        return PROTO_ERR_BAD_REQUEST;
    }
    if (proto_json_obj_begin(&it, msg, n) != 0) {
        *why = "message must be a JSON object";
        return PROTO_ERR_BAD_REQUEST;
    }
    /* Later duplicates win, as with most JSON parsers. */
    while ((r = proto_json_obj_next(&it, &key, &val)) == 1) {
        if (proto_json_string_eq(key, "action"))
            action = val;
        else if (proto_json_string_eq(key, "channel"))
            channel = val;
        else if (proto_json_string_eq(key, "identifier"))
            ident = val;
        else if (proto_json_string_eq(key, "rid"))
            req->rid = val;
        else if (proto_json_string_eq(key, "filter"))
            req->filter = val;
        else if (proto_json_string_eq(key, "since"))
            since = val;
        else if (proto_json_string_eq(key, "history"))
            history = val;
    }
    if (r < 0) {
        *why = "invalid JSON";
        return PROTO_ERR_BAD_REQUEST;
    }
    if (action.n == 0) {
        *why = "missing action";
        return PROTO_ERR_BAD_REQUEST;
    }
    if (proto_json_string_eq(action, "subscribe")) {
        req->action = PROTO_ACTION_SUBSCRIBE;
    } else if (proto_json_string_eq(action, "unsubscribe")) {
        req->action = PROTO_ACTION_UNSUBSCRIBE;
    } else {
        *why = "unknown action";
        return PROTO_ERR_BAD_REQUEST;
    }
    if (channel.n == 0)
        channel = ident;
    if (channel.n == 0) {
        *why = "missing channel";
        return PROTO_ERR_BAD_REQUEST;
    }
    if (proto_json_type_of(channel) != PROTO_JSON_STRING) {
        *why = "channel must be a string";
        return PROTO_ERR_BAD_REQUEST;
    }
    if (proto_json_string_decode(req->channel, channel) != 0) {
        *why = "out of memory";
        return PROTO_ERR_BAD_REQUEST;
    }
    if (!proto_channel_valid(req->channel->data, req->channel->len)) {
        *why = "invalid channel name (1-256 bytes, no control characters)";
        return PROTO_ERR_BAD_REQUEST;
    }
    if (req->action == PROTO_ACTION_SUBSCRIBE && decode_resume(req, since, history, why) != 0)
        return PROTO_ERR_BAD_REQUEST;
    *why = NULL;
    return PROTO_OK;
}

const char *proto_action_name(enum proto_action a)
{
    switch (a) {
    case PROTO_ACTION_SUBSCRIBE: return "subscribe";
    case PROTO_ACTION_UNSUBSCRIBE: return "unsubscribe";
    default: return "none";
    }
}

const char *proto_error_name(enum proto_error e)
{
    switch (e) {
    case PROTO_ERR_BAD_REQUEST: return "bad_request";
    case PROTO_ERR_BAD_FILTER: return "bad_filter";
    case PROTO_ERR_FORBIDDEN: return "forbidden";
    case PROTO_ERR_LIMIT: return "limit";
    default: return "ok";
    }
}

static int append_rid(struct proto_buf *out, struct proto_json_span rid)
{
    if (rid.n == 0)
        return 0;
    if (proto_buf_append_str(out, ",\"rid\":") != 0)
        return -1;
    return proto_buf_append(out, rid.p, rid.n);
}

int proto_ack_encode(struct proto_buf *out, enum proto_action a,
                     const char *channel, size_t channel_len,
                     struct proto_json_span rid)
{
    if (proto_buf_append_str(out, "{\"type\":\"ack\",\"action\":\"") != 0 ||
        proto_buf_append_str(out, proto_action_name(a)) != 0 ||
        proto_buf_append_str(out, "\",\"channel\":") != 0 ||
        proto_json_encode_string(out, channel, channel_len) != 0 ||
        append_rid(out, rid) != 0)
        return -1;
    return proto_buf_append_byte(out, '}');
}

int proto_ack_encode_info(struct proto_buf *out, enum proto_action a, const char *channel,
                          size_t channel_len, struct proto_json_span rid,
                          const struct proto_ack_info *info)
{
    if (proto_buf_append_str(out, "{\"type\":\"ack\",\"action\":\"") != 0 ||
        proto_buf_append_str(out, proto_action_name(a)) != 0 ||
        proto_buf_append_str(out, "\",\"channel\":") != 0 ||
        proto_json_encode_string(out, channel, channel_len) != 0 || append_rid(out, rid) != 0)
        return -1;
    if (info != NULL && info->recovered >= 0 &&
        proto_buf_append_str(out, info->recovered ? ",\"recovered\":true" : ",\"recovered\":false") != 0)
        return -1;
    if (info != NULL && info->pos != NULL && info->pos->offset > 0 &&
        proto_pos_members(out, info->pos) != 0)
        return -1;
    return proto_buf_append_byte(out, '}');
}

int proto_error_encode(struct proto_buf *out, enum proto_error code,
                       const char *message, struct proto_json_span rid)
{
    if (proto_buf_append_str(out, "{\"type\":\"error\",\"code\":\"") != 0 ||
        proto_buf_append_str(out, proto_error_name(code)) != 0 ||
        proto_buf_append_str(out, "\",\"message\":") != 0 ||
        proto_json_encode_string(out, message, strlen(message)) != 0 ||
        append_rid(out, rid) != 0)
        return -1;
    return proto_buf_append_byte(out, '}');
}

int proto_batch_open(struct proto_buf *out, const char *channel, size_t channel_len)
{
    if (proto_buf_append_str(out, "{\"type\":\"batch\",\"channel\":") != 0 ||
        proto_json_encode_string(out, channel, channel_len) != 0)
        return -1;
    return proto_buf_append_str(out, ",\"messages\":[");
}

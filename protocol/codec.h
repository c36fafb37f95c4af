/* codec.h: the broker's WebSocket protocol, both directions (PROTOCOL.md).
 *
 * Client to broker: one JSON object per text frame,
 *   {"action":"subscribe"|"unsubscribe","channel":"...","rid":<any>,"filter":{...},
 *    "since":{"offset":N,"epoch":"..."} | "history":N}
 * ("identifier" is accepted in place of "channel").
 * Broker to client: acks, errors and batches,
 *   {"type":"ack","action":"subscribe","channel":"...","rid":<same>}
 *   {"type":"error","code":"bad_request","message":"...","rid":<same>}
 *   {"type":"batch","channel":"...","messages":[<payload>,<payload>]}
 *
 * Decoding borrows the message text: spans in a proto_request point into it
 * and stay valid only as long as it does. Encoders append to a proto_buf the
 * caller owns and return 0, or -1 on ENOMEM. */
#ifndef PROTO_CODEC_H
#define PROTO_CODEC_H

#include <stddef.h>

#include "buf.h"
#include "history.h"
#include "json.h"

/* Longest channel name, in bytes; longer names are refused (bad_request). */
#define PROTO_CHANNEL_MAX 256

enum proto_action {
    PROTO_ACTION_NONE = 0,
    PROTO_ACTION_SUBSCRIBE,
    PROTO_ACTION_UNSUBSCRIBE
};

/* Error codes sent in {"type":"error","code":...}. */
enum proto_error {
    PROTO_OK = 0,
    PROTO_ERR_BAD_REQUEST,
    PROTO_ERR_BAD_FILTER,
    PROTO_ERR_FORBIDDEN,
    PROTO_ERR_LIMIT
};

/* WebSocket close codes the broker sends (RFC 6455 section 7.4, plus 4001). */
enum proto_close {
    PROTO_CLOSE_NORMAL = 1000,
    PROTO_CLOSE_GOING_AWAY = 1001,
    PROTO_CLOSE_PROTOCOL_ERROR = 1002,
    PROTO_CLOSE_UNSUPPORTED_DATA = 1003,
    PROTO_CLOSE_INVALID_PAYLOAD = 1007,
    PROTO_CLOSE_POLICY = 1008,
    PROTO_CLOSE_TOO_BIG = 1009,
    PROTO_CLOSE_TOKEN_EXPIRED = 4001
};

/* The largest "history" a subscribe may ask for (the broker serves at
 * most history_recover_max of them). */
#define PROTO_HISTORY_MAX 1000000

struct proto_request {
    enum proto_action action;
    struct proto_buf *channel;   /* caller's buffer, receives the decoded name */
    struct proto_json_span rid;    /* raw JSON value; n == 0 when absent */
    struct proto_json_span filter; /* raw JSON value; n == 0 when absent */
    int has_since;                 /* subscribe: resume after this position */
    struct proto_pos since;
    uint32_t history;              /* subscribe: the last N messages first; 0 none */
};

/* What an ack of a subscribe to a history channel says. */
struct proto_ack_info {
    const struct proto_pos *pos; /* the channel's current position; NULL: none */
    int recovered;               /* -1: not asked (no since), 0 false, 1 true */
};

/* Decodes one control message. req->channel must point to a buffer of the
 * caller's; it is reset and receives the channel name. Returns PROTO_OK, or
 * PROTO_ERR_BAD_REQUEST with *why set to a static explanation; req->rid is
 * filled whenever the message was a JSON object, so errors can echo it. */
enum proto_error proto_request_decode(const char *msg, size_t n,
                                      struct proto_request *req, const char **why);

/* 1 when name[0..n) is an acceptable channel name: 1 to PROTO_CHANNEL_MAX
 * bytes of valid UTF-8 without control characters. */
int proto_channel_valid(const char *name, size_t n);

const char *proto_action_name(enum proto_action a);
const char *proto_error_name(enum proto_error e);

int proto_ack_encode(struct proto_buf *out, enum proto_action a,
                     const char *channel, size_t channel_len,
                     struct proto_json_span rid);
/* The same with "recovered", "offset" and "epoch" when info says so. */
int proto_ack_encode_info(struct proto_buf *out, enum proto_action a, const char *channel,
                          size_t channel_len, struct proto_json_span rid,
                          const struct proto_ack_info *info);
int proto_error_encode(struct proto_buf *out, enum proto_error code,
                       const char *message, struct proto_json_span rid);

/* A batch is proto_batch_open(), then each payload's JSON text separated by
 * proto_batch_sep(), then proto_batch_close(). */
int proto_batch_open(struct proto_buf *out, const char *channel, size_t channel_len);
#define PROTO_BATCH_SEP ","
#define PROTO_BATCH_CLOSE "]}"

#endif

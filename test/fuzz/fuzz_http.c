/* fuzz_http.c: the HTTP request-head parser and the helpers the upgrade
 * uses on what it parsed. */
#include <stdint.h>
#include <stdlib.h>

#include "protocol/httpreq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proto_http_req req;
    struct proto_buf q = {0};
    char accept[29];
    enum proto_http_status st = proto_http_parse((const char *)data, size, &req);

    if (st == PROTO_HTTP_DONE) {
        struct proto_json_span key = proto_http_header(&req, "Sec-WebSocket-Key");
        if (req.head_len > size || req.head_len > PROTO_HTTP_MAX_HEAD)
            abort();
        (void)proto_http_has_token(proto_http_header(&req, "Connection"), "upgrade");
        (void)proto_http_query_param(req.query, "channels", &q);
        (void)proto_http_query_param(req.query, "token", &q);
        if (proto_ws_key_valid(key))
            proto_ws_accept(key, accept);
    }
    proto_buf_free(&q);
    return 0;
}

/* fuzz_control.c: the control-message decoder and the answers built from
 * what it decoded. */
#include <stdint.h>
#include <stdlib.h>

#include "protocol/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proto_buf ch = {0}, out = {0};
    struct proto_request req;
    const char *why;
    enum proto_error e;

    req.channel = &ch;
    e = proto_request_decode((const char *)data, size, &req, &why);
    if (e == PROTO_OK) {
        if (!proto_channel_valid(ch.data, ch.len))
            abort();
        if (proto_ack_encode(&out, req.action, ch.data, ch.len, req.rid) != 0)
            abort();
    } else if (proto_error_encode(&out, e, why, req.rid) != 0) {
        abort();
    }
    /* An answer is always valid JSON, rid included. */
    if (!proto_json_validate(out.data, out.len))
        abort();
    proto_buf_free(&ch);
    proto_buf_free(&out);
    return 0;
}

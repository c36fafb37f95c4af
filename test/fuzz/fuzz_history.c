/* fuzz_history.c: the history position prefix (proto_pos_strip) on any
 * Redis payload, what it strips re-encoded and read back, and the "since"
 * member of a subscribe (proto_since_decode) on any JSON value. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/history.h"
#include "protocol/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *pl, *why;
    struct proto_pos pos, back;
    struct proto_json_span v = {p, size};
    struct proto_buf b = {0};
    size_t n;
    int r = proto_pos_strip(p, size, &pos, &pl, &n);

    if (r == 1) {
        if (pl < p || pl + n != p + size || pos.offset == 0 ||
            !proto_epoch_valid(pos.epoch, pos.epoch_len))
            abort();
        if (proto_pos_prefix(&b, &pos) == 0 &&
            (proto_pos_strip(b.data, b.len, &back, &pl, &n) != 1 || n != 0 ||
             back.offset != pos.offset || strcmp(back.epoch, pos.epoch) != 0))
            abort();
    } else if (r == 0 && (pl != p || n != size)) {
        abort();
    }
    if (proto_json_validate(p, size) && proto_since_decode(v, &pos, &why) == 0 &&
        pos.epoch_len == 0)
        abort();
    proto_buf_free(&b);
    return 0;
}

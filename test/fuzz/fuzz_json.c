/* fuzz_json.c: the JSON validator, the string encoder (UTF-8 repair) and
 * the object iterator must agree with each other on any input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* How deep a valid text nests: brackets outside strings, counted on their
 * own so that the tokenizer's depth bound is checked from outside. */
static size_t depth_of(const char *p, size_t n)
{
    size_t i, d = 0, max = 0;
    int in_str = 0;

    for (i = 0; i < n; i++) {
        if (in_str) {
            if (p[i] == '\\')
                i++;
            else if (p[i] == '"')
                in_str = 0;
        } else if (p[i] == '"') {
            in_str = 1;
        } else if (p[i] == '[' || p[i] == '{') {
            if (++d > max)
                max = d;
        } else if (p[i] == ']' || p[i] == '}') {
            d--;
        }
    }
    return max;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    struct proto_buf b = {0}, d = {0};
    struct proto_json_obj_iter it;
    struct proto_json_span k, v;
    int valid = proto_json_validate(p, size), r;

    /* Whatever the bytes, their string encoding is valid JSON, and decoding
     * it gives back the input when the input was valid UTF-8. */
    if (proto_json_encode_string(&b, p, size) != 0)
        abort();
    if (!proto_json_validate(b.data, b.len) || !proto_utf8_valid(b.data, b.len))
        abort();
    {
        struct proto_json_span s = {b.data, b.len};
        if (proto_json_string_decode(&d, s) != 0)
            abort();
        if (proto_utf8_valid(p, size) && (d.len != size || memcmp(d.data, p, size) != 0))
            abort();
    }
    /* The iterator walks an object to its end exactly when it is valid. */
    if (proto_json_obj_begin(&it, p, size) == 0) {
        while ((r = proto_json_obj_next(&it, &k, &v)) == 1) {
            proto_buf_reset(&d);
            if (proto_json_string_decode(&d, k) != 0)
                abort();
            (void)proto_json_type_of(v);
        }
        if ((r == 0) != valid)
            abort();
    }
    /* A valid text tokenizes into well-nested tokens that cover it, unless
     * it nests deeper than the tokenizer goes. */
    if (valid) {
        static struct proto_json_tok *toks;
        static size_t cap;
        long n = proto_json_tokenize(p, size, &toks, &cap), i;
        if ((n == -1) != (depth_of(p, size) > PROTO_JSON_TOK_MAX_DEPTH))
            abort();
        if (n != -1 && (n <= 0 || toks[0].end != (uint32_t)n))
            abort();
        for (i = 0; i < n; i++)
            if (toks[i].start + toks[i].len > size || toks[i].end <= (uint32_t)i ||
                toks[i].end > (uint32_t)n)
                abort();
    }
    /* A valid text stays valid one level down, as an array's element (the
     * converse does not hold: "1,2" is not a text, "[1,2]" is). */
    if (valid) {
        proto_buf_reset(&b);
        if (proto_buf_append_byte(&b, '[') != 0 || proto_buf_append(&b, p, size) != 0 ||
            proto_buf_append_byte(&b, ']') != 0)
            abort();
        if (!proto_json_validate(b.data, b.len))
            abort();
    }
    proto_buf_free(&b);
    proto_buf_free(&d);
    return 0;
}

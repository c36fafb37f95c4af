/* fuzz_filter.c: the filter compiler, and the evaluator on payloads. The
 * input is a filter, optionally followed by a NUL byte and a payload. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/filter.h"
#include "protocol/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *nul = memchr(p, '\0', size);
    size_t flen = nul ? (size_t)(nul - p) : size;
    const char *payload = nul ? nul + 1 : "{\"a\":{\"b\":[1,\"x\",null]},\"n\":2.5,\"s\":\"q\"}";
    size_t plen = nul ? size - flen - 1 : strlen(payload);
    const char *why;
    int empty;
    struct filter *f = filter_compile(p, flen, &empty, &why);
    struct filter_msg m;
    size_t klen;

    if (f == NULL) {
        if (!empty && (why == NULL || *why == '\0'))
            abort(); /* a refusal always says why */
        return 0;
    }
    (void)filter_key(f, &klen);
    filter_msg_init(&m, payload, plen, proto_json_validate(payload, plen));
    (void)filter_match(f, &m);
    filter_msg_release(&m);
    filter_free(f);
    return 0;
}

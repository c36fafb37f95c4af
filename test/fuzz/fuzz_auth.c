/* fuzz_auth.c: the JWT verifier and channel globs. The input is a token,
 * optionally followed by a NUL byte, a glob pattern, a NUL and a name. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char secret[] = "fuzzing-secret";
    const char *p = (const char *)data, *nul = memchr(p, '\0', size), *why = NULL;
    size_t tlen = nul ? (size_t)(nul - p) : size;
    struct auth_grant *g = auth_verify(secret, sizeof(secret) - 1, p, tlen, 1700000000, &why);

    if (g == NULL && (why == NULL || *why == '\0'))
        abort();
    if (g != NULL)
        (void)auth_allows(g, "prices.x", 8);
    auth_grant_free(g);
    if (nul != NULL) {
        const char *pat = nul + 1, *end = p + size, *nul2 = memchr(pat, '\0', (size_t)(end - pat));
        if (nul2 != NULL)
            (void)auth_glob(pat, nul2 + 1, (size_t)(end - nul2 - 1));
    }
    return 0;
}

/* auth.c: JWT HS256 verification and channel globs (see auth.h). */
#include "auth.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define SIG_LEN 32 /* SHA-256 */

static int b64url_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decodes unpadded base64url in[0..n) into out (room for n*3/4 bytes).
 * Returns the decoded length, or -1 when the text is not base64url. */
static long b64url_decode(const char *in, size_t n, unsigned char *out)
{
    size_t i, o = 0;
    unsigned acc = 0;
    int bits = 0;

    if (n % 4 == 1)
        return -1;
    for (i = 0; i < n; i++) {
        int v = b64url_val((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* Leftover bits must be zero in a canonical encoding. */
    if (acc != 0)
        return -1;
    return (long)o;
}

static json_t *decode_json_part(const char *p, size_t n)
{
    unsigned char buf[AUTH_MAX_TOKEN];
    long len = b64url_decode(p, n, buf);

    if (len < 0)
        return NULL;
    return json_loadb((const char *)buf, (size_t)len, JSON_REJECT_DUPLICATES, NULL);
}

void auth_grant_free(struct auth_grant *g)
{
    size_t i;

    if (g == NULL)
        return;
    for (i = 0; i < g->npatterns; i++)
        free(g->patterns[i]);
    free(g->patterns);
    free(g);
}

/* A NumericDate claim: absent (0 with *present 0), or a finite number. */
static int numeric_date(json_t *claims, const char *name, int64_t *out, int *present)
{
    json_t *v = json_object_get(claims, name);
    double d;

    *present = v != NULL;
    *out = 0;
    if (v == NULL)
        return 0;
    if (!json_is_number(v))
        return -1;
    d = json_number_value(v);
    if (!isfinite(d) || d < 0 || d > 9.2e18)
        return -1;
    *out = (int64_t)d;
    return 0;
}

static struct auth_grant *grant_from_claims(json_t *claims, int64_t now, const char **why)
{
    struct auth_grant *g;
    json_t *chans, *v;
    int64_t exp, nbf;
    int has_exp, has_nbf;
    size_t i;

    if (!json_is_object(claims)) {
        *why = "claims are not a JSON object";
        return NULL;
    }
    if (numeric_date(claims, "exp", &exp, &has_exp) != 0 ||
        numeric_date(claims, "nbf", &nbf, &has_nbf) != 0) {
        *why = "exp or nbf is not a number";
        return NULL;
    }
    if (has_exp && exp <= now) {
        *why = "token expired";
        return NULL;
    }
    if (has_nbf && nbf > now) {
        *why = "token not valid yet (nbf)";
        return NULL;
    }
    chans = json_object_get(claims, "channels");
    if (chans != NULL && (!json_is_array(chans) || json_array_size(chans) > AUTH_MAX_PATTERNS)) {
        *why = "channels is not a list of at most 64 patterns";
        return NULL;
    }
    if ((g = calloc(1, sizeof(*g))) == NULL) {
        *why = "out of memory";
        return NULL;
    }
    g->exp = has_exp ? (exp > 0 ? exp : 1) : 0;
    if (chans == NULL || json_array_size(chans) == 0)
        return g;
    g->patterns = calloc(json_array_size(chans), sizeof(*g->patterns));
    if (g->patterns == NULL)
        goto nomem;
    json_array_foreach(chans, i, v) {
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
            *why = "channels holds something other than a pattern string";
            auth_grant_free(g);
            return NULL;
        }
        if ((g->patterns[i] = strdup(json_string_value(v))) == NULL)
            goto nomem;
        g->npatterns++;
    }
    return g;
nomem:
    *why = "out of memory";
    auth_grant_free(g);
    return NULL;
}

struct auth_grant *auth_verify(const char *secret, size_t slen, const char *token, size_t len,
                               int64_t now, const char **why)
{
    const char *dot1, *dot2;
    unsigned char sig[AUTH_MAX_TOKEN], mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    long siglen;
    json_t *hdr = NULL, *claims = NULL, *alg;
    struct auth_grant *g = NULL;

    if (len == 0) {
        *why = "no token";
        return NULL;
    }
    if (len > AUTH_MAX_TOKEN) {
        *why = "token too long";
        return NULL;
    }
    dot1 = memchr(token, '.', len);
    dot2 = dot1 ? memchr(dot1 + 1, '.', (size_t)(token + len - dot1 - 1)) : NULL;
    if (dot1 == NULL || dot2 == NULL || memchr(dot2 + 1, '.', (size_t)(token + len - dot2 - 1))) {
        *why = "malformed token (not header.payload.signature)";
        return NULL;
    }
    /* The signature first: nothing of an unsigned token is trusted, and the
     * header's alg is then checked to be the one we verified with. */
    siglen = b64url_decode(dot2 + 1, (size_t)(token + len - dot2 - 1), sig);
    if (siglen < 0) {
        *why = "malformed signature";
        return NULL;
    }
    if (HMAC(EVP_sha256(), secret, (int)slen, (const unsigned char *)token,
             (size_t)(dot2 - token), mac, &maclen) == NULL || maclen != SIG_LEN) {
        *why = "HMAC failed";
        return NULL;
    }
    /* Compare in constant time; a wrong length still compares 32 bytes. */
    if (CRYPTO_memcmp(mac, sig, SIG_LEN) != 0 || siglen != SIG_LEN) {
        *why = "bad signature";
        return NULL;
    }
    hdr = decode_json_part(token, (size_t)(dot1 - token));
    alg = hdr ? json_object_get(hdr, "alg") : NULL;
    if (!json_is_string(alg) || strcmp(json_string_value(alg), "HS256") != 0) {
        *why = "alg is not HS256";
        goto done;
    }
    if ((claims = decode_json_part(dot1 + 1, (size_t)(dot2 - dot1 - 1))) == NULL) {
        *why = "malformed claims";
        goto done;
    }
    g = grant_from_claims(claims, now, why);
done:
    json_decref(hdr);
    json_decref(claims);
    return g;
}

/* Length of the UTF-8 character starting with byte c (1 for stray bytes). */
static size_t char_len(unsigned char c)
{
    if (c >= 0xF0)
        return 4;
    if (c >= 0xE0)
        return 3;
    if (c >= 0xC0)
        return 2;
    return 1;
}

int auth_glob(const char *pat, const char *s, size_t slen)
{
    const char *p = pat, *star = NULL;
    size_t i = 0, mark = 0, k;

    /* Greedy with one backtrack point: linear for patterns without '*'
     * runs, O(n*m) at worst, never recursive. */
    while (i < slen) {
        if (*p == '*') {
            star = p++;
            mark = i;
        } else if (*p == '?') {
            k = char_len((unsigned char)s[i]);
            i += k <= slen - i ? k : slen - i;
            p++;
        } else if (*p != '\0' && *p == s[i]) {
            p++;
            i++;
        } else if (star != NULL) {
            p = star + 1;
            i = ++mark;
        } else {
            return 0;
        }
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

int auth_allows(const struct auth_grant *g, const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < g->npatterns; i++)
        if (auth_glob(g->patterns[i], name, len))
            return 1;
    return 0;
}

/* test_auth.c: HS256 tokens (broker/auth.h): tokens signed here with
 * OpenSSL's HMAC, accepted or refused for the reasons auth.h lists, and the
 * channel globs of the grant. */
#include <stdint.h>
#include <stdlib.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "broker/auth.h"
#include "t.h"

static const char SECRET[] = "0123456789abcdef0123456789abcdef";
static const int64_t NOW = 1800000000;

static size_t b64url(const unsigned char *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t i, o = 0;

    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

/* header.payload.signature, signed with key. */
static char *token(const char *header, const char *payload, const char *key)
{
    static char t[8192];
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t n = b64url((const unsigned char *)header, strlen(header), t);

    t[n++] = '.';
    n += b64url((const unsigned char *)payload, strlen(payload), t + n);
    HMAC(EVP_sha256(), key, (int)strlen(key), (unsigned char *)t, n, mac, &maclen);
    t[n++] = '.';
    b64url(mac, maclen, t + n);
    return t;
}

static const char HS256[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static struct auth_grant *verify(const char *tok, const char **why)
{
    return auth_verify(SECRET, strlen(SECRET), tok, strlen(tok), NOW, why);
}

static int refused_for(const char *tok, const char *reason)
{
    const char *why = NULL;
    struct auth_grant *g = verify(tok, &why);

    if (g != NULL) {
        auth_grant_free(g);
        fprintf(stderr, "accepted, expected refusal: %s\n", reason);
        return 0;
    }
    if (strstr(why, reason) == NULL) {
        fprintf(stderr, "refused for '%s', expected '%s'\n", why, reason);
        return 0;
    }
    return 1;
}

static void test_accepted(void)
{
    const char *why = NULL;
    struct auth_grant *g;
    char payload[256];

    snprintf(payload, sizeof(payload),
             "{\"sub\":\"u1\",\"exp\":%lld,\"nbf\":%lld,\"channels\":[\"prices.*\",\"news\"]}",
             (long long)NOW + 60, (long long)NOW - 60);
    g = verify(token(HS256, payload, SECRET), &why);
    CHECK(g != NULL);
    if (g == NULL)
        return;
    CHECK(g->exp == NOW + 60 && g->npatterns == 2);
    CHECK(auth_allows(g, "prices.ACME", 11));
    CHECK(auth_allows(g, "prices.", 7));
    CHECK(auth_allows(g, "news", 4));
    CHECK(!auth_allows(g, "news2", 5));
    CHECK(!auth_allows(g, "price", 5));
    auth_grant_free(g);

    /* No channels claim: a valid token that grants nothing; no exp: 0. */
    g = verify(token(HS256, "{\"sub\":\"u2\"}", SECRET), &why);
    CHECK(g != NULL && g->exp == 0 && g->npatterns == 0);
    if (g)
        CHECK(!auth_allows(g, "x", 1));
    auth_grant_free(g);
    auth_grant_free(NULL);
}

static void test_refused(void)
{
    char payload[128], *t, big[AUTH_MAX_TOKEN + 16];
    size_t n;
    int i;

    CHECK(refused_for("", "no token"));
    CHECK(refused_for("abc", "malformed"));
    CHECK(refused_for("a.b", "malformed"));
    CHECK(refused_for("a.b.c.d", "malformed"));
    CHECK(refused_for(token(HS256, "{}", "another secret of 32 bytes......"), "bad signature"));
    /* A signature of the wrong length, or not base64url. */
    t = token(HS256, "{}", SECRET);
    n = strlen(t);
    t[n - 2] = '\0';
    CHECK(refused_for(t, "signature"));
    t = token(HS256, "{}", SECRET);
    t[strlen(t) - 1] = '*';
    CHECK(refused_for(t, "signature"));
    /* Right signature, wrong algorithm: never trusted. */
    CHECK(refused_for(token("{\"alg\":\"none\"}", "{}", SECRET), "alg"));
    CHECK(refused_for(token("{\"alg\":\"HS512\"}", "{}", SECRET), "alg"));
    CHECK(refused_for(token("{\"typ\":\"JWT\"}", "{}", SECRET), "alg"));
    snprintf(payload, sizeof(payload), "{\"exp\":%lld}", (long long)NOW);
    CHECK(refused_for(token(HS256, payload, SECRET), "expired"));
    snprintf(payload, sizeof(payload), "{\"nbf\":%lld}", (long long)NOW + 10);
    CHECK(refused_for(token(HS256, payload, SECRET), "nbf"));
    CHECK(refused_for(token(HS256, "{\"exp\":\"soon\"}", SECRET), "exp or nbf"));
    CHECK(refused_for(token(HS256, "[1,2]", SECRET), "not a JSON object"));
    CHECK(refused_for(token(HS256, "{\"channels\":\"all\"}", SECRET), "channels"));
    CHECK(refused_for(token(HS256, "{\"channels\":[1]}", SECRET), "channels"));
    CHECK(refused_for(token(HS256, "{\"channels\":[\"a\\u0000b\"]}", SECRET), "claims"));
    {
        char many[1024];
        size_t o = (size_t)snprintf(many, sizeof(many), "{\"channels\":[");
        for (i = 0; i < AUTH_MAX_PATTERNS + 1; i++)
            o += (size_t)snprintf(many + o, sizeof(many) - o, "%s\"c%d\"", i ? "," : "", i);
        snprintf(many + o, sizeof(many) - o, "]}");
        CHECK(refused_for(token(HS256, many, SECRET), "at most 64"));
    }
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK(refused_for(big, "too long"));
}

static void test_globs(void)
{
    CHECK(auth_glob("*", "", 0));
    CHECK(auth_glob("*", "a.b.c", 5));
    CHECK(auth_glob("a*c", "abbbc", 5));
    CHECK(!auth_glob("a*c", "abbbd", 5));
    CHECK(auth_glob("a?c", "abc", 3));
    CHECK(!auth_glob("a?c", "ac", 2));
    CHECK(auth_glob("a?c", "a\xc3\xa9" "c", 4)); /* '?' is one UTF-8 character */
    CHECK(!auth_glob("a??c", "a\xc3\xa9" "c", 4));
    CHECK(auth_glob("user.*.inbox", "user.42.inbox", 13));
    CHECK(!auth_glob("user.*.inbox", "user.42.outbox", 14));
    CHECK(auth_glob("**", "x", 1));
    CHECK(!auth_glob("abc", "ab", 2));
    CHECK(!auth_glob("ab", "abc", 3));
}

int main(void)
{
    test_accepted();
    test_refused();
    test_globs();
    return t_done("auth");
}

/* auth.h: HS256 JSON Web Tokens for the WebSocket handshake.
 *
 * With `auth_secret` set, every handshake carries a token (the `token`
 * query parameter or `Authorization: Bearer`). auth_verify() accepts only a
 * compact JWS whose header says "alg":"HS256", whose signature is the
 * HMAC-SHA256 of header.payload under the secret (compared in constant
 * time), whose `exp` (if any) is in the future and whose `nbf` (if any) is
 * not. The claim `channels`, a list of glob patterns (`*` any run of
 * characters, dots included; `?` one character), says what the client may
 * subscribe to; without it the client may subscribe to nothing.
 *
 * The reasons auth_verify() gives are for the log; clients only ever see a
 * bare 401. */
#ifndef BROKER_AUTH_H
#define BROKER_AUTH_H

#include <stddef.h>
#include <stdint.h>

/* Longest token accepted, in bytes. */
#define AUTH_MAX_TOKEN 4096
/* At most this many patterns in `channels`. */
#define AUTH_MAX_PATTERNS 64

/* What a verified token grants; owned by the session. */
struct auth_grant {
    int64_t exp;      /* seconds since the epoch; 0 when the token has none */
    size_t npatterns;
    char **patterns;  /* NUL-terminated glob patterns */
};

/* Verifies token[0..len) against secret[0..slen) at time now (seconds since
 * the epoch). Returns the grant (caller frees with auth_grant_free), or NULL
 * with a static reason in *why. */
struct auth_grant *auth_verify(const char *secret, size_t slen, const char *token, size_t len,
                               int64_t now, const char **why);

void auth_grant_free(struct auth_grant *g);

/* 1 when channel name[0..len) matches one of g's patterns. */
int auth_allows(const struct auth_grant *g, const char *name, size_t len);

/* 1 when s[0..slen) matches glob pat (NUL-terminated): '*' matches any run
 * of bytes, '?' one UTF-8 character, anything else itself. */
int auth_glob(const char *pat, const char *s, size_t slen);

#endif

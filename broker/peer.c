/* peer.c: client addresses and sessions per address (see peer.h). */
#include "peer.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "siphash.h"

struct peer {
    struct peer *next;    /* hash chain */
    struct peer_table *t;
    uint64_t hash;
    unsigned holds;
    struct cidr_addr a;
    char text[CIDR_ADDRSTRLEN];
};

struct peer_table {
    struct peer **b;
    size_t nb, n; /* nb a power of two */
    uint8_t key[16];
};

struct peer_table *peer_table_new(void)
{
    struct peer_table *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return NULL;
    t->nb = 256;
    t->b = calloc(t->nb, sizeof(*t->b));
    if (t->b == NULL || getrandom(t->key, sizeof(t->key), 0) != (ssize_t)sizeof(t->key)) {
        free(t->b);
        free(t);
        return NULL;
    }
    return t;
}

void peer_table_free(struct peer_table *t)
{
    if (t == NULL)
        return;
    free(t->b);
    free(t);
}

static int span_is(struct proto_json_span s, const char *name)
{
    size_t n = strlen(name);

    return s.n == n && strncasecmp(s.p, name, n) == 0;
}

static int trusted_addr(const struct cidr *trusted, int n, const struct cidr_addr *a)
{
    return cidr_match(trusted, n, a);
}

/* The rightmost address of an X-Forwarded-For list that is not a trusted
 * proxy. Returns 1 with *out set, 0 when the list names none usable, -1
 * when an entry is not an address (the list cannot be believed). */
static int from_xff(const struct cidr *trusted, int ntrusted, struct proto_json_span v,
                    struct cidr_addr *out)
{
    const char *end = v.p + v.n, *p = end;

    while (p > v.p) {
        const char *q = p;
        size_t n;
        while (q > v.p && q[-1] != ',')
            q--;
        n = (size_t)(p - q);
        p = q > v.p ? q - 1 : q;
        while (n > 0 && (*q == ' ' || *q == '\t'))
            q++, n--;
        while (n > 0 && (q[n - 1] == ' ' || q[n - 1] == '\t'))
            n--;
        if (n == 0)
            continue;
        if (cidr_addr_parse(q, n, out) != 0)
            return -1;
        if (!trusted_addr(trusted, ntrusted, out))
            return 1;
    }
    return 0;
}

int peer_resolve(const struct cidr *trusted, int ntrusted, int peer_is_unix,
                 const struct cidr_addr *peer, const struct proto_http_req *r,
                 struct cidr_addr *out)
{
    size_t i;
    int got = 0, rc;

    if (!peer_is_unix && !trusted_addr(trusted, ntrusted, peer)) {
        *out = *peer;
        return 1;
    }
    /* Several X-Forwarded-For lines read as one list, in order: the last
     * line's entries are the nearest. */
    for (i = r->nheaders; i-- > 0;) {
        if (!span_is(r->headers[i].name, "X-Forwarded-For"))
            continue;
        rc = from_xff(trusted, ntrusted, r->headers[i].value, out);
        if (rc != 0) {
            got = rc;
            break;
        }
    }
    if (got == 1)
        return 1;
    if (got == 0) {
        struct proto_json_span ip = proto_http_header(r, "X-Real-IP");
        if (ip.p != NULL && proto_http_header_count(r, "X-Real-IP") == 1 &&
            cidr_addr_parse(ip.p, ip.n, out) == 0)
            return 1;
    }
    /* Trusted, but it named nobody we can use: the peer itself. */
    if (peer_is_unix)
        return 0;
    *out = *peer;
    return 1;
}

static uint64_t hash_of(const struct peer_table *t, const struct cidr_addr *a)
{
    return siphash24(a, sizeof(*a), t->key);
}

static struct peer *find(const struct peer_table *t, const struct cidr_addr *a, uint64_t h)
{
    struct peer *p;

    for (p = t->b[h & (t->nb - 1)]; p != NULL; p = p->next)
        if (p->hash == h && memcmp(&p->a, a, sizeof(*a)) == 0)
            return p;
    return NULL;
}

unsigned peer_count(const struct peer_table *t, const struct cidr_addr *a)
{
    const struct peer *p = find(t, a, hash_of(t, a));

    return p ? p->holds : 0;
}

static void grow(struct peer_table *t)
{
    size_t nb = t->nb * 2, i;
    struct peer **b = calloc(nb, sizeof(*b)), *p, *next;

    if (b == NULL)
        return; /* longer chains, still correct */
    for (i = 0; i < t->nb; i++)
        for (p = t->b[i]; p != NULL; p = next) {
            next = p->next;
            p->next = b[p->hash & (nb - 1)];
            b[p->hash & (nb - 1)] = p;
        }
    free(t->b);
    t->b = b;
    t->nb = nb;
}

struct peer *peer_hold(struct peer_table *t, const struct cidr_addr *a)
{
    uint64_t h = hash_of(t, a);
    struct peer *p = find(t, a, h);
    size_t i;

    if (p != NULL) {
        p->holds++;
        return p;
    }
    if ((p = calloc(1, sizeof(*p))) == NULL)
        return NULL;
    p->t = t;
    p->hash = h;
    p->holds = 1;
    p->a = *a;
    cidr_addr_format(a, p->text);
    if (t->n >= t->nb)
        grow(t);
    i = h & (t->nb - 1);
    p->next = t->b[i];
    t->b[i] = p;
    t->n++;
    return p;
}

void peer_release(struct peer *p)
{
    struct peer_table *t;
    struct peer **pp;

    if (p == NULL || --p->holds > 0)
        return;
    t = p->t;
    for (pp = &t->b[p->hash & (t->nb - 1)]; *pp != p; pp = &(*pp)->next)
        ;
    *pp = p->next;
    t->n--;
    free(p);
}

const char *peer_text(const struct peer *p)
{
    return p->text;
}

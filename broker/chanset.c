/* chanset.c: channels wanted from Redis (see chanset.h). */
#include "chanset.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "siphash.h"

struct cset {
    struct cset_item **b;
    size_t nb; /* a power of two */
    size_t n;
    uint8_t key[16];
};

struct cset *cset_new(void)
{
    struct cset *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->nb = 64;
    s->b = calloc(s->nb, sizeof(*s->b));
    if (s->b == NULL || getrandom(s->key, sizeof(s->key), 0) != (ssize_t)sizeof(s->key)) {
        cset_free(s);
        return NULL;
    }
    return s;
}

void cset_free(struct cset *s)
{
    struct cset_item *it, *next;
    size_t i;

    if (s == NULL)
        return;
    for (i = 0; s->b != NULL && i < s->nb; i++)
        for (it = s->b[i]; it != NULL; it = next) {
            next = it->next;
            free(it);
        }
    free(s->b);
    free(s);
}

struct cset_item *cset_find(const struct cset *s, const char *name, size_t len)
{
    uint64_t h = siphash24(name, len, s->key);
    struct cset_item *it;

    for (it = s->b[h & (s->nb - 1)]; it != NULL; it = it->next)
        if (it->hash == h && it->len == len && memcmp(it->name, name, len) == 0)
            return it;
    return NULL;
}

static void grow(struct cset *s)
{
    size_t nb = s->nb * 2, i;
    struct cset_item **b = calloc(nb, sizeof(*b)), *it, *next;

    if (b == NULL)
        return; /* longer chains, still correct */
    for (i = 0; i < s->nb; i++)
        for (it = s->b[i]; it != NULL; it = next) {
            next = it->next;
            it->next = b[it->hash & (nb - 1)];
            b[it->hash & (nb - 1)] = it;
        }
    free(s->b);
    s->b = b;
    s->nb = nb;
}

struct cset_item *cset_add(struct cset *s, const char *name, size_t len)
{
    struct cset_item *it = calloc(1, sizeof(*it) + len);
    size_t i;

    if (it == NULL)
        return NULL;
    it->hash = siphash24(name, len, s->key);
    it->len = (uint32_t)len;
    memcpy(it->name, name, len);
    if (s->n >= s->nb)
        grow(s);
    i = it->hash & (s->nb - 1);
    it->next = s->b[i];
    s->b[i] = it;
    s->n++;
    return it;
}

void cset_remove(struct cset *s, struct cset_item *it)
{
    struct cset_item **pp = &s->b[it->hash & (s->nb - 1)];

    while (*pp != it)
        pp = &(*pp)->next;
    *pp = it->next;
    s->n--;
    free(it);
}

void cset_foreach(struct cset *s, void (*fn)(void *arg, struct cset_item *it), void *arg)
{
    struct cset_item *it, *next;
    size_t i;

    for (i = 0; i < s->nb; i++)
        for (it = s->b[i]; it != NULL; it = next) {
            next = it->next;
            fn(arg, it);
        }
}

size_t cset_count(const struct cset *s)
{
    return s->n;
}

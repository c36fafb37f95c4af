/* redisaddr.c: fixed and list address providers (see redisaddr.h). */
#include "redisaddr.h"

#include <stdlib.h>
#include <string.h>

#include "config.h"

struct entry {
    char *host;
    int port;
};

struct addr_list {
    struct raddr base; /* first: providers are reached through it */
    struct entry e[RADDR_LIST_MAX];
    int n;
    int turn;
};

static void list_emit(struct addr_list *l)
{
    const struct entry *e = &l->e[l->turn % l->n];

    l->base.fn(l->base.arg, e->host, e->port);
}

static void list_start(struct raddr *p)
{
    list_emit((struct addr_list *)p);
}

static void list_failed(struct raddr *p)
{
    struct addr_list *l = (struct addr_list *)p;

    l->turn = (l->turn + 1) % l->n;
    list_emit(l);
}

static void list_free(struct raddr *p)
{
    struct addr_list *l = (struct addr_list *)p;
    int i;

    for (i = 0; i < l->n; i++)
        free(l->e[i].host);
    free(l);
}

static const struct raddr_ops list_ops = {list_start, list_failed, list_free};

/* A fixed address is a list of one whose failure changes nothing. */
static void fixed_failed(struct raddr *p)
{
    (void)p;
}

static const struct raddr_ops fixed_ops = {list_start, fixed_failed, list_free};

static int add(struct addr_list *l, const char *host, int port)
{
    int i;

    for (i = 0; i < l->n; i++)
        if (l->e[i].port == port && strcmp(l->e[i].host, host) == 0)
            return 0;
    if (l->n == RADDR_LIST_MAX)
        return 0;
    if ((l->e[l->n].host = strdup(host)) == NULL)
        return -1;
    l->e[l->n].port = port;
    l->n++;
    return 0;
}

static struct addr_list *list_alloc(const struct raddr_ops *ops, raddr_fn fn, void *arg)
{
    struct addr_list *l = calloc(1, sizeof(*l));

    if (l == NULL)
        return NULL;
    l->base.ops = ops;
    l->base.fn = fn;
    l->base.arg = arg;
    return l;
}

struct raddr *raddr_fixed_new(const char *host, int port, raddr_fn fn, void *arg)
{
    struct addr_list *l = list_alloc(&fixed_ops, fn, arg);

    if (l == NULL)
        return NULL;
    if (add(l, host, port) != 0) {
        list_free(&l->base);
        return NULL;
    }
    return &l->base;
}

struct raddr *raddr_list_new(const char *list, raddr_fn fn, void *arg)
{
    struct addr_list *l = list_alloc(&list_ops, fn, arg);
    const char *p = list;
    char host[256];
    int port, r;

    if (l == NULL)
        return NULL;
    while ((r = cfg_addr_next(&p, host, sizeof(host), &port)) == 1)
        if (add(l, host, port) != 0)
            break;
    if (r != 0 || l->n == 0) {
        list_free(&l->base);
        return NULL;
    }
    return &l->base;
}

int raddr_list_learn(struct raddr *p, const char *host, int port)
{
    if (p->ops != &list_ops)
        return 0;
    return add((struct addr_list *)p, host, port);
}

int raddr_list_count(const struct raddr *p)
{
    return ((const struct addr_list *)p)->n;
}

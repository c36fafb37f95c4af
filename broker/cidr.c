/* cidr.c: addresses and networks (see cidr.h). */
#include "cidr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int cidr_addr_parse(const char *s, size_t n, struct cidr_addr *out)
{
    char buf[CIDR_ADDRSTRLEN];

    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, buf, out->b) == 1) {
        out->family = 4;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, out->b) != 1)
        return -1;
    out->family = 6;
    if (memcmp(out->b, v4mapped, sizeof(v4mapped)) == 0) {
        memmove(out->b, out->b + 12, 4);
        memset(out->b + 4, 0, 12);
        out->family = 4;
    }
    return 0;
}

void cidr_addr_format(const struct cidr_addr *a, char *buf)
{
    if (inet_ntop(a->family == 4 ? AF_INET : AF_INET6, a->b, buf, CIDR_ADDRSTRLEN) == NULL)
        snprintf(buf, CIDR_ADDRSTRLEN, "?");
}

static int net_parse(const char *s, size_t n, struct cidr *out)
{
    const char *slash = memchr(s, '/', n);
    size_t alen = slash ? (size_t)(slash - s) : n;
    long bits;
    char num[4], *end;

    if (cidr_addr_parse(s, alen, &out->a) != 0)
        return -1;
    out->bits = out->a.family == 4 ? 32 : 128;
    if (slash == NULL)
        return 0;
    if (n - alen - 1 == 0 || n - alen - 1 >= sizeof(num))
        return -1;
    memcpy(num, slash + 1, n - alen - 1);
    num[n - alen - 1] = '\0';
    if (num[0] < '0' || num[0] > '9')
        return -1;
    bits = strtol(num, &end, 10);
    if (*end != '\0' || bits < 0 || bits > out->bits)
        return -1;
    out->bits = (uint8_t)bits;
    return 0;
}

int cidr_list_parse(const char *list, struct cidr *out, int max, const char **bad,
                    size_t *badlen)
{
    const char *p = list;
    int k = 0;

    for (;;) {
        size_t n;
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        if (*p == '\0')
            return k;
        n = strcspn(p, ", \t");
        if (k == max || net_parse(p, n, &out[k]) != 0) {
            *bad = p;
            *badlen = n;
            return -1;
        }
        k++;
        p += n;
    }
}

static int in_net(const struct cidr *net, const struct cidr_addr *a)
{
    unsigned full = net->bits / 8, rest = net->bits % 8;

    if (net->a.family != a->family || memcmp(net->a.b, a->b, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    return ((net->a.b[full] ^ a->b[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

int cidr_match(const struct cidr *nets, int n, const struct cidr_addr *a)
{
    int i;

    for (i = 0; i < n; i++)
        if (in_net(&nets[i], a))
            return 1;
    return 0;
}

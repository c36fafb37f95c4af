/* buf.c: growable byte buffer (see buf.h). */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int proto_buf_reserve(struct proto_buf *b, size_t n)
{
    size_t need, cap;
    char *p;

    if (n <= b->cap - b->len)
        return 0;
    if (n > (size_t)-1 / 2 - b->len)
        return -1;
    need = b->len + n;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    p = realloc(b->data, cap);
    if (p == NULL)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int proto_buf_append(struct proto_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (proto_buf_reserve(b, n) != 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int proto_buf_append_str(struct proto_buf *b, const char *s)
{
    return proto_buf_append(b, s, strlen(s));
}

int proto_buf_append_byte(struct proto_buf *b, char c)
{
    if (proto_buf_reserve(b, 1) != 0)
        return -1;
    b->data[b->len++] = c;
    return 0;
}

int proto_buf_printf(struct proto_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || proto_buf_reserve(b, (size_t)n + 1) != 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void proto_buf_reset(struct proto_buf *b)
{
    b->len = 0;
}

void proto_buf_free(struct proto_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

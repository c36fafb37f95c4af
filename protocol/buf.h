/* buf.h: a growable byte buffer, the one output type of the protocol codec.
 *
 * A proto_buf owns its bytes. It starts empty ({0} is a valid empty buffer)
 * and keeps its capacity across proto_buf_reset(), so a caller that reuses one
 * buffer for every message allocates only while it grows. Every append
 * returns 0, or -1 when memory runs out; after -1 the buffer holds what it
 * held before the call. */
#ifndef PROTO_BUF_H
#define PROTO_BUF_H

#include <stddef.h>

struct proto_buf {
    char *data;
    size_t len;
    size_t cap;
};

/* Makes room for n more bytes; data stays valid until the next append. */
int proto_buf_reserve(struct proto_buf *b, size_t n);
int proto_buf_append(struct proto_buf *b, const void *p, size_t n);
int proto_buf_append_str(struct proto_buf *b, const char *s);
int proto_buf_append_byte(struct proto_buf *b, char c);
/* Appends printf-style formatted text (no terminating NUL is kept in len). */
int proto_buf_printf(struct proto_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Empties the buffer, keeping its memory. */
void proto_buf_reset(struct proto_buf *b);
/* Frees the memory; the buffer is empty and reusable afterwards. */
void proto_buf_free(struct proto_buf *b);

#endif

/* json.c: JSON validation, string encoding and object iteration without a tree
 * (see json.h). */
#include "json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef const unsigned char *cursor;

/* Length of the valid UTF-8 sequence at p (1 to 4), or 0 when it is invalid;
 * *sub then gets the length of the maximal subpart to replace (at least 1). */
static size_t utf8_seq(cursor p, cursor end, size_t *sub)
{
    unsigned c = p[0];
    size_t need, i;
    unsigned lo = 0x80, hi = 0xBF;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        *sub = 1;
        return 0;
    }
    for (i = 1; i <= need; i++) {
        if (p + i >= end || p[i] < lo || p[i] > hi) {
            *sub = i;
            return 0;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    return need + 1;
}

int proto_utf8_valid(const char *s, size_t n)
{
    cursor p, end;
    size_t sub, k;

    if (n == 0)
        return 1; /* s may be NULL then */
    p = (cursor)s;
    end = p + n;
    while (p < end) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        k = utf8_seq(p, end, &sub);
        if (k == 0)
            return 0;
        p += k;
    }
    return 1;
}

/* The validator: each function takes the cursor at the start of its element
 * and returns the cursor just past it, or NULL when the text is invalid. */

static cursor skip_ws(cursor p, cursor end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static int is_hex(unsigned c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* 1 when the 8 bytes at p are all printable ASCII other than '"' and '\\':
 * the common case inside strings, tested a word at a time (the classic
 * "has a zero byte" trick on x, x^'"' and x^'\\', plus the high bits). */
static int plain8(cursor p)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t x, q, b;

    memcpy(&x, p, 8);
    q = x ^ (ones * '"');
    b = x ^ (ones * '\\');
    return (((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b) | x) & highs ? 0 : 1;
}

static cursor v_string(cursor p, cursor end)
{
    size_t sub, k;

    p++; /* opening quote */
    while (p < end) {
        unsigned c;
        while (end - p >= 8 && plain8(p))
            p += 8;
        if (p >= end)
            break;
        c = *p;
        if (c == '"')
            return p + 1;
        if (c == '\\') {
            if (p + 1 >= end)
                return NULL;
            c = p[1];
            if (c == 'u') {
                if (end - p < 6 || !is_hex(p[2]) || !is_hex(p[3]) ||
                    !is_hex(p[4]) || !is_hex(p[5]))
                    return NULL;
                p += 6;
            } else if (c == '"' || c == '\\' || c == '/' || c == 'b' ||
                       c == 'f' || c == 'n' || c == 'r' || c == 't') {
                p += 2;
            } else {
                return NULL;
            }
        } else if (c < 0x20) {
            return NULL;
        } else if (c < 0x80) {
            p++;
        } else {
            k = utf8_seq(p, end, &sub);
            if (k == 0)
                return NULL;
            p += k;
        }
    }
    return NULL;
}

static cursor v_digits(cursor p, cursor end)
{
    cursor s = p;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p == s ? NULL : p;
}

static cursor v_number(cursor p, cursor end)
{
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return NULL;
    if (*p == '0')
        p++;
    else if ((p = v_digits(p, end)) == NULL)
        return NULL;
    if (p < end && *p == '.' && (p = v_digits(p + 1, end)) == NULL)
        return NULL;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if ((p = v_digits(p, end)) == NULL)
            return NULL;
    }
    return p;
}

static cursor v_literal(cursor p, cursor end, const char *lit, size_t n)
{
    if ((size_t)(end - p) < n || memcmp(p, lit, n) != 0)
        return NULL;
    return p + n;
}

/* The validator's bit stack (a bit per open container, 1 for an object)
 * keeps its innermost 64 levels in a register; deeper levels are pushed
 * here a word of 64 at a time. The first NEST_INLINE_WORDS words live on
 * the C stack, then the heap, doubling. Every level opens with a byte of
 * input, so the heap part is at most a quarter of the input's length. */
#define NEST_INLINE_WORDS 4

struct nest_words {
    uint64_t *w; /* inl, or the heap once grown */
    size_t n, cap;
    uint64_t inl[NEST_INLINE_WORDS];
};

static int nest_words_push(struct nest_words *s, uint64_t w)
{
    uint64_t *nw;

    if (s->n == s->cap) {
        size_t ncap = s->cap * 2;
        if (ncap > SIZE_MAX / sizeof(*nw))
            return -1;
        if (s->w == s->inl) {
            if ((nw = malloc(ncap * sizeof(*nw))) == NULL)
                return -1;
            memcpy(nw, s->inl, sizeof(s->inl));
        } else if ((nw = realloc(s->w, ncap * sizeof(*nw))) == NULL) {
            return -1;
        }
        s->w = nw;
        s->cap = ncap;
    }
    s->w[s->n++] = w;
    return 0;
}

/* Opens a container (obj: an object) on the bit stack top/nt/outer of
 * v_value(). Returns 0, or -1 on ENOMEM. */
static inline int nest_open(uint64_t *top, unsigned *nt, struct nest_words *outer, unsigned obj)
{
    if (*nt == 64) {
        if (nest_words_push(outer, *top) != 0)
            return -1;
        *nt = 0;
    }
    *top = *top << 1 | obj;
    (*nt)++;
    return 0;
}

static inline void nest_close(uint64_t *top, unsigned *nt, struct nest_words *outer)
{
    *top >>= 1;
    if (--*nt == 0 && outer->n > 0) {
        *top = outer->w[--outer->n];
        *nt = 64;
    }
}

/* An object member's key and colon; returns the cursor at its value. */
static inline cursor v_key(cursor p, cursor end)
{
    if (p >= end || *p != '"' || (p = v_string(p, end)) == NULL)
        return NULL;
    p = skip_ws(p, end);
    if (p >= end || *p != ':')
        return NULL;
    return skip_ws(p + 1, end);
}

/* One value, however deeply nested, without recursion: a loop over the
 * values in document order, with the kinds of the open containers in a bit
 * stack. Returns NULL as well when the stack cannot grow (ENOMEM). */
static cursor v_value(cursor p, cursor end)
{
    struct nest_words outer;
    uint64_t top = 0; /* the innermost open containers, the innermost in bit 0 */
    unsigned nt = 0;  /* how many of them: 0 only when none is open */

    outer.w = outer.inl;
    outer.n = 0;
    outer.cap = NEST_INLINE_WORDS;
    for (;;) {
        /* p is where a value starts. */
        if (p >= end)
            goto fail;
        switch (*p) {
        case '{':
        case '[':
            if (nest_open(&top, &nt, &outer, *p == '{') != 0)
                goto fail;
            p = skip_ws(p + 1, end);
            if (p >= end)
                goto fail;
            if (*p != ((top & 1) ? '}' : ']')) {
                if ((top & 1) && (p = v_key(p, end)) == NULL)
                    goto fail;
                continue; /* to the first member's value */
            }
            p++;
            nest_close(&top, &nt, &outer);
            break;
        case '"':
            p = v_string(p, end);
            break;
        case 't':
            p = v_literal(p, end, "true", 4);
            break;
        case 'f':
            p = v_literal(p, end, "false", 5);
            break;
        case 'n':
            p = v_literal(p, end, "null", 4);
            break;
        default:
            p = (*p == '-' || (*p >= '0' && *p <= '9')) ? v_number(p, end) : NULL;
            break;
        }
        if (p == NULL)
            goto fail;
        /* A value ended: close the containers that end with it, up to the
         * comma before the next value. */
        for (;;) {
            if (nt == 0)
                goto done;
            p = skip_ws(p, end);
            if (p >= end)
                goto fail;
            if (*p == ',')
                break;
            if (*p != ((top & 1) ? '}' : ']'))
                goto fail;
            p++;
            nest_close(&top, &nt, &outer);
        }
        p = skip_ws(p + 1, end);
        if ((top & 1) && (p = v_key(p, end)) == NULL)
            goto fail;
    }
fail:
    p = NULL;
done:
    if (outer.w != outer.inl)
        free(outer.w);
    return p;
}

int proto_json_validate(const char *s, size_t n)
{
    cursor p, end;

    if (n == 0)
        return 0; /* s may be NULL then */
    p = (cursor)s;
    end = p + n;
    p = v_value(skip_ws(p, end), end);
    return p != NULL && skip_ws(p, end) == end;
}

static const char hexdig[] = "0123456789abcdef";

int proto_json_encode_string(struct proto_buf *out, const char *s, size_t n)
{
    cursor p, end, run;
    size_t sub, k;

    if (n == 0)
        return proto_buf_append(out, "\"\"", 2); /* s may be NULL then */
    p = (cursor)s;
    end = p + n;
    /* Worst case is 6 output bytes per input byte (\u00XX); reserving it up
     * front keeps the loop free of checks. */
    if (n > ((size_t)-1 - 2) / 6 || proto_buf_reserve(out, n * 6 + 2) != 0)
        return -1;
    char *o = out->data + out->len;
    *o++ = '"';
    while (p < end) {
        run = p;
        while (end - p >= 8 && plain8(p))
            p += 8;
        while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
            p++;
        memcpy(o, run, (size_t)(p - run));
        o += p - run;
        if (p >= end)
            break;
        unsigned c = *p;
        if (c >= 0x80) {
            k = utf8_seq(p, end, &sub);
            if (k > 0) {
                memcpy(o, p, k);
                o += k;
                p += k;
            } else {
                memcpy(o, "\xEF\xBF\xBD", 3); /* U+FFFD */
                o += 3;
                p += sub;
            }
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hexdig[c >> 4];
            *o++ = hexdig[c & 15];
        }
        p++;
    }
    *o++ = '"';
    out->len = (size_t)(o - out->data);
    return 0;
}

enum proto_json_type proto_json_type_of(struct proto_json_span v)
{
    if (v.n == 0)
        return PROTO_JSON_NONE;
    switch (v.p[0]) {
    case '{': return PROTO_JSON_OBJECT;
    case '[': return PROTO_JSON_ARRAY;
    case '"': return PROTO_JSON_STRING;
    case 't': return PROTO_JSON_TRUE;
    case 'f': return PROTO_JSON_FALSE;
    case 'n': return PROTO_JSON_NULL;
    default: return PROTO_JSON_NUMBER;
    }
}

/* Iterator states. */
enum { IT_FIRST, IT_NEXT, IT_DONE };

int proto_json_obj_begin(struct proto_json_obj_iter *it, const char *s, size_t n)
{
    cursor p, end;

    if (n == 0)
        return -1;
    p = (cursor)s;
    end = p + n;
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return -1;
    it->p = (const char *)(p + 1);
    it->end = (const char *)end;
    it->state = IT_FIRST;
    return 0;
}

int proto_json_obj_next(struct proto_json_obj_iter *it,
                        struct proto_json_span *key, struct proto_json_span *val)
{
    cursor p = (cursor)it->p, end = (cursor)it->end, k;

    if (it->state == IT_DONE)
        return 0;
    p = skip_ws(p, end);
    if (p >= end)
        return -1;
    if (*p == '}') {
        if (skip_ws(p + 1, end) != end)
            return -1;
        it->state = IT_DONE;
        return 0;
    }
    if (it->state == IT_NEXT) {
        if (*p != ',')
            return -1;
        p = skip_ws(p + 1, end);
    }
    if (p >= end || *p != '"' || (k = v_string(p, end)) == NULL)
        return -1;
    key->p = (const char *)p;
    key->n = (size_t)(k - p);
    p = skip_ws(k, end);
    if (p >= end || *p != ':')
        return -1;
    p = skip_ws(p + 1, end);
    if ((k = v_value(p, end)) == NULL)
        return -1;
    val->p = (const char *)p;
    val->n = (size_t)(k - p);
    it->p = (const char *)k;
    it->state = IT_NEXT;
    return 1;
}

/* Tokenizer. */

static int tok_push(struct proto_json_tok **toks, size_t *cap, size_t n, uint8_t type,
                    size_t start)
{
    if (n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        struct proto_json_tok *t = realloc(*toks, ncap * sizeof(*t));
        if (t == NULL)
            return -1;
        *toks = t;
        *cap = ncap;
    }
    (*toks)[n].type = type;
    (*toks)[n].start = (uint32_t)start;
    (*toks)[n].len = 0;
    (*toks)[n].end = (uint32_t)n + 1;
    return 0;
}

/* Past the closing quote of the (valid) string starting at p. */
static cursor skip_string(cursor p, cursor end)
{
    p++;
    for (;;) {
        while (end - p >= 8 && plain8(p))
            p += 8;
        if (p >= end)
            return end;
        if (*p == '"')
            return p + 1;
        p += *p == '\\' ? 2 : 1;
    }
}

long proto_json_tokenize(const char *text, size_t n, struct proto_json_tok **toks, size_t *cap)
{
    uint32_t stack[PROTO_JSON_TOK_MAX_DEPTH];
    cursor base = (cursor)text, p = base, end = base + n;
    size_t count = 0;
    int depth = 0;

    if (n == 0 || n > UINT32_MAX)
        return -1;
    while (p < end) {
        unsigned c = *p;
        size_t at = (size_t)(p - base);
        struct proto_json_tok *t;

        switch (c) {
        case ' ': case '\t': case '\n': case '\r': case ',': case ':':
            p++;
            continue;
        case '{':
        case '[':
            if (depth == PROTO_JSON_TOK_MAX_DEPTH ||
                tok_push(toks, cap, count, c == '{' ? PROTO_JSON_OBJECT : PROTO_JSON_ARRAY,
                         at) != 0)
                return -1;
            stack[depth++] = (uint32_t)count++;
            p++;
            continue;
        case '}':
        case ']':
            if (depth == 0)
                return -1;
            t = &(*toks)[stack[--depth]];
            t->len = (uint32_t)(at + 1 - t->start);
            t->end = (uint32_t)count;
            p++;
            continue;
        case '"':
            if (tok_push(toks, cap, count, PROTO_JSON_STRING, at) != 0)
                return -1;
            p = skip_string(p, end);
            break;
        case 't':
        case 'f':
        case 'n':
            if (tok_push(toks, cap, count,
                         c == 't' ? PROTO_JSON_TRUE : c == 'f' ? PROTO_JSON_FALSE : PROTO_JSON_NULL,
                         at) != 0)
                return -1;
            p += c == 'f' ? 5 : 4;
            if (p > end)
                return -1;
            break;
        default:
            if (tok_push(toks, cap, count, PROTO_JSON_NUMBER, at) != 0)
                return -1;
            while (p < end && ((*p >= '0' && *p <= '9') || *p == '-' || *p == '+' ||
                               *p == '.' || *p == 'e' || *p == 'E'))
                p++;
            if ((size_t)(p - base) == at)
                return -1;
            break;
        }
        (*toks)[count].len = (uint32_t)((size_t)(p - base) - at);
        count++;
    }
    return depth == 0 ? (long)count : -1;
}

static unsigned hexval(unsigned c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

static unsigned hex4(cursor p)
{
    return hexval(p[0]) << 12 | hexval(p[1]) << 8 | hexval(p[2]) << 4 | hexval(p[3]);
}

static char *put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | cp >> 6);
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | cp >> 12);
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | cp >> 18);
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

int proto_json_string_decode(struct proto_buf *out, struct proto_json_span s)
{
    cursor p = (cursor)s.p, end = p + s.n;

    if (s.n < 2 || *p != '"' || v_string(p, end) != end)
        return -1;
    /* Decoding never grows the text. */
    if (proto_buf_reserve(out, s.n) != 0)
        return -1;
    char *o = out->data + out->len;
    p++;
    end--;
    while (p < end) {
        if (*p != '\\') {
            *o++ = (char)*p++;
            continue;
        }
        unsigned c = p[1];
        p += 2;
        switch (c) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp = hex4(p);
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' &&
                p[1] == 'u') {
                unsigned lo = hex4(p + 2);
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                }
            }
            if (cp >= 0xD800 && cp <= 0xDFFF)
                cp = 0xFFFD;
            o = put_utf8(o, cp);
            break;
        }
        default: *o++ = (char)c; break; /* " \ / */
        }
    }
    out->len = (size_t)(o - out->data);
    return 0;
}

int proto_json_string_eq(struct proto_json_span s, const char *lit)
{
    size_t n = strlen(lit);
    struct proto_buf b = {0};
    int eq;

    /* Without escapes the bytes between the quotes are the string. */
    if (memchr(s.p, '\\', s.n) == NULL)
        return s.n == n + 2 && memcmp(s.p + 1, lit, n) == 0;
    /* A decoded byte takes at most 6 bytes of escape (\u00XX), and escapes
     * never decode to more bytes than they take. */
    if (s.n < n + 2 || s.n > 6 * n + 2)
        return 0;
    if (proto_json_string_decode(&b, s) != 0)
        return 0;
    eq = b.len == n && memcmp(b.data, lit, n) == 0;
    proto_buf_free(&b);
    return eq;
}

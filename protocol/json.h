/* json.h: the JSON the broker needs without building a tree.
 *
 * Payloads from Redis are checked once with proto_json_validate() and, when
 * they are JSON, spliced into batches byte for byte; when they are not, they
 * are sent as a JSON string built by proto_json_encode_string(), with invalid
 * UTF-8 replaced by U+FFFD. Control messages from clients are small objects
 * read member by member with proto_json_obj_next().
 *
 * Nothing here recurses, so hostile input costs time linear in its length
 * and bounded stack. Nothing allocates except through a proto_buf or token
 * buffer the caller owns, and, for nesting deeper than a few hundred levels,
 * the validator's stack of open containers (a bit each, at most n / 4 bytes
 * for n bytes of input), freed before it returns. */
#ifndef PROTO_JSON_H
#define PROTO_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* The tokenizer's nesting bound (its stack of open containers is on the C
 * stack). The validator has none: nesting is bounded only by the input's
 * length, itself bounded by max_message_bytes. */
#define PROTO_JSON_TOK_MAX_DEPTH 256

/* 1 when p[0..n) is valid UTF-8 (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF), else 0. */
int proto_utf8_valid(const char *p, size_t n);

/* 1 when p[0..n) is exactly one JSON text (RFC 8259: any value, nested to
 * any depth, optional surrounding whitespace, strings in valid UTF-8), else
 * 0. Also 0 when very deep nesting needs memory for the validator's stack
 * that cannot be had (ENOMEM). */
int proto_json_validate(const char *p, size_t n);

/* Appends p[0..n) to out as a JSON string literal, quotes included. Bytes
 * that are not valid UTF-8 become U+FFFD, one per maximal invalid subpart
 * (the rule browsers' TextDecoder follows). Returns 0, or -1 on ENOMEM. */
int proto_json_encode_string(struct proto_buf *out, const char *p, size_t n);

/* A borrowed slice of the caller's text. */
struct proto_json_span {
    const char *p;
    size_t n;
};

enum proto_json_type {
    PROTO_JSON_NONE = 0,
    PROTO_JSON_OBJECT,
    PROTO_JSON_ARRAY,
    PROTO_JSON_STRING,
    PROTO_JSON_NUMBER,
    PROTO_JSON_TRUE,
    PROTO_JSON_FALSE,
    PROTO_JSON_NULL
};

/* Type of the JSON value that starts at span.p (span from the iterator). */
enum proto_json_type proto_json_type_of(struct proto_json_span v);

/* Iterates the members of a top-level JSON object, validating as it goes.
 * The iterator borrows the text; spans point into it. */
struct proto_json_obj_iter {
    const char *p;
    const char *end;
    int state;
};

/* Starts on text p[0..n). Returns 0 when the text (after whitespace) opens an
 * object, -1 otherwise. */
int proto_json_obj_begin(struct proto_json_obj_iter *it, const char *p, size_t n);

/* Returns 1 with the next member's key (the string literal, quotes included)
 * and value (the whole value's text); 0 after the last member when the object
 * and the text end cleanly; -1 when the text is not valid JSON. */
int proto_json_obj_next(struct proto_json_obj_iter *it,
                        struct proto_json_span *key, struct proto_json_span *val);

/* One value of a tokenized JSON text, in document order (as jsmn does): a
 * container's token is followed by its contents (an object's by each key's
 * string token and then that key's value), and `end` is the index of the
 * first token after the container, so a whole subtree is skipped in one
 * step. Offsets are into the tokenized text. */
struct proto_json_tok {
    uint32_t start; /* first byte (a string's opening quote) */
    uint32_t len;   /* bytes of the value, quotes and brackets included */
    uint32_t end;   /* index of the token after this value's subtree */
    uint8_t type;   /* enum proto_json_type */
};

/* Tokenizes p[0..n), which must be valid JSON (proto_json_validate) and at
 * most 4 GiB, into *toks, growing it (realloc; *cap is its capacity in
 * tokens) as needed: a buffer reused across calls stops allocating once it
 * is large enough. Returns the number of tokens, or -1 on ENOMEM, when the
 * text nests deeper than PROTO_JSON_TOK_MAX_DEPTH, or when it turns out not
 * to be JSON. One pass, no allocation per value. */
long proto_json_tokenize(const char *p, size_t n, struct proto_json_tok **toks, size_t *cap);

/* Decodes a JSON string literal (quotes included, as given by the iterator)
 * into out, replacing lone surrogate escapes by U+FFFD. Returns 0, or -1 when
 * the span is not a valid string literal or memory runs out. */
int proto_json_string_decode(struct proto_buf *out, struct proto_json_span s);

/* 1 when the string literal s decodes to exactly the NUL-free C string lit. */
int proto_json_string_eq(struct proto_json_span s, const char *lit);

#endif

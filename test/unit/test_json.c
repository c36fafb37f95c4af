/* test_json.c: UTF-8 checks, the JSON validator, string encoding with U+FFFD
 * repair, the object iterator and string literal decoding (protocol/json.h). */
#include <stdint.h>
#include <stdlib.h>

#include "protocol/json.h"
#include "t.h"

/* Literals may hold NUL bytes, so lengths come from sizeof. */
#define UV(lit) proto_utf8_valid(lit, sizeof(lit) - 1)
#define JV(lit) jv_exact(lit, sizeof(lit) - 1)

/* Validates a heap copy of exactly n bytes, so that ASan catches any read
 * past the end of the text. */
static int jv_exact(const char *s, size_t n)
{
    char *copy = malloc(n ? n : 1);
    int r;

    if (copy == NULL)
        abort();
    memcpy(copy, s, n);
    r = proto_json_validate(copy, n);
    free(copy);
    return r;
}

static struct proto_json_span span_of(const char *s)
{
    struct proto_json_span sp = {s, strlen(s)};
    return sp;
}

/* ---- proto_utf8_valid ---- */

static void test_utf8_valid(void)
{
    CHECK(UV("") == 1);
    CHECK(UV("hello, world") == 1);
    CHECK(UV("a\0b") == 1); /* NUL is a valid code point */
    CHECK(UV("\x7F") == 1);
    /* 2, 3 and 4 byte sequences at their range ends */
    CHECK(UV("\xC2\x80") == 1);
    CHECK(UV("\xDF\xBF") == 1);
    CHECK(UV("\xC3\xA9t\xC3\xA9") == 1);
    CHECK(UV("\xE0\xA0\x80") == 1);
    CHECK(UV("\xE2\x82\xAC") == 1);
    CHECK(UV("\xED\x9F\xBF") == 1); /* U+D7FF, just below the surrogates */
    CHECK(UV("\xEE\x80\x80") == 1); /* U+E000, just above them */
    CHECK(UV("\xEF\xBF\xBF") == 1);
    CHECK(UV("\xF0\x90\x80\x80") == 1);
    CHECK(UV("\xF0\x9F\x98\x80") == 1);
    CHECK(UV("\xF4\x8F\xBF\xBF") == 1); /* U+10FFFF */
    /* overlongs */
    CHECK(UV("\xC0\x80") == 0);
    CHECK(UV("\xC0\xAF") == 0);
    CHECK(UV("\xC1\xBF") == 0);
    CHECK(UV("\xE0\x80\x80") == 0);
    CHECK(UV("\xE0\x9F\xBF") == 0);
    CHECK(UV("\xF0\x80\x80\x80") == 0);
    CHECK(UV("\xF0\x8F\xBF\xBF") == 0);
    /* surrogates */
    CHECK(UV("\xED\xA0\x80") == 0);
    CHECK(UV("\xED\xAF\xBF") == 0);
    CHECK(UV("\xED\xB0\x80") == 0);
    CHECK(UV("\xED\xBF\xBF") == 0);
    CHECK(UV("\xED\xA0\xBD\xED\xB8\x80") == 0); /* CESU-8 pair */
    /* above U+10FFFF and bytes that never appear */
    CHECK(UV("\xF4\x90\x80\x80") == 0);
    CHECK(UV("\xF5\x80\x80\x80") == 0);
    CHECK(UV("\xF7\xBF\xBF\xBF") == 0);
    CHECK(UV("\xF8\x88\x80\x80\x80") == 0);
    CHECK(UV("\xFC\x84\x80\x80\x80\x80") == 0);
    CHECK(UV("\xFE") == 0);
    CHECK(UV("\xFF") == 0);
    /* truncated sequences */
    CHECK(UV("\xC2") == 0);
    CHECK(UV("\xE2\x82") == 0);
    CHECK(UV("\xE2") == 0);
    CHECK(UV("\xF0\x9F\x98") == 0);
    CHECK(UV("\xF0\x9F") == 0);
    CHECK(UV("abc\xC3") == 0);
    CHECK(UV("\xE2\x82" "A") == 0);
    CHECK(UV("\xC3" "A") == 0);
    /* lone continuation bytes */
    CHECK(UV("\x80") == 0);
    CHECK(UV("\xBF") == 0);
    CHECK(UV("a\x80" "b") == 0);
    CHECK(UV("\xC3\xA9\xA9") == 0);
    /* n bounds the check: a valid prefix of a longer buffer */
    CHECK(proto_utf8_valid("ab\xFF", 2) == 1);
    CHECK(proto_utf8_valid("\xC3\xA9", 1) == 0);
}

/* ---- a reference for UTF-8 and U+FFFD repair, written independently of
 * json.c: a prefix of a sequence is extendable when the code points it can
 * still reach intersect the valid ones for that length. ---- */

static int ref_seq_len(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0)
        return 2;
    if ((c & 0xF0) == 0xE0)
        return 3;
    if ((c & 0xF8) == 0xF0)
        return 4;
    return 0;
}

/* 1 when s[0..k) (k >= 1 bytes, lead of length L) can start a valid
 * sequence. */
static int ref_prefix_ok(const unsigned char *s, size_t k, int L)
{
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    static const unsigned lead_bits[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
    uint32_t lo, hi;
    size_t i;

    lo = hi = s[0] & lead_bits[L];
    for (i = 1; i < (size_t)L; i++) {
        if (i < k) {
            if ((s[i] & 0xC0) != 0x80)
                return 0;
            lo = lo << 6 | (s[i] & 0x3F);
            hi = hi << 6 | (s[i] & 0x3F);
        } else {
            lo = lo << 6;
            hi = hi << 6 | 0x3F;
        }
    }
    if (lo < min_cp[L])
        lo = min_cp[L];
    if (hi > 0x10FFFF)
        hi = 0x10FFFF;
    if (lo > hi)
        return 0;
    /* Entirely inside the surrogates: nothing valid reachable. */
    if (lo >= 0xD800 && hi <= 0xDFFF)
        return 0;
    return 1;
}

/* Reference encoder: what proto_json_encode_string should write. */
static void ref_encode(struct proto_buf *out, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;

    proto_buf_append_byte(out, '"');
    while (i < n) {
        unsigned char c = s[i];
        int L = ref_seq_len(c);
        size_t k;

        if (c < 0x80) {
            switch (c) {
            case '"': proto_buf_append_str(out, "\\\""); break;
            case '\\': proto_buf_append_str(out, "\\\\"); break;
            case '\n': proto_buf_append_str(out, "\\n"); break;
            case '\r': proto_buf_append_str(out, "\\r"); break;
            case '\t': proto_buf_append_str(out, "\\t"); break;
            case '\b': proto_buf_append_str(out, "\\b"); break;
            case '\f': proto_buf_append_str(out, "\\f"); break;
            default:
                if (c < 0x20) {
                    char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                    proto_buf_append(out, e, 6);
                } else {
                    proto_buf_append_byte(out, (char)c);
                }
            }
            i++;
            continue;
        }
        /* longest extendable prefix, up to the whole sequence */
        k = 0;
        if (L > 1) {
            size_t j;
            for (j = 1; j <= (size_t)L && i + j <= n; j++) {
                if (!ref_prefix_ok(s + i, j, L))
                    break;
                k = j;
            }
        }
        if (L > 1 && k == (size_t)L) {
            proto_buf_append(out, s + i, k);
            i += k;
        } else {
            proto_buf_append_str(out, "\xEF\xBF\xBD");
            i += k ? k : 1;
        }
    }
    proto_buf_append_byte(out, '"');
}

/* Every string of 1 to 4 bytes drawn from bytes at the edges of the UTF-8
 * ranges: encoding matches the reference, validity matches "the reference
 * needed no U+FFFD", and the output is valid JSON. */
static void test_utf8_exhaustive(void)
{
    static const unsigned char edge[] = {
        0x00, 0x09, 0x1F, 0x22, 0x41, 0x5C, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0,
        0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF1, 0xF4,
        0xF5, 0xFF};
    const size_t ne = sizeof(edge);
    struct proto_buf got = {0}, want = {0};
    unsigned char s[4];
    size_t len, idx, total, i, nenc = 0, nvalid = 0, njson = 0, cases = 0;

    for (len = 1; len <= 4; len++) {
        total = 1;
        for (i = 0; i < len; i++)
            total *= ne;
        for (idx = 0; idx < total; idx++) {
            size_t r = idx;
            int ref_ok;
            for (i = 0; i < len; i++) {
                s[i] = edge[r % ne];
                r /= ne;
            }
            proto_buf_reset(&got);
            proto_buf_reset(&want);
            if (proto_json_encode_string(&got, (const char *)s, len) != 0)
                abort();
            ref_encode(&want, s, len);
            cases++;
            if (got.len != want.len || memcmp(got.data, want.data, got.len) != 0) {
                if (nenc++ < 5) {
                    fprintf(stderr, "encode mismatch for");
                    for (i = 0; i < len; i++)
                        fprintf(stderr, " %02X", s[i]);
                    fprintf(stderr, "\n");
                }
            }
            ref_ok = memmem(want.data, want.len, "\xEF\xBF\xBD", 3) == NULL;
            if (proto_utf8_valid((const char *)s, len) != ref_ok) {
                if (nvalid++ < 5) {
                    fprintf(stderr, "utf8_valid mismatch for");
                    for (i = 0; i < len; i++)
                        fprintf(stderr, " %02X", s[i]);
                    fprintf(stderr, " (want %d)\n", ref_ok);
                }
            }
            if (!proto_json_validate(got.data, got.len))
                njson++;
        }
    }
    CHECK(cases > 400000);
    CHECK(nenc == 0);
    CHECK(nvalid == 0);
    CHECK(njson == 0);
    proto_buf_free(&got);
    proto_buf_free(&want);
}

/* ---- proto_json_validate ---- */

static void test_validate_values(void)
{
    CHECK(JV("null") == 1);
    CHECK(JV("true") == 1);
    CHECK(JV("false") == 1);
    CHECK(JV("0") == 1);
    CHECK(JV("\"\"") == 1);
    CHECK(JV("\"abc\"") == 1);
    CHECK(JV("[]") == 1);
    CHECK(JV("{}") == 1);
    CHECK(JV("[ ]") == 1);
    CHECK(JV("{ }") == 1);
    CHECK(JV("[1,\"a\",true,false,null,[],{}]") == 1);
    CHECK(JV("{\"a\":1,\"b\":[null],\"c\":{\"d\":\"e\"}}") == 1);
    CHECK(JV("{\"\":0}") == 1);
    CHECK(JV("{\"a\":1,\"a\":2}") == 1); /* duplicates are valid JSON */
    /* whitespace */
    CHECK(JV(" \t\r\n1 \t\r\n") == 1);
    CHECK(JV("\n{ \"a\" : [ 1 , 2 ] , \"b\" : { } }\n") == 1);
    CHECK(JV("\f1") == 0);
    CHECK(JV("1\v") == 0);
    CHECK(JV("\xC2\xA0" "1") == 0); /* NBSP is not JSON whitespace */
    /* literals */
    CHECK(JV("tru") == 0);
    CHECK(JV("nul") == 0);
    CHECK(JV("fals") == 0);
    CHECK(JV("True") == 0);
    CHECK(JV("NULL") == 0);
    CHECK(JV("nulll") == 0);
    CHECK(JV("truefalse") == 0);
    CHECK(JV("undefined") == 0);
    CHECK(JV("'a'") == 0);
}

static void test_validate_numbers(void)
{
    CHECK(JV("0") == 1);
    CHECK(JV("-0") == 1);
    CHECK(JV("123") == 1);
    CHECK(JV("-123") == 1);
    CHECK(JV("1.5") == 1);
    CHECK(JV("0.0") == 1);
    CHECK(JV("-0.5") == 1);
    CHECK(JV("1.5e+10") == 1);
    CHECK(JV("1.5E-10") == 1);
    CHECK(JV("1e5") == 1);
    CHECK(JV("1E05") == 1);
    CHECK(JV("-0.0e0") == 1);
    CHECK(JV("12345678901234567890123456789") == 1);
    CHECK(JV("01") == 0);
    CHECK(JV("00") == 0);
    CHECK(JV("-01") == 0);
    CHECK(JV("1.") == 0);
    CHECK(JV(".5") == 0);
    CHECK(JV("-.5") == 0);
    CHECK(JV("+1") == 0);
    CHECK(JV("-") == 0);
    CHECK(JV("--1") == 0);
    CHECK(JV("1e") == 0);
    CHECK(JV("1e+") == 0);
    CHECK(JV("1E-") == 0);
    CHECK(JV("1.e5") == 0);
    CHECK(JV("1.5.5") == 0);
    CHECK(JV("0x10") == 0);
    CHECK(JV("1_000") == 0);
    CHECK(JV("Infinity") == 0);
    CHECK(JV("-Infinity") == 0);
    CHECK(JV("NaN") == 0);
    CHECK(JV("[01]") == 0);
    CHECK(JV("[1.]") == 0);
    CHECK(JV("{\"a\":-}") == 0);
    CHECK(JV("[-0,1e1,2.5]") == 1);
}

static void test_validate_strings(void)
{
    CHECK(JV("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"") == 1);
    CHECK(JV("\"\\u0000\\u0041\\uFFFF\\uabcd\\uD83D\\uDE00\"") == 1);
    CHECK(JV("\"\\ud800\"") == 1); /* lone surrogate escapes are valid JSON text */
    CHECK(JV("\"\\a\"") == 0);
    CHECK(JV("\"\\x41\"") == 0);
    CHECK(JV("\"\\U0041\"") == 0);
    CHECK(JV("\"\\'\"") == 0);
    CHECK(JV("\"\\u12G4\"") == 0);
    CHECK(JV("\"\\u123\"") == 0);
    CHECK(JV("\"\\u12\"") == 0);
    CHECK(JV("\"\\u\"") == 0);
    CHECK(JV("\"\\u123") == 0);
    CHECK(JV("\"\\") == 0);
    CHECK(JV("\"abc") == 0);
    CHECK(JV("\"") == 0);
    CHECK(JV("abc\"") == 0);
    /* raw control characters */
    CHECK(JV("\"a\x01" "b\"") == 0);
    CHECK(JV("\"\x1F\"") == 0);
    CHECK(JV("\"\t\"") == 0);
    CHECK(JV("\"\n\"") == 0);
    CHECK(JV("\"\0\"") == 0);
    CHECK(JV("\"\x7F\"") == 1); /* DEL is not a control character for JSON */
    /* UTF-8 inside strings */
    CHECK(JV("\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\"") == 1);
    CHECK(JV("\"\xC0\x80\"") == 0);
    CHECK(JV("\"\xED\xA0\x80\"") == 0);
    CHECK(JV("\"\xF4\x90\x80\x80\"") == 0);
    CHECK(JV("\"\xE2\x82\"") == 0);
    CHECK(JV("\"\x80\"") == 0);
    CHECK(JV("\"\xFF\"") == 0);
    CHECK(JV("\"\xF0\x9F\x98") == 0);
    CHECK(JV("{\"\xC3\x28\":1}") == 0); /* in a key too */
    /* invalid UTF-8 outside strings */
    CHECK(JV("\xFF") == 0);
    CHECK(JV("[1,\xC3\xA9]") == 0);
}

static void test_validate_structure(void)
{
    CHECK(JV("") == 0);
    CHECK(JV("   ") == 0);
    CHECK(JV("\n") == 0);
    CHECK(JV("[") == 0);
    CHECK(JV("]") == 0);
    CHECK(JV("{") == 0);
    CHECK(JV("}") == 0);
    CHECK(JV("[1,]") == 0);
    CHECK(JV("[,1]") == 0);
    CHECK(JV("[,]") == 0);
    CHECK(JV("[1 2]") == 0);
    CHECK(JV("[1,,2]") == 0);
    CHECK(JV("[1}") == 0);
    CHECK(JV("{\"a\"]") == 0);
    CHECK(JV("{\"a\" 1}") == 0);
    CHECK(JV("{\"a\":}") == 0);
    CHECK(JV("{\"a\"}") == 0);
    CHECK(JV("{\"a\":1,}") == 0);
    CHECK(JV("{,\"a\":1}") == 0);
    CHECK(JV("{\"a\":1 \"b\":2}") == 0);
    CHECK(JV("{\"a\"::1}") == 0);
    CHECK(JV("{1:2}") == 0);
    CHECK(JV("{a:1}") == 0);
    CHECK(JV("{null:1}") == 0);
    CHECK(JV("{\"a\":1") == 0);
    CHECK(JV("[[1]") == 0);
    /* trailing garbage and two values */
    CHECK(JV("1 2") == 0);
    CHECK(JV("{}{}") == 0);
    CHECK(JV("[][]") == 0);
    CHECK(JV("\"a\"\"b\"") == 0);
    CHECK(JV("{} x") == 0);
    CHECK(JV("null,") == 0);
    CHECK(JV("1\0") == 0);
    CHECK(JV("{}\0") == 0);
    CHECK(JV("[1]]") == 0);
    /* n bounds the text */
    CHECK(proto_json_validate("[1]garbage", 3) == 1);
    CHECK(proto_json_validate("[1]", 2) == 0);
}

/* Every proper prefix of a document that must end with a closing bracket is
 * invalid; heap copies of exact size let ASan see any overread. */
static void test_validate_prefixes(void)
{
    static const char doc[] =
        "{\"a\":[1,-2.5e+3,true,false,null,\"x\\u00e9\\n\xC3\xA9\"],"
        "\"b\":{\"c\":{}},\"d\":[]}";
    size_t n = sizeof(doc) - 1, i, bad = 0;

    CHECK(jv_exact(doc, n) == 1);
    for (i = 0; i < n; i++)
        if (jv_exact(doc, i) != 0)
            bad++;
    CHECK(bad == 0);
}

/* Builds count openers (each `open`), then `mid`, then count closers. */
static void nest(struct proto_buf *b, const char *open, const char *mid,
                 const char *close, size_t count)
{
    size_t i;

    proto_buf_reset(b);
    for (i = 0; i < count; i++)
        proto_buf_append_str(b, open);
    proto_buf_append_str(b, mid);
    for (i = 0; i < count; i++)
        proto_buf_append_str(b, close);
}

/* Nesting has no fixed bound: only the input's length limits it. */
static void test_validate_depth(void)
{
    struct proto_buf b = {0};

    nest(&b, "[", "", "]", 10000);
    CHECK(jv_exact(b.data, b.len) == 1);
    nest(&b, "[", "1", "]", 10000);
    CHECK(jv_exact(b.data, b.len) == 1);
    nest(&b, "{\"a\":", "1", "}", 10000);
    CHECK(jv_exact(b.data, b.len) == 1);
    nest(&b, "{\"a\":", "{}", "}", 10000);
    CHECK(jv_exact(b.data, b.len) == 1);
    nest(&b, " { \"a\" : ", " [ ] ", " } ", 10000);
    CHECK(jv_exact(b.data, b.len) == 1);
    /* mixed: 10,000 levels alternating arrays and objects */
    nest(&b, "[{\"k\":", "0", "}]", 5000);
    CHECK(jv_exact(b.data, b.len) == 1);
    nest(&b, "{\"k\":[", "\"v\"", "]}", 5000);
    CHECK(jv_exact(b.data, b.len) == 1);
    /* siblings after a deep subtree, at every level it unwinds through */
    nest(&b, "[1,{\"k\":", "[]", ",\"j\":2},3]", 3000);
    CHECK(jv_exact(b.data, b.len) == 1);
    nest(&b, "[", "", "]", 200000);
    CHECK(proto_json_validate(b.data, b.len) == 1);

    /* unbalanced */
    nest(&b, "[", "", "]", 10000);
    CHECK(jv_exact(b.data, b.len - 1) == 0);
    CHECK(jv_exact(b.data + 1, b.len - 1) == 0);
    proto_buf_append_byte(&b, ']');
    CHECK(jv_exact(b.data, b.len) == 0);
    nest(&b, "[", "", "", 200000);
    CHECK(proto_json_validate(b.data, b.len) == 0);
    nest(&b, "", "", "]", 200000);
    CHECK(proto_json_validate(b.data, b.len) == 0);
    nest(&b, "{\"a\":", "1", "}", 10000);
    CHECK(jv_exact(b.data, b.len - 1) == 0);
    /* the wrong closer, innermost or outermost */
    nest(&b, "[", "", "]", 10000);
    b.data[10000] = '}';
    CHECK(jv_exact(b.data, b.len) == 0);
    b.data[10000] = ']';
    b.data[b.len - 1] = '}';
    CHECK(jv_exact(b.data, b.len) == 0);
    nest(&b, "{\"a\":", "1", "}", 10000);
    b.data[b.len - 1] = ']';
    CHECK(jv_exact(b.data, b.len) == 0);
    /* a member without a key deep down, a trailing comma deep down */
    nest(&b, "{\"a\":", "{1}", "}", 10000);
    CHECK(jv_exact(b.data, b.len) == 0);
    nest(&b, "[", "1,", "]", 10000);
    CHECK(jv_exact(b.data, b.len) == 0);
    proto_buf_free(&b);
}

/* Random kinds of container, nested to depths around the validator's word
 * boundaries (64 levels a word, 320 before the heap), closed correctly and
 * then with one closer of the wrong kind at each level in turn: the kind of
 * every level must come back intact from wherever it was kept. */
static void test_validate_depth_kinds(void)
{
    static const size_t depths[] = {1, 2, 63, 64, 65, 127, 128, 129, 319, 320, 321, 640, 1000,
                                    4097};
    struct proto_buf b = {0};
    unsigned char kinds[4097];
    size_t i, k, d, bad_ok = 0, tried = 0;
    uint32_t r = 12345;

    for (i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
        size_t open_len;
        d = depths[i];
        for (k = 0; k < d; k++) {
            r = r * 1103515245u + 12345u;
            kinds[k] = (unsigned char)((r >> 16) & 1);
        }
        proto_buf_reset(&b);
        for (k = 0; k < d; k++)
            proto_buf_append_str(&b, kinds[k] ? "{\"k\":" : "[");
        proto_buf_append_str(&b, "0");
        open_len = b.len;
        for (k = d; k-- > 0;)
            proto_buf_append_byte(&b, kinds[k] ? '}' : ']');
        CHECK(jv_exact(b.data, b.len) == 1);
        /* closer j (from the innermost) belongs to level d - 1 - j */
        for (k = 0; k < d; k++) {
            char *c = b.data + open_len + k;
            char good = *c;
            *c = good == '}' ? ']' : '}';
            tried++;
            if (proto_json_validate(b.data, b.len) == 0)
                bad_ok++;
            *c = good;
        }
    }
    CHECK(bad_ok == tried);
    proto_buf_free(&b);
}

static void test_validate_large(void)
{
    static const char item[] =
        "{\"id\":12345,\"s\":\"h\\u00e9llo \\\"w\\\" \xC3\xA9\xF0\x9F\x98\x80\","
        "\"f\":-1.5e-3,\"a\":[true,false,null,[]],\"o\":{}}";
    struct proto_buf b = {0};
    size_t i;

    proto_buf_append_byte(&b, '[');
    for (i = 0; b.len < 1024 * 1024; i++) {
        if (i)
            proto_buf_append_byte(&b, ',');
        proto_buf_append(&b, item, sizeof(item) - 1);
    }
    proto_buf_append_byte(&b, ']');
    CHECK(b.len > 1024 * 1024);
    CHECK(proto_json_validate(b.data, b.len) == 1);
    b.data[b.len - 1] = ',';
    CHECK(proto_json_validate(b.data, b.len) == 0);

    /* one 1 MB string */
    proto_buf_reset(&b);
    proto_buf_append_byte(&b, '"');
    for (i = 0; i < 1024 * 1024; i++)
        proto_buf_append_byte(&b, (char)('a' + i % 26));
    proto_buf_append_byte(&b, '"');
    CHECK(proto_json_validate(b.data, b.len) == 1);
    b.data[b.len / 2] = '\x01';
    CHECK(proto_json_validate(b.data, b.len) == 0);
    proto_buf_free(&b);
}

/* ---- proto_json_encode_string ---- */

#define CHECK_ENC(lit, want)                                                   \
    do {                                                                       \
        struct proto_buf e_ = {0};                                             \
        CHECK(proto_json_encode_string(&e_, lit, sizeof(lit) - 1) == 0);       \
        CHECK_MEM(e_.data, e_.len, want);                                      \
        CHECK(proto_json_validate(e_.data, e_.len) == 1);                      \
        proto_buf_free(&e_);                                                   \
    } while (0)

#define FFFD "\xEF\xBF\xBD"

static void test_encode(void)
{
    struct proto_buf b = {0};
    unsigned c;

    CHECK_ENC("", "\"\"");
    CHECK_ENC("abc", "\"abc\"");
    CHECK_ENC("\"", "\"\\\"\"");
    CHECK_ENC("\\", "\"\\\\\"");
    CHECK_ENC("/", "\"/\"");
    CHECK_ENC("\n\r\t\b\f", "\"\\n\\r\\t\\b\\f\"");
    CHECK_ENC("\0", "\"\\u0000\"");
    CHECK_ENC("\x01", "\"\\u0001\"");
    CHECK_ENC("\x0B", "\"\\u000b\"");
    CHECK_ENC("\x1F", "\"\\u001f\"");
    CHECK_ENC("a\0b", "\"a\\u0000b\"");
    CHECK_ENC("\x7F", "\"\x7F\"");
    CHECK_ENC("say \"hi\"\\n", "\"say \\\"hi\\\"\\\\n\"");
    /* valid UTF-8 is kept byte for byte */
    CHECK_ENC("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF",
              "\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF\"");
    CHECK_ENC("\xEF\xBF\xBD", "\"\xEF\xBF\xBD\"");
    /* one U+FFFD per maximal invalid subpart */
    CHECK_ENC("\xE2\x82", "\"" FFFD "\"");
    CHECK_ENC("\xE2\x82" "A", "\"" FFFD "A\"");
    CHECK_ENC("\xF0\x80", "\"" FFFD FFFD "\"");
    CHECK_ENC("\xFF", "\"" FFFD "\"");
    CHECK_ENC("\xFE\xFF", "\"" FFFD FFFD "\"");
    CHECK_ENC("\xC0\x80", "\"" FFFD FFFD "\"");
    CHECK_ENC("\xE0\x80\x80", "\"" FFFD FFFD FFFD "\"");
    CHECK_ENC("\xE0\xA0", "\"" FFFD "\"");
    CHECK_ENC("\xED\xA0\x80", "\"" FFFD FFFD FFFD "\"");
    CHECK_ENC("\xF4\x90\x80\x80", "\"" FFFD FFFD FFFD FFFD "\"");
    CHECK_ENC("\xF5\x80", "\"" FFFD FFFD "\"");
    CHECK_ENC("\xF0\x9F\x98", "\"" FFFD "\"");
    CHECK_ENC("\xF0\x9F\x98" "A", "\"" FFFD "A\"");
    CHECK_ENC("\xF0\x9F\x98\"", "\"" FFFD "\\\"\"");
    CHECK_ENC("\xF1\x80\x80\xC0", "\"" FFFD FFFD "\"");
    CHECK_ENC("\xC2\xC2\x80", "\"" FFFD "\xC2\x80\"");
    CHECK_ENC("a\x80" "b", "\"a" FFFD "b\"");
    CHECK_ENC("\xF0\x9F\x98\x80\xF0", "\"\xF0\x9F\x98\x80" FFFD "\"");
    CHECK_ENC("\xC3\n", "\"" FFFD "\\n\"");

    /* appends after what the buffer already holds */
    proto_buf_append_str(&b, "x:");
    CHECK(proto_json_encode_string(&b, "y", 1) == 0);
    CHECK_MEM(b.data, b.len, "x:\"y\"");
    proto_buf_free(&b);

    /* every control character is escaped in a way JSON accepts */
    for (c = 0; c < 0x20; c++) {
        char in = (char)c;
        proto_buf_reset(&b);
        CHECK(proto_json_encode_string(&b, &in, 1) == 0);
        CHECK(b.len == 4 || b.len == 8);
        CHECK(proto_json_validate(b.data, b.len) == 1);
    }
    proto_buf_free(&b);
}

/* Deterministic pseudo-random bytes: the output is always valid JSON, and
 * decoding it gives back the input when the input was valid UTF-8. */
static void test_encode_random(void)
{
    struct proto_buf enc = {0}, dec = {0};
    unsigned char in[64];
    uint32_t x = 12345;
    size_t round, i, n, notjson = 0, badtrip = 0, validcount = 0;

    for (round = 0; round < 20000; round++) {
        n = round % sizeof(in);
        for (i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            /* bias toward ASCII so that valid UTF-8 inputs occur */
            in[i] = (x >> 24) & 1 ? (unsigned char)((x >> 16) & 0x7F)
                                  : (unsigned char)(x >> 16);
        }
        proto_buf_reset(&enc);
        proto_buf_reset(&dec);
        if (proto_json_encode_string(&enc, (const char *)in, n) != 0)
            abort();
        if (!proto_json_validate(enc.data, enc.len))
            notjson++;
        {
            struct proto_json_span sp = {enc.data, enc.len};
            if (proto_json_string_decode(&dec, sp) != 0 ||
                !proto_utf8_valid(dec.data, dec.len))
                badtrip++;
            else if (proto_utf8_valid((const char *)in, n)) {
                validcount++;
                if (dec.len != n || memcmp(dec.data, in, n) != 0)
                    badtrip++;
            }
        }
    }
    CHECK(notjson == 0);
    CHECK(badtrip == 0);
    CHECK(validcount > 100);
    proto_buf_free(&enc);
    proto_buf_free(&dec);
}

/* ---- the object iterator ---- */

static void test_obj_iter(void)
{
    static const char doc[] =
        " {\"a\":1, \"b\" : \"x,}\" ,\"c\":[1,{\"d\":2}],\n\"e\":{\"f\":null},"
        "\"g\":true,\"\\u0068\":-1.5e3 } \n";
    struct proto_json_obj_iter it;
    struct proto_json_span k, v;

    CHECK(proto_json_obj_begin(&it, doc, sizeof(doc) - 1) == 0);
    CHECK(proto_json_obj_next(&it, &k, &v) == 1);
    CHECK_MEM(k.p, k.n, "\"a\"");
    CHECK_MEM(v.p, v.n, "1");
    CHECK(proto_json_type_of(v) == PROTO_JSON_NUMBER);
    CHECK(proto_json_obj_next(&it, &k, &v) == 1);
    CHECK_MEM(k.p, k.n, "\"b\"");
    CHECK_MEM(v.p, v.n, "\"x,}\"");
    CHECK(proto_json_type_of(v) == PROTO_JSON_STRING);
    CHECK(proto_json_obj_next(&it, &k, &v) == 1);
    CHECK_MEM(k.p, k.n, "\"c\"");
    CHECK_MEM(v.p, v.n, "[1,{\"d\":2}]");
    CHECK(proto_json_type_of(v) == PROTO_JSON_ARRAY);
    CHECK(proto_json_obj_next(&it, &k, &v) == 1);
    CHECK_MEM(k.p, k.n, "\"e\"");
    CHECK_MEM(v.p, v.n, "{\"f\":null}");
    CHECK(proto_json_type_of(v) == PROTO_JSON_OBJECT);
    CHECK(proto_json_obj_next(&it, &k, &v) == 1);
    CHECK_MEM(k.p, k.n, "\"g\"");
    CHECK_MEM(v.p, v.n, "true");
    CHECK(proto_json_type_of(v) == PROTO_JSON_TRUE);
    CHECK(proto_json_obj_next(&it, &k, &v) == 1);
    CHECK_MEM(k.p, k.n, "\"\\u0068\"");
    CHECK(proto_json_string_eq(k, "h") == 1);
    CHECK_MEM(v.p, v.n, "-1.5e3");
    CHECK(proto_json_obj_next(&it, &k, &v) == 0);
    CHECK(proto_json_obj_next(&it, &k, &v) == 0); /* stays done */

    {
        struct proto_json_span f = {"false", 5}, nl = {"null", 4}, none = {"", 0};
        CHECK(proto_json_type_of(f) == PROTO_JSON_FALSE);
        CHECK(proto_json_type_of(nl) == PROTO_JSON_NULL);
        CHECK(proto_json_type_of(none) == PROTO_JSON_NONE);
    }
}

/* Runs the iterator over s to the end: returns the final status (0 or -1)
 * and stores the member count. Uses an exact-size heap copy. */
static int iter_all(const char *s, size_t n, int *members)
{
    struct proto_json_obj_iter it;
    struct proto_json_span k, v;
    char *copy = malloc(n ? n : 1);
    int r, guard = 0;

    if (copy == NULL)
        abort();
    memcpy(copy, s, n);
    *members = 0;
    if (proto_json_obj_begin(&it, copy, n) != 0) {
        free(copy);
        return -2;
    }
    while ((r = proto_json_obj_next(&it, &k, &v)) == 1 && guard++ < 1000)
        (*members)++;
    free(copy);
    return r;
}

#define ITER(lit, m) iter_all(lit, sizeof(lit) - 1, m)

static void test_obj_iter_edges(void)
{
    int m;

    CHECK(ITER("{}", &m) == 0 && m == 0);
    CHECK(ITER("  {  }  ", &m) == 0 && m == 0);
    CHECK(ITER("\n\t{\r\n}\n", &m) == 0 && m == 0);
    CHECK(ITER("{\"a\":{\"b\":{\"c\":[]}}}", &m) == 0 && m == 1);
    /* not an object */
    CHECK(ITER("", &m) == -2);
    CHECK(ITER("   ", &m) == -2);
    CHECK(ITER("[1]", &m) == -2);
    CHECK(ITER("\"{}\"", &m) == -2);
    CHECK(ITER("null", &m) == -2);
    CHECK(ITER("1", &m) == -2);
    CHECK(ITER("x{}", &m) == -2);
    /* truncated */
    CHECK(ITER("{", &m) == -1 && m == 0);
    CHECK(ITER("{\"a\"", &m) == -1);
    CHECK(ITER("{\"a\":", &m) == -1);
    CHECK(ITER("{\"a\":1", &m) == -1);
    CHECK(ITER("{\"a\":1,", &m) == -1);
    CHECK(ITER("{\"a", &m) == -1);
    CHECK(ITER("{\"a\":[1,2", &m) == -1);
    CHECK(ITER("{\"a\":\"x", &m) == -1);
    /* malformed */
    CHECK(ITER("{,}", &m) == -1);
    CHECK(ITER("{\"a\":1,}", &m) == -1 && m == 1);
    CHECK(ITER("{\"a\" 1}", &m) == -1);
    CHECK(ITER("{\"a\":1 \"b\":2}", &m) == -1);
    CHECK(ITER("{\"a\":1,,\"b\":2}", &m) == -1);
    CHECK(ITER("{a:1}", &m) == -1);
    CHECK(ITER("{1:1}", &m) == -1);
    CHECK(ITER("{\"a\":01}", &m) == -1);
    CHECK(ITER("{\"a\":[1,}", &m) == -1);
    CHECK(ITER("{\"a\":tru}", &m) == -1);
    CHECK(ITER("{\"a\":\"\x01\"}", &m) == -1);
    CHECK(ITER("{\"\xFF\":1}", &m) == -1);
    CHECK(ITER("{\"a\":1]", &m) == -1);
    /* trailing garbage after the object */
    CHECK(ITER("{\"a\":1}x", &m) == -1);
    CHECK(ITER("{\"a\":1} x", &m) == -1);
    CHECK(ITER("{\"a\":1}}", &m) == -1);
    CHECK(ITER("{\"a\":1}{}", &m) == -1);
    CHECK(ITER("{}x", &m) == -1);
    CHECK(ITER("{}\0", &m) == -1);
    CHECK(ITER("{\"a\":1} \n", &m) == 0 && m == 1);
}

/* The iterator walks members whose values nest deeply, as the validator
 * accepts them. */
static void test_obj_iter_depth(void)
{
    struct proto_buf b = {0}, inner = {0};
    int m;

    nest(&inner, "[", "", "]", 10000);
    proto_buf_append_str(&b, "{\"a\":");
    proto_buf_append(&b, inner.data, inner.len);
    proto_buf_append_str(&b, ",\"b\":");
    proto_buf_append(&b, inner.data, inner.len);
    proto_buf_append_str(&b, "}");
    CHECK(proto_json_validate(b.data, b.len) == 1);
    CHECK(iter_all(b.data, b.len, &m) == 0 && m == 2);

    proto_buf_reset(&b);
    proto_buf_append_str(&b, "{\"a\":");
    proto_buf_append(&b, inner.data, inner.len - 1);
    proto_buf_append_str(&b, "}");
    CHECK(proto_json_validate(b.data, b.len) == 0);
    CHECK(iter_all(b.data, b.len, &m) == -1);
    proto_buf_free(&b);
    proto_buf_free(&inner);
}

/* ---- string literals ---- */

/* Decodes the literal into a fresh buffer; returns the status, and the
 * result in *out (caller frees). Exact-size heap copy for ASan. */
static int decode(const char *s, size_t n, struct proto_buf *out)
{
    char *copy = malloc(n ? n : 1);
    struct proto_json_span sp;
    int r;

    if (copy == NULL)
        abort();
    memcpy(copy, s, n);
    sp.p = copy;
    sp.n = n;
    proto_buf_reset(out);
    r = proto_json_string_decode(out, sp);
    free(copy);
    return r;
}

#define CHECK_DEC(lit, want)                                                   \
    do {                                                                       \
        struct proto_buf d_ = {0};                                             \
        CHECK(decode(lit, sizeof(lit) - 1, &d_) == 0);                         \
        CHECK(d_.len == sizeof(want) - 1 &&                                    \
              memcmp(d_.data, want, sizeof(want) - 1) == 0);                   \
        proto_buf_free(&d_);                                                   \
    } while (0)

#define CHECK_DEC_FAIL(lit)                                                    \
    do {                                                                       \
        struct proto_buf d_ = {0};                                             \
        CHECK(decode(lit, sizeof(lit) - 1, &d_) == -1);                        \
        proto_buf_free(&d_);                                                   \
    } while (0)

static void test_string_decode(void)
{
    CHECK_DEC("\"\"", "");
    CHECK_DEC("\"abc\"", "abc");
    CHECK_DEC("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t");
    CHECK_DEC("\"\\u0041\"", "A");
    CHECK_DEC("\"x\\u0041y\"", "xAy");
    CHECK_DEC("\"\\u0000\"", "\0");
    CHECK_DEC("\"\\u007f\\u0080\"", "\x7F\xC2\x80");
    CHECK_DEC("\"\\u00e9\\u00E9\"", "\xC3\xA9\xC3\xA9");
    CHECK_DEC("\"\\u07FF\\u0800\"", "\xDF\xBF\xE0\xA0\x80");
    CHECK_DEC("\"\\u20AC\"", "\xE2\x82\xAC");
    CHECK_DEC("\"\\uFFFF\"", "\xEF\xBF\xBF");
    CHECK_DEC("\"\\ud83d\\ude00\"", "\xF0\x9F\x98\x80");
    CHECK_DEC("\"\\uD83D\\uDE00\"", "\xF0\x9F\x98\x80");
    CHECK_DEC("\"\\ud800\\udc00\"", "\xF0\x90\x80\x80");
    CHECK_DEC("\"\\udbff\\udfff\"", "\xF4\x8F\xBF\xBF");
    CHECK_DEC("\"\xC3\xA9\xF0\x9F\x98\x80\"", "\xC3\xA9\xF0\x9F\x98\x80");
    /* lone surrogates become U+FFFD */
    CHECK_DEC("\"\\ud83d\"", FFFD);
    CHECK_DEC("\"\\ude00\"", FFFD);
    CHECK_DEC("\"\\ud83dx\"", FFFD "x");
    CHECK_DEC("\"\\ud83d\\u0041\"", FFFD "A");
    CHECK_DEC("\"\\ud83d\\ud83d\"", FFFD FFFD);
    CHECK_DEC("\"\\ude00\\ud83d\"", FFFD FFFD);
    CHECK_DEC("\"\\ud83d\\n\"", FFFD "\n");
    CHECK_DEC("\"\\ud83d\\ud83d\\ude00\"", FFFD "\xF0\x9F\x98\x80");
    /* not a valid literal */
    CHECK_DEC_FAIL("");
    CHECK_DEC_FAIL("\"");
    CHECK_DEC_FAIL("abc");
    CHECK_DEC_FAIL("\"abc");
    CHECK_DEC_FAIL("abc\"");
    CHECK_DEC_FAIL("\"a\"b\"");
    CHECK_DEC_FAIL("\"a\" ");
    CHECK_DEC_FAIL("\"\\x\"");
    CHECK_DEC_FAIL("\"\\u12\"");
    CHECK_DEC_FAIL("\"\\u12G4\"");
    CHECK_DEC_FAIL("\"\\\"");
    CHECK_DEC_FAIL("\"\x01\"");
    CHECK_DEC_FAIL("\"\xC0\x80\"");
    CHECK_DEC_FAIL("\"\xE2\x82\"");
    CHECK_DEC_FAIL("1");
}

/* A long run of escapes decodes without overflowing what was reserved. */
static void test_string_decode_long(void)
{
    struct proto_buf in = {0}, out = {0};
    size_t i;
    int ok = 1;

    proto_buf_append_byte(&in, '"');
    for (i = 0; i < 5000; i++)
        proto_buf_append_str(&in, i % 2 ? "\\ud83d\\ude00" : "\\u0000\\n");
    proto_buf_append_byte(&in, '"');
    CHECK(decode(in.data, in.len, &out) == 0);
    CHECK(out.len == 2500 * 4 + 2500 * 2);
    for (i = 0; i + 6 <= out.len; i += 6)
        if (memcmp(out.data + i, "\0\n\xF0\x9F\x98\x80", 6) != 0)
            ok = 0;
    CHECK(ok);
    proto_buf_free(&in);
    proto_buf_free(&out);
}

static void test_string_eq(void)
{
    CHECK(proto_json_string_eq(span_of("\"action\""), "action") == 1);
    CHECK(proto_json_string_eq(span_of("\"\\u0061ction\""), "action") == 1);
    CHECK(proto_json_string_eq(span_of("\"act\\u0069on\""), "action") == 1);
    CHECK(proto_json_string_eq(span_of("\"\\u0061\\u0063\\u0074\\u0069\\u006f\\u006e\""),
                               "action") == 1);
    CHECK(proto_json_string_eq(span_of("\"\\u0061\\u0063\\u0074\\u0069\\u006F\\u006E\""),
                               "action") == 1);
    CHECK(proto_json_string_eq(span_of("\"\""), "") == 1);
    CHECK(proto_json_string_eq(span_of("\"\\/\""), "/") == 1);
    CHECK(proto_json_string_eq(span_of("\"a\\\"b\""), "a\"b") == 1);
    CHECK(proto_json_string_eq(span_of("\"actio\""), "action") == 0);
    CHECK(proto_json_string_eq(span_of("\"actions\""), "action") == 0);
    CHECK(proto_json_string_eq(span_of("\"Action\""), "action") == 0);
    CHECK(proto_json_string_eq(span_of("\"\\u0061ctioN\""), "action") == 0);
    CHECK(proto_json_string_eq(span_of("\"\\u0061ctions\""), "action") == 0);
    CHECK(proto_json_string_eq(span_of("\"\\u0061\""), "action") == 0);
    CHECK(proto_json_string_eq(span_of("\"action\\u0000\""), "action") == 0);
    CHECK(proto_json_string_eq(span_of("\"\""), "a") == 0);
    CHECK(proto_json_string_eq(span_of("\"a\""), "") == 0);
    CHECK(proto_json_string_eq(span_of("\"\\u00e9\""), "\xC3\xA9") == 1);
    CHECK(proto_json_string_eq(span_of("\"\\ud83d\\ude00\""), "\xF0\x9F\x98\x80") == 1);
    CHECK(proto_json_string_eq(span_of("\"\\ud83d\""), "\xEF\xBF\xBD") == 1);
}

/* The header promises: 1 exactly when s decodes to lit. These cases go past
 * the shortcuts in proto_json_string_eq (json.c). */
static void test_string_eq_contract(void)
{
    char lit[160], esc[200];
    size_t i;

    /* A literal spelled like an escape must not match its escaped form:
     * "\u0061" decodes to "a", not to the six characters \u0061. */
    CHECK(proto_json_string_eq(span_of("\"\\u0061\""), "\\u0061") == 0);
    CHECK(proto_json_string_eq(span_of("\"\\\\\""), "\\\\") == 0);
    CHECK(proto_json_string_eq(span_of("\"\\\\\""), "\\") == 1);

    /* A long key with an escape still decodes to the literal. */
    for (i = 0; i < 130; i++)
        lit[i] = 'a';
    lit[130] = '\0';
    snprintf(esc, sizeof(esc), "\"\\u0061%s\"", lit + 1);
    CHECK(proto_json_string_eq(span_of(esc), lit) == 1);
    /* 22 escaped characters: 134 bytes of literal */
    esc[0] = '"';
    for (i = 0; i < 22; i++)
        memcpy(esc + 1 + 6 * i, "\\u0061", 6);
    esc[1 + 6 * 22] = '"';
    esc[2 + 6 * 22] = '\0';
    lit[22] = '\0';
    CHECK(proto_json_string_eq(span_of(esc), lit) == 1);
}

/* Strings long enough for the word-at-a-time scan: one special byte at
 * every position of a 40-byte string, so each lands in every lane of the
 * 8-byte words and in the tail. */
static void test_validate_long_strings(void)
{
    static const struct {
        const char *ins;
        int valid;
    } cases[] = {
        {"\x01", 0}, {"\x1f", 0}, {"\"", 0}, {"\\q", 0}, {"\xff", 0}, {"\xc3", 0},
        {"\\n", 1}, {"\\\"", 1}, {"\\u00e9", 1}, {"\xc3\xa9", 1}, {"\x7f", 1}, {" ", 1},
        {"\xe2\x82\xac", 1}, {"\xf0\x9f\x98\x80", 1}, {"\xed\xa0\x80", 0},
    };
    char buf[128], enc[512];
    size_t i, pos, n, m;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (pos = 0; pos < 40; pos++) {
            n = 0;
            buf[n++] = '"';
            memset(buf + n, 'a', pos);
            n += pos;
            memcpy(buf + n, cases[i].ins, strlen(cases[i].ins));
            n += strlen(cases[i].ins);
            memset(buf + n, 'b', 40 - pos);
            n += 40 - pos;
            buf[n++] = '"';
            if (proto_json_validate(buf, n) != cases[i].valid) {
                CHECK(proto_json_validate(buf, n) == cases[i].valid);
                fprintf(stderr, "  case %zu at %zu\n", i, pos);
            } else {
                t_run++;
            }
            /* The encoder escapes the quote, backslash and control bytes
             * wherever they sit, and its output is always valid. */
            {
                struct proto_buf b = {0};
                m = n - 2;
                if (proto_json_encode_string(&b, buf + 1, m) == 0 && b.len < sizeof(enc)) {
                    memcpy(enc, b.data, b.len);
                    CHECK(proto_json_validate(enc, b.len));
                }
                proto_buf_free(&b);
            }
        }
    }
}

static void test_tokenize(void)
{
    const char *doc = " {\"a\":[1,{\"b\":\"x\\\"y\"}],\"c\":true,\"d\":null,\"e\":-1.5e3} ";
    struct proto_json_tok *t = NULL;
    size_t cap = 0;
    long n = proto_json_tokenize(doc, strlen(doc), &t, &cap);

    /* { "a" [ 1 { "b" "x\"y" } ] "c" true "d" null "e" -1.5e3 }: 13 values */
    CHECK(n == 13);
    if (n == 13) {
        CHECK(t[0].type == PROTO_JSON_OBJECT && t[0].end == 13 && t[0].start == 1);
        CHECK_MEM(doc + t[1].start, t[1].len, "\"a\"");
        CHECK(t[2].type == PROTO_JSON_ARRAY && t[2].end == 7);
        CHECK(t[3].type == PROTO_JSON_NUMBER && t[3].end == 4);
        CHECK(t[4].type == PROTO_JSON_OBJECT && t[4].end == 7);
        CHECK_MEM(doc + t[6].start, t[6].len, "\"x\\\"y\"");
        CHECK_MEM(doc + t[7].start, t[7].len, "\"c\"");
        CHECK(t[8].type == PROTO_JSON_TRUE && t[10].type == PROTO_JSON_NULL);
        CHECK_MEM(doc + t[12].start, t[12].len, "-1.5e3");
        CHECK_MEM(doc + t[0].start, t[0].len, "{\"a\":[1,{\"b\":\"x\\\"y\"}],\"c\":true,\"d\":null,\"e\":-1.5e3}");
    }
    /* Scalars are texts too; unbalanced text is refused. */
    CHECK(proto_json_tokenize("42", 2, &t, &cap) == 1 && t[0].type == PROTO_JSON_NUMBER);
    CHECK(proto_json_tokenize("[1,2", 4, &t, &cap) == -1);
    CHECK(proto_json_tokenize("", 0, &t, &cap) == -1);
    free(t);
}

/* The tokenizer stops at PROTO_JSON_TOK_MAX_DEPTH levels; deeper (valid)
 * text is refused as a whole, never indexed in part. */
static void test_tokenize_depth(void)
{
    struct proto_buf b = {0};
    struct proto_json_tok *t = NULL;
    size_t cap = 0;
    const size_t D = PROTO_JSON_TOK_MAX_DEPTH;
    long n;

    nest(&b, "{\"a\":", "1", "}", D);
    n = proto_json_tokenize(b.data, b.len, &t, &cap);
    CHECK(n == (long)(2 * D + 1));
    if (n > 0)
        CHECK(t[0].type == PROTO_JSON_OBJECT && t[0].end == (uint32_t)n &&
              t[0].len == b.len);
    nest(&b, "[", "", "]", D);
    CHECK(proto_json_tokenize(b.data, b.len, &t, &cap) == (long)D);
    nest(&b, "[", "", "]", D + 1);
    CHECK(proto_json_validate(b.data, b.len) == 1);
    CHECK(proto_json_tokenize(b.data, b.len, &t, &cap) == -1);
    nest(&b, "{\"a\":", "1", "}", 10000);
    CHECK(proto_json_validate(b.data, b.len) == 1);
    CHECK(proto_json_tokenize(b.data, b.len, &t, &cap) == -1);
    free(t);
    proto_buf_free(&b);
}

int main(void)
{
    test_tokenize();
    test_tokenize_depth();
    test_validate_long_strings();
    test_utf8_valid();
    test_utf8_exhaustive();
    test_validate_values();
    test_validate_numbers();
    test_validate_strings();
    test_validate_structure();
    test_validate_prefixes();
    test_validate_depth();
    test_validate_depth_kinds();
    test_validate_large();
    test_encode();
    test_encode_random();
    test_obj_iter();
    test_obj_iter_edges();
    test_obj_iter_depth();
    test_string_decode();
    test_string_decode_long();
    test_string_eq();
    test_string_eq_contract();
    return t_done("json");
}

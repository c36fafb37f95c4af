/* test_filter.c: the filter compiler and evaluator (broker/filter.c). */
#include <stdlib.h>
#include <string.h>

#include "broker/filter.h"
#include "t.h"

static struct filter *compile(const char *json)
{
    int empty;
    const char *why = NULL;

    return filter_compile(json, strlen(json), &empty, &why);
}

/* 1 when filter text f matches payload p (p is JSON when is_json). */
static int match_ex(const char *f, const char *p, int is_json)
{
    struct filter *flt = compile(f);
    struct filter_msg m;
    int r;

    if (flt == NULL) {
        fprintf(stderr, "filter did not compile: %s\n", f);
        return -1;
    }
    filter_msg_init(&m, p, strlen(p), is_json);
    r = filter_match(flt, &m);
    filter_msg_release(&m);
    filter_free(flt);
    return r;
}

static int match(const char *f, const char *p)
{
    return match_ex(f, p, 1);
}

/* The compiler refuses f, with a message. */
static int refused(const char *f)
{
    int empty = -1;
    const char *why = NULL;
    struct filter *flt = filter_compile(f, strlen(f), &empty, &why);

    if (flt != NULL) {
        filter_free(flt);
        return 0;
    }
    return empty == 0 && why != NULL && *why != '\0';
}

static void test_equality(void)
{
    CHECK(match("{\"sym\":\"ACME\"}", "{\"sym\":\"ACME\",\"px\":1}") == 1);
    CHECK(match("{\"sym\":\"ACME\"}", "{\"sym\":\"ACMF\"}") == 0);
    CHECK(match("{\"sym\":\"ACME\"}", "{\"px\":1}") == 0);
    CHECK(match("{\"n\":1}", "{\"n\":1.0}") == 1);
    CHECK(match("{\"n\":1.0}", "{\"n\":1}") == 1);
    CHECK(match("{\"n\":100}", "{\"n\":1e2}") == 1);
    CHECK(match("{\"n\":1}", "{\"n\":\"1\"}") == 0);
    CHECK(match("{\"b\":true}", "{\"b\":true}") == 1);
    CHECK(match("{\"b\":true}", "{\"b\":1}") == 0);
    CHECK(match("{\"b\":false}", "{\"b\":null}") == 0);
    CHECK(match("{\"z\":null}", "{\"z\":null}") == 1);
    CHECK(match("{\"z\":null}", "{}") == 0);
    CHECK(match("{\"z\":null}", "{\"z\":0}") == 0);
    CHECK(match("{\"s\":{\"$eq\":\"x\"}}", "{\"s\":\"x\"}") == 1);
    /* strings compare by bytes, UTF-8 included */
    CHECK(match("{\"s\":\"\\u00e9\"}", "{\"s\":\"\xc3\xa9\"}") == 1);
}

static void test_operators(void)
{
    const char *p = "{\"px\":150,\"sym\":\"QQQ\",\"tag\":\"b\"}";

    CHECK(match("{\"px\":{\"$gte\":100,\"$lt\":200}}", p) == 1);
    CHECK(match("{\"px\":{\"$gt\":150}}", p) == 0);
    CHECK(match("{\"px\":{\"$gte\":150}}", p) == 1);
    CHECK(match("{\"px\":{\"$lt\":150}}", p) == 0);
    CHECK(match("{\"px\":{\"$lte\":150.0}}", p) == 1);
    CHECK(match("{\"px\":{\"$ne\":150}}", p) == 0);
    CHECK(match("{\"px\":{\"$ne\":151}}", p) == 1);
    CHECK(match("{\"sym\":{\"$in\":[\"QQQ\",\"SPY\"]}}", p) == 1);
    CHECK(match("{\"sym\":{\"$in\":[\"SPY\"]}}", p) == 0);
    CHECK(match("{\"sym\":{\"$in\":[]}}", p) == 0);
    CHECK(match("{\"sym\":{\"$nin\":[\"SPY\"]}}", p) == 1);
    CHECK(match("{\"sym\":{\"$nin\":[\"QQQ\"]}}", p) == 0);
    CHECK(match("{\"tag\":{\"$gt\":\"a\",\"$lt\":\"c\"}}", p) == 1);
    CHECK(match("{\"tag\":{\"$gt\":\"b\"}}", p) == 0);
    CHECK(match("{\"tag\":{\"$gt\":\"\"}}", p) == 1);
    /* ordering never crosses types */
    CHECK(match("{\"px\":{\"$gt\":\"1\"}}", p) == 0);
    CHECK(match("{\"sym\":{\"$lt\":1}}", p) == 0);
    CHECK(match("{\"ok\":{\"$gt\":0}}", "{\"ok\":true}") == 0);
    CHECK(match("{\"ok\":{\"$gt\":0}}", "{\"ok\":null}") == 0);
    /* $exists */
    CHECK(match("{\"meta.tag\":{\"$exists\":false}}", "{\"meta\":{}}") == 1);
    CHECK(match("{\"meta.tag\":{\"$exists\":false}}", "{\"meta\":{\"tag\":null}}") == 0);
    CHECK(match("{\"meta.tag\":{\"$exists\":true}}", "{\"meta\":{\"tag\":null}}") == 1);
    CHECK(match("{\"meta.tag\":{\"$exists\":true}}", "{}") == 0);
    /* big integers compare exactly */
    CHECK(match("{\"id\":9007199254740993}", "{\"id\":9007199254740993}") == 1);
    CHECK(match("{\"id\":9007199254740993}", "{\"id\":9007199254740992}") == 0);
    CHECK(match("{\"id\":{\"$gt\":9007199254740992}}", "{\"id\":9007199254740993}") == 1);
}

static void test_missing_paths(void)
{
    CHECK(match("{\"a\":{\"$ne\":1}}", "{}") == 1);
    CHECK(match("{\"a\":{\"$nin\":[1]}}", "{}") == 1);
    CHECK(match("{\"a\":{\"$eq\":1}}", "{}") == 0);
    CHECK(match("{\"a\":{\"$in\":[1]}}", "{}") == 0);
    CHECK(match("{\"a\":{\"$gt\":0}}", "{}") == 0);
    CHECK(match("{\"a.b\":1}", "{\"a\":5}") == 0);
    CHECK(match("{\"a.b\":{\"$ne\":1}}", "{\"a\":5}") == 1);
}

static void test_paths_and_arrays(void)
{
    const char *p = "{\"order\":{\"side\":\"buy\",\"legs\":[{\"px\":1},{\"px\":2}]},"
                    "\"tags\":[\"x\",\"y\"],\"nums\":[1,5,9]}";

    CHECK(match("{\"order.side\":\"buy\"}", p) == 1);
    CHECK(match("{\"order.side\":\"sell\"}", p) == 0);
    CHECK(match("{\"order.legs.1.px\":2}", p) == 1);
    CHECK(match("{\"order.legs.2.px\":2}", p) == 0);
    CHECK(match("{\"order.legs.x\":2}", p) == 0);
    /* a value that is an array matches when one element does */
    CHECK(match("{\"tags\":\"y\"}", p) == 1);
    CHECK(match("{\"tags\":\"z\"}", p) == 0);
    CHECK(match("{\"tags\":{\"$in\":[\"z\",\"x\"]}}", p) == 1);
    CHECK(match("{\"tags\":{\"$ne\":\"x\"}}", p) == 0);
    CHECK(match("{\"tags\":{\"$nin\":[\"z\"]}}", p) == 1);
    CHECK(match("{\"nums\":{\"$gt\":8}}", p) == 1);
    CHECK(match("{\"nums\":{\"$gt\":9}}", p) == 0);
    /* a path through a scalar is missing */
    CHECK(match("{\"order.side.x\":{\"$exists\":false}}", p) == 1);
    /* keys with digits are member names in objects */
    CHECK(match("{\"m.0\":1}", "{\"m\":{\"0\":1}}") == 1);
}

static void test_and(void)
{
    const char *f = "{\"sym\":\"A\",\"px\":{\"$gt\":1},\"side\":{\"$in\":[\"buy\"]}}";

    CHECK(match(f, "{\"sym\":\"A\",\"px\":2,\"side\":\"buy\"}") == 1);
    CHECK(match(f, "{\"sym\":\"A\",\"px\":1,\"side\":\"buy\"}") == 0);
    CHECK(match(f, "{\"sym\":\"B\",\"px\":2,\"side\":\"buy\"}") == 0);
    CHECK(match(f, "{\"sym\":\"A\",\"px\":2,\"side\":\"sell\"}") == 0);
}

static void test_non_objects(void)
{
    CHECK(match("{\"a\":1}", "[{\"a\":1}]") == 0);
    CHECK(match("{\"a\":{\"$ne\":1}}", "\"text\"") == 0);
    CHECK(match("{\"a\":{\"$exists\":false}}", "42") == 0);
    CHECK(match_ex("{\"a\":{\"$exists\":false}}", "\"not json\"", 0) == 0);
    CHECK(match("{\"a\":1}", "  {\"a\":1}  ") == 1);
}

static void test_empty_filter(void)
{
    int empty = 0;
    const char *why = NULL;

    CHECK(filter_compile("{}", 2, &empty, &why) == NULL && empty == 1);
    CHECK(filter_compile(" { } ", 5, &empty, &why) == NULL && empty == 1);
}

static void test_malformed(void)
{
    char big[8192];
    size_t i, n;

    CHECK(refused("[]"));
    CHECK(refused("\"x\""));
    CHECK(refused("null"));
    CHECK(refused("{"));
    CHECK(refused("{\"a\":1,\"a\":2}"));
    CHECK(refused("{\"a\":{\"$foo\":1}}"));
    CHECK(refused("{\"a\":{\"$in\":1}}"));
    CHECK(refused("{\"a\":{\"$nin\":\"x\"}}"));
    CHECK(refused("{\"a\":{\"$in\":[[1]]}}"));
    CHECK(refused("{\"a\":{\"$in\":[{}]}}"));
    CHECK(refused("{\"a\":{\"$gt\":1,\"b\":2}}"));
    CHECK(refused("{\"a\":{\"b\":2,\"$gt\":1}}"));
    CHECK(refused("{\"a\":{\"b\":2}}"));
    CHECK(refused("{\"a\":{}}"));
    CHECK(refused("{\"a\":[1,2]}"));
    CHECK(refused("{\"a\":{\"$gt\":true}}"));
    CHECK(refused("{\"a\":{\"$gt\":null}}"));
    CHECK(refused("{\"a\":{\"$lt\":[1]}}"));
    CHECK(refused("{\"a\":{\"$exists\":1}}"));
    CHECK(refused("{\"a\":{\"$eq\":{}}}"));
    CHECK(refused("{\"\":1}"));
    CHECK(refused("{\"a..b\":1}"));
    CHECK(refused("{\".a\":1}"));
    CHECK(refused("{\"a.\":1}"));
    CHECK(refused("{\"a\\u0000b\":1}"));
    /* limits: path depth, conditions, $in size, string size */
    CHECK(!refused("{\"a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p\":1}"));
    CHECK(refused("{\"a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q\":1}"));
    n = (size_t)snprintf(big, sizeof(big), "{");
    for (i = 0; i < FILTER_MAX_CONDITIONS + 1; i++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "%s\"k%zu\":1", i ? "," : "", i);
    snprintf(big + n, sizeof(big) - n, "}");
    CHECK(refused(big));
    n = (size_t)snprintf(big, sizeof(big), "{\"a\":{\"$in\":[");
    for (i = 0; i < FILTER_MAX_IN_ITEMS + 1; i++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "%s%zu", i ? "," : "", i);
    snprintf(big + n, sizeof(big) - n, "]}}");
    CHECK(refused(big));
    n = (size_t)snprintf(big, sizeof(big), "{\"a\":\"");
    for (i = 0; i < FILTER_MAX_STRING_BYTES + 1; i++)
        big[n++] = 'x';
    snprintf(big + n, sizeof(big) - n, "\"}");
    CHECK(refused(big));
    n = (size_t)snprintf(big, sizeof(big), "{\"");
    for (i = 0; i < FILTER_MAX_PATH_BYTES + 1; i++)
        big[n++] = 'p';
    snprintf(big + n, sizeof(big) - n, "\":1}");
    CHECK(refused(big));
}

/* Equivalent filters share a canonical key; different ones do not. */
static int same_key(const char *a, const char *b)
{
    struct filter *fa = compile(a), *fb = compile(b);
    const char *ka, *kb;
    size_t la, lb;
    int r = -1;

    if (fa && fb) {
        ka = filter_key(fa, &la);
        kb = filter_key(fb, &lb);
        r = la == lb && memcmp(ka, kb, la) == 0;
    }
    filter_free(fa);
    filter_free(fb);
    return r;
}

static void test_canonical_key(void)
{
    CHECK(same_key("{\"a\":1,\"b\":2}", "{\"b\":2,\"a\":1}") == 1);
    CHECK(same_key("{\"a\":1}", "{\"a\":{\"$eq\":1}}") == 1);
    CHECK(same_key("{\"a\":1}", "{\"a\":1.0}") == 1);
    CHECK(same_key("{\"a\":{\"$in\":[2,1,2]}}", "{\"a\":{\"$in\":[1,2]}}") == 1);
    CHECK(same_key("{\"p\":{\"$gt\":1,\"$lt\":5}}", "{\"p\":{\"$lt\":5,\"$gt\":1}}") == 1);
    CHECK(same_key("{\"a\":1}", "{\"a\":2}") == 0);
    CHECK(same_key("{\"a\":1}", "{\"a\":\"1\"}") == 0);
    CHECK(same_key("{\"a\":{\"$gt\":1}}", "{\"a\":{\"$gte\":1}}") == 0);
    CHECK(same_key("{\"a.b\":1}", "{\"a\":{\"$eq\":1},\"b\":1}") == 0);
    CHECK(same_key("{\"id\":9007199254740993}", "{\"id\":9007199254740992}") == 0);
}

/* One parse serves every filter asked about the same message. */
static void test_parse_once(void)
{
    struct filter *a = compile("{\"x\":1}"), *b = compile("{\"x\":{\"$gt\":0}}");
    struct filter_msg m;
    const char *p = "{\"x\":1}";

    filter_msg_init(&m, p, strlen(p), 1);
    CHECK(m.state == 0 && m.ntoks == 0);
    CHECK(filter_match(a, &m) == 1);
    CHECK(m.state == 1 && m.ntoks == 3); /* the object, its key, its value */
    CHECK(filter_match(b, &m) == 1);
    CHECK(m.state == 1 && m.ntoks == 3);
    filter_msg_release(&m);
    /* a non-object is never parsed */
    filter_msg_init(&m, "[1,2]", 5, 1);
    CHECK(filter_match(a, &m) == 0);
    CHECK(m.state == 2 && m.ntoks == 0);
    filter_msg_release(&m);
    /* nor is a payload that was not JSON (sent as a string) */
    filter_msg_init(&m, "\"{}\"", 4, 0);
    CHECK(filter_match(a, &m) == 0);
    CHECK(m.state == 2 && m.ntoks == 0);
    filter_msg_release(&m);
    filter_free(a);
    filter_free(b);
}

static void test_payload_forms(void)
{
    /* escaped keys and values in the payload are compared decoded */
    CHECK(match("{\"sym\":\"A\\\"B\"}", "{\"s\\u0079m\":\"A\\u0022B\"}") == 1);
    CHECK(match("{\"s\":{\"$gt\":\"a\"}}", "{\"s\":\"\\u0062\"}") == 1);
    CHECK(match("{\"s\":\"a\\u0000b\"}", "{\"s\":\"a\\u0000b\"}") == 1);
    CHECK(match("{\"s\":\"a\"}", "{\"s\":\"a\\u0000b\"}") == 0);
    /* of duplicate keys the last one counts */
    CHECK(match("{\"a\":2}", "{\"a\":1,\"a\":2}") == 1);
    CHECK(match("{\"a\":1}", "{\"a\":1,\"a\":2}") == 0);
    /* a key after a nested subtree is found past it */
    CHECK(match("{\"z\":1}", "{\"x\":{\"y\":[1,{\"z\":2}],\"z\":3},\"z\":1}") == 1);
    CHECK(match("{\"x.z\":3}", "{\"x\":{\"y\":[1,{\"z\":2}],\"z\":3},\"z\":1}") == 1);
    /* numbers past int64 compare as doubles; no payload number is refused */
    CHECK(match("{\"n\":{\"$gt\":9223372036854775807}}", "{\"n\":18446744073709551616}") == 1);
    CHECK(match("{\"n\":{\"$gt\":0}}", "{\"n\":1e400}") == 1);
    CHECK(match("{\"n\":{\"$lt\":0}}", "{\"n\":-1e400}") == 1);
    CHECK(match("{\"n\":1}", "{\"n\":1.00000000000000000000000000000000000000000000000000000000000000000000000}") == 1);
    CHECK(match("{\"n\":-5}", "{\"n\":-5}") == 1);
    /* 18 digits are read directly, 19 and more through libc (no overflow) */
    CHECK(match("{\"n\":999999999999999999}", "{\"n\":999999999999999999}") == 1);
    CHECK(match("{\"n\":-999999999999999999}", "{\"n\":-999999999999999999}") == 1);
    CHECK(match("{\"n\":{\"$gt\":999999999999999999}}", "{\"n\":9555555555555555555}") == 1);
    CHECK(match("{\"n\":{\"$lt\":0}}", "{\"n\":-9555555555555555555}") == 1);
    CHECK(match("{\"n\":9223372036854775807}", "{\"n\":9223372036854775807}") == 1);
    CHECK(match("{\"n\":-9223372036854775807}", "{\"n\":-9223372036854775807}") == 1);
    CHECK(match("{\"n\":0}", "{\"n\":-0.0}") == 1);
    /* whitespace anywhere */
    CHECK(match("{\"a.b\":{\"$in\":[1]}}", " { \"a\" : { \"b\" : [ 1 ] } } ") == 1);
    CHECK(match("{\"a.b.0\":1}", "{\"a\"\n:\t{\"b\":\r[ 1 , 2 ]}}") == 1);
}

int main(void)
{
    test_equality();
    test_operators();
    test_missing_paths();
    test_paths_and_arrays();
    test_and();
    test_non_objects();
    test_payload_forms();
    test_empty_filter();
    test_malformed();
    test_canonical_key();
    test_parse_once();
    filter_cleanup();
    return t_done("filter");
}

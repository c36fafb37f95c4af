/* test_cluster.c: the hash slot function against Redis's own answers
 * (CLUSTER KEYSLOT of redis-server 7.0, names with and without hash tags),
 * and the channel set both subscriber backends keep (broker/chanset.h). */
#include <stdlib.h>

#include "broker/chanset.h"
#include "broker/cluster.h"
#include "t.h"

static void test_slots(void)
{
    static const struct {
        const char *name;
        unsigned slot;
    } v[] = {
        {"123456789", 12739},           /* CRC16/XMODEM's check value, 0x31C3 */
        {"foo", 12182},
        {"bar", 5061},
        {"hello", 866},
        {"somekey", 11058},
        {"prices", 3628},
        {"{user1000}.following", 3443}, /* a tag: only "user1000" counts */
        {"{user1000}.followers", 3443},
        {"foo{}{bar}", 8363},           /* an empty first tag: the whole name */
        {"foo{{bar}}zap", 4015},        /* the tag is "{bar" */
        {"foo{bar}{zap}", 5061},        /* the first tag only: "bar" */
        {"{}", 15257},
        {"{", 4092},
        {"}", 12090},
        {"a{b", 13340},                 /* no closing brace: the whole name */
        {"\xc3\xa9", 10180},            /* bytes, not characters */
        {"", 0},
    };
    size_t i;

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        unsigned got = clu_slot(v[i].name, strlen(v[i].name));
        if (got != v[i].slot)
            fprintf(stderr, "slot of '%s': got %u, Redis says %u\n", v[i].name, got, v[i].slot);
        CHECK(got == v[i].slot);
    }
    /* Binary-safe: a NUL inside the name counts. */
    CHECK(clu_slot("a\0b", 3) != clu_slot("a", 1));
}

static int visited;

static void visit(void *arg, struct cset_item *it)
{
    struct cset *s = arg;

    visited++;
    if (it->name[0] == 'x')
        cset_remove(s, it); /* removal while walking is allowed */
}

static void test_chanset(void)
{
    struct cset *s = cset_new();
    struct cset_item *it;
    char name[32];
    int i;

    CHECK(s != NULL && cset_count(s) == 0);
    CHECK(cset_find(s, "a", 1) == NULL);
    it = cset_add(s, "a", 1);
    CHECK(it != NULL && it->state == CSET_WANT && it->pending == 0 && it->on == NULL);
    CHECK(cset_find(s, "a", 1) == it);
    CHECK(cset_find(s, "a\0", 2) == NULL);
    /* Enough names to grow the table several times. */
    for (i = 0; i < 1000; i++) {
        snprintf(name, sizeof(name), "%s-%d", i % 2 ? "x" : "y", i);
        CHECK(cset_add(s, name, strlen(name)) != NULL);
    }
    CHECK(cset_count(s) == 1001);
    CHECK(cset_find(s, "a", 1) == it);
    snprintf(name, sizeof(name), "y-%d", 998);
    CHECK(cset_find(s, name, strlen(name)) != NULL);
    visited = 0;
    cset_foreach(s, visit, s);
    CHECK(visited == 1001);
    CHECK(cset_count(s) == 501);
    snprintf(name, sizeof(name), "x-%d", 999);
    CHECK(cset_find(s, name, strlen(name)) == NULL);
    cset_remove(s, it);
    CHECK(cset_find(s, "a", 1) == NULL && cset_count(s) == 500);
    cset_free(s);
    cset_free(NULL);
}

int main(void)
{
    test_slots();
    test_chanset();
    return t_done("cluster");
}

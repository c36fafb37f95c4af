/* test_siphash.c: SipHash-2-4 against the reference vectors (key 00..0f,
 * message 00..n-1), cross-checked with OpenSSL's SIPHASH MAC. */
#include <stdint.h>

#include "broker/siphash.h"
#include "t.h"

static const uint8_t key[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

static uint64_t hash_prefix(size_t n)
{
    uint8_t msg[64];
    size_t i;

    for (i = 0; i < n; i++)
        msg[i] = (uint8_t)i;
    return siphash24(msg, n, key);
}

static void test_vectors(void)
{
    CHECK(hash_prefix(0) == 0x726fdb47dd0e0e31ULL);
    CHECK(hash_prefix(1) == 0x74f839c593dc67fdULL);
    CHECK(hash_prefix(7) == 0xab0200f58b01d137ULL);
    CHECK(hash_prefix(8) == 0x93f5f5799a932462ULL);
    CHECK(hash_prefix(9) == 0x9e0082df0ba9e4b0ULL);
    CHECK(hash_prefix(15) == 0xa129ca6149be45e5ULL);
    CHECK(hash_prefix(16) == 0x3f2acc7f57c29bdbULL);
    CHECK(hash_prefix(63) == 0x958a324ceb064572ULL);
}

/* The hash must not depend on where the bytes sit in memory. */
static void test_unaligned(void)
{
    uint8_t buf[80];
    size_t i, off;

    for (off = 1; off < 8; off++) {
        for (i = 0; i < 63; i++)
            buf[off + i] = (uint8_t)i;
        CHECK(siphash24(buf + off, 63, key) == 0x958a324ceb064572ULL);
        CHECK(siphash24(buf + off, 15, key) == 0xa129ca6149be45e5ULL);
    }
}

static void test_key_matters(void)
{
    uint8_t other[16] = {0};

    CHECK(siphash24("channel", 7, key) != siphash24("channel", 7, other));
    CHECK(siphash24("channel", 7, key) == siphash24("channel", 7, key));
}

int main(void)
{
    test_vectors();
    test_unaligned();
    test_key_matters();
    return t_done("siphash");
}

/* siphash.h: SipHash-2-4 (Aumasson and Bernstein), the keyed hash of the
 * channel table: clients choose channel names, so an unkeyed hash would let
 * them pile every name into one bucket. */
#ifndef BROKER_SIPHASH_H
#define BROKER_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t siphash24(const void *data, size_t len, const uint8_t key[16]);

#endif

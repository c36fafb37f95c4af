/* cidr.h: IP addresses and networks, for trusted_proxies.
 *
 * A network is an IPv4 or IPv6 prefix ("10.0.0.0/8", "::1", "fd00::/8");
 * an address without a length is the network of that one address. IPv4
 * addresses mapped into IPv6 (::ffff:a.b.c.d, what a dual-stack socket
 * reports) are taken as IPv4. No allocation anywhere. */
#ifndef BROKER_CIDR_H
#define BROKER_CIDR_H

#include <stddef.h>
#include <stdint.h>

/* Longest text of an address, with its terminating NUL (INET6_ADDRSTRLEN). */
#define CIDR_ADDRSTRLEN 46
/* Networks a list may hold. */
#define CIDR_MAX 64

struct cidr_addr {
    uint8_t family; /* 4 or 6 */
    uint8_t b[16];  /* IPv4 in the first 4 bytes */
};

struct cidr {
    struct cidr_addr a;
    uint8_t bits;
};

/* Parses the address text s[0..n) (no brackets, no port). Returns 0, or -1
 * when it is not an address. */
int cidr_addr_parse(const char *s, size_t n, struct cidr_addr *out);

/* Writes the canonical text of a into buf (CIDR_ADDRSTRLEN bytes). */
void cidr_addr_format(const struct cidr_addr *a, char *buf);

/* Parses a comma- or space-separated list of networks into out[0..max).
 * Returns how many, or -1 with *bad and *badlen naming the first entry that is
 * not a network (or the one past max). */
int cidr_list_parse(const char *list, struct cidr *out, int max, const char **bad,
                    size_t *badlen);

/* 1 when a lies in one of nets[0..n). */
int cidr_match(const struct cidr *nets, int n, const struct cidr_addr *a);

#endif

/* addr.h: the one way every Tandem listener and client reads a network address.
 *
 * An address is "HOST:PORT" where HOST is a name ("localhost", "decode-1.svc"), an IPv4
 * literal, or an IPv6 literal in brackets ("[::1]:50051"), the form gRPC and URLs use.
 * Listeners take HOST and PORT apart (--host, --port); eng_addr_resolve turns them into
 * socket addresses, names and both IP families alike, and eng_addr_join writes the
 * address peers are told. */
#ifndef ENG_ADDR_H
#define ENG_ADDR_H

#include <stddef.h>

#include "common/error.h"

struct addrinfo;

#define ENG_HOST_MAX 256 /* bytes of a host, its terminating NUL included (a DNS name is at most 253) */

/* Splits "host:port" / "[v6]:port" into host (brackets removed) and port (0..65535).
 * Fails with one line naming the address for anything else: no port, a port out of
 * range or with junk, an empty host, an unbracketed IPv6 literal, a host too long. */
int eng_addr_split(const char *addr, char host[ENG_HOST_MAX], int *port, eng_error *err);

/* "host:port", with brackets around a host holding ':' (an IPv6 literal). Fails when
 * it does not fit in cap. */
int eng_addr_join(const char *host, int port, char *out, size_t cap, eng_error *err);

/* getaddrinfo for a TCP socket on host:port. passive: for a listener, where a NULL or
 * empty host means every local address. The list (free with freeaddrinfo) holds IPv4
 * and IPv6 addresses as the host has them. */
int eng_addr_resolve(const char *host, int port, int passive, struct addrinfo **out, eng_error *err);

#endif

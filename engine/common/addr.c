/* addr.c: network addresses (see addr.h). */
#include "common/addr.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static int parse_port(const char *s, int *port)
{
    if (!*s || strlen(s) > 5)
        return -1;
    int v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (v > 65535)
        return -1;
    *port = v;
    return 0;
}

int eng_addr_split(const char *addr, char host[ENG_HOST_MAX], int *port, eng_error *err)
{
    const char *h = addr, *colon;
    size_t n;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':')
            return eng_fail(err, "address '%.300s': an IPv6 host is written [HOST]:PORT", addr);
        h = addr + 1;
        n = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            return eng_fail(err, "address '%.300s': wants HOST:PORT", addr);
        n = (size_t)(colon - addr);
        if (memchr(addr, ':', n))
            return eng_fail(err, "address '%.300s': an IPv6 host is written [HOST]:PORT", addr);
    }
    if (n == 0)
        return eng_fail(err, "address '%.300s': the host is empty", addr);
    if (n >= ENG_HOST_MAX)
        return eng_fail(err, "address '%.60s...': the host is longer than %d bytes", addr, ENG_HOST_MAX - 1);
    if (parse_port(colon + 1, port) < 0)
        return eng_fail(err, "address '%.300s': the port must be a number in [0, 65535]", addr);
    memcpy(host, h, n);
    host[n] = 0;
    return 0;
}

int eng_addr_join(const char *host, int port, char *out, size_t cap, eng_error *err)
{
    int v6 = strchr(host, ':') != NULL;
    int n = snprintf(out, cap, "%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", port);
    if (n < 0 || (size_t)n >= cap)
        return eng_fail(err, "address of host '%.200s' is too long", host);
    return 0;
}

int eng_addr_resolve(const char *host, int port, int passive, struct addrinfo **out, eng_error *err)
{
    *out = NULL;
    if (port < 0 || port > 65535)
        return eng_fail(err, "port %d is not in [0, 65535]", port);
    if (host && !*host)
        host = NULL;
    if (!host && !passive)
        return eng_fail(err, "no host to connect to");
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)};
    int rc = getaddrinfo(host, service, &hints, out);
    if (rc != 0) {
        *out = NULL;
        return eng_fail(err, "cannot resolve '%s': %s", host ? host : "*",
                        rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
    }
    return 0;
}

/* test_addr.c: the one address parser (engine/common/addr.h) on good and bad
 * addresses, and a /metrics listener reached by name, by IPv4 and (with the argument
 * "ipv6") by an IPv6 literal, which the metrics server once refused. */
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "common/addr.h"
#include "metrics.h"

#define SKIP 77

static int split_ok(const char *addr, const char *want_host, int want_port)
{
    char host[ENG_HOST_MAX];
    int port = -1;
    eng_error err;
    return eng_addr_split(addr, host, &port, &err) == 0 && !strcmp(host, want_host) && port == want_port;
}

static int split_fails(const char *addr, const char *why)
{
    char host[ENG_HOST_MAX];
    int port;
    eng_error err = {{0}};
    return eng_addr_split(addr, host, &port, &err) < 0 && strstr(err.msg, why);
}

/* GET /metrics from host:port; 1 when the answer is HTTP 200. */
static int get_metrics(const char *host, int port)
{
    struct addrinfo *ai = NULL;
    if (eng_addr_resolve(host, port, 0, &ai, NULL) < 0)
        return 0;
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    int ok = fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0;
    freeaddrinfo(ai);
    const char *req = "GET /metrics HTTP/1.0\r\n\r\n";
    char buf[256] = "";
    if (ok)
        ok = write(fd, req, strlen(req)) == (ssize_t)strlen(req) && read(fd, buf, sizeof buf - 1) > 0;
    if (fd >= 0)
        close(fd);
    return ok && !strncmp(buf, "HTTP/1.", 7) && strstr(buf, " 200 ");
}

/* A metrics server on host, answering there. */
static int serve_and_get(met_registry *r, const char *host)
{
    met_server *s = NULL;
    eng_error err;
    if (met_server_start(r, host, 0, NULL, NULL, &s, &err) < 0) {
        fprintf(stderr, "metrics server on %s: %s\n", host, err.msg);
        return 0;
    }
    int ok = get_metrics(host, met_server_port(s));
    met_server_stop(s);
    return ok;
}

int main(int argc, char **argv)
{
    met_registry *r = met_registry_new();
    REQUIRE(r);
    if (argc > 1 && !strcmp(argv[1], "ipv6")) {
        int fd = socket(AF_INET6, SOCK_STREAM, 0);
        struct addrinfo *ai = NULL;
        int have = fd >= 0 && eng_addr_resolve("::1", 0, 1, &ai, NULL) == 0 &&
                   bind(fd, ai->ai_addr, ai->ai_addrlen) == 0;
        if (ai)
            freeaddrinfo(ai);
        if (fd >= 0)
            close(fd);
        if (!have) {
            printf("no IPv6 loopback on this machine: skipped\n");
            met_registry_free(r);
            return SKIP;
        }
        CHECK(serve_and_get(r, "::1"), "a /metrics listener on [::1]");
        met_registry_free(r);
        return check_summary();
    }

    CHECK(split_ok("127.0.0.1:50051", "127.0.0.1", 50051));
    CHECK(split_ok("decode-1.svc.cluster.local:8000", "decode-1.svc.cluster.local", 8000));
    CHECK(split_ok("[::1]:0", "::1", 0));
    CHECK(split_ok("[fe80::1%eth0]:65535", "fe80::1%eth0", 65535));
    CHECK(split_fails("localhost", "wants HOST:PORT"));
    CHECK(split_fails("::1:80", "[HOST]:PORT"));
    CHECK(split_fails("[::1]80", "[HOST]:PORT"));
    CHECK(split_fails("[::1", "[HOST]:PORT"));
    CHECK(split_fails(":80", "host is empty"));
    CHECK(split_fails("[]:80", "host is empty"));
    CHECK(split_fails("h:", "port"));
    CHECK(split_fails("h:65536", "[0, 65535]"));
    CHECK(split_fails("h:+80", "port"));
    CHECK(split_fails("h:80x", "port"));
    CHECK(split_fails("h:000080000", "port"));
    char longname[400];
    memset(longname, 'a', 300);
    strcpy(longname + 300, ":1");
    CHECK(split_fails(longname, "longer than"));

    char out[64];
    eng_error err;
    CHECK(eng_addr_join("127.0.0.1", 80, out, sizeof out, &err) == 0 && !strcmp(out, "127.0.0.1:80"));
    CHECK(eng_addr_join("::1", 50051, out, sizeof out, &err) == 0 && !strcmp(out, "[::1]:50051"));
    CHECK(eng_addr_join("a-very-long-host-name-that-cannot-fit.example", 1, out, 16, &err) < 0);
    /* what join writes, split reads back */
    CHECK(eng_addr_join("::1", 7, out, sizeof out, &err) == 0 && split_ok(out, "::1", 7));

    struct addrinfo *ai = NULL;
    CHECK(eng_addr_resolve("127.0.0.1", 80, 0, &ai, &err) == 0 && ai->ai_family == AF_INET);
    freeaddrinfo(ai);
    CHECK(eng_addr_resolve("::1", 80, 0, &ai, &err) == 0 && ai->ai_family == AF_INET6);
    freeaddrinfo(ai);
    CHECK(eng_addr_resolve(NULL, 0, 1, &ai, &err) == 0, "a listener on every address");
    freeaddrinfo(ai);
    CHECK(eng_addr_resolve(NULL, 80, 0, &ai, &err) < 0 && strstr(err.msg, "no host"));
    CHECK(eng_addr_resolve("127.0.0.1", 70000, 0, &ai, &err) < 0 && strstr(err.msg, "70000"));
    CHECK(eng_addr_resolve("no-such-host.invalid", 80, 0, &ai, &err) < 0 && strstr(err.msg, "no-such-host.invalid"),
          "%s", err.msg);

    CHECK(serve_and_get(r, "127.0.0.1"), "a /metrics listener on 127.0.0.1");
    CHECK(serve_and_get(r, "localhost"), "a /metrics listener on a name");
    met_registry_free(r);
    return check_summary();
}

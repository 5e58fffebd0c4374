/* test_kvt_limits.c: the TCP KV receiver's limits (issue 12). A peer that connects
 * and never sends its hello is cut off after io_timeout_ms (it used to hold its
 * reader thread forever), and connections beyond max_conns are closed at once (each
 * holds a thread and a staging buffer). Raw sockets on loopback play the peers. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "kvtransfer.h"
#include "check.h"

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* 1 when the receiver closes fd within limit_ms. */
static int closed_within(int fd, int limit_ms)
{
    struct timeval tv = {limit_ms / 1000, (limit_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char b[64];
    errno = 0;
    ssize_t n = recv(fd, b, sizeof b, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

int main(void)
{
    /* a free port, then the transport on it */
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    REQUIRE(bind(probe, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(probe, (struct sockaddr *)&a, &al) == 0);
    int port = ntohs(a.sin_port);
    close(probe);
    kvt_tcp_options o = {.bind_host = "127.0.0.1", .port = port, .io_timeout_ms = 500, .max_conns = 2};
    kvt_transport *t = NULL;
    eng_error err;
    REQUIRE(kvt_tcp_create(&o, &t, &err) == 0, "%s", err.msg);

    int idle[2];
    for (int i = 0; i < 2; i++)
        REQUIRE((idle[i] = connect_to(port)) >= 0);
    usleep(100000); /* the listener takes both */
    int extra = connect_to(port);
    REQUIRE(extra >= 0);
    CHECK(closed_within(extra, 300), "a connection beyond max_conns was kept");
    close(extra);

    double t0 = eng_now_s();
    CHECK(closed_within(idle[0], 5000), "a peer that never sent its hello was kept");
    double dt = eng_now_s() - t0;
    CHECK(dt < 2.0, "closed after %.1f s", dt);
    printf("silent peer cut off after %.2f s (io_timeout_ms 500)\n", dt + 0.1);
    CHECK(closed_within(idle[1], 5000));
    close(idle[0]);
    close(idle[1]);

    /* room again once they are gone */
    usleep(100000);
    int again = connect_to(port);
    REQUIRE(again >= 0);
    t0 = eng_now_s();
    CHECK(closed_within(again, 5000) && eng_now_s() - t0 > 0.3, "a new connection was not served until its timeout");
    close(again);
    kvt_destroy(t);
    return check_summary();
}

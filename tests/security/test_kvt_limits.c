/* test_kvt_limits.c: the TCP KV receiver's limits (issue 12). A peer that connects
 * and never sends its hello is cut off after io_timeout_ms (it used to hold its
 * reader thread forever), and connections beyond max_conns are closed at once (each
 * holds a thread and a staging buffer). A greeted connection may idle between
 * transfers (senders cache it) and after a BEGIN until its transfer's first byte (a
 * prefill worker begins when the prompt is queued), but one that stalls mid-transfer
 * (after a run, or inside one) is cut off after io_timeout_ms too and its transfer fails. On the
 * sending side, a cached connection unused for peer_idle_ms closes and its threads end;
 * the next kvt_connect dials again, and frees the entries of receivers that idled out.
 * Raw sockets on loopback play the peers. */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <dirent.h>
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

/* One 40-byte frame header as tcp.c writes it: magic, type, id, three words. */
static int send_frame(int fd, uint32_t type, uint64_t id, uint64_t w0, uint64_t w1, uint64_t w2)
{
    unsigned char b[40];
    uint32_t u32[2] = {htole32(0x3154564bu), htole32(type)};
    uint64_t u64[4] = {htole64(id), htole64(w0), htole64(w1), htole64(w2)};
    memcpy(b, u32, 8);
    memcpy(b + 8, u64, 32);
    return send(fd, b, sizeof b, 0) == (ssize_t)sizeof b ? 0 : -1;
}

enum { F_HELLO = 1, F_BEGIN = 2, F_WRITE = 3 };

/* A peer that greets and idles (kept), begins a transfer and idles again before its
 * first byte (kept too: a prefill worker begins a transfer when the prompt is queued
 * and sends nothing until its prefill starts), then sends a whole run and stalls
 * between frames (stall_in_run 0) or part of a run and stalls inside it (1). The
 * connection must close within a few io_timeouts and the transfer fail. */
static void stalled_transfer(kvt_transport *t, kvt_region *r, int port, int stall_in_run)
{
    eng_error err;
    char desc[KVT_DESCRIPTOR_MAX + 1] = {0};
    size_t dl;
    REQUIRE(kvt_descriptor(t, r, desc, KVT_DESCRIPTOR_MAX, &dl, &err) == 0, "%s", err.msg);
    unsigned long long instance, region_id;
    REQUIRE(sscanf(desc, "kvt1 tcp %*s %*d %llx %llu", &instance, &region_id) == 2, "%s", desc);
    uint64_t id;
    REQUIRE(kvt_expect(t, r, 0, &id, &err) == 0, "%s", err.msg);

    int fd = connect_to(port);
    REQUIRE(fd >= 0 && send_frame(fd, F_HELLO, 0, instance, 1, 0) == 0);
    usleep(1200 * 1000); /* over twice io_timeout_ms, idle with nothing begun */
    char b[1];
    errno = 0;
    CHECK(recv(fd, b, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN, "an idle greeted connection was closed");
    REQUIRE(send_frame(fd, F_BEGIN, id, region_id, 0, 0) == 0);
    usleep(1200 * 1000); /* begun, no byte yet: queued at the sender */
    errno = 0;
    CHECK(recv(fd, b, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN,
          "a connection whose transfer had no byte yet was closed");
    CHECK(kvt_wait(t, id, 0, &err) == KVT_PENDING, "a begun transfer without bytes failed: %s", err.msg);
    static char payload[4096];
    size_t n = stall_in_run ? 100 : sizeof payload;
    REQUIRE(send_frame(fd, F_WRITE, id, 0, sizeof payload, 0) == 0);
    REQUIRE(send(fd, payload, n, 0) == (ssize_t)n);
    double t0 = eng_now_s();
    CHECK(closed_within(fd, 5000), "a peer stalled %s was kept", stall_in_run ? "inside a run" : "after a run");
    double dt = eng_now_s() - t0;
    CHECK(dt < 2.0, "closed after %.1f s", dt);
    CHECK(kvt_wait(t, id, 2000, &err) == KVT_FAILED, "the stalled transfer did not fail");
    printf("peer stalled %s: cut off after %.2f s; transfer: %s\n", stall_in_run ? "inside a run" : "after a run", dt,
           err.msg);
    CHECK(strstr(err.msg, "mid-transfer") != NULL, "%s", err.msg);
    kvt_forget(t, id);
    close(fd);
}

/* The threads this process runs now. */
static int thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

/* A sender's cached connection to r idles out: its threads end, and the peer works again
 * after kvt_connect. */
static void idle_peer_expires(kvt_transport *rt, kvt_region *r)
{
    eng_error err;
    char desc[KVT_DESCRIPTOR_MAX];
    size_t dl;
    REQUIRE(kvt_descriptor(rt, r, desc, sizeof desc, &dl, &err) == 0, "%s", err.msg);
    kvt_tcp_options o = {.bind_host = "127.0.0.1", .peer_idle_ms = 300};
    kvt_transport *st = NULL;
    static char src[4096];
    kvt_region *sr = NULL;
    REQUIRE(kvt_tcp_create(&o, &st, &err) == 0 && kvt_register(st, src, sizeof src, &sr, &err) == 0, "%s", err.msg);
    int base = thread_count();
    for (int round = 0; round < 2; round++) {
        kvt_peer *p = NULL;
        uint64_t id;
        kvt_send *s = NULL;
        REQUIRE(kvt_connect(st, desc, dl, &p, &err) == 0 && kvt_expect(rt, r, sizeof src, &id, &err) == 0, "%s",
                err.msg);
        CHECK(thread_count() > base, "no sender threads after kvt_connect");
        CHECK(kvt_send_begin(p, sr, id, NULL, &s, &err) == 0 && kvt_send_write(s, 0, 0, sizeof src, &err) == 0 &&
                  kvt_send_finish(s, 5000, &err) == 0,
              "round %d: %s", round, err.msg);
        kvt_forget(rt, id);
        double t0 = eng_now_s();
        while (thread_count() > base && eng_now_s() - t0 < 5)
            usleep(20000);
        CHECK(thread_count() == base, "round %d: the idle peer's threads still run after %.1f s", round,
              eng_now_s() - t0);
        printf("idle sender connection closed %.2f s after its last transfer (peer_idle_ms 300)\n", eng_now_s() - t0);
    }
    REQUIRE(kvt_deregister(st, sr, &err) == 0, "%s", err.msg);
    kvt_destroy(st);
}

/* A sender that sent to three receivers (three descriptors: as many decode worker
 * restarts) keeps an entry for each only while it may be used: once their connections
 * closed for idling and peer_idle_ms passed, the next kvt_connect frees them, and the
 * cache holds just the receiver in use (it used to keep every entry until kvt_destroy). */
static void idle_peers_freed(void)
{
    eng_error err;
    kvt_tcp_options ro = {.bind_host = "127.0.0.1"}; /* main's receiver admits only 2 connections */
    kvt_transport *rt = NULL;
    REQUIRE(kvt_tcp_create(&ro, &rt, &err) == 0, "%s", err.msg);
    enum { N = 3 };
    static char dst[N][4096], src[4096];
    kvt_region *r[N];
    char desc[N][KVT_DESCRIPTOR_MAX];
    size_t dl[N];
    kvt_tcp_options o = {.bind_host = "127.0.0.1", .peer_idle_ms = 300};
    kvt_transport *st = NULL;
    kvt_region *sr = NULL;
    REQUIRE(kvt_tcp_create(&o, &st, &err) == 0 && kvt_register(st, src, sizeof src, &sr, &err) == 0, "%s", err.msg);
    int base = thread_count();
    for (int i = 0; i < N; i++) {
        kvt_peer *p = NULL;
        kvt_send *s = NULL;
        uint64_t id;
        REQUIRE(kvt_register(rt, dst[i], sizeof dst[i], &r[i], &err) == 0 &&
                    kvt_descriptor(rt, r[i], desc[i], sizeof desc[i], &dl[i], &err) == 0 &&
                    kvt_expect(rt, r[i], sizeof src, &id, &err) == 0 && kvt_connect(st, desc[i], dl[i], &p, &err) == 0,
                "%s", err.msg);
        CHECK(kvt_send_begin(p, sr, id, NULL, &s, &err) == 0 && kvt_send_write(s, 0, 0, sizeof src, &err) == 0 &&
                  kvt_send_finish(s, 5000, &err) == 0,
              "receiver %d: %s", i, err.msg);
        kvt_forget(rt, id);
    }
    kvt_stats ks;
    kvt_get_stats(st, &ks);
    CHECK(ks.peers == N, "%llu peer entries after sending to %d receivers", (unsigned long long)ks.peers, N);
    double t0 = eng_now_s();
    while (thread_count() > base && eng_now_s() - t0 < 5)
        usleep(20000);
    usleep(100 * 1000); /* past peer_idle_ms since each was handed out, too */
    kvt_peer *p = NULL;
    REQUIRE(kvt_connect(st, desc[0], dl[0], &p, &err) == 0, "%s", err.msg);
    kvt_get_stats(st, &ks);
    CHECK(ks.peers == 1, "%llu peer entries after the others idled out (want 1: the one in use)",
          (unsigned long long)ks.peers);
    printf("sender peer entries: %d after sending to %d receivers, %llu once they idled out and kvt_connect ran\n", N,
           N, (unsigned long long)ks.peers);
    REQUIRE(kvt_deregister(st, sr, &err) == 0, "%s", err.msg);
    kvt_destroy(st);
    for (int i = 0; i < N; i++)
        REQUIRE(kvt_deregister(rt, r[i], &err) == 0, "%s", err.msg);
    kvt_destroy(rt);
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

    size_t pool_bytes = 1 << 16;
    void *pool = calloc(1, pool_bytes);
    kvt_region *r = NULL;
    REQUIRE(pool && kvt_register(t, pool, pool_bytes, &r, &err) == 0, "%s", err.msg);
    stalled_transfer(t, r, port, 0);
    stalled_transfer(t, r, port, 1);
    idle_peer_expires(t, r);
    idle_peers_freed();
    REQUIRE(kvt_deregister(t, r, &err) == 0, "%s", err.msg);
    free(pool);
    kvt_destroy(t);
    return check_summary();
}

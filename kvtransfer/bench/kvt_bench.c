/* kvt_bench.c: KV transfer throughput over TCP against a plain loopback socket.
 *
 * Two processes (fork): the child receives, the parent sends. For each run size the same
 * total is moved twice: once as raw send()/recv() on one TCP socket into a buffer (the
 * floor any TCP transport pays), once through kvtransfer (frame headers, XXH3 on both
 * sides, direct receive into the registered region, verdict round trip). Prints GB/s per
 * run size, and how much of a transfer's time the caller spent inside kvt_send_write
 * (the rest is free for computing the next layer). A measurement, not a test: it never
 * fails on a slow machine.
 *
 *   kvt_bench [total_mib (default 256)] [repeats (default 3, best is reported)] */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "kvtransfer.h"

static const size_t RUN_SIZES[] = {4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20};
#define N_SIZES (sizeof RUN_SIZES / sizeof RUN_SIZES[0])

static void die(const char *what, const char *why)
{
    fprintf(stderr, "kvt_bench: %s: %s\n", what, why);
    exit(1);
}

static void put(int fd, const void *p, size_t n)
{
    if (write(fd, p, n) != (ssize_t)n)
        die("pipe", "write failed");
}

static void get(int fd, void *p, size_t n)
{
    char *c = p;
    while (n > 0) {
        ssize_t r = read(fd, c, n);
        if (r <= 0)
            die("pipe", "peer went away");
        c += r;
        n -= (size_t)r;
    }
}

static void sock_all(int fd, char *p, size_t n, int sending)
{
    while (n > 0) {
        ssize_t r = sending ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (r <= 0)
            die("baseline socket", "send/recv failed");
        p += r;
        n -= (size_t)r;
    }
}

static void receiver(int to, size_t total, int repeats)
{
    eng_error err;
    kvt_transport *t;
    kvt_region *r;
    char *mem = malloc(total);
    if (!mem)
        die("receiver", "out of memory");
    memset(mem, 0, total);
    if (kvt_tcp_create(NULL, &t, &err) < 0 || kvt_register(t, mem, total, &r, &err) < 0)
        die("receiver", err.msg);
    char desc[KVT_DESCRIPTOR_MAX];
    size_t dlen;
    if (kvt_descriptor(t, r, desc, sizeof desc, &dlen, &err) < 0)
        die("receiver", err.msg);

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 1) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0)
        die("baseline", "cannot listen");
    int port = ntohs(sa.sin_port);
    put(to, &dlen, sizeof dlen);
    put(to, desc, dlen);
    put(to, &port, sizeof port);
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        die("baseline", "accept failed");

    for (size_t i = 0; i < N_SIZES * (size_t)repeats; i++) {
        sock_all(fd, mem, total, 0);
        char ack = 1;
        sock_all(fd, &ack, 1, 1);
        uint64_t id;
        if (kvt_expect(t, r, total, &id, &err) < 0)
            die("receiver", err.msg);
        put(to, &id, sizeof id);
        if (kvt_wait(t, id, 60000, &err) != KVT_OK)
            die("receiver", err.msg);
        kvt_forget(t, id);
    }
    close(fd);
    close(lfd);
    kvt_deregister(t, r, &err);
    kvt_destroy(t);
    free(mem);
}

int main(int argc, char **argv)
{
    size_t total = (size_t)(argc > 1 ? atoi(argv[1]) : 256) << 20;
    int repeats = argc > 2 ? atoi(argv[2]) : 3;
    if (total == 0 || repeats <= 0)
        die("usage", "kvt_bench [total_mib] [repeats]");
    signal(SIGPIPE, SIG_IGN);
    int p2c[2], c2p[2];
    if (pipe(p2c) < 0 || pipe(c2p) < 0)
        die("pipe", "cannot create");
    pid_t pid = fork();
    if (pid < 0)
        die("fork", "failed");
    if (pid == 0) {
        close(p2c[1]);
        close(c2p[0]);
        receiver(c2p[1], total, repeats);
        exit(0);
    }
    close(p2c[0]);
    close(c2p[1]);

    eng_error err;
    kvt_transport *t;
    kvt_region *r;
    char *mem = malloc(total);
    if (!mem)
        die("sender", "out of memory");
    for (size_t i = 0; i < total; i++)
        mem[i] = (char)(i * 131 + (i >> 12));
    if (kvt_tcp_create(NULL, &t, &err) < 0 || kvt_register(t, mem, total, &r, &err) < 0)
        die("sender", err.msg);
    char desc[KVT_DESCRIPTOR_MAX];
    size_t dlen;
    int port;
    get(c2p[0], &dlen, sizeof dlen);
    get(c2p[0], desc, dlen);
    get(c2p[0], &port, sizeof port);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("baseline", "cannot connect");
    kvt_peer *p;
    if (kvt_connect(t, desc, dlen, &p, &err) < 0)
        die("sender", err.msg);

    printf("KV transfer over TCP loopback, %zu MiB per measurement, best of %d\n", total >> 20, repeats);
    printf("%10s %14s %16s %7s %14s\n", "run size", "raw TCP GB/s", "kvtransfer GB/s", "ratio", "caller busy %");
    for (size_t si = 0; si < N_SIZES; si++) {
        size_t run = RUN_SIZES[si];
        double best_raw = 0, best_kvt = 0, best_caller = 0;
        for (int rep = 0; rep < repeats; rep++) {
            double t0 = eng_now_s();
            for (size_t off = 0; off < total; off += run)
                sock_all(fd, mem + off, run < total - off ? run : total - off, 1);
            char ack;
            sock_all(fd, &ack, 1, 0);
            double raw = total / (eng_now_s() - t0) / 1e9;

            uint64_t id;
            get(c2p[0], &id, sizeof id);
            kvt_send *s;
            t0 = eng_now_s();
            if (kvt_send_begin(p, r, id, NULL, &s, &err) < 0)
                die("sender", err.msg);
            for (size_t off = 0; off < total; off += run)
                if (kvt_send_write(s, off, off, run < total - off ? run : total - off, &err) < 0)
                    die("sender", err.msg);
            double queued = eng_now_s() - t0;
            if (kvt_send_finish(s, 60000, &err) < 0)
                die("sender", err.msg);
            double elapsed = eng_now_s() - t0;
            double kv = total / elapsed / 1e9;
            if (rep == 0 || queued / elapsed < best_caller)
                best_caller = queued / elapsed;
            if (raw > best_raw)
                best_raw = raw;
            if (kv > best_kvt)
                best_kvt = kv;
        }
        printf("%8zu K %14.2f %16.2f %7.2f %14.1f\n", run >> 10, best_raw, best_kvt, best_kvt / best_raw,
               100 * best_caller);
    }
    kvt_stats st;
    kvt_get_stats(t, &st);
    printf("sender counters: %llu transfers, %.1f MiB, %.3f s\n", (unsigned long long)st.sends_ok,
           st.bytes_sent / 1048576.0, st.send_seconds);
    close(fd);
    int status;
    waitpid(pid, &status, 0);
    kvt_deregister(t, r, &err);
    kvt_destroy(t);
    free(mem);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

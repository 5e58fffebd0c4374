/* rdma_bench.c: KV transfer throughput and latency by run size, for any transport.
 *
 * Two processes (forked before any transport exists): the child receives, the parent
 * sends; pipes carry the descriptor, transfer ids and the hello/reply, as gRPC does in a
 * cluster. For each run size:
 *   throughput: `total` bytes as runs of that size, written in reverse destination order
 *               so that no two runs coalesce (each is its own RDMA WRITE / TCP frame),
 *               begin -> verdict, best of `repeats`;
 *   latency:    one transfer of a single run, begin -> verified verdict, median of 20.
 * A measurement, not a test (nothing is asserted about speed).
 *
 *   rdma_bench tcp|rdma|auto [total_mib (default 64)] [repeats (default 3)] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "kvtransfer.h"

static const size_t RUN_SIZES[] = {4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20};
#define N_SIZES (sizeof RUN_SIZES / sizeof RUN_SIZES[0])
#define LAT_REPS 20

static void die(const char *what, const char *why)
{
    fprintf(stderr, "rdma_bench: %s: %s\n", what, why);
    exit(1);
}

static void put(int fd, const void *p, size_t n)
{
    uint32_t len = (uint32_t)n;
    if (write(fd, &len, 4) != 4 || (n && write(fd, p, n) != (ssize_t)n))
        die("pipe", "write failed");
}

static size_t get(int fd, void *p, size_t cap)
{
    uint32_t len;
    if (read(fd, &len, 4) != 4 || len > cap)
        die("pipe", "read failed");
    for (size_t got = 0; got < len;) {
        ssize_t r = read(fd, (char *)p + got, len - got);
        if (r <= 0)
            die("pipe", "read failed");
        got += (size_t)r;
    }
    return len;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Receiver: for every transfer the sender announces, expect it and report the id. */
static void receiver(const char *which, size_t total, int in, int out)
{
    eng_error err;
    kvt_transport *t;
    kvt_region *r;
    char *mem = malloc(total);
    if (!mem)
        die("malloc", "out of memory");
    memset(mem, 0, total);
    if (kvt_open(which, NULL, &t, &err) < 0 || kvt_register(t, mem, total, &r, &err) < 0)
        die("receiver", err.msg);
    char desc[KVT_DESCRIPTOR_MAX], hello[KVT_HELLO_MAX], reply[KVT_HELLO_MAX];
    size_t dlen;
    if (kvt_descriptor(t, r, desc, sizeof desc, &dlen, &err) < 0)
        die("descriptor", err.msg);
    put(out, desc, dlen);
    size_t hl = get(in, hello, sizeof hello), rl;
    if (kvt_accept_hello(t, hello, hl, reply, sizeof reply, &rl, &err) < 0)
        die("accept", err.msg);
    put(out, reply, rl);
    for (;;) {
        uint64_t bytes;
        if (get(in, &bytes, sizeof bytes) != sizeof bytes || bytes == 0)
            break;
        uint64_t id;
        if (kvt_expect(t, r, bytes, &id, &err) < 0)
            die("expect", err.msg);
        put(out, &id, sizeof id);
        if (kvt_wait(t, id, 120000, &err) != KVT_OK)
            die("wait", err.msg);
        kvt_forget(t, id);
    }
    kvt_deregister(t, r, &err);
    kvt_destroy(t);
    free(mem);
}

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "tcp";
    size_t total = (size_t)(argc > 2 ? atoi(argv[2]) : 64) << 20;
    int repeats = argc > 3 ? atoi(argv[3]) : 3;
    if (total == 0 || repeats < 1)
        die("usage", "rdma_bench tcp|rdma|auto [total_mib] [repeats]");
    int p2c[2], c2p[2];
    if (pipe(p2c) || pipe(c2p))
        die("pipe", "cannot create");
    pid_t pid = fork();
    if (pid == 0) {
        close(p2c[1]);
        close(c2p[0]);
        receiver(which, total, p2c[0], c2p[1]);
        _exit(0);
    }
    close(p2c[0]);
    close(c2p[1]);
    int in = c2p[0], out = p2c[1];

    eng_error err;
    kvt_transport *t;
    kvt_region *r;
    char *mem = malloc(total);
    if (!mem)
        die("malloc", "out of memory");
    for (size_t i = 0; i < total; i++)
        mem[i] = (char)(i * 131 + 7);
    if (kvt_open(which, NULL, &t, &err) < 0 || kvt_register(t, mem, total, &r, &err) < 0)
        die("sender", err.msg);
    char desc[KVT_DESCRIPTOR_MAX], hello[KVT_HELLO_MAX], reply[KVT_HELLO_MAX];
    size_t dlen = get(in, desc, sizeof desc);
    kvt_peer *p;
    if (kvt_connect(t, desc, dlen, &p, &err) < 0)
        die("connect", err.msg);
    size_t hl = kvt_peer_hello(p, hello, sizeof hello);
    put(out, hello, hl);
    size_t rl = get(in, reply, sizeof reply);
    if (kvt_peer_reply(p, reply, rl, &err) < 0)
        die("reply", err.msg);

    printf("transport: %s; %zu MiB per throughput run, best of %d; latency: median of %d\n", kvt_choice(t), total >> 20,
           repeats, LAT_REPS);
    printf("%10s %8s %14s %16s\n", "run size", "runs", "MB/s", "latency (us)");
    for (size_t si = 0; si < N_SIZES; si++) {
        size_t run = RUN_SIZES[si], n = total / run;
        if (n == 0)
            continue;
        double best = 0, lat[LAT_REPS];
        for (int rep = 0; rep < repeats; rep++) {
            uint64_t bytes = (uint64_t)n * run, id;
            put(out, &bytes, sizeof bytes);
            get(in, &id, sizeof id);
            kvt_send *s;
            double t0 = eng_now_s();
            if (kvt_send_begin(p, r, id, NULL, &s, &err) < 0)
                die("begin", err.msg);
            for (size_t i = 0; i < n; i++) /* reverse order at the destination: no coalescing */
                if (kvt_send_write(s, i * run, (n - 1 - i) * run, run, &err) < 0)
                    die("write", err.msg);
            if (kvt_send_finish(s, 120000, &err) < 0)
                die("finish", err.msg);
            double mbs = bytes / (eng_now_s() - t0) / 1e6;
            if (mbs > best)
                best = mbs;
        }
        for (int k = 0; k < LAT_REPS; k++) {
            uint64_t bytes = run, id;
            put(out, &bytes, sizeof bytes);
            get(in, &id, sizeof id);
            kvt_send *s;
            double t0 = eng_now_s();
            if (kvt_send_begin(p, r, id, NULL, &s, &err) < 0 || kvt_send_write(s, 0, 0, run, &err) < 0 ||
                kvt_send_finish(s, 120000, &err) < 0)
                die("latency transfer", err.msg);
            lat[k] = (eng_now_s() - t0) * 1e6;
        }
        qsort(lat, LAT_REPS, sizeof *lat, cmp_d);
        printf("%8zu K %8zu %14.1f %16.0f\n", run >> 10, n, best, lat[LAT_REPS / 2]);
    }
    uint64_t zero = 0;
    put(out, &zero, sizeof zero);
    int status;
    waitpid(pid, &status, 0);
    kvt_deregister(t, r, &err);
    kvt_destroy(t);
    free(mem);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

/* membw.c: measures how fast this machine reads memory with N threads.
 *
 * Decode speed is bounded by streaming every weight once per token, so the
 * benchmark needs the machine's own read bandwidth to turn tokens/s into a
 * fraction of the roofline. Each thread sums its contiguous slice of a buffer much
 * larger than the caches (the sum is printed so the reads cannot be optimised
 * away); the best of several passes is reported as one JSON line.
 *
 * usage: membw [--threads N] [--mib SIZE] [--passes P] */
#include "common/clock.h"
#include "kernels/threadpool.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct job {
    const uint64_t *buf;
    size_t n_words;
    int n_tasks;
    uint64_t sums[64];
} job;

static void read_slice(void *ctx, int task)
{
    job *j = ctx;
    size_t per = j->n_words / (size_t)j->n_tasks;
    const uint64_t *p = j->buf + per * (size_t)task;
    /* Eight independent chains keep enough loads in flight to saturate DRAM. */
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    for (size_t i = 0; i + 8 <= per; i += 8) {
        a0 += p[i];
        a1 += p[i + 1];
        a2 += p[i + 2];
        a3 += p[i + 3];
        a4 += p[i + 4];
        a5 += p[i + 5];
        a6 += p[i + 6];
        a7 += p[i + 7];
    }
    j->sums[task] = a0 ^ a1 ^ a2 ^ a3 ^ a4 ^ a5 ^ a6 ^ a7;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    int threads = 2, mib = 1024, passes = 5;
    for (int i = 1; i < argc; i += 2) { /* --name value pairs */
        int *dst = NULL, lo = 1, hi = 64;
        if (strcmp(argv[i], "--threads") == 0)
            dst = &threads;
        else if (strcmp(argv[i], "--mib") == 0)
            dst = &mib, lo = 64, hi = 1 << 20;
        else if (strcmp(argv[i], "--passes") == 0)
            dst = &passes, hi = 1000;
        if (!dst || i + 1 >= argc || parse_int(argv[i + 1], lo, hi, dst) != 0) {
            fprintf(stderr, "usage: membw [--threads 1..64] [--mib 64..] [--passes 1..1000]\n");
            return 2;
        }
    }
    size_t bytes = (size_t)mib << 20;
    uint64_t *buf = malloc(bytes);
    eng_pool *pool = eng_pool_create(threads);
    if (!buf || !pool) {
        fprintf(stderr, "membw: cannot allocate %d MiB or %d threads\n", mib, threads);
        return 1;
    }
    /* Touch every page (and give it non-zero content) before timing. */
    for (size_t i = 0; i < bytes / 8; i++)
        buf[i] = i * 0x9e3779b97f4a7c15ull;
    job j = { .buf = buf, .n_words = bytes / 8, .n_tasks = threads };
    double best = 1e30;
    uint64_t check = 0;
    for (int p = 0; p < passes + 1; p++) {
        double t0 = eng_now_s();
        eng_pool_run(pool, read_slice, &j, threads);
        double dt = eng_now_s() - t0;
        if (p > 0 && dt < best) /* the first pass warms up TLBs and clocks */
            best = dt;
        for (int t = 0; t < threads; t++)
            check += j.sums[t];
    }
    size_t read = (j.n_words / (size_t)threads) * (size_t)threads * 8;
    printf("{\"read_gb_s\": %.2f, \"threads\": %d, \"bytes\": %zu, \"passes\": %d, \"checksum\": %llu}\n",
           read / best / 1e9, threads, read, passes, (unsigned long long)(check & 0xffff));
    eng_pool_destroy(pool);
    free(buf);
    return 0;
}

/* membw.c: measures how fast this machine reads memory with N threads.
 *
 * Decode speed is bounded by streaming every weight once per token, so the
 * benchmark needs the machine's own read bandwidth to turn tokens/s into a
 * fraction of the roofline. Each thread sums its contiguous slice of a buffer much
 * larger than the caches (the sum is printed so the reads cannot be optimised
 * away); the best of several passes is reported as one JSON line.
 *
 * usage: membw [--threads N] [--mib SIZE] [--passes P] */
#include "cli_args.h"
#include "common/clock.h"
#include "kernels/threadpool.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

typedef struct membw_args {
    int threads, mib, passes;
} membw_args;

static const cli_opt OPTS[] = {
    CLI_INT_OPT(membw_args, threads, "--threads", "N", 1, 64, "2", "reading threads"),
    CLI_INT_OPT(membw_args, mib, "--mib", "SIZE", 64, 1 << 20, "1024", "buffer size in MiB (well past the caches)"),
    CLI_INT_OPT(membw_args, passes, "--passes", "P", 1, 1000, "5", "timed passes; the best is reported"),
};

static const cli_command CMD = {
    .name = "membw",
    .usage = "[--threads N] [--mib SIZE] [--passes P]",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
};

int main(int argc, char **argv)
{
    membw_args a = {0};
    int exit_status = cli_parse(&CMD, argc, argv, &a);
    if (exit_status != CLI_RUN)
        return exit_status;
    int threads = a.threads, mib = a.mib, passes = a.passes;
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
    job j = {.buf = buf, .n_words = bytes / 8, .n_tasks = threads};
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

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
#include "cli_read_pass.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

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
    uint64_t *buf = read_pass_buffer(bytes);
    eng_pool *pool = eng_pool_create(threads);
    if (!buf || !pool) {
        fprintf(stderr, "membw: cannot allocate %d MiB or %d threads\n", mib, threads);
        return 1;
    }
    double best = 1e30;
    uint64_t check = 0;
    for (int p = 0; p < passes + 1; p++) {
        double dt = read_pass_s(pool, buf, bytes, &check);
        if (p > 0 && dt < best) /* the first pass warms up TLBs and clocks */
            best = dt;
    }
    printf("{\"read_gb_s\": %.2f, \"threads\": %d, \"bytes\": %zu, \"passes\": %d, \"checksum\": %llu}\n",
           bytes / best / 1e9, threads, bytes, passes, (unsigned long long)(check & 0xffff));
    eng_pool_destroy(pool);
    free(buf);
    return 0;
}

/* cli_read_pass.c: see cli_read_pass.h. */
#include "cli_read_pass.h"

#include <stdlib.h>

#include "common/clock.h"

typedef struct read_job {
    const uint64_t *buf;
    size_t words_per_task;
    uint64_t sums[64];
} read_job;

#define MAX_TASKS 64

static void read_slice(void *ctx, int task)
{
    read_job *j = ctx;
    const uint64_t *p = j->buf + j->words_per_task * (size_t)task;
    /* Eight independent chains keep enough loads in flight to saturate DRAM. */
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    for (size_t i = 0; i + 8 <= j->words_per_task; i += 8) {
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

double read_pass_s(eng_pool *pool, const uint64_t *buf, size_t bytes, uint64_t *checksum)
{
    int tasks = eng_pool_threads(pool);
    if (tasks > MAX_TASKS)
        tasks = MAX_TASKS;
    read_job j = {.buf = buf, .words_per_task = bytes / 8 / (size_t)tasks / 8 * 8};
    double t0 = eng_now_s();
    eng_pool_run(pool, read_slice, &j, tasks);
    double dt = eng_now_s() - t0;
    for (int t = 0; t < tasks; t++)
        *checksum += j.sums[t];
    return dt;
}

uint64_t *read_pass_buffer(size_t bytes)
{
    uint64_t *buf = malloc(bytes < 8 ? 8 : bytes);
    if (buf)
        for (size_t i = 0; i < bytes / 8; i++)
            buf[i] = i * 0x9e3779b97f4a7c15ull;
    return buf;
}

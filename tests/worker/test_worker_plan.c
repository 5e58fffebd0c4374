/* test_worker_plan.c: the worker scheduler's pure decisions (worker/plan.c), no model
 * or network: block runs for the KV push, which blocks a chunk finishes, how a step's
 * token budget is shared, when a sequence stops, the default pool size, role names. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "worker.h"

static int failures;
#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond)) {                                                      \
            failures++;                                                     \
            fprintf(stderr, "%s:%d: FAIL %s\n", __FILE__, __LINE__, #cond); \
        }                                                                   \
    } while (0)

static void test_runs(void)
{
    wrk_run r[8];
    /* consecutive on both sides -> one run */
    int32_t s1[] = {4, 5, 6}, d1[] = {10, 11, 12};
    CHECK(wrk_block_runs(s1, d1, 3, r) == 1 && r[0].src == 4 && r[0].dst == 10 && r[0].n == 3);
    /* consecutive on one side only -> split */
    int32_t s2[] = {4, 5, 6, 7}, d2[] = {10, 11, 20, 21};
    CHECK(wrk_block_runs(s2, d2, 4, r) == 2 && r[0].n == 2 && r[1].src == 6 && r[1].dst == 20 && r[1].n == 2);
    int32_t s3[] = {9, 3, 4}, d3[] = {1, 2, 3};
    CHECK(wrk_block_runs(s3, d3, 3, r) == 2 && r[0].n == 1 && r[1].src == 3 && r[1].n == 2);
    /* descending ids never merge */
    int32_t s4[] = {5, 4}, d4[] = {5, 4};
    CHECK(wrk_block_runs(s4, d4, 2, r) == 2);
    CHECK(wrk_block_runs(s4, d4, 0, r) == 0);
    /* the runs cover every pair exactly once */
    int32_t s5[64], d5[64];
    unsigned x = 7;
    for (int i = 0; i < 64; i++) {
        x = x * 1103515245u + 12345u;
        s5[i] = i + (int)((x >> 16) % 3 == 0) * 100;
        d5[i] = i * ((x >> 20) % 2 ? 1 : 2);
    }
    wrk_run big[64];
    int n = wrk_block_runs(s5, d5, 64, big), k = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < big[i].n; j++, k++)
            CHECK(s5[k] == big[i].src + j && d5[k] == big[i].dst + j);
    CHECK(k == 64);
}

static void test_blocks_complete(void)
{
    CHECK(wrk_blocks_complete(0, 40, 16) == 0);
    CHECK(wrk_blocks_complete(15, 40, 16) == 0);
    CHECK(wrk_blocks_complete(16, 40, 16) == 1);
    CHECK(wrk_blocks_complete(33, 40, 16) == 2);
    CHECK(wrk_blocks_complete(40, 40, 16) == 3); /* the partial last block goes at the end */
    CHECK(wrk_blocks_complete(32, 32, 16) == 2);
    CHECK(wrk_blocks_complete(1, 1, 16) == 1);
}

static void test_chunks(void)
{
    int rem[] = {100, 30, 5}, ch[3];
    CHECK(wrk_plan_chunks(rem, 3, 64, ch) == 64 && ch[0] == 64 && ch[1] == 0 && ch[2] == 0);
    CHECK(wrk_plan_chunks(rem, 3, 200, ch) == 135 && ch[0] == 100 && ch[1] == 30 && ch[2] == 5);
    CHECK(wrk_plan_chunks(rem, 3, 120, ch) == 120 && ch[0] == 100 && ch[1] == 20 && ch[2] == 0);
    CHECK(wrk_plan_chunks(rem, 3, 0, ch) == 0 && ch[0] == 0);
    /* a long prompt finishes over several steps; the tokens add up */
    int left = 1500, steps = 0;
    while (left > 0) {
        int c;
        wrk_plan_chunks(&left, 1, 2048 - 7, &c);
        left -= c, steps++;
    }
    CHECK(steps == 1 && left == 0);
    left = 1500, steps = 0;
    while (left > 0) {
        int c;
        wrk_plan_chunks(&left, 1, 512, &c);
        left -= c, steps++;
    }
    CHECK(steps == 3);
}

static void test_limits(void)
{
    CHECK(wrk_cap_tokens(10, 20, 4096) == 30);
    CHECK(wrk_cap_tokens(4000, 200, 4096) == 4096);
    CHECK(wrk_cap_tokens(10, 2000000000, 4096) == 4096);
    int32_t stop[] = {151645, 151643}; /* Qwen3's <|im_end|>, <|endoftext|> (generation_config.json) */
    CHECK(wrk_finish_reason(151643, stop, 2, 10, 1, 30) == 1);
    CHECK(wrk_finish_reason(5, stop, 2, 10, 1, 30) == 0);
    CHECK(wrk_finish_reason(5, stop, 2, 10, 20, 30) == 2);      /* max_tokens */
    CHECK(wrk_finish_reason(5, stop, 2, 4090, 6, 4096) == 2);   /* context end */
    CHECK(wrk_finish_reason(151645, stop, 2, 10, 20, 30) == 1); /* stop wins over length */
    CHECK(wrk_finish_reason(5, NULL, 0, 10, 1, 11) == 2);       /* max_tokens 1 */
}

static void test_pool_size(void)
{
    /* fits the budget */
    CHECK(wrk_default_kv_blocks(1 << 20, (size_t)100 << 20, 64, 40960, 16) == 100);
    /* at most max_running full contexts */
    CHECK(wrk_default_kv_blocks(1024, (size_t)1 << 40, 2, 4096, 16) == 2 * 256);
    /* at least 64 */
    CHECK(wrk_default_kv_blocks(1 << 20, 1 << 20, 64, 40960, 16) == 64);
}

static void test_admission(void)
{
    /* the prompt and the next token, never max_tokens */
    CHECK(wrk_admit_blocks(1, 16) == 1);
    CHECK(wrk_admit_blocks(15, 16) == 1);
    CHECK(wrk_admit_blocks(16, 16) == 2); /* the next token opens a block */
    CHECK(wrk_admit_blocks(100, 16) == 7);
    /* an empty pool takes a request that fills it exactly */
    CHECK(wrk_admit(12, 12, 12, 0) == WRK_ADMIT_OK);
    /* one free block is kept per admitted sequence */
    CHECK(wrk_admit(12, 5, 3, 2) == WRK_ADMIT_OK);
    CHECK(wrk_admit(12, 5, 3, 3) == WRK_ADMIT_WAIT);
    CHECK(wrk_admit(12, 2, 3, 0) == WRK_ADMIT_WAIT);
    /* more than the whole pool: never, however free it is */
    CHECK(wrk_admit(12, 12, 13, 0) == WRK_ADMIT_NEVER);
}

static void test_roles(void)
{
    wrk_role r;
    CHECK(wrk_role_parse("prefill", &r) == 0 && r == WRK_ROLE_PREFILL);
    CHECK(wrk_role_parse("decode", &r) == 0 && r == WRK_ROLE_DECODE);
    CHECK(wrk_role_parse("both", &r) == 0 && r == WRK_ROLE_BOTH);
    CHECK(wrk_role_parse("Decode", &r) < 0 && wrk_role_parse("", &r) < 0);
    CHECK(!strcmp(wrk_role_name(WRK_ROLE_BOTH), "both"));
}

int main(void)
{
    test_runs();
    test_blocks_complete();
    test_chunks();
    test_limits();
    test_pool_size();
    test_admission();
    test_roles();
    if (failures)
        fprintf(stderr, "%d checks failed\n", failures);
    return failures ? 1 : 0;
}

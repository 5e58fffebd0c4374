/* test_batch_invariance.c: a row's eng_matmul result is bitwise the same alone
 * and inside a batch of any size 1..300, at any position in it, with 1 or several
 * threads, for every kernel variant this CPU runs and every weight dtype (FP8
 * with its block scales included).
 *
 * Expert parallelism mixes tokens from several ranks in one expert matmul, and
 * migration / prefix caching reuse K/V computed in a prefill chunk of another
 * size; both are exact only if this holds.
 *
 * Each batch of size B holds rows of a fixed pool of 300, starting at a rotating
 * offset, so every pool row is checked at many positions and in many batch sizes
 * against its result computed alone (1 row, 1 thread). Two shapes: one with n_in
 * above every variant's input blocking and not a multiple of any vector width,
 * one with n_out wide enough to be split between threads. (Attention's results
 * depend on the positions only: test_kernels checks a cache cut into blocks of two
 * sizes, test_chunk_invariance whole forward passes.) */
#include "kernels/kernels_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A broken kernel fails row after row: stop after 20. */
#define CHECK_MAX_FAILURES 20
#include "check.h"

#define POOL_ROWS 300

#include "rnd.h"

static const char *const VARIANTS[] = {"portable", "avx2", "avx512"};

/* x_bf16: bf16 or FP8 weights taking their inputs rounded to bf16 (--matmul-dtype bf16). */
static void check_shape(eng_pool *pools[], int n_pools, eng_dtype dt, int x_bf16, int n_in, int n_out)
{
    float *xs = malloc((size_t)POOL_ROWS * n_in * sizeof(float));
    float *scratch = malloc((size_t)POOL_ROWS * n_in * sizeof(float));
    for (size_t i = 0; i < (size_t)POOL_ROWS * n_in; i++)
        xs[i] = rnd_f();
    eng_weight w = rnd_matrix_blocks(dt, n_out, n_in, x_bf16 ? ENG_FP8_BF16_BLOCK_ALIGN : RND_FP8_BLOCK_IN);
    w.x_bf16 = x_bf16;
    const char *mode = x_bf16 ? (dt == ENG_DT_F8E4M3 ? "f8e4m3 x bf16" : "bf16 x bf16") : eng_dtype_name(dt);
    float *alone = malloc((size_t)POOL_ROWS * n_out * sizeof(float));
    float *x = malloc((size_t)POOL_ROWS * n_in * sizeof(float));
    float *y = malloc((size_t)POOL_ROWS * n_out * sizeof(float));
    for (size_t v = 0; v < sizeof VARIANTS / sizeof VARIANTS[0]; v++) {
        if (!eng_kernels_variant(VARIANTS[v]))
            continue;
        setenv("TANDEM_ISA", VARIANTS[v], 1);
        CHECK(strcmp(eng_kernels_init(), VARIANTS[v]) == 0, "TANDEM_ISA=%s not selected", VARIANTS[v]);
        for (int r = 0; r < POOL_ROWS; r++)
            eng_matmul_weight(NULL, alone + (size_t)r * n_out, xs + (size_t)r * n_in, scratch, &w, 1, n_in, n_out);
        int differ = 0;
        for (int p = 0; p < n_pools; p++)
            for (int B = 1; B <= POOL_ROWS; B++) {
                int start = (B * 37 + p * 101) % POOL_ROWS;
                for (int i = 0; i < B; i++)
                    memcpy(x + (size_t)i * n_in, xs + (size_t)((start + i) % POOL_ROWS) * n_in,
                           (size_t)n_in * sizeof(float));
                eng_matmul_weight(pools[p], y, x, scratch, &w, B, n_in, n_out);
                for (int i = 0; i < B; i++) {
                    int r = (start + i) % POOL_ROWS;
                    int same = memcmp(y + (size_t)i * n_out, alone + (size_t)r * n_out,
                                      (size_t)n_out * sizeof(float)) == 0;
                    differ += !same;
                    CHECK(same,
                          "%s %s n_in=%d n_out=%d threads=%d: row %d at position %d of a batch of %d "
                          "differs from the row alone",
                          VARIANTS[v], mode, n_in, n_out, eng_pool_threads(pools[p]), r, i, B);
                }
            }
        printf("%-8s %-11s n_in=%4d n_out=%3d: %d of %d batched rows differ from alone\n", VARIANTS[v], mode, n_in,
               n_out, differ, n_pools * POOL_ROWS * (POOL_ROWS + 1) / 2);
    }
    unsetenv("TANDEM_ISA");
    free(xs);
    free(scratch);
    rnd_matrix_free(&w);
    free(alone);
    free(x);
    free(y);
}

int main(void)
{
    eng_pool *pools[2] = {eng_pool_create(1), eng_pool_create(3)};
    CHECK(pools[0] && pools[1], "thread pools");
    if (!pools[0] || !pools[1])
        return check_summary();
    /* every dtype, then bf16 and FP8 weights on inputs rounded to bf16 */
    for (int d = 0; d <= ENG_DT_F8E4M3 + 2; d++) {
        eng_dtype dt = d == ENG_DT_F8E4M3 + 1 ? ENG_DT_BF16 : d > ENG_DT_F8E4M3 ? ENG_DT_F8E4M3 : (eng_dtype)d;
        /* n_in past an input block (1024 floats) and not a multiple of a vector; one output tile and a bit */
        check_shape(pools, 1, dt, d > ENG_DT_F8E4M3, 1100, 5);
        /* outputs split between threads (tasks of 16 rows): 1 and 3 threads */
        check_shape(pools, 2, dt, d > ENG_DT_F8E4M3, 77, 67);
    }
    eng_pool_destroy(pools[0]);
    eng_pool_destroy(pools[1]);
    return check_summary();
}

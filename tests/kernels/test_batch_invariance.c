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
 * one with n_out wide enough to be split between threads. eng_matmul over a
 * KV-cache block's keys in each cache dtype (f32, f16, bf16: how attention scores
 * them) must likewise give a key the same score whatever the number of keys in the
 * call, and eng_axpy_rows the same weighted sum of values however the rows are split
 * between calls. */
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

/* x_bf16: bf16 weights taking their inputs rounded to bf16 (--matmul-dtype bf16). */
static void check_shape(eng_pool *pools[], int n_pools, eng_dtype dt, int x_bf16, int n_in, int n_out)
{
    float *xs = malloc((size_t)POOL_ROWS * n_in * sizeof(float));
    float *scratch = malloc((size_t)POOL_ROWS * n_in * sizeof(float));
    for (size_t i = 0; i < (size_t)POOL_ROWS * n_in; i++)
        xs[i] = rnd_f();
    eng_weight w = rnd_matrix(dt, n_out, n_in);
    w.x_bf16 = x_bf16;
    const char *mode = x_bf16 ? "bf16 x bf16" : eng_dtype_name(dt);
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

/* Attention's weighted sums of values over a cache block (eng_axpy_rows, rows in the
 * cache's dtype): the rows of a context split between calls anywhere (a block
 * boundary, which moves with the chunking), and heads summed together or alone,
 * must give the bits of one call. */
static void check_value_rows(eng_dtype dt)
{
    enum { DIM = 133, ROWS = 21, HEADS = 3 };
    float p[HEADS][ROWS], whole[HEADS][DIM], split[HEADS][DIM], alone[DIM];
    for (int h = 0; h < HEADS; h++)
        for (int i = 0; i < ROWS; i++)
            p[h][i] = rnd_f();
    void *v = rnd_weights(dt, (size_t)ROWS * DIM);
    size_t row = (size_t)DIM * eng_dtype_size(dt);
    for (size_t vi = 0; vi < sizeof VARIANTS / sizeof VARIANTS[0]; vi++) {
        const eng_kernel_impl *impl = eng_kernels_variant(VARIANTS[vi]);
        if (!impl)
            continue;
        memset(whole, 0, sizeof whole);
        impl->axpy_rows(&whole[0][0], HEADS, &p[0][0], ROWS, v, dt, ROWS, DIM, DIM);
        for (int h = 0; h < HEADS; h++) {
            memset(alone, 0, sizeof alone);
            impl->axpy_rows(alone, 1, p[h], ROWS, v, dt, ROWS, DIM, DIM);
            CHECK(memcmp(alone, whole[h], sizeof alone) == 0, "%s %s head %d alone differs from %d heads together",
                  VARIANTS[vi], eng_dtype_name(dt), h, HEADS);
        }
        for (int cut = 0; cut <= ROWS; cut++) {
            memset(split, 0, sizeof split);
            impl->axpy_rows(&split[0][0], HEADS, &p[0][0], ROWS, v, dt, cut, DIM, DIM);
            impl->axpy_rows(&split[0][0], HEADS, &p[0][cut], ROWS, (const char *)v + cut * row, dt, ROWS - cut, DIM,
                            DIM);
            CHECK(memcmp(split, whole, sizeof whole) == 0, "%s %s values split at row %d differ from one call",
                  VARIANTS[vi], eng_dtype_name(dt), cut);
        }
    }
    free(v);
}

/* Attention scores over a cache block: one query against the block's keys as the
 * rows of a matrix in the cache's dtype (eng_matmul, n_out = the keys in the call).
 * A key's score must not depend on how many keys share the call, or a position's
 * attention would differ between a prefill chunk and a decode step. */
static void check_key_scores(eng_dtype dt)
{
    enum { DIM = 133, KEYS = 21 };
    float q[DIM], alone[KEYS], out[KEYS];
    for (int i = 0; i < DIM; i++)
        q[i] = rnd_f();
    eng_weight keys = rnd_matrix(dt, KEYS, DIM);
    size_t row = (size_t)DIM * eng_dtype_size(dt);
    for (size_t v = 0; v < sizeof VARIANTS / sizeof VARIANTS[0]; v++) {
        if (!eng_kernels_variant(VARIANTS[v]))
            continue;
        setenv("TANDEM_ISA", VARIANTS[v], 1);
        CHECK(strcmp(eng_kernels_init(), VARIANTS[v]) == 0, "TANDEM_ISA=%s not selected", VARIANTS[v]);
        const unsigned char *k = keys.w;
        for (int j = 0; j < KEYS; j++)
            eng_matmul(NULL, alone + j, q, k + j * row, dt, 1, DIM, 1);
        for (int first = 0; first < KEYS; first++)
            for (int n = 1; first + n <= KEYS; n++) {
                eng_matmul(NULL, out, q, k + first * row, dt, 1, DIM, n);
                CHECK(memcmp(out, alone + first, (size_t)n * sizeof(float)) == 0,
                      "%s %s keys %d..%d scored together differ from alone", VARIANTS[v], eng_dtype_name(dt), first,
                      first + n - 1);
            }
    }
    unsetenv("TANDEM_ISA");
    rnd_matrix_free(&keys);
}

int main(void)
{
    check_value_rows(ENG_DT_F32);
    check_value_rows(ENG_DT_F16);
    check_value_rows(ENG_DT_BF16);
    check_key_scores(ENG_DT_F32);
    check_key_scores(ENG_DT_F16);
    check_key_scores(ENG_DT_BF16);
    eng_pool *pools[2] = {eng_pool_create(1), eng_pool_create(3)};
    CHECK(pools[0] && pools[1], "thread pools");
    if (!pools[0] || !pools[1])
        return check_summary();
    /* every dtype, then bf16 weights on inputs rounded to bf16 */
    for (int d = 0; d <= ENG_DT_F8E4M3 + 1; d++) {
        eng_dtype dt = d > ENG_DT_F8E4M3 ? ENG_DT_BF16 : (eng_dtype)d;
        /* n_in past an input block (1024 floats) and not a multiple of a vector; one output tile and a bit */
        check_shape(pools, 1, dt, d > ENG_DT_F8E4M3, 1100, 5);
        /* outputs split between threads (tasks of 16 rows): 1 and 3 threads */
        check_shape(pools, 2, dt, d > ENG_DT_F8E4M3, 77, 67);
    }
    eng_pool_destroy(pools[0]);
    eng_pool_destroy(pools[1]);
    return check_summary();
}

/* test_kernels.c: every kernel variant this CPU can run, against a naive
 * double-precision reference and against each other.
 *
 * Covers all weight dtypes, sizes that are not multiples of any vector width,
 * 1..70 tokens and 1..3 threads, plus two properties the engine relies on: a
 * matmul's result does not depend on the thread count, nor on which other tokens
 * share the batch (bitwise). */
#include "kernels/kernels_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A broken kernel fails element after element: stop after 20. */
#define CHECK_MAX_FAILURES 20
#include "check.h"

#include "rnd.h"

/* Independent decoders, written from the format definitions. */
static double ref_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static double ref_f16(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0)
        v = ldexp(m / 1024.0, -14);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexp(1.0 + m / 1024.0, e - 15);
    return s ? -v : v;
}

static double ref_e4m3(uint8_t b) /* e4m3fn: bias 7, subnormals below 2^-6, no infinities */
{
    int e = (b >> 3) & 15, m = b & 7;
    double v = e == 0 ? ldexp(m / 8.0, -6) : ldexp(1.0 + m / 8.0, e - 7);
    return b & 0x80 ? -v : v;
}

static double ref_weight(const void *w, eng_dtype dt, size_t idx)
{
    switch (dt) {
    case ENG_DT_F32: return ((const float *)w)[idx];
    case ENG_DT_BF16: return ref_bf16(((const uint16_t *)w)[idx]);
    case ENG_DT_F16: return ref_f16(((const uint16_t *)w)[idx]);
    case ENG_DT_F8E4M3: return ref_e4m3(((const uint8_t *)w)[idx]);
    }
    return 0;
}

/* W[o][i] of a test matrix: FP8 as its e4m3 value times its block's scale. */
static double ref_matrix(const eng_weight *m, int n_in, int o, int i)
{
    double v = ref_weight(m->w, m->dt, (size_t)o * n_in + i);
    if (m->dt != ENG_DT_F8E4M3)
        return v;
    int blocks_in = (n_in + m->block_in - 1) / m->block_in;
    return v * m->scale[(o / m->block_out) * blocks_in + i / m->block_in];
}

static const char *const VARIANTS[] = {"portable", "avx2", "avx512"};
#define N_VARIANTS 3

static void use_variant(const char *name)
{
    setenv("TANDEM_ISA", name, 1);
    const char *got = eng_kernels_init();
    CHECK(strcmp(got, name) == 0, "TANDEM_ISA=%s selected %s", name, got);
}

/* ---- conversions ---- */

static void test_f16_all_values(void)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float got = eng_f16_to_f32((uint16_t)h);
        double want = ref_f16((uint16_t)h);
        if (isnan(want))
            CHECK(isnan(got), "f16 %04x: want NaN got %g", h, got);
        else
            CHECK((double)got == want, "f16 %04x: want %.9g got %.9g", h, want, got);
    }
}

static float widen16(uint16_t h, eng_dtype dt)
{
    float f;
    eng_to_f32(&f, &h, dt, 1);
    return f;
}

static uint16_t narrow16(float f, eng_dtype dt)
{
    uint16_t h;
    eng_from_f32(&h, &f, dt, 1);
    return h;
}

/* eng_from_f32 (how K/V enter a bf16 or f16 cache): every finite value comes back
 * as itself (both signs), a value between two neighbours goes to the nearer, a tie
 * to the even one (midpoints are exact in f32), past the largest to infinity; NaN
 * stays NaN. */
static void test_from_f32_rounding(eng_dtype dt, uint16_t max_finite, uint16_t inf, float overflow_tie)
{
    const char *name = eng_dtype_name(dt);
    for (uint32_t h = 0; h <= max_finite; h++) {
        float x = widen16((uint16_t)h, dt);
        CHECK(narrow16(x, dt) == h, "%s %04x does not come back as itself", name, h);
        CHECK(narrow16(-x, dt) == (h | 0x8000), "%s -%04x does not come back as itself", name, h);
        if (h == max_finite)
            break;
        float mid = (float)(((double)x + (double)widen16((uint16_t)(h + 1), dt)) / 2);
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        CHECK(narrow16(mid, dt) == even, "%s tie after %04x: want %04x got %04x", name, h, even, narrow16(mid, dt));
        CHECK(narrow16(nextafterf(mid, 0), dt) == h, "%s just below the tie after %04x", name, h);
        CHECK(narrow16(nextafterf(mid, INFINITY), dt) == h + 1, "%s just above the tie after %04x", name, h);
    }
    CHECK(narrow16(overflow_tie, dt) == inf, "%s: the tie past the largest", name);
    CHECK(narrow16(nextafterf(overflow_tie, 0), dt) == max_finite, "%s: just below the tie past the largest", name);
    CHECK(isnan(widen16(narrow16(NAN, dt), dt)), "%s: NaN", name);
    float three[3] = {1.0f, 2.0f, 3.0f}, back[3];
    eng_from_f32(back, three, ENG_DT_F32, 3);
    CHECK(memcmp(back, three, sizeof three) == 0, "f32: eng_from_f32 copies");
    /* eng_round_to (q before it meets the cache's K) is eng_from_f32 then eng_to_f32 */
    float xs[] = {0.1f, -1.0f / 3, 65519.0f, 1e-30f, -0.0f, 1e38f, nextafterf(1.0f, 2.0f), INFINITY};
    enum { NX = sizeof xs / sizeof xs[0] };
    float r[NX], f32[NX];
    memcpy(r, xs, sizeof xs);
    memcpy(f32, xs, sizeof xs);
    eng_round_to(dt, r, NX);
    eng_round_to(ENG_DT_F32, f32, NX);
    CHECK(memcmp(f32, xs, sizeof xs) == 0, "f32: eng_round_to leaves the values");
    for (int i = 0; i < NX; i++)
        CHECK(!memcmp(&r[i], &(float){widen16(narrow16(xs[i], dt), dt)}, sizeof(float)), "%s: eng_round_to(%g) = %g",
              name, (double)xs[i], (double)r[i]);
}

/* Every e4m3 code but the NaNs, alone and scaled (eng_e4m3_scaled is the value
 * times the scale rounded once: a double product of 4 by 24 bits is exact). */
static void test_e4m3_all_values(void)
{
    for (int b = 0; b < 256; b++) {
        if ((b & 0x7f) == 0x7f)
            continue;
        double want = ref_e4m3((uint8_t)b);
        CHECK((double)eng_e4m3_scaled((uint8_t)b, 1.0f) == want, "e4m3 %02x: want %.9g got %.9g", b, want,
              (double)eng_e4m3_scaled((uint8_t)b, 1.0f));
        static const float scales[] = {0.0f, 1.0f / 3, 0.00123f, 255.9f, -7.5e-5f, 1e-30f};
        for (size_t s = 0; s < sizeof scales / sizeof scales[0]; s++)
            CHECK(eng_e4m3_scaled((uint8_t)b, scales[s]) == (float)(want * scales[s]), "e4m3 %02x times %g", b,
                  (double)scales[s]);
    }
}

static void test_to_f32(const eng_kernel_impl *k)
{
    static const size_t sizes[] = {0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 100, 1027};
    for (int dt = 0; dt <= ENG_DT_F8E4M3; dt++) {
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            size_t n = sizes[si];
            void *w = rnd_weights((eng_dtype)dt, n);
            float *out = malloc((n + 1) * sizeof(float));
            out[n] = 12345.0f;
            k->to_f32(out, w, (eng_dtype)dt, n);
            for (size_t i = 0; i < n; i++)
                CHECK(out[i] == (float)ref_weight(w, (eng_dtype)dt, i), "%s to_f32 %s n=%zu i=%zu", k->name,
                      eng_dtype_name((eng_dtype)dt), n, i);
            CHECK(out[n] == 12345.0f, "%s to_f32 wrote past the end", k->name);
            free(w);
            free(out);
        }
    }
}

/* ---- matmul ---- */

static void ref_matmul(double *y, const float *x, const eng_weight *w, int nt, int n_in, int n_out, double *mag)
{
    for (int t = 0; t < nt; t++)
        for (int o = 0; o < n_out; o++) {
            double s = 0, m = 0;
            for (int i = 0; i < n_in; i++) {
                double p = x[(size_t)t * n_in + i] * ref_matrix(w, n_in, o, i);
                s += p;
                m += fabs(p);
            }
            y[(size_t)t * n_out + o] = s;
            mag[(size_t)t * n_out + o] = m;
        }
}

/* x_bf16 (bf16 weights, or FP8 ones in blocks of ENG_FP8_BF16_BLOCK_ALIGN inputs):
 * inputs rounded to bf16 first, against a reference on the rounded inputs; x itself
 * must stay as it was. */
static void test_matmul_shape(eng_pool *pools[4], eng_dtype dt, int x_bf16, int nt, int n_in, int n_out)
{
    size_t nx = (size_t)nt * n_in;
    float *x = malloc(nx * sizeof(float)), *x0 = malloc(nx * sizeof(float));
    float *scratch = x_bf16 ? malloc(nx * sizeof(float)) : NULL;
    for (size_t i = 0; i < nx; i++)
        x[i] = rnd_f();
    eng_weight w = rnd_matrix_blocks(dt, n_out, n_in, x_bf16 ? ENG_FP8_BF16_BLOCK_ALIGN : RND_FP8_BLOCK_IN);
    w.x_bf16 = x_bf16;
    size_t ny = (size_t)nt * n_out;
    double *ref = malloc(ny * sizeof(double)), *mag = malloc(ny * sizeof(double));
    memcpy(x0, x, nx * sizeof(float));
    if (x_bf16)
        eng_round_to(ENG_DT_BF16, x0, nx);
    ref_matmul(ref, x0, &w, nt, n_in, n_out, mag);
    memcpy(x0, x, nx * sizeof(float));
    const char *mode = x_bf16 ? (dt == ENG_DT_F8E4M3 ? "f8e4m3 x bf16" : "bf16 x bf16") : eng_dtype_name(dt);
    /* FP8 on f32 inputs: the same matrix dequantised to f32 must give bitwise the same result */
    float *deq = NULL;
    if (dt == ENG_DT_F8E4M3 && !x_bf16) {
        deq = malloc((size_t)n_out * n_in * sizeof(float) + 64);
        for (int o = 0; o < n_out; o++)
            for (int i = 0; i < n_in; i++)
                deq[(size_t)o * n_in + i] = (float)ref_matrix(&w, n_in, o, i);
    }
    float *y = malloc((ny + 1) * sizeof(float));
    float *y1 = malloc(ny * sizeof(float));
    float *single = malloc((size_t)n_out * sizeof(float));
    float *port = malloc(ny * sizeof(float));

    for (int v = 0; v < N_VARIANTS; v++) {
        if (!eng_kernels_variant(VARIANTS[v]))
            continue;
        use_variant(VARIANTS[v]);
        for (int th = 1; th <= 3; th++) {
            y[ny] = -777.0f;
            eng_matmul_weight(pools[th], y, x, scratch, &w, nt, n_in, n_out);
            CHECK(y[ny] == -777.0f, "%s matmul wrote past y", VARIANTS[v]);
            CHECK(memcmp(x, x0, nx * sizeof(float)) == 0, "%s matmul %s changed its input", VARIANTS[v], mode);
            if (th == 1 && deq) {
                eng_matmul(pools[th], y1, x, deq, ENG_DT_F32, nt, n_in, n_out);
                CHECK(memcmp(y, y1, ny * sizeof(float)) == 0,
                      "%s matmul f8e4m3 nt=%d n_in=%d n_out=%d differs from its f32 dequantisation", VARIANTS[v], nt,
                      n_in, n_out);
            }
            if (th == 1) {
                memcpy(y1, y, ny * sizeof(float));
                for (size_t i = 0; i < ny; i++) {
                    double err = fabs(y[i] - ref[i]);
                    CHECK(err <= 1e-6 * mag[i] + 1e-6 * sqrt(n_in) + 1e-30,
                          "%s matmul %s nt=%d n_in=%d n_out=%d idx=%zu got %.9g want %.9g", VARIANTS[v], mode, nt, n_in,
                          n_out, i, y[i], ref[i]);
                }
                if (v == 0)
                    memcpy(port, y, ny * sizeof(float));
                else
                    for (size_t i = 0; i < ny; i++)
                        CHECK(fabsf(y[i] - port[i]) <= 2e-6 * mag[i] + 1e-30,
                              "%s vs portable %s nt=%d n_in=%d n_out=%d idx=%zu", VARIANTS[v], mode, nt, n_in, n_out,
                              i);
            } else {
                CHECK(memcmp(y, y1, ny * sizeof(float)) == 0,
                      "%s matmul %s nt=%d n_in=%d n_out=%d: %d threads differ from 1", VARIANTS[v], mode, nt, n_in,
                      n_out, th);
            }
        }
        /* A token's result must not depend on the rest of the batch
         * (test_batch_invariance checks this at every batch size). */
        int t = nt - 1;
        eng_matmul_weight(pools[2], single, x + (size_t)t * n_in, scratch, &w, 1, n_in, n_out);
        CHECK(memcmp(single, y1 + (size_t)t * n_out, (size_t)n_out * sizeof(float)) == 0,
              "%s matmul %s nt=%d n_in=%d n_out=%d: batch changes token %d", VARIANTS[v], mode, nt, n_in, n_out, t);
    }
    free(x);
    free(x0);
    free(scratch);
    rnd_matrix_free(&w);
    free(deq);
    free(ref);
    free(mag);
    free(y);
    free(y1);
    free(single);
    free(port);
}

static void test_matmul(void)
{
    eng_pool *pools[4] = {NULL};
    for (int th = 1; th <= 3; th++) {
        pools[th] = eng_pool_create(th);
        CHECK(pools[th] != NULL, "pool of %d", th);
    }
    static const int n_ins[] = {1, 3, 16, 17, 31, 32, 33, 63, 100, 257, 515};
    static const int n_outs[] = {1, 5, 16, 17, 40, 67};
    static const int nts[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16, 17, 31, 33, 64, 70};
    for (int dt = 0; dt <= ENG_DT_F8E4M3; dt++)
        for (size_t a = 0; a < sizeof n_ins / sizeof n_ins[0]; a++)
            for (size_t b = 0; b < sizeof n_outs / sizeof n_outs[0]; b++) {
                /* Every token count on a few shapes, a rotating pair elsewhere. */
                int full = (a % 4 == 1 && b % 2 == 1);
                for (size_t c = 0; c < sizeof nts / sizeof nts[0]; c++) {
                    if (!full && (c % 5) != (a + b) % 5)
                        continue;
                    test_matmul_shape(pools, (eng_dtype)dt, 0, nts[c], n_ins[a], n_outs[b]);
                    if (dt == ENG_DT_BF16 || dt == ENG_DT_F8E4M3)
                        test_matmul_shape(pools, (eng_dtype)dt, 1, nts[c], n_ins[a], n_outs[b]);
                }
            }
    /* An empty sum is zero on every path (decode and prefill token counts). */
    for (int v = 0; v < N_VARIANTS; v++) {
        if (!eng_kernels_variant(VARIANTS[v]))
            continue;
        use_variant(VARIANTS[v]);
        float y[20 * 3];
        for (int nt = 1; nt <= 20; nt += 19) {
            for (int i = 0; i < 60; i++)
                y[i] = 1.0f;
            eng_matmul(pools[2], y, NULL, NULL, ENG_DT_BF16, nt, 0, 3);
            for (int i = 0; i < nt * 3; i++)
                CHECK(y[i] == 0.0f, "%s matmul n_in=0 nt=%d: y[%d]=%g", VARIANTS[v], nt, i, y[i]);
        }
    }
    /* Larger shapes that cross every blocking boundary and use many tasks. */
    test_matmul_shape(pools, ENG_DT_BF16, 0, 37, 1040, 300);
    test_matmul_shape(pools, ENG_DT_BF16, 1, 37, 1040, 300);
    test_matmul_shape(pools, ENG_DT_BF16, 1, 1, 2100, 70);
    test_matmul_shape(pools, ENG_DT_F8E4M3, 1, 37, 1040, 300);
    test_matmul_shape(pools, ENG_DT_F8E4M3, 1, 1, 2100, 70);
    test_matmul_shape(pools, ENG_DT_F16, 0, 70, 200, 129);
    test_matmul_shape(pools, ENG_DT_F32, 0, 19, 333, 97);
    test_matmul_shape(pools, ENG_DT_F8E4M3, 0, 1, 2100, 70);
    test_matmul_shape(pools, ENG_DT_F8E4M3, 0, 101, 2100, 70);
    for (int th = 1; th <= 3; th++)
        eng_pool_destroy(pools[th]);
}

/* Several matrices in one run give each output the bits a call of its own gives
 * it: the shared list of row blocks puts task boundaries inside matrices and
 * across their ends (n_out not multiples of 16, an empty matrix in between). */
static void test_matmul_multi(void)
{
    static const int n_outs[] = {37, 0, 16, 70, 5};
    enum { N = sizeof n_outs / sizeof n_outs[0], N_IN = 300 };
    eng_pool *pool = eng_pool_create(3);
    CHECK(pool != NULL, "pool of 3");
    static const int nts[] = {1, 2, 3, 4, 9};
    /* every dtype, then bf16 with every other matrix taking its inputs as bf16 */
    for (int d = 0; d <= ENG_DT_F8E4M3 + 1; d++)
        for (size_t c = 0; c < sizeof nts / sizeof nts[0]; c++) {
            eng_dtype dt = d > ENG_DT_F8E4M3 ? ENG_DT_BF16 : (eng_dtype)d;
            int nt = nts[c];
            float *x = malloc((size_t)nt * N_IN * sizeof(float));
            float *scratch = malloc((size_t)nt * N_IN * sizeof(float));
            for (size_t i = 0; i < (size_t)nt * N_IN; i++)
                x[i] = rnd_f();
            eng_weight w[N];
            eng_matmul_out outs[N];
            float *alone[N];
            for (int p = 0; p < N; p++) {
                w[p] = rnd_matrix(dt, n_outs[p] ? n_outs[p] : 1, N_IN);
                w[p].x_bf16 = d > ENG_DT_F8E4M3 && p % 2;
                outs[p] = (eng_matmul_out){malloc(((size_t)nt * n_outs[p] + 1) * sizeof(float)), &w[p], n_outs[p]};
                alone[p] = malloc(((size_t)nt * n_outs[p] + 1) * sizeof(float));
                outs[p].y[(size_t)nt * n_outs[p]] = -777.0f;
                eng_matmul_weight(pool, alone[p], x, scratch, &w[p], nt, N_IN, n_outs[p]);
            }
            eng_matmul_multi(pool, x, scratch, nt, N_IN, outs, N);
            for (int p = 0; p < N; p++) {
                CHECK(memcmp(outs[p].y, alone[p], (size_t)nt * n_outs[p] * sizeof(float)) == 0,
                      "matmul_multi %s%s nt=%d: matrix %d differs from its own call", eng_dtype_name(dt),
                      w[p].x_bf16 ? " (bf16 inputs)" : "", nt, p);
                CHECK(outs[p].y[(size_t)nt * n_outs[p]] == -777.0f, "matmul_multi wrote past matrix %d", p);
                rnd_matrix_free(&w[p]);
                free(outs[p].y);
                free(alone[p]);
            }
            free(x);
            free(scratch);
        }
    eng_pool_destroy(pool);
}

/* ---- element-wise kernels ---- */

static void fill(float *v, int n, float s)
{
    for (int i = 0; i < n; i++)
        v[i] = rnd_f() * s;
}

/* sum_exp over a whole Qwen3 vocabulary of logits (many chunks): within 1e-6 of the sum
 * in double, so a sampled token's logprob moves by at most 1e-6. */
static void test_sum_exp_vocab(const eng_kernel_impl *k)
{
    enum { VOCAB = 151936 };
    float *x = malloc(VOCAB * sizeof *x);
    fill(x, VOCAB, 20);
    float top = -INFINITY;
    for (int i = 0; i < VOCAB; i++)
        top = x[i] > top ? x[i] : top;
    double want = 0;
    for (int i = 0; i < VOCAB; i++)
        want += exp((double)x[i] - top);
    double got = k->sum_exp(x, VOCAB, top);
    CHECK(fabs(got - want) <= 1e-6 * want, "%s sum_exp over the vocabulary: got %.12g want %.12g", k->name, got, want);
    free(x);
}

static void test_vector_ops(const eng_kernel_impl *k)
{
    static const int sizes[] = {1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 64, 100, 128, 1000, 1027};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int n = sizes[si];
        float *a = malloc((n + 1) * sizeof(float)), *b = malloc((n + 1) * sizeof(float));
        float *c = malloc((n + 1) * sizeof(float)), *w = malloc(n * sizeof(float));
        fill(a, n, 3);
        fill(b, n, 3);
        fill(w, n, 2);

        double s = 0, m = 0;
        for (int i = 0; i < n; i++) {
            s += (double)a[i] * b[i];
            m += fabs((double)a[i] * b[i]);
        }
        float d = k->dot(a, b, n);
        CHECK(fabs(d - s) <= 1e-6 * m + 1e-7, "%s dot n=%d got %g want %g", k->name, n, d, s);

        memcpy(c, b, n * sizeof(float));
        c[n] = 99.0f;
        k->axpy(c, 0.37f, a, n);
        for (int i = 0; i < n; i++)
            CHECK(fabs(c[i] - (b[i] + 0.37 * a[i])) <= 1e-6 * (fabs(b[i]) + fabs(a[i])) + 1e-7, "%s axpy n=%d i=%d",
                  k->name, n, i);
        CHECK(c[n] == 99.0f, "%s axpy wrote past the end", k->name);

        double ss = 0;
        for (int i = 0; i < n; i++)
            ss += (double)a[i] * a[i];
        double r = 1.0 / sqrt(ss / n + 1e-6);
        k->rmsnorm(c, a, w, n, 1e-6f);
        for (int i = 0; i < n; i++)
            CHECK(fabs(c[i] - a[i] * r * w[i]) <= 1e-5 * fabs(a[i] * r * w[i]) + 1e-6,
                  "%s rmsnorm n=%d i=%d got %g want %g", k->name, n, i, c[i], a[i] * r * w[i]);
        memcpy(c, a, n * sizeof(float));
        k->rmsnorm(c, c, w, n, 1e-6f); /* in place */
        for (int i = 0; i < n; i++)
            CHECK(fabs(c[i] - a[i] * r * w[i]) <= 1e-5 * fabs(a[i] * r * w[i]) + 1e-6, "%s rmsnorm in place n=%d i=%d",
                  k->name, n, i);

        memcpy(c, a, n * sizeof(float));
        c[n] = 99.0f;
        k->silu_mul(c, b, n);
        for (int i = 0; i < n; i++) {
            double g = a[i], want = g / (1 + exp(-g)) * b[i];
            CHECK(fabs(c[i] - want) <= 2e-6 * fabs(want) + 1e-7, "%s silu_mul n=%d i=%d got %g want %g", k->name, n, i,
                  c[i], want);
        }
        CHECK(c[n] == 99.0f, "%s silu_mul wrote past the end", k->name);

        /* Large logits check the max subtraction. */
        for (int i = 0; i < n; i++)
            c[i] = a[i] * 30 + 500;
        double mx = -INFINITY, sum = 0;
        for (int i = 0; i < n; i++)
            mx = fmax(mx, (double)c[i]);
        double *e = malloc(n * sizeof(double));
        for (int i = 0; i < n; i++)
            sum += (e[i] = exp((double)c[i] - mx));
        k->softmax(c, n);
        for (int i = 0; i < n; i++)
            CHECK(fabs(c[i] - e[i] / sum) <= 2e-6 * (e[i] / sum) + 1e-9, "%s softmax n=%d i=%d got %g want %g", k->name,
                  n, i, c[i], e[i] / sum);
        CHECK(c[n] == 99.0f, "%s softmax wrote past the end", k->name);

        /* sum_exp: a log-sum-exp's sum, x left as it was; -inf terms add nothing */
        float top = -INFINITY;
        for (int i = 0; i < n; i++) {
            c[i] = i % 7 == 3 ? -INFINITY : a[i] * 30 + 500;
            top = c[i] > top ? c[i] : top;
        }
        sum = 0;
        for (int i = 0; i < n; i++)
            sum += exp((double)c[i] - top);
        c[n] = 99.0f;
        double got = k->sum_exp(c, n, top);
        CHECK(fabs(got - sum) <= 1e-6 * sum + 1e-30, "%s sum_exp n=%d got %.9g want %.9g", k->name, n, got, sum);
        CHECK(c[n] == 99.0f && (n < 4 || c[3] == -INFINITY), "%s sum_exp wrote to x", k->name);
        free(e);
        free(a);
        free(b);
        free(c);
        free(w);
    }
    /* silu at extremes must stay finite (no inf * 0). */
    float g[4] = {-100.0f, 100.0f, -88.9f, 0.0f}, u[4] = {1, 1, 1, 1};
    k->silu_mul(g, u, 4);
    CHECK(fabsf(g[0]) < 1e-30f && fabsf(g[1] - 100.0f) < 1e-4f && isfinite(g[2]) && g[3] == 0,
          "%s silu extremes: %g %g %g %g", k->name, g[0], g[1], g[2], g[3]);
}

/* ---- attention over the KV cache ---- */

/* Attention of every head through eng_attend_span over spans of `span` positions,
 * merged and finished, as forward.c runs it, with the cache cut into blocks of bs.
 * k and v: [nkv][n][dim] values of dt; q rounded to dt. */
static void attend_blocks(float *y, const float *q, const unsigned char *k, const unsigned char *v, int nh, int nkv,
                          int dim, int n, int bs, int span, eng_dtype dt)
{
    size_t row = (size_t)dim * eng_dtype_size(dt), head = (size_t)bs * row;
    int nb = (n + bs - 1) / bs;
    unsigned char *cache = calloc((size_t)nb, 2 * nkv * head);
    const void **units = malloc((size_t)nb * sizeof *units);
    for (int b = 0; b < nb; b++) {
        unsigned char *u = cache + (size_t)b * 2 * nkv * head;
        units[b] = u;
        for (int g = 0; g < nkv; g++)
            for (int r = 0; r < bs && b * bs + r < n; r++) {
                size_t at = ((size_t)g * n + (size_t)b * bs + r) * row;
                memcpy(u + g * head + r * row, k + at, row);
                memcpy(u + (nkv + g) * head + r * row, v + at, row);
            }
    }
    eng_kv_view kv = {.units = units, .block_size = bs, .n_kv_heads = nkv, .dim = dim, .dt = dt};
    size_t sf = ENG_ATT_STATE_FLOATS(nh, dim);
    float *state = malloc(2 * sf * sizeof(float)), *work = malloc(ENG_ATT_WORK_FLOATS(nh, dim) * sizeof(float));
    float scale = 1.0f / sqrtf((float)dim);
    for (int p0 = 0; p0 < n; p0 += span) {
        eng_attend_span(p0 ? state + sf : state, work, q, nh, scale, &kv, p0, p0 + span < n ? p0 + span : n);
        if (p0)
            eng_attend_merge(state, state + sf, nh, dim);
    }
    eng_attend_finish(y, state, nh, &kv);
    free(cache);
    free(units);
    free(state);
    free(work);
}

/* eng_attend_span against softmax attention in double, for each cache dtype and a
 * head_dim that is (128, 64, 32) or is not (40) a multiple of a variant's chunk,
 * 1-3 query heads per kv head, lengths around a group (16) and past a span; and the
 * same bits whatever the block size (a result may depend on the positions only). */
static void test_attend(const char *variant)
{
    use_variant(variant);
    static const eng_dtype dts[] = {ENG_DT_BF16, ENG_DT_F16, ENG_DT_F32};
    static const int dims[] = {128, 64, 32, 40}, ns[] = {1, 5, 16, 17, 40, 300};
    for (size_t ti = 0; ti < sizeof dts / sizeof dts[0]; ti++)
        for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
            for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                eng_dtype dt = dts[ti];
                int dim = dims[di], n = ns[ni], nkv = 1 + (int)(ni % 2), group = 1 + (int)((di + ni) % 3);
                int nh = nkv * group;
                size_t nv = (size_t)nkv * n * dim;
                unsigned char *k = rnd_weights(dt, nv), *v = rnd_weights(dt, nv);
                float *q = malloc((size_t)nh * dim * sizeof(float));
                float *y = malloc((size_t)nh * dim * sizeof(float)), *y7 = malloc((size_t)nh * dim * sizeof(float));
                for (int i = 0; i < nh * dim; i++)
                    q[i] = 3.0f * rnd_f(); /* scores of a few units: a softmax far from uniform */
                eng_round_to(dt, q, (size_t)nh * dim);
                attend_blocks(y, q, k, v, nh, nkv, dim, n, 16, 256, dt);
                attend_blocks(y7, q, k, v, nh, nkv, dim, n, 7, 256, dt);
                CHECK(memcmp(y, y7, (size_t)nh * dim * sizeof(float)) == 0,
                      "%s attend %s dim=%d n=%d: blocks of 7 differ from blocks of 16", variant, eng_dtype_name(dt),
                      dim, n);
                double *sc = malloc((size_t)n * sizeof(double));
                for (int h = 0; h < nh; h++) {
                    int g = h / group;
                    double mx = -1e300, sum = 0;
                    for (int j = 0; j < n; j++) {
                        double d = 0;
                        for (int e = 0; e < dim; e++)
                            d += (double)q[h * dim + e] * ref_weight(k, dt, ((size_t)g * n + j) * dim + e);
                        sc[j] = d / sqrt((double)dim);
                        mx = sc[j] > mx ? sc[j] : mx;
                    }
                    for (int j = 0; j < n; j++)
                        sum += sc[j] = exp(sc[j] - mx);
                    for (int e = 0; e < dim; e++) {
                        double want = 0, mag = 0;
                        for (int j = 0; j < n; j++) {
                            double x = sc[j] / sum * ref_weight(v, dt, ((size_t)g * n + j) * dim + e);
                            want += x;
                            mag += fabs(x);
                        }
                        CHECK(fabs(y[h * dim + e] - want) <= 2e-5 * mag + 1e-6,
                              "%s attend %s dim=%d n=%d h=%d e=%d: %g != %g", variant, eng_dtype_name(dt), dim, n, h, e,
                              y[h * dim + e], want);
                    }
                }
                free(sc);
                free(k);
                free(v);
                free(q);
                free(y);
                free(y7);
            }
    unsetenv("TANDEM_ISA");
}

static void test_rope(const eng_kernel_impl *k)
{
    static const int dims[] = {2, 4, 6, 16, 34, 64, 128, 256};
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
        int hd = dims[di], nh = 3, half = hd / 2;
        float *x = malloc((size_t)nh * hd * sizeof(float)), *x0 = malloc((size_t)nh * hd * sizeof(float));
        float *cs = malloc(half * sizeof(float)), *sn = malloc(half * sizeof(float));
        fill(x0, nh * hd, 2);
        for (int i = 0; i < half; i++) {
            double th = 17.0 * pow(10000.0, -2.0 * i / hd);
            cs[i] = (float)cos(th);
            sn[i] = (float)sin(th);
        }
        memcpy(x, x0, (size_t)nh * hd * sizeof(float));
        k->rope_neox(x, nh, hd, cs, sn);
        for (int h = 0; h < nh; h++)
            for (int i = 0; i < half; i++) {
                double a = x0[h * hd + i], b = x0[h * hd + i + half];
                double wa = a * cs[i] - b * sn[i], wb = a * sn[i] + b * cs[i];
                CHECK(fabs(x[h * hd + i] - wa) < 1e-6 && fabs(x[h * hd + i + half] - wb) < 1e-6,
                      "%s rope hd=%d h=%d i=%d", k->name, hd, h, i);
            }
        free(x);
        free(x0);
        free(cs);
        free(sn);
    }
}

/* ---- the public wrappers reach the selected variant ---- */

static void test_public_api(void)
{
    for (int v = 0; v < N_VARIANTS; v++) {
        const eng_kernel_impl *k = eng_kernels_variant(VARIANTS[v]);
        if (!k)
            continue;
        use_variant(VARIANTS[v]);
        enum { N = 77 };
        float a[N], b[N], w[N], c1[N], c2[N], p[4];
        uint16_t h[N];
        fill(a, N, 2);
        fill(b, N, 2);
        fill(w, N, 1);
        fill(p, 4, 1);
        for (int i = 0; i < N; i++)
            h[i] = rnd_bf16();
        CHECK(eng_dot(a, b, N) == k->dot(a, b, N), "%s eng_dot", k->name);
#define SAME(call_pub, call_k, what)                                                  \
    do {                                                                              \
        memcpy(c1, a, sizeof c1);                                                     \
        memcpy(c2, a, sizeof c2);                                                     \
        call_pub;                                                                     \
        call_k;                                                                       \
        CHECK(memcmp(c1, c2, sizeof c1) == 0, "%s public %s differs", k->name, what); \
    } while (0)
        SAME(eng_axpy(c1, 0.5f, b, N), k->axpy(c2, 0.5f, b, N), "axpy");
        SAME(eng_rmsnorm(c1, a, w, N, 1e-5f), k->rmsnorm(c2, a, w, N, 1e-5f), "rmsnorm");
        SAME(eng_silu_mul(c1, b, N), k->silu_mul(c2, b, N), "silu_mul");
        SAME(eng_softmax(c1, N), k->softmax(c2, N), "softmax");
        CHECK(eng_sum_exp(a, N, 2.0f) == k->sum_exp(a, N, 2.0f), "%s public sum_exp differs", k->name);
        SAME(eng_rope_neox(c1, 2, 38, b, w), k->rope_neox(c2, 2, 38, b, w), "rope");
        SAME(eng_to_f32(c1, h, ENG_DT_BF16, N), k->to_f32(c2, h, ENG_DT_BF16, N), "to_f32");
#undef SAME
    }
}

/* ---- dispatch ---- */

static void test_dispatch(void)
{
    CHECK(eng_kernels_variant("portable") != NULL, "portable must always exist");
    CHECK(eng_kernels_variant("sse9") == NULL, "unknown variant accepted");
    setenv("TANDEM_ISA", "no-such-isa", 1);
    const char *best = eng_kernels_init();
    unsetenv("TANDEM_ISA");
    CHECK(strcmp(best, eng_kernels_init()) == 0, "unknown TANDEM_ISA must fall back to the default");
    CHECK(strcmp(eng_kernels_isa(), best) == 0, "eng_kernels_isa disagrees with init");
    CHECK(eng_dtype_size(ENG_DT_F32) == 4 && eng_dtype_size(ENG_DT_BF16) == 2 && eng_dtype_size(ENG_DT_F16) == 2 &&
              eng_dtype_size(ENG_DT_F8E4M3) == 1,
          "dtype sizes");
    CHECK(strcmp(eng_dtype_name(ENG_DT_BF16), "bf16") == 0 && strcmp(eng_dtype_name(ENG_DT_F16), "f16") == 0 &&
              strcmp(eng_dtype_name(ENG_DT_F32), "f32") == 0 && strcmp(eng_dtype_name(ENG_DT_F8E4M3), "f8e4m3") == 0,
          "dtype names");
    float bad[3] = {1.0f, -255.0f, ENG_FP8_SCALE_MAX};
    CHECK(eng_fp8_scales_check(bad, 2) == 2 && eng_fp8_scales_check(bad, 3) == 2, "FP8 scale bounds");
    printf("default variant: %s; available:", best);
    for (int v = 0; v < N_VARIANTS; v++)
        if (eng_kernels_variant(VARIANTS[v]))
            printf(" %s", VARIANTS[v]);
    printf("\n");
}

/* A variant's vector f32 -> bf16 (eng_from_f32's fast path: K/V writes, bf16 matmul
 * inputs) gives eng_f32_to_bf16's bits for every kind of value: random bit patterns
 * (NaNs, infinities, subnormals among them), exact ties, and vectors that hold one
 * subnormal among normal values; lengths with and without a partial vector. */
static void test_from_f32_bf16(const eng_kernel_impl *k)
{
    if (!k->from_f32_bf16)
        return;
    enum { N = 16 * 64 + 7 };
    float *x = malloc(N * sizeof *x);
    uint16_t *got = malloc((N + 1) * sizeof *got);
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < N; i++) {
            uint32_t u = rnd_u32();
            if (round == 1) /* ties: the low 16 bits exactly half */
                u = (u & 0xffff0000u) | 0x8000u;
            else if (round == 2) /* subnormals, one in every vector */
                u = i % 16 == 5 ? (u & 0x807fffffu) : (u & 0xbfffffffu) | 0x3f000000u;
            else if (round == 3) /* NaNs and infinities */
                u = (u & 0x807fffffu) | 0x7f800000u | (i % 3 == 0 ? 0 : 0x10000u);
            memcpy(&x[i], &u, sizeof u);
        }
        for (int n = N - 7; n <= N; n += 7) {
            got[n] = 0xabcd;
            k->from_f32_bf16(got, x, (size_t)n);
            CHECK(got[n] == 0xabcd, "%s from_f32_bf16 wrote past %d", k->name, n);
            for (int i = 0; i < n; i++)
                CHECK(got[i] == eng_f32_to_bf16(x[i]), "%s from_f32_bf16 round %d: %08x -> %04x, want %04x", k->name,
                      round, eng_f32_bits(x[i]), got[i], eng_f32_to_bf16(x[i]));
        }
    }
    free(x);
    free(got);
}

int main(void)
{
    test_dispatch();
    test_f16_all_values();
    test_e4m3_all_values();
    test_from_f32_rounding(ENG_DT_BF16, 0x7f7f, 0x7f80, 0x1.ffp127f);
    test_from_f32_rounding(ENG_DT_F16, 0x7bff, 0x7c00, 65520.0f);
    for (int v = 0; v < N_VARIANTS; v++) {
        const eng_kernel_impl *k = eng_kernels_variant(VARIANTS[v]);
        if (!k)
            continue;
        test_to_f32(k);
        test_from_f32_bf16(k);
        test_vector_ops(k);
        test_sum_exp_vocab(k);
        test_rope(k);
        test_attend(VARIANTS[v]);
    }
    test_public_api();
    test_matmul();
    test_matmul_multi();
    return check_summary();
}

/* kernels_simd.h: the vector kernels, written once for any SIMD width.
 *
 * kernels_avx2.c and kernels_avx512.c define a small vocabulary of vector macros
 * (V, VL, V_LOAD, V_FMA, ...) and then include this file, which turns them into a
 * complete eng_kernel_impl named by SIMD_IMPL_NAME. Keeping one copy of the loops
 * means the two variants cannot drift apart in blocking or summation order.
 *
 * eng_matmul sums every output in one fixed order (see "matmul" below) and has
 * two loop nests that only differ in how many of those sums run side by side:
 *  - few tokens (decode, fewer than MM_DEC_MAX): memory bound. Weights are read in
 *    place, MM_NR rows at a time against all tokens, each weight once. Up to twice
 *    that many tokens take it in passes over chunks of rows held in L2.
 *  - many tokens (prefill): compute bound. Blocks of MM_NR weight rows are widened
 *    to f32 into an L1-sized buffer and reused by tiles of MM_MR tokens x MM_NR
 *    outputs, all accumulators in registers.
 * So a token's result never depends on the batch it is in (kernels.h).
 * Activations stay f32 throughout (weights are exact in f32), which is what the
 * conformance tolerances against llama.cpp's f32 reference need. */
#ifndef SIMD_IMPL_NAME
#error "define the vector vocabulary before including kernels_simd.h"
#endif

#include <math.h>
#include <string.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))

#define MM_NR 4       /* outputs per tile (V_REDUCE4 sums them); divides kernels.c's ROW_ALIGN */
#define MM_DEC_NG 2   /* groups of MM_NR outputs a single decode token sums side by side */
#define MM_KC 1024    /* inputs per packed weight block: MM_NR * MM_KC floats = 16 KiB */
#define CACHE_LINE 64 /* bytes; the decode loop prefetches one per weight row and line */
#define MM_TC 96      /* tokens per prefill chunk (a multiple of MM_MR): 24 KiB of partial sums, inputs in L2 */
/* Fewer tokens than this take the decode loop: up to one prefill tile's worth, whose
 * accumulators fit the registers there too. Beyond it a batch reads the weights once
 * through the packed tiles; below, packing cost twice the decode loop (4-6 decode
 * sequences took 32-34 ms a step on the bench model against 18 ms for 3). */
#define MM_DEC_MAX (MM_MR + 1)

/* ---- loading VL weights of any dtype as f32 ---- */

ALWAYS_INLINE size_t dt_size(eng_dtype dt) /* inlined, unlike eng_dtype_size */
{
    return dt == ENG_DT_F32 ? 4 : dt == ENG_DT_F8E4M3 ? 1 : 2;
}

/* FP8 loads give e4m3 value * 2^-8 (eng_e4m3_as_f16); the caller multiplies by
 * its block's scale * 2^8. */
ALWAYS_INLINE V load_w(const char *row, int i, eng_dtype dt)
{
    switch (dt) {
    case ENG_DT_BF16: return V_LOAD_BF16((const uint16_t *)row + i);
    case ENG_DT_F16: return V_LOAD_F16((const uint16_t *)row + i);
    case ENG_DT_F8E4M3: return V_LOAD_E4M3((const uint8_t *)row + i);
    default: return V_LOAD((const float *)row + i);
    }
}

static float scalar_w(const char *row, int i, eng_dtype dt)
{
    switch (dt) {
    case ENG_DT_BF16: return eng_bf16_to_f32(((const uint16_t *)row)[i]);
    case ENG_DT_F16: return eng_f16_to_f32(((const uint16_t *)row)[i]);
    case ENG_DT_F8E4M3: return eng_f16_to_f32(eng_e4m3_as_f16(((const uint8_t *)row)[i]));
    default: return ((const float *)row)[i];
    }
}

/* ---- matmul: one summation order per output, whatever the batch ----
 *
 * Every output y[t][o] is summed the same way: one vector accumulator, lanes over
 * the input index, taking the inputs VL at a time front to back (FMA of weight
 * chunk and x chunk; a last partial chunk zero-padded in both), then the fixed
 * horizontal sum of V_REDUCE4 (which sums a token's four outputs side by side).
 * Tiles only decide how many such accumulators live in registers at once, never
 * what goes into one, so a row's result cannot depend on the rows around it. */

/* The start of a tile's pass over a block of inputs: accumulators from zero (the
 * row's first block) or from where the previous block left them in part. */
ALWAYS_INLINE void tile_begin(V (*acc)[MM_DEC_NG * MM_NR], const V *part, int first, const int MT, const int NG)
{
#pragma GCC unroll 8
    for (int t = 0; t < MT; t++)
#pragma GCC unroll 8
        for (int j = 0; j < NG * MM_NR; j++)
            acc[t][j] = first ? V_ZERO() : part[t * MM_NR + j];
}

/* The end of a tile's pass over a block of inputs: its accumulators saved in part
 * for the next block, or (last block) each token's groups of MM_NR outputs reduced
 * by V_REDUCE4 into y, valid_t x valid_o of them. */
ALWAYS_INLINE void tile_end(float *y, int ldy, int valid_t, int valid_o, V *part, V (*acc)[MM_DEC_NG * MM_NR], int last,
                            const int MT, const int NG)
{
#pragma GCC unroll 8
    for (int t = 0; t < MT; t++) {
        if (!last) {
#pragma GCC unroll 8
            for (int j = 0; j < NG * MM_NR; j++)
                part[t * MM_NR + j] = acc[t][j];
        } else if (t < valid_t) {
#pragma GCC unroll 8
            for (int g = 0; g < NG; g++) {
                int n = valid_o - g * MM_NR;
                if (n <= 0)
                    break;
                float r[MM_NR];
                V_REDUCE4(r, acc[t][g * MM_NR], acc[t][g * MM_NR + 1], acc[t][g * MM_NR + 2], acc[t][g * MM_NR + 3]);
                memcpy(y + (size_t)t * ldy + g * MM_NR, r, (size_t)(n < MM_NR ? n : MM_NR) * sizeof(float));
            }
        }
    }
}

/* acc[t][j] for MT tokens x NG * MM_NR outputs over inputs [0, kc) of the given
 * rows (x rows f32; weight rows of dtype dt, both already offset to the block start;
 * FP8: sr[j] are row j's scales, one per bi inputs, and every weight is the e4m3
 * value times its scale, rounded once, exactly as the portable variant forms it).
 * first: start from zero, else from part; last: the block ends the row, so a
 * partial chunk is padded and results go to y (valid_t x valid_o of them), else
 * the accumulators are saved in part for the next block (NG 1 only). Missing tokens
 * or outputs of a partial tile repeat a valid row and are dropped at the end. Each
 * group of MM_NR outputs is reduced on its own, so NG changes nothing but speed.
 * ahead (bytes, 0 for none): while a cache line of each weight row is read, the
 * line that far past it is prefetched (a prefetch never faults, so past the
 * matrix's end is harmless). */
ALWAYS_INLINE void mm_tile(float *y, int ldy, int valid_t, int valid_o, V *part, const float *const *xr,
                           const char *const *wr, const float *const *sr, int bi, eng_dtype dt, int kc, int first,
                           int last, size_t ahead, const int MT, const int NG)
{
    const int NO = NG * MM_NR;
    const int fp8 = dt == ENG_DT_F8E4M3;
    V acc[MM_MR][MM_DEC_NG * MM_NR];
    tile_begin(acc, part, first, MT, NG);
    int i = 0;
    /* FP8 goes one scale block at a time (bi is a multiple of VL, so no vector
     * straddles two); other dtypes take the whole range as one block. */
    for (int b = 0; i + VL <= kc; b++) {
        int end = fp8 && i + bi < kc ? i + bi : kc;
        V sv[MM_DEC_NG * MM_NR];
        if (fp8)
#pragma GCC unroll 8
            for (int j = 0; j < NO; j++)
                sv[j] = V_SET1(sr[j][b] * ENG_E4M3_F16_UNSCALE);
        for (; i + VL <= end; i += VL) {
            V wv[MM_DEC_NG * MM_NR];
            if (ahead && (i * dt_size(dt)) % CACHE_LINE == 0)
#pragma GCC unroll 8
                for (int j = 0; j < NO; j++)
                    __builtin_prefetch(wr[j] + ahead + i * dt_size(dt), 0, 3);
#pragma GCC unroll 8
            for (int j = 0; j < NO; j++)
                wv[j] = fp8 ? V_MUL(load_w(wr[j], i, dt), sv[j]) : load_w(wr[j], i, dt);
#pragma GCC unroll 8
            for (int t = 0; t < MT; t++) {
                V xv = V_LOAD(xr[t] + i);
#pragma GCC unroll 8
                for (int j = 0; j < NO; j++)
                    acc[t][j] = V_FMA(wv[j], xv, acc[t][j]);
            }
        }
    }
    if (i < kc) { /* only the row's last block has a partial chunk */
        int rem = kc - i;
        float wt[MM_DEC_NG * MM_NR][VL], xt[VL];
        for (int j = 0; j < NO; j++)
            for (int k = 0; k < VL; k++)
                wt[j][k] = k >= rem ? 0.0f
                           : fp8    ? scalar_w(wr[j], i + k, dt) * (sr[j][(i + k) / bi] * ENG_E4M3_F16_UNSCALE)
                                    : scalar_w(wr[j], i + k, dt);
        for (int t = 0; t < MT; t++) {
            for (int k = 0; k < VL; k++)
                xt[k] = k < rem ? xr[t][i + k] : 0.0f;
            for (int j = 0; j < NO; j++)
                acc[t][j] = V_FMA(V_LOAD(wt[j]), V_LOAD(xt), acc[t][j]);
        }
    }
    tile_end(y, ldy, valid_t, valid_o, part, acc, last, MT, NG);
}

/* Rows o .. o + n of W and, for FP8, their scales (repeating row o past o1). */
ALWAYS_INLINE void weight_rows(const char **wr, const float **sr, const eng_weight *w, int n_in, int o, int o1, int n)
{
    size_t row_bytes = (size_t)n_in * dt_size(w->dt);
    for (int j = 0; j < n; j++) {
        int r = o + (o + j < o1 ? j : 0);
        wr[j] = (const char *)w->w + (size_t)r * row_bytes;
        sr[j] = w->dt == ENG_DT_F8E4M3 ? eng_fp8_row_scales(w, n_in, r) : NULL;
    }
}

/* Few tokens (decode): memory bound. Weights are read in place, MM_NR rows side by
 * side against all T tokens, so each weight is read from memory once; a single
 * token takes MM_DEC_NG groups of MM_NR rows at once, enough independent FMA
 * chains to hide their latency. A tile's rows are adjacent in memory, so the next
 * tile starts a tile's bytes further on: that is what is prefetched. A row is only
 * 16-32 cache lines (1024 inputs of FP8 or bf16), too short for the hardware
 * prefetcher to find 4-8 interleaved streams before they end; without it, FP8
 * decode on a Xeon read at 0.6x and bf16 at 0.85-0.9x of the bandwidth of one
 * plain streaming read. */
ALWAYS_INLINE void dec_rows(float *y, int ldy, const float *x, const eng_weight *w, eng_dtype dt, int n_in, int o0,
                            int o1, const int T)
{
    const float *xr[MM_MR];
    for (int t = 0; t < T; t++)
        xr[t] = x + (size_t)t * n_in;
    int o = o0;
    size_t row_bytes = (size_t)n_in * dt_size(dt);
    const char *wr[MM_DEC_NG * MM_NR];
    const float *sr[MM_DEC_NG * MM_NR];
    if (T == 1)
        for (; o + MM_DEC_NG * MM_NR <= o1; o += MM_DEC_NG * MM_NR) {
            weight_rows(wr, sr, w, n_in, o, o1, MM_DEC_NG * MM_NR);
            mm_tile(y + o, ldy, T, o1 - o, NULL, xr, wr, sr, w->block_in, dt, n_in, 1, 1, MM_DEC_NG * MM_NR * row_bytes,
                    T, MM_DEC_NG);
        }
    for (; o < o1; o += MM_NR) {
        weight_rows(wr, sr, w, n_in, o, o1, MM_NR);
        mm_tile(y + o, ldy, T, o1 - o, NULL, xr, wr, sr, w->block_in, dt, n_in, 1, 1, MM_NR * row_bytes, T, 1);
    }
}

/* buf[j][0..kc) = W row j from input k0 on, widened to f32 (FP8: dequantised as
 * mm_tile does it; k0 is a multiple of 16, so no vector straddles two scales). */
static void pack_rows(float *buf, const char *const *wr, const float *const *sr, int bi, int k0, int kc, eng_dtype dt)
{
    for (int j = 0; j < MM_NR; j++) {
        float *dst = buf + (size_t)j * MM_KC;
        if (dt == ENG_DT_F32) {
            memcpy(dst, (const float *)wr[j] + k0, (size_t)kc * sizeof(float));
            continue;
        }
        if (dt == ENG_DT_F8E4M3) {
            const char *src = wr[j] + k0;
            int i = 0;
            for (; i + VL <= kc; i += VL)
                V_STORE(dst + i, V_MUL(load_w(src, i, dt), V_SET1(sr[j][(k0 + i) / bi] * ENG_E4M3_F16_UNSCALE)));
            for (; i < kc; i++)
                dst[i] = scalar_w(src, i, dt) * (sr[j][(k0 + i) / bi] * ENG_E4M3_F16_UNSCALE);
            continue;
        }
        const char *src = wr[j] + (size_t)k0 * 2;
        int i = 0;
        for (; i + VL <= kc; i += VL)
            V_STORE(dst + i, load_w(src, i, dt));
        for (; i < kc; i++)
            dst[i] = scalar_w(src, i, dt);
    }
}

/* Many tokens (prefill): compute bound. For each tile of MM_NR outputs, a block of
 * MM_KC inputs of their weights is widened once into an L1-sized buffer and used
 * by every MM_MR-token tile of a chunk of MM_TC tokens; the accumulators of a
 * chunk wait in part between input blocks. */
static void gemm_rows(float *y, int ldy, const float *x, const eng_weight *w, int n_tokens, int n_in, int o0, int o1)
{
    float buf[MM_NR * MM_KC] __attribute__((aligned(64)));
    V part[MM_TC * MM_NR];
    /* Token chunks outside output tiles: a chunk's inputs stay in L2 while every
     * tile of outputs passes over them (the other way round, all the tokens'
     * inputs would stream from memory again for each tile of MM_NR outputs). */
    for (int t0 = 0; t0 < n_tokens; t0 += MM_TC) {
        int tc = n_tokens - t0 < MM_TC ? n_tokens - t0 : MM_TC;
        for (int o = o0; o < o1; o += MM_NR) {
            const char *wr[MM_NR];
            const float *sr[MM_NR];
            weight_rows(wr, sr, w, n_in, o, o1, MM_NR);
            for (int k0 = 0; k0 < n_in; k0 += MM_KC) {
                int kc = n_in - k0 < MM_KC ? n_in - k0 : MM_KC;
                pack_rows(buf, wr, sr, w->block_in, k0, kc, w->dt);
                for (int t = 0; t < tc; t += MM_MR) {
                    /* set here, next to the call, so that the compiler sees fixed
                     * offsets from one register rather than MM_NR pointers */
                    const char *pr[MM_NR];
                    for (int j = 0; j < MM_NR; j++)
                        pr[j] = (const char *)(buf + (size_t)j * MM_KC);
                    const float *xr[MM_MR];
                    for (int i = 0; i < MM_MR; i++)
                        xr[i] = x + (size_t)(t0 + t + (t + i < tc ? i : 0)) * n_in + k0;
                    mm_tile(y + (size_t)(t0 + t) * ldy + o, ldy, tc - t, o1 - o, part + (size_t)t * MM_NR, xr, pr, NULL,
                            0, ENG_DT_F32, kc, k0 == 0, k0 + kc == n_in, 0, MM_MR, 1);
                }
            }
        }
    }
}

/* Fewer than MM_DEC_MAX tokens: the decode loop, one instantiation per dtype and
 * token count (no dtype branch inside). x is f32. */
static void dec_rows_any(float *y, int ldy, const void *x, const eng_weight *w, int n_tokens, int n_in, int o0, int o1)
{
#define DEC_T(DT, T)                                                \
    case T:                                                         \
        dec_rows(y, ldy, (const float *)x, w, DT, n_in, o0, o1, T); \
        break
#if MM_MR == 6
#define DEC_T_WIDE(DT) \
    DEC_T(DT, 4);      \
    DEC_T(DT, 5);      \
    DEC_T(DT, 6);
#elif MM_MR == 3
#define DEC_T_WIDE(DT)
#else
#error "one decode loop per token count below MM_DEC_MAX"
#endif
#define DEC_DT(DT)      \
    switch (n_tokens) { \
        DEC_T(DT, 1);   \
        DEC_T(DT, 2);   \
        DEC_T(DT, 3);   \
        DEC_T_WIDE(DT)  \
    default: break;     \
    }
    switch (w->dt) {
    case ENG_DT_BF16: DEC_DT(ENG_DT_BF16); break;
    case ENG_DT_F16: DEC_DT(ENG_DT_F16); break;
    case ENG_DT_F32: DEC_DT(ENG_DT_F32); break;
    case ENG_DT_F8E4M3: DEC_DT(ENG_DT_F8E4M3); break;
    }
#undef DEC_DT
#undef DEC_T_WIDE
#undef DEC_T
}

/* A few tokens more than the decode loop takes (MM_DEC_MAX .. MM_DEC_PASS_MAX):
 * packing weights into tiles costs more than reading them once per group of
 * tokens, as long as the second and later reads come from L2. So the rows go in
 * chunks of about MM_DEC_CHUNK bytes of weights, and each chunk takes one decode
 * pass per group of at most MM_MR tokens (groups as even as they go). On AVX2
 * (lm_head, 2 threads) 4-6 tokens took 37-43 ms this way against 48-54 packed and
 * 50 in passes over all the rows; at 8 the two were even and from 12 on packing
 * won, its tiles doing twice the FMAs per weight loaded. */
#define MM_DEC_PASS_MAX (2 * MM_MR)
#define MM_DEC_CHUNK (128 * 1024)

typedef void dec_rows_fn(float *y, int ldy, const void *x, const eng_weight *w, int n_tokens, int n_in, int o0, int o1);

/* dec: the decode loop for fewer than MM_DEC_MAX tokens; x_size: bytes per input. */
static void dec_passes(dec_rows_fn *dec, size_t x_size, float *y, int ldy, const void *x, const eng_weight *w,
                       int n_tokens, int n_in, int o0, int o1)
{
    const int tile = MM_DEC_NG * MM_NR; /* the rows a single token's decode tile takes */
    int rows = (int)(MM_DEC_CHUNK / ((size_t)n_in * dt_size(w->dt))) / tile * tile;
    rows = rows > tile ? rows : tile;
    int passes = (n_tokens + MM_MR - 1) / MM_MR;
    for (int c0 = o0; c0 < o1; c0 += rows) {
        int c1 = o1 - c0 < rows ? o1 : c0 + rows;
        for (int p = 0, t0 = 0; p < passes; p++) {
            int tp = (n_tokens - t0) / (passes - p);
            dec(y + (size_t)t0 * ldy, ldy, (const char *)x + (size_t)t0 * n_in * x_size, w, tp, n_in, c0, c1);
            t0 += tp;
        }
    }
}

/* Which loop runs changes only the speed, never a bit of the result. */
static void matmul_rows(float *y, int ldy, const float *x, const eng_weight *w, int n_tokens, int n_in, int o0, int o1)
{
    if (n_tokens < MM_DEC_MAX)
        dec_rows_any(y, ldy, x, w, n_tokens, n_in, o0, o1);
    else if (n_tokens <= MM_DEC_PASS_MAX)
        dec_passes(dec_rows_any, sizeof(float), y, ldy, x, w, n_tokens, n_in, o0, o1);
    else
        gemm_rows(y, ldy, x, w, n_tokens, n_in, o0, o1);
}

/* ---- element-wise kernels ---- */

/* exp(x) for f32 lanes: Cody-Waite range reduction and the Cephes polynomial,
 * about 1 ulp. Inputs are clamped so the result stays finite and normal. */
ALWAYS_INLINE V v_exp(V x)
{
    x = V_MIN(V_MAX(x, V_SET1(-87.33f)), V_SET1(88.72f));
    V n = V_ROUND(V_MUL(x, V_SET1(1.44269504088896341f)));
    V r = V_FMA(n, V_SET1(-0.693359375f), x);
    r = V_FMA(n, V_SET1(2.12194440e-4f), r);
    V p = V_SET1(1.9875691500e-4f);
    p = V_FMA(p, r, V_SET1(1.3981999507e-3f));
    p = V_FMA(p, r, V_SET1(8.3334519073e-3f));
    p = V_FMA(p, r, V_SET1(4.1665795894e-2f));
    p = V_FMA(p, r, V_SET1(1.6666665459e-1f));
    p = V_FMA(p, r, V_SET1(5.0000001201e-1f));
    p = V_FMA(p, V_MUL(r, r), V_ADD(r, V_SET1(1.0f)));
    return V_MUL(p, V_POW2I(n));
}

static void to_f32(float *dst, const void *src, eng_dtype dt, size_t n)
{
    if (dt == ENG_DT_F32) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    const char *s = src;
    size_t esz = dt_size(dt);
    /* an FP8 weight without its scale: the e4m3 value alone */
    float unbias = dt == ENG_DT_F8E4M3 ? ENG_E4M3_F16_UNSCALE : 1.0f;
    size_t i = 0;
    for (; i + VL <= n; i += VL)
        V_STORE(dst + i, V_MUL(load_w(s + esz * i, 0, dt), V_SET1(unbias)));
    for (; i < n; i++)
        dst[i] = scalar_w(s + esz * i, 0, dt) * unbias;
}

static float dot(const float *a, const float *b, int n)
{
    V acc0 = V_ZERO(), acc1 = V_ZERO();
    int i = 0;
    for (; i + 2 * VL <= n; i += 2 * VL) {
        acc0 = V_FMA(V_LOAD(a + i), V_LOAD(b + i), acc0);
        acc1 = V_FMA(V_LOAD(a + i + VL), V_LOAD(b + i + VL), acc1);
    }
    if (i + VL <= n) {
        acc0 = V_FMA(V_LOAD(a + i), V_LOAD(b + i), acc0);
        i += VL;
    }
    float s = V_REDUCE(V_ADD(acc0, acc1));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static void axpy(float *y, float a, const float *x, int n)
{
    V va = V_SET1(a);
    int i = 0;
    for (; i + VL <= n; i += VL)
        V_STORE(y + i, V_FMA(va, V_LOAD(x + i), V_LOAD(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

static void scale(float *y, float a, int n)
{
    V va = V_SET1(a);
    int i = 0;
    for (; i + VL <= n; i += VL)
        V_STORE(y + i, V_MUL(va, V_LOAD(y + i)));
    for (; i < n; i++)
        y[i] *= a;
}

/* ---- attention over a span of the cache (eng_attend_span) ----
 *
 * The cache is read in the order it lies in memory: for each group of ENG_ATT_GROUP
 * positions, every kv head's K rows, then every kv head's V rows, so a thread
 * given a span streams it front to back (this VM reads 4 KiB pieces of one kv
 * head, 64 KiB apart, at half the speed of one stream). An online softmax (a
 * running largest score per head, the sums rescaled when it grows) lets each
 * group's V rows follow its K rows at once. Rows are taken 2 VL values at a time;
 * bf16 ones as their even- and odd-indexed values (a shift and a mask: half the
 * work of widening each half), with q and the output sums kept in that same
 * arrangement (eng_att_slot, undone by eng_attend_finish). Each score is one
 * accumulator over the arranged values front to back, then V_REDUCE4, times the
 * scale; each output sum adds the rows in order, one FMA each. Nothing depends on
 * anything but the positions and the cache's layout. */

/* The cache is read nearly in memory order: each line read, the line this many
 * bytes on is asked for (the hardware prefetcher alone left attention waiting on
 * memory at a third of its in-cache speed). */
#define ATT_AHEAD 4096
/* Chunks of 2 VL outputs per head a V row adds to at once: with two heads, 16
 * accumulators of AVX-512's 32 registers, 8 of AVX2's 16. */
#define ATT_VC (VL >= 16 ? 4 : 2)
_Static_assert(ENG_ATT_GROUP % VL == 0, "a group's scores are whole vectors");

ALWAYS_INLINE void att_load2(const char *row, int i, eng_dtype dt, V *a, V *b)
{
    if (dt == ENG_DT_BF16) {
        V_LOAD_BF16_EVEN_ODD((const uint16_t *)row + i, *a, *b);
        return;
    }
    *a = load_w(row, i, dt);
    *b = load_w(row, i + VL, dt);
}

/* s[g * ENG_ATT_GROUP + r] = scale * (q_g . row r) for r < nrows (at most MM_NR;
 * missing rows repeat row 0 and are dropped), G heads of arranged q (dim apart). */
ALWAYS_INLINE void att_scores(float *s, const float *qa, const char *const *rows, int nrows, int dim, eng_dtype dt,
                              float scale, const int G)
{
    const char *wr[MM_NR];
    for (int r = 0; r < MM_NR; r++)
        wr[r] = rows[r < nrows ? r : 0];
    V acc[2][MM_NR];
#pragma GCC unroll 2
    for (int g = 0; g < G; g++)
#pragma GCC unroll 4
        for (int r = 0; r < MM_NR; r++)
            acc[g][r] = V_ZERO();
#ifdef ATT_DPBF16
    if (dt == ENG_DT_BF16) /* qa's rows hold q as bf16, in order */
        for (int i = 0; i < dim; i += 2 * VL) {
            VI w[MM_NR];
#pragma GCC unroll 4
            for (int r = 0; r < MM_NR; r++) {
                __builtin_prefetch(wr[r] + (size_t)i * 2 + ATT_AHEAD, 0, 3);
                w[r] = ATT_LOADI((const uint16_t *)(const void *)wr[r] + i);
            }
#pragma GCC unroll 2
            for (int g = 0; g < G; g++) {
                VI x = ATT_LOADI((const uint16_t *)(const void *)(qa + (size_t)g * dim) + i);
#pragma GCC unroll 4
                for (int r = 0; r < MM_NR; r++)
                    acc[g][r] = ATT_DPBF16(acc[g][r], w[r], x);
            }
        }
    else
#endif
        for (int i = 0; i < dim; i += 2 * VL) {
            V w0[MM_NR], w1[MM_NR];
#pragma GCC unroll 4
            for (int r = 0; r < MM_NR; r++) {
                for (size_t at = 0; at < 2 * VL * dt_size(dt); at += CACHE_LINE)
                    __builtin_prefetch(wr[r] + (size_t)i * dt_size(dt) + at + ATT_AHEAD, 0, 3);
                att_load2(wr[r], i, dt, &w0[r], &w1[r]);
            }
#pragma GCC unroll 2
            for (int g = 0; g < G; g++) {
                V x0 = V_LOAD(qa + (size_t)g * dim + i), x1 = V_LOAD(qa + (size_t)g * dim + i + VL);
#pragma GCC unroll 4
                for (int r = 0; r < MM_NR; r++) /* the odd value first, as vdpbf16ps adds them */
                    acc[g][r] = V_FMA(w0[r], x0, V_FMA(w1[r], x1, acc[g][r]));
            }
        }
#pragma GCC unroll 2
    for (int g = 0; g < G; g++) {
        float r4[MM_NR];
        V_REDUCE4(r4, acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
        for (int r = 0; r < nrows; r++)
            s[(size_t)g * ENG_ATT_GROUP + r] = r4[r] * scale;
    }
}

/* o[g] += sum_r p[g * ENG_ATT_GROUP + r] * row r over nrows rows, G heads of arranged
 * sums (dim apart), NC chunks of 2 VL sums of each head in registers at a time from
 * d0 on, each row read once front to back. */
ALWAYS_INLINE void att_values_at(float *o, const float *p, const char *const *rows, int nrows, int dim, int d0,
                                 eng_dtype dt, const int G, const int NC)
{
    V acc[2][2 * ATT_VC];
#pragma GCC unroll 2
    for (int g = 0; g < G; g++)
#pragma GCC unroll 8
        for (int k = 0; k < 2 * NC; k++)
            acc[g][k] = V_LOAD(o + (size_t)g * dim + d0 + k * VL);
    for (int r = 0; r < nrows; r++) {
        V pr[2];
#pragma GCC unroll 2
        for (int g = 0; g < G; g++)
            pr[g] = V_SET1(p[(size_t)g * ENG_ATT_GROUP + r]);
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++) {
            V w0, w1;
            for (size_t at = 0; at < 2 * VL * dt_size(dt); at += CACHE_LINE)
                __builtin_prefetch(rows[r] + (size_t)(d0 + 2 * c * VL) * dt_size(dt) + at + ATT_AHEAD, 0, 3);
            att_load2(rows[r], d0 + 2 * c * VL, dt, &w0, &w1);
#pragma GCC unroll 2
            for (int g = 0; g < G; g++) {
                acc[g][2 * c] = V_FMA(pr[g], w0, acc[g][2 * c]);
                acc[g][2 * c + 1] = V_FMA(pr[g], w1, acc[g][2 * c + 1]);
            }
        }
    }
#pragma GCC unroll 2
    for (int g = 0; g < G; g++)
#pragma GCC unroll 8
        for (int k = 0; k < 2 * NC; k++)
            V_STORE(o + (size_t)g * dim + d0 + k * VL, acc[g][k]);
}

ALWAYS_INLINE void att_values(float *o, const float *p, const char *const *rows, int nrows, int dim, eng_dtype dt,
                              const int G)
{
    int d = 0;
    for (; d + 2 * ATT_VC * VL <= dim; d += 2 * ATT_VC * VL)
        att_values_at(o, p, rows, nrows, dim, d, dt, G, ATT_VC);
    for (; d < dim; d += 2 * VL)
        att_values_at(o, p, rows, nrows, dim, d, dt, G, 1);
}

/* The online softmax step of one head for a group's scores s[0..nr): the running
 * largest score m, sum l and sums o (dim of them) rescaled if the group raises m,
 * and s replaced by exp(s - m) (the rest of the row zero). */
ALWAYS_INLINE void att_softmax_step(float *s, int nr, float *m, float *l, float *o, int dim)
{
    for (int r = nr; r < ENG_ATT_GROUP; r++)
        s[r] = -INFINITY;
    V vmax = V_LOAD(s);
    for (int r = VL; r < ENG_ATT_GROUP; r += VL)
        vmax = V_MAX(vmax, V_LOAD(s + r));
    float gm = V_REDUCE_MAX(vmax);
    if (gm > *m) {
        float f = expf(*m - gm); /* 0 for the first group (m = -inf) */
        *l *= f;
        for (int d = 0; d < dim; d += VL)
            V_STORE(o + d, V_MUL(V_LOAD(o + d), V_SET1(f)));
        *m = gm;
    }
    V vm = V_SET1(*m), sum = V_ZERO();
    for (int r = 0; r < ENG_ATT_GROUP; r += VL) {
        V e = v_exp(V_SUB(V_LOAD(s + r), vm));
        if (r + VL > nr) { /* v_exp clamps: -inf gives a tiny number, not 0 */
            float t[VL];
            V_STORE(t, e);
            for (int k = 0; k < VL; k++)
                t[k] = r + k < nr ? t[k] : 0.0f;
            e = V_LOAD(t);
        }
        V_STORE(s + r, e);
        sum = V_ADD(sum, e);
    }
    *l += V_REDUCE(sum);
}

ALWAYS_INLINE void att_span_dt(float *state, float *work, const float *q, int nh, float scale, const eng_kv_view *kv,
                               int p0, int p1, eng_dtype dt)
{
    int dim = kv->dim, nkv = kv->n_kv_heads, group = nh / nkv, bs = kv->block_size;
    size_t rb = (size_t)dim * dt_size(dt), head_bytes = (size_t)bs * rb;
    float *m = state, *l = state + nh, *o = state + 2 * (size_t)nh;
    float *qa = work, *sc = work + (size_t)nh * dim; /* [nh][ENG_ATT_GROUP] */
    for (int h = 0; h < nh; h++) {
        m[h] = -INFINITY;
        l[h] = 0.0f;
    }
#ifdef ATT_DPBF16
    if (dt == ENG_DT_BF16)
        for (int h = 0; h < nh; h++) /* head h's in the first half of its f32 row */
            for (int e = 0; e < dim; e++)
                ((uint16_t *)(void *)(qa + (size_t)h * dim))[e] = eng_f32_to_bf16(q[(size_t)h * dim + e]);
    else
#endif
        for (int h = 0; h < nh; h++)
            for (int e = 0; e < dim; e++)
                qa[(size_t)h * dim + eng_att_slot(e, dt == ENG_DT_BF16 ? VL : 0)] = q[(size_t)h * dim + e];
    memset(o, 0, (size_t)nh * dim * sizeof(float));
    const char *kr[ENG_ATT_GROUP], *vr[ENG_ATT_GROUP];
    for (int j0 = p0; j0 < p1;) {
        int j1 = (j0 / ENG_ATT_GROUP + 1) * ENG_ATT_GROUP, nr;
        if (j1 > p1)
            j1 = p1;
        nr = j1 - j0;
        for (int r = 0; r < nr; r++) { /* kv head 0's rows; head g's are g * head_bytes on */
            int j = j0 + r;
            const char *unit = (const char *)kv->units[j / bs];
            kr[r] = unit + (size_t)(j % bs) * rb;
            vr[r] = kr[r] + (size_t)nkv * head_bytes;
        }
        for (int g = 0; g < nkv; g++) {
            const char *rows[MM_NR];
            for (int r = 0; r < nr; r += MM_NR) {
                int n4 = nr - r < MM_NR ? nr - r : MM_NR;
                for (int k = 0; k < n4; k++)
                    rows[k] = kr[r + k] + (size_t)g * head_bytes;
                int h = g * group, h1 = h + group;
                for (; h + 2 <= h1; h += 2)
                    att_scores(sc + (size_t)h * ENG_ATT_GROUP + r, qa + (size_t)h * dim, rows, n4, dim, dt, scale, 2);
                if (h < h1)
                    att_scores(sc + (size_t)h * ENG_ATT_GROUP + r, qa + (size_t)h * dim, rows, n4, dim, dt, scale, 1);
            }
        }
        for (int h = 0; h < nh; h++)
            att_softmax_step(sc + (size_t)h * ENG_ATT_GROUP, nr, &m[h], &l[h], o + (size_t)h * dim, dim);
        for (int g = 0; g < nkv; g++) {
            const char *rows[ENG_ATT_GROUP];
            for (int r = 0; r < nr; r++)
                rows[r] = vr[r] + (size_t)g * head_bytes;
            int h = g * group, h1 = h + group;
            for (; h + 2 <= h1; h += 2)
                att_values(o + (size_t)h * dim, sc + (size_t)h * ENG_ATT_GROUP, rows, nr, dim, dt, 2);
            if (h < h1)
                att_values(o + (size_t)h * dim, sc + (size_t)h * ENG_ATT_GROUP, rows, nr, dim, dt, 1);
        }
        j0 = j1;
    }
}

static void attend_span(float *state, float *work, const float *q, int nh, float scale, const eng_kv_view *kv, int p0,
                        int p1)
{
    switch (kv->dt) {
    case ENG_DT_BF16: att_span_dt(state, work, q, nh, scale, kv, p0, p1, ENG_DT_BF16); break;
    case ENG_DT_F16: att_span_dt(state, work, q, nh, scale, kv, p0, p1, ENG_DT_F16); break;
    default: att_span_dt(state, work, q, nh, scale, kv, p0, p1, ENG_DT_F32); break;
    }
}

static void rmsnorm(float *y, const float *x, const float *w, int n, float eps)
{
    V acc = V_ZERO();
    int i = 0;
    for (; i + VL <= n; i += VL) {
        V v = V_LOAD(x + i);
        acc = V_FMA(v, v, acc);
    }
    double ss = V_REDUCE(acc);
    for (; i < n; i++)
        ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / n + eps));
    V vr = V_SET1(r);
    for (i = 0; i + VL <= n; i += VL)
        V_STORE(y + i, V_MUL(V_MUL(V_LOAD(x + i), vr), V_LOAD(w + i)));
    for (; i < n; i++)
        y[i] = x[i] * r * w[i];
}

ALWAYS_INLINE V v_silu_mul(V g, V u)
{
    V e = v_exp(V_SUB(V_ZERO(), g));
    return V_MUL(V_DIV(g, V_ADD(V_SET1(1.0f), e)), u);
}

static void silu_mul(float *g, const float *u, int n)
{
    int i = 0;
    for (; i + VL <= n; i += VL)
        V_STORE(g + i, v_silu_mul(V_LOAD(g + i), V_LOAD(u + i)));
    if (i < n) {
        float gt[VL] = {0}, ut[VL] = {0};
        memcpy(gt, g + i, (size_t)(n - i) * sizeof(float));
        memcpy(ut, u + i, (size_t)(n - i) * sizeof(float));
        V_STORE(gt, v_silu_mul(V_LOAD(gt), V_LOAD(ut)));
        memcpy(g + i, gt, (size_t)(n - i) * sizeof(float));
    }
}

static void softmax(float *x, int n)
{
    if (n <= 0)
        return;
    float mx = x[0];
    int i = 0;
    if (n >= VL) {
        V vm = V_LOAD(x);
        for (i = VL; i + VL <= n; i += VL)
            vm = V_MAX(vm, V_LOAD(x + i));
        mx = V_REDUCE_MAX(vm);
    }
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    V vmx = V_SET1(mx), acc = V_ZERO();
    for (i = 0; i + VL <= n; i += VL) {
        V e = v_exp(V_SUB(V_LOAD(x + i), vmx));
        V_STORE(x + i, e);
        acc = V_ADD(acc, e);
    }
    double sum = V_REDUCE(acc);
    if (i < n) {
        float t[VL];
        for (int k = 0; k < VL; k++)
            t[k] = i + k < n ? x[i + k] - mx : 0.0f;
        V_STORE(t, v_exp(V_LOAD(t)));
        for (int k = 0; i + k < n; k++) {
            x[i + k] = t[k];
            sum += t[k];
        }
    }
    scale(x, (float)(1.0 / sum), n);
}

/* Four vector sums side by side (independent add chains), folded into a double every
 * SUM_EXP_CHUNK values, so no f32 partial sum grows past a few thousand terms. */
#define SUM_EXP_CHUNK 4096
static double sum_exp(const float *x, int n, float shift)
{
    V s = V_SET1(shift);
    double sum = 0.0;
    int i = 0;
    while (i + 4 * VL <= n) {
        V a0 = V_ZERO(), a1 = V_ZERO(), a2 = V_ZERO(), a3 = V_ZERO();
        int end = n - i > SUM_EXP_CHUNK ? i + SUM_EXP_CHUNK : n;
        for (; i + 4 * VL <= end; i += 4 * VL) {
            a0 = V_ADD(a0, v_exp(V_SUB(V_LOAD(x + i), s)));
            a1 = V_ADD(a1, v_exp(V_SUB(V_LOAD(x + i + VL), s)));
            a2 = V_ADD(a2, v_exp(V_SUB(V_LOAD(x + i + 2 * VL), s)));
            a3 = V_ADD(a3, v_exp(V_SUB(V_LOAD(x + i + 3 * VL), s)));
        }
        sum += V_REDUCE(V_ADD(V_ADD(a0, a1), V_ADD(a2, a3)));
    }
    for (; i < n; i++)
        sum += expf(x[i] - shift);
    return sum;
}

static void rope_neox(float *x, int n_heads, int head_dim, const float *cos, const float *sin)
{
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *a = x + (size_t)h * head_dim, *b = a + half;
        int i = 0;
        for (; i + VL <= half; i += VL) {
            V va = V_LOAD(a + i), vb = V_LOAD(b + i), c = V_LOAD(cos + i), s = V_LOAD(sin + i);
            V_STORE(a + i, V_FMA(va, c, V_MUL(V_SUB(V_ZERO(), vb), s)));
            V_STORE(b + i, V_FMA(va, s, V_MUL(vb, c)));
        }
        for (; i < half; i++) {
            float va = a[i], vb = b[i];
            a[i] = va * cos[i] - vb * sin[i];
            b[i] = va * sin[i] + vb * cos[i];
        }
    }
}

const eng_kernel_impl SIMD_IMPL_NAME = {
    .name = SIMD_ISA_STRING,
    .matmul_rows = matmul_rows,
#ifdef SIMD_MATMUL_ROWS_BF16
    .matmul_rows_bf16 = SIMD_MATMUL_ROWS_BF16,
    .from_f32_bf16 = SIMD_FROM_F32_BF16,
#endif
    .to_f32 = to_f32,
    .dot = dot,
    .axpy = axpy,
    .attend_span = attend_span,
    .att_lanes = VL,
    .rmsnorm = rmsnorm,
    .silu_mul = silu_mul,
    .softmax = softmax,
    .sum_exp = sum_exp,
    .rope_neox = rope_neox,
};

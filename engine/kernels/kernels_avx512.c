/* kernels_avx512.c: the AVX-512 variant (F, BW, VL, DQ, BF16 and VBMI required).
 *
 * The vector vocabulary for the loops of kernels_simd.h, shared with the AVX2
 * variant (bf16 weights widen with a zero-extend and a 16-bit shift, f16 with
 * vcvtph2ps; both are exact), and the one loop only this ISA has: the matmul on
 * inputs rounded to bf16, with vdpbf16ps. */
#include "kernels/kernels_impl.h"

#include <immintrin.h>

/* The sums of four vectors, each by the same tree: 256-bit halves, then 128-bit
 * quarters, then lanes (0 + 2) + (1 + 3); one fixed sequence of instructions. */
static inline __m128 hsum4_512(__m512 a, __m512 b, __m512 c, __m512 d)
{
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xee));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xee));
    __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xdd));
    s = _mm512_add_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm512_add_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_castps512_ps128(
        _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), s));
}

#define V __m512
#define VL 16
#define MM_MR 6 /* tokens per prefill tile: 6 x 4 accumulators + 4 weights of 32 registers */
#define V_ZERO() _mm512_setzero_ps()
#define V_SET1(a) _mm512_set1_ps(a)
#define V_LOAD(p) _mm512_loadu_ps(p)
#define V_STORE(p, v) _mm512_storeu_ps((p), (v))
#define V_ADD(a, b) _mm512_add_ps((a), (b))
#define V_SUB(a, b) _mm512_sub_ps((a), (b))
#define V_MUL(a, b) _mm512_mul_ps((a), (b))
#define V_DIV(a, b) _mm512_div_ps((a), (b))
#define V_MAX(a, b) _mm512_max_ps((a), (b))
#define V_MIN(a, b) _mm512_min_ps((a), (b))
#define V_FMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define V_ROUND(a) _mm512_roundscale_ps((a), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define V_POW2I(n) _mm512_scalef_ps(_mm512_set1_ps(1.0f), (n))
#define V_REDUCE(v) _mm512_reduce_add_ps(v)
#define V_REDUCE4(dst, a, b, c, d) _mm_storeu_ps((dst), hsum4_512((a), (b), (c), (d)))
#define V_REDUCE_MAX(v) _mm512_reduce_max_ps(v)
#define V_LOAD_F16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(p)))
#define V_LOAD_BF16(p)   \
    _mm512_castsi512_ps( \
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(p))), 16))

/* 2 VL bf16 values as f32: the even-indexed ones (each 32-bit word's low half shifted
 * up) and the odd-indexed ones (its high half, masked): one load, two operations. */
#define V_LOAD_BF16_EVEN_ODD(p, even, odd)                                                      \
    do {                                                                                        \
        __m512i w_ = _mm512_loadu_si512((const void *)(p));                                     \
        (even) = _mm512_castsi512_ps(_mm512_slli_epi32(w_, 16));                                \
        (odd) = _mm512_castsi512_ps(_mm512_and_si512(w_, _mm512_set1_epi32((int)0xffff0000u))); \
    } while (0)

/* Attention scores over a bf16 cache with q rounded to bf16: vdpbf16ps adds the
 * products of values 2l and 2l + 1 (each exact in f32), the odd one first, to lane
 * l, which is what att_scores' f32 FMAs on the even/odd halves compute, with no
 * widening and half the instructions (subnormal products aside: it flushes them). */
#define ATT_DPBF16(acc, w, x) _mm512_dpbf16_ps((acc), (__m512bh)(w), (__m512bh)(x))
#define ATT_LOADI(p) _mm512_loadu_si512((const void *)(p))
#define VI __m512i

/* FP8: 16 bytes sign-extended to 16 bits, shifted so the sign lands in bit 15 and
 * the rest in bits 13..7 (eng_e4m3_as_f16), then widened as halves. */
#define V_LOAD_E4M3(p)                                                                                   \
    _mm512_cvtph_ps(_mm256_and_si256(                                                                    \
        _mm256_slli_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(p))), 7), \
        _mm256_set1_epi16((short)0xbf80)))

static void matmul_rows_bf16(float *y, int ldy, const uint16_t *x, const eng_weight *w, int n_tokens, int n_in, int o0,
                             int o1);
#define SIMD_MATMUL_ROWS_BF16 matmul_rows_bf16
static void from_f32_bf16(uint16_t *dst, const float *src, size_t n);
#define SIMD_FROM_F32_BF16 from_f32_bf16

#define SIMD_IMPL_NAME eng_kernels_avx512
#define SIMD_ISA_STRING "avx512"
#include "kernels/kernels_simd.h"

/* ---- matmul on inputs rounded to bf16 (eng_weight.x_bf16), bf16 weights ----
 *
 * vdpbf16ps adds the products of inputs 2l and 2l + 1 (each exact in f32) to lane l,
 * twice the inputs of an f32 FMA per instruction. Every output is summed the same
 * way: one accumulator taking the inputs 32 at a time front to back (a last partial
 * chunk zero-padded by masked loads), then the fixed sum of V_REDUCE4. The tiles
 * and token loops are matmul_rows' (decode: weights read in place, prefetched a tile
 * ahead; prefill: chunks of MM_TC tokens, blocks of MM_KC inputs with the
 * accumulators kept in part between blocks), so here too a row's result cannot
 * depend on the rows around it. bf16 weights need no widening, so prefill reads
 * them in place too. */
#define BF_VL 32 /* inputs per vdpbf16ps */

ALWAYS_INLINE void bf16_chunk(V (*acc)[MM_DEC_NG * MM_NR], const uint16_t *const *xr, const uint16_t *const *wr, int i,
                              __mmask32 m, const int MT, const int NO)
{
    __m512bh wv[MM_DEC_NG * MM_NR];
#pragma GCC unroll 8
    for (int j = 0; j < NO; j++)
        wv[j] = (__m512bh)_mm512_maskz_loadu_epi16(m, wr[j] + i);
#pragma GCC unroll 8
    for (int t = 0; t < MT; t++) {
        __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, xr[t] + i);
#pragma GCC unroll 8
        for (int j = 0; j < NO; j++)
            acc[t][j] = _mm512_dpbf16_ps(acc[t][j], wv[j], xv);
    }
}

/* mm_tile's contract, for bf16 inputs and weights (ahead: bytes to prefetch past
 * the chunk of each weight row being read, 0 for none). */
ALWAYS_INLINE void bf16_tile(float *y, int ldy, int valid_t, int valid_o, V *part, const uint16_t *const *xr,
                             const uint16_t *const *wr, int kc, int first, int last, size_t ahead, const int MT,
                             const int NG)
{
    const int NO = NG * MM_NR;
    V acc[MM_MR][MM_DEC_NG * MM_NR];
    tile_begin(acc, part, first, MT, NG);
    int i = 0;
    for (; i + BF_VL <= kc; i += BF_VL) { /* a chunk is one cache line of each weight row */
        if (ahead)
#pragma GCC unroll 8
            for (int j = 0; j < NO; j++)
                __builtin_prefetch((const char *)(wr[j] + i) + ahead, 0, 3);
        bf16_chunk(acc, xr, wr, i, (__mmask32)~0u, MT, NO);
    }
    if (i < kc) /* only the row's last block has a partial chunk */
        bf16_chunk(acc, xr, wr, i, (__mmask32)((1u << (kc - i)) - 1), MT, NO);
    tile_end(y, ldy, valid_t, valid_o, part, acc, last, MT, NG);
}

static void bf16_weight_rows(const uint16_t **wr, const eng_weight *w, int n_in, int o, int o1, int n)
{
    const char *rows[MM_DEC_NG * MM_NR];
    const float *unused[MM_DEC_NG * MM_NR];
    weight_rows(rows, unused, w, n_in, o, o1, n);
    for (int j = 0; j < n; j++)
        wr[j] = (const uint16_t *)(const void *)rows[j];
}

ALWAYS_INLINE void bf16_dec_rows(float *y, int ldy, const uint16_t *x, const eng_weight *w, int n_in, int o0, int o1,
                                 const int T)
{
    const uint16_t *xr[MM_MR], *wr[MM_DEC_NG * MM_NR];
    for (int t = 0; t < T; t++)
        xr[t] = x + (size_t)t * n_in;
    size_t row_bytes = (size_t)n_in * 2;
    int o = o0;
    if (T == 1)
        for (; o + MM_DEC_NG * MM_NR <= o1; o += MM_DEC_NG * MM_NR) {
            bf16_weight_rows(wr, w, n_in, o, o1, MM_DEC_NG * MM_NR);
            bf16_tile(y + o, ldy, T, o1 - o, NULL, xr, wr, n_in, 1, 1, MM_DEC_NG * MM_NR * row_bytes, T, MM_DEC_NG);
        }
    for (; o < o1; o += MM_NR) {
        bf16_weight_rows(wr, w, n_in, o, o1, MM_NR);
        bf16_tile(y + o, ldy, T, o1 - o, NULL, xr, wr, n_in, 1, 1, MM_NR * row_bytes, T, 1);
    }
}

static void bf16_gemm_rows(float *y, int ldy, const uint16_t *x, const eng_weight *w, int n_tokens, int n_in, int o0,
                           int o1)
{
    V part[MM_TC * MM_NR];
    for (int t0 = 0; t0 < n_tokens; t0 += MM_TC) {
        int tc = n_tokens - t0 < MM_TC ? n_tokens - t0 : MM_TC;
        for (int o = o0; o < o1; o += MM_NR) {
            const uint16_t *rows[MM_NR];
            bf16_weight_rows(rows, w, n_in, o, o1, MM_NR);
            for (int k0 = 0; k0 < n_in; k0 += MM_KC) {
                int kc = n_in - k0 < MM_KC ? n_in - k0 : MM_KC;
                for (int t = 0; t < tc; t += MM_MR) {
                    const uint16_t *xr[MM_MR], *wr[MM_NR];
                    for (int j = 0; j < MM_NR; j++)
                        wr[j] = rows[j] + k0;
                    for (int i = 0; i < MM_MR; i++)
                        xr[i] = x + (size_t)(t0 + t + (t + i < tc ? i : 0)) * n_in + k0;
                    bf16_tile(y + (size_t)(t0 + t) * ldy + o, ldy, tc - t, o1 - o, part + (size_t)t * MM_NR, xr, wr, kc,
                              k0 == 0, k0 + kc == n_in, 0, MM_MR, 1);
                }
            }
        }
    }
}

/* ---- FP8 weights on inputs rounded to bf16 (eng_weight.x_bf16) ----
 *
 * Each e4m3 code becomes its bf16 value (exact: three mantissa bits) with two
 * vpermi2b lookups by the code's low seven bits, one for the high byte (the sign
 * then copied over) and one for the low byte, and an unpack that pairs them: 64
 * weights in five instructions, where widening to f32 took five for 16. vdpbf16ps
 * sums the products block by block (the scales' block_in, a multiple of 64), and
 * each block's sum times its scale is added to the row's total with one FMA. The
 * unpack pairs bytes within 128-bit lanes, so a chunk's weights come out as inputs
 * {0-7, 16-23, 32-39, 48-55} and {8-15, 24-31, 40-47, 56-63}; the inputs are
 * permuted alike (vpermt2w) as they are loaded. One tile shape per token count as
 * for bf16 weights, and every row summed in the same order, so a row's result is
 * the same in any batch. */
#define FP8_CHUNK 64 /* inputs per conversion */

/* bf16 bits of e4m3fn code c (sign clear): subnormals m * 2^-9, normals
 * (1 + m/8) * 2^(e-7), 0x7f NaN. */
#define E4M3_SUB(m) ((m) == 0 ? 0 : (m) < 2 ? 0x3b00 : (m) < 4 ? 0x3b80 | ((m)&1) << 6 : 0x3c00 | ((m)&3) << 5)
#define E4M3_BF16(c) ((c) == 0x7f ? 0x7fc0 : (c) >> 3 == 0 ? E4M3_SUB(c) : ((((c) >> 3) + 120) << 7) | ((c)&7) << 4)
#define E4M3_HI(c) (uint8_t)(E4M3_BF16(c) >> 8)
#define E4M3_LO(c) (uint8_t)(E4M3_BF16(c) & 0xff)
#define X8(F, c) F(c), F(c + 1), F(c + 2), F(c + 3), F(c + 4), F(c + 5), F(c + 6), F(c + 7)
#define X128(F)                                                                                                 \
    X8(F, 0), X8(F, 8), X8(F, 16), X8(F, 24), X8(F, 32), X8(F, 40), X8(F, 48), X8(F, 56), X8(F, 64), X8(F, 72), \
        X8(F, 80), X8(F, 88), X8(F, 96), X8(F, 104), X8(F, 112), X8(F, 120)
static const uint8_t E4M3_BF16_HI[128] __attribute__((aligned(64))) = {X128(E4M3_HI)};
static const uint8_t E4M3_BF16_LO[128] __attribute__((aligned(64))) = {X128(E4M3_LO)};

/* The inputs in the unpack's order: word k of each half is input 16 * (k / 8) + k % 8
 * (+ 8 for the second). */
#define P8(c) c, c + 1, c + 2, c + 3, c + 4, c + 5, c + 6, c + 7
static const short FP8_PERM0[32] __attribute__((aligned(64))) = {P8(0), P8(16), P8(32), P8(48)};
static const short FP8_PERM1[32] __attribute__((aligned(64))) = {P8(8), P8(24), P8(40), P8(56)};

typedef struct fp8_consts {
    __m512i lo0, lo1, hi0, hi1, sign, perm0, perm1;
} fp8_consts;

static inline fp8_consts fp8_consts_load(void)
{
    fp8_consts c;
    c.lo0 = _mm512_load_si512((const void *)E4M3_BF16_LO);
    c.lo1 = _mm512_load_si512((const void *)(E4M3_BF16_LO + 64));
    c.hi0 = _mm512_load_si512((const void *)E4M3_BF16_HI);
    c.hi1 = _mm512_load_si512((const void *)(E4M3_BF16_HI + 64));
    c.sign = _mm512_set1_epi8((char)0x80);
    c.perm0 = _mm512_load_si512((const void *)FP8_PERM0);
    c.perm1 = _mm512_load_si512((const void *)FP8_PERM1);
    return c;
}

ALWAYS_INLINE void fp8_chunk_bf16(__m512i b, const fp8_consts *c, __m512i *w0, __m512i *w1)
{
    __m512i lo = _mm512_permutex2var_epi8(c->lo0, b, c->lo1);
    __m512i hi = _mm512_permutex2var_epi8(c->hi0, b, c->hi1);
    hi = _mm512_ternarylogic_epi32(hi, b, c->sign, 0xf8); /* hi | (b & 0x80) */
    *w0 = _mm512_unpacklo_epi8(lo, hi);
    *w1 = _mm512_unpackhi_epi8(lo, hi);
}

/* MT tokens' totals for NG * MM_NR rows of FP8 weights (wr, their scales sr) over
 * all n_in inputs (x rows xr in bf16), reduced into y (valid_t x valid_o of them).
 * ahead: bytes past each chunk to prefetch in every row (0: none). */
ALWAYS_INLINE void fp8_bf16_tile(float *y, int ldy, int valid_t, int valid_o, const uint16_t *const *xr,
                                 const uint8_t *const *wr, const float *const *sr, int bi, int n_in, size_t ahead,
                                 const fp8_consts *c, const int MT, const int NG)
{
    const int NO = NG * MM_NR;
    V tot[MM_MR][MM_DEC_NG * MM_NR], part[MM_MR][MM_DEC_NG * MM_NR];
    tile_begin(tot, NULL, 1, MT, NG);
    for (int b0 = 0, blk = 0; b0 < n_in; b0 += bi, blk++) {
        int end = b0 + bi < n_in ? b0 + bi : n_in;
        tile_begin(part, NULL, 1, MT, NG);
        for (int i = b0; i < end; i += FP8_CHUNK) {
            int rem = end - i; /* below 64 only in a row's last chunk */
            __mmask64 m = rem >= 64 ? ~0ull : (1ull << rem) - 1;
            __mmask32 m0 = (__mmask32)m, m1 = (__mmask32)(m >> 32);
            __m512i x0[MM_MR], x1[MM_MR];
#pragma GCC unroll 8
            for (int t = 0; t < MT; t++) {
                __m512i a = _mm512_maskz_loadu_epi16(m0, xr[t] + i), b = _mm512_maskz_loadu_epi16(m1, xr[t] + i + 32);
                x0[t] = _mm512_permutex2var_epi16(a, c->perm0, b);
                x1[t] = _mm512_permutex2var_epi16(a, c->perm1, b);
            }
#pragma GCC unroll 8
            for (int j = 0; j < NO; j++) {
                if (ahead)
                    __builtin_prefetch(wr[j] + i + ahead, 0, 3);
                __m512i w0, w1;
                fp8_chunk_bf16(_mm512_maskz_loadu_epi8(m, wr[j] + i), c, &w0, &w1);
#pragma GCC unroll 8
                for (int t = 0; t < MT; t++) {
                    part[t][j] = _mm512_dpbf16_ps(part[t][j], (__m512bh)w0, (__m512bh)x0[t]);
                    part[t][j] = _mm512_dpbf16_ps(part[t][j], (__m512bh)w1, (__m512bh)x1[t]);
                }
            }
        }
#pragma GCC unroll 8
        for (int j = 0; j < NO; j++) {
            V s = V_SET1(sr[j][blk]);
#pragma GCC unroll 8
            for (int t = 0; t < MT; t++)
                tot[t][j] = V_FMA(part[t][j], s, tot[t][j]);
        }
    }
    tile_end(y, ldy, valid_t, valid_o, NULL, tot, 1, MT, NG);
}

/* Tokens [t0, t0 + T) against rows [o, o + NG * MM_NR) (past o1: repeats, dropped). */
ALWAYS_INLINE void fp8_bf16_at(float *y, int ldy, const uint16_t *x, const eng_weight *w, int n_in, int t0, int o,
                               int o1, size_t ahead, const fp8_consts *c, const int T, const int NG)
{
    const uint16_t *xr[MM_MR];
    for (int t = 0; t < T; t++)
        xr[t] = x + (size_t)(t0 + t) * n_in;
    const char *rows[MM_DEC_NG * MM_NR];
    const float *sr[MM_DEC_NG * MM_NR];
    weight_rows(rows, sr, w, n_in, o, o1, NG * MM_NR);
    fp8_bf16_tile(y + (size_t)t0 * ldy + o, ldy, T, o1 - o, xr, (const uint8_t *const *)rows, sr, w->block_in, n_in,
                  ahead, c, T, NG);
}

/* Three tokens at a time in prefill: 3 x 4 sums, 6 permuted inputs and the tables
 * fill AVX-512's registers. */
#define FP8_MT 3

static void fp8_bf16_rows(float *y, int ldy, const uint16_t *x, const eng_weight *w, int n_tokens, int n_in, int o0,
                          int o1)
{
    fp8_consts c = fp8_consts_load();
    if (n_tokens == 1) { /* decode: rows read once, a tile ahead prefetched, as matmul_rows does */
        int o = o0;
        for (; o + MM_DEC_NG * MM_NR <= o1; o += MM_DEC_NG * MM_NR)
            fp8_bf16_at(y, ldy, x, w, n_in, 0, o, o1, (size_t)MM_DEC_NG * MM_NR * n_in, &c, 1, MM_DEC_NG);
        for (; o < o1; o += MM_NR)
            fp8_bf16_at(y, ldy, x, w, n_in, 0, o, o1, (size_t)MM_NR * n_in, &c, 1, 1);
        return;
    }
    /* Chunks of MM_TC tokens (their inputs in L2), each tile of rows (in L1) against
     * every token of the chunk. */
    for (int t0 = 0; t0 < n_tokens; t0 += MM_TC) {
        int t1 = n_tokens - t0 < MM_TC ? n_tokens : t0 + MM_TC;
        for (int o = o0; o < o1; o += MM_NR) {
            int t = t0;
            for (; t + FP8_MT <= t1; t += FP8_MT)
                fp8_bf16_at(y, ldy, x, w, n_in, t, o, o1, 0, &c, FP8_MT, 1);
            if (t1 - t == 2)
                fp8_bf16_at(y, ldy, x, w, n_in, t, o, o1, 0, &c, 2, 1);
            else if (t1 - t == 1)
                fp8_bf16_at(y, ldy, x, w, n_in, t, o, o1, 0, &c, 1, 1);
        }
    }
}

/* vcvtneps2bf16 rounds to nearest even and quiets a NaN as eng_f32_to_bf16 does, but
 * reads a subnormal input as zero: a vector holding one takes the scalar rule. */
static void from_f32_bf16(uint16_t *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(src + i);
        if (_mm512_fpclass_ps_mask(v, 0x20)) { /* 0x20: subnormal */
            for (int k = 0; k < 16; k++)
                dst[i + k] = eng_f32_to_bf16(src[i + k]);
            continue;
        }
        _mm256_storeu_si256((__m256i *)(void *)(dst + i), (__m256i)_mm512_cvtneps_pbh(v));
    }
    for (; i < n; i++)
        dst[i] = eng_f32_to_bf16(src[i]);
}

/* dec_rows_any for bf16 inputs and weights. */
static void bf16_dec_rows_any(float *y, int ldy, const void *x, const eng_weight *w, int n_tokens, int n_in, int o0,
                              int o1)
{
    switch (n_tokens) {
    case 1: bf16_dec_rows(y, ldy, x, w, n_in, o0, o1, 1); break;
    case 2: bf16_dec_rows(y, ldy, x, w, n_in, o0, o1, 2); break;
    case 3: bf16_dec_rows(y, ldy, x, w, n_in, o0, o1, 3); break;
    case 4: bf16_dec_rows(y, ldy, x, w, n_in, o0, o1, 4); break;
    case 5: bf16_dec_rows(y, ldy, x, w, n_in, o0, o1, 5); break;
    case 6: bf16_dec_rows(y, ldy, x, w, n_in, o0, o1, 6); break;
    default: break;
    }
}

/* matmul_rows' choice of loop, for bf16 inputs. */
static void matmul_rows_bf16(float *y, int ldy, const uint16_t *x, const eng_weight *w, int n_tokens, int n_in, int o0,
                             int o1)
{
    if (w->dt == ENG_DT_F8E4M3)
        fp8_bf16_rows(y, ldy, x, w, n_tokens, n_in, o0, o1);
    else if (n_tokens < MM_DEC_MAX)
        bf16_dec_rows_any(y, ldy, x, w, n_tokens, n_in, o0, o1);
    else if (n_tokens <= MM_DEC_PASS_MAX)
        dec_passes(bf16_dec_rows_any, sizeof(uint16_t), y, ldy, x, w, n_tokens, n_in, o0, o1);
    else
        bf16_gemm_rows(y, ldy, x, w, n_tokens, n_in, o0, o1);
}

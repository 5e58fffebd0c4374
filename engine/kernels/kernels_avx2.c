/* kernels_avx2.c: the AVX2 + FMA + F16C variant.
 *
 * Only the vector vocabulary lives here; the loops are in kernels_simd.h, shared
 * with the AVX-512 variant. The horizontal sum below is one fixed sequence of
 * adds, so results never depend on anything but the data. */
#include "kernels/kernels_impl.h"

#include <immintrin.h>

static inline float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The sums of four vectors, each by the same tree: 128-bit halves, then adjacent
 * lanes, then pairs; one fixed sequence of instructions. */
static inline __m128 hsum4_256(__m256 a, __m256 b, __m256 c, __m256 d)
{
    __m256 ab = _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
    __m256 cd = _mm256_add_ps(_mm256_permute2f128_ps(c, d, 0x20), _mm256_permute2f128_ps(c, d, 0x31));
    __m256 h = _mm256_hadd_ps(ab, cd);
    h = _mm256_hadd_ps(h, h);
    return _mm_unpacklo_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

static inline float hmax256(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 2^n for integral n in [-127, 128] by building the exponent field. */
static inline __m256 pow2i256(__m256 n)
{
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}

#define V __m256
#define VL 8
#define MM_MR 3 /* tokens per prefill tile: 3 x 4 accumulators + 4 weights of 16 registers */
#define V_ZERO() _mm256_setzero_ps()
#define V_SET1(a) _mm256_set1_ps(a)
#define V_LOAD(p) _mm256_loadu_ps(p)
#define V_STORE(p, v) _mm256_storeu_ps((p), (v))
#define V_ADD(a, b) _mm256_add_ps((a), (b))
#define V_SUB(a, b) _mm256_sub_ps((a), (b))
#define V_MUL(a, b) _mm256_mul_ps((a), (b))
#define V_DIV(a, b) _mm256_div_ps((a), (b))
#define V_MAX(a, b) _mm256_max_ps((a), (b))
#define V_MIN(a, b) _mm256_min_ps((a), (b))
#define V_FMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define V_ROUND(a) _mm256_round_ps((a), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define V_POW2I(n) pow2i256(n)
#define V_REDUCE(v) hsum256(v)
#define V_REDUCE4(dst, a, b, c, d) _mm_storeu_ps((dst), hsum4_256((a), (b), (c), (d)))
#define V_REDUCE_MAX(v) hmax256(v)
#define V_LOAD_F16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p)))
/* 2 VL bf16 values as f32: the even-indexed ones (each 32-bit word's low half shifted
 * up) and the odd-indexed ones (its high half, masked): one load, two operations. */
#define V_LOAD_BF16_EVEN_ODD(p, even, odd)                                                      \
    do {                                                                                        \
        __m256i w_ = _mm256_loadu_si256((const __m256i *)(const void *)(p));                    \
        (even) = _mm256_castsi256_ps(_mm256_slli_epi32(w_, 16));                                \
        (odd) = _mm256_castsi256_ps(_mm256_and_si256(w_, _mm256_set1_epi32((int)0xffff0000u))); \
    } while (0)
#define V_LOAD_BF16(p)   \
    _mm256_castsi256_ps( \
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p))), 16))

/* FP8: 8 bytes sign-extended to 16 bits, shifted so the sign lands in bit 15 and
 * the rest in bits 13..7 (eng_e4m3_as_f16), then widened as halves. */
#define V_LOAD_E4M3(p)                                                                                           \
    _mm256_cvtph_ps(                                                                                             \
        _mm_and_si128(_mm_slli_epi16(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(const void *)(p))), 7), \
                      _mm_set1_epi16((short)0xbf80)))

#define SIMD_IMPL_NAME eng_kernels_avx2
#define SIMD_ISA_STRING "avx2"
#include "kernels/kernels_simd.h"

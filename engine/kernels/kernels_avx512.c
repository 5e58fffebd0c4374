/* kernels_avx512.c: the AVX-512 variant (F, BW, VL, DQ and BF16 required).
 *
 * Only the vector vocabulary lives here; the loops are in kernels_simd.h, shared
 * with the AVX2 variant. bf16 weights widen with a zero-extend and a 16-bit shift,
 * f16 with vcvtph2ps; both are exact. */
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

/* FP8: 16 bytes sign-extended to 16 bits, shifted so the sign lands in bit 15 and
 * the rest in bits 13..7 (eng_e4m3_as_f16), then widened as halves. */
#define V_LOAD_E4M3(p)                                                                                   \
    _mm512_cvtph_ps(_mm256_and_si256(                                                                    \
        _mm256_slli_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(p))), 7), \
        _mm256_set1_epi16((short)0xbf80)))

#define SIMD_IMPL_NAME eng_kernels_avx512
#define SIMD_ISA_STRING "avx512"
#include "kernels/kernels_simd.h"

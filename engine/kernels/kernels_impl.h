/* kernels_impl.h: the table each instruction-set variant fills in (internal).
 *
 * kernels.c owns dispatch, dtype helpers and the thread split of eng_matmul; the
 * per-ISA files (kernels_portable.c, kernels_avx2.c, kernels_avx512.c) provide only
 * the single-threaded inner loops through this table, so a variant can never change
 * how work is divided between threads. */
#ifndef ENG_KERNELS_IMPL_H
#define ENG_KERNELS_IMPL_H

#include "kernels/kernels.h"

typedef struct eng_kernel_impl {
    const char *name;
    /* y[t*ldy + o] = sum_i x[t*n_in + i] * W[o][i] for t < n_tokens and
     * o0 <= o < o1 (W rows of n_in elements; FP8 always with scales here). Each
     * output's sum is accumulated in an order that depends only on n_in, never on
     * n_tokens or o0/o1, so results change neither with the batch nor with the
     * thread count. */
    void (*matmul_rows)(float *y, int ldy, const float *x, const eng_weight *w, int n_tokens, int n_in, int o0, int o1);
    /* The same for x already rounded to bf16 and bf16 or FP8 weights (eng_weight.x_bf16),
     * with a bf16 dot-product instruction; NULL where the ISA has none: x rounded to
     * bf16 and widened back then goes through matmul_rows. */
    void (*matmul_rows_bf16)(float *y, int ldy, const uint16_t *x, const eng_weight *w, int n_tokens, int n_in, int o0,
                             int o1);
    void (*to_f32)(float *dst, const void *src, eng_dtype dt, size_t n);
    /* dst[i] = eng_f32_to_bf16(src[i]), bit for bit, with a conversion instruction;
     * NULL: eng_from_f32 loops over eng_f32_to_bf16. */
    void (*from_f32_bf16)(uint16_t *dst, const float *src, size_t n);
    float (*dot)(const float *a, const float *b, int n);
    void (*axpy)(float *y, float a, const float *x, int n);
    /* eng_attend_span for a head_dim that is a multiple of 2 * att_lanes (NULL: none):
     * bf16 rows are taken as their even- and odd-indexed values in chunks of
     * 2 * att_lanes, and the state's sums are kept in that order. */
    void (*attend_span)(float *state, float *work, const float *q, int n_heads, float scale, const eng_kv_view *kv,
                        int p0, int p1);
    int att_lanes;
    void (*rmsnorm)(float *y, const float *x, const float *w, int n, float eps);
    void (*silu_mul)(float *g, const float *u, int n);
    void (*softmax)(float *x, int n);
    double (*sum_exp)(const float *x, int n, float shift);
    void (*rope_neox)(float *x, int n_heads, int head_dim, const float *cos, const float *sin);
} eng_kernel_impl;

extern const eng_kernel_impl eng_kernels_portable;
extern const eng_kernel_impl eng_kernels_avx2;
extern const eng_kernel_impl eng_kernels_avx512;

/* Scalar conversions shared by every variant (tails, and the portable path). */
static inline float eng_bf16_to_f32(uint16_t h)
{
    union {
        uint32_t u;
        float f;
    } v = {.u = (uint32_t)h << 16};
    return v.f;
}

float eng_f16_to_f32(uint16_t h);

static inline uint32_t eng_f32_bits(float f)
{
    union {
        float f;
        uint32_t u;
    } v = {.f = f};
    return v.u;
}

/* Where an attention state keeps value e of a head's row: a variant's loop that
 * takes bf16 rows as even- and odd-indexed values (att_lanes, 0 for none) keeps them
 * in chunks of 2 * lanes, even-indexed first; every other row stays in order. */
static inline size_t eng_att_slot(int e, int lanes)
{
    if (lanes == 0)
        return (size_t)e;
    int c = e / (2 * lanes) * (2 * lanes), k = e - c;
    return (size_t)c + (size_t)(k & 1) * lanes + (size_t)(k >> 1);
}

/* f rounded to bf16, nearest even (eng_from_f32's rule); a NaN stays a quiet NaN. */
static inline uint16_t eng_f32_to_bf16(float f)
{
    uint32_t x = eng_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

/* float8 e4m3fn (1 sign bit, 4 exponent bits with bias 7, 3 mantissa bits). Its
 * bits moved into an IEEE half (sign to bit 15, the other 7 to bits 13..7) are the
 * same number times 2^-8 (bias 15 instead of 7; e4m3 subnormals become f16
 * subnormals), which the vector variants widen with vcvtph2ps. One multiply by
 * scale * 2^8 then yields e4m3 value * scale rounded once: the dequantised weight.
 * No f32 subnormal is ever an operand (on x86 each costs a microcode assist). The
 * NaN codes 0x7f/0xff, which no checkpoint holds, read as +-480. */
#define ENG_E4M3_F16_UNSCALE 256.0f

static inline uint16_t eng_e4m3_as_f16(uint8_t b)
{
    return (uint16_t)(((b & 0x80) << 8) | ((b & 0x7f) << 7));
}

/* The dequantised weight: e4m3 value * scale in f32 (|scale| < ENG_FP8_SCALE_MAX). */
static inline float eng_e4m3_scaled(uint8_t b, float scale)
{
    return eng_f16_to_f32(eng_e4m3_as_f16(b)) * (scale * ENG_E4M3_F16_UNSCALE);
}

/* The scales of FP8 row o: one per block of block_in inputs. */
static inline const float *eng_fp8_row_scales(const eng_weight *w, int n_in, int o)
{
    size_t blocks_in = ((size_t)n_in + (size_t)w->block_in - 1) / (size_t)w->block_in;
    return w->scale + (size_t)(o / w->block_out) * blocks_in;
}

/* Selects a variant by name for tests ("portable", "avx2", "avx512"); returns NULL
 * when that variant is unknown or this CPU cannot run it. */
const eng_kernel_impl *eng_kernels_variant(const char *name);

#endif

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
     * o0 <= o < o1 (W rows of n_in elements of dtype wdt). Each output's sum is
     * accumulated in an order that depends only on n_in, never on n_tokens or
     * o0/o1, so results change neither with the batch nor with the thread count. */
    void (*matmul_rows)(float *y, int ldy, const float *x, const void *w, eng_dtype wdt, int n_tokens, int n_in, int o0,
                        int o1);
    void (*to_f32)(float *dst, const void *src, eng_dtype dt, size_t n);
    float (*dot)(const float *a, const float *b, int n);
    void (*axpy)(float *y, float a, const float *x, int n);
    void (*scale)(float *y, float a, int n);
    void (*dot_rows)(float *out, const float *q, const float *k, int n, size_t stride, int dim, float scale);
    void (*axpy_rows)(float *y, const float *p, const float *v, int n, size_t stride, int dim);
    void (*rmsnorm)(float *y, const float *x, const float *w, int n, float eps);
    void (*silu_mul)(float *g, const float *u, int n);
    void (*softmax)(float *x, int n);
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

/* Selects a variant by name for tests ("portable", "avx2", "avx512"); returns NULL
 * when that variant is unknown or this CPU cannot run it. */
const eng_kernel_impl *eng_kernels_variant(const char *name);

#endif

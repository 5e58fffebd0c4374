/* rnd.h: the kernel tests' random inputs (xorshift, fixed seed, so runs repeat). */
#ifndef TEST_KERNELS_RND_H
#define TEST_KERNELS_RND_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd_u32(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static float rnd_f(void) /* uniform in [-1, 1) */
{
    return (float)((rnd_u32() & 0xffffff) / 8388608.0 - 1.0);
}

static uint16_t rnd_bf16(void)
{
    float f = rnd_f();
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

static uint16_t rnd_f16(void) /* finite, magnitude about 2^-6 .. 2 */
{
    uint16_t s = (uint16_t)(rnd_u32() & 1) << 15;
    uint16_t e = (uint16_t)(9 + rnd_u32() % 7);
    return s | (uint16_t)(e << 10) | (uint16_t)(rnd_u32() & 1023);
}

static uint8_t rnd_e4m3(void) /* any e4m3fn code but the two NaNs */
{
    uint8_t b;
    do
        b = (uint8_t)rnd_u32();
    while ((b & 0x7f) == 0x7f);
    return b;
}

/* n random weights of dtype dt (64 spare bytes past the end, never written). */
static void *rnd_weights(eng_dtype dt, size_t n)
{
    void *w = malloc(n * eng_dtype_size(dt) + 64);
    for (size_t i = 0; i < n; i++) {
        if (dt == ENG_DT_F32)
            ((float *)w)[i] = rnd_f();
        else if (dt == ENG_DT_BF16)
            ((uint16_t *)w)[i] = rnd_bf16();
        else if (dt == ENG_DT_F8E4M3)
            ((uint8_t *)w)[i] = rnd_e4m3();
        else
            ((uint16_t *)w)[i] = rnd_f16();
    }
    return w;
}

/* FP8 test matrices use small blocks, so that small shapes hold many blocks and
 * partial ones at both edges. */
#define RND_FP8_BLOCK_OUT 3
#define RND_FP8_BLOCK_IN 32

/* An n_out x n_in matrix of dtype dt. FP8 gets a scale per block with a full
 * 24-bit mantissa (so that weight * scale really rounds), magnitude 2^-9 .. 2^3. */
/* FP8: scales for blocks of RND_FP8_BLOCK_OUT x block_in. */
static eng_weight rnd_matrix_blocks(eng_dtype dt, int n_out, int n_in, int block_in)
{
    eng_weight m = {.w = rnd_weights(dt, (size_t)n_out * n_in), .dt = dt};
    if (dt != ENG_DT_F8E4M3)
        return m;
    size_t n = (size_t)((n_out + RND_FP8_BLOCK_OUT - 1) / RND_FP8_BLOCK_OUT) *
               (size_t)((n_in + block_in - 1) / block_in);
    float *s = malloc((n + 1) * sizeof *s);
    for (size_t i = 0; i < n; i++)
        s[i] = (0.75f + 0.25f * rnd_f()) * (float)(1 << (rnd_u32() % 12)) / 1024.0f;
    m.scale = s;
    m.block_out = RND_FP8_BLOCK_OUT;
    m.block_in = block_in;
    return m;
}

static inline eng_weight rnd_matrix(eng_dtype dt, int n_out, int n_in)
{
    return rnd_matrix_blocks(dt, n_out, n_in, RND_FP8_BLOCK_IN);
}

static void rnd_matrix_free(eng_weight *m)
{
    free((void *)m->w);
    free((void *)m->scale);
}

#endif

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

/* n random weights of dtype dt (64 spare bytes past the end, never written). */
static void *rnd_weights(eng_dtype dt, size_t n)
{
    void *w = malloc(n * eng_dtype_size(dt) + 64);
    for (size_t i = 0; i < n; i++) {
        if (dt == ENG_DT_F32)
            ((float *)w)[i] = rnd_f();
        else if (dt == ENG_DT_BF16)
            ((uint16_t *)w)[i] = rnd_bf16();
        else
            ((uint16_t *)w)[i] = rnd_f16();
    }
    return w;
}

#endif

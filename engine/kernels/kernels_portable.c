/* kernels_portable.c: the plain-C variant of every kernel.
 *
 * It runs on any CPU and is the yardstick the vector variants are tested against,
 * so it favours obvious code: weights are widened (FP8: dequantised) to f32 one
 * chunk at a time into a stack buffer (never a whole-matrix copy), and sums use eight interleaved partial
 * accumulators, which keeps rounding error low and lets the compiler vectorise. */
#include "kernels/kernels_impl.h"

#include <math.h>
#include <string.h>

static void to_f32(float *dst, const void *src, eng_dtype dt, size_t n)
{
    switch (dt) {
    case ENG_DT_F32: memcpy(dst, src, n * sizeof(float)); break;
    case ENG_DT_BF16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++)
            dst[i] = eng_bf16_to_f32(s[i]);
        break;
    }
    case ENG_DT_F16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++)
            dst[i] = eng_f16_to_f32(s[i]);
        break;
    }
    case ENG_DT_F8E4M3: {
        const uint8_t *s = src;
        for (size_t i = 0; i < n; i++)
            dst[i] = eng_e4m3_scaled(s[i], 1.0f);
        break;
    }
    }
}

/* dst[k] = W[o][i0 + k] for k < len, dequantised when FP8. */
static void widen(float *dst, const eng_weight *w, int n_in, int o, int i0, int len)
{
    size_t esz = eng_dtype_size(w->dt);
    const char *row = (const char *)w->w + (size_t)o * n_in * esz;
    if (w->dt != ENG_DT_F8E4M3) {
        to_f32(dst, row + (size_t)i0 * esz, w->dt, (size_t)len);
        return;
    }
    const float *scales = eng_fp8_row_scales(w, n_in, o);
    for (int k = 0; k < len; k++)
        dst[k] = eng_e4m3_scaled((uint8_t)row[i0 + k], scales[(i0 + k) / w->block_in]);
}

static float dot(const float *a, const float *b, int n)
{
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += a[i + k] * b[i + k];
    for (int k = 0; i < n; i++, k++)
        acc[k] += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* Widening 256 weights at a time keeps the buffer in L1 while every token of the
 * batch is multiplied against it. */
#define CHUNK 256

static void matmul_rows(float *y, int ldy, const float *x, const eng_weight *w, int n_tokens, int n_in, int o0, int o1)
{
    float buf[CHUNK];
    for (int o = o0; o < o1; o++) {
        for (int t = 0; t < n_tokens; t++)
            y[(size_t)t * ldy + o] = 0.0f;
        for (int c = 0; c < n_in; c += CHUNK) {
            int len = n_in - c < CHUNK ? n_in - c : CHUNK;
            widen(buf, w, n_in, o, c, len);
            for (int t = 0; t < n_tokens; t++)
                y[(size_t)t * ldy + o] += dot(x + (size_t)t * n_in + c, buf, len);
        }
    }
}

static void axpy(float *y, float a, const float *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void rmsnorm(float *y, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++)
        y[i] = x[i] * r * w[i];
}

static void silu_mul(float *g, const float *u, int n)
{
    for (int i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void softmax(float *x, int n)
{
    if (n <= 0)
        return;
    float mx = x[0];
    for (int i = 1; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++)
        x[i] *= inv;
}

static double sum_exp(const float *x, int n, float shift)
{
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += expf(x[i] - shift);
    return sum;
}

static void rope_neox(float *x, int n_heads, int head_dim, const float *cos, const float *sin)
{
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            float a = v[i], b = v[i + half];
            v[i] = a * cos[i] - b * sin[i];
            v[i + half] = a * sin[i] + b * cos[i];
        }
    }
}

const eng_kernel_impl eng_kernels_portable = {
    .name = "portable",
    .matmul_rows = matmul_rows,
    .to_f32 = to_f32,
    .dot = dot,
    .axpy = axpy,
    .rmsnorm = rmsnorm,
    .silu_mul = silu_mul,
    .softmax = softmax,
    .sum_exp = sum_exp,
    .rope_neox = rope_neox,
};

/* kernels_simd.h: the vector kernels, written once for any SIMD width.
 *
 * kernels_avx2.c and kernels_avx512.c define a small vocabulary of vector macros
 * (V, VL, V_LOAD, V_FMA, ...) and then include this file, which turns them into a
 * complete eng_kernel_impl named by SIMD_IMPL_NAME. Keeping one copy of the loops
 * means the two variants cannot drift apart in blocking or summation order.
 *
 * eng_matmul has two loop nests:
 *  - few tokens (decode, n_tokens < GEMM_MIN_TOKENS): memory bound. Each weight row
 *    is streamed once, front to back, against up to 4 tokens at a time; each
 *    output keeps four vector accumulators with lanes over the input index,
 *    combined at the end in a fixed order. The order depends only on n_in, so a
 *    token's result is the same alone or in any small batch.
 *  - many tokens (prefill): compute bound. A panel of PW rows is widened to f32
 *    and transposed into an L1-sized buffer of KC inputs, then reused by every
 *    token; the micro-kernel keeps 6 tokens x PW outputs in registers and adds one
 *    input at a time with FMA. Each output is a plain sequential sum over the
 *    input index, so blocking and thread split never change it.
 * Activations stay f32 throughout (weights are exact in f32), which is what the
 * conformance tolerances against llama.cpp's f32 reference need. */
#ifndef SIMD_IMPL_NAME
#error "define the vector vocabulary before including kernels_simd.h"
#endif

#include <math.h>
#include <string.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))

#define GEMM_MIN_TOKENS ENG_MATMUL_BATCH_INVARIANT
#define PW (2 * VL)              /* rows per prefill panel */
#define KC (4096 / PW)           /* inputs per packed block: PW * KC floats = 16 KiB */
#define TB 6                     /* tokens per prefill micro-tile */
#define TAIL_TOKENS 64           /* token chunk for a panel narrower than PW */

/* ---- loading VL weights of any dtype as f32 ---- */

ALWAYS_INLINE size_t dt_size(eng_dtype dt) /* inlined, unlike eng_dtype_size */
{
    return dt == ENG_DT_F32 ? 4 : 2;
}

ALWAYS_INLINE V load_w(const char *row, int i, eng_dtype dt)
{
    switch (dt) {
    case ENG_DT_BF16: return V_LOAD_BF16((const uint16_t *)row + i);
    case ENG_DT_F16: return V_LOAD_F16((const uint16_t *)row + i);
    default: return V_LOAD((const float *)row + i);
    }
}

static float scalar_w(const char *row, int i, eng_dtype dt)
{
    switch (dt) {
    case ENG_DT_BF16: return eng_bf16_to_f32(((const uint16_t *)row)[i]);
    case ENG_DT_F16: return eng_f16_to_f32(((const uint16_t *)row)[i]);
    default: return ((const float *)row)[i];
    }
}

/* ---- decode: lanes over the input index ---- */

/* One weight row against T tokens (T <= 4). Four accumulators per output take
 * the input chunks of VL in turn (chunk j goes to accumulator j % 4), so a row is
 * read front to back as one sequential stream, which is what the hardware
 * prefetcher handles best, and the FMA latency chain is split four ways. */
ALWAYS_INLINE void dec_tile(float *y, int ldy, const float *x, int n_in, const char *w,
                            eng_dtype dt, const int T)
{
    V acc[4][4];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
#pragma GCC unroll 4
        for (int a = 0; a < 4; a++)
            acc[t][a] = V_ZERO();
    int i = 0;
    for (; i + 4 * VL <= n_in; i += 4 * VL) {
#pragma GCC unroll 4
        for (int a = 0; a < 4; a++) {
            V wv = load_w(w, i + a * VL, dt);
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                acc[t][a] = V_FMA(wv, V_LOAD(x + (size_t)t * n_in + i + a * VL), acc[t][a]);
        }
    }
    int a = 0;
    for (; i + VL <= n_in; i += VL, a++) {
        V wv = load_w(w, i, dt);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            acc[t][a] = V_FMA(wv, V_LOAD(x + (size_t)t * n_in + i), acc[t][a]);
    }
    if (i < n_in) {
        /* The last partial chunk goes through zero-padded copies, exactly as a
         * masked load would. */
        float wt[VL], xt[VL];
        int rem = n_in - i;
        for (int k = 0; k < VL; k++)
            wt[k] = k < rem ? scalar_w(w, i + k, dt) : 0.0f;
        V wv = V_LOAD(wt);
        for (int t = 0; t < T; t++) {
            for (int k = 0; k < VL; k++)
                xt[k] = k < rem ? x[(size_t)t * n_in + i + k] : 0.0f;
            acc[t][a] = V_FMA(wv, V_LOAD(xt), acc[t][a]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
        y[(size_t)t * ldy] = V_REDUCE(V_ADD(V_ADD(acc[t][0], acc[t][1]), V_ADD(acc[t][2], acc[t][3])));
}

ALWAYS_INLINE void dec_rows(float *y, int ldy, const float *x, const void *w, eng_dtype dt,
                            int n_tokens, int n_in, int o0, int o1)
{
    size_t row_bytes = (size_t)n_in * dt_size(dt);
    for (int o = o0; o < o1; o++) {
        const char *wr = (const char *)w + (size_t)o * row_bytes;
        int t = 0;
        for (; t + 4 <= n_tokens; t += 4)
            dec_tile(y + (size_t)t * ldy + o, ldy, x + (size_t)t * n_in, n_in, wr, dt, 4);
        float *yt = y + (size_t)t * ldy + o;
        const float *xt = x + (size_t)t * n_in;
        switch (n_tokens - t) {
        case 3: dec_tile(yt, ldy, xt, n_in, wr, dt, 3); break;
        case 2: dec_tile(yt, ldy, xt, n_in, wr, dt, 2); break;
        case 1: dec_tile(yt, ldy, xt, n_in, wr, dt, 1); break;
        default: break;
        }
    }
}

/* ---- prefill: packed panels, sequential FMA over the input index ---- */

/* buf[k][r] = W[r][k0 + k] for r < valid (zero beyond), k < kc. */
static void pack_panel(float *buf, const char *w, size_t row_bytes, int valid, int k0, int kc,
                       eng_dtype dt)
{
    int r = 0;
    for (; r < valid; r++) {
        const char *row = w + r * row_bytes;
        if (dt == ENG_DT_BF16) {
            const uint16_t *s = (const uint16_t *)row + k0;
            for (int k = 0; k < kc; k++)
                buf[k * PW + r] = eng_bf16_to_f32(s[k]);
        } else if (dt == ENG_DT_F16) {
            float tmp[KC];
            int k = 0;
            for (; k + VL <= kc; k += VL)
                V_STORE(tmp + k, V_LOAD_F16((const uint16_t *)row + k0 + k));
            for (; k < kc; k++)
                tmp[k] = eng_f16_to_f32(((const uint16_t *)row)[k0 + k]);
            for (k = 0; k < kc; k++)
                buf[k * PW + r] = tmp[k];
        } else {
            const float *s = (const float *)row + k0;
            for (int k = 0; k < kc; k++)
                buf[k * PW + r] = s[k];
        }
    }
    for (; r < PW; r++)
        for (int k = 0; k < kc; k++)
            buf[k * PW + r] = 0.0f;
}

/* c[t][0..PW) (row stride ldc) += x[t][0..kc) * buf, for NT tokens; first = start from 0. */
ALWAYS_INLINE void gemm_micro(float *c, int ldc, const float *x, int n_in, const float *buf,
                              int kc, int first, const int NT)
{
    V acc[TB][2];
#pragma GCC unroll 6
    for (int t = 0; t < NT; t++) {
        acc[t][0] = first ? V_ZERO() : V_LOAD(c + (size_t)t * ldc);
        acc[t][1] = first ? V_ZERO() : V_LOAD(c + (size_t)t * ldc + VL);
    }
    for (int k = 0; k < kc; k++) {
        V w0 = V_LOAD(buf + k * PW), w1 = V_LOAD(buf + k * PW + VL);
#pragma GCC unroll 6
        for (int t = 0; t < NT; t++) {
            V xb = V_SET1(x[(size_t)t * n_in + k]);
            acc[t][0] = V_FMA(xb, w0, acc[t][0]);
            acc[t][1] = V_FMA(xb, w1, acc[t][1]);
        }
    }
#pragma GCC unroll 6
    for (int t = 0; t < NT; t++) {
        V_STORE(c + (size_t)t * ldc, acc[t][0]);
        V_STORE(c + (size_t)t * ldc + VL, acc[t][1]);
    }
}

/* All PW columns of c are written (zero weights beyond `valid`). */
static void gemm_panel(float *c, int ldc, const float *x, int n_tokens, int n_in, const char *w,
                       size_t row_bytes, int valid, eng_dtype dt)
{
    float buf[KC * PW] __attribute__((aligned(64)));
    for (int k0 = 0; k0 < n_in; k0 += KC) {
        int kc = n_in - k0 < KC ? n_in - k0 : KC;
        pack_panel(buf, w, row_bytes, valid, k0, kc, dt);
        int first = k0 == 0;
        int t = 0;
        for (; t + TB <= n_tokens; t += TB)
            gemm_micro(c + (size_t)t * ldc, ldc, x + (size_t)t * n_in + k0, n_in, buf, kc, first, TB);
        const float *xt = x + (size_t)t * n_in + k0;
        float *ct = c + (size_t)t * ldc;
        switch (n_tokens - t) {
        case 5: gemm_micro(ct, ldc, xt, n_in, buf, kc, first, 5); break;
        case 4: gemm_micro(ct, ldc, xt, n_in, buf, kc, first, 4); break;
        case 3: gemm_micro(ct, ldc, xt, n_in, buf, kc, first, 3); break;
        case 2: gemm_micro(ct, ldc, xt, n_in, buf, kc, first, 2); break;
        case 1: gemm_micro(ct, ldc, xt, n_in, buf, kc, first, 1); break;
        default: break;
        }
    }
}

static void gemm_rows(float *y, int ldy, const float *x, const void *w, eng_dtype dt,
                      int n_tokens, int n_in, int o0, int o1)
{
    size_t row_bytes = (size_t)n_in * dt_size(dt);
    int o = o0;
    for (; o + PW <= o1; o += PW)
        gemm_panel(y + o, ldy, x, n_tokens, n_in, (const char *)w + (size_t)o * row_bytes, row_bytes, PW, dt);
    if (o < o1) {
        /* A narrow last panel computes into a scratch tile, a chunk of tokens at a
         * time, and copies out the valid columns. */
        float tile[TAIL_TOKENS * PW] __attribute__((aligned(64)));
        int valid = o1 - o;
        for (int t0 = 0; t0 < n_tokens; t0 += TAIL_TOKENS) {
            int nt = n_tokens - t0 < TAIL_TOKENS ? n_tokens - t0 : TAIL_TOKENS;
            gemm_panel(tile, PW, x + (size_t)t0 * n_in, nt, n_in, (const char *)w + (size_t)o * row_bytes,
                       row_bytes, valid, dt);
            for (int t = 0; t < nt; t++)
                memcpy(y + (size_t)(t0 + t) * ldy + o, tile + (size_t)t * PW, (size_t)valid * sizeof(float));
        }
    }
}

static void matmul_rows(float *y, int ldy, const float *x, const void *w, eng_dtype dt,
                        int n_tokens, int n_in, int o0, int o1)
{
    if (n_tokens >= GEMM_MIN_TOKENS) {
        gemm_rows(y, ldy, x, w, dt, n_tokens, n_in, o0, o1);
        return;
    }
    /* One instantiation per dtype so the inner loop has no dtype branch. */
    switch (dt) {
    case ENG_DT_BF16: dec_rows(y, ldy, x, w, ENG_DT_BF16, n_tokens, n_in, o0, o1); break;
    case ENG_DT_F16: dec_rows(y, ldy, x, w, ENG_DT_F16, n_tokens, n_in, o0, o1); break;
    case ENG_DT_F32: dec_rows(y, ldy, x, w, ENG_DT_F32, n_tokens, n_in, o0, o1); break;
    }
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
    const char *s = src; /* bf16 and f16 are both two bytes */
    size_t i = 0;
    for (; i + VL <= n; i += VL)
        V_STORE(dst + i, load_w(s + 2 * i, 0, dt));
    for (; i < n; i++)
        dst[i] = scalar_w(s + 2 * i, 0, dt);
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

/* Four keys at a time, one accumulator each: independent chains hide the FMA
 * latency that a single 128-element dot cannot. */
static void dot_rows(float *out, const float *q, const float *k, int n, size_t stride, int dim, float scale)
{
    int dv = dim / VL * VL;
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        const float *k0 = k + (size_t)j * stride, *k1 = k0 + stride, *k2 = k1 + stride, *k3 = k2 + stride;
        V a0 = V_ZERO(), a1 = V_ZERO(), a2 = V_ZERO(), a3 = V_ZERO();
        for (int d = 0; d < dv; d += VL) {
            V qv = V_LOAD(q + d);
            a0 = V_FMA(qv, V_LOAD(k0 + d), a0);
            a1 = V_FMA(qv, V_LOAD(k1 + d), a1);
            a2 = V_FMA(qv, V_LOAD(k2 + d), a2);
            a3 = V_FMA(qv, V_LOAD(k3 + d), a3);
        }
        float s0 = V_REDUCE(a0), s1 = V_REDUCE(a1), s2 = V_REDUCE(a2), s3 = V_REDUCE(a3);
        for (int d = dv; d < dim; d++) {
            s0 += q[d] * k0[d];
            s1 += q[d] * k1[d];
            s2 += q[d] * k2[d];
            s3 += q[d] * k3[d];
        }
        out[j] = s0 * scale;
        out[j + 1] = s1 * scale;
        out[j + 2] = s2 * scale;
        out[j + 3] = s3 * scale;
    }
    for (; j < n; j++)
        out[j] = dot(q, k + (size_t)j * stride, dim) * scale;
}

/* y is held in up to four vectors while every row is added, so it is loaded and
 * stored once per call rather than once per row. */
static void axpy_rows(float *y, const float *p, const float *v, int n, size_t stride, int dim)
{
    int d = 0;
    for (; d + 4 * VL <= dim; d += 4 * VL) {
        V y0 = V_LOAD(y + d), y1 = V_LOAD(y + d + VL), y2 = V_LOAD(y + d + 2 * VL), y3 = V_LOAD(y + d + 3 * VL);
        for (int j = 0; j < n; j++) {
            const float *vr = v + (size_t)j * stride + d;
            V pj = V_SET1(p[j]);
            y0 = V_FMA(pj, V_LOAD(vr), y0);
            y1 = V_FMA(pj, V_LOAD(vr + VL), y1);
            y2 = V_FMA(pj, V_LOAD(vr + 2 * VL), y2);
            y3 = V_FMA(pj, V_LOAD(vr + 3 * VL), y3);
        }
        V_STORE(y + d, y0);
        V_STORE(y + d + VL, y1);
        V_STORE(y + d + 2 * VL, y2);
        V_STORE(y + d + 3 * VL, y3);
    }
    for (; d + VL <= dim; d += VL) {
        V y0 = V_LOAD(y + d);
        for (int j = 0; j < n; j++)
            y0 = V_FMA(V_SET1(p[j]), V_LOAD(v + (size_t)j * stride + d), y0);
        V_STORE(y + d, y0);
    }
    for (; d < dim; d++) {
        float acc = y[d];
        for (int j = 0; j < n; j++)
            acc += p[j] * v[(size_t)j * stride + d];
        y[d] = acc;
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
        float gt[VL] = { 0 }, ut[VL] = { 0 };
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
    .to_f32 = to_f32,
    .dot = dot,
    .axpy = axpy,
    .scale = scale,
    .dot_rows = dot_rows,
    .axpy_rows = axpy_rows,
    .rmsnorm = rmsnorm,
    .silu_mul = silu_mul,
    .softmax = softmax,
    .rope_neox = rope_neox,
};

/* kernels.c: picks the kernel variant for this CPU and divides eng_matmul between
 * threads.
 *
 * The variants (kernels_portable.c, kernels_avx2.c, kernels_avx512.c) only supply
 * single-threaded loops; this file owns everything that must be the same for all
 * of them: dtype facts, the choice of variant (CPU features, or TANDEM_ISA to force
 * one), and the split of a matmul's output rows into contiguous ranges, a few per
 * thread. Each output element is computed by exactly one task, alone, so the
 * numbers depend neither on the thread count nor on which thread ran what. */
#include "kernels/kernels_impl.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

size_t eng_dtype_size(eng_dtype dt)
{
    switch (dt) {
    case ENG_DT_F32: return 4;
    case ENG_DT_F16: return 2;
    case ENG_DT_BF16: return 2;
    case ENG_DT_F8E4M3: return 1;
    }
    return 0;
}

const char *eng_dtype_name(eng_dtype dt)
{
    switch (dt) {
    case ENG_DT_F32: return "f32";
    case ENG_DT_F16: return "f16";
    case ENG_DT_BF16: return "bf16";
    case ENG_DT_F8E4M3: return "f8e4m3";
    }
    return "unknown";
}

size_t eng_fp8_scales_check(const float *scale, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(scale[i]) || fabsf(scale[i]) >= ENG_FP8_SCALE_MAX)
            return i;
    return n;
}

/* IEEE half to single, exact for every input (subnormals, inf, NaN payloads). */
float eng_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {
        /* Subnormal half: normalise the mantissa into a single's exponent. */
        int e = -1;
        do {
            mant <<= 1;
            e++;
        } while (!(mant & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((mant & 0x3ff) << 13);
    }
    union {
        uint32_t u;
        float f;
    } v = {.u = bits};
    return v.f;
}

/* Keeps the bits of m above the lowest shift, rounded to nearest even (shift >= 1). */
static uint32_t shift_round_even(uint32_t m, int shift)
{
    uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    return h + (rem > half || (rem == half && (h & 1)));
}

static uint16_t f32_to_f16(float f)
{
    uint32_t x = eng_f32_bits(f), ax = x & 0x7fffffffu;
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    if (ax > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    if (ax >= 0x477ff000u) /* 65520 and up (the tie above 65504) round to infinity */
        return (uint16_t)(sign | 0x7c00);
    if (ax >= 0x38800000u) /* normal half; a carry out of the mantissa bumps the exponent */
        return (uint16_t)(sign | shift_round_even(ax - 0x38000000u, 13));
    int shift = 126 - (int)(ax >> 23); /* subnormal half: units of 2^-24 */
    if (shift > 24)
        return sign;
    return (uint16_t)(sign | shift_round_even((ax & 0x7fffffu) | 0x800000u, shift));
}

static inline const eng_kernel_impl *K(void); /* the chosen variant, below */

void eng_from_f32(void *dst, const float *src, eng_dtype dt, size_t n)
{
    uint16_t *d16 = dst;
    switch (dt) {
    case ENG_DT_BF16:
        if (K()->from_f32_bf16)
            K()->from_f32_bf16(d16, src, n);
        else
            for (size_t i = 0; i < n; i++)
                d16[i] = eng_f32_to_bf16(src[i]);
        break;
    case ENG_DT_F16:
        for (size_t i = 0; i < n; i++)
            d16[i] = f32_to_f16(src[i]);
        break;
    default: memcpy(dst, src, n * sizeof(float)); break;
    }
}

void eng_round_to(eng_dtype dt, float *x, size_t n)
{
    switch (dt) {
    case ENG_DT_BF16:
        for (size_t i = 0; i < n; i++)
            x[i] = eng_bf16_to_f32(eng_f32_to_bf16(x[i]));
        break;
    case ENG_DT_F16:
        for (size_t i = 0; i < n; i++)
            x[i] = eng_f16_to_f32(f32_to_f16(x[i]));
        break;
    default: break;
    }
}

#if defined(__x86_64__) || defined(__i386__)
/* F16C and AVX512-BF16 are read from CPUID directly: clang before 16 rejects "f16c" and
 * "avx512bf16" in __builtin_cpu_supports. Whether the OS saves the wider registers is
 * part of the "avx2" and "avx512f" answers they are always combined with. */
static int cpu_has_f16c(void)
{
    unsigned eax, ebx, ecx, edx;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
}

static int cpu_has_avx512bf16(void)
{
    unsigned eax, ebx, ecx, edx;
    return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & bit_AVX512BF16);
}
#endif

static int cpu_has(const char *isa)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (strcmp(isa, "avx512") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vbmi") && cpu_has_avx512bf16() && __builtin_cpu_supports("fma") &&
               cpu_has_f16c();
    if (strcmp(isa, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
#endif
    return strcmp(isa, "portable") == 0;
}

static const eng_kernel_impl *variant_table(const char *name)
{
    if (strcmp(name, "portable") == 0)
        return &eng_kernels_portable;
#if defined(__x86_64__)
    if (strcmp(name, "avx2") == 0)
        return &eng_kernels_avx2;
    if (strcmp(name, "avx512") == 0)
        return &eng_kernels_avx512;
#endif
    return NULL;
}

const eng_kernel_impl *eng_kernels_variant(const char *name)
{
    const eng_kernel_impl *impl = variant_table(name);
    return impl && cpu_has(name) ? impl : NULL;
}

static _Atomic(const eng_kernel_impl *) g_impl;

/* TANDEM_ISA forces a variant; an unknown or unsupported value falls back to the
 * best available one rather than failing, since init cannot report errors. */
const char *eng_kernels_init(void)
{
    const eng_kernel_impl *impl = NULL;
    const char *forced = getenv("TANDEM_ISA");
    if (forced && *forced)
        impl = eng_kernels_variant(forced);
    static const char *const order[] = {"avx512", "avx2", "portable"};
    for (size_t i = 0; !impl && i < sizeof order / sizeof order[0]; i++)
        impl = eng_kernels_variant(order[i]);
    atomic_store(&g_impl, impl);
    return impl->name;
}

static inline const eng_kernel_impl *K(void)
{
    const eng_kernel_impl *impl = atomic_load_explicit(&g_impl, memory_order_acquire);
    if (!impl) {
        eng_kernels_init();
        impl = atomic_load(&g_impl);
    }
    return impl;
}

const char *eng_kernels_isa(void)
{
    return K()->name;
}

/* ---- eng_matmul: the thread split ---- */

/* Rows are handed out in blocks of 16 so that every variant's output tiles stay
 * whole inside a task (only speed depends on it, never a result). The blocks of
 * all of a call's matrices form one list, cut into contiguous runs, a few per
 * thread: a thread that has its core to itself takes over work from one that is
 * sharing (the pool hands tasks to whichever thread is free). Tiny products run on
 * the caller: waking threads would cost more than the work. */
#define ROW_ALIGN 16
#define TASKS_PER_THREAD 4
#define MIN_PARALLEL_MACS (1 << 15)

typedef struct matmul_job {
    const eng_kernel_impl *impl;
    const float *x;
    const void *xr; /* x rounded for the matrices with x_bf16: bf16 (matmul_rows_bf16), else f32 */
    const eng_matmul_out *outs;
    int n_outs;
    int n_tokens, n_in;
    int blocks_per_task;
} matmul_job;

static int row_blocks(int n_out)
{
    return n_out > 0 ? (n_out + ROW_ALIGN - 1) / ROW_ALIGN : 0;
}

/* Blocks [b0, b1) of the list, matrix by matrix. */
static void matmul_task(void *ctx, int task)
{
    const matmul_job *j = ctx;
    int b0 = task * j->blocks_per_task, b1 = b0 + j->blocks_per_task;
    for (int p = 0, first = 0; p < j->n_outs && first < b1; first += row_blocks(j->outs[p].n_out), p++) {
        const eng_matmul_out *out = &j->outs[p];
        int o0 = (b0 > first ? b0 - first : 0) * ROW_ALIGN, o1 = (b1 - first) * ROW_ALIGN;
        if (o1 > out->n_out)
            o1 = out->n_out;
        if (o0 >= o1)
            continue;
        if (!out->w->x_bf16)
            j->impl->matmul_rows(out->y, out->n_out, j->x, out->w, j->n_tokens, j->n_in, o0, o1);
        else if (j->impl->matmul_rows_bf16)
            j->impl->matmul_rows_bf16(out->y, out->n_out, j->xr, out->w, j->n_tokens, j->n_in, o0, o1);
        else
            j->impl->matmul_rows(out->y, out->n_out, j->xr, out->w, j->n_tokens, j->n_in, o0, o1);
    }
}

void eng_matmul_multi(eng_pool *pool, const float *x, float *scratch, int n_tokens, int n_in,
                      const eng_matmul_out *outs, int n_outs)
{
    if (n_tokens <= 0)
        return;
    long long rows = 0;
    int blocks = 0, x_bf16 = 0;
    for (int p = 0; p < n_outs; p++) {
        if (outs[p].n_out <= 0)
            continue;
        if (n_in <= 0) /* an empty sum */
            memset(outs[p].y, 0, (size_t)n_tokens * outs[p].n_out * sizeof(float));
        rows += outs[p].n_out;
        blocks += row_blocks(outs[p].n_out);
        x_bf16 |= outs[p].w->x_bf16;
    }
    if (n_in <= 0 || blocks == 0)
        return;
    matmul_job j = {.impl = K(), .x = x, .outs = outs, .n_outs = n_outs, .n_tokens = n_tokens, .n_in = n_in};
    if (x_bf16) { /* once per call, on the caller: each row is rounded on its own */
        size_t n = (size_t)n_tokens * (size_t)n_in;
        if (j.impl->matmul_rows_bf16) {
            eng_from_f32(scratch, x, ENG_DT_BF16, n);
        } else {
            memcpy(scratch, x, n * sizeof(float));
            eng_round_to(ENG_DT_BF16, scratch, n);
        }
        j.xr = scratch;
    }
    int n_threads = eng_pool_threads(pool);
    int n_tasks = n_threads > 1 ? n_threads * TASKS_PER_THREAD : 1;
    if ((long long)n_tokens * n_in * rows < MIN_PARALLEL_MACS)
        n_tasks = 1;
    if (n_tasks > blocks)
        n_tasks = blocks;
    j.blocks_per_task = (blocks + n_tasks - 1) / n_tasks;
    if (n_tasks == 1) {
        matmul_task(&j, 0);
        return;
    }
    eng_pool_run(pool, matmul_task, &j, n_tasks);
}

void eng_matmul_weight(eng_pool *pool, float *y, const float *x, float *scratch, const eng_weight *w, int n_tokens,
                       int n_in, int n_out)
{
    eng_matmul_out out = {.y = y, .w = w, .n_out = n_out};
    eng_matmul_multi(pool, x, scratch, n_tokens, n_in, &out, 1);
}

/* One scale of 1 for all of an FP8 matrix: a block as large as any matrix
 * (a multiple of ENG_FP8_BLOCK_ALIGN). */
#define WHOLE_MATRIX_BLOCK (1 << 30)

void eng_matmul(eng_pool *pool, float *y, const float *x, const void *w, eng_dtype wdt, int n_tokens, int n_in,
                int n_out)
{
    static const float unit_scale = 1.0f;
    eng_weight wt = {.w = w, .dt = wdt};
    if (wdt == ENG_DT_F8E4M3)
        wt = (eng_weight){
            .w = w, .dt = wdt, .scale = &unit_scale, .block_out = WHOLE_MATRIX_BLOCK, .block_in = WHOLE_MATRIX_BLOCK};
    eng_matmul_weight(pool, y, x, NULL, &wt, n_tokens, n_in, n_out);
}

/* ---- the rest forward to the chosen variant ---- */

void eng_to_f32(float *dst, const void *src, eng_dtype dt, size_t n)
{
    K()->to_f32(dst, src, dt, n);
}

float eng_dot(const float *a, const float *b, int n)
{
    return K()->dot(a, b, n);
}

void eng_axpy(float *y, float a, const float *x, int n)
{
    K()->axpy(y, a, x, n);
}

static float att_value(const char *row, int e, eng_dtype dt)
{
    switch (dt) {
    case ENG_DT_BF16: return eng_bf16_to_f32(((const uint16_t *)(const void *)row)[e]);
    case ENG_DT_F16: return eng_f16_to_f32(((const uint16_t *)(const void *)row)[e]);
    default: return ((const float *)(const void *)row)[e];
    }
}

/* Whether the variant's own loop takes this cache (head_dim a multiple of its
 * 2 * att_lanes values); the scalar loop below takes the rest. */
static int att_vector(const eng_kernel_impl *impl, const eng_kv_view *kv)
{
    return impl->attend_span && kv->dim % (2 * impl->att_lanes) == 0;
}

/* The lanes the state of this cache is arranged by (eng_att_slot). */
static int att_lanes(const eng_kernel_impl *impl, const eng_kv_view *kv)
{
    return kv->dt == ENG_DT_BF16 && att_vector(impl, kv) ? impl->att_lanes : 0;
}

void eng_attend_span(float *state, float *work, const float *q, int n_heads, float scale, const eng_kv_view *kv, int p0,
                     int p1)
{
    const eng_kernel_impl *impl = K();
    if (att_vector(impl, kv)) {
        impl->attend_span(state, work, q, n_heads, scale, kv, p0, p1);
        return;
    }
    /* Scalar, in order: the same online softmax group by group. */
    int dim = kv->dim, nkv = kv->n_kv_heads, group = n_heads / nkv, bs = kv->block_size;
    size_t row = (size_t)dim * eng_dtype_size(kv->dt), head_bytes = (size_t)bs * row;
    float *m = state, *l = state + n_heads, *o = state + 2 * (size_t)n_heads, *s = work;
    for (int h = 0; h < n_heads; h++) {
        m[h] = -INFINITY;
        l[h] = 0.0f;
    }
    memset(o, 0, (size_t)n_heads * dim * sizeof(float));
    for (int j0 = p0; j0 < p1;) {
        int j1 = (j0 / ENG_ATT_GROUP + 1) * ENG_ATT_GROUP;
        if (j1 > p1)
            j1 = p1;
        for (int h = 0; h < n_heads; h++) {
            float *sh = s + (size_t)h * ENG_ATT_GROUP, gm = -INFINITY, sum = 0.0f;
            for (int j = j0; j < j1; j++) {
                const char *k = (const char *)kv->units[j / bs] + (size_t)(h / group) * head_bytes +
                                (size_t)(j % bs) * row;
                float d = 0.0f;
                for (int e = 0; e < dim; e++)
                    d += q[(size_t)h * dim + e] * att_value(k, e, kv->dt);
                sh[j - j0] = d * scale;
                gm = sh[j - j0] > gm ? sh[j - j0] : gm;
            }
            if (gm > m[h]) {
                float f = expf(m[h] - gm);
                l[h] *= f;
                for (int e = 0; e < dim; e++)
                    o[(size_t)h * dim + e] *= f;
                m[h] = gm;
            }
            for (int j = j0; j < j1; j++) {
                float p = expf(sh[j - j0] - m[h]);
                const char *v = (const char *)kv->units[j / bs] + (size_t)(nkv + h / group) * head_bytes +
                                (size_t)(j % bs) * row;
                sum += p;
                for (int e = 0; e < dim; e++)
                    o[(size_t)h * dim + e] += p * att_value(v, e, kv->dt);
            }
            l[h] += sum;
        }
        j0 = j1;
    }
}

void eng_attend_merge(float *state, const float *next, int n_heads, int dim)
{
    float *m = state, *l = state + n_heads, *o = state + 2 * (size_t)n_heads;
    const float *nm = next, *nl = next + n_heads, *no = next + 2 * (size_t)n_heads;
    for (int h = 0; h < n_heads; h++) {
        float top = m[h] > nm[h] ? m[h] : nm[h], f = expf(m[h] - top), nf = expf(nm[h] - top);
        l[h] = l[h] * f + nl[h] * nf;
        for (size_t e = (size_t)h * dim; e < (size_t)(h + 1) * dim; e++)
            o[e] = o[e] * f + no[e] * nf;
        m[h] = top;
    }
}

void eng_attend_finish(float *y, const float *state, int n_heads, const eng_kv_view *kv)
{
    int dim = kv->dim, lanes = att_lanes(K(), kv);
    const float *l = state + n_heads, *o = state + 2 * (size_t)n_heads;
    for (int h = 0; h < n_heads; h++) {
        float inv = 1.0f / l[h];
        for (int e = 0; e < dim; e++)
            y[(size_t)h * dim + e] = o[(size_t)h * dim + eng_att_slot(e, lanes)] * inv;
    }
}

void eng_rmsnorm(float *y, const float *x, const float *w, int n, float eps)
{
    K()->rmsnorm(y, x, w, n, eps);
}

void eng_silu_mul(float *g, const float *u, int n)
{
    K()->silu_mul(g, u, n);
}

void eng_softmax(float *x, int n)
{
    K()->softmax(x, n);
}

double eng_sum_exp(const float *x, int n, float shift)
{
    return K()->sum_exp(x, n, shift);
}

void eng_rope_neox(float *x, int n_heads, int head_dim, const float *cos, const float *sin)
{
    K()->rope_neox(x, n_heads, head_dim, cos, sin);
}

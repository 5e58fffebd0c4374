/* kernels.h: the numeric kernels under the forward pass.
 *
 * The model code (engine/model) describes the math; everything that touches many
 * numbers goes through here. Implementations exist for AVX-512 (+BF16), AVX2+FMA
 * and portable C; eng_kernels_init() picks one at run time from the CPU's features
 * (TANDEM_ISA=avx512|avx2|portable forces one, for tests). All activations are f32;
 * weights may be bf16, f16, f32 or FP8 (e4m3 with block scales) and are read in
 * place, never copied to f32. */
#ifndef ENG_KERNELS_H
#define ENG_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/threadpool.h"

typedef enum eng_dtype {
    ENG_DT_F32 = 0,
    ENG_DT_F16 = 1,
    ENG_DT_BF16 = 2,
    ENG_DT_F8E4M3 = 3, /* float8 e4m3fn: weights only, with block scales (eng_weight) */
} eng_dtype;

size_t eng_dtype_size(eng_dtype dt);
const char *eng_dtype_name(eng_dtype dt);

/* Chooses the implementation; safe to call more than once. Returns its name. */
const char *eng_kernels_init(void);
const char *eng_kernels_isa(void);

/* A weight matrix as the checkpoint stores it, row-major [n_out][n_in] (the Hugging
 * Face Linear layout), used in place. FP8 (Qwen's -FP8 checkpoints): element [o][i]
 * is its e4m3 value times scale[o / block_out][i / block_in], and the kernels use
 * exactly that product rounded once to f32 (what a checkpoint dequantised to f32
 * holds), so an FP8 model computes bitwise what its f32 dequantisation does. */
typedef struct eng_weight {
    const void *w; /* NULL: not loaded (an expert this process does not own) */
    eng_dtype dt;
    const float *scale;      /* F8E4M3 only: [ceil(n_out / block_out)][ceil(n_in / block_in)] */
    int block_out, block_in; /* F8E4M3 only; block_in a multiple of ENG_FP8_BLOCK_ALIGN */
    /* BF16, or F8E4M3 with block_in a multiple of ENG_FP8_BF16_BLOCK_ALIGN
     * (--matmul-dtype bf16): every input is rounded to bf16 (nearest even) before it
     * meets this matrix, as llama.cpp does for bf16 weights, and the products of bf16
     * pairs (an e4m3 value is exact in bf16) are summed in f32, FP8 block by block
     * and each block's sum times its scale; with AVX512-BF16 twice the multiply-adds
     * per instruction. 0: inputs stay f32 (exact). */
    int x_bf16;
} eng_weight;

/* FP8 blocks of this many inputs (or a multiple) can take bf16 inputs: the width
 * of one e4m3-to-bf16 conversion. */
#define ENG_FP8_BF16_BLOCK_ALIGN 64

/* block_in must be a multiple of this (the widest vector), so that a vector of
 * inputs never straddles two scales. Every scale must be finite with magnitude
 * below ENG_FP8_SCALE_MAX (far beyond any real one; the kernels multiply it by 2^8). */
#define ENG_FP8_BLOCK_ALIGN 16
#define ENG_FP8_SCALE_MAX 0x1p100f
/* Index of the first scale outside [-ENG_FP8_SCALE_MAX, ENG_FP8_SCALE_MAX] or not
 * finite, or n when all n are usable. */
size_t eng_fp8_scales_check(const float *scale, size_t n);

/* y[t][o] = sum_i x[t][i] * W[o][i]  for t < n_tokens, o < n_out.
 * Work is split over the pool's threads (pool may be NULL: run on the caller).
 *
 * Batch invariance: every y[t][o] is summed in one order that depends only on
 * n_in and the kernel variant, so a row's result is bitwise the same whether it
 * is computed alone or at any position in a batch of any size, with any number of
 * threads (the split is over outputs, never over n_in). Decode steps, prefill
 * chunks of any size and rows gathered from several places (expert parallelism,
 * migration, prefix caching) therefore all give the same bits for the same row.
 * Different variants (TANDEM_ISA) sum in different orders and may differ.
 *
 * scratch: room for n_tokens * n_in floats where a matrix has x_bf16 (x rounded to
 * bf16 goes there, x itself is left as it is); NULL where none has. */
void eng_matmul_weight(eng_pool *pool, float *y, const float *x, float *scratch, const eng_weight *w, int n_tokens,
                       int n_in, int n_out);
/* Several matrices applied to the same input in one parallel run (q/k/v, gate/up):
 * outs[p].y[t][o] = sum_i x[t][i] * outs[p].w[o][i], o < outs[p].n_out. Each output
 * gets exactly the bits eng_matmul_weight gives it; only the threads' hand-offs
 * are shared (one pool run instead of one per matrix). */
typedef struct eng_matmul_out {
    float *y; /* [n_tokens][n_out] */
    const eng_weight *w;
    int n_out;
} eng_matmul_out;
void eng_matmul_multi(eng_pool *pool, const float *x, float *scratch, int n_tokens, int n_in,
                      const eng_matmul_out *outs, int n_outs);
/* The same for a matrix without scales (an FP8 one reads as if every scale were 1). */
void eng_matmul(eng_pool *pool, float *y, const float *x, const void *w, eng_dtype wdt, int n_tokens, int n_in,
                int n_out);

/* dst[i] = (float)src[i] for one row of any dtype (embedding lookup, norm weights);
 * FP8 gives the bare e4m3 values (no scale). */
void eng_to_f32(float *dst, const void *src, eng_dtype dt, size_t n);
/* dst[i] = src[i] rounded to nearest even in dt (F32, F16 or BF16): how K/V enter a
 * cache of that dtype. Rounding is per element, so a value gets the same bits
 * whichever step writes it; eng_to_f32 of the result is exact. */
void eng_from_f32(void *dst, const float *src, eng_dtype dt, size_t n);
/* x[i] = x[i] rounded to nearest even in dt and widened back (what eng_from_f32 then
 * eng_to_f32 give), in place; F32 leaves x as it is. Per element, like eng_from_f32. */
void eng_round_to(eng_dtype dt, float *x, size_t n);

float eng_dot(const float *a, const float *b, int n);
void eng_axpy(float *y, float a, const float *x, int n); /* y += a * x */
/* ---- attention over the KV cache ----
 *
 * One sequence's cache for one layer, as the attention reads it: position j lies
 * in units[j / block_size], which holds the K rows of kv head 0, 1, ... (block_size
 * rows of dim values of dtype dt, F32, F16 or BF16, each), then their V rows. */
typedef struct eng_kv_view {
    const void *const *units;
    int block_size, n_kv_heads, dim;
    eng_dtype dt;
} eng_kv_view;

/* A token's attention is taken span by span: eng_attend_span over positions
 * [p0, p1) gives a state (per head the largest score, the sum of exp(score -
 * largest), and the sums of exp(score - largest) * V), eng_attend_merge folds the
 * next span's state into the running one, eng_attend_finish divides. Scores are
 * scale * (q_h . K_j), head h reading kv head h / (n_heads / n_kv_heads). Within a
 * span the softmax runs online over groups of ENG_ATT_GROUP positions (multiples
 * of it apart), so a result depends only on the spans' bounds, never on the block
 * size, the batch or the thread that ran it. */
#define ENG_ATT_GROUP 16
#define ENG_ATT_STATE_FLOATS(n_heads, dim) ((size_t)(n_heads) * ((size_t)(dim) + 2))
#define ENG_ATT_WORK_FLOATS(n_heads, dim) ((size_t)(n_heads) * ((size_t)(dim) + ENG_ATT_GROUP))
void eng_attend_span(float *state, float *work, const float *q, int n_heads, float scale, const eng_kv_view *kv, int p0,
                     int p1);
void eng_attend_merge(float *state, const float *next, int n_heads, int dim);
/* y[h * dim + d], the attention output of head h, from a merged state. */
void eng_attend_finish(float *y, const float *state, int n_heads, const eng_kv_view *kv);

/* y = x * rsqrt(mean(x^2) + eps) * w, computed in f32. y may alias x. */
void eng_rmsnorm(float *y, const float *x, const float *w, int n, float eps);

/* g[i] = silu(g[i]) * u[i] */
void eng_silu_mul(float *g, const float *u, int n);

/* In-place softmax over n values; returns nothing, max-subtracted for stability. */
void eng_softmax(float *x, int n);

/* sum of exp(x[i] - shift) for i < n, in double, x unchanged: the sum of a log-sum-exp
 * (the sampler's log_softmax over a 151,936-entry vocabulary, every token). shift >= every
 * x[i] keeps each term in (0, 1]; -inf terms add 0 (or at most 1.2e-38 each). */
double eng_sum_exp(const float *x, int n, float shift);

/* NeoX rotary embedding of n_heads vectors of head_dim at one position: pairs
 * (i, i + head_dim/2) rotated by (cos[i], sin[i]), i < head_dim/2. */
void eng_rope_neox(float *x, int n_heads, int head_dim, const float *cos, const float *sin);

#endif

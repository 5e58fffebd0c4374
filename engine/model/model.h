/* model.h: a loaded Qwen3 checkpoint (dense or MoE) and its forward pass.
 *
 * eng_model_load() memory-maps the safetensors files and uses the weights in place.
 * eng_forward() runs one step over a batch of independent sequences, each adding a
 * chunk of tokens at its own position: a prefill chunk, a single decode token, or a
 * mix. That one function is the building block of chunked prefill and continuous
 * batching. */
#ifndef ENG_MODEL_H
#define ENG_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "model/config.h"
#include "model/kvcache.h"

typedef struct eng_model eng_model;

typedef struct eng_model_options {
    int n_threads; /* 0: one per online CPU */
    /* MoE expert ownership: NULL = this process computes every expert; otherwise
     * num_experts bytes, nonzero = owned. A process computes only the owned experts'
     * share of each MoE layer (expert parallelism); shares of disjoint sets add up
     * to the full layer. Only owned experts' weights are touched. */
    const uint8_t *expert_mask;
    /* What the matmuls with bf16 weights multiply: ENG_DT_F32 (inputs stay f32: exact,
     * the default) or ENG_DT_BF16 (inputs rounded to bf16, as llama.cpp does on a bf16
     * GGUF; twice the multiply-adds per instruction with AVX512-BF16). Every worker
     * of a cluster must use the same: it changes what K/V hold. */
    eng_dtype matmul_dtype;
    /* 1: map the checkpoint's files (pages shared by every process on the machine that
     * maps them: several workers of one model on one host hold it once); 0: read the
     * weights this process uses into its own memory, on huge pages where the kernel
     * allows (decode streams them faster: docs/benchmarks.md). */
    int mmap_weights;
} eng_model_options;

int eng_model_load(const char *dir, const eng_model_options *opt, eng_model **out, eng_error *err);
void eng_model_free(eng_model *m);
const eng_config *eng_model_config(const eng_model *m);
/* The KV layout this model needs with K/V stored in dtype and the given block size. */
eng_kv_layout eng_model_kv_layout(const eng_model *m, int block_size, eng_dtype dtype);
/* Bytes of all tensors in the checkpoint's files (what the mapping can bring in). */
size_t eng_model_weight_bytes(const eng_model *m);
/* What this process may bring in: all tensors but the experts outside its mask. */
size_t eng_model_used_weight_bytes(const eng_model *m);
/* The checkpoint's mappings resident in this process now (/proc/self/smaps Rss). */
size_t eng_model_resident_weight_bytes(const eng_model *m);
int eng_model_threads(const eng_model *m); /* size of the model's thread pool */

typedef struct eng_batch_item {
    eng_seq *seq;          /* cache state; the chunk is appended at seq->n_past */
    const int32_t *tokens; /* the chunk */
    int n_tokens;
    float *logits; /* NULL: none wanted; else vocab_size floats for the chunk's last token */
} eng_batch_item;

/* Called after layer `layer` has written its K/V for every item of the step. */
typedef void (*eng_layer_done_fn)(void *ctx, int layer);

/* Runs the batch. Each item's sequence must already hold blocks for
 * n_past + n_tokens tokens (eng_seq_reserve). On success each seq->n_past grows
 * by its n_tokens. Results for an item do not depend on what else is in the batch. */
int eng_forward(eng_model *m, eng_kv_pool *kv, eng_batch_item *items, int n_items, eng_layer_done_fn on_layer,
                void *ctx, eng_error *err);

/* One MoE layer on n_tokens rows of normalised hidden states x[n_tokens][hidden]:
 * routing over all experts, then out += the owned experts' weighted outputs
 * (mask NULL = all). It is route + run experts + combine below. */
int eng_moe_layer(eng_model *m, int layer, const float *x, int n_tokens, const uint8_t *expert_mask, float *out,
                  eng_error *err);

/* The pieces of a MoE layer, for expert parallelism (worker/ep_moe.c) to run the
 * experts in other processes. A layer's K = num_experts_per_tok picks per token. */
int eng_moe_is_layer(const eng_model *m, int layer);
/* sel[n_tokens][K], sel_w[n_tokens][K]: each token's experts and their weights. */
int eng_moe_route(eng_model *m, int layer, const float *x, int n_tokens, int *sel, float *sel_w, eng_error *err);
/* y[p] = expert experts[p] applied to row x[rows[p]], for every pick p < n_picks
 * whose expert is >= 0 (y[p] of the others is left alone). Each expert runs once, in
 * increasing id order, over all its rows; it must be loaded in this process. */
int eng_moe_run_experts(eng_model *m, int layer, const float *x, const int *rows, const int *experts, int n_picks,
                        float *y, eng_error *err);
/* out[t] += sel_w[t][j] * y[t * K + j] over token t's picks with sel >= 0, in
 * increasing expert id order (the order that makes the result exact everywhere). */
void eng_moe_combine(const eng_model *m, int n_tokens, const int *sel, const float *sel_w, const float *y, float *out);

/* A replacement for the MoE layers inside eng_forward: out[n_tokens][hidden] (zeroed)
 * += the layer's output for x. Expert parallelism sets one that exchanges rows with
 * the other ranks; NULL fn restores the local eng_moe_layer (with the load mask). */
typedef int (*eng_moe_fn)(void *ctx, eng_model *m, int layer, const float *x, int n_tokens, float *out, eng_error *err);
void eng_model_set_moe(eng_model *m, eng_moe_fn fn, void *ctx);

#endif

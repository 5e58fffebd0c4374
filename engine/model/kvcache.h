/* kvcache.h: the paged KV cache.
 *
 * A pool of fixed-size blocks, each holding block_size tokens of K and V for every
 * layer. Memory is layer-major: the pool is one allocation of n_layers x n_blocks
 * "units"; unit (layer, block) is contiguous and holds K as [kv_heads][block_size]
 * [head_dim] followed by V in the same shape. So all blocks of one layer form one
 * contiguous array, a run of consecutive block ids within a layer is one contiguous
 * span (one RDMA write, one TCP send), and a layer can be shipped as soon as the
 * forward pass has written it.
 *
 * A sequence (eng_seq) owns a block table; its token t lives in block
 * blocks[t / block_size] at slot t % block_size. */
#ifndef ENG_KVCACHE_H
#define ENG_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "kernels/kernels.h"

typedef struct eng_kv_layout {
    eng_dtype dtype; /* of stored K/V values: F32, F16 or BF16 (eng_kv_dtype_ok) */
    int block_size;  /* tokens per block */
    int n_layers;
    int n_kv_heads;
    int head_dim;
    /* What computed the values: F32 or BF16 matmul inputs (eng_model_options). Blocks
     * computed one way are not what the other would compute, so they never mix. */
    eng_dtype matmul_dtype;
} eng_kv_layout;

/* Whether K/V can be stored in dt: F32, F16 or BF16. The forward pass rounds each
 * K/V value once to dt when it writes it (eng_from_f32) and attention reads the
 * stored values in place, so every writer of a position stores the same bits. */
int eng_kv_dtype_ok(eng_dtype dt);
/* The KV dtype when none is named: the model's own, as vLLM stores KV (Qwen3 is
 * published in bf16, and its FP8 checkpoints keep bf16 activations). */
#define ENG_KV_DTYPE_DEFAULT "bf16"
/* The KV dtype named "bf16", "f16" or "f32" (--kv-dtype) in *out; -1 for any other name. */
int eng_kv_dtype_parse(const char *name, eng_dtype *out);
/* Bytes of one (layer, block) unit: 2 * kv_heads * block_size * head_dim * dtype size. */
size_t eng_kv_unit_bytes(const eng_kv_layout *l);
int eng_kv_layout_equal(const eng_kv_layout *a, const eng_kv_layout *b);
/* "f32 bs16 L28 kv8 d128" ("... mm-bf16" for bf16 matmul inputs): for logs and
 * error messages. */
void eng_kv_layout_str(const eng_kv_layout *l, char *buf, size_t len);

typedef struct eng_kv_pool eng_kv_pool;

int eng_kv_pool_create(const eng_kv_layout *layout, int n_blocks, eng_kv_pool **out, eng_error *err);
void eng_kv_pool_destroy(eng_kv_pool *pool);
const eng_kv_layout *eng_kv_pool_layout(const eng_kv_pool *pool);
int eng_kv_pool_blocks(const eng_kv_pool *pool);      /* total */
int eng_kv_pool_free_blocks(const eng_kv_pool *pool); /* currently free */
/* The whole pool memory (for registering it with a transport) and one unit. */
void *eng_kv_pool_base(eng_kv_pool *pool);
size_t eng_kv_pool_bytes(const eng_kv_pool *pool);
void *eng_kv_unit(eng_kv_pool *pool, int layer, int block);
size_t eng_kv_unit_offset(const eng_kv_pool *pool, int layer, int block); /* from base */

/* All or nothing: takes n free blocks into out[] or returns -1 and takes none.
 * The pool is not thread-safe; its owner serialises calls. */
int eng_kv_alloc(eng_kv_pool *pool, int n, int32_t *out);
void eng_kv_free(eng_kv_pool *pool, const int32_t *blocks, int n);

typedef struct eng_seq {
    int32_t *blocks; /* block table */
    int n_blocks;
    int cap_blocks;
    int n_past; /* tokens already in the cache = position of the next token */
} eng_seq;

/* Makes sure the sequence has blocks for n_tokens in total (n_past + what comes).
 * Returns -1 (and allocates nothing) when the pool cannot supply them. */
int eng_seq_reserve(eng_kv_pool *pool, eng_seq *seq, int n_tokens, eng_error *err);
/* Gives every block back and resets the sequence to empty. */
void eng_seq_release(eng_kv_pool *pool, eng_seq *seq);

#endif

/* prefix_cache.h: automatic prefix caching on a prefill worker's KV pool.
 *
 * When a prefill ends, its full blocks (block_size computed prompt tokens each) stay in
 * the pool under their key (common/block_hash.h: a hash chain over the tokens from the
 * prompt's start, salted with the model and KV layout). A later prompt that starts with
 * the same tokens takes those blocks instead of computing them and computes only the
 * rest. Since the kernels are batch- and chunk-invariant, a block's KV is the same bits
 * however it was computed, so a hit never changes a token or a logprob.
 *
 * Each cached block counts the requests using it. Blocks nobody uses wait in an LRU list
 * and are taken back (evicted, least recently used first) only when the pool runs out of
 * free blocks; a block in use is never evicted. A prompt's blocks go back tail first, so
 * a prompt's later blocks are evicted before its earlier ones (a prefix stays findable as
 * long as possible). A hit is also checked against the block's stored token ids.
 *
 * Not thread-safe: the owner serialises calls (the worker holds w->mu) and owns the pool
 * (every block the cache does not hold is the caller's business, as before). */
#ifndef WRK_PREFIX_CACHE_H
#define WRK_PREFIX_CACHE_H

#include <stdint.h>

#include "common/block_hash.h"
#include "common/error.h"
#include "model/kvcache.h"

typedef struct wrk_prefix wrk_prefix;

typedef struct wrk_prefix_stats {
    uint64_t query_tokens, hit_tokens; /* prompt tokens looked up, and found cached */
    uint64_t query_blocks, hit_blocks; /* the same in full blocks */
    uint64_t evicted_blocks;
    int cached_blocks;    /* blocks the cache holds, in use or not */
    int evictable_blocks; /* cached blocks no request uses (free for the taking) */
} wrk_prefix_stats;

int wrk_prefix_create(eng_kv_pool *pool, eng_block_key salt, wrk_prefix **out, eng_error *err);
void wrk_prefix_destroy(wrk_prefix *pc); /* the blocks it holds go back to the pool */

/* Gives the empty sequence `seq` blocks for a prompt of n_tokens: its longest cached
 * prefix of full blocks (at most n_tokens - 1 tokens, so that the last token is always
 * computed and gives logits), then fresh blocks, evicting unused cached blocks when the
 * pool has too few free. Sets seq->n_past to the cached tokens and returns them, or -1
 * when the pool cannot supply the blocks even after evicting (nothing changes then). */
int wrk_prefix_acquire(wrk_prefix *pc, const int32_t *tokens, int n_tokens, eng_seq *seq);

/* Ends a sequence from wrk_prefix_acquire: its blocks whose tokens are all among the
 * first n_computed of `tokens` are kept in the cache (or dropped when an equal block is
 * cached already); the rest go back to the pool. Leaves seq empty, as eng_seq_release. */
void wrk_prefix_release(wrk_prefix *pc, const int32_t *tokens, int n_computed, eng_seq *seq);

/* Free blocks counting what eviction could free: the pool's free blocks plus the
 * evictable ones. */
int wrk_prefix_free_blocks(const wrk_prefix *pc);
void wrk_prefix_get_stats(const wrk_prefix *pc, wrk_prefix_stats *out);

/* Up to cap short keys (eng_block_key_short) of cached blocks, those in use first, then
 * the unused ones from the most recently used: what the worker tells the router. */
int wrk_prefix_summary(const wrk_prefix *pc, uint64_t *out, int cap);

#endif

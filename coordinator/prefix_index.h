/* prefix_index.h: which cached KV blocks a prefill worker holds, as the router sees it.
 *
 * Prefill workers with a prefix cache send the short keys (common/block_hash.h) of their
 * cached blocks with every heartbeat (tandem.proto PrefixCacheSummary). The registry
 * keeps them per worker in a coord_prefix_keys, sorted; for a new prompt the router
 * computes the prompt's key chain under the worker's model and layout and counts how many
 * leading blocks the worker holds: the prompt tokens it would not compute again. The
 * router then picks the prefill worker with the least expected work (coord_route_pick,
 * --router-overlap-weight). A short key that matches by chance only misroutes a request:
 * the worker's own lookup checks the full key and the tokens.
 *
 * Between heartbeats the summary is stale: a conversation's next turn, sent before the
 * worker reported the blocks of the last one, would look uncached everywhere and go by
 * load to any worker. So the router also records the blocks of each prompt it sends to a
 * worker as expected there (coord_prefix_keys_expect) until that worker's next summary
 * replaces both sets; at most COORD_PREFIX_EXPECTED_MAX of them per worker. */
#ifndef COORD_PREFIX_INDEX_H
#define COORD_PREFIX_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "model/kvcache.h"

/* Expected keys per worker: as many as a heartbeat summary carries (32 KiB). */
#define COORD_PREFIX_EXPECTED_MAX 4096

typedef struct coord_prefix_keys {
    uint64_t *keys; /* sorted: the latest heartbeat summary */
    size_t n;
    uint64_t *expected; /* sorted: blocks of prompts sent since that summary */
    size_t n_expected;
} coord_prefix_keys;

/* A heartbeat summary arrived: replaces the set with a sorted copy of keys[0..n) and
 * forgets the expected keys; -1 (both unchanged) without memory. */
int coord_prefix_keys_set(coord_prefix_keys *s, const uint64_t *keys, size_t n);
void coord_prefix_keys_clear(coord_prefix_keys *s);

/* The router sent the prompt tokens[0..n_tokens) to this worker, which will cache its
 * whole blocks when the prefill ends: count them as held until the next summary. Keys
 * beyond COORD_PREFIX_EXPECTED_MAX are not recorded (the routing is only less informed);
 * -1 without memory (nothing recorded). */
int coord_prefix_keys_expect(coord_prefix_keys *s, const char *model, const eng_kv_layout *layout,
                             const int32_t *tokens, int n_tokens);

/* Prompt tokens of tokens[0..n_tokens) that a worker holding s (summary or expected)
 * would find cached, under
 * the model's served name and the worker's KV layout: whole blocks of the leading chain,
 * at most n_tokens - 1 (the worker always computes the last token). */
int coord_prefix_cached_tokens(const coord_prefix_keys *s, const char *model, const eng_kv_layout *layout,
                               const int32_t *tokens, int n_tokens);

#endif

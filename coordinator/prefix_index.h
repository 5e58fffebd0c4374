/* prefix_index.h: which cached KV blocks a prefill worker holds, as the router sees it.
 *
 * Prefill workers with a prefix cache send the short keys (common/block_hash.h) of their
 * cached blocks with every heartbeat (tandem.proto PrefixCacheSummary). The registry
 * keeps them per worker in a coord_prefix_keys, sorted; for a new prompt the router
 * computes the prompt's key chain under the worker's model and layout and counts how many
 * leading blocks the worker holds: the prompt tokens it would not compute again. The
 * router then picks the prefill worker with the least expected work (coord_route_pick,
 * --router-overlap-weight). A short key that matches by chance only misroutes a request:
 * the worker's own lookup checks the full key and the tokens. */
#ifndef COORD_PREFIX_INDEX_H
#define COORD_PREFIX_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "model/kvcache.h"

typedef struct coord_prefix_keys {
    uint64_t *keys; /* sorted */
    size_t n;
} coord_prefix_keys;

/* Replaces the set with a sorted copy of keys[0..n); -1 (set unchanged) without memory. */
int coord_prefix_keys_set(coord_prefix_keys *s, const uint64_t *keys, size_t n);
void coord_prefix_keys_clear(coord_prefix_keys *s);

/* Prompt tokens of tokens[0..n_tokens) that a worker holding s would find cached, under
 * the model's served name and the worker's KV layout: whole blocks of the leading chain,
 * at most n_tokens - 1 (the worker always computes the last token). */
int coord_prefix_cached_tokens(const coord_prefix_keys *s, const char *model, const eng_kv_layout *layout,
                               const int32_t *tokens, int n_tokens);

#endif

/* block_hash.c: see block_hash.h. */
#include "common/block_hash.h"

#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

/* Token ids are hashed in host byte order: the hosts Tandem runs on (x86-64, arm64) are
 * all little-endian, and keys are only compared within one cluster. */
eng_block_key eng_block_salt(const char *model, const char *layout)
{
    XXH3_state_t st;
    XXH3_128bits_reset(&st);
    static const char tag[] = "tandem-kv-block-v1";
    XXH3_128bits_update(&st, tag, sizeof tag);
    XXH3_128bits_update(&st, layout, strlen(layout) + 1);
    XXH3_128bits_update(&st, model, strlen(model) + 1);
    XXH128_hash_t h = XXH3_128bits_digest(&st);
    return (eng_block_key){h.low64, h.high64};
}

void eng_block_keys(eng_block_key salt, const int32_t *tokens, int n_blocks, int block_size, eng_block_key *out)
{
    eng_block_key parent = salt;
    for (int i = 0; i < n_blocks; i++) {
        XXH3_state_t st;
        XXH3_128bits_reset(&st);
        XXH3_128bits_update(&st, &parent, sizeof parent);
        XXH3_128bits_update(&st, tokens + (size_t)i * (size_t)block_size, (size_t)block_size * sizeof *tokens);
        XXH128_hash_t h = XXH3_128bits_digest(&st);
        out[i] = parent = (eng_block_key){h.low64, h.high64};
    }
}

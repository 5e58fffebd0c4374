/* block_hash.h: the identity of a block of prompt tokens, for prefix caching.
 *
 * A prefix cache keeps KV blocks after a request ends and finds them again by key. A
 * block's key is a hash chain: the key of block i hashes (key of block i-1, the block's
 * token ids), and block 0 starts from a salt that covers everything else the KV depends
 * on (the model and the KV layout). So equal keys mean the same tokens from the start
 * of the prompt up to the block's end, under the same model and layout. Workers (which
 * keep the blocks) and the coordinator (which routes by them) compute keys with this one
 * function, so the coordinator can tell which worker holds how much of a prompt.
 *
 * Keys are XXH3-128; the worker also compares a hit's token ids, so that a collision can
 * never change a token. */
#ifndef ENG_BLOCK_HASH_H
#define ENG_BLOCK_HASH_H

#include <stdint.h>

typedef struct eng_block_key {
    uint64_t lo, hi;
} eng_block_key;

/* The chain's start for one model (its served name) and KV layout (as eng_kv_layout_str
 * writes it: dtype, block size, layers, kv heads, head dim). */
eng_block_key eng_block_salt(const char *model, const char *layout);

/* Keys of the first n_blocks full blocks of tokens (block_size ids each); the caller
 * makes sure tokens holds n_blocks * block_size ids. */
void eng_block_keys(eng_block_key salt, const int32_t *tokens, int n_blocks, int block_size, eng_block_key *out);

/* 64 bits of a key: what workers publish and the coordinator compares (a false match
 * there only misroutes; the worker's own lookup checks all 128 bits and the tokens). */
static inline uint64_t eng_block_key_short(eng_block_key k)
{
    return k.lo;
}

static inline int eng_block_key_equal(eng_block_key a, eng_block_key b)
{
    return a.lo == b.lo && a.hi == b.hi;
}

#endif

/* prefix_cache.c: see prefix_cache.h.
 *
 * Everything is indexed by pool block id, so the cache allocates once, at creation:
 * per block its key, token ids, user count, LRU links and hash-bucket link. The table is
 * chained (a bucket per block, rounded to a power of two), so removing a key is O(chain).
 * Scratch space for a prompt's keys grows with the longest prompt seen. */
#include "prefix_cache.h"

#include <stdlib.h>
#include <string.h>

struct wrk_prefix {
    eng_kv_pool *pool;
    eng_block_key salt;
    int n_blocks, block_size;
    eng_block_key *key;
    int32_t *tokens;      /* block_size ids per block */
    uint8_t *cached;      /* in the table */
    int32_t *users;       /* requests holding a cached block */
    int32_t *prev, *next; /* LRU of cached blocks with no users: head oldest, tail newest */
    int32_t *chain;       /* next block in the same bucket */
    int32_t *bucket;
    uint32_t mask;
    int32_t lru_head, lru_tail;
    int n_lru, n_cached;
    eng_block_key *scratch;
    int scratch_cap;
    wrk_prefix_stats st;
};

int wrk_prefix_create(eng_kv_pool *pool, eng_block_key salt, wrk_prefix **out, eng_error *err)
{
    *out = NULL;
    wrk_prefix *pc = calloc(1, sizeof *pc);
    if (!pc)
        return eng_fail(err, "prefix cache: out of memory");
    pc->pool = pool;
    pc->salt = salt;
    pc->n_blocks = eng_kv_pool_blocks(pool);
    pc->block_size = eng_kv_pool_layout(pool)->block_size;
    size_t n = (size_t)pc->n_blocks;
    uint32_t buckets = 1;
    while (buckets < n && buckets < (1u << 30))
        buckets <<= 1;
    pc->mask = buckets - 1;
    pc->key = calloc(n, sizeof *pc->key);
    pc->tokens = calloc(n * (size_t)pc->block_size, sizeof *pc->tokens);
    pc->cached = calloc(n, 1);
    pc->users = calloc(n, sizeof *pc->users);
    pc->prev = malloc(n * sizeof *pc->prev);
    pc->next = malloc(n * sizeof *pc->next);
    pc->chain = malloc(n * sizeof *pc->chain);
    pc->bucket = malloc((size_t)buckets * sizeof *pc->bucket);
    if (!pc->key || !pc->tokens || !pc->cached || !pc->users || !pc->prev || !pc->next || !pc->chain || !pc->bucket) {
        wrk_prefix_destroy(pc);
        return eng_fail(err, "prefix cache: out of memory for %d blocks", pc->n_blocks);
    }
    for (uint32_t i = 0; i < buckets; i++)
        pc->bucket[i] = -1;
    pc->lru_head = pc->lru_tail = -1;
    *out = pc;
    return 0;
}

void wrk_prefix_destroy(wrk_prefix *pc)
{
    if (!pc)
        return;
    for (int32_t b = 0; pc->cached && b < pc->n_blocks; b++)
        if (pc->cached[b])
            eng_kv_free(pc->pool, &b, 1);
    free(pc->key);
    free(pc->tokens);
    free(pc->cached);
    free(pc->users);
    free(pc->prev);
    free(pc->next);
    free(pc->chain);
    free(pc->bucket);
    free(pc->scratch);
    free(pc);
}

/* ---- the LRU of unused cached blocks */

static void lru_remove(wrk_prefix *pc, int32_t b)
{
    if (pc->prev[b] >= 0)
        pc->next[pc->prev[b]] = pc->next[b];
    else
        pc->lru_head = pc->next[b];
    if (pc->next[b] >= 0)
        pc->prev[pc->next[b]] = pc->prev[b];
    else
        pc->lru_tail = pc->prev[b];
    pc->n_lru--;
}

static void lru_push(wrk_prefix *pc, int32_t b)
{
    pc->prev[b] = pc->lru_tail;
    pc->next[b] = -1;
    if (pc->lru_tail >= 0)
        pc->next[pc->lru_tail] = b;
    else
        pc->lru_head = b;
    pc->lru_tail = b;
    pc->n_lru++;
}

/* ---- the table */

static int32_t lookup(const wrk_prefix *pc, eng_block_key k, const int32_t *tokens)
{
    for (int32_t b = pc->bucket[k.lo & pc->mask]; b >= 0; b = pc->chain[b])
        if (eng_block_key_equal(pc->key[b], k) &&
            !memcmp(pc->tokens + (size_t)b * (size_t)pc->block_size, tokens, (size_t)pc->block_size * sizeof *tokens))
            return b;
    return -1;
}

static void insert(wrk_prefix *pc, int32_t b, eng_block_key k, const int32_t *tokens)
{
    pc->key[b] = k;
    memcpy(pc->tokens + (size_t)b * (size_t)pc->block_size, tokens, (size_t)pc->block_size * sizeof *tokens);
    uint32_t h = (uint32_t)(k.lo & pc->mask);
    pc->chain[b] = pc->bucket[h];
    pc->bucket[h] = b;
    pc->cached[b] = 1;
    pc->users[b] = 0;
    pc->n_cached++;
    lru_push(pc, b);
}

/* The least recently used unused block leaves the table and goes back to the pool. */
static void evict_one(wrk_prefix *pc)
{
    int32_t b = pc->lru_head;
    lru_remove(pc, b);
    for (int32_t *p = &pc->bucket[pc->key[b].lo & pc->mask]; *p >= 0; p = &pc->chain[*p])
        if (*p == b) {
            *p = pc->chain[b];
            break;
        }
    pc->cached[b] = 0;
    pc->n_cached--;
    pc->st.evicted_blocks++;
    eng_kv_free(pc->pool, &b, 1);
}

/* Keys of the first n full blocks of tokens, in the scratch space; NULL without memory. */
static const eng_block_key *keys_of(wrk_prefix *pc, const int32_t *tokens, int n)
{
    if (n > pc->scratch_cap) {
        eng_block_key *s = realloc(pc->scratch, (size_t)n * sizeof *s);
        if (!s)
            return NULL;
        pc->scratch = s;
        pc->scratch_cap = n;
    }
    eng_block_keys(pc->salt, tokens, n, pc->block_size, pc->scratch);
    return pc->scratch;
}

/* ---- requests */

int wrk_prefix_acquire(wrk_prefix *pc, const int32_t *tokens, int n_tokens, eng_seq *seq)
{
    int bs = pc->block_size;
    if (n_tokens <= 0 || seq->n_blocks)
        return -1;
    int total = (int)(((int64_t)n_tokens + bs - 1) / bs);
    int most = (n_tokens - 1) / bs; /* the last token is always computed */
    const eng_block_key *keys = keys_of(pc, tokens, most);
    int hit = 0, unused_hits = 0;
    while (keys && hit < most) {
        int32_t b = lookup(pc, keys[hit], tokens + (size_t)hit * (size_t)bs);
        if (b < 0)
            break;
        unused_hits += pc->users[b] == 0;
        hit++;
    }
    int fresh = total - hit;
    if (eng_kv_pool_free_blocks(pc->pool) + pc->n_lru - unused_hits < fresh)
        return -1;
    if (total > seq->cap_blocks) {
        int32_t *nb = realloc(seq->blocks, (size_t)total * sizeof *nb);
        if (!nb)
            return -1;
        seq->blocks = nb;
        seq->cap_blocks = total;
    }
    for (int i = 0; i < hit; i++) {
        int32_t b = lookup(pc, keys[i], tokens + (size_t)i * (size_t)bs);
        if (pc->users[b]++ == 0)
            lru_remove(pc, b);
        seq->blocks[i] = b;
    }
    while (eng_kv_pool_free_blocks(pc->pool) < fresh)
        evict_one(pc);
    eng_kv_alloc(pc->pool, fresh, seq->blocks + hit);
    seq->n_blocks = total;
    seq->n_past = hit * bs;
    pc->st.query_tokens += (uint64_t)n_tokens;
    pc->st.hit_tokens += (uint64_t)hit * (uint64_t)bs;
    pc->st.query_blocks += (uint64_t)(n_tokens / bs);
    pc->st.hit_blocks += (uint64_t)hit;
    return hit * bs;
}

void wrk_prefix_release(wrk_prefix *pc, const int32_t *tokens, int n_computed, eng_seq *seq)
{
    int full = n_computed / pc->block_size;
    if (full > seq->n_blocks)
        full = seq->n_blocks;
    const eng_block_key *keys = keys_of(pc, tokens, full);
    if (!keys)
        full = 0; /* no memory for keys: nothing new is cached, nothing breaks */
    /* Tail first, so that the prompt's first blocks are the most recently used. */
    for (int i = seq->n_blocks - 1; i >= 0; i--) {
        int32_t b = seq->blocks[i];
        if (pc->cached[b]) {
            if (--pc->users[b] == 0)
                lru_push(pc, b);
        } else if (i < full && lookup(pc, keys[i], tokens + (size_t)i * (size_t)pc->block_size) < 0) {
            insert(pc, b, keys[i], tokens + (size_t)i * (size_t)pc->block_size);
        } else {
            eng_kv_free(pc->pool, &b, 1);
        }
    }
    free(seq->blocks);
    memset(seq, 0, sizeof *seq);
}

int wrk_prefix_free_blocks(const wrk_prefix *pc)
{
    return eng_kv_pool_free_blocks(pc->pool) + pc->n_lru;
}

void wrk_prefix_get_stats(const wrk_prefix *pc, wrk_prefix_stats *out)
{
    *out = pc->st;
    out->cached_blocks = pc->n_cached;
    out->evictable_blocks = pc->n_lru;
}

int wrk_prefix_summary(const wrk_prefix *pc, uint64_t *out, int cap)
{
    int n = 0;
    for (int32_t b = 0; b < pc->n_blocks && n < cap; b++)
        if (pc->cached[b] && pc->users[b] > 0)
            out[n++] = eng_block_key_short(pc->key[b]);
    for (int32_t b = pc->lru_tail; b >= 0 && n < cap; b = pc->prev[b])
        out[n++] = eng_block_key_short(pc->key[b]);
    return n;
}

/* prefix_index.c: see prefix_index.h. */
#include "prefix_index.h"

#include <stdlib.h>
#include <string.h>

#include "common/block_hash.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int has_key(const uint64_t *keys, size_t n, uint64_t k)
{
    return n && bsearch(&k, keys, n, sizeof k, cmp_u64) != NULL;
}

static int held(const coord_prefix_keys *s, uint64_t k)
{
    return has_key(s->keys, s->n, k) || has_key(s->expected, s->n_expected, k);
}

/* The chain's start for a worker serving model with this layout (the worker's salt). */
static eng_block_key chain_start(const char *model, const eng_kv_layout *layout)
{
    char lay[96];
    eng_kv_layout_str(layout, lay, sizeof lay);
    return eng_block_salt(model, lay);
}

int coord_prefix_keys_set(coord_prefix_keys *s, const uint64_t *keys, size_t n)
{
    uint64_t *k = NULL;
    if (n) {
        if (n > SIZE_MAX / sizeof *k || !(k = malloc(n * sizeof *k)))
            return -1;
        memcpy(k, keys, n * sizeof *k);
        qsort(k, n, sizeof *k, cmp_u64);
    }
    free(s->keys);
    s->keys = k;
    s->n = n;
    free(s->expected); /* the summary now says what the worker holds */
    s->expected = NULL;
    s->n_expected = 0;
    return 0;
}

void coord_prefix_keys_clear(coord_prefix_keys *s)
{
    free(s->keys);
    free(s->expected);
    memset(s, 0, sizeof *s);
}

int coord_prefix_keys_expect(coord_prefix_keys *s, const char *model, const eng_kv_layout *layout,
                             const int32_t *tokens, int n_tokens)
{
    int bs = layout->block_size;
    if (bs <= 0 || n_tokens < bs || s->n_expected >= COORD_PREFIX_EXPECTED_MAX)
        return 0;
    if (!s->expected && !(s->expected = malloc(COORD_PREFIX_EXPECTED_MAX * sizeof *s->expected)))
        return -1;
    size_t before = s->n_expected;
    eng_block_key key = chain_start(model, layout);
    for (int b = 0; b < n_tokens / bs && s->n_expected < COORD_PREFIX_EXPECTED_MAX; b++) {
        eng_block_keys(key, tokens + (size_t)b * (size_t)bs, 1, bs, &key);
        uint64_t k = eng_block_key_short(key);
        /* only the sorted part is searched: a prompt's own keys differ from each other */
        if (!has_key(s->keys, s->n, k) && !has_key(s->expected, before, k))
            s->expected[s->n_expected++] = k;
    }
    qsort(s->expected, s->n_expected, sizeof *s->expected, cmp_u64);
    return 0;
}

int coord_prefix_cached_tokens(const coord_prefix_keys *s, const char *model, const eng_kv_layout *layout,
                               const int32_t *tokens, int n_tokens)
{
    int bs = layout->block_size;
    if ((!s->n && !s->n_expected) || bs <= 0 || n_tokens <= 1)
        return 0;
    eng_block_key key = chain_start(model, layout);
    int most = (n_tokens - 1) / bs, hit = 0;
    for (; hit < most; hit++) {
        eng_block_keys(key, tokens + (size_t)hit * (size_t)bs, 1, bs, &key);
        if (!held(s, eng_block_key_short(key)))
            break;
    }
    return hit * bs;
}

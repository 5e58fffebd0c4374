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
    return 0;
}

void coord_prefix_keys_clear(coord_prefix_keys *s)
{
    free(s->keys);
    s->keys = NULL;
    s->n = 0;
}

int coord_prefix_cached_tokens(const coord_prefix_keys *s, const char *model, const eng_kv_layout *layout,
                               const int32_t *tokens, int n_tokens)
{
    int bs = layout->block_size;
    if (!s->n || bs <= 0 || n_tokens <= 1)
        return 0;
    char lay[96];
    eng_kv_layout_str(layout, lay, sizeof lay);
    eng_block_key key = eng_block_salt(model, lay);
    int most = (n_tokens - 1) / bs, hit = 0;
    for (; hit < most; hit++) {
        eng_block_keys(key, tokens + (size_t)hit * (size_t)bs, 1, bs, &key);
        uint64_t k = eng_block_key_short(key);
        if (!bsearch(&k, s->keys, s->n, sizeof k, cmp_u64))
            break;
    }
    return hit * bs;
}

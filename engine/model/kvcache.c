/* kvcache.c: see kvcache.h.
 *
 * The pool is one anonymous mapping, layer-major, plus a stack of free block ids.
 * The mapping is page-aligned (good for registering it with a NIC), starts zeroed,
 * and only the pages of blocks actually written become resident, so a large pool
 * costs memory as it fills, not when it is made.
 * Allocation takes from the top of the stack; freeing pushes back. Nothing here
 * knows about models: the layout is given by the caller. */
#include "model/kvcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

struct eng_kv_pool {
    eng_kv_layout layout;
    int n_blocks;
    size_t unit_bytes;
    unsigned char *base;
    size_t bytes;
    int32_t *free_ids; /* stack of free block ids */
    int n_free;
    uint8_t *in_use; /* guards against double frees */
};

size_t eng_kv_unit_bytes(const eng_kv_layout *l)
{
    return 2 * (size_t)l->n_kv_heads * (size_t)l->block_size * (size_t)l->head_dim * eng_dtype_size(l->dtype);
}

int eng_kv_layout_equal(const eng_kv_layout *a, const eng_kv_layout *b)
{
    return a->dtype == b->dtype && a->block_size == b->block_size && a->n_layers == b->n_layers &&
           a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim && a->matmul_dtype == b->matmul_dtype;
}

void eng_kv_layout_str(const eng_kv_layout *l, char *buf, size_t len)
{
    snprintf(buf, len, "%s bs%d L%d kv%d d%d%s", eng_dtype_name(l->dtype), l->block_size, l->n_layers, l->n_kv_heads,
             l->head_dim, l->matmul_dtype == ENG_DT_BF16 ? " mm-bf16" : "");
}

int eng_kv_dtype_ok(eng_dtype dt)
{
    return dt == ENG_DT_F32 || dt == ENG_DT_F16 || dt == ENG_DT_BF16;
}

int eng_kv_dtype_parse(const char *name, eng_dtype *out)
{
    static const eng_dtype all[] = {ENG_DT_BF16, ENG_DT_F16, ENG_DT_F32};
    for (size_t i = 0; name && i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(name, eng_dtype_name(all[i]))) {
            *out = all[i];
            return 0;
        }
    return -1;
}

int eng_kv_pool_create(const eng_kv_layout *layout, int n_blocks, eng_kv_pool **out, eng_error *err)
{
    *out = NULL;
    if (layout->block_size <= 0 || layout->n_layers <= 0 || layout->n_kv_heads <= 0 || layout->head_dim <= 0 ||
        n_blocks <= 0 || !eng_kv_dtype_ok(layout->dtype))
        return eng_fail(err, "KV pool: invalid layout or block count (%d blocks)", n_blocks);
    eng_kv_pool *p = calloc(1, sizeof *p);
    if (!p)
        return eng_fail(err, "KV pool: out of memory");
    p->layout = *layout;
    p->n_blocks = n_blocks;
    p->unit_bytes = eng_kv_unit_bytes(layout);
    p->bytes = p->unit_bytes * (size_t)n_blocks * (size_t)layout->n_layers;
    void *base = mmap(NULL, p->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    p->base = base == MAP_FAILED ? NULL : base;
    if (p->base) /* fewer page faults as rows are written, fewer TLB misses as attention reads */
        madvise(p->base, p->bytes, MADV_HUGEPAGE);
    p->free_ids = malloc((size_t)n_blocks * sizeof *p->free_ids);
    p->in_use = calloc((size_t)n_blocks, 1);
    if (!p->base || !p->free_ids || !p->in_use) {
        char lay[96];
        eng_kv_layout_str(layout, lay, sizeof lay);
        size_t bytes = p->bytes;
        eng_kv_pool_destroy(p);
        return eng_fail(err, "KV pool: cannot allocate %d blocks of %s (%zu bytes)", n_blocks, lay, bytes);
    }
    /* Lowest ids on top, so a fresh pool hands out 0, 1, 2, ... (contiguous spans). */
    for (int i = 0; i < n_blocks; i++)
        p->free_ids[i] = n_blocks - 1 - i;
    p->n_free = n_blocks;
    *out = p;
    return 0;
}

void eng_kv_pool_destroy(eng_kv_pool *p)
{
    if (!p)
        return;
    if (p->base)
        munmap(p->base, p->bytes);
    free(p->free_ids);
    free(p->in_use);
    free(p);
}

const eng_kv_layout *eng_kv_pool_layout(const eng_kv_pool *p)
{
    return &p->layout;
}
int eng_kv_pool_blocks(const eng_kv_pool *p)
{
    return p->n_blocks;
}
int eng_kv_pool_free_blocks(const eng_kv_pool *p)
{
    return p->n_free;
}
void *eng_kv_pool_base(eng_kv_pool *p)
{
    return p->base;
}
size_t eng_kv_pool_bytes(const eng_kv_pool *p)
{
    return p->bytes;
}

size_t eng_kv_unit_offset(const eng_kv_pool *p, int layer, int block)
{
    return ((size_t)layer * (size_t)p->n_blocks + (size_t)block) * p->unit_bytes;
}

void *eng_kv_unit(eng_kv_pool *p, int layer, int block)
{
    return p->base + eng_kv_unit_offset(p, layer, block);
}

int eng_kv_alloc(eng_kv_pool *p, int n, int32_t *out)
{
    if (n < 0 || n > p->n_free)
        return -1;
    for (int i = 0; i < n; i++) {
        out[i] = p->free_ids[--p->n_free];
        p->in_use[out[i]] = 1;
    }
    return 0;
}

void eng_kv_free(eng_kv_pool *p, const int32_t *blocks, int n)
{
    for (int i = 0; i < n; i++) {
        int32_t b = blocks[i];
        if (b < 0 || b >= p->n_blocks || !p->in_use[b])
            continue; /* not ours or already free: ignoring keeps the free stack sound */
        p->in_use[b] = 0;
        p->free_ids[p->n_free++] = b;
    }
}

int eng_seq_reserve(eng_kv_pool *p, eng_seq *s, int n_tokens, eng_error *err)
{
    int bs = p->layout.block_size;
    int need = (n_tokens + bs - 1) / bs;
    if (need <= s->n_blocks)
        return 0;
    int more = need - s->n_blocks;
    if (more > p->n_free)
        return eng_fail(err, "KV cache full: %d more blocks needed for %d tokens, %d free of %d", more, n_tokens,
                        p->n_free, p->n_blocks);
    if (need > s->cap_blocks) {
        int cap = s->cap_blocks ? s->cap_blocks : 8;
        while (cap < need)
            cap *= 2;
        int32_t *nb = realloc(s->blocks, (size_t)cap * sizeof *nb);
        if (!nb)
            return eng_fail(err, "KV cache: out of memory for a block table of %d", cap);
        s->blocks = nb;
        s->cap_blocks = cap;
    }
    eng_kv_alloc(p, more, s->blocks + s->n_blocks);
    s->n_blocks = need;
    return 0;
}

void eng_seq_release(eng_kv_pool *p, eng_seq *s)
{
    if (s->blocks)
        eng_kv_free(p, s->blocks, s->n_blocks);
    free(s->blocks);
    memset(s, 0, sizeof *s);
}

/* kvt_util.h: shared pieces of the kvtransfer tests and benchmark.
 *
 * A KV pool laid out as engine/model/kvcache.h describes it (layer-major: unit (layer,
 * block) at ((layer * n_blocks) + block) * unit_bytes), deterministic contents from a
 * seed so that two processes can agree on the expected bytes without shipping them, block
 * choices that mix consecutive runs and scattered blocks, and the layer-by-layer send
 * loop a prefill worker runs (coalescing blocks that are consecutive on both sides). */
#ifndef KVT_TEST_UTIL_H
#define KVT_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "kvtransfer.h"

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)
#define CHECK_OK(call, err)                                                                   \
    do {                                                                                      \
        if ((call) != 0) {                                                                    \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, (err)->msg); \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

typedef struct test_layout {
    const char *name;
    int dtype_bytes, block_size, n_layers, n_kv_heads, head_dim;
} test_layout;

/* Different block sizes and head dims, f32 and bf16-sized elements. */
static const test_layout TEST_LAYOUTS[] = {
    {"f32 bs16 L4 kv2 d64", 4, 16, 4, 2, 64},    /* 16 KiB units */
    {"bf16 bs16 L3 kv4 d128", 2, 16, 3, 4, 128}, /* 32 KiB units */
    {"f32 bs32 L2 kv1 d16", 4, 32, 2, 1, 16},    /* 4 KiB units */
    {"bf16 bs8 L5 kv2 d48", 2, 8, 5, 2, 48},     /* 3 KiB units */
};
#define N_TEST_LAYOUTS ((int)(sizeof TEST_LAYOUTS / sizeof TEST_LAYOUTS[0]))

static inline size_t unit_bytes(const test_layout *l)
{
    return (size_t)2 * l->n_kv_heads * l->block_size * l->head_dim * l->dtype_bytes;
}

typedef struct test_pool {
    test_layout l;
    int n_blocks;
    char *mem;
    size_t bytes;
} test_pool;

static inline uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline void fill_seeded(char *p, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = splitmix(&s);
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++)
        p[i] = (char)splitmix(&s);
}

static inline void pool_init(test_pool *p, const test_layout *l, int n_blocks, uint64_t seed)
{
    p->l = *l;
    p->n_blocks = n_blocks;
    p->bytes = unit_bytes(l) * l->n_layers * (size_t)n_blocks;
    p->mem = malloc(p->bytes);
    CHECK(p->mem);
    if (seed)
        fill_seeded(p->mem, p->bytes, seed);
    else
        memset(p->mem, 0xEE, p->bytes); /* sentinel: "never written" */
}

static inline void pool_free(test_pool *p)
{
    free(p->mem);
    p->mem = NULL;
}

static inline size_t unit_off(const test_pool *p, int layer, int block)
{
    return ((size_t)layer * p->n_blocks + block) * unit_bytes(&p->l);
}

/* Picks k distinct blocks of a pool with n blocks: runs of 1..8 consecutive ids at random
 * places, so transfers mix long contiguous spans and scattered blocks. */
static inline void pick_blocks(int n, int k, int *out, uint64_t *rng)
{
    char *used = calloc((size_t)n, 1);
    CHECK(used && k <= n);
    int got = 0;
    while (got < k) {
        int start = (int)(splitmix(rng) % (uint64_t)n);
        int len = 1 + (int)(splitmix(rng) % 8);
        for (int b = start; b < n && len > 0 && got < k && !used[b]; b++, len--) {
            used[b] = 1;
            out[got++] = b;
        }
    }
    free(used);
}

/* Sends k blocks layer by layer, as prefill would after each layer's forward pass. */
static inline int send_blocks(kvt_send *s, const test_pool *src, const int *sb, const test_pool *dst, const int *db,
                              int k, eng_error *err)
{
    size_t ub = unit_bytes(&src->l);
    for (int layer = 0; layer < src->l.n_layers; layer++) {
        for (int i = 0; i < k;) {
            int run = 1;
            while (i + run < k && sb[i + run] == sb[i] + run && db[i + run] == db[i] + run)
                run++;
            if (kvt_send_write(s, unit_off(src, layer, sb[i]), unit_off(dst, layer, db[i]), ub * run, err) != 0)
                return -1;
            i += run;
        }
    }
    return 0;
}

/* 1 when every (layer, db[i]) unit of dst equals (layer, sb[i]) of src. */
static inline int blocks_equal(const test_pool *src, const int *sb, const test_pool *dst, const int *db, int k)
{
    size_t ub = unit_bytes(&src->l);
    for (int layer = 0; layer < src->l.n_layers; layer++)
        for (int i = 0; i < k; i++)
            if (memcmp(src->mem + unit_off(src, layer, sb[i]), dst->mem + unit_off(dst, layer, db[i]), ub) != 0)
                return 0;
    return 1;
}

/* 1 when every byte in [off, off+len) of mem still holds the sentinel 0xEE. */
static inline int untouched(const char *mem, size_t off, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)mem[off + i] != 0xEE)
            return 0;
    return 1;
}

#endif

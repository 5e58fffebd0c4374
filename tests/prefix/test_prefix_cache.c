/* test_prefix_cache.c: the prefill workers' prefix cache (worker/prefix_cache.h) on a
 * real KV pool: hits of the longest cached prefix (never the prompt's last token),
 * release keeping only fully computed blocks, duplicates dropped, LRU eviction of a
 * prompt's tail before its head, all-or-nothing acquisition, the key chain (model and
 * layout in the salt), and the router's summary. Then eviction safety (issue 14,
 * acceptance 4): a tiny pool, many distinct prefixes, many requests at once taking and
 * giving back blocks in random order; every request writes the KV its tokens would
 * give into the blocks it computes and checks, before it ends, that every block it
 * holds (cached or computed) still holds exactly that, so a block in use that was
 * evicted and handed to someone else is caught (and ASan catches any stray access). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "prefix_cache.h"

#define BS 4
static const eng_kv_layout LAYOUT = {
    .dtype = ENG_DT_F32, .block_size = BS, .n_layers = 2, .n_kv_heads = 1, .head_dim = 4};
static const char LAYOUT_STR[] = "f32 bs4 L2 kv1 d4";

/* What a block's KV would be for these tokens: its key over the prompt padded to whole
 * blocks, in every layer's unit. */
static eng_block_key content_of(const int32_t *tokens, int n, int block)
{
    int32_t pad[64 * BS];
    int blocks = (n + BS - 1) / BS;
    for (int i = 0; i < blocks * BS; i++)
        pad[i] = i < n ? tokens[i] : -1;
    eng_block_key keys[64];
    eng_block_keys(eng_block_salt("m", LAYOUT_STR), pad, blocks, BS, keys);
    return keys[block];
}

static void write_block(eng_kv_pool *p, int32_t b, eng_block_key k)
{
    for (int l = 0; l < LAYOUT.n_layers; l++)
        memcpy(eng_kv_unit(p, l, b), &k, sizeof k);
}

static int block_holds(eng_kv_pool *p, int32_t b, eng_block_key k)
{
    for (int l = 0; l < LAYOUT.n_layers; l++)
        if (memcmp(eng_kv_unit(p, l, b), &k, sizeof k))
            return 0;
    return 1;
}

/* A prefill as the worker runs it: acquire, compute (write) the blocks not cached. */
static int prefill(wrk_prefix *pc, eng_kv_pool *p, const int32_t *t, int n, eng_seq *s)
{
    int cached = wrk_prefix_acquire(pc, t, n, s);
    if (cached < 0)
        return -1;
    for (int i = cached / BS; i < s->n_blocks; i++)
        write_block(p, s->blocks[i], content_of(t, n, i));
    return cached;
}

static void basics(void)
{
    eng_error err = {{0}};
    eng_kv_pool *p = NULL;
    wrk_prefix *pc = NULL;
    REQUIRE(eng_kv_pool_create(&LAYOUT, 8, &p, &err) == 0, "%s", err.msg);
    REQUIRE(wrk_prefix_create(p, eng_block_salt("m", LAYOUT_STR), &pc, &err) == 0, "%s", err.msg);

    int32_t a[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    eng_seq s = {0};
    CHECK(prefill(pc, p, a, 10, &s) == 0, "cold: nothing cached");
    CHECK(s.n_blocks == 3 && s.n_past == 0, "3 blocks for 10 tokens, n_past %d", s.n_past);
    int32_t first[3];
    memcpy(first, s.blocks, sizeof first);
    wrk_prefix_release(pc, a, 10, &s);
    CHECK(s.n_blocks == 0 && s.blocks == NULL, "release empties the sequence");
    wrk_prefix_stats st;
    wrk_prefix_get_stats(pc, &st);
    CHECK(st.cached_blocks == 2 && st.evictable_blocks == 2, "2 full blocks kept (%d)", st.cached_blocks);
    CHECK(wrk_prefix_free_blocks(pc) == 8 && eng_kv_pool_free_blocks(p) == 6, "evictable counted as free");

    CHECK(prefill(pc, p, a, 10, &s) == 8, "warm: 8 tokens cached");
    CHECK(s.n_past == 8 && s.blocks[0] == first[0] && s.blocks[1] == first[1], "the same blocks come back");
    CHECK(block_holds(p, s.blocks[0], content_of(a, 10, 0)) && block_holds(p, s.blocks[1], content_of(a, 10, 1)),
          "cached blocks keep their KV");
    wrk_prefix_get_stats(pc, &st);
    CHECK(st.evictable_blocks == 0 && st.cached_blocks == 2, "blocks in use are not evictable");
    /* a second user of the same blocks at the same time */
    eng_seq s2 = {0};
    int32_t a8[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK(prefill(pc, p, a8, 8, &s2) == 4, "a prompt of exactly 2 blocks reuses 1: its last token is computed");
    CHECK(s2.blocks[0] == s.blocks[0], "shared block");
    wrk_prefix_release(pc, a8, 8, &s2);
    wrk_prefix_get_stats(pc, &st);
    CHECK(st.cached_blocks == 2, "its computed copy of block 1 is dropped as a duplicate (%d)", st.cached_blocks);
    wrk_prefix_release(pc, a, 10, &s);

    int32_t b[10] = {1, 2, 3, 4, 99, 6, 7, 8, 9, 10};
    CHECK(prefill(pc, p, b, 10, &s) == 4, "a prompt that differs in block 1 reuses block 0 only");
    wrk_prefix_release(pc, b, 5, &s); /* cancelled after 5 tokens: only block 0 was complete */
    wrk_prefix_get_stats(pc, &st);
    CHECK(st.cached_blocks == 2, "blocks not fully computed are not kept (%d)", st.cached_blocks);
    CHECK(st.query_tokens == 38 && st.hit_tokens == 16, "token counts %llu %llu", (unsigned long long)st.query_tokens,
          (unsigned long long)st.hit_tokens);
    CHECK(st.query_blocks == 2 + 2 + 2 + 2 && st.hit_blocks == 4, "block counts %llu %llu",
          (unsigned long long)st.query_blocks, (unsigned long long)st.hit_blocks);

    uint64_t sum[8];
    CHECK(wrk_prefix_summary(pc, sum, 8) == 2, "summary of 2 cached blocks");
    eng_block_key k[2];
    eng_block_keys(eng_block_salt("m", LAYOUT_STR), a, 2, BS, k);
    CHECK(sum[0] == eng_block_key_short(k[0]) && sum[1] == eng_block_key_short(k[1]),
          "most recently used first: block 0 went back last");
    CHECK(wrk_prefix_summary(pc, sum, 1) == 1, "summary capped");

    /* the salt: another model or layout never matches */
    eng_block_key other[2];
    eng_block_keys(eng_block_salt("m", "f32 bs4 L3 kv1 d4"), a, 2, BS, other);
    CHECK(!eng_block_key_equal(other[0], k[0]), "layout in the key");
    eng_block_keys(eng_block_salt("n", LAYOUT_STR), a, 2, BS, other);
    CHECK(!eng_block_key_equal(other[0], k[0]), "model in the key");
    CHECK(!eng_block_key_equal(k[0], k[1]), "chain: position matters");

    /* pressure: 8 blocks, 2 cached (LRU: a's block 1, then block 0); a new 28-token
     * prompt needs 7: the 6 free and one evicted, the tail (block 1) before the head */
    int32_t c[28];
    for (int i = 0; i < 28; i++)
        c[i] = 1000 + i;
    CHECK(prefill(pc, p, c, 28, &s) == 0, "distinct prompt");
    wrk_prefix_get_stats(pc, &st);
    CHECK(st.evicted_blocks == 1 && st.cached_blocks == 1, "one evicted (%llu), one left",
          (unsigned long long)st.evicted_blocks);
    eng_seq s3 = {0};
    int32_t d[8] = {7, 7, 7, 7, 7, 7, 7, 7};
    CHECK(wrk_prefix_acquire(pc, d, 8, &s3) == -1 && s3.n_blocks == 0, "2 blocks wanted, 1 evictable: refused");
    wrk_prefix_get_stats(pc, &st);
    CHECK(eng_kv_pool_free_blocks(p) == 0 && st.evicted_blocks == 1 && st.cached_blocks == 1,
          "the refusal changed nothing");
    CHECK(wrk_prefix_acquire(pc, d, 0, &s3) == -1, "empty prompt refused");
    wrk_prefix_release(pc, c, 28, &s); /* 7 full blocks kept: the pool is all cache */
    CHECK(prefill(pc, p, a, 10, &s2) == 4, "the head of a survived");
    wrk_prefix_get_stats(pc, &st);
    CHECK(st.evicted_blocks == 3, "2 more evicted for it (%llu)", (unsigned long long)st.evicted_blocks);
    wrk_prefix_release(pc, a, 10, &s2);
    CHECK(prefill(pc, p, c, 28, &s) == 20, "c lost its last 2 blocks, not its first 5");
    wrk_prefix_release(pc, c, 28, &s);
    wrk_prefix_release(pc, d, 0, &s3); /* an empty sequence: nothing */
    wrk_prefix_get_stats(pc, &st);
    CHECK(st.cached_blocks + eng_kv_pool_free_blocks(p) == 8, "every block accounted for");
    wrk_prefix_destroy(pc);
    CHECK(eng_kv_pool_free_blocks(p) == 8, "destroy gives every cached block back");
    eng_kv_pool_destroy(p);
}

#define POOL 24
#define ACTIVE 6

typedef struct req {
    int32_t t[40];
    int n, computed, cached;
    eng_seq s;
} req;

/* Every block of r that holds computed tokens must hold r's own KV. */
static int intact(eng_kv_pool *p, const req *r)
{
    for (int i = 0; i < (r->computed + BS - 1) / BS; i++)
        if (!block_holds(p, r->s.blocks[i], content_of(r->t, r->n, i)))
            return 0;
    return 1;
}

static void eviction_safety(void)
{
    eng_error err = {{0}};
    eng_kv_pool *p = NULL;
    wrk_prefix *pc = NULL;
    REQUIRE(eng_kv_pool_create(&LAYOUT, POOL, &p, &err) == 0, "%s", err.msg);
    REQUIRE(wrk_prefix_create(p, eng_block_salt("m", LAYOUT_STR), &pc, &err) == 0, "%s", err.msg);
    srand(14);
    req act[ACTIVE];
    int n_act = 0, started = 0, refused = 0, broken = 0;
    for (int op = 0; op < 40000; op++) {
        if (n_act < ACTIVE && rand() % 2) {
            req *r = &act[n_act];
            memset(r, 0, sizeof *r);
            /* 12 system prompts of 2 blocks, then one of 30 middles, then a random tail */
            r->n = 9 + rand() % 28;
            int sys = rand() % 12, mid = rand() % 30;
            for (int i = 0; i < r->n; i++)
                r->t[i] = i < 8 ? sys * 100 + i : i < 16 ? 5000 + mid * 10 + i : rand() % 3;
            int cached = prefill(pc, p, r->t, r->n, &r->s);
            if (cached < 0) {
                refused++;
                CHECK(r->s.n_blocks == 0, "a refused request holds nothing");
                continue;
            }
            r->cached = cached;
            r->computed = r->n;
            started++;
            n_act++;
        } else if (n_act) {
            int i = rand() % n_act;
            req *r = &act[i];
            if (rand() % 8 == 0) /* cancelled midway: only what it computed stays valid */
                r->computed = r->cached + rand() % (r->n - r->cached + 1);
            if (!intact(p, r))
                broken++;
            wrk_prefix_release(pc, r->t, r->computed, &r->s);
            act[i] = act[--n_act];
        }
        if (op % 97 == 0) /* now and then, everyone still running checks its blocks */
            for (int i = 0; i < n_act; i++)
                broken += !intact(p, &act[i]);
        wrk_prefix_stats st;
        wrk_prefix_get_stats(pc, &st);
        int own = 0; /* blocks requests computed themselves: theirs alone until they end */
        for (int i = 0; i < n_act; i++)
            own += act[i].s.n_blocks - act[i].cached / BS;
        if (eng_kv_pool_free_blocks(p) + st.cached_blocks + own != POOL || st.evictable_blocks > st.cached_blocks) {
            CHECK(0, "block accounting broken at op %d", op);
            break;
        }
    }
    CHECK(broken == 0, "%d blocks in use were overwritten by another request", broken);
    wrk_prefix_stats st;
    wrk_prefix_get_stats(pc, &st);
    CHECK(started > 1000 && refused > 0 && st.evicted_blocks > 1000 && st.hit_blocks > 1000,
          "the run exercised hits, evictions and a full pool (started %d, refused %d, evicted %llu, hits %llu)",
          started, refused, (unsigned long long)st.evicted_blocks, (unsigned long long)st.hit_blocks);
    while (n_act) {
        req *r = &act[--n_act];
        CHECK(intact(p, r), "intact at the end");
        wrk_prefix_release(pc, r->t, r->computed, &r->s);
    }
    wrk_prefix_get_stats(pc, &st);
    CHECK(st.evictable_blocks == st.cached_blocks && st.cached_blocks + eng_kv_pool_free_blocks(p) == POOL,
          "all requests gone: every cached block evictable, none lost");
    wrk_prefix_destroy(pc);
    eng_kv_pool_destroy(p);
}

int main(void)
{
    basics();
    eviction_safety();
    return check_summary();
}

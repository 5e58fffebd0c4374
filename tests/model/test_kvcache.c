/* test_kvcache.c: the paged KV pool: layout arithmetic, all-or-nothing allocation,
 * freeing, sequences growing block by block, and releasing everything. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "model/kvcache.h"

int main(void)
{
    eng_kv_layout l = {.dtype = ENG_DT_F32, .block_size = 16, .n_layers = 3, .n_kv_heads = 2, .head_dim = 8};
    CHECK(eng_kv_unit_bytes(&l) == 2 * 2 * 16 * 8 * 4, "unit bytes %zu", eng_kv_unit_bytes(&l));
    char s[96];
    eng_kv_layout_str(&l, s, sizeof s);
    CHECK(!strcmp(s, "f32 bs16 L3 kv2 d8"), "layout string '%s'", s);
    eng_kv_layout l2 = l;
    CHECK(eng_kv_layout_equal(&l, &l2), "equal layouts");
    l2.block_size = 32;
    CHECK(!eng_kv_layout_equal(&l, &l2), "different block size");
    /* --kv-dtype's names; a layout's size follows its dtype */
    eng_dtype dt = ENG_DT_F8E4M3;
    CHECK(eng_kv_dtype_parse("bf16", &dt) == 0 && dt == ENG_DT_BF16, "bf16");
    CHECK(eng_kv_dtype_parse("f16", &dt) == 0 && dt == ENG_DT_F16, "f16");
    CHECK(eng_kv_dtype_parse("f32", &dt) == 0 && dt == ENG_DT_F32, "f32");
    CHECK(eng_kv_dtype_parse("f8e4m3", &dt) < 0 && eng_kv_dtype_parse("BF16", &dt) < 0 &&
              eng_kv_dtype_parse("", &dt) < 0 && eng_kv_dtype_parse(NULL, &dt) < 0 && dt == ENG_DT_F32,
          "only a KV dtype's own name parses");
    l2 = l;
    l2.dtype = ENG_DT_BF16;
    CHECK(eng_kv_unit_bytes(&l2) * 2 == eng_kv_unit_bytes(&l) && !eng_kv_layout_equal(&l, &l2), "bf16 halves a unit");
    eng_kv_layout_str(&l2, s, sizeof s);
    CHECK(!strcmp(s, "bf16 bs16 L3 kv2 d8"), "layout string '%s'", s);

    eng_error err = {{0}};
    eng_kv_pool *p = NULL;
    CHECK(eng_kv_pool_create(&l, 0, &p, &err) == -1 && p == NULL, "zero blocks must fail");
    CHECK(err.msg[0], "error message for zero blocks");
    eng_kv_layout bad = l;
    bad.head_dim = 0;
    CHECK(eng_kv_pool_create(&bad, 4, &p, &err) == -1, "bad layout must fail");

    CHECK(eng_kv_pool_create(&l, 10, &p, &err) == 0, "create: %s", err.msg);
    CHECK(eng_kv_pool_blocks(p) == 10 && eng_kv_pool_free_blocks(p) == 10, "fresh pool counts");
    CHECK(eng_kv_pool_bytes(p) == 10 * 3 * eng_kv_unit_bytes(&l), "pool bytes");
    /* layer-major: all blocks of a layer are one span */
    CHECK(eng_kv_unit_offset(p, 1, 0) == 10 * eng_kv_unit_bytes(&l), "layer 1 starts after 10 units");
    CHECK((char *)eng_kv_unit(p, 2, 3) == (char *)eng_kv_pool_base(p) + eng_kv_unit_offset(p, 2, 3), "unit pointer");
    float *u = eng_kv_unit(p, 2, 9);
    CHECK(u[0] == 0.0f, "pool memory starts zeroed");

    int32_t a[10], b[10];
    CHECK(eng_kv_alloc(p, 4, a) == 0, "alloc 4");
    CHECK(a[0] == 0 && a[1] == 1 && a[2] == 2 && a[3] == 3, "fresh pool hands out consecutive ids");
    CHECK(eng_kv_pool_free_blocks(p) == 6, "6 free");
    b[0] = -7;
    CHECK(eng_kv_alloc(p, 7, b) == -1, "7 of 6 must fail");
    CHECK(eng_kv_pool_free_blocks(p) == 6 && b[0] == -7, "failed alloc takes nothing");
    CHECK(eng_kv_alloc(p, 6, b) == 0 && eng_kv_pool_free_blocks(p) == 0, "take the rest");
    int seen[10] = {0};
    for (int i = 0; i < 4; i++)
        seen[a[i]]++;
    for (int i = 0; i < 6; i++)
        seen[b[i]]++;
    for (int i = 0; i < 10; i++)
        CHECK(seen[i] == 1, "block %d handed out %d times", i, seen[i]);
    CHECK(eng_kv_alloc(p, 1, b) == -1, "empty pool");
    eng_kv_free(p, a, 4);
    eng_kv_free(p, a, 4); /* a double free is ignored, not counted twice */
    CHECK(eng_kv_pool_free_blocks(p) == 4, "double free ignored (%d free)", eng_kv_pool_free_blocks(p));
    eng_kv_free(p, b, 6);
    CHECK(eng_kv_pool_free_blocks(p) == 10, "all free again");

    /* sequences */
    eng_seq s1 = {0}, s2 = {0};
    CHECK(eng_seq_reserve(p, &s1, 1, &err) == 0 && s1.n_blocks == 1, "1 token = 1 block");
    CHECK(eng_seq_reserve(p, &s1, 16, &err) == 0 && s1.n_blocks == 1, "16 tokens = 1 block");
    CHECK(eng_seq_reserve(p, &s1, 17, &err) == 0 && s1.n_blocks == 2, "17 tokens = 2 blocks");
    CHECK(eng_seq_reserve(p, &s2, 16 * 8, &err) == 0 && s2.n_blocks == 8, "second sequence takes 8");
    CHECK(eng_kv_pool_free_blocks(p) == 0, "pool exhausted");
    err.msg[0] = 0;
    CHECK(eng_seq_reserve(p, &s1, 33, &err) == -1 && s1.n_blocks == 2, "no room: nothing taken");
    CHECK(strstr(err.msg, "KV cache full") != NULL, "message: %s", err.msg);
    eng_seq_release(p, &s2);
    CHECK(s2.n_blocks == 0 && s2.blocks == NULL && s2.n_past == 0, "released sequence is empty");
    CHECK(eng_seq_reserve(p, &s1, 16 * 10, &err) == 0 && s1.n_blocks == 10, "grow to the whole pool: %s", err.msg);
    eng_seq_release(p, &s1);
    CHECK(eng_kv_pool_free_blocks(p) == 10, "usage back to zero");
    eng_kv_pool_destroy(p);
    return check_summary();
}

/* test_rdma_wire.c: the RDMA transport's device-free parts (kvtransfer/rdma_wire.c).
 *
 * Descriptors, hellos and queue-pair messages must survive a round trip bit for bit and
 * malformed ones must be refused with a reason (they arrive over the control plane from
 * another process); run coalescing must merge exactly the runs that continue each other
 * on both sides and never past the write limit. */
#include "kvt_util.h"
#include "rdma_wire.h"

static void test_descriptor(void)
{
    eng_error err;
    rdma_desc d = {
        .instance = 0x0123456789abcdefull, .region_id = 3, .lid = 7, .addr = 0x7f0012345000ull, .size = 123456789};
    for (int i = 0; i < 16; i++)
        d.gid[i] = (uint8_t)(i * 17);
    char buf[KVT_DESCRIPTOR_MAX], name[16];
    size_t len;
    CHECK_OK(rdma_desc_encode(&d, buf, sizeof buf, &len, &err), &err);
    CHECK(len < KVT_DESCRIPTOR_MAX && strlen(buf) == len);
    CHECK_OK(kvt_descriptor_transport(buf, len, name, sizeof name, &err), &err);
    CHECK(strcmp(name, "rdma") == 0);
    rdma_desc e;
    CHECK_OK(rdma_desc_decode(buf, len, &e, &err), &err);
    CHECK(memcmp(&d, &e, sizeof d) == 0);
    CHECK(rdma_desc_encode(&d, buf, 40, &len, &err) == -1); /* too small a buffer */

    CHECK_OK(rdma_desc_encode(&d, buf, sizeof buf, &len, &err), &err);
    CHECK(rdma_desc_decode(buf, len / 2, &e, &err) == -1); /* cut short */
    buf[40] = 'z';
    CHECK(rdma_desc_decode(buf, len, &e, &err) == -1); /* not hex */
    const char *bad[] = {"kvt1 tcp 127.0.0.1 5000", "kvt1 rdma v2 inst=1", "",
                         "kvt1 rdma v2 inst=0000000000000001 region=1 gid=00000000000000000000000000000000 "
                         "lid=0 addr=1000 size=0", /* empty region */
                         "kvt1 rdma v2 inst=0000000000000001 region=1 gid=00000000000000000000000000000000 "
                         "lid=70000 addr=1000 size=10", /* lid too big */
                         "kvt1 rdma v2 inst=0000000000000001 region=1 gid=00000000000000000000000000000000 "
                         "lid=0 addr=1000 size=10 extra",
                         /* v1 carried the region's remote key, which no longer grants access */
                         "kvt1 rdma v1 inst=0000000000000001 region=1 gid=00000000000000000000000000000000 "
                         "lid=0 rkey=1 addr=1000 size=10"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(rdma_desc_decode(bad[i], strlen(bad[i]), &e, &err) == -1);
}

static void test_hello(void)
{
    eng_error err;
    rdma_hello h = {
        .kind = RDMA_HELLO, .to = 11, .from = 22, .token = 33, .qpn = 0x1234, .psn = 0xabcdef, .lid = 5, .mtu = 3};
    h.gid[10] = h.gid[11] = 0xff;
    h.gid[12] = 10, h.gid[15] = 15;
    CHECK(rdma_gid_is_ipv4(h.gid));
    unsigned char buf[KVT_HELLO_MAX];
    CHECK(rdma_hello_encode(&h, buf, 10) == 0);
    size_t n = rdma_hello_encode(&h, buf, sizeof buf);
    CHECK(n == RDMA_HELLO_BYTES && n <= KVT_HELLO_MAX);
    rdma_hello g;
    CHECK_OK(rdma_hello_decode(buf, n, &g, &err), &err);
    CHECK(memcmp(&h, &g, sizeof h) == 0);
    CHECK(rdma_hello_decode(buf, n - 1, &g, &err) == -1);
    buf[0] ^= 1; /* magic */
    CHECK(rdma_hello_decode(buf, n, &g, &err) == -1);
    h.psn = 1u << 24; /* PSNs have 24 bits */
    n = rdma_hello_encode(&h, buf, sizeof buf);
    CHECK(rdma_hello_decode(buf, n, &g, &err) == -1 && strstr(err.msg, "bad fields"));
    h.psn = 1, h.mtu = 9;
    n = rdma_hello_encode(&h, buf, sizeof buf);
    CHECK(rdma_hello_decode(buf, n, &g, &err) == -1);
    uint8_t gid0[16] = {0xfe, 0x80};
    CHECK(!rdma_gid_is_ipv4(gid0));
}

static void test_messages(void)
{
    eng_error err;
    static unsigned char buf[RDMA_MSG_BYTES];
    uint64_t pairs[2 * (RDMA_MSG_MAX_PAIRS + 5)];
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++)
        pairs[i] = i * 0x0101010101ull;
    rdma_msg m = {.type = RM_RUNS, .id = 42, .n = RDMA_MSG_MAX_PAIRS + 5}, r;
    size_t len = rdma_msg_encode(&m, pairs, NULL, buf); /* clipped to what fits */
    CHECK(len == RDMA_MSG_BYTES);
    const unsigned char *p;
    CHECK_OK(rdma_msg_decode(buf, len, &r, &p, &err), &err);
    CHECK(r.type == RM_RUNS && r.id == 42 && r.n == RDMA_MSG_MAX_PAIRS);
    for (uint32_t i = 0; i < r.n; i++)
        CHECK(rdma_msg_word(p, RM_RUNS, i, 0) == pairs[2 * i] && rdma_msg_word(p, RM_RUNS, i, 1) == pairs[2 * i + 1]);
    m = (rdma_msg){.type = RM_SPANS, .id = 43, .n = RDMA_MSG_MAX_SPANS + 5}; /* (off, len, rkey) */
    len = rdma_msg_encode(&m, pairs, NULL, buf);
    CHECK(len == RDMA_MSG_HEADER + 24 * (size_t)RDMA_MSG_MAX_SPANS);
    CHECK_OK(rdma_msg_decode(buf, len, &r, &p, &err), &err);
    CHECK(r.type == RM_SPANS && r.n == RDMA_MSG_MAX_SPANS);
    for (uint32_t i = 0; i < r.n; i++)
        for (int w = 0; w < 3; w++)
            CHECK(rdma_msg_word(p, RM_SPANS, i, w) == pairs[3 * i + (uint32_t)w]);
    CHECK(rdma_msg_decode(buf, len - 16, &r, &p, &err) == -1); /* not whole spans */
    m = (rdma_msg){.type = RM_FINISH, .id = 7, .finish = {.bytes = 1, .checksum = 2, .n_runs = 3}};
    len = rdma_msg_encode(&m, NULL, NULL, buf);
    CHECK_OK(rdma_msg_decode(buf, len, &r, &p, &err), &err);
    CHECK(r.finish.bytes == 1 && r.finish.checksum == 2 && r.finish.n_runs == 3 && r.n == 0);
    m = (rdma_msg){.type = RM_VERDICT, .id = 7, .n = 5};
    len = rdma_msg_encode(&m, NULL, "nope!", buf);
    CHECK_OK(rdma_msg_decode(buf, len, &r, &p, &err), &err);
    CHECK(r.n == 5 && memcmp(p, "nope!", 5) == 0);
    CHECK(rdma_msg_decode(buf, len - 1, &r, &p, &err) == -1); /* length disagrees */
    CHECK(rdma_msg_decode(buf, 10, &r, &p, &err) == -1);
    buf[0] = 99;
    CHECK(rdma_msg_decode(buf, len, &r, &p, &err) == -1); /* unknown type */
}

static void test_coalescing(void)
{
    rdma_run pend, out;
    int has = 0;
    /* 3 consecutive blocks on both sides: one run. */
    CHECK(rdma_run_add(&pend, &has, 0, 1000, 100, 1 << 20, &out) == 0 && has);
    CHECK(rdma_run_add(&pend, &has, 100, 1100, 100, 1 << 20, &out) == 0);
    CHECK(rdma_run_add(&pend, &has, 200, 1200, 100, 1 << 20, &out) == 0);
    CHECK(pend.src == 0 && pend.dst == 1000 && pend.len == 300);
    /* Contiguous at the source only: a new run, the old one flushed. */
    CHECK(rdma_run_add(&pend, &has, 300, 5000, 100, 1 << 20, &out) == 1);
    CHECK(out.src == 0 && out.dst == 1000 && out.len == 300);
    /* Contiguous at the destination only. */
    CHECK(rdma_run_add(&pend, &has, 900, 5100, 100, 1 << 20, &out) == 1);
    CHECK(out.src == 300 && out.dst == 5000 && out.len == 100);
    /* Never past the limit. */
    CHECK(rdma_run_add(&pend, &has, 1000, 5200, 50, 150, &out) == 0 && pend.len == 150);
    CHECK(rdma_run_add(&pend, &has, 1050, 5250, 10, 150, &out) == 1 && out.len == 150);
    CHECK(pend.src == 1050 && pend.len == 10);

    /* A layer-major send (test_kvt_fork's layout loop) of k blocks: runs == breaks + 1. */
    test_pool src, dst;
    pool_init(&src, &TEST_LAYOUTS[0], 64, 1);
    dst = src;
    int sb[20], db[20], posted = 0;
    uint64_t rng = 5, total = 0;
    pick_blocks(64, 20, sb, &rng);
    pick_blocks(64, 20, db, &rng);
    has = 0;
    size_t ub = unit_bytes(&src.l);
    int expect = 0;
    for (int l = 0; l < src.l.n_layers; l++)
        for (int i = 0; i < 20; i++) {
            uint64_t so = unit_off(&src, l, sb[i]), dof = unit_off(&dst, l, db[i]);
            if (!(has && pend.src + pend.len == so && pend.dst + pend.len == dof))
                expect++;
            if (rdma_run_add(&pend, &has, so, dof, ub, UINT64_MAX, &out)) {
                posted++;
                total += out.len;
            }
        }
    posted++, total += pend.len;
    CHECK(posted == expect && total == (uint64_t)src.l.n_layers * 20 * ub);
    pool_free(&src);
}

int main(void)
{
    test_descriptor();
    test_hello();
    test_messages();
    test_coalescing();
    printf("test_rdma_wire ok\n");
    return 0;
}

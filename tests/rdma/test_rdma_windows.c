/* test_rdma_windows.c: remote write access is limited to a transfer's spans, for the
 * transfer's lifetime, on a real verbs device (inside the Soft-RoCE VM, tests/rdma/vm.sh).
 *
 * The receiver is the real RDMA transport (kvt_open("rdma")) with a registered pool. The
 * writer is not: it is a raw verbs queue pair of this test, connected to the receiver by
 * the same hello/reply exchange a prefill worker relays, speaking the transport's messages
 * (rdma_wire.h) itself, so that it can post the writes a broken or hostile peer would.
 *   1. A transfer done by the book: BEGIN, SPANS with one remote key per span, GO, writes
 *      into both spans, RUNS, FINISH; the receiver verifies it (KVT_OK).
 *   2. The same queue pair writes again with the first span's key after that transfer
 *      ended (verified, not forgotten yet: the receiver still holds its blocks): the write
 *      completes with a remote access error, the pool is unchanged.
 *   3. A new queue pair begins a second transfer and writes with its key one block
 *      outside that transfer's span (inside the pool): remote access error, pool unchanged.
 *   4. A third queue pair begins a transfer and writes with the key of the first (ended)
 *      transfer into the first transfer's own blocks: remote access error, pool unchanged.
 *      (The pool's own registration has no remote access and its key is sent nowhere.) */
#include <infiniband/verbs.h>
#include <xxhash.h>

#include "kvt_util.h"
#include "rdma_wire.h"

#define BLOCK 65536
#define N_BLOCKS 8
#define N_SLOTS 16 /* message buffers: 8 receives, 8 sends */

typedef struct writer {
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    struct ibv_cq *cq;
    struct ibv_qp *qp;
    struct ibv_mr *mr;
    unsigned char *mem; /* N_SLOTS message slots, then BLOCK bytes of data to write */
    int port, gid_index;
    union ibv_gid gid;
    struct ibv_port_attr pa;
} writer;

static unsigned char *slot(writer *w, int i)
{
    return w->mem + (size_t)i * RDMA_MSG_BYTES;
}

static unsigned char *data(writer *w)
{
    return slot(w, N_SLOTS);
}

static void post_recv(writer *w, int i)
{
    struct ibv_sge sge = {.addr = (uintptr_t)slot(w, i), .length = RDMA_MSG_BYTES, .lkey = w->mr->lkey};
    struct ibv_recv_wr wr = {.wr_id = (uint64_t)i, .sg_list = &sge, .num_sge = 1}, *bad;
    CHECK(ibv_post_recv(w->qp, &wr, &bad) == 0);
}

/* The first device's first active port and its IPv4-mapped GID (as the transport picks). */
static void writer_open(writer *w)
{
    int n = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    CHECK(list && n > 0);
    CHECK((w->ctx = ibv_open_device(list[0])));
    ibv_free_device_list(list);
    w->port = 1;
    CHECK(ibv_query_port(w->ctx, (uint8_t)w->port, &w->pa) == 0 && w->pa.state == IBV_PORT_ACTIVE);
    w->gid_index = 0;
    for (int i = 0; i < w->pa.gid_tbl_len; i++) {
        union ibv_gid g;
        if (ibv_query_gid(w->ctx, (uint8_t)w->port, i, &g) == 0 && rdma_gid_is_ipv4(g.raw)) {
            w->gid_index = i;
            break;
        }
    }
    CHECK(ibv_query_gid(w->ctx, (uint8_t)w->port, w->gid_index, &w->gid) == 0);
    CHECK((w->pd = ibv_alloc_pd(w->ctx)));
    size_t bytes = (size_t)N_SLOTS * RDMA_MSG_BYTES + BLOCK;
    CHECK((w->mem = aligned_alloc(4096, bytes)));
    memset(w->mem, 0, bytes);
    CHECK((w->mr = ibv_reg_mr(w->pd, w->mem, bytes, IBV_ACCESS_LOCAL_WRITE)));
    CHECK((w->cq = ibv_create_cq(w->ctx, 64, NULL, NULL, 0)));
}

/* A fresh RC queue pair, connected to the receiving transport t through its hello. */
static void writer_connect(writer *w, kvt_transport *t, const rdma_desc *d)
{
    eng_error err;
    if (w->qp)
        CHECK(ibv_destroy_qp(w->qp) == 0);
    struct ibv_wc wc;
    while (ibv_poll_cq(w->cq, 1, &wc) > 0) { /* the old pair's flushed work requests */
    }
    struct ibv_qp_init_attr ia = {.send_cq = w->cq,
                                  .recv_cq = w->cq,
                                  .qp_type = IBV_QPT_RC,
                                  .cap = {.max_send_wr = 16, .max_recv_wr = 16, .max_send_sge = 1, .max_recv_sge = 1}};
    CHECK((w->qp = ibv_create_qp(w->pd, &ia)));
    struct ibv_qp_attr a = {
        .qp_state = IBV_QPS_INIT, .port_num = (uint8_t)w->port, .qp_access_flags = IBV_ACCESS_LOCAL_WRITE};
    CHECK(ibv_modify_qp(w->qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS) == 0);
    for (int i = 0; i < N_SLOTS / 2; i++)
        post_recv(w, i);
    rdma_hello h = {.kind = RDMA_HELLO,
                    .to = d->instance,
                    .from = 0x7e57,
                    .token = 1,
                    .qpn = w->qp->qp_num,
                    .psn = 4242,
                    .lid = w->pa.lid,
                    .mtu = (uint8_t)w->pa.active_mtu};
    memcpy(h.gid, w->gid.raw, 16);
    unsigned char hello[KVT_HELLO_MAX], reply[KVT_HELLO_MAX];
    size_t hn = rdma_hello_encode(&h, hello, sizeof hello), rn;
    CHECK(hn > 0);
    CHECK_OK(kvt_accept_hello(t, hello, hn, reply, sizeof reply, &rn, &err), &err);
    rdma_hello r;
    CHECK_OK(rdma_hello_decode(reply, rn, &r, &err), &err);
    struct ibv_qp_attr b = {.qp_state = IBV_QPS_RTR,
                            .path_mtu = (enum ibv_mtu)r.mtu,
                            .dest_qp_num = r.qpn,
                            .rq_psn = r.psn,
                            .max_dest_rd_atomic = 1,
                            .min_rnr_timer = 12,
                            .ah_attr = {.dlid = r.lid, .port_num = (uint8_t)w->port, .is_global = 1}};
    memcpy(b.ah_attr.grh.dgid.raw, r.gid, 16);
    b.ah_attr.grh.sgid_index = (uint8_t)w->gid_index;
    b.ah_attr.grh.hop_limit = 64;
    CHECK(ibv_modify_qp(w->qp, &b,
                        IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                            IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER) == 0);
    struct ibv_qp_attr c = {
        .qp_state = IBV_QPS_RTS, .timeout = 14, .retry_cnt = 7, .rnr_retry = 7, .sq_psn = 4242, .max_rd_atomic = 1};
    CHECK(ibv_modify_qp(w->qp, &c,
                        IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                            IBV_QP_MAX_QP_RD_ATOMIC) == 0);
}

/* The next completion (10 s at most). */
static struct ibv_wc next_wc(writer *w)
{
    struct ibv_wc wc;
    double t0 = eng_now_s();
    int n;
    while ((n = ibv_poll_cq(w->cq, 1, &wc)) == 0)
        CHECK(eng_now_s() - t0 < 10.0);
    CHECK(n == 1);
    return wc;
}

static void send_msg(writer *w, const rdma_msg *m, const uint64_t *words)
{
    unsigned char *buf = slot(w, N_SLOTS / 2);
    size_t len = rdma_msg_encode(m, words, NULL, buf);
    struct ibv_sge sge = {.addr = (uintptr_t)buf, .length = (uint32_t)len, .lkey = w->mr->lkey};
    struct ibv_send_wr wr = {.wr_id = 1000, .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_SEND}, *bad;
    wr.send_flags = IBV_SEND_SIGNALED;
    CHECK(ibv_post_send(w->qp, &wr, &bad) == 0);
}

/* Waits for the next received message (send completions pass by); reposts its slot. */
static rdma_msg recv_msg(writer *w, uint64_t *words, int cap_items)
{
    eng_error err;
    for (;;) {
        struct ibv_wc wc = next_wc(w);
        CHECK(wc.status == IBV_WC_SUCCESS);
        if (wc.wr_id >= N_SLOTS)
            continue;
        rdma_msg m;
        const unsigned char *p;
        CHECK_OK(rdma_msg_decode(slot(w, (int)wc.wr_id), wc.byte_len, &m, &p, &err), &err);
        int width = rdma_msg_item_words(m.type);
        CHECK(width == 0 || (int)m.n <= cap_items);
        for (uint32_t i = 0; width && i < m.n; i++)
            for (int k = 0; k < width; k++)
                words[(size_t)width * i + (size_t)k] = rdma_msg_word(p, m.type, i, k);
        post_recv(w, (int)wc.wr_id);
        return m;
    }
}

/* BEGIN for id; returns the spans and keys the receiver granted, in words (off, len, rkey). */
static int begin(writer *w, uint64_t id, uint64_t region, uint64_t *spans, int cap)
{
    rdma_msg m = {.type = RM_BEGIN, .id = id, .begin.region_id = region};
    send_msg(w, &m, NULL);
    int n = 0;
    for (;;) {
        rdma_msg r = recv_msg(w, spans + 3 * n, cap - n);
        CHECK(r.id == id);
        if (r.type == RM_SPANS) {
            n += (int)r.n;
            continue;
        }
        CHECK(r.type == RM_GO && r.go.n_spans == (uint64_t)n);
        return n;
    }
}

/* One RDMA WRITE of len bytes of w's data to the receiver's addr with rkey; its status. */
static enum ibv_wc_status write_with(writer *w, uint64_t addr, uint32_t rkey, uint32_t len)
{
    struct ibv_sge sge = {.addr = (uintptr_t)data(w), .length = len, .lkey = w->mr->lkey};
    struct ibv_send_wr wr = {.wr_id = 2000, .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_RDMA_WRITE}, *bad;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.wr.rdma.remote_addr = addr;
    wr.wr.rdma.rkey = rkey;
    CHECK(ibv_post_send(w->qp, &wr, &bad) == 0);
    for (;;) {
        struct ibv_wc wc = next_wc(w);
        if (wc.wr_id == 2000)
            return wc.status;
        CHECK(wc.status == IBV_WC_SUCCESS || wc.status == IBV_WC_WR_FLUSH_ERR);
    }
}

static uint64_t expect_one(kvt_transport *t, kvt_region *r, int block)
{
    eng_error err;
    uint64_t id;
    kvt_span sp = {(uint64_t)block * BLOCK, BLOCK};
    CHECK_OK(kvt_expect_spans(t, r, &sp, 1, BLOCK, &id, &err), &err);
    return id;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    eng_error err;
    kvt_transport *t;
    CHECK_OK(kvt_open("rdma", NULL, &t, &err), &err);
    size_t pool_bytes = (size_t)N_BLOCKS * BLOCK;
    char *pool = aligned_alloc(4096, pool_bytes), *shadow = malloc(pool_bytes);
    CHECK(pool && shadow);
    memset(pool, 0x11, pool_bytes);
    kvt_region *reg;
    CHECK_OK(kvt_register(t, pool, pool_bytes, &reg, &err), &err);
    char desc[KVT_DESCRIPTOR_MAX];
    size_t dlen;
    CHECK_OK(kvt_descriptor(t, reg, desc, sizeof desc, &dlen, &err), &err);
    rdma_desc d;
    CHECK_OK(rdma_desc_decode(desc, dlen, &d, &err), &err);
    CHECK(d.addr == (uintptr_t)pool);

    writer w = {0};
    writer_open(&w);

    /* 1: by the book, blocks 2 and 5. */
    writer_connect(&w, t, &d);
    uint64_t id1;
    kvt_span sp1[2] = {{2 * BLOCK, BLOCK}, {5 * BLOCK, BLOCK}};
    CHECK_OK(kvt_expect_spans(t, reg, sp1, 2, 2 * BLOCK, &id1, &err), &err);
    uint64_t spans[3 * 8];
    CHECK(begin(&w, id1, d.region_id, spans, 8) == 2);
    CHECK(spans[0] == 2 * BLOCK && spans[1] == BLOCK && spans[3] == 5 * BLOCK && spans[4] == BLOCK);
    uint32_t key1 = (uint32_t)spans[2];
    CHECK(key1 != (uint32_t)spans[5]); /* a registration per span */
    memset(data(&w), 0x5a, BLOCK);
    CHECK(write_with(&w, d.addr + 2 * BLOCK, key1, BLOCK) == IBV_WC_SUCCESS);
    CHECK(write_with(&w, d.addr + 5 * BLOCK, (uint32_t)spans[5], BLOCK) == IBV_WC_SUCCESS);
    uint64_t runs[4] = {2 * BLOCK, BLOCK, 5 * BLOCK, BLOCK};
    rdma_msg rm = {.type = RM_RUNS, .id = id1, .n = 2};
    send_msg(&w, &rm, runs);
    XXH3_state_t *h = XXH3_createState();
    XXH3_64bits_reset(h);
    XXH3_64bits_update(h, data(&w), BLOCK);
    XXH3_64bits_update(h, data(&w), BLOCK);
    uint64_t sum = XXH3_64bits_digest(h);
    XXH3_freeState(h);
    rdma_msg fin = {.type = RM_FINISH, .id = id1, .finish = {.bytes = 2 * BLOCK, .checksum = sum, .n_runs = 2}};
    send_msg(&w, &fin, NULL);
    uint64_t none[1];
    rdma_msg verdict = recv_msg(&w, none, 0);
    CHECK(verdict.type == RM_VERDICT && verdict.id == id1 && verdict.verdict.ok == 1);
    CHECK(kvt_wait(t, id1, 10000, &err) == KVT_OK);
    CHECK(pool[2 * BLOCK] == 0x5a && pool[6 * BLOCK - 1] == 0x5a && pool[2 * BLOCK - 1] == 0x11);
    printf("1: transfer by the book: 2 spans, 2 keys, verified by the receiver\n");
    memcpy(shadow, pool, pool_bytes);

    /* 2: the same queue pair, the first span's key, after the transfer ended. */
    memset(data(&w), 0xee, BLOCK);
    enum ibv_wc_status st = write_with(&w, d.addr + 2 * BLOCK, key1, BLOCK);
    printf("2: write with the ended transfer's key on its own queue pair: \"%s\"\n", ibv_wc_status_str(st));
    CHECK(st == IBV_WC_REM_ACCESS_ERR);
    CHECK(memcmp(pool, shadow, pool_bytes) == 0);
    kvt_forget(t, id1);

    /* 3: a second transfer's key, one block outside its span. */
    writer_connect(&w, t, &d);
    uint64_t id2 = expect_one(t, reg, 6);
    CHECK(begin(&w, id2, d.region_id, spans, 8) == 1 && spans[0] == 6 * BLOCK);
    st = write_with(&w, d.addr + 7 * BLOCK, (uint32_t)spans[2], BLOCK);
    printf("3: write one block past the open transfer's span with its key: \"%s\"\n", ibv_wc_status_str(st));
    CHECK(st == IBV_WC_REM_ACCESS_ERR);
    CHECK(memcmp(pool, shadow, pool_bytes) == 0);
    kvt_forget(t, id2);

    /* 4: a third queue pair with its own open transfer writes with the first one's key. */
    writer_connect(&w, t, &d);
    uint64_t id3 = expect_one(t, reg, 2);
    CHECK(begin(&w, id3, d.region_id, spans, 8) == 1);
    CHECK((uint32_t)spans[2] != key1);
    st = write_with(&w, d.addr + 2 * BLOCK, key1, BLOCK);
    printf("4: write with the ended transfer's key while another transfer holds the block: \"%s\"\n",
           ibv_wc_status_str(st));
    CHECK(st == IBV_WC_REM_ACCESS_ERR);
    CHECK(memcmp(pool, shadow, pool_bytes) == 0);
    kvt_forget(t, id3);

    ibv_destroy_qp(w.qp);
    ibv_destroy_cq(w.cq);
    ibv_dereg_mr(w.mr);
    ibv_dealloc_pd(w.pd);
    ibv_close_device(w.ctx);
    free(w.mem);
    CHECK_OK(kvt_deregister(t, reg, &err), &err);
    kvt_destroy(t);
    free(pool);
    free(shadow);
    printf("test_rdma_windows ok: writes outside a transfer's spans or after it ended land nowhere\n");
    return 0;
}

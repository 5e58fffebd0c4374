/* test_rdma_pair.c: the RDMA transport between processes, on a real verbs device.
 *
 * Runs inside the Soft-RoCE VM (tests/rdma/vm.sh, device rxe0). Pipes stand in for the
 * gRPC control plane: descriptors, transfer ids, hellos and replies travel over them, and
 * nothing else. Every process is forked before any verbs call, so no device state is
 * shared across fork.
 *   1. A and B transfer thousands of KV blocks of four layouts in both directions at once;
 *      the receivers verify the checksums and both sides compare every byte.
 *   2. The sender (C) is SIGKILLed mid-transfer: A's wait fails within a bound.
 *   3. The receiver (D) is SIGKILLed mid-transfer: A's finish fails within a bound.
 *   4. B forgets a transfer while A still writes it: A's transfer fails, B's memory does
 *      not change after kvt_forget returned, and a new hello (relayed twice, as two racing
 *      requests would) rebuilds the queue pair for a transfer that succeeds. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvt_util.h"

#define N_TRANSFERS 4
#define K_BLOCKS 40
#define POOL_BLOCKS 240 /* >= N_TRANSFERS * K_BLOCKS and >= BIG_K */

typedef struct chan {
    int in, out;
} chan;

static void put(chan c, const void *p, size_t n)
{
    uint32_t len = (uint32_t)n;
    CHECK(write(c.out, &len, 4) == 4);
    CHECK(n == 0 || write(c.out, p, n) == (ssize_t)n);
}

static size_t get(chan c, void *p, size_t cap)
{
    uint32_t len;
    char *q = p;
    CHECK(read(c.in, &len, 4) == 4 && len <= cap);
    for (size_t got = 0; got < len;) {
        ssize_t r = read(c.in, q + got, len - got);
        CHECK(r > 0);
        got += (size_t)r;
    }
    return len;
}

static kvt_transport *open_rdma(const char *who)
{
    eng_error err;
    kvt_transport *t;
    CHECK_OK(kvt_open("rdma", NULL, &t, &err), &err);
    CHECK(strcmp(kvt_name(t), "rdma") == 0);
    printf("%s: transport %s\n", who, kvt_choice(t));
    return t;
}

/* Sender side of the control plane: connect, relay the hello, apply the reply. */
static kvt_peer *link_to(kvt_transport *t, chan c, const char *desc, size_t dlen)
{
    eng_error err;
    kvt_peer *p;
    char hello[KVT_HELLO_MAX], reply[KVT_HELLO_MAX];
    CHECK_OK(kvt_connect(t, desc, dlen, &p, &err), &err);
    size_t n = kvt_peer_hello(p, hello, sizeof hello);
    CHECK(n > 0);
    put(c, hello, n);
    size_t r = get(c, reply, sizeof reply);
    CHECK_OK(kvt_peer_reply(p, reply, r, &err), &err);
    CHECK(kvt_peer_hello(p, hello, sizeof hello) == 0); /* connected now */
    return p;
}

/* The same hello relayed twice (two requests racing to a new peer): both answers are
 * applied, the second one changes nothing, and the pair works. */
static kvt_peer *link_to_twice(kvt_transport *t, chan c, const char *desc, size_t dlen)
{
    eng_error err;
    kvt_peer *p;
    char hello[KVT_HELLO_MAX], reply[2][KVT_HELLO_MAX];
    size_t r[2];
    CHECK_OK(kvt_connect(t, desc, dlen, &p, &err), &err);
    size_t n = kvt_peer_hello(p, hello, sizeof hello);
    CHECK(n > 0);
    for (int i = 0; i < 2; i++) {
        put(c, hello, n);
        r[i] = get(c, reply[i], sizeof reply[i]);
    }
    CHECK_OK(kvt_peer_reply(p, reply[0], r[0], &err), &err);
    CHECK_OK(kvt_peer_reply(p, reply[1], r[1], &err), &err);
    return p;
}

/* Receiver side: answer one relayed hello. */
static void answer_hello(kvt_transport *t, chan c)
{
    eng_error err;
    char hello[KVT_HELLO_MAX], reply[KVT_HELLO_MAX];
    size_t n = get(c, hello, sizeof hello), r;
    CHECK_OK(kvt_accept_hello(t, hello, n, reply, sizeof reply, &r, &err), &err);
    CHECK(r > 0);
    put(c, reply, r);
}

/* Both ends agree on transfer i's blocks from the seed: sources anywhere, destinations
 * disjoint between the transfers of one layout (they share the receiving pool). */
static void plan(int from, int layout, int i, int *sb, int *db, int k)
{
    uint64_t rng = 1000003ull * (uint64_t)(from + 1) + 7919ull * (uint64_t)layout;
    int all[POOL_BLOCKS];
    pick_blocks(POOL_BLOCKS, N_TRANSFERS * K_BLOCKS, all, &rng);
    memcpy(db, all + i * K_BLOCKS, sizeof *db * (size_t)k);
    rng += (uint64_t)i + 1;
    pick_blocks(POOL_BLOCKS, k, sb, &rng);
}

static int expect_blocks(kvt_transport *t, kvt_region *r, const test_pool *dst, const int *db, int k, uint64_t *id)
{
    eng_error err;
    int n = dst->l.n_layers * k;
    kvt_span *sp = malloc(sizeof *sp * (size_t)n);
    CHECK(sp);
    size_t ub = unit_bytes(&dst->l);
    for (int l = 0; l < dst->l.n_layers; l++)
        for (int i = 0; i < k; i++)
            sp[l * k + i] = (kvt_span){unit_off(dst, l, db[i]), ub};
    int rc = kvt_expect_spans(t, r, sp, n, (uint64_t)n * ub, id, &err);
    free(sp);
    return rc;
}

/* Phase 1 for one process ("me" is 0 for A, 1 for B). */
static void both_ways(kvt_transport *t, chan c, int me)
{
    eng_error err;
    double t0 = eng_now_s();
    uint64_t bytes = 0;
    int units = 0;
    for (int L = 0; L < N_TEST_LAYOUTS; L++) {
        const test_layout *lay = &TEST_LAYOUTS[L];
        test_pool src, dst, shadow;
        pool_init(&src, lay, POOL_BLOCKS, 0xA000 + 16 * (uint64_t)me + (uint64_t)L);
        pool_init(&dst, lay, POOL_BLOCKS, 0);
        pool_init(&shadow, lay, POOL_BLOCKS, 0xA000 + 16 * (uint64_t)(1 - me) + (uint64_t)L);
        kvt_region *rs, *rd;
        CHECK_OK(kvt_register(t, src.mem, src.bytes, &rs, &err), &err);
        CHECK_OK(kvt_register(t, dst.mem, dst.bytes, &rd, &err), &err);
        int sb[N_TRANSFERS][K_BLOCKS], db[N_TRANSFERS][K_BLOCKS];
        uint64_t ids[N_TRANSFERS], peer_ids[N_TRANSFERS];
        for (int i = 0; i < N_TRANSFERS; i++) { /* what the peer sends me */
            plan(1 - me, L, i, sb[i], db[i], K_BLOCKS);
            CHECK_OK(expect_blocks(t, rd, &dst, db[i], K_BLOCKS, &ids[i]), &err);
        }
        char desc[KVT_DESCRIPTOR_MAX], peer_desc[KVT_DESCRIPTOR_MAX];
        size_t dlen;
        CHECK_OK(kvt_descriptor(t, rd, desc, sizeof desc, &dlen, &err), &err);
        put(c, desc, dlen);
        put(c, ids, sizeof ids);
        size_t plen = get(c, peer_desc, sizeof peer_desc);
        CHECK(get(c, peer_ids, sizeof peer_ids) == sizeof peer_ids);
        /* A connects first, then B, so the two hellos never cross on the pipes. */
        kvt_peer *p = NULL;
        for (int turn = 0; turn < 2; turn++) {
            if (turn == me)
                p = link_to(t, c, peer_desc, plen);
            else
                answer_hello(t, c);
        }
        for (int i = 0; i < N_TRANSFERS; i++) {
            int psb[K_BLOCKS], pdb[K_BLOCKS];
            plan(me, L, i, psb, pdb, K_BLOCKS);
            kvt_send *s;
            CHECK_OK(kvt_send_begin(p, rs, peer_ids[i], NULL, &s, &err), &err);
            CHECK_OK(send_blocks(s, &src, psb, &dst, pdb, K_BLOCKS, &err), &err);
            CHECK_OK(kvt_send_finish(s, 60000, &err), &err);
        }
        for (int i = 0; i < N_TRANSFERS; i++) {
            kvt_state st = kvt_wait(t, ids[i], 60000, &err);
            if (st != KVT_OK)
                fprintf(stderr, "wait: %s\n", err.msg);
            CHECK(st == KVT_OK);
            CHECK(blocks_equal(&shadow, sb[i], &dst, db[i], K_BLOCKS));
            kvt_forget(t, ids[i]);
            bytes += unit_bytes(lay) * lay->n_layers * K_BLOCKS;
            units += lay->n_layers * K_BLOCKS;
        }
        char ok = 1;
        put(c, &ok, 1);
        CHECK(get(c, &ok, 1) == 1);
        CHECK_OK(kvt_deregister(t, rs, &err), &err);
        CHECK_OK(kvt_deregister(t, rd, &err), &err);
        pool_free(&src);
        pool_free(&dst);
        pool_free(&shadow);
    }
    kvt_stats st;
    kvt_get_stats(t, &st);
    CHECK(st.recvs_ok == (uint64_t)N_TEST_LAYOUTS * N_TRANSFERS && st.sends_ok == st.recvs_ok);
    CHECK(st.bytes_received == bytes && st.bytes_sent == bytes);
    printf("%s: both ways: received %d KV blocks (%.1f MiB) in %d layouts, checksums verified, "
           "contents equal, %.2f s\n",
           me ? "B" : "A", units, bytes / 1048576.0, N_TEST_LAYOUTS, eng_now_s() - t0);
}

/* A big single-layout transfer used by the failure phases: many scattered runs. */
#define BIG_K 120

static void big_plan(int *sb, int *db)
{
    plan(7, 1, 0, sb, db, BIG_K);
}

/* Child C: sends half of a transfer to A, then waits to be killed. */
static void child_sender(chan c)
{
    eng_error err;
    kvt_transport *t = open_rdma("C");
    test_pool src, dst;
    pool_init(&src, &TEST_LAYOUTS[1], POOL_BLOCKS, 0xC0);
    dst = src; /* only its layout and size are used */
    kvt_region *rs;
    CHECK_OK(kvt_register(t, src.mem, src.bytes, &rs, &err), &err);
    char desc[KVT_DESCRIPTOR_MAX];
    uint64_t id;
    size_t dlen = get(c, desc, sizeof desc);
    CHECK(get(c, &id, sizeof id) == sizeof id);
    kvt_peer *p = link_to(t, c, desc, dlen);
    kvt_send *s;
    int sb[BIG_K], db[BIG_K];
    big_plan(sb, db);
    CHECK_OK(kvt_send_begin(p, rs, id, NULL, &s, &err), &err);
    CHECK_OK(send_blocks(s, &src, sb, &dst, db, BIG_K / 2, &err), &err); /* half the blocks */
    char half = 1;
    put(c, &half, 1);
    pause(); /* SIGKILL comes */
}

/* Child D (receiver) or B in phase 4: expects a transfer from A. */
static void serve_one(kvt_transport *t, chan c, kvt_region *rd, const test_pool *dst, uint64_t *id)
{
    eng_error err;
    int sb[BIG_K], db[BIG_K];
    big_plan(sb, db);
    CHECK_OK(expect_blocks(t, rd, dst, db, BIG_K, id), &err);
    char desc[KVT_DESCRIPTOR_MAX];
    size_t dlen;
    CHECK_OK(kvt_descriptor(t, rd, desc, sizeof desc, &dlen, &err), &err);
    put(c, desc, dlen);
    put(c, id, sizeof *id);
    answer_hello(t, c);
}

static void child_receiver(chan c)
{
    kvt_transport *t = open_rdma("D");
    eng_error err;
    test_pool dst;
    pool_init(&dst, &TEST_LAYOUTS[1], POOL_BLOCKS, 0);
    kvt_region *rd;
    CHECK_OK(kvt_register(t, dst.mem, dst.bytes, &rd, &err), &err);
    uint64_t id;
    serve_one(t, c, rd, &dst, &id);
    pause();
}

/* A's half of a transfer to a receiver that serve_one()s: returns the peer and the id. */
static kvt_peer *start_big(kvt_transport *t, chan c, uint64_t *id)
{
    char desc[KVT_DESCRIPTOR_MAX];
    size_t dlen = get(c, desc, sizeof desc);
    CHECK(get(c, id, sizeof *id) == sizeof *id);
    return link_to(t, c, desc, dlen);
}

/* Phase 4 on B: forget while A writes; nothing may change afterwards; then a good one. */
static void b_forget(kvt_transport *t, chan c)
{
    eng_error err;
    test_pool dst;
    pool_init(&dst, &TEST_LAYOUTS[1], POOL_BLOCKS, 0);
    kvt_region *rd;
    CHECK_OK(kvt_register(t, dst.mem, dst.bytes, &rd, &err), &err);
    uint64_t id;
    serve_one(t, c, rd, &dst, &id);
    char m;
    CHECK(get(c, &m, 1) == 1); /* A has written half */
    kvt_forget(t, id);
    char *snap = malloc(dst.bytes);
    CHECK(snap);
    memcpy(snap, dst.mem, dst.bytes);
    put(c, &m, 1);
    CHECK(get(c, &m, 1) == 1); /* A's finish returned (failed) */
    CHECK(memcmp(snap, dst.mem, dst.bytes) == 0);
    printf("B: forgot a transfer mid-way; no byte landed after kvt_forget returned\n");
    free(snap);
    /* The queue pair was torn down; a new hello (relayed twice here) builds a new one. */
    memset(dst.mem, 0xEE, dst.bytes);
    serve_one(t, c, rd, &dst, &id);
    answer_hello(t, c);
    CHECK(kvt_wait(t, id, 60000, &err) == KVT_OK);
    test_pool src;
    pool_init(&src, &TEST_LAYOUTS[1], POOL_BLOCKS, 0xA1);
    int sb[BIG_K], db[BIG_K];
    big_plan(sb, db);
    CHECK(blocks_equal(&src, sb, &dst, db, BIG_K));
    kvt_forget(t, id);
    printf("B: after the forget, a rebuilt queue pair carried a verified transfer\n");
    CHECK_OK(kvt_deregister(t, rd, &err), &err);
    pool_free(&src);
    pool_free(&dst);
}

static void a_forget(kvt_transport *t, chan c)
{
    eng_error err;
    test_pool src;
    pool_init(&src, &TEST_LAYOUTS[1], POOL_BLOCKS, 0xA1);
    kvt_region *rs;
    CHECK_OK(kvt_register(t, src.mem, src.bytes, &rs, &err), &err);
    uint64_t id;
    kvt_peer *p = start_big(t, c, &id);
    int sb[BIG_K], db[BIG_K];
    big_plan(sb, db);
    kvt_send *s;
    CHECK_OK(kvt_send_begin(p, rs, id, NULL, &s, &err), &err);
    CHECK_OK(send_blocks(s, &src, sb, &src, db, BIG_K / 2, &err), &err);
    char m = 1;
    put(c, &m, 1);
    CHECK(get(c, &m, 1) == 1); /* B forgot it */
    double t0 = eng_now_s();
    int rc = send_blocks(s, &src, sb + BIG_K / 2, &src, db + BIG_K / 2, BIG_K - BIG_K / 2, &err);
    if (rc == 0)
        rc = kvt_send_finish(s, 30000, &err);
    else
        kvt_send_abort(s, "test");
    CHECK(rc == -1);
    printf("A: the forgotten transfer failed on the sender after %.2f s: %s\n", eng_now_s() - t0, err.msg);
    put(c, &m, 1);
    char desc[KVT_DESCRIPTOR_MAX];
    size_t dlen = get(c, desc, sizeof desc);
    CHECK(get(c, &id, sizeof id) == sizeof id);
    p = link_to_twice(t, c, desc, dlen);
    CHECK_OK(kvt_send_begin(p, rs, id, NULL, &s, &err), &err);
    CHECK_OK(send_blocks(s, &src, sb, &src, db, BIG_K, &err), &err);
    CHECK_OK(kvt_send_finish(s, 60000, &err), &err);
    CHECK_OK(kvt_deregister(t, rs, &err), &err);
    pool_free(&src);
}

static pid_t spawn(chan *parent_end, void (*fn)(chan))
{
    int a[2], b[2];
    CHECK(pipe(a) == 0 && pipe(b) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(a[1]);
        close(b[0]);
        fn((chan){a[0], b[1]});
        fflush(stdout);
        _exit(0);
    }
    close(a[0]);
    close(b[1]);
    *parent_end = (chan){b[0], a[1]};
    return pid;
}

static void child_b(chan c)
{
    char go;
    CHECK(get(c, &go, 1) == 1);
    kvt_transport *t = open_rdma("B");
    both_ways(t, c, 1);
    b_forget(t, c);
    kvt_destroy(t);
}

static void child_c(chan c)
{
    char go;
    CHECK(get(c, &go, 1) == 1);
    child_sender(c);
}

static void child_d(chan c)
{
    char go;
    CHECK(get(c, &go, 1) == 1);
    child_receiver(c);
}

static void reap(pid_t pid, int want_kill)
{
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    if (want_kill)
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    else
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    chan cb, cc, cd;
    pid_t b = spawn(&cb, child_b), c = spawn(&cc, child_c), d = spawn(&cd, child_d);
    char go = 1;
    eng_error err;
    kvt_transport *t = open_rdma("A");

    put(cb, &go, 1);
    both_ways(t, cb, 0);

    /* 2: the sender dies mid-transfer. */
    put(cc, &go, 1);
    {
        test_pool dst;
        pool_init(&dst, &TEST_LAYOUTS[1], POOL_BLOCKS, 0);
        kvt_region *rd;
        CHECK_OK(kvt_register(t, dst.mem, dst.bytes, &rd, &err), &err);
        uint64_t id;
        serve_one(t, cc, rd, &dst, &id);
        char half;
        CHECK(get(cc, &half, 1) == 1);
        CHECK(kvt_wait(t, id, 0, &err) == KVT_PENDING);
        kill(c, SIGKILL);
        double t0 = eng_now_s();
        kvt_state st = kvt_wait(t, id, 30000, &err);
        CHECK(st == KVT_FAILED);
        printf("A: sender killed mid-transfer; the receiver's wait failed after %.2f s: %s\n", eng_now_s() - t0,
               err.msg);
        kvt_forget(t, id);
        CHECK_OK(kvt_deregister(t, rd, &err), &err);
        pool_free(&dst);
        reap(c, 1);
    }

    /* 3: the receiver dies mid-transfer. */
    put(cd, &go, 1);
    {
        test_pool src;
        pool_init(&src, &TEST_LAYOUTS[1], POOL_BLOCKS, 0xA1);
        kvt_region *rs;
        CHECK_OK(kvt_register(t, src.mem, src.bytes, &rs, &err), &err);
        uint64_t id;
        kvt_peer *p = start_big(t, cd, &id);
        int sb[BIG_K], db[BIG_K];
        big_plan(sb, db);
        kvt_send *s;
        CHECK_OK(kvt_send_begin(p, rs, id, NULL, &s, &err), &err);
        CHECK_OK(send_blocks(s, &src, sb, &src, db, BIG_K / 2, &err), &err);
        kill(d, SIGKILL);
        reap(d, 1);
        double t0 = eng_now_s();
        int rc = send_blocks(s, &src, sb + BIG_K / 2, &src, db + BIG_K / 2, BIG_K - BIG_K / 2, &err);
        if (rc == 0)
            rc = kvt_send_finish(s, 30000, &err);
        else
            kvt_send_abort(s, "test");
        CHECK(rc == -1);
        printf("A: receiver killed mid-transfer; the sender failed after %.2f s: %s\n", eng_now_s() - t0, err.msg);
        CHECK_OK(kvt_deregister(t, rs, &err), &err);
        pool_free(&src);
    }

    /* 4: forget fences the writer; the pair is rebuilt. */
    a_forget(t, cb);
    reap(b, 0);
    kvt_stats st;
    kvt_get_stats(t, &st);
    printf("A: stats: %llu sends ok, %llu failed; %llu receives ok, %llu failed\n", (unsigned long long)st.sends_ok,
           (unsigned long long)st.sends_failed, (unsigned long long)st.recvs_ok, (unsigned long long)st.recvs_failed);
    kvt_destroy(t);
    printf("test_rdma_pair ok\n");
    return 0;
}

/* test_kvt_loopback.c: the TCP transport between endpoints in one process.
 *
 * Content is compared byte for byte after every transfer, and blocks outside a transfer
 * must keep their sentinel. Covers: several layouts in both directions at once, several
 * threads sharing one connection, corrupted bytes (test hook), runs outside the region,
 * a receiver that forgets a transfer while data still arrives (its blocks get reused),
 * sender abort, short transfers, unknown ids, stale descriptors, a receiver that goes away
 * mid-transfer, a receiver that hangs (stops reading, or never answers), a sender that
 * stalls mid-run or sends garbage, deregistering a region in use, and the counters. */
#include <arpa/inet.h>
#include <endian.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kvt_util.h"
#include "transport.h" /* kvt_spans_find, tested directly */

typedef struct side {
    kvt_transport *t;
    test_pool src, dst; /* sends from src, receives into dst */
    kvt_region *rsrc, *rdst;
    char desc[KVT_DESCRIPTOR_MAX];
    size_t dlen;
} side;

static int n_notified;
static pthread_mutex_t notify_mu = PTHREAD_MUTEX_INITIALIZER;

static void on_done(void *user, uint64_t id, kvt_state st)
{
    (void)user;
    (void)id;
    CHECK(st == KVT_OK || st == KVT_FAILED);
    pthread_mutex_lock(&notify_mu);
    n_notified++;
    pthread_mutex_unlock(&notify_mu);
}

static void side_init(side *s, const test_layout *l, int n_blocks, uint64_t seed)
{
    eng_error err;
    kvt_tcp_options o = {.io_timeout_ms = 5000};
    memset(s, 0, sizeof *s);
    CHECK_OK(kvt_tcp_create(&o, &s->t, &err), &err);
    CHECK(strcmp(kvt_name(s->t), "tcp") == 0);
    pool_init(&s->src, l, n_blocks, seed);
    pool_init(&s->dst, l, n_blocks, 0);
    CHECK_OK(kvt_register(s->t, s->src.mem, s->src.bytes, &s->rsrc, &err), &err);
    CHECK_OK(kvt_register(s->t, s->dst.mem, s->dst.bytes, &s->rdst, &err), &err);
    CHECK_OK(kvt_descriptor(s->t, s->rdst, s->desc, sizeof s->desc, &s->dlen, &err), &err);
    char name[16];
    CHECK_OK(kvt_descriptor_transport(s->desc, s->dlen, name, sizeof name, &err), &err);
    CHECK(strcmp(name, "tcp") == 0);
    kvt_set_notify(s->t, on_done, NULL);
}

static void side_free(side *s)
{
    eng_error err;
    CHECK_OK(kvt_deregister(s->t, s->rsrc, &err), &err);
    CHECK_OK(kvt_deregister(s->t, s->rdst, &err), &err);
    kvt_destroy(s->t);
    pool_free(&s->src);
    pool_free(&s->dst);
}

/* k blocks from a's src into b's dst blocks chosen in [lo, lo+span); verified both ways. */
static void transfer_ok(side *a, side *b, int k, int lo, int span, uint64_t *rng)
{
    eng_error err;
    int *sb = malloc(sizeof(int) * k), *db = malloc(sizeof(int) * k);
    CHECK(sb && db);
    pick_blocks(a->src.n_blocks, k, sb, rng);
    pick_blocks(span, k, db, rng);
    for (int i = 0; i < k; i++)
        db[i] += lo;
    uint64_t bytes = (uint64_t)k * a->src.l.n_layers * unit_bytes(&a->src.l), id;
    /* As a decode worker would: the transfer may only write the request's blocks. */
    int ns = k * a->src.l.n_layers;
    kvt_span *spans = malloc(sizeof *spans * ns);
    CHECK(spans);
    for (int layer = 0; layer < a->src.l.n_layers; layer++)
        for (int i = 0; i < k; i++)
            spans[layer * k + i] = (kvt_span){unit_off(&b->dst, layer, db[i]), unit_bytes(&b->dst.l)};
    CHECK_OK(kvt_expect_spans(b->t, b->rdst, spans, ns, bytes, &id, &err), &err);
    free(spans);
    kvt_peer *p;
    kvt_send *s;
    CHECK_OK(kvt_connect(a->t, b->desc, b->dlen, &p, &err), &err);
    char hello[KVT_HELLO_MAX];
    CHECK(kvt_peer_hello(p, hello, sizeof hello) == 0); /* TCP needs no hello */
    CHECK_OK(kvt_send_begin(p, a->rsrc, id, NULL, &s, &err), &err);
    CHECK_OK(send_blocks(s, &a->src, sb, &b->dst, db, k, &err), &err);
    CHECK_OK(kvt_send_finish(s, 20000, &err), &err);
    CHECK(kvt_wait(b->t, id, 5000, &err) == KVT_OK);
    CHECK(blocks_equal(&a->src, sb, &b->dst, db, k));
    kvt_forget(b->t, id);
    CHECK(kvt_wait(b->t, id, 0, &err) == KVT_FAILED); /* forgotten: unknown now */
    free(sb);
    free(db);
}

typedef struct job {
    side *a, *b;
    int transfers, k, lo, span;
    uint64_t seed;
} job;

static void *run_job(void *arg)
{
    job *j = arg;
    uint64_t rng = j->seed;
    for (int i = 0; i < j->transfers; i++)
        transfer_ok(j->a, j->b, j->k, j->lo, j->span, &rng);
    return NULL;
}

/* Per layout: A->B and B->A at the same time, and on A->B two threads share the
 * connection with disjoint destination blocks. */
static void test_layouts(void)
{
    for (int li = 0; li < N_TEST_LAYOUTS; li++) {
        const test_layout *l = &TEST_LAYOUTS[li];
        side a, b;
        side_init(&a, l, 400, 1000 + li);
        side_init(&b, l, 400, 2000 + li);
        job jobs[3] = {
            {&a, &b, 4, 100, 0, 200, 11 + li},
            {&a, &b, 4, 100, 200, 200, 22 + li},
            {&b, &a, 4, 150, 0, 400, 33 + li},
        };
        pthread_t th[3];
        for (int i = 0; i < 3; i++)
            CHECK(pthread_create(&th[i], NULL, run_job, &jobs[i]) == 0);
        for (int i = 0; i < 3; i++)
            pthread_join(th[i], NULL);
        kvt_stats sa, sb;
        kvt_get_stats(a.t, &sa);
        kvt_get_stats(b.t, &sb);
        uint64_t ub = unit_bytes(l) * l->n_layers;
        CHECK(sa.sends_ok == 8 && sa.recvs_ok == 4 && sb.sends_ok == 4 && sb.recvs_ok == 8);
        CHECK(sa.bytes_sent == 800 * ub && sb.bytes_received == 800 * ub);
        CHECK(sb.bytes_sent == 600 * ub && sa.bytes_received == 600 * ub);
        CHECK(sa.sends_failed == 0 && sb.recvs_failed == 0 && sa.send_seconds > 0);
        printf("layout %-22s  1400 blocks x %d layers both ways, %.1f MiB, ok\n", l->name, l->n_layers,
               (double)(1400 * ub) / (1 << 20));
        side_free(&a);
        side_free(&b);
    }
}

/* Opens a transfer of k blocks at dst blocks [0, k) and begins it from a. */
static kvt_send *begin(side *a, side *b, uint64_t expect, uint64_t *id)
{
    eng_error err;
    kvt_peer *p;
    kvt_send *s;
    CHECK_OK(kvt_expect(b->t, b->rdst, expect, id, &err), &err);
    CHECK_OK(kvt_connect(a->t, b->desc, b->dlen, &p, &err), &err);
    CHECK_OK(kvt_send_begin(p, a->rsrc, *id, NULL, &s, &err), &err);
    return s;
}

static void test_corruption(side *a, side *b)
{
    eng_error err;
    uint64_t id;
    size_t ub = unit_bytes(&a->src.l);
    kvt_send *s = begin(a, b, 0, &id);
    CHECK_OK(kvt_send_write(s, 0, 0, ub, &err), &err);
    kvt_test_corrupt_next_write(s);
    CHECK_OK(kvt_send_write(s, ub, ub, 3 * ub, &err), &err);
    CHECK(kvt_send_finish(s, 10000, &err) == -1);
    CHECK(strstr(err.msg, "checksum mismatch"));
    CHECK(kvt_wait(b->t, id, 1000, &err) == KVT_FAILED);
    CHECK(strstr(err.msg, "checksum mismatch"));
    kvt_forget(b->t, id);
    printf("corrupted byte detected: %s\n", err.msg);
}

static void test_out_of_region(side *a, side *b)
{
    eng_error err;
    uint64_t id;
    size_t ub = unit_bytes(&a->src.l);
    /* Straddling the end, and far beyond it (offset + length would wrap). */
    uint64_t offs[2] = {b->dst.bytes - 100, UINT64_MAX - 10};
    for (int i = 0; i < 2; i++) {
        memset(b->dst.mem, 0xEE, b->dst.bytes);
        kvt_send *s = begin(a, b, 0, &id);
        CHECK_OK(kvt_send_write(s, 0, 0, ub, &err), &err); /* a good run first */
        int rc = kvt_send_write(s, 0, offs[i], ub, &err);
        if (rc == 0) /* may already know it failed; otherwise the verdict says so */
            rc = kvt_send_finish(s, 10000, &err);
        else
            kvt_send_abort(s, "gave up");
        CHECK(rc == -1 && strstr(err.msg, "outside"));
        CHECK(kvt_wait(b->t, id, 1000, &err) == KVT_FAILED && strstr(err.msg, "outside"));
        CHECK(untouched(b->dst.mem, b->dst.bytes - 100, 100));
        kvt_forget(b->t, id);
    }
    /* The sender refuses source runs outside its own region. */
    kvt_send *s = begin(a, b, 0, &id);
    CHECK(kvt_send_write(s, a->src.bytes - 10, 0, 20, &err) == -1 && strstr(err.msg, "local"));
    kvt_send_abort(s, "test");
    kvt_forget(b->t, id);
    printf("out-of-region runs rejected\n");
}

/* The decode side forgets a transfer while the prefill side keeps writing it, and reuses
 * the blocks at once: the late data must never land there. */
static void test_forget_late_data(side *a, side *b)
{
    eng_error err;
    size_t ub = unit_bytes(&a->src.l);
    int k = 64;
    for (int round = 0; round < 20; round++) {
        memset(b->dst.mem, 0xEE, b->dst.bytes);
        uint64_t id;
        kvt_send *s = begin(a, b, 0, &id);
        /* First runs, then forget at a point that varies per round, then more runs. */
        for (int i = 0; i < k / 2; i++)
            CHECK_OK(kvt_send_write(s, i * ub, i * ub, ub, &err), &err);
        if (round % 2)
            usleep(200 * round);
        kvt_forget(b->t, id);
        memset(b->dst.mem, 0x11, (size_t)k * ub); /* "reused" by another request */
        int failed = 0;
        for (int i = k / 2; i < k && !failed; i++)
            failed = kvt_send_write(s, i * ub, (i - k / 2) * ub, ub, &err) != 0;
        if (failed)
            kvt_send_abort(s, "receiver rejected");
        else
            CHECK(kvt_send_finish(s, 10000, &err) == -1);
        CHECK(strstr(err.msg, "not expected") || strstr(err.msg, "forgotten"));
        /* A second transfer completes after the late data, so all of it has been read. */
        uint64_t id2;
        kvt_send *s2 = begin(a, b, ub, &id2);
        CHECK_OK(kvt_send_write(s2, 0, (size_t)k * ub, ub, &err), &err);
        CHECK_OK(kvt_send_finish(s2, 10000, &err), &err);
        kvt_forget(b->t, id2);
        for (size_t i = 0; i < (size_t)k * ub; i++)
            CHECK(b->dst.mem[i] == 0x11);
    }
    printf("forgotten transfer: late data discarded, reused blocks intact\n");
}

/* Writes outside the spans a transfer was opened with fail it and land nowhere. */
static void test_spans(side *a, side *b)
{
    eng_error err;
    size_t ub = unit_bytes(&a->src.l);
    kvt_span sp[3] = {{7 * ub, ub}, {2 * ub, ub}, {3 * ub, ub}}; /* blocks 7, 2, 3 */
    kvt_span merged[2] = {{2 * ub, 2 * ub}, {7 * ub, ub}};
    CHECK(kvt_spans_find(merged, 2, 2 * ub, 2 * ub) == 0 && kvt_spans_find(merged, 2, 3 * ub, ub) == 0);
    CHECK(kvt_spans_find(merged, 2, 7 * ub, ub) == 1 && kvt_spans_find(merged, 2, 4 * ub, 0) == 0);
    CHECK(kvt_spans_find(merged, 2, 2 * ub, 3 * ub) < 0 && kvt_spans_find(merged, 2, ub, ub) < 0);
    CHECK(kvt_spans_find(merged, 2, 7 * ub + 1, ub) < 0 && kvt_spans_find(merged, 2, 0, 1) < 0);
    uint64_t id;
    kvt_span bad = {b->dst.bytes - 10, 20};
    CHECK(kvt_expect_spans(b->t, b->rdst, &bad, 1, 0, &id, &err) == -1 && strstr(err.msg, "outside"));
    CHECK(kvt_expect_spans(b->t, b->rdst, sp, 0, 0, &id, &err) == -1);

    memset(b->dst.mem, 0xEE, b->dst.bytes);
    kvt_peer *p;
    kvt_send *s;
    CHECK_OK(kvt_expect_spans(b->t, b->rdst, sp, 3, 0, &id, &err), &err);
    CHECK_OK(kvt_connect(a->t, b->desc, b->dlen, &p, &err), &err);
    CHECK_OK(kvt_send_begin(p, a->rsrc, id, NULL, &s, &err), &err);
    CHECK_OK(kvt_send_write(s, 0, 2 * ub, 2 * ub, &err), &err); /* blocks 2-3: one run */
    CHECK_OK(kvt_send_write(s, 0, 7 * ub, ub, &err), &err);
    CHECK_OK(kvt_send_finish(s, 10000, &err), &err);
    CHECK(kvt_wait(b->t, id, 1000, &err) == KVT_OK);
    kvt_forget(b->t, id);
    CHECK(memcmp(b->dst.mem + 2 * ub, a->src.mem, 2 * ub) == 0);

    CHECK_OK(kvt_expect_spans(b->t, b->rdst, sp, 3, 0, &id, &err), &err);
    CHECK_OK(kvt_send_begin(p, a->rsrc, id, NULL, &s, &err), &err);
    CHECK_OK(kvt_send_write(s, 0, 3 * ub, 2 * ub, &err), &err); /* blocks 3-4: 4 is not its */
    CHECK(kvt_send_finish(s, 10000, &err) == -1 && strstr(err.msg, "outside the transfer's blocks"));
    CHECK(kvt_wait(b->t, id, 1000, &err) == KVT_FAILED);
    kvt_forget(b->t, id);
    CHECK(untouched(b->dst.mem, 4 * ub, ub));
    printf("spans: writes outside the transfer's blocks rejected\n");
}

static void test_abort_and_short(side *a, side *b)
{
    eng_error err;
    size_t ub = unit_bytes(&a->src.l);
    uint64_t id;
    kvt_send *s = begin(a, b, 0, &id);
    CHECK_OK(kvt_send_write(s, 0, 0, 2 * ub, &err), &err);
    kvt_send_abort(s, "prefill cancelled");
    CHECK(kvt_wait(b->t, id, 5000, &err) == KVT_FAILED);
    CHECK(strstr(err.msg, "aborted by sender: prefill cancelled"));
    kvt_forget(b->t, id);

    s = begin(a, b, 4 * ub, &id); /* the receiver expects 4 units, gets 3 */
    CHECK_OK(kvt_send_write(s, 0, 0, 3 * ub, &err), &err);
    CHECK(kvt_send_finish(s, 10000, &err) == -1 && strstr(err.msg, "expected"));
    CHECK(kvt_wait(b->t, id, 0, &err) == KVT_FAILED);
    kvt_forget(b->t, id);

    kvt_peer *p;
    CHECK_OK(kvt_connect(a->t, b->desc, b->dlen, &p, &err), &err);
    CHECK_OK(kvt_send_begin(p, a->rsrc, 12345, NULL, &s, &err), &err); /* never expected */
    kvt_send_write(s, 0, 0, ub, &err);
    CHECK(kvt_send_finish(s, 10000, &err) == -1 && strstr(err.msg, "not expected"));

    /* Zero-byte transfer: legal, verified. Pending without data: wait times out. */
    s = begin(a, b, 0, &id);
    CHECK(kvt_wait(b->t, id, 50, &err) == KVT_PENDING && strstr(err.msg, "pending"));
    CHECK_OK(kvt_send_finish(s, 10000, &err), &err);
    CHECK(kvt_wait(b->t, id, 1000, &err) == KVT_OK);
    kvt_forget(b->t, id);
    kvt_forget(b->t, id); /* twice: ignored */

    /* A region in use cannot go away. */
    s = begin(a, b, 0, &id);
    CHECK(kvt_deregister(a->t, a->rsrc, &err) == -1 && strstr(err.msg, "used"));
    CHECK(kvt_deregister(b->t, b->rdst, &err) == -1);
    CHECK_OK(kvt_send_finish(s, 10000, &err), &err);
    kvt_forget(b->t, id);
    printf("abort, short, unknown, empty transfers and busy regions behave\n");
}

static void test_bad_descriptors(side *a, side *b)
{
    eng_error err;
    kvt_peer *p;
    /* The handshake calls: empty is a no-op, bytes are a transport mix-up for TCP. */
    char reply[KVT_HELLO_MAX];
    size_t rlen = 99;
    CHECK_OK(kvt_accept_hello(b->t, "", 0, reply, sizeof reply, &rlen, &err), &err);
    CHECK(rlen == 0);
    CHECK_OK(kvt_accept(b->t, "", 0, &err), &err);
    CHECK(kvt_accept(b->t, "rdma-qp", 7, &err) == -1 && strstr(err.msg, "no hello"));
    CHECK(kvt_accept_hello(b->t, "rdma-qp", 7, reply, sizeof reply, &rlen, &err) == -1);
    CHECK_OK(kvt_connect(a->t, b->desc, b->dlen, &p, &err), &err);
    CHECK_OK(kvt_peer_reply(p, "", 0, &err), &err);
    CHECK(kvt_peer_reply(p, "qp", 2, &err) == -1 && strstr(err.msg, "no hello reply"));
    CHECK(kvt_connect(a->t, "hello", 5, &p, &err) == -1 && strstr(err.msg, "descriptor"));
    CHECK(kvt_connect(a->t, "kvt1 rdma x", 11, &p, &err) == -1 && strstr(err.msg, "rdma"));
    CHECK(kvt_connect(a->t, "kvt1 tcp 127.0.0.1 notaport 1 1 1", 33, &p, &err) == -1);
    CHECK(kvt_connect(a->t, "kvt1 tcp 127.0.0.1 1 1 1 1", 26, &p, &err) == -1 && strstr(err.msg, "connect"));

    /* Same address, another instance: the receiver restarted since the descriptor was made. */
    char stale[KVT_DESCRIPTOR_MAX + 1];
    memcpy(stale, b->desc, b->dlen);
    stale[b->dlen] = '\0';
    char *inst = strchr(strchr(stale + 9, ' ') + 1, ' ') + 1; /* after host and port */
    inst[0] = inst[0] == '0' ? '1' : '0';
    uint64_t id;
    CHECK_OK(kvt_expect(b->t, b->rdst, 0, &id, &err), &err);
    CHECK_OK(kvt_connect(a->t, stale, b->dlen, &p, &err), &err);
    kvt_send *s;
    if (kvt_send_begin(p, a->rsrc, id, NULL, &s, &err) == 0) {
        kvt_send_write(s, 0, 0, 4096, &err);
        CHECK(kvt_send_finish(s, 10000, &err) == -1);
    }
    CHECK(strstr(err.msg, "stale descriptor"));
    kvt_forget(b->t, id);
    printf("bad and stale descriptors refused: %s\n", err.msg);
}

/* The receiver transport disappears while a sender streams into it. */
static void test_receiver_gone(const test_layout *l)
{
    eng_error err;
    side a, b;
    side_init(&a, l, 256, 7);
    side_init(&b, l, 256, 8);
    size_t ub = unit_bytes(l);
    uint64_t id;
    kvt_send *s = begin(&a, &b, 0, &id);
    for (int i = 0; i < 256; i++)
        CHECK_OK(kvt_send_write(s, i * ub, i * ub, ub, &err), &err);
    CHECK_OK(kvt_deregister(b.t, b.rsrc, &err), &err);
    kvt_forget(b.t, id);
    CHECK_OK(kvt_deregister(b.t, b.rdst, &err), &err);
    kvt_destroy(b.t);
    double t0 = eng_now_s();
    CHECK(kvt_send_finish(s, 30000, &err) == -1);
    CHECK(eng_now_s() - t0 < 5.0);
    /* The cached connection is dead: connecting again fails (nobody listens). */
    kvt_peer *p;
    CHECK(kvt_connect(a.t, b.desc, b.dlen, &p, &err) == -1);
    kvt_stats st;
    kvt_get_stats(a.t, &st);
    CHECK(st.sends_failed == 1 && st.sends_ok == 0);
    pool_free(&b.src);
    pool_free(&b.dst);
    side_free(&a);
    printf("receiver gone mid-transfer: sender fails in %.3f s\n", eng_now_s() - t0);
}

typedef struct quitter {
    side *b;
    uint64_t id;
    int ok;
} quitter;

static void *wait_then_quit(void *arg)
{
    quitter *q = arg;
    eng_error err;
    q->ok = kvt_wait(q->b->t, q->id, 10000, &err) == KVT_OK;
    kvt_forget(q->b->t, q->id);
    side_free(q->b); /* shuts the transport down at once */
    return NULL;
}

/* A receiver that verified a transfer and shuts down immediately: the sender must still
 * hear success (the verdict leaves before the receiver may act on it). */
static void test_receiver_quits_after_ok(const test_layout *l)
{
    eng_error err;
    side a;
    side_init(&a, l, 64, 21);
    size_t ub = unit_bytes(l);
    for (int round = 0; round < 30; round++) {
        side b;
        side_init(&b, l, 64, 0);
        quitter q = {&b, 0, 0};
        kvt_send *s = begin(&a, &b, 8 * ub, &q.id);
        pthread_t th;
        CHECK(pthread_create(&th, NULL, wait_then_quit, &q) == 0);
        CHECK_OK(kvt_send_write(s, 0, 0, 8 * ub, &err), &err);
        CHECK_OK(kvt_send_finish(s, 10000, &err), &err);
        pthread_join(th, NULL);
        CHECK(q.ok);
    }
    side_free(&a);
    printf("receiver quitting right after verifying: sender always saw success\n");
}

/* A fake receiver that accepts one connection and then hangs: mode 0 never reads,
 * mode 1 reads everything and never answers. */
typedef struct hung {
    int listen_fd, mode, stop;
    pthread_t th;
} hung;

static void *hung_main(void *arg)
{
    hung *h = arg;
    int fd = accept(h->listen_fd, NULL, NULL);
    CHECK(fd >= 0);
    static char sink[1 << 16];
    while (!__atomic_load_n(&h->stop, __ATOMIC_SEQ_CST)) {
        if (h->mode == 0)
            usleep(10000);
        else if (recv(fd, sink, sizeof sink, 0) <= 0)
            break;
    }
    close(fd);
    return NULL;
}

static void test_hung_receiver(const test_layout *l)
{
    for (int mode = 0; mode < 2; mode++) {
        eng_error err;
        hung h = {.mode = mode};
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t sl = sizeof sa;
        h.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(h.listen_fd >= 0 && bind(h.listen_fd, (struct sockaddr *)&sa, sizeof sa) == 0);
        CHECK(listen(h.listen_fd, 1) == 0);
        CHECK(getsockname(h.listen_fd, (struct sockaddr *)&sa, &sl) == 0);
        CHECK(pthread_create(&h.th, NULL, hung_main, &h) == 0);

        kvt_tcp_options o = {.io_timeout_ms = 300};
        kvt_transport *t;
        CHECK_OK(kvt_tcp_create(&o, &t, &err), &err);
        test_pool src;
        pool_init(&src, l, 512, 3);
        kvt_region *r;
        CHECK_OK(kvt_register(t, src.mem, src.bytes, &r, &err), &err);
        char desc[128];
        int n = snprintf(desc, sizeof desc, "kvt1 tcp 127.0.0.1 %d 0123456789abcdef 1 %zu", ntohs(sa.sin_port),
                         src.bytes);
        kvt_peer *p;
        kvt_send *s;
        CHECK_OK(kvt_connect(t, desc, (size_t)n, &p, &err), &err);
        CHECK_OK(kvt_send_begin(p, r, 1, NULL, &s, &err), &err);
        CHECK_OK(kvt_send_write(s, 0, 0, mode == 0 ? src.bytes : 4096, &err), &err);
        double t0 = eng_now_s();
        CHECK(kvt_send_finish(s, mode == 0 ? 30000 : 500, &err) == -1);
        double dt = eng_now_s() - t0;
        CHECK(dt < 5.0);
        CHECK(strstr(err.msg, mode == 0 ? "no progress" : "no verdict"));
        printf("hung receiver (%s): sender gave up in %.2f s: %s\n", mode == 0 ? "not reading" : "never answering", dt,
               err.msg);
        __atomic_store_n(&h.stop, 1, __ATOMIC_SEQ_CST);
        CHECK_OK(kvt_deregister(t, r, &err), &err);
        kvt_destroy(t); /* closes the connection, which ends the fake's recv */
        pthread_join(h.th, NULL);
        close(h.listen_fd);
        pool_free(&src);
    }
}

/* A hand-made sender speaking the wire format (tcp.c's header comment), to stall mid-run
 * and to send garbage, which the real sender never does. */
static int raw_connect(const char *desc, size_t dlen, uint64_t *instance, uint64_t *region)
{
    char buf[KVT_DESCRIPTOR_MAX + 1], host[64];
    int port;
    unsigned long long inst, reg, size;
    memcpy(buf, desc, dlen);
    buf[dlen] = '\0';
    CHECK(sscanf(buf, "kvt1 tcp %63s %d %llx %llu %llu", host, &port, &inst, &reg, &size) == 5);
    *instance = inst;
    *region = reg;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    CHECK(inet_pton(AF_INET, host, &sa.sin_addr) == 1);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    return fd;
}

static void raw_frame(int fd, uint32_t magic, uint32_t type, uint64_t id, uint64_t a, uint64_t b)
{
    unsigned char h[40];
    uint32_t u32[2] = {htole32(magic), htole32(type)};
    uint64_t u64[4] = {htole64(id), htole64(a), htole64(b), 0};
    memcpy(h, u32, 8);
    memcpy(h + 8, u64, 32);
    CHECK(send(fd, h, sizeof h, MSG_NOSIGNAL) == (ssize_t)sizeof h);
}

#define MAGIC 0x3154564bu
enum { HELLO = 1, BEGIN, WRITE };

static void test_stalled_and_garbage_sender(side *b)
{
    eng_error err;
    uint64_t inst, region, id;
    static char junk[4096];
    memset(junk, 0x33, sizeof junk);

    /* Stalls in the middle of a 1 MiB run: forgetting the transfer must not wait for it. */
    CHECK_OK(kvt_expect(b->t, b->rdst, 0, &id, &err), &err);
    int fd = raw_connect(b->desc, b->dlen, &inst, &region);
    raw_frame(fd, MAGIC, HELLO, 0, inst, 1);
    raw_frame(fd, MAGIC, BEGIN, id, region, 0);
    raw_frame(fd, MAGIC, WRITE, id, 0, 1 << 20);
    CHECK(send(fd, junk, sizeof junk, MSG_NOSIGNAL) == (ssize_t)sizeof junk);
    usleep(100000);
    double t0 = eng_now_s();
    kvt_forget(b->t, id);
    double dt = eng_now_s() - t0;
    CHECK(dt < 1.0);
    memset(b->dst.mem, 0xEE, 8192);
    CHECK(send(fd, junk, sizeof junk, MSG_NOSIGNAL) == (ssize_t)sizeof junk); /* late data */
    usleep(100000);
    CHECK(untouched(b->dst.mem, 0, 8192));
    close(fd);

    /* Garbage instead of a frame: the connection is dropped, its transfer fails. */
    CHECK_OK(kvt_expect(b->t, b->rdst, 0, &id, &err), &err);
    fd = raw_connect(b->desc, b->dlen, &inst, &region);
    raw_frame(fd, MAGIC, HELLO, 0, inst, 1);
    raw_frame(fd, MAGIC, BEGIN, id, region, 0);
    raw_frame(fd, 0xdeadbeef, WRITE, id, 0, 16);
    CHECK(kvt_wait(b->t, id, 5000, &err) == KVT_FAILED && strstr(err.msg, "protocol error"));
    kvt_forget(b->t, id);
    close(fd);
    printf("stalled sender: forget returned in %.4f s, late data dropped; garbage: %s\n", dt, err.msg);
}

int main(void)
{
    test_layouts();

    side a, b;
    side_init(&a, &TEST_LAYOUTS[0], 128, 5);
    side_init(&b, &TEST_LAYOUTS[0], 128, 6);
    test_corruption(&a, &b);
    test_out_of_region(&a, &b);
    test_forget_late_data(&a, &b);
    test_abort_and_short(&a, &b);
    test_spans(&a, &b);
    test_bad_descriptors(&a, &b);
    test_stalled_and_garbage_sender(&b);
    /* After all those failures the cached connection still carries good transfers. */
    uint64_t rng = 99;
    transfer_ok(&a, &b, 64, 0, 128, &rng);
    /* A worker doing both roles sends to itself through its own transport. */
    transfer_ok(&a, &a, 64, 0, 128, &rng);
    side_free(&a);
    side_free(&b);

    test_receiver_gone(&TEST_LAYOUTS[1]);
    test_hung_receiver(&TEST_LAYOUTS[0]);
    test_receiver_quits_after_ok(&TEST_LAYOUTS[2]);
    CHECK(n_notified > 0);
    printf("kvtransfer loopback: all passed\n");
    return 0;
}

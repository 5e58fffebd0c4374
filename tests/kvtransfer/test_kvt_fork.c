/* test_kvt_fork.c: the TCP transport between two processes.
 *
 * Descriptors and transfer ids travel over pipes, standing in for the gRPC control plane.
 * Both processes derive the block plan and the source contents from shared seeds, so the
 * receiver can compare every byte without being sent the expected data.
 *   1. Several layouts, thousands of blocks, both directions at once, checksums verified
 *      and content compared on both sides.
 *   2. The sender is SIGKILLed mid-transfer: the receiver's wait fails within a bound.
 *   3. The receiver is SIGKILLed mid-transfer: the sender's finish fails within a bound.
 * Processes fork before any transport thread exists; the parent always reaps its child. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvt_util.h"

#define N_TRANSFERS 6
#define K_BLOCKS 90
#define POOL_BLOCKS 600

static void put(int fd, const void *p, size_t n)
{
    CHECK(write(fd, p, n) == (ssize_t)n);
}

static void get(int fd, void *p, size_t n)
{
    char *c = p;
    while (n > 0) {
        ssize_t r = read(fd, c, n);
        CHECK(r > 0);
        c += r;
        n -= (size_t)r;
    }
}

typedef struct endpoint {
    kvt_transport *t;
    test_pool src, dst, shadow; /* shadow: the peer's src, recomputed from its seed */
    kvt_region *rsrc, *rdst;
} endpoint;

static void endpoint_init(endpoint *e, const test_layout *l, uint64_t my_seed, uint64_t peer_seed)
{
    eng_error err;
    kvt_tcp_options o = {.io_timeout_ms = 5000};
    CHECK_OK(kvt_tcp_create(&o, &e->t, &err), &err);
    pool_init(&e->src, l, POOL_BLOCKS, my_seed);
    pool_init(&e->dst, l, POOL_BLOCKS, 0);
    if (peer_seed)
        pool_init(&e->shadow, l, POOL_BLOCKS, peer_seed);
    else
        e->shadow.mem = NULL;
    CHECK_OK(kvt_register(e->t, e->src.mem, e->src.bytes, &e->rsrc, &err), &err);
    CHECK_OK(kvt_register(e->t, e->dst.mem, e->dst.bytes, &e->rdst, &err), &err);
}

static void endpoint_free(endpoint *e)
{
    eng_error err;
    CHECK_OK(kvt_deregister(e->t, e->rsrc, &err), &err);
    CHECK_OK(kvt_deregister(e->t, e->rdst, &err), &err);
    kvt_destroy(e->t);
    pool_free(&e->src);
    pool_free(&e->dst);
    pool_free(&e->shadow);
}

/* The plan of transfer i in one direction: identical in both processes. */
static void plan(uint64_t seed, int i, int *sb, int *db)
{
    uint64_t rng = seed * 1000 + i;
    pick_blocks(POOL_BLOCKS, K_BLOCKS, sb, &rng);
    /* Each transfer owns its own slice of the destination, as distinct requests do. */
    pick_blocks(POOL_BLOCKS / N_TRANSFERS, K_BLOCKS, db, &rng);
    for (int k = 0; k < K_BLOCKS; k++)
        db[k] += i * (POOL_BLOCKS / N_TRANSFERS);
}

/* One process's half of scenario 1: receive N transfers and send N, at once.
 * to/from: pipes to the other process. send_seed: plan seed of our sending direction. */
static int both_ways(int li, int to, int from, uint64_t my_seed, uint64_t peer_seed, uint64_t send_plan,
                     uint64_t recv_plan)
{
    eng_error err;
    const test_layout *l = &TEST_LAYOUTS[li];
    endpoint e;
    endpoint_init(&e, l, my_seed, peer_seed);
    uint64_t per = (uint64_t)K_BLOCKS * l->n_layers * unit_bytes(l);

    /* Control plane: my descriptor and the ids I expect, to the peer. */
    char desc[KVT_DESCRIPTOR_MAX];
    size_t dlen;
    uint64_t ids[N_TRANSFERS], peer_ids[N_TRANSFERS];
    CHECK_OK(kvt_descriptor(e.t, e.rdst, desc, sizeof desc, &dlen, &err), &err);
    for (int i = 0; i < N_TRANSFERS; i++)
        CHECK_OK(kvt_expect(e.t, e.rdst, per, &ids[i], &err), &err);
    put(to, &dlen, sizeof dlen);
    put(to, desc, dlen);
    put(to, ids, sizeof ids);
    char peer_desc[KVT_DESCRIPTOR_MAX];
    size_t peer_dlen;
    get(from, &peer_dlen, sizeof peer_dlen);
    CHECK(peer_dlen <= sizeof peer_desc);
    get(from, peer_desc, peer_dlen);
    get(from, peer_ids, sizeof peer_ids);

    int sb[K_BLOCKS], db[K_BLOCKS];
    kvt_peer *p;
    CHECK_OK(kvt_connect(e.t, peer_desc, peer_dlen, &p, &err), &err);
    /* Two transfers in flight at a time, as with two prefill requests. */
    kvt_send *inflight[2] = {NULL, NULL};
    for (int i = 0; i < N_TRANSFERS; i++) {
        if (inflight[i % 2])
            CHECK_OK(kvt_send_finish(inflight[i % 2], 30000, &err), &err);
        plan(send_plan, i, sb, db);
        CHECK_OK(kvt_send_begin(p, e.rsrc, peer_ids[i], NULL, &inflight[i % 2], &err), &err);
        CHECK_OK(send_blocks(inflight[i % 2], &e.src, sb, &e.dst, db, K_BLOCKS, &err), &err);
    }
    for (int i = 0; i < 2; i++)
        CHECK_OK(kvt_send_finish(inflight[i], 30000, &err), &err);

    for (int i = 0; i < N_TRANSFERS; i++) {
        kvt_state st = kvt_wait(e.t, ids[i], 30000, &err);
        if (st != KVT_OK) {
            fprintf(stderr, "transfer %d: %s\n", i, err.msg);
            return 1;
        }
        plan(recv_plan, i, sb, db);
        CHECK(blocks_equal(&e.shadow, sb, &e.dst, db, K_BLOCKS));
        kvt_forget(e.t, ids[i]);
    }
    /* Nothing outside the planned destination blocks was written. */
    char *planned = calloc(POOL_BLOCKS, 1);
    CHECK(planned);
    for (int i = 0; i < N_TRANSFERS; i++) {
        plan(recv_plan, i, sb, db);
        for (int k = 0; k < K_BLOCKS; k++)
            planned[db[k]] = 1;
    }
    for (int layer = 0; layer < l->n_layers; layer++)
        for (int b = 0; b < POOL_BLOCKS; b++)
            if (!planned[b])
                CHECK(untouched(e.dst.mem, unit_off(&e.dst, layer, b), unit_bytes(l)));
    free(planned);
    kvt_stats st;
    kvt_get_stats(e.t, &st);
    CHECK(st.sends_ok == N_TRANSFERS && st.recvs_ok == N_TRANSFERS);
    CHECK(st.bytes_sent == N_TRANSFERS * per && st.bytes_received == N_TRANSFERS * per);
    /* Stay connected until the peer is done sending too. */
    char byte = 1;
    put(to, &byte, 1);
    get(from, &byte, 1);
    endpoint_free(&e);
    return 0;
}

static void scenario_both_ways(void)
{
    for (int li = 0; li < N_TEST_LAYOUTS; li++) {
        int p2c[2], c2p[2];
        CHECK(pipe(p2c) == 0 && pipe(c2p) == 0);
        double t0 = eng_now_s();
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            close(p2c[1]);
            close(c2p[0]);
            exit(both_ways(li, c2p[1], p2c[0], 200 + li, 100 + li, 2, 1));
        }
        close(p2c[0]);
        close(c2p[1]);
        int rc = both_ways(li, p2c[1], c2p[0], 100 + li, 200 + li, 1, 2);
        int status;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(rc == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        close(p2c[1]);
        close(c2p[0]);
        const test_layout *l = &TEST_LAYOUTS[li];
        double mib = 2.0 * N_TRANSFERS * K_BLOCKS * l->n_layers * unit_bytes(l) / (1 << 20);
        printf("two processes, layout %-22s %d blocks each way, %.1f MiB total, %.2f s, ok\n", l->name,
               N_TRANSFERS * K_BLOCKS, mib, eng_now_s() - t0);
    }
}

/* Sender killed mid-transfer. */
static void scenario_kill_sender(void)
{
    eng_error err;
    const test_layout *l = &TEST_LAYOUTS[0];
    size_t ub = unit_bytes(l);
    int p2c[2], c2p[2];
    CHECK(pipe(p2c) == 0 && pipe(c2p) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(p2c[1]);
        close(c2p[0]);
        endpoint e;
        endpoint_init(&e, l, 5, 0);
        char desc[KVT_DESCRIPTOR_MAX];
        size_t dlen;
        uint64_t ids[2];
        get(p2c[0], &dlen, sizeof dlen);
        get(p2c[0], desc, dlen);
        get(p2c[0], ids, sizeof ids);
        kvt_peer *p;
        kvt_send *big, *sync;
        CHECK_OK(kvt_connect(e.t, desc, dlen, &p, &err), &err);
        CHECK_OK(kvt_send_begin(p, e.rsrc, ids[0], NULL, &big, &err), &err);
        for (int i = 0; i < POOL_BLOCKS / 2; i++)
            CHECK_OK(kvt_send_write(big, i * ub, i * ub, ub, &err), &err);
        /* A verdict on a later transfer proves the earlier frames were received. */
        CHECK_OK(kvt_send_begin(p, e.rsrc, ids[1], NULL, &sync, &err), &err);
        CHECK_OK(kvt_send_write(sync, 0, (POOL_BLOCKS - 1) * ub, ub, &err), &err);
        CHECK_OK(kvt_send_finish(sync, 30000, &err), &err);
        char byte = 1;
        put(c2p[1], &byte, 1);
        for (;;)
            pause(); /* mid-transfer: killed here */
    }
    close(p2c[0]);
    close(c2p[1]);
    endpoint e;
    endpoint_init(&e, l, 6, 0);
    char desc[KVT_DESCRIPTOR_MAX];
    size_t dlen;
    uint64_t ids[2];
    CHECK_OK(kvt_descriptor(e.t, e.rdst, desc, sizeof desc, &dlen, &err), &err);
    CHECK_OK(kvt_expect(e.t, e.rdst, 0, &ids[0], &err), &err);
    CHECK_OK(kvt_expect(e.t, e.rdst, 0, &ids[1], &err), &err);
    put(p2c[1], &dlen, sizeof dlen);
    put(p2c[1], desc, dlen);
    put(p2c[1], ids, sizeof ids);
    char byte;
    get(c2p[0], &byte, 1);
    CHECK(kvt_wait(e.t, ids[1], 5000, &err) == KVT_OK);
    CHECK(kvt_wait(e.t, ids[0], 0, &err) == KVT_PENDING);
    kill(pid, SIGKILL);
    double t0 = eng_now_s();
    CHECK(kvt_wait(e.t, ids[0], 30000, &err) == KVT_FAILED);
    double dt = eng_now_s() - t0;
    CHECK(dt < 5.0 && strstr(err.msg, "lost"));
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
    kvt_forget(e.t, ids[0]);
    kvt_forget(e.t, ids[1]);
    endpoint_free(&e);
    close(p2c[1]);
    close(c2p[0]);
    printf("sender killed mid-transfer: receiver failed it in %.3f s (%s)\n", dt, err.msg);
}

/* Receiver killed mid-transfer. */
static void scenario_kill_receiver(void)
{
    eng_error err;
    const test_layout *l = &TEST_LAYOUTS[1];
    size_t ub = unit_bytes(l);
    int c2p[2];
    CHECK(pipe(c2p) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(c2p[0]);
        endpoint e;
        endpoint_init(&e, l, 7, 0);
        char desc[KVT_DESCRIPTOR_MAX];
        size_t dlen;
        uint64_t id;
        CHECK_OK(kvt_descriptor(e.t, e.rdst, desc, sizeof desc, &dlen, &err), &err);
        CHECK_OK(kvt_expect(e.t, e.rdst, 0, &id, &err), &err);
        put(c2p[1], &dlen, sizeof dlen);
        put(c2p[1], desc, dlen);
        put(c2p[1], &id, sizeof id);
        for (;;)
            pause();
    }
    close(c2p[1]);
    endpoint e;
    endpoint_init(&e, l, 8, 0);
    char desc[KVT_DESCRIPTOR_MAX];
    size_t dlen;
    uint64_t id;
    get(c2p[0], &dlen, sizeof dlen);
    get(c2p[0], desc, dlen);
    get(c2p[0], &id, sizeof id);
    kvt_peer *p;
    kvt_send *s;
    CHECK_OK(kvt_connect(e.t, desc, dlen, &p, &err), &err);
    CHECK_OK(kvt_send_begin(p, e.rsrc, id, NULL, &s, &err), &err);
    /* Every layer's blocks, several times over: still streaming when the kill lands. */
    for (int rep = 0; rep < 4; rep++)
        for (int layer = 0; layer < l->n_layers; layer++)
            CHECK_OK(kvt_send_write(s, (size_t)layer * POOL_BLOCKS * ub, (size_t)layer * POOL_BLOCKS * ub,
                                    POOL_BLOCKS * ub, &err),
                     &err);
    kill(pid, SIGKILL);
    double t0 = eng_now_s();
    CHECK(kvt_send_finish(s, 30000, &err) == -1);
    double dt = eng_now_s() - t0;
    CHECK(dt < 5.0);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
    kvt_stats st;
    kvt_get_stats(e.t, &st);
    CHECK(st.sends_failed == 1 && st.sends_ok == 0);
    printf("receiver killed mid-transfer: sender failed in %.3f s (%s)\n", dt, err.msg);
    CHECK(kvt_connect(e.t, desc, dlen, &p, &err) == -1); /* gone for good */
    endpoint_free(&e);
    close(c2p[0]);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);         /* a test writing to a pipe of a dead child must not die */
    setvbuf(stdout, NULL, _IOLBF, 0); /* nothing buffered gets duplicated by fork */
    scenario_both_ways();
    scenario_kill_sender();
    scenario_kill_receiver();
    printf("kvtransfer two processes: all passed\n");
    return 0;
}

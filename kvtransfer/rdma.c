/* rdma.c: the RDMA transport (libibverbs, reliable-connected queue pairs).
 *
 * The bulk data goes by one-sided RDMA WRITE straight from the sender's registered KV pool
 * into the receiver's; only small control messages (SEND/RECV into 4 KiB slots) travel
 * over each queue pair, and the queue pairs' own parameters travel over the control plane
 * (descriptor, then hello -> kvt_accept_hello -> reply -> kvt_peer_reply), never over a
 * side socket.
 *
 * Per transfer (rdma_wire.h has the messages):
 *   sender BEGIN(id, region) -> receiver binds the expected transfer to this queue pair
 *   (transfers.c checks that it is expected, not begun yet, and in the region the
 *   descriptor named) and answers SPANS (the byte ranges it may write) and GO; only then
 *   does the sender post WRITEs, so a transfer that was forgotten before its BEGIN arrived
 *   never receives a byte. Runs that
 *   continue each other on both sides are coalesced into one WRITE; WRITEs stay in flight
 *   up to the send queue's depth. FINISH (byte count, XXH3-64 of the source bytes in write
 *   order) follows RUNS messages with the (dst_off, len) list; RC ordering guarantees that
 *   every WRITE before them has landed when they arrive, so the receiver hashes its own
 *   destination bytes in the same order, answers VERDICT, and only then marks the transfer
 *   KVT_OK.
 *
 * The forget/late-write rule: one-sided writes cannot be refused per run, so kvt_forget of
 * a transfer that is bound to a queue pair and has not been closed by FINISH or ABORT
 * destroys that queue pair (ibv_destroy_qp returns only once the device will no longer
 * access memory through it); other transfers on the same pair fail, and the sender sees
 * its pair fail and reconnects with a new hello. A transfer forgotten before its BEGIN is
 * answered with a failed VERDICT. After FINISH/ABORT no write of it can follow (the sender
 * posts none and RC delivers in order), so forgetting it needs no fence.
 *
 * Failures: any completion in error kills its queue pair and fails every transfer on it,
 * on both sides. Each connected pair PINGs every second and answers PINGs; a pair that
 * heard nothing (no message, no acknowledged PING) for half the io timeout (at least 2 s)
 * is declared dead, because a peer that vanished does not always surface as a
 * retry-exceeded completion (Soft-RoCE keeps retrying a SEND to a destroyed queue pair). Dead pairs are destroyed once
 * nothing refers to them; kvt_connect builds a new one (the caller relays the new hello).
 *
 * Threads: one poller per transport sleeps on the completion channel (ibv_req_notify_cq +
 * ibv_get_cq_event; a 250 ms poll timeout drives the pings), so an idle transport does not
 * spin. One mutex (t->base.mu, shared with transfers.c) guards all state; ibv_post_* are
 * non-blocking and called under it.
 * Messages the poller itself must send wait in a per-pair outbox when the send queue is
 * full, because the poller cannot wait for its own completions. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <xxhash.h>

#include "rdma_wire.h"
#include "transport.h"

#define N_RECV 64    /* receive slots per queue pair */
#define N_SEND 64    /* message send slots per queue pair */
#define SQ_DEPTH 512 /* WRITEs and SENDs in flight per queue pair */
#define MAX_WRITE                                                           \
    ((uint64_t)16 << 20) /* longer coalesced runs are split: keeps the send \
                          * queue granular, so PINGs are never stuck behind \
                          * one huge WRITE */
#define PING_EVERY_S 1.0
#define STALE_HELLO_S 60.0

enum { W_RECV = 1, W_SEND, W_WRITE };
enum { C_HELLO = 1, C_UP, C_DEAD };

typedef struct rdma_transport rdma_transport;
typedef struct rconn rconn;

typedef struct rregion {
    kvt_region base;
    struct ibv_mr *mr;
} rregion;

/* An incoming transfer; base.conn is the rconn that began it, holding a reference on it. */
typedef struct rx {
    kvt_rx base;
    int closed;              /* FINISH or ABORT arrived: no more writes can come */
    struct ibv_mr **windows; /* one remote-writable registration per span, from BEGIN until
                              * the transfer closes, fails or is forgotten */
    int n_windows;
    uint64_t *runs; /* (dst_off, len) pairs in write order */
    size_t n_runs, cap_runs;
    char bad_run[160]; /* why the first run that may not land is wrong; "" none */
} rx;

typedef struct tx { /* outgoing transfer */
    kvt_send base;
    rconn *c;
    rregion *src;
    uint64_t id, remote_size, remote_addr;
    kvt_state state;
    char reason[300];
    int go;
    kvt_span *spans; /* where the receiver lets it write, */
    uint32_t *rkeys; /* and each span's remote key */
    int n_spans, cap_spans;
    rdma_run pending;
    int has_pending;
    uint64_t *runs;
    size_t n_runs, cap_runs;
    XXH3_state_t *hash;
    uint64_t bytes;
    struct tx *next;
} tx;

typedef struct outmsg {
    size_t len;
    struct outmsg *next;
    unsigned char data[];
} outmsg;

struct rconn {
    rdma_transport *t;
    struct ibv_cq *cq;
    struct ibv_qp *qp;
    struct ibv_mr *mr;
    unsigned char *mem; /* N_RECV receive slots, then N_SEND send slots */
    int state, sender;
    uint64_t token;
    uint32_t psn;
    int sq_used;
    int free_slots[N_SEND], n_free;
    int ping_slot; /* slot of the PING in flight, -1 none */
    double last_ping, last_heard;
    int heard; /* a message arrived on it: the remote pair is connected to this one */
    int refs;  /* transfers bound to it (rx until forgotten, tx until finished); peers hold none */
    char reason[240];
    outmsg *out_head, *out_tail;
    tx *txs;
    rconn *next;
};

typedef struct rpeer {
    kvt_peer base;
    rdma_desc d;
    rconn *c;
} rpeer;

struct rdma_transport {
    kvt_transport base; /* base.mu guards everything; base.cv also: send queue room */
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    struct ibv_comp_channel *ch;
    int port, gid_index;
    union ibv_gid gid;
    uint16_t lid;
    enum ibv_mtu mtu;
    uint64_t max_write;
    int io_timeout_ms;
    double dead_after_s; /* a connected pair silent this long (pings unanswered) fails */
    uint64_t instance, next_token;
    rconn *conns;
    int wake[2];
    int stopping;
    pthread_t poller;
};

static const kvt_ops rdma_ops;

/* ---------------------------------------------------------------- helpers */

static int push_pair(uint64_t **arr, size_t *n, size_t *cap, uint64_t a, uint64_t b)
{
    if (*n == *cap) {
        size_t nc = *cap ? 2 * *cap : 64;
        uint64_t *p = realloc(*arr, nc * 2 * sizeof *p);
        if (!p)
            return -1;
        *arr = p;
        *cap = nc;
    }
    (*arr)[2 * *n] = a;
    (*arr)[2 * *n + 1] = b;
    (*n)++;
    return 0;
}

/* ---------------------------------------------------------------- device */

/* The first active port of the named device (or of any device). Returns the open context. */
static struct ibv_context *find_port(const char *want, int want_port, int *port, struct ibv_port_attr *pa, char *why,
                                     size_t cap)
{
    int n = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    if (!list || n == 0) {
        if (list)
            ibv_free_device_list(list);
        snprintf(why, cap, "no RDMA device found (ibv_get_device_list returned none)");
        return NULL;
    }
    struct ibv_context *found = NULL;
    snprintf(why, cap, want ? "RDMA device %s not found" : "no RDMA device has an active port", want);
    for (int i = 0; i < n && !found; i++) {
        const char *name = ibv_get_device_name(list[i]);
        if (want && strcmp(want, name) != 0)
            continue;
        struct ibv_context *ctx = ibv_open_device(list[i]);
        struct ibv_device_attr da;
        if (!ctx || ibv_query_device(ctx, &da) != 0) {
            snprintf(why, cap, "cannot open RDMA device %s: %s", name, strerror(errno));
            if (ctx)
                ibv_close_device(ctx);
            continue;
        }
        for (int p = 1; p <= da.phys_port_cnt && !found; p++) {
            if (want_port > 0 && p != want_port)
                continue;
            if (ibv_query_port(ctx, (uint8_t)p, pa) == 0 && pa->state == IBV_PORT_ACTIVE) {
                found = ctx;
                *port = p;
            }
        }
        if (!found) {
            snprintf(why, cap, "RDMA device %s has no active port", name);
            ibv_close_device(ctx);
        }
    }
    ibv_free_device_list(list);
    return found;
}

int kvt_rdma_probe(char *name, size_t name_cap, char *why, size_t why_cap)
{
    int port;
    struct ibv_port_attr pa;
    struct ibv_context *ctx = find_port(NULL, 0, &port, &pa, why, why_cap);
    if (!ctx)
        return 0;
    snprintf(name, name_cap, "%s", ibv_get_device_name(ctx->device));
    ibv_close_device(ctx);
    return 1;
}

/* ---------------------------------------------------------------- transfer windows */

/* Remote write access is granted per transfer, never to the region: the region is
 * registered for local access only, and BEGIN registers each span the transfer may write
 * (its blocks in every layer) with IBV_ACCESS_REMOTE_WRITE. Only those registrations'
 * keys reach the sender (in SPANS, over the queue pair that presented the secret). Once
 * the transfer closes (FINISH, ABORT), fails with its queue pair, or is forgotten, they
 * are deregistered: ibv_dereg_mr returns only when the device will no longer access memory
 * through the key, so a late or replayed write, or one with another transfer's key, gets
 * a remote access error and lands nowhere. A transfer opened without spans may write
 * anywhere in the region, so its one window is the whole region. */
static void close_windows(rx *x)
{
    for (int i = 0; i < x->n_windows; i++)
        ibv_dereg_mr(x->windows[i]);
    free(x->windows);
    x->windows = NULL;
    x->n_windows = 0;
}

/* Registers x's windows; fills words with (off, len, rkey) per span. -1 with the reason. */
static int open_windows(rdma_transport *t, rx *x, uint64_t *words, char *why, size_t cap)
{
    kvt_span whole = {0, x->base.region->len};
    const kvt_span *spans = x->base.n_spans ? x->base.spans : &whole;
    int n = x->base.n_spans ? x->base.n_spans : 1;
    if (!(x->windows = calloc((size_t)n, sizeof *x->windows))) {
        snprintf(why, cap, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        struct ibv_mr *mr = ibv_reg_mr(t->pd, x->base.region->base + spans[i].off, spans[i].len,
                                       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
        if (!mr) {
            snprintf(why, cap, "cannot register the transfer's span %d of %d (%" PRIu64 " bytes): %s", i + 1, n,
                     spans[i].len, strerror(errno));
            close_windows(x);
            return -1;
        }
        x->windows[x->n_windows++] = mr;
        words[3 * i] = spans[i].off;
        words[3 * i + 1] = spans[i].len;
        words[3 * i + 2] = mr->rkey;
    }
    return n;
}

/* ---------------------------------------------------------------- queue pairs */

static void conn_fail(rconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int post_recv(rconn *c, int slot)
{
    struct ibv_sge sge = {
        .addr = (uintptr_t)(c->mem + (size_t)slot * RDMA_MSG_BYTES), .length = RDMA_MSG_BYTES, .lkey = c->mr->lkey};
    struct ibv_recv_wr wr = {.wr_id = (uint64_t)W_RECV << 56 | (uint64_t)slot, .sg_list = &sge, .num_sge = 1};
    struct ibv_recv_wr *bad;
    return ibv_post_recv(c->qp, &wr, &bad);
}

static void conn_free(rconn *c)
{
    for (outmsg *m = c->out_head, *n; m; m = n) {
        n = m->next;
        free(m);
    }
    if (c->qp)
        ibv_destroy_qp(c->qp);
    if (c->cq)
        ibv_destroy_cq(c->cq);
    if (c->mr)
        ibv_dereg_mr(c->mr);
    free(c->mem);
    free(c);
}

/* A queue pair in INIT with its receives posted; linked into t->conns. */
static rconn *conn_new(rdma_transport *t, int sender, eng_error *err)
{
    rconn *c = calloc(1, sizeof *c);
    size_t bytes = (size_t)(N_RECV + N_SEND) * RDMA_MSG_BYTES;
    if (!c || !(c->mem = aligned_alloc(4096, bytes))) {
        free(c);
        eng_fail(err, "kvtransfer: out of memory");
        return NULL;
    }
    c->t = t;
    c->sender = sender;
    c->state = C_HELLO;
    c->ping_slot = -1;
    c->last_ping = eng_now_s();
    c->token = ++t->next_token;
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != sizeof r)
        r = (uint32_t)(uintptr_t)c;
    c->psn = r & 0xffffff;
    for (int i = 0; i < N_SEND; i++)
        c->free_slots[c->n_free++] = N_SEND - 1 - i;
    c->mr = ibv_reg_mr(t->pd, c->mem, bytes, IBV_ACCESS_LOCAL_WRITE);
    c->cq = c->mr ? ibv_create_cq(t->ctx, SQ_DEPTH + N_RECV + 16, c, t->ch, 0) : NULL;
    if (!c->cq || ibv_req_notify_cq(c->cq, 0) != 0) {
        eng_fail(err, "kvtransfer: cannot set up an RDMA completion queue: %s", strerror(errno));
        conn_free(c);
        return NULL;
    }
    struct ibv_qp_init_attr ia = {
        .send_cq = c->cq,
        .recv_cq = c->cq,
        .qp_type = IBV_QPT_RC,
        .cap = {.max_send_wr = SQ_DEPTH, .max_recv_wr = N_RECV, .max_send_sge = 1, .max_recv_sge = 1}};
    c->qp = ibv_create_qp(t->pd, &ia);
    if (!c->qp) {
        eng_fail(err, "kvtransfer: cannot create an RDMA queue pair: %s", strerror(errno));
        conn_free(c);
        return NULL;
    }
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_INIT,
                            .pkey_index = 0,
                            .port_num = (uint8_t)t->port,
                            .qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE};
    if (ibv_modify_qp(c->qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS)) {
        eng_fail(err, "kvtransfer: RDMA queue pair to INIT: %s", strerror(errno));
        conn_free(c);
        return NULL;
    }
    for (int i = 0; i < N_RECV; i++)
        if (post_recv(c, i) != 0) {
            eng_fail(err, "kvtransfer: cannot post RDMA receives: %s", strerror(errno));
            conn_free(c);
            return NULL;
        }
    c->next = t->conns;
    t->conns = c;
    return c;
}

/* INIT -> RTR -> RTS towards the remote side described by h. */
static int conn_connect(rconn *c, const rdma_hello *h, eng_error *err)
{
    rdma_transport *t = c->t;
    static const uint8_t zero[16];
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_RTR,
                            .path_mtu = h->mtu < t->mtu ? (enum ibv_mtu)h->mtu : t->mtu,
                            .dest_qp_num = h->qpn,
                            .rq_psn = h->psn,
                            .max_dest_rd_atomic = 1,
                            .min_rnr_timer = 12,
                            .ah_attr = {.dlid = h->lid, .port_num = (uint8_t)t->port}};
    if (memcmp(h->gid, zero, 16) != 0) {
        a.ah_attr.is_global = 1;
        memcpy(a.ah_attr.grh.dgid.raw, h->gid, 16);
        a.ah_attr.grh.sgid_index = (uint8_t)t->gid_index;
        a.ah_attr.grh.hop_limit = 64;
    }
    if (ibv_modify_qp(c->qp, &a,
                      IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                          IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER))
        return eng_fail(err, "kvtransfer: RDMA queue pair to RTR: %s", strerror(errno));
    struct ibv_qp_attr b = {
        .qp_state = IBV_QPS_RTS, .timeout = 15, .retry_cnt = 7, .rnr_retry = 7, .sq_psn = c->psn, .max_rd_atomic = 1};
    if (ibv_modify_qp(c->qp, &b,
                      IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                          IBV_QP_MAX_QP_RD_ATOMIC))
        return eng_fail(err, "kvtransfer: RDMA queue pair to RTS: %s", strerror(errno));
    c->state = C_UP;
    c->last_ping = c->last_heard = eng_now_s();
    return 0;
}

static void fill_hello(rconn *c, rdma_hello *h, int kind, uint64_t to, uint64_t token)
{
    rdma_transport *t = c->t;
    memset(h, 0, sizeof *h);
    h->kind = kind;
    h->to = to;
    h->from = t->instance;
    h->token = token;
    memcpy(h->gid, t->gid.raw, 16);
    h->qpn = c->qp->qp_num;
    h->psn = c->psn;
    h->lid = t->lid;
    h->mtu = (uint8_t)t->mtu;
}

/* Kills the queue pair (destroying it, so that no more bytes land through it) and fails
 * every transfer on it, on this side. */
static void conn_fail(rconn *c, const char *fmt, ...)
{
    rdma_transport *t = c->t;
    if (c->state == C_DEAD)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->reason, sizeof c->reason, fmt, ap);
    va_end(ap);
    c->state = C_DEAD;
    if (c->qp) {
        ibv_destroy_qp(c->qp);
        c->qp = NULL;
    }
    char why[300];
    snprintf(why, sizeof why, "RDMA connection to the peer failed: %s", c->reason);
    for (tx *s = c->txs; s; s = s->next)
        if (s->state == KVT_PENDING) {
            s->state = KVT_FAILED;
            snprintf(s->reason, sizeof s->reason, "%s", why);
        }
    for (kvt_rx *x = t->base.rxs; x; x = x->next)
        if (x->conn == c)
            close_windows((rx *)x);
    c->refs -= kvt_rx_fail_conn(&t->base, c, why); /* the transfers' references */
    pthread_cond_broadcast(&t->base.cv);
}

static int post_msg_now(rconn *c, const void *data, size_t len, int *slot_out)
{
    int slot = c->free_slots[--c->n_free];
    unsigned char *buf = c->mem + (size_t)(N_RECV + slot) * RDMA_MSG_BYTES;
    memcpy(buf, data, len);
    struct ibv_sge sge = {.addr = (uintptr_t)buf, .length = (uint32_t)len, .lkey = c->mr->lkey};
    struct ibv_send_wr wr = {.wr_id = (uint64_t)W_SEND << 56 | (uint64_t)slot,
                             .sg_list = &sge,
                             .num_sge = 1,
                             .opcode = IBV_WR_SEND,
                             .send_flags = IBV_SEND_SIGNALED};
    struct ibv_send_wr *bad;
    if (ibv_post_send(c->qp, &wr, &bad) != 0) {
        c->free_slots[c->n_free++] = slot;
        conn_fail(c, "posting a message: %s", strerror(errno));
        return -1;
    }
    c->sq_used++;
    if (slot_out)
        *slot_out = slot;
    return 0;
}

static int has_room(const rconn *c)
{
    return c->n_free > 0 && c->sq_used < SQ_DEPTH;
}

/* From the poller: send now or queue in the outbox (never waits). */
static void send_async(rconn *c, const rdma_msg *m, const uint64_t *words, const char *text)
{
    unsigned char buf[RDMA_MSG_BYTES];
    if (c->state != C_UP)
        return;
    size_t len = rdma_msg_encode(m, words, text, buf);
    if (!c->out_head && has_room(c)) {
        post_msg_now(c, buf, len, NULL);
        return;
    }
    outmsg *o = malloc(sizeof *o + len);
    if (!o) {
        conn_fail(c, "out of memory queueing a message");
        return;
    }
    o->len = len;
    o->next = NULL;
    memcpy(o->data, buf, len);
    if (c->out_tail)
        c->out_tail->next = o;
    else
        c->out_head = o;
    c->out_tail = o;
}

static void flush_outbox(rconn *c)
{
    while (c->state == C_UP && c->out_head && has_room(c)) {
        outmsg *o = c->out_head;
        c->out_head = o->next;
        if (!c->out_head)
            c->out_tail = NULL;
        post_msg_now(c, o->data, o->len, NULL);
        free(o);
    }
}

/* From a caller's thread: waits for room (up to the io timeout). Holds t->mu. */
static int wait_room(rconn *c, eng_error *err)
{
    rdma_transport *t = c->t;
    struct timespec dl;
    eng_deadline_after_ms(&dl, t->io_timeout_ms);
    while (c->state == C_UP && (!has_room(c) || c->out_head))
        if (!kvt_wait_until(&t->base, &dl, t->io_timeout_ms)) {
            conn_fail(c, "no send queue progress for %d ms", t->io_timeout_ms);
            break;
        }
    if (c->state != C_UP)
        return eng_fail(err, "kvtransfer: RDMA connection to the peer failed: %s", c->reason);
    return 0;
}

static int send_sync(rconn *c, const rdma_msg *m, const uint64_t *words, const char *text, eng_error *err)
{
    unsigned char buf[RDMA_MSG_BYTES];
    if (wait_room(c, err) < 0)
        return -1;
    size_t len = rdma_msg_encode(m, words, text, buf);
    if (post_msg_now(c, buf, len, NULL) < 0)
        return eng_fail(err, "kvtransfer: RDMA connection to the peer failed: %s", c->reason);
    return 0;
}

/* ---------------------------------------------------------------- receiving side */

static rx *find_rx(rdma_transport *t, uint64_t id)
{
    return (rx *)kvt_rx_find(&t->base, id);
}

static void send_verdict(rconn *c, uint64_t id, int ok, const char *reason)
{
    rdma_msg m = {.type = RM_VERDICT, .id = id, .n = (uint32_t)strlen(reason), .verdict.ok = (uint64_t)ok};
    send_async(c, &m, NULL, reason);
}

static void on_begin(rconn *c, const rdma_msg *m)
{
    rdma_transport *t = c->t;
    char why[300];
    kvt_secret secret;
    memcpy(secret.bytes, m->begin.secret, sizeof secret.bytes);
    int refused;
    /* No source address: a queue pair's peer was named over the control plane, so only
     * the secret is checked here. */
    rx *x = (rx *)kvt_rx_begin(&t->base, m->id, m->begin.region_id, c, NULL, &secret, &refused, why, sizeof why);
    if (!x) {
        send_verdict(c, m->id, 0, why);
        if (refused)
            conn_fail(c, "%s", why);
        return;
    }
    c->refs++;
    uint64_t *words = malloc(3 * sizeof *words * (size_t)(x->base.n_spans ? x->base.n_spans : 1));
    int n_spans = words ? open_windows(t, x, words, why, sizeof why) : -1;
    if (n_spans < 0) { /* no key went out, so nothing can be written: closed */
        if (!words)
            snprintf(why, sizeof why, "out of memory");
        x->closed = 1;
        send_verdict(c, m->id, 0, why);
        kvt_rx_end(&t->base, &x->base, KVT_FAILED, why);
        free(words);
        return;
    }
    for (int i = 0; i < n_spans; i += RDMA_MSG_MAX_SPANS) {
        int n = n_spans - i < RDMA_MSG_MAX_SPANS ? n_spans - i : RDMA_MSG_MAX_SPANS;
        rdma_msg sm = {.type = RM_SPANS, .id = m->id, .n = (uint32_t)n};
        send_async(c, &sm, words + 3 * (size_t)i, NULL);
    }
    free(words);
    rdma_msg go = {.type = RM_GO, .id = m->id, .go.n_spans = (uint64_t)n_spans};
    send_async(c, &go, NULL, NULL);
}

static void on_runs(rconn *c, const rdma_msg *m, const unsigned char *p)
{
    rx *x = find_rx(c->t, m->id);
    if (!x || x->base.conn != c || x->closed)
        return;
    for (uint32_t i = 0; i < m->n; i++) {
        uint64_t off = rdma_msg_word(p, RM_RUNS, i, 0), len = rdma_msg_word(p, RM_RUNS, i, 1);
        if (!x->bad_run[0])
            kvt_rx_run_ok(&x->base, off, len, x->bad_run, sizeof x->bad_run);
        if (push_pair(&x->runs, &x->n_runs, &x->cap_runs, off, len) < 0 && !x->bad_run[0])
            snprintf(x->bad_run, sizeof x->bad_run, "out of memory for the runs");
    }
}

/* The XXH3-64 of the runs' bytes in the receiver's region, in write order. */
static int hash_runs(const rx *x, uint64_t *sum)
{
    XXH3_state_t *h = XXH3_createState();
    if (!h)
        return -1;
    XXH3_64bits_reset(h);
    for (size_t i = 0; i < x->n_runs; i++)
        XXH3_64bits_update(h, x->base.region->base + x->runs[2 * i], x->runs[2 * i + 1]);
    *sum = XXH3_64bits_digest(h);
    XXH3_freeState(h);
    return 0;
}

static void on_finish(rconn *c, const rdma_msg *m)
{
    rdma_transport *t = c->t;
    rx *x = find_rx(t, m->id);
    if (!x || x->base.conn != c || x->closed) {
        send_verdict(c, m->id, 0, "the receiver forgot this transfer");
        return;
    }
    x->closed = 1; /* RC ordering: every write of it has landed; none may follow */
    close_windows(x);
    char why[300] = "";
    uint64_t bytes = 0, sum = 0;
    for (size_t i = 0; i < x->n_runs; i++)
        bytes += x->runs[2 * i + 1];
    x->base.bytes = bytes; /* what the runs describe is what landed */
    if (x->base.state != KVT_PENDING)
        snprintf(why, sizeof why, "%s", x->base.reason);
    else if (x->bad_run[0])
        snprintf(why, sizeof why, "%s", x->bad_run);
    else if (m->finish.n_runs != x->n_runs)
        snprintf(why, sizeof why, "sender reports %" PRIu64 " runs, %zu runs described", m->finish.n_runs, x->n_runs);
    else if (hash_runs(x, &sum) < 0)
        snprintf(why, sizeof why, "out of memory");
    else
        kvt_rx_verify(&x->base, m->finish.bytes, m->finish.checksum, sum, why, sizeof why);
    send_verdict(c, m->id, why[0] == '\0', why); /* the verdict first, then KVT_OK */
    kvt_rx_end(&t->base, &x->base, why[0] ? KVT_FAILED : KVT_OK, why);
}

static void on_abort(rconn *c, const rdma_msg *m, const unsigned char *p)
{
    rx *x = find_rx(c->t, m->id);
    if (!x || x->base.conn != c || x->closed)
        return;
    x->closed = 1;
    close_windows(x);
    char why[300];
    snprintf(why, sizeof why, "aborted by sender: %.*s", (int)(m->n < 200 ? m->n : 200), (const char *)p);
    kvt_rx_end(&c->t->base, &x->base, KVT_FAILED, why);
}

/* ---------------------------------------------------------------- the poller */

static tx *find_tx(rconn *c, uint64_t id)
{
    for (tx *s = c->txs; s; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

static void on_message(rconn *c, const void *buf, size_t len)
{
    rdma_msg m;
    const unsigned char *p;
    eng_error err;
    if (rdma_msg_decode(buf, len, &m, &p, &err) < 0) {
        conn_fail(c, "%s", err.msg);
        return;
    }
    tx *s = NULL;
    c->last_heard = eng_now_s();
    c->heard = 1;
    switch (m.type) {
    case RM_BEGIN: on_begin(c, &m); break;
    case RM_RUNS: on_runs(c, &m, p); break;
    case RM_FINISH: on_finish(c, &m); break;
    case RM_ABORT: on_abort(c, &m, p); break;
    case RM_PING:
        if (!m.ping.is_reply) { /* answer, so the peer knows this side is alive */
            rdma_msg pong = {.type = RM_PING, .ping.is_reply = 1};
            send_async(c, &pong, NULL, NULL);
        }
        break;
    case RM_SPANS:
        if ((s = find_tx(c, m.id)) && s->state == KVT_PENDING) {
            for (uint32_t i = 0; i < m.n; i++) {
                if (s->n_spans == s->cap_spans) {
                    int nc = s->cap_spans ? 2 * s->cap_spans : 64;
                    kvt_span *q = realloc(s->spans, (size_t)nc * sizeof *q);
                    if (q)
                        s->spans = q;
                    uint32_t *k = q ? realloc(s->rkeys, (size_t)nc * sizeof *k) : NULL;
                    if (!k) {
                        s->state = KVT_FAILED;
                        snprintf(s->reason, sizeof s->reason, "out of memory");
                        break;
                    }
                    s->rkeys = k;
                    s->cap_spans = nc;
                }
                s->spans[s->n_spans] = (kvt_span){rdma_msg_word(p, RM_SPANS, i, 0), rdma_msg_word(p, RM_SPANS, i, 1)};
                s->rkeys[s->n_spans++] = (uint32_t)rdma_msg_word(p, RM_SPANS, i, 2);
            }
        }
        break;
    case RM_GO:
        if ((s = find_tx(c, m.id)) && s->state == KVT_PENDING) {
            s->go = 1;
            if (m.go.n_spans != (uint64_t)s->n_spans) {
                s->state = KVT_FAILED;
                snprintf(s->reason, sizeof s->reason, "lost span messages");
            }
        }
        break;
    case RM_VERDICT:
        if ((s = find_tx(c, m.id)) && s->state == KVT_PENDING) {
            s->state = m.verdict.ok ? KVT_OK : KVT_FAILED;
            snprintf(s->reason, sizeof s->reason, "receiver: %.*s", (int)(m.n < 250 ? m.n : 250), (const char *)p);
        }
        break;
    }
}

static void drain_cq(rconn *c)
{
    struct ibv_wc wc[32];
    int n;
    while (c->cq && (n = ibv_poll_cq(c->cq, 32, wc)) > 0) {
        for (int i = 0; i < n; i++) {
            int kind = (int)(wc[i].wr_id >> 56), slot = (int)(wc[i].wr_id & 0xffff);
            if (kind != W_RECV) {
                c->sq_used--;
                if (kind == W_SEND) {
                    c->free_slots[c->n_free++] = slot;
                    if (slot == c->ping_slot) {
                        c->ping_slot = -1;
                        /* Acknowledged by the peer's device: its pair is alive, even when
                         * its own send queue is too busy for a PING of its own. */
                        if (wc[i].status == IBV_WC_SUCCESS && c->heard)
                            c->last_heard = eng_now_s();
                    }
                }
            }
            if (wc[i].status != IBV_WC_SUCCESS) {
                conn_fail(c, "%s work request completed with \"%s\"",
                          kind == W_RECV   ? "a receive"
                          : kind == W_SEND ? "a send"
                                           : "an RDMA write",
                          ibv_wc_status_str(wc[i].status));
                continue;
            }
            if (kind == W_RECV && c->state == C_UP) {
                on_message(c, c->mem + (size_t)slot * RDMA_MSG_BYTES, wc[i].byte_len);
                if (c->state == C_UP && post_recv(c, slot) != 0)
                    conn_fail(c, "reposting a receive: %s", strerror(errno));
            }
        }
    }
    flush_outbox(c);
    pthread_cond_broadcast(&c->t->base.cv);
}

static void housekeeping(rdma_transport *t)
{
    double now = eng_now_s();
    for (rconn **pc = &t->conns; *pc;) {
        rconn *c = *pc;
        if (c->state == C_DEAD && c->refs == 0) {
            for (kvt_peer *p = t->base.peers; p; p = p->next) /* they only point, hold no ref */
                if (((rpeer *)p)->c == c)
                    ((rpeer *)p)->c = NULL;
            *pc = c->next;
            conn_free(c);
            continue;
        }
        /* A receiving pair that never heard from its sender may answer a hello whose reply
         * was never applied (the sender's pair talks to another one): it must stay silent,
         * or its packets would disturb that pair, and it expires after STALE_HELLO_S. */
        double limit = c->sender || c->heard ? t->dead_after_s : STALE_HELLO_S;
        if (c->state == C_UP && now - c->last_heard > limit) {
            conn_fail(c, "the peer did not answer for %.1f s (process gone or link down)", now - c->last_heard);
            continue; /* looked at again: freed now if nothing refers to it */
        }
        if (c->state == C_UP && (c->sender || c->heard) && c->ping_slot < 0 && now - c->last_ping >= PING_EVERY_S &&
            has_room(c) && !c->out_head) {
            unsigned char buf[RDMA_MSG_HEADER];
            rdma_msg m = {.type = RM_PING};
            size_t len = rdma_msg_encode(&m, NULL, NULL, buf);
            c->last_ping = now;
            post_msg_now(c, buf, len, &c->ping_slot);
        }
        pc = &c->next;
    }
}

static void *poller_main(void *arg)
{
    rdma_transport *t = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = t->ch->fd, .events = POLLIN}, {.fd = t->wake[0], .events = POLLIN}};
        poll(p, 2, 250);
        pthread_mutex_lock(&t->base.mu);
        if (t->stopping) {
            pthread_mutex_unlock(&t->base.mu);
            return NULL;
        }
        struct ibv_cq *cq;
        void *ctx;
        while (ibv_get_cq_event(t->ch, &cq, &ctx) == 0) {
            ibv_ack_cq_events(cq, 1);
            ibv_req_notify_cq(cq, 0);
            drain_cq(ctx); /* after re-arming, so nothing slips between */
        }
        housekeeping(t);
        pthread_mutex_unlock(&t->base.mu);
    }
}

/* ---------------------------------------------------------------- regions */

static int rdma_region_add(kvt_transport *base, kvt_region *reg, eng_error *err)
{
    rdma_transport *t = (rdma_transport *)base;
    rregion *r = (rregion *)reg;
    /* Local access only: remote writes go through each transfer's own windows. */
    r->mr = ibv_reg_mr(t->pd, reg->base, reg->len, IBV_ACCESS_LOCAL_WRITE);
    if (!r->mr)
        return eng_fail(err,
                        "kvtransfer: ibv_reg_mr of %zu bytes failed: %s (raise the locked "
                        "memory limit, ulimit -l)",
                        reg->len, strerror(errno));
    return 0;
}

static void rdma_region_drop(kvt_transport *base, kvt_region *reg)
{
    (void)base;
    ibv_dereg_mr(((rregion *)reg)->mr);
}

static int rdma_descriptor(kvt_transport *base, const kvt_region *reg, void *buf, size_t cap, size_t *len,
                           eng_error *err)
{
    rdma_transport *t = (rdma_transport *)base;
    rdma_desc d = {
        .instance = t->instance, .lid = t->lid, .region_id = reg->id, .addr = (uintptr_t)reg->base, .size = reg->len};
    memcpy(d.gid, t->gid.raw, 16);
    return rdma_desc_encode(&d, buf, cap, len, err);
}

/* ---------------------------------------------------------------- receiving API */

/* The fence: writes of a transfer that FINISH or ABORT has not closed may still be on the
 * wire; destroying its queue pair stops them for good. */
static void rdma_rx_forget(kvt_transport *base, kvt_rx *xb)
{
    (void)base;
    rx *x = (rx *)xb;
    rconn *c = x->base.conn;
    if (!c)
        return;
    if (!x->closed)
        conn_fail(c, "transfer %" PRIu64 " was forgotten while its writes could still land", x->base.id);
    close_windows(x);
    c->refs--;
    x->base.conn = NULL;
}

static void rdma_rx_free(kvt_rx *xb)
{
    close_windows((rx *)xb);
    free(((rx *)xb)->runs);
}

static int rdma_accept(kvt_transport *base, const void *hello, size_t len, void *reply, size_t cap, size_t *reply_len,
                       eng_error *err)
{
    rdma_transport *t = (rdma_transport *)base;
    rdma_hello h, r;
    if (rdma_hello_decode(hello, len, &h, err) < 0)
        return -1;
    if (h.kind != RDMA_HELLO)
        return eng_fail(err, "kvtransfer: an RDMA reply was passed as a hello");
    if (h.to != t->instance)
        return eng_fail(err,
                        "kvtransfer: RDMA hello for transport %016" PRIx64 ", this is %016" PRIx64
                        " (the receiver restarted? the sender reconnects with a fresh descriptor)",
                        h.to, t->instance);
    pthread_mutex_lock(&t->base.mu);
    rconn *c = conn_new(t, 0, err);
    if (!c || conn_connect(c, &h, err) < 0) {
        if (c)
            conn_fail(c, "handshake failed");
        pthread_mutex_unlock(&t->base.mu);
        return -1;
    }
    fill_hello(c, &r, RDMA_REPLY, h.from, h.token);
    pthread_mutex_unlock(&t->base.mu);
    *reply_len = rdma_hello_encode(&r, reply, cap);
    if (*reply_len == 0)
        return eng_fail(err, "kvtransfer: reply buffer of %zu bytes is too small", cap);
    return 0;
}

/* ---------------------------------------------------------------- sending API */

static int rdma_peer_init(kvt_peer *pb, const void *desc, size_t len, eng_error *err)
{
    return rdma_desc_decode(desc, len, &((rpeer *)pb)->d, err);
}

static int rdma_connect(kvt_peer *pb, eng_error *err)
{
    rpeer *p = (rpeer *)pb;
    rdma_transport *t = (rdma_transport *)pb->t;
    int rc = 0;
    pthread_mutex_lock(&t->base.mu);
    if (p->c && p->c->state == C_DEAD)
        p->c = NULL; /* the poller frees it once no transfer refers to it */
    if (!p->c && !(p->c = conn_new(t, 1, err)))
        rc = -1;
    pthread_mutex_unlock(&t->base.mu);
    return rc;
}

static size_t rdma_peer_hello(kvt_peer *pb, void *buf, size_t cap)
{
    rpeer *p = (rpeer *)pb;
    rdma_transport *t = (rdma_transport *)pb->t;
    size_t n = 0;
    pthread_mutex_lock(&t->base.mu);
    if (p->c && p->c->state == C_HELLO) {
        rdma_hello h;
        fill_hello(p->c, &h, RDMA_HELLO, p->d.instance, p->c->token);
        n = rdma_hello_encode(&h, buf, cap);
    }
    pthread_mutex_unlock(&t->base.mu);
    return n;
}

static int rdma_peer_reply(kvt_peer *pb, const void *reply, size_t len, eng_error *err)
{
    rpeer *p = (rpeer *)pb;
    rdma_transport *t = (rdma_transport *)pb->t;
    rdma_hello h;
    if (rdma_hello_decode(reply, len, &h, err) < 0)
        return -1;
    pthread_mutex_lock(&t->base.mu);
    int rc = 0;
    if (p->c && p->c->state == C_UP && h.kind == RDMA_REPLY && h.token == p->c->token)
        rc = 0; /* two callers relayed the same hello; the first reply connected the pair */
    else if (!p->c || p->c->state != C_HELLO)
        rc = eng_fail(err, "kvtransfer: an RDMA reply arrived for a queue pair that is not waiting for one");
    else if (h.kind != RDMA_REPLY || h.to != t->instance || h.from != p->d.instance || h.token != p->c->token)
        rc = eng_fail(err, "kvtransfer: the RDMA reply answers another hello");
    else if (conn_connect(p->c, &h, err) < 0) {
        conn_fail(p->c, "handshake failed");
        rc = -1;
    }
    pthread_mutex_unlock(&t->base.mu);
    return rc;
}

static void tx_free(rdma_transport *t, tx *s) /* holds t->mu */
{
    for (tx **ps = &s->c->txs; *ps; ps = &(*ps)->next)
        if (*ps == s) {
            *ps = s->next;
            break;
        }
    s->c->refs--;
    s->src->base.users--;
    pthread_cond_broadcast(&t->base.cv);
    XXH3_freeState(s->hash);
    free(s->spans);
    free(s->rkeys);
    free(s->runs);
    free(s);
}

static int rdma_send_begin(kvt_peer *pb, kvt_region *src, uint64_t id, const kvt_secret *secret, kvt_send **out,
                           eng_error *err)
{
    rpeer *p = (rpeer *)pb;
    rdma_transport *t = (rdma_transport *)pb->t;
    tx *s = calloc(1, sizeof *s);
    XXH3_state_t *h = XXH3_createState();
    if (!s || !h) {
        free(s);
        XXH3_freeState(h);
        return eng_fail(err, "kvtransfer: out of memory");
    }
    XXH3_64bits_reset(h);
    pthread_mutex_lock(&t->base.mu);
    rconn *c = p->c;
    if (!c || c->state != C_UP) {
        int dead = c && c->state == C_DEAD;
        pthread_mutex_unlock(&t->base.mu);
        free(s);
        XXH3_freeState(h);
        return eng_fail(err,
                        dead ? "kvtransfer: RDMA connection to the peer failed: %s (connect again)"
                             : "kvtransfer: the RDMA queue pair is not connected%s: relay "
                               "kvt_peer_hello through kvt_accept_hello and kvt_peer_reply first",
                        dead ? c->reason : "");
    }
    s->base.t = pb->t;
    s->c = c;
    c->refs++;
    s->src = (rregion *)src;
    src->users++;
    s->id = id;
    s->remote_size = p->d.size;
    s->remote_addr = p->d.addr;
    s->hash = h;
    s->next = c->txs;
    c->txs = s;
    rdma_msg m = {.type = RM_BEGIN, .id = id, .begin.region_id = p->d.region_id};
    if (secret)
        memcpy(m.begin.secret, secret->bytes, sizeof m.begin.secret);
    int rc = send_sync(c, &m, NULL, NULL, err);
    struct timespec dl;
    eng_deadline_after_ms(&dl, t->io_timeout_ms);
    while (rc == 0 && !s->go && s->state == KVT_PENDING)
        if (!kvt_wait_until(&t->base, &dl, t->io_timeout_ms)) {
            rc = eng_fail(err, "kvtransfer: the receiver did not answer BEGIN within %d ms", t->io_timeout_ms);
            break;
        }
    if (rc == 0 && s->state != KVT_PENDING)
        rc = eng_fail(err, "kvtransfer: transfer %" PRIu64 " refused: %s", id, s->reason);
    if (rc < 0) {
        tx_free(t, s);
    } else {
        *out = &s->base;
    }
    pthread_mutex_unlock(&t->base.mu);
    return rc;
}

/* Hashes and posts one coalesced run (split at the device's message limit) with the key of
 * the span it lies in (rdma_send_write checked each piece; pieces that continue each other
 * stay in one span, as merged spans never touch). */
static int post_run(tx *s, const rdma_run *run, eng_error *err)
{
    rdma_transport *t = (rdma_transport *)s->base.t;
    int span = kvt_spans_find(s->spans, s->n_spans, run->dst, run->len);
    if (span < 0)
        return eng_fail(err, "kvtransfer: run to [%" PRIu64 ", +%" PRIu64 ") lies outside the receiver's spans",
                        run->dst, run->len);
    XXH3_64bits_update(s->hash, s->src->base.base + run->src, run->len);
    s->bytes += run->len;
    pthread_mutex_lock(&t->base.mu);
    int rc = 0;
    for (uint64_t done = 0; rc == 0 && done < run->len;) {
        uint64_t n = run->len - done < t->max_write ? run->len - done : t->max_write;
        if (s->state != KVT_PENDING) {
            rc = eng_fail(err, "kvtransfer: transfer %" PRIu64 " failed: %s", s->id, s->reason);
            break;
        }
        if (wait_room(s->c, err) < 0) {
            rc = -1;
            break;
        }
        struct ibv_sge sge = {
            .addr = (uintptr_t)(s->src->base.base + run->src + done), .length = (uint32_t)n, .lkey = s->src->mr->lkey};
        struct ibv_send_wr wr = {.wr_id = (uint64_t)W_WRITE << 56,
                                 .sg_list = &sge,
                                 .num_sge = 1,
                                 .opcode = IBV_WR_RDMA_WRITE,
                                 .send_flags = IBV_SEND_SIGNALED};
        wr.wr.rdma.remote_addr = s->remote_addr + run->dst + done;
        wr.wr.rdma.rkey = s->rkeys[span];
        struct ibv_send_wr *bad;
        if (ibv_post_send(s->c->qp, &wr, &bad) != 0) {
            conn_fail(s->c, "posting an RDMA write: %s", strerror(errno));
            rc = eng_fail(err, "kvtransfer: RDMA connection to the peer failed: %s", s->c->reason);
            break;
        }
        s->c->sq_used++;
        if (push_pair(&s->runs, &s->n_runs, &s->cap_runs, run->dst + done, n) < 0)
            rc = eng_fail(err, "kvtransfer: out of memory");
        done += n;
    }
    pthread_mutex_unlock(&t->base.mu);
    return rc;
}

static int rdma_send_write(kvt_send *sb, uint64_t src_off, uint64_t dst_off, uint64_t len, eng_error *err)
{
    tx *s = (tx *)sb;
    rdma_transport *t = (rdma_transport *)sb->t;
    if (len == 0)
        return 0;
    if (src_off > s->src->base.len || len > s->src->base.len - src_off)
        return eng_fail(err,
                        "kvtransfer: run [%" PRIu64 ", +%" PRIu64 ") lies outside the %zu-byte "
                        "source region",
                        src_off, len, s->src->base.len);
    if (dst_off > s->remote_size || len > s->remote_size - dst_off ||
        kvt_spans_find(s->spans, s->n_spans, dst_off, len) < 0) {
        pthread_mutex_lock(&t->base.mu);
        if (s->state == KVT_PENDING) {
            s->state = KVT_FAILED;
            snprintf(s->reason, sizeof s->reason,
                     "run to [%" PRIu64 ", +%" PRIu64 ") lies outside the "
                     "receiver's blocks for this transfer",
                     dst_off, len);
        }
        pthread_mutex_unlock(&t->base.mu);
        return eng_fail(err, "kvtransfer: transfer %" PRIu64 " failed: %s", s->id, s->reason);
    }
    rdma_run flush;
    if (rdma_run_add(&s->pending, &s->has_pending, src_off, dst_off, len, t->max_write, &flush))
        return post_run(s, &flush, err);
    pthread_mutex_lock(&t->base.mu);
    int failed = s->state != KVT_PENDING;
    if (failed)
        eng_fail(err, "kvtransfer: transfer %" PRIu64 " failed: %s", s->id, s->reason);
    pthread_mutex_unlock(&t->base.mu);
    return failed ? -1 : 0;
}

static int rdma_send_finish(kvt_send *sb, int timeout_ms, uint64_t *bytes, eng_error *err)
{
    tx *s = (tx *)sb;
    rdma_transport *t = (rdma_transport *)sb->t;
    int rc = 0;
    if (s->has_pending) {
        s->has_pending = 0;
        rc = post_run(s, &s->pending, err);
    }
    uint64_t sum = XXH3_64bits_digest(s->hash);
    pthread_mutex_lock(&t->base.mu);
    for (size_t i = 0; rc == 0 && i < s->n_runs; i += RDMA_MSG_MAX_PAIRS) {
        size_t n = s->n_runs - i < RDMA_MSG_MAX_PAIRS ? s->n_runs - i : RDMA_MSG_MAX_PAIRS;
        rdma_msg m = {.type = RM_RUNS, .id = s->id, .n = (uint32_t)n};
        rc = send_sync(s->c, &m, s->runs + 2 * i, NULL, err);
    }
    if (rc == 0) {
        rdma_msg m = {
            .type = RM_FINISH, .id = s->id, .finish = {.bytes = s->bytes, .checksum = sum, .n_runs = s->n_runs}};
        rc = send_sync(s->c, &m, NULL, NULL, err);
    }
    struct timespec dl;
    eng_deadline_after_ms(&dl, timeout_ms);
    while (rc == 0 && s->state == KVT_PENDING)
        if (!kvt_wait_until(&t->base, &dl, timeout_ms)) {
            rc = eng_fail(err, "kvtransfer: no verdict from the receiver within %d ms", timeout_ms);
            static const char why[] = "the sender timed out waiting for the verdict";
            rdma_msg m = {.type = RM_ABORT, .id = s->id, .n = sizeof why - 1};
            if (has_room(s->c) && s->c->state == C_UP) {
                unsigned char buf[RDMA_MSG_BYTES];
                post_msg_now(s->c, buf, rdma_msg_encode(&m, NULL, why, buf), NULL);
            }
            break;
        }
    if (rc == 0 && s->state != KVT_OK)
        rc = eng_fail(err, "kvtransfer: transfer %" PRIu64 " failed: %s", s->id, s->reason);
    *bytes = s->bytes;
    tx_free(t, s);
    pthread_mutex_unlock(&t->base.mu);
    return rc;
}

static void rdma_send_abort(kvt_send *sb, const char *reason)
{
    tx *s = (tx *)sb;
    rdma_transport *t = (rdma_transport *)sb->t;
    pthread_mutex_lock(&t->base.mu);
    if (s->c->state == C_UP) {
        eng_error e;
        size_t n = strlen(reason);
        rdma_msg m = {.type = RM_ABORT, .id = s->id, .n = (uint32_t)(n < 1000 ? n : 1000)};
        send_sync(s->c, &m, NULL, reason, &e);
    }
    tx_free(t, s);
    pthread_mutex_unlock(&t->base.mu);
}

/* ---------------------------------------------------------------- life cycle */

static void rdma_destroy(kvt_transport *base)
{
    rdma_transport *t = (rdma_transport *)base;
    pthread_mutex_lock(&t->base.mu);
    t->stopping = 1;
    pthread_mutex_unlock(&t->base.mu);
    if (write(t->wake[1], "x", 1) < 0) { /* the poller also wakes within 250 ms */
    }
    pthread_join(t->poller, NULL);
    for (kvt_peer *p = t->base.peers, *n; p; p = n) {
        n = p->next;
        free(p);
    }
    for (rconn *c = t->conns, *n; c; c = n) {
        n = c->next;
        for (tx *s = c->txs, *m; s; s = m) {
            m = s->next;
            XXH3_freeState(s->hash);
            free(s->spans);
            free(s->rkeys);
            free(s->runs);
            free(s);
        }
        conn_free(c);
    }
    kvt_transport_fini(&t->base); /* the regions' memory registrations go before the PD */
    ibv_destroy_comp_channel(t->ch);
    ibv_dealloc_pd(t->pd);
    ibv_close_device(t->ctx);
    close(t->wake[0]);
    close(t->wake[1]);
    free(t);
}

int kvt_rdma_create(const kvt_rdma_options *opt, kvt_transport **out, eng_error *err)
{
    kvt_rdma_options o = opt ? *opt : (kvt_rdma_options){.gid_index = -1};
    char why[200];
    *out = NULL;
    rdma_transport *t = calloc(1, sizeof *t);
    if (!t)
        return eng_fail(err, "kvtransfer: out of memory");
    struct ibv_port_attr pa;
    t->ctx = find_port(o.device, o.port, &t->port, &pa, why, sizeof why);
    if (!t->ctx) {
        free(t);
        return eng_fail(err, "kvtransfer: %s", why);
    }
    const char *dev = ibv_get_device_name(t->ctx->device);
    t->gid_index = o.gid_index;
    if (t->gid_index < 0) { /* auto: RoCE v2 over IPv4 if the port has it, else index 0 */
        t->gid_index = 0;
        for (int i = 0; i < pa.gid_tbl_len; i++) {
            union ibv_gid g;
            if (ibv_query_gid(t->ctx, (uint8_t)t->port, i, &g) == 0 && rdma_gid_is_ipv4(g.raw)) {
                t->gid_index = i;
                break;
            }
        }
    }
    if (ibv_query_gid(t->ctx, (uint8_t)t->port, t->gid_index, &t->gid) != 0) {
        eng_fail(err, "kvtransfer: RDMA device %s port %d has no GID %d", dev, t->port, t->gid_index);
        ibv_close_device(t->ctx);
        free(t);
        return -1;
    }
    t->lid = pa.lid;
    t->mtu = pa.active_mtu;
    t->max_write = pa.max_msg_sz && pa.max_msg_sz < MAX_WRITE ? pa.max_msg_sz : MAX_WRITE;
    t->io_timeout_ms = o.io_timeout_ms > 0 ? o.io_timeout_ms : 10000;
    t->dead_after_s = t->io_timeout_ms / 2000.0 < 2.0 ? 2.0 : t->io_timeout_ms / 2000.0;
    if (getrandom(&t->instance, sizeof t->instance, 0) != sizeof t->instance)
        t->instance = (uint64_t)eng_now_s() ^ (uint64_t)getpid() << 32;
    t->pd = ibv_alloc_pd(t->ctx);
    t->ch = t->pd ? ibv_create_comp_channel(t->ctx) : NULL;
    if (!t->ch || pipe2(t->wake, O_CLOEXEC) != 0) {
        eng_fail(err, "kvtransfer: cannot set up RDMA device %s: %s", dev, strerror(errno));
        if (t->ch)
            ibv_destroy_comp_channel(t->ch);
        if (t->pd)
            ibv_dealloc_pd(t->pd);
        ibv_close_device(t->ctx);
        free(t);
        return -1;
    }
    fcntl(t->ch->fd, F_SETFL, fcntl(t->ch->fd, F_GETFL) | O_NONBLOCK);
    kvt_transport_init(&t->base, &rdma_ops);
    snprintf(t->base.choice, sizeof t->base.choice, "rdma (%s port %d, gid %d, mtu %d)", dev, t->port, t->gid_index,
             128 << t->mtu);
    if (pthread_create(&t->poller, NULL, poller_main, t) != 0) {
        ibv_destroy_comp_channel(t->ch);
        ibv_dealloc_pd(t->pd);
        ibv_close_device(t->ctx);
        close(t->wake[0]);
        close(t->wake[1]);
        kvt_transport_fini(&t->base);
        free(t);
        return eng_fail(err, "kvtransfer: cannot start the RDMA poller thread");
    }
    *out = &t->base;
    return 0;
}

static const kvt_ops rdma_ops = {
    .name = "rdma",
    .region_size = sizeof(rregion),
    .rx_size = sizeof(rx),
    .peer_size = sizeof(rpeer),
    .destroy = rdma_destroy,
    .region_add = rdma_region_add,
    .region_drop = rdma_region_drop,
    .descriptor = rdma_descriptor,
    .rx_forget = rdma_rx_forget,
    .rx_free = rdma_rx_free,
    .accept = rdma_accept,
    .peer_init = rdma_peer_init,
    .connect = rdma_connect,
    .peer_hello = rdma_peer_hello,
    .peer_reply = rdma_peer_reply,
    .send_begin = rdma_send_begin,
    .send_write = rdma_send_write,
    .send_finish = rdma_send_finish,
    .send_abort = rdma_send_abort,
};

/* ep_mesh.c: the connections of an EP group and its framed messages (ep.h).
 *
 * States: FORMING (dial the lower ranks, accept the higher ones, until all are
 * connected) -> READY (the mesh thread reads messages into per-peer queues) ->
 * broken (by a peer's EOF, a deadline, a bad message, or a rank restarting): every
 * socket is shut down, so a blocked send or receive on either side returns at once,
 * and once the engine has let go of the sockets they are closed and FORMING starts
 * again. The group epoch of a formation is one more than the largest formation
 * count any rank reported in its handshake, so every rank agrees on it. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <time.h>
#include <unistd.h>

#include "common/addr.h"
#include "common/file.h"
#include "common/log.h"
#include "ep.h"
#include "ep_rdma.h"

#define EP_MAGIC 0x31504554u    /* "TEP1" */
#define EP_MAX_MSG (1ull << 34) /* a message's payload: 16 GiB (rows x hidden x 4) */
#define EP_HANDSHAKE_MS 2000
#define EP_SECRET_MIN 16   /* bytes of a --ep-secret-file, at least */
#define EP_SECRET_MAX 1024 /* and at most */

/* Frames of the mesh itself, besides the engine's WRK_EP_DISPATCH and WRK_EP_COMBINE. */
enum {
    EP_CREDIT = 16, /* xfer: a transfer id the peer may write its next payload under, into slot */
    EP_RDMA_OFFER,  /* forming: ep_rdma_offer's bytes */
    EP_RDMA_HELLO,  /* forming: the queue pair's hello (maybe empty) */
    EP_RDMA_REPLY,  /* forming: the answer to it (maybe empty) */
};

typedef struct ep_hdr {
    uint32_t magic, kind, epoch, layer;
    uint64_t step, len;
    uint64_t xfer; /* 0: len payload bytes follow; else they went by RDMA under this transfer */
    uint32_t slot, pad;
} ep_hdr;

typedef struct ep_hello {
    uint32_t magic, size, rank, formations;
    uint64_t group;    /* FNV-1a of the group name */
    uint32_t rdma;     /* 1: payloads go by RDMA (every rank must agree) */
    uint32_t auth;     /* 1: a proof of the group secret follows (every rank must agree) */
    uint8_t nonce[16]; /* fresh per connection: the peer's proof covers it */
} ep_hello;

typedef struct ep_msg {
    struct ep_msg *next;
    ep_hdr h;
    unsigned char *data;
} ep_msg;

typedef struct ep_peer {
    char host[ENG_HOST_MAX];
    int port;
    int fd;              /* -1: not connected */
    ep_msg *head, *tail; /* received, not yet taken */
    ep_hdr rh;           /* the message being read */
    size_t rgot;         /* bytes of header + payload read so far */
    unsigned char *rdata;
    uint32_t formations; /* from its handshake */
    /* RDMA credits it gave us, oldest first: transfer id and its slot */
    uint64_t credit_id[EP_RDMA_SLOTS];
    uint32_t credit_slot[EP_RDMA_SLOTS];
    int n_credits;
} ep_peer;

struct wrk_ep {
    wrk_ep_options opt;
    char group[128];
    uint64_t group_hash;
    uint8_t *held; /* [n_experts] 1: this rank holds the expert */
    int n_held;
    int *holders; /* [n_experts][size]: the ranks holding each expert, n_holders[e] of them */
    int *n_holders;
    int listen_fd;
    int wake[2]; /* wakes the mesh thread's poll */
    ep_peer peers[WRK_EP_MAX_SIZE];

    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int started, stop;
    int ready, broken;
    int users; /* engine calls using the sockets right now */
    uint32_t formations, epoch;
    uint64_t step;
    uint32_t step_epoch; /* the epoch of the step the engine is in */
    char why[300];
    char refused[200]; /* the last refusal logged (the same one is logged once) */
    wrk_ep_metrics met;
    ep_rdma *rdma;                       /* NULL: payloads travel on the TCP connections */
    unsigned char secret[EP_SECRET_MAX]; /* --ep-secret-file; secret_len 0: none */
    size_t secret_len;
    char transport[200];
    uint64_t *sent_rows; /* [size] rows dispatched to each rank, for the balance gauge */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void ep_log(wrk_ep *ep, eng_log_level level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void ep_log(wrk_ep *ep, eng_log_level level, const char *fmt, ...)
{
    char who[200];
    snprintf(who, sizeof who, "EP group %s rank %d/%d", ep->group, ep->opt.rank, ep->opt.size);
    va_list ap;
    va_start(ap, fmt);
    eng_logv(level, who, NULL, fmt, ap);
    va_end(ap);
}

static void notify(wrk_ep *ep)
{
    if (ep->opt.notify)
        ep->opt.notify(ep->opt.notify_ctx);
}

static void wake(wrk_ep *ep)
{
    char c = 1;
    ssize_t r = write(ep->wake[1], &c, 1); /* a full pipe already wakes it */
    (void)r;
}

void wrk_ep_range(int n_experts, int size, int rank, int *lo, int *hi)
{
    *lo = (int)((long long)n_experts * rank / size);
    *hi = (int)((long long)n_experts * (rank + 1) / size);
}

/* ------------------------------------------------------------------ breaking */

static void free_queue(ep_peer *p)
{
    for (ep_msg *m = p->head, *next; m; m = next) {
        next = m->next;
        free(m->data);
        free(m);
    }
    p->head = p->tail = NULL;
    p->n_credits = 0;
    free(p->rdata);
    p->rdata = NULL;
    p->rgot = 0;
}

/* Under mu: the group is broken; shut every socket so that everyone waiting on
 * one returns now. The mesh thread closes them once no engine call uses them. */
static void break_locked(wrk_ep *ep, const char *why)
{
    if (ep->broken)
        return;
    ep->broken = 1;
    if (ep->ready)
        ep_log(ep, ENG_LOG_WARN, "group broken (epoch %u, step %llu): %s", ep->epoch, (unsigned long long)ep->step,
               why);
    ep->ready = 0;
    snprintf(ep->why, sizeof ep->why, "%s", why);
    for (int i = 0; i < ep->opt.size; i++)
        if (ep->peers[i].fd >= 0)
            shutdown(ep->peers[i].fd, SHUT_RDWR);
    pthread_cond_broadcast(&ep->cv);
    wake(ep);
}

void wrk_ep_fail(wrk_ep *ep, const char *why)
{
    pthread_mutex_lock(&ep->mu);
    break_locked(ep, why);
    pthread_mutex_unlock(&ep->mu);
    notify(ep);
}

/* Mesh thread: after a break, close everything and start forming again. */
static void reset(wrk_ep *ep)
{
    pthread_mutex_lock(&ep->mu);
    while (ep->users)
        pthread_cond_wait(&ep->cv, &ep->mu);
    for (int i = 0; i < ep->opt.size; i++) {
        ep_peer *p = &ep->peers[i];
        if (p->fd >= 0)
            close(p->fd);
        p->fd = -1;
        free_queue(p);
    }
    if (ep->rdma)
        ep_rdma_reset(ep->rdma);
    ep->broken = 0;
    pthread_mutex_unlock(&ep->mu);
}

/* ------------------------------------------------------------------ sockets */

/* Writes all of iov (changing it) by deadline; 0 or -1 with why. */
static int write_all(int fd, struct iovec *iov, int n, double deadline, char *why, size_t cap)
{
    while (n > 0) {
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            snprintf(why, cap, "send: %s", strerror(errno));
            return -1;
        }
        if (w < 0) {
            int ms = (int)((deadline - now_s()) * 1000);
            if (ms <= 0) {
                snprintf(why, cap, "send did not complete within the deadline");
                return -1;
            }
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            poll(&pf, 1, ms);
            continue;
        }
        size_t left = (size_t)w;
        while (n > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t len, double deadline, char *why, size_t cap)
{
    size_t got = 0;
    while (got < len) {
        int ms = (int)((deadline - now_s()) * 1000);
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (ms <= 0 || poll(&pf, 1, ms) == 0) {
            snprintf(why, cap, "no answer within %d ms", EP_HANDSHAKE_MS);
            return -1;
        }
        ssize_t r = recv(fd, (char *)buf + got, len - got, MSG_DONTWAIT);
        if (r == 0) {
            snprintf(why, cap, "connection closed");
            return -1;
        }
        if (r < 0 && errno != EAGAIN && errno != EINTR) {
            snprintf(why, cap, "recv: %s", strerror(errno));
            return -1;
        }
        if (r > 0)
            got += (size_t)r;
    }
    return 0;
}

static void tune(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static ep_hello my_hello(wrk_ep *ep)
{
    return (ep_hello){.magic = EP_MAGIC,
                      .size = (uint32_t)ep->opt.size,
                      .rank = (uint32_t)ep->opt.rank,
                      .formations = ep->formations,
                      .group = ep->group_hash,
                      .rdma = ep->rdma != NULL,
                      .auth = ep->secret_len > 0};
}

static int check_hello(wrk_ep *ep, const ep_hello *h, char *why, size_t cap)
{
    if (h->magic != EP_MAGIC || h->group != ep->group_hash || h->size != (uint32_t)ep->opt.size ||
        h->rank >= (uint32_t)ep->opt.size || h->rank == (uint32_t)ep->opt.rank) {
        snprintf(why, cap, "handshake from another group, size or rank (size %u, rank %u)", h->size, h->rank);
        return -1;
    }
    if (h->rdma != (ep->rdma != NULL)) {
        snprintf(why, cap, "rank %u's exchange is %s, ours is %s (--ep-transport must agree)", h->rank,
                 h->rdma ? "rdma" : "tcp", ep->rdma ? "rdma" : "tcp");
        return -1;
    }
    if (h->auth != (ep->secret_len > 0)) {
        snprintf(why, cap, "rank %u %s a group secret and we %s (--ep-secret-file must agree)", h->rank,
                 h->auth ? "has" : "has no", ep->secret_len ? "have" : "do not");
        return -1;
    }
    return 0;
}

/* Exchanges hellos on a new connection; returns the peer's rank or -1. */
/* HMAC-SHA256 under the group secret of what `from` proves to `to`: the group, both ranks
 * and both connection nonces, so a proof is good for one connection only. */
static void proof(const wrk_ep *ep, const ep_hello *from, const ep_hello *to, unsigned char out[32])
{
    unsigned char msg[8 + 4 + 4 + 16 + 16];
    memcpy(msg, &ep->group_hash, 8);
    memcpy(msg + 8, &from->rank, 4);
    memcpy(msg + 12, &to->rank, 4);
    memcpy(msg + 16, from->nonce, 16);
    memcpy(msg + 32, to->nonce, 16);
    unsigned int len = 32;
    HMAC(EVP_sha256(), ep->secret, (int)ep->secret_len, msg, sizeof msg, out, &len);
}

/* Exchanges hellos (and, with a group secret, proofs of it) on a new connection;
 * returns the peer's rank or -1. */
static int handshake(wrk_ep *ep, int fd, char *why, size_t cap)
{
    ep_hello mine = my_hello(ep), theirs;
    if (getrandom(mine.nonce, sizeof mine.nonce, 0) != (ssize_t)sizeof mine.nonce) {
        snprintf(why, cap, "getrandom: %s", strerror(errno));
        return -1;
    }
    struct iovec iov = {&mine, sizeof mine};
    double deadline = now_s() + EP_HANDSHAKE_MS / 1000.0;
    if (write_all(fd, &iov, 1, deadline, why, cap) < 0 ||
        read_all(fd, &theirs, sizeof theirs, deadline, why, cap) < 0 || check_hello(ep, &theirs, why, cap) < 0)
        return -1;
    if (ep->secret_len) {
        unsigned char ours[32], got[32], want[32];
        proof(ep, &mine, &theirs, ours);
        proof(ep, &theirs, &mine, want);
        struct iovec piov = {ours, sizeof ours};
        if (write_all(fd, &piov, 1, deadline, why, cap) < 0 || read_all(fd, got, sizeof got, deadline, why, cap) < 0)
            return -1;
        if (CRYPTO_memcmp(got, want, sizeof got) != 0) {
            snprintf(why, cap, "rank %u does not know the group secret (--ep-secret-file)", theirs.rank);
            return -1;
        }
    }
    ep->peers[theirs.rank].formations = theirs.formations;
    return (int)theirs.rank;
}

/* The group secret: the file's bytes without trailing whitespace. */
static int load_secret(wrk_ep *ep, const char *path, eng_error *err)
{
    size_t len;
    char *s = eng_read_file(path, &len, err);
    if (!s)
        return -1;
    while (len && (s[len - 1] == '\n' || s[len - 1] == '\r' || s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    int ok = len >= EP_SECRET_MIN && len <= EP_SECRET_MAX;
    if (ok)
        memcpy(ep->secret, s, len);
    OPENSSL_cleanse(s, len);
    free(s);
    if (!ok)
        return eng_fail(err, "--ep-secret-file %s: the secret must be %d to %d bytes", path, EP_SECRET_MIN,
                        EP_SECRET_MAX);
    ep->secret_len = len;
    return 0;
}

static int dial(wrk_ep *ep, int peer)
{
    ep_peer *p = &ep->peers[peer];
    struct addrinfo *ai = NULL;
    if (eng_addr_resolve(p->host, p->port, 0, &ai, NULL) < 0)
        return -1;
    /* non-blocking, so that an unreachable host costs the handshake's bound, not
     * the kernel's SYN retries */
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), ok = 0;
    if (fd >= 0 && (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS)) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        int e = 0;
        socklen_t len = sizeof e;
        ok = poll(&pf, 1, EP_HANDSHAKE_MS) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) == 0 && e == 0;
    }
    freeaddrinfo(ai);
    char why[200];
    if (!ok || handshake(ep, fd, why, sizeof why) != peer) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    tune(fd);
    return fd;
}

/* ------------------------------------------------------------------ the mesh thread */

static int read_peer(wrk_ep *ep, int i, char *why, size_t cap);

static int send_frame(wrk_ep *ep, int peer, int kind, const void *data, size_t len, double deadline, char *why,
                      size_t cap)
{
    ep_hdr h = {.magic = EP_MAGIC, .kind = (uint32_t)kind, .len = len};
    struct iovec iov[2] = {{&h, sizeof h}, {(void *)data, len}};
    return write_all(ep->peers[peer].fd, iov, len ? 2 : 1, deadline, why, cap);
}

/* Forming: the next frame from peer, which must be of this kind (queued by read_peer). */
static ep_msg *await_frame(wrk_ep *ep, int peer, int kind, double deadline, char *why, size_t cap)
{
    ep_peer *p = &ep->peers[peer];
    for (;;) {
        pthread_mutex_lock(&ep->mu);
        ep_msg *m = p->head;
        if (m) {
            p->head = m->next;
            if (!p->head)
                p->tail = NULL;
        }
        pthread_mutex_unlock(&ep->mu);
        if (m && m->h.kind == (uint32_t)kind)
            return m;
        if (m) {
            snprintf(why, cap, "rank %d sent kind %u while the group formed (expected %d)", peer, m->h.kind, kind);
            free(m->data);
            free(m);
            return NULL;
        }
        int ms = (int)((deadline - now_s()) * 1000);
        struct pollfd pf = {.fd = p->fd, .events = POLLIN};
        if (ms <= 0 || poll(&pf, 1, ms) == 0) {
            snprintf(why, cap, "rank %d did not set up RDMA within %d ms", peer, ep->opt.deadline_ms);
            return NULL;
        }
        if (read_peer(ep, peer, why, cap) < 0)
            return NULL;
    }
}

/* Forming, every rank connected: the queue pairs and first credits of every pair of
 * ranks. All sends of a phase go out before its receives, so no rank waits for one that
 * waits for it. */
static int rdma_setup(wrk_ep *ep, char *why, size_t cap)
{
    int n = ep->opt.size, me = ep->opt.rank;
    double deadline = now_s() + ep->opt.deadline_ms / 1000.0;
    unsigned char buf[EP_RDMA_SLOTS * 8 + KVT_DESCRIPTOR_MAX + KVT_HELLO_MAX];
    size_t len;
    eng_error err;
    for (int i = 0; i < n; i++)
        if (i != me && (ep_rdma_offer(ep->rdma, i, buf, sizeof buf, &len, &err) < 0 ||
                        send_frame(ep, i, EP_RDMA_OFFER, buf, len, deadline, why, cap) < 0))
            goto fail;
    for (int i = 0; i < n; i++) {
        if (i == me)
            continue;
        ep_msg *m = await_frame(ep, i, EP_RDMA_OFFER, deadline, why, cap);
        if (!m)
            return -1;
        ep_peer *p = &ep->peers[i];
        int rc = ep_rdma_take_offer(ep->rdma, i, m->data, m->h.len, p->credit_id, buf, sizeof buf, &len, &err);
        free(m->data);
        free(m);
        if (rc < 0 || send_frame(ep, i, EP_RDMA_HELLO, buf, len, deadline, why, cap) < 0)
            goto fail;
        for (int s = 0; s < EP_RDMA_SLOTS; s++)
            p->credit_slot[s] = (uint32_t)s;
        p->n_credits = EP_RDMA_SLOTS;
    }
    for (int i = 0; i < n; i++) {
        if (i == me)
            continue;
        ep_msg *m = await_frame(ep, i, EP_RDMA_HELLO, deadline, why, cap);
        if (!m)
            return -1;
        int rc = ep_rdma_accept(ep->rdma, m->data, m->h.len, buf, sizeof buf, &len, &err);
        free(m->data);
        free(m);
        if (rc < 0 || send_frame(ep, i, EP_RDMA_REPLY, buf, len, deadline, why, cap) < 0)
            goto fail;
    }
    for (int i = 0; i < n; i++) {
        if (i == me)
            continue;
        ep_msg *m = await_frame(ep, i, EP_RDMA_REPLY, deadline, why, cap);
        if (!m)
            return -1;
        int rc = ep_rdma_take_reply(ep->rdma, i, m->data, m->h.len, &err);
        free(m->data);
        free(m);
        if (rc < 0)
            goto fail;
    }
    return 0;
fail:
    if (!why[0])
        snprintf(why, cap, "RDMA setup: %.240s", err.msg);
    return -1;
}

static void form_complete(wrk_ep *ep)
{
    char why[300] = "";
    if (ep->rdma && rdma_setup(ep, why, sizeof why) < 0) {
        ep_log(ep, ENG_LOG_WARN, "the group did not form: %s", why);
        pthread_mutex_lock(&ep->mu);
        break_locked(ep, why);
        pthread_mutex_unlock(&ep->mu);
        return;
    }
    uint32_t top = ep->formations;
    for (int i = 0; i < ep->opt.size; i++)
        if (i != ep->opt.rank && ep->peers[i].formations > top)
            top = ep->peers[i].formations;
    pthread_mutex_lock(&ep->mu);
    ep->epoch = top + 1;
    ep->formations = ep->epoch;
    ep->step = 0;
    ep->ready = 1;
    ep->why[0] = 0;
    pthread_mutex_unlock(&ep->mu);
    ep_log(ep, ENG_LOG_INFO, "group complete (epoch %u): %d experts here, exchange over %s", ep->epoch, ep->n_held,
           ep->rdma ? "rdma" : "tcp");
    notify(ep);
}

/* Payload bytes that follow a header on the TCP connection. */
static uint64_t wire_len(const ep_hdr *h)
{
    return h->xfer ? 0 : h->len;
}

/* A credit from peer i: it may write one more payload to it by RDMA. */
static int take_credit(wrk_ep *ep, int i, const ep_hdr *h, char *why, size_t cap)
{
    ep_peer *p = &ep->peers[i];
    pthread_mutex_lock(&ep->mu);
    int ok = ep->rdma && p->n_credits < EP_RDMA_SLOTS && h->slot < EP_RDMA_SLOTS && h->xfer;
    if (ok) {
        p->credit_id[p->n_credits] = h->xfer;
        p->credit_slot[p->n_credits++] = h->slot;
        pthread_cond_broadcast(&ep->cv);
    }
    pthread_mutex_unlock(&ep->mu);
    if (!ok)
        snprintf(why, cap, "rank %d sent a credit it could not give", i);
    return ok ? 0 : -1;
}

/* Reads what is there from peer i into its queue; -1 with why on EOF or a bad frame. */
static int read_peer(wrk_ep *ep, int i, char *why, size_t cap)
{
    ep_peer *p = &ep->peers[i];
    for (;;) {
        ssize_t r;
        if (p->rgot < sizeof p->rh) {
            r = recv(p->fd, (char *)&p->rh + p->rgot, sizeof p->rh - p->rgot, MSG_DONTWAIT);
        } else {
            size_t off = p->rgot - sizeof p->rh;
            r = recv(p->fd, p->rdata + off, wire_len(&p->rh) - off, MSG_DONTWAIT);
        }
        if (r == 0) {
            snprintf(why, cap, "rank %d closed the connection", i);
            return -1;
        }
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return 0;
            snprintf(why, cap, "rank %d: recv: %s", i, strerror(errno));
            return -1;
        }
        p->rgot += (size_t)r;
        if (p->rgot == sizeof p->rh) {
            if (p->rh.magic != EP_MAGIC || p->rh.len > EP_MAX_MSG) {
                snprintf(why, cap, "rank %d sent a bad frame", i);
                return -1;
            }
            if (!(p->rdata = malloc(wire_len(&p->rh) ? wire_len(&p->rh) : 1))) {
                snprintf(why, cap, "out of memory for a message of %llu bytes", (unsigned long long)p->rh.len);
                return -1;
            }
        }
        if (p->rgot < sizeof p->rh || p->rgot - sizeof p->rh < wire_len(&p->rh))
            continue;
        if (p->rh.kind == EP_CREDIT) {
            free(p->rdata);
            p->rdata = NULL;
            p->rgot = 0;
            if (take_credit(ep, i, &p->rh, why, cap) < 0)
                return -1;
            continue;
        }
        ep_msg *m = malloc(sizeof *m);
        if (!m) {
            snprintf(why, cap, "out of memory");
            return -1;
        }
        *m = (ep_msg){.h = p->rh, .data = p->rdata};
        p->rdata = NULL;
        p->rgot = 0;
        pthread_mutex_lock(&ep->mu);
        if (p->tail)
            p->tail->next = m;
        else
            p->head = m;
        p->tail = m;
        met_inc(ep->met.bytes_received, (double)(sizeof m->h + wire_len(&m->h)));
        if (m->h.xfer)
            met_inc(ep->met.bytes_received_rdma, (double)m->h.len);
        pthread_cond_broadcast(&ep->cv);
        pthread_mutex_unlock(&ep->mu);
        notify(ep);
    }
}

static void drain_wake(wrk_ep *ep)
{
    char buf[64];
    while (read(ep->wake[0], buf, sizeof buf) > 0) {
    }
}

static void *mesh_main(void *arg)
{
    wrk_ep *ep = arg;
    int n = ep->opt.size, me = ep->opt.rank;
    double next_dial = 0;
    for (;;) {
        pthread_mutex_lock(&ep->mu);
        int stop = ep->stop, ready = ep->ready, broken = ep->broken;
        pthread_mutex_unlock(&ep->mu);
        if (stop)
            break;
        if (broken) {
            reset(ep);
            notify(ep);
            continue;
        }
        int connected = 1;
        for (int i = 0; i < n; i++)
            connected &= i == me || ep->peers[i].fd >= 0;
        if (!ready && connected) {
            form_complete(ep);
            continue;
        }
        /* forming: dial the lower ranks now and then */
        if (!ready && now_s() >= next_dial) {
            for (int i = 0; i < me; i++)
                if (ep->peers[i].fd < 0)
                    ep->peers[i].fd = dial(ep, i);
            next_dial = now_s() + 0.2;
            continue;
        }
        struct pollfd pf[WRK_EP_MAX_SIZE + 2];
        int who[WRK_EP_MAX_SIZE + 2], np = 0;
        pf[np] = (struct pollfd){.fd = ep->wake[0], .events = POLLIN};
        who[np++] = -2;
        pf[np] = (struct pollfd){.fd = ep->listen_fd, .events = POLLIN};
        who[np++] = -1;
        for (int i = 0; i < n; i++)
            if (ep->peers[i].fd >= 0) {
                pf[np] = (struct pollfd){.fd = ep->peers[i].fd, .events = POLLIN};
                who[np++] = i;
            }
        if (poll(pf, (nfds_t)np, ready ? 1000 : 200) <= 0)
            continue;
        char why[300] = "";
        for (int k = 0; k < np && !why[0]; k++) {
            if (!pf[k].revents)
                continue;
            if (who[k] == -2) {
                drain_wake(ep);
            } else if (who[k] == -1) {
                int fd = accept4(ep->listen_fd, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0)
                    continue;
                char hwhy[200];
                int r = handshake(ep, fd, hwhy, sizeof hwhy);
                if (r < 0 || r < me) {
                    const char *reason = r < 0 ? hwhy : "a lower rank must be dialled, not accept";
                    if (strcmp(reason, ep->refused))
                        ep_log(ep, ENG_LOG_WARN, "refused a connection: %s", reason);
                    snprintf(ep->refused, sizeof ep->refused, "%s", reason);
                    close(fd);
                } else if (ready || ep->peers[r].fd >= 0) {
                    /* a rank we hold a connection to came again: it restarted */
                    close(fd);
                    snprintf(why, sizeof why, "rank %d connected again (restarted)", r);
                } else {
                    tune(fd);
                    ep->peers[r].fd = fd;
                }
            } else if (!ready) {
                /* forming: a rank that is already complete may start a step; one that
                 * went away is dialled or accepted again */
                char rwhy[300];
                if (read_peer(ep, who[k], rwhy, sizeof rwhy) < 0) {
                    pthread_mutex_lock(&ep->mu);
                    close(ep->peers[who[k]].fd);
                    ep->peers[who[k]].fd = -1;
                    free_queue(&ep->peers[who[k]]);
                    pthread_mutex_unlock(&ep->mu);
                }
            } else if (read_peer(ep, who[k], why, sizeof why) < 0 && !why[0]) {
                snprintf(why, sizeof why, "rank %d: read failed", who[k]);
            }
        }
        if (why[0]) {
            pthread_mutex_lock(&ep->mu);
            break_locked(ep, why);
            pthread_mutex_unlock(&ep->mu);
            notify(ep);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ start / stop */

/* "host:port,host:port,...": exactly size addresses, rank i's the i-th. */
static int parse_peers(wrk_ep *ep, const char *list, eng_error *err)
{
    const char *p = list;
    for (int i = 0; i < ep->opt.size; i++) {
        size_t len = strcspn(p, ",");
        char item[ENG_HOST_MAX + 16];
        if (len >= sizeof item)
            return eng_fail(err, "--ep-peers: address %d is too long", i);
        memcpy(item, p, len);
        item[len] = 0;
        if (eng_addr_split(item, ep->peers[i].host, &ep->peers[i].port, err) < 0)
            return -1;
        if (!p[len] && i != ep->opt.size - 1)
            return eng_fail(err, "--ep-peers lists %d addresses; --ep-size is %d", i + 1, ep->opt.size);
        p += len + (p[len] == ',');
    }
    if (*p)
        return eng_fail(err, "--ep-peers lists more addresses than --ep-size %d", ep->opt.size);
    return 0;
}

/* A listening socket handed over by our parent (tandem serve binds every rank's exchange
 * port itself, so that no other process can take it between choosing and binding). */
static int adopt_listener(wrk_ep *ep, int fd, eng_error *err)
{
    ep_peer *me = &ep->peers[ep->opt.rank];
    int listening = 0;
    socklen_t len = sizeof listening;
    struct sockaddr_storage sa;
    socklen_t salen = sizeof sa;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening ||
        getsockname(fd, (struct sockaddr *)&sa, &salen) < 0)
        return eng_fail(err, "--ep-listen-fd %d is not a listening socket", fd);
    int port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                              : ((struct sockaddr_in *)&sa)->sin_port);
    if (port != me->port)
        return eng_fail(err, "--ep-listen-fd %d listens on port %d, but --ep-peers gives rank %d port %d", fd, port,
                        ep->opt.rank, me->port);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    ep->listen_fd = fd;
    return 0;
}

static int open_listener(wrk_ep *ep, eng_error *err)
{
    if (ep->opt.listen_fd > 2)
        return adopt_listener(ep, ep->opt.listen_fd, err);
    ep_peer *me = &ep->peers[ep->opt.rank];
    struct addrinfo *ai = NULL;
    if (eng_addr_resolve(me->host, me->port, 1, &ai, err) < 0)
        return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        int e = errno;
        freeaddrinfo(ai);
        if (fd >= 0)
            close(fd);
        return eng_fail(err, "EP exchange: cannot listen on %s port %d: %s", me->host, me->port, strerror(e));
    }
    freeaddrinfo(ai);
    ep->listen_fd = fd;
    return 0;
}

int wrk_ep_start(const wrk_ep_options *opt, wrk_ep **out, eng_error *err)
{
    *out = NULL;
    if (opt->size < 2 || opt->size > WRK_EP_MAX_SIZE)
        return eng_fail(err, "--ep-size must be in [2, %d]", WRK_EP_MAX_SIZE);
    if (opt->rank < 0 || opt->rank >= opt->size)
        return eng_fail(err, "--ep-rank must be in [0, %d)", opt->size);
    if (opt->n_experts < opt->size)
        return eng_fail(err, "--ep-size %d is larger than the model's %d experts", opt->size, opt->n_experts);
    if (!opt->peers || !*opt->peers)
        return eng_fail(err, "an EP group needs --ep-peers (every rank's exchange address)");
    if (!opt->group || !*opt->group || strlen(opt->group) >= 128)
        return eng_fail(err, "an EP group needs a --group name (under 128 bytes)");
    wrk_ep *ep = calloc(1, sizeof *ep);
    if (!ep)
        return eng_fail(err, "out of memory");
    ep->opt = *opt;
    if (!ep->opt.deadline_ms)
        ep->opt.deadline_ms = 10000;
    snprintf(ep->group, sizeof ep->group, "%s", opt->group);
    ep->opt.group = ep->group;
    ep->opt.peers = NULL;
    ep->group_hash = 1469598103934665603ull;
    for (const char *c = ep->group; *c; c++)
        ep->group_hash = (ep->group_hash ^ (unsigned char)*c) * 1099511628211ull;
    size_t E = (size_t)opt->n_experts, N = (size_t)opt->size;
    ep->held = malloc(E);
    ep->holders = malloc(E * N * sizeof *ep->holders);
    ep->n_holders = calloc(E, sizeof *ep->n_holders);
    ep->sent_rows = calloc(N, sizeof *ep->sent_rows);
    wrk_ep_placement ranges = {0};
    const wrk_ep_placement *pl = opt->placement;
    if (!pl && wrk_ep_placement_load(NULL, opt->n_experts, opt->size, &ranges, err) == 0)
        pl = &ranges;
    int ok = pl && ep->held && ep->holders && ep->n_holders && ep->sent_rows;
    if (ok && (pl->n_experts != opt->n_experts || pl->size != opt->size)) {
        eng_fail(err, "the expert placement is for %d experts and %d ranks, not %d and %d", pl->n_experts, pl->size,
                 opt->n_experts, opt->size);
        ok = 0;
    } else if (!ok && pl) {
        eng_fail(err, "out of memory");
    }
    for (size_t e = 0; ok && e < E; e++) {
        ep->held[e] = pl->held[(size_t)opt->rank * E + e];
        ep->n_held += ep->held[e];
        for (size_t r = 0; r < N; r++)
            if (pl->held[r * E + e])
                ep->holders[e * N + (size_t)ep->n_holders[e]++] = (int)r;
    }
    wrk_ep_placement_free(&ranges);
    ep->opt.placement = NULL;
    if (!ok) {
        free(ep->held);
        free(ep->holders);
        free(ep->n_holders);
        free(ep->sent_rows);
        free(ep);
        return -1;
    }
    ep->listen_fd = ep->wake[0] = ep->wake[1] = -1;
    for (int i = 0; i < WRK_EP_MAX_SIZE; i++)
        ep->peers[i].fd = -1;
    pthread_mutex_init(&ep->mu, NULL);
    pthread_cond_init(&ep->cv, NULL);
    snprintf(ep->why, sizeof ep->why, "the group is forming");
    if (parse_peers(ep, opt->peers, err) < 0 || (opt->secret_file && load_secret(ep, opt->secret_file, err) < 0) ||
        open_listener(ep, err) < 0)
        goto fail;
    ep_rdma_options ro = {.which = opt->transport,
                          .device = opt->rdma_device,
                          .size = opt->size,
                          .rank = opt->rank,
                          .timeout_ms = ep->opt.deadline_ms};
    if (ep_rdma_open(&ro, &ep->rdma, ep->transport, sizeof ep->transport, err) < 0)
        goto fail;
    ep->opt.transport = ep->opt.rdma_device = ep->opt.secret_file = NULL;
    if (pipe2(ep->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        eng_fail(err, "pipe: %s", strerror(errno));
        goto fail;
    }
    if (pthread_create(&ep->thread, NULL, mesh_main, ep) != 0) {
        eng_fail(err, "cannot start the EP mesh thread");
        goto fail;
    }
    ep->started = 1;
    *out = ep;
    return 0;
fail:
    wrk_ep_stop(ep);
    return -1;
}

void wrk_ep_leave(wrk_ep *ep)
{
    pthread_mutex_lock(&ep->mu);
    ep->stop = 1;
    break_locked(ep, "this rank is stopping");
    pthread_mutex_unlock(&ep->mu);
}

void wrk_ep_stop(wrk_ep *ep)
{
    if (!ep)
        return;
    if (ep->started) {
        wrk_ep_leave(ep);
        pthread_join(ep->thread, NULL);
    }
    for (int i = 0; i < WRK_EP_MAX_SIZE; i++) {
        if (ep->peers[i].fd >= 0)
            close(ep->peers[i].fd);
        free_queue(&ep->peers[i]);
    }
    if (ep->listen_fd >= 0)
        close(ep->listen_fd);
    if (ep->wake[0] >= 0) {
        close(ep->wake[0]);
        close(ep->wake[1]);
    }
    ep_rdma_close(ep->rdma);
    pthread_mutex_destroy(&ep->mu);
    pthread_cond_destroy(&ep->cv);
    OPENSSL_cleanse(ep->secret, sizeof ep->secret);
    free(ep->held);
    free(ep->holders);
    free(ep->n_holders);
    free(ep->sent_rows);
    free(ep);
}

/* ------------------------------------------------------------------ queries */

const char *wrk_ep_transport(const wrk_ep *ep)
{
    return ep->transport;
}

int wrk_ep_ready(wrk_ep *ep, char *why, size_t cap)
{
    pthread_mutex_lock(&ep->mu);
    int r = ep->ready;
    if (!r && why)
        snprintf(why, cap, "%s", ep->why);
    pthread_mutex_unlock(&ep->mu);
    return r;
}

int wrk_ep_pending(wrk_ep *ep)
{
    pthread_mutex_lock(&ep->mu);
    int any = 0;
    for (int i = 0; ep->ready && i < ep->opt.size && !any; i++)
        any = ep->peers[i].head != NULL;
    pthread_mutex_unlock(&ep->mu);
    return any;
}

int wrk_ep_holds(const wrk_ep *ep, int expert)
{
    return expert >= 0 && expert < ep->opt.n_experts && ep->held[expert];
}

int wrk_ep_experts_held(const wrk_ep *ep)
{
    return ep->n_held;
}

int wrk_ep_pick(const wrk_ep *ep, int expert, int token)
{
    if (ep->held[expert])
        return ep->opt.rank;
    int n = ep->n_holders[expert];
    return ep->holders[(size_t)expert * (size_t)ep->opt.size + (size_t)(token % n)];
}
int wrk_ep_rank(const wrk_ep *ep)
{
    return ep->opt.rank;
}
int wrk_ep_size(const wrk_ep *ep)
{
    return ep->opt.size;
}

uint32_t wrk_ep_epoch(wrk_ep *ep)
{
    pthread_mutex_lock(&ep->mu);
    uint32_t e = ep->ready ? ep->epoch : 0;
    pthread_mutex_unlock(&ep->mu);
    return e;
}

void wrk_ep_set_metrics(wrk_ep *ep, const wrk_ep_metrics *m)
{
    pthread_mutex_lock(&ep->mu);
    ep->met = *m;
    pthread_mutex_unlock(&ep->mu);
}

void wrk_ep_count_dispatch(wrk_ep *ep, int layer, const uint32_t *rows_per_rank)
{
    char layer_s[16], rank_s[16];
    snprintf(layer_s, sizeof layer_s, "%d", layer);
    uint64_t most = 0, sum = 0;
    for (int r = 0; r < ep->opt.size; r++) {
        if (rows_per_rank[r] && ep->met.dispatched) {
            snprintf(rank_s, sizeof rank_s, "%d", r);
            met_labels l = {.role = ep->met.role, .worker = ep->met.worker, .layer = layer_s, .rank = rank_s};
            met_inc(met_get(ep->met.dispatched, l), rows_per_rank[r]);
        }
        ep->sent_rows[r] += rows_per_rank[r];
        sum += ep->sent_rows[r];
        most = ep->sent_rows[r] > most ? ep->sent_rows[r] : most;
    }
    if (most)
        met_set(ep->met.balance, (double)sum / ep->opt.size / (double)most);
}

void wrk_ep_observe_exchange(wrk_ep *ep, double seconds)
{
    met_observe(ep->met.exchange_seconds, seconds);
}

/* ------------------------------------------------------------------ the engine's side */

static int broken_error(wrk_ep *ep, eng_error *err)
{
    return eng_fail(err, "EP group %s is not complete: %s", ep->group, ep->why);
}

int wrk_ep_step_begin(wrk_ep *ep, eng_error *err)
{
    pthread_mutex_lock(&ep->mu);
    int ok = ep->ready;
    ep->step_epoch = ep->epoch;
    if (!ok)
        broken_error(ep, err);
    pthread_mutex_unlock(&ep->mu);
    return ok ? 0 : -1;
}

void wrk_ep_step_end(wrk_ep *ep)
{
    pthread_mutex_lock(&ep->mu);
    if (ep->ready && ep->epoch == ep->step_epoch)
        ep->step++;
    pthread_mutex_unlock(&ep->mu);
}

/* Under mu: is the step's group still the one we started with? */
static int same_group_locked(wrk_ep *ep)
{
    return ep->ready && ep->epoch == ep->step_epoch;
}

/* Under mu: waits (up to deadline) for a credit from peer and takes it; 0, or -1 once
 * the group is no longer the step's or the deadline passed. */
static int take_credit_locked(wrk_ep *ep, ep_peer *p, const struct timespec *deadline, uint64_t *id, uint32_t *slot)
{
    int timed_out = 0;
    while (same_group_locked(ep) && !p->n_credits && !timed_out)
        timed_out = pthread_cond_timedwait(&ep->cv, &ep->mu, deadline) == ETIMEDOUT;
    if (!same_group_locked(ep) || !p->n_credits)
        return -1;
    *id = p->credit_id[0];
    *slot = p->credit_slot[0];
    p->n_credits--;
    memmove(p->credit_id, p->credit_id + 1, (size_t)p->n_credits * sizeof *p->credit_id);
    memmove(p->credit_slot, p->credit_slot + 1, (size_t)p->n_credits * sizeof *p->credit_slot);
    return 0;
}

static struct timespec deadline_ts(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long ns = ts.tv_nsec + (long)(ms % 1000) * 1000000L;
    ts.tv_sec += ms / 1000 + ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    return ts;
}

int wrk_ep_send(wrk_ep *ep, int peer, int kind, int layer, const void *const *parts, const size_t *lens, int n_parts,
                eng_error *err)
{
    struct iovec iov[8];
    if (n_parts > 7)
        return eng_fail(err, "EP message in too many parts");
    ep_hdr h = {.magic = EP_MAGIC, .kind = (uint32_t)kind, .layer = (uint32_t)layer};
    iov[0] = (struct iovec){&h, sizeof h};
    for (int i = 0; i < n_parts; i++) {
        iov[i + 1] = (struct iovec){(void *)parts[i], lens[i]};
        h.len += lens[i];
    }
    /* by RDMA when there is a payload that fits a slot: needs the peer's credit */
    int by_rdma = ep->rdma && h.len && h.len <= ep_rdma_slot_bytes(ep->rdma);
    struct timespec deadline = deadline_ts(ep->opt.deadline_ms);
    char why[300] = "";
    pthread_mutex_lock(&ep->mu);
    if (!same_group_locked(ep)) {
        broken_error(ep, err);
        pthread_mutex_unlock(&ep->mu);
        return -1;
    }
    h.epoch = ep->epoch;
    h.step = ep->step;
    int fd = ep->peers[peer].fd, rc = 0;
    if (by_rdma && take_credit_locked(ep, &ep->peers[peer], &deadline, &h.xfer, &h.slot) < 0) {
        if (same_group_locked(ep))
            snprintf(why, sizeof why, "no RDMA credit within the deadline");
        rc = -1;
    }
    ep->users++;
    pthread_mutex_unlock(&ep->mu);
    if (rc == 0 && by_rdma) {
        eng_error e;
        rc = ep_rdma_write(ep->rdma, peer, h.xfer, (int)h.slot, parts, lens, n_parts, ep->opt.deadline_ms, &e);
        if (rc < 0)
            snprintf(why, sizeof why, "RDMA: %.240s", e.msg);
    }
    if (rc == 0)
        rc = write_all(fd, iov, by_rdma ? 1 : n_parts + 1, now_s() + ep->opt.deadline_ms / 1000.0, why, sizeof why);
    pthread_mutex_lock(&ep->mu);
    ep->users--;
    if (rc == 0) {
        met_inc(ep->met.bytes_sent, (double)(sizeof h + wire_len(&h)));
        if (by_rdma)
            met_inc(ep->met.bytes_sent_rdma, (double)h.len);
    } else if (!why[0]) {
        broken_error(ep, err); /* the group broke while we waited for a credit */
    } else {
        char msg[400];
        snprintf(msg, sizeof msg, "to rank %d, layer %d of step %llu: %s", peer, layer, (unsigned long long)h.step,
                 why);
        break_locked(ep, msg);
        broken_error(ep, err);
    }
    pthread_cond_broadcast(&ep->cv);
    pthread_mutex_unlock(&ep->mu);
    return rc;
}

/* The payload of m, which came by RDMA: copied out of its slot, whose new credit goes
 * back to peer. Called with ep->users held. */
static int rdma_take(wrk_ep *ep, int peer, ep_msg *m, char *why, size_t cap)
{
    eng_error e;
    int slot;
    ep_hdr credit = {.magic = EP_MAGIC, .kind = EP_CREDIT, .epoch = m->h.epoch, .step = m->h.step};
    if (ep_rdma_read(ep->rdma, peer, m->h.xfer, m->h.len, ep->opt.deadline_ms, (void **)&m->data, &slot, &e) < 0 ||
        ep_rdma_issue(ep->rdma, peer, slot, &credit.xfer, &e) < 0) {
        snprintf(why, cap, "rank %d, RDMA: %.240s", peer, e.msg);
        return -1;
    }
    credit.slot = (uint32_t)slot;
    struct iovec iov = {&credit, sizeof credit};
    return write_all(ep->peers[peer].fd, &iov, 1, now_s() + ep->opt.deadline_ms / 1000.0, why, cap);
}

int wrk_ep_recv(wrk_ep *ep, int peer, int kind, int layer, void **data, size_t *len, eng_error *err)
{
    *data = NULL;
    *len = 0;
    struct timespec ts = deadline_ts(ep->opt.deadline_ms);
    pthread_mutex_lock(&ep->mu);
    ep_peer *p = &ep->peers[peer];
    int timed_out = 0;
    while (same_group_locked(ep) && !p->head && !timed_out)
        timed_out = pthread_cond_timedwait(&ep->cv, &ep->mu, &ts) == ETIMEDOUT;
    int rc = -1;
    if (!same_group_locked(ep)) {
        broken_error(ep, err);
    } else if (!p->head) {
        char msg[300];
        snprintf(msg, sizeof msg, "rank %d sent nothing for layer %d of step %llu within the %d ms deadline", peer,
                 layer, (unsigned long long)ep->step, ep->opt.deadline_ms);
        break_locked(ep, msg);
        broken_error(ep, err);
    } else {
        ep_msg *m = p->head;
        if (m->h.kind != (uint32_t)kind || m->h.epoch != ep->epoch || m->h.step != ep->step ||
            m->h.layer != (uint32_t)layer) {
            char msg[300];
            snprintf(msg, sizeof msg,
                     "rank %d sent kind %u epoch %u step %llu layer %u; expected kind %d epoch %u step %llu layer %d",
                     peer, m->h.kind, m->h.epoch, (unsigned long long)m->h.step, m->h.layer, kind, ep->epoch,
                     (unsigned long long)ep->step, layer);
            break_locked(ep, msg);
            broken_error(ep, err);
        } else {
            p->head = m->next;
            if (!p->head)
                p->tail = NULL;
            rc = 0;
            if (m->h.xfer) {
                char why[300] = "";
                ep->users++;
                pthread_mutex_unlock(&ep->mu);
                rc = rdma_take(ep, peer, m, why, sizeof why);
                pthread_mutex_lock(&ep->mu);
                ep->users--;
                pthread_cond_broadcast(&ep->cv);
                if (rc < 0) {
                    break_locked(ep, why);
                    broken_error(ep, err);
                }
            }
            *data = rc == 0 ? m->data : NULL;
            *len = rc == 0 ? m->h.len : 0;
            if (rc < 0)
                free(m->data);
            free(m);
        }
    }
    pthread_mutex_unlock(&ep->mu);
    return rc;
}

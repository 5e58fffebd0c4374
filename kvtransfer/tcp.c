/* tcp.c: the TCP transport.
 *
 * Receiving: a listener thread accepts connections; each incoming connection gets a reader
 * thread that parses frames from a staging buffer (many small frames per recv) and recv()s
 * the bulk of a large run straight into the registered region at its destination offset.
 * A payload chunk is written only while its transfer is
 * expected, bound to this connection and still pending, and the reader marks the transfer
 * "writing" around each recv() so that kvt_forget() can wait for the chunk in progress:
 * once kvt_forget() returns, late data for that id is dropped, never written into
 * blocks that the decode side may already have reused.
 *
 * Sending: one connection per receiver endpoint, cached in the transport. kvt_send_write()
 * only queues the run; the connection's sender thread hashes (XXH3-64, in queue order) and
 * sends queued frames in batches (one sendmsg each), so the prefill forward pass keeps
 * computing while earlier layers travel. A
 * second thread per connection reads the receiver's verdicts. A connection that fails
 * (reset, EOF, a send that makes no progress for io_timeout_ms) fails every transfer in
 * flight on it, on both ends; the next kvt_connect() builds a fresh one.
 *
 * Wire format, all little-endian: a 40-byte frame header {magic u32, type u32, id u64, three
 * u64 words whose meaning the type decides}, then for WRITE the payload and for
 * ABORT/VERDICT a reason text. The words, as struct frame names them:
 *   HELLO   sender->receiver  instance (the receiver the descriptor named), version
 *   BEGIN   sender->receiver  id, region_id, secret (16 bytes: kvt_expect_guarded's, or zeros)
 *   WRITE   sender->receiver  id, dst_off, len; the payload
 *   FINISH  sender->receiver  id, bytes, checksum (XXH3-64 of all payload bytes in order)
 *   ABORT   sender->receiver  id, reason_len; the reason
 *   VERDICT receiver->sender  id (0: the whole connection), ok (1 ok, 0 failed), reason_len;
 *           the reason
 * The bookkeeping of incoming transfers (expect, verdict, wait, forget, counters) is
 * transfers.c's; this file moves the bytes. The transport's one state mutex (t->base.mu)
 * guards every table and is never held across a blocking send or recv. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "common/addr.h"
#include "transport.h"

#define FRAME_MAGIC 0x3154564bu /* "KVT1" */
#define FRAME_BYTES 40
#define PROTO_VERSION 1
#define MAX_REASON 1024
#define RECV_CHUNK (4u << 20)    /* one recv() into the region, between accept-state checks */
#define STAGE_BYTES (256u << 10) /* per incoming connection */

enum { F_HELLO = 1, F_BEGIN, F_WRITE, F_FINISH, F_ABORT, F_VERDICT };

typedef struct frame {
    uint32_t magic, type;
    uint64_t id;
    union { /* the three words after id, named by frame type */
        uint64_t word[3];
        struct {
            uint64_t instance, version;
        } hello;
        struct {
            uint64_t region_id;
            unsigned char secret[KVT_SECRET_BYTES]; /* the two last words, as bytes */
        } begin;
        struct {
            uint64_t dst_off, len;
        } write;
        struct {
            uint64_t bytes, checksum;
        } finish;
        struct {
            uint64_t reason_len;
        } abort;
        struct {
            uint64_t ok, reason_len;
        } verdict;
    };
} frame;

typedef struct tcp_transport tcp_transport;

/* ---- receiving side */

typedef struct in_conn {
    tcp_transport *t;
    int fd;
    char addr[64]; /* the sender's numeric address, for kvt_expect_guarded's peer check */
    int greeted;   /* its hello is in: from now on it may idle between transfers */
    pthread_t thread;
    int done; /* thread finished; the listener or kvt_destroy joins it */
    struct in_conn *next;
} in_conn;

/* An incoming transfer; base.conn is the in_conn that began it. */
typedef struct tcp_rx {
    kvt_rx base;
    int writing;        /* the reader is copying into the region right now */
    XXH3_state_t *hash; /* of the payload as it arrives; made by BEGIN */
} tcp_rx;

/* ---- sending side */

typedef struct tx_transfer tx_transfer;

typedef struct tx_item {
    int type;       /* F_BEGIN, F_WRITE, F_FINISH, F_ABORT */
    tx_transfer *s; /* NULL for ABORT (its transfer is already gone) */
    uint64_t id, region_id, dst_off, len;
    kvt_secret secret; /* BEGIN */
    const char *src;
    char *reason; /* ABORT: owned */
    int corrupt;
} tx_item;

typedef struct tcp_peer {
    kvt_peer base;
    tcp_transport *t;
    char host[128];
    int port;
    uint64_t instance, region_id, region_size;
    pthread_mutex_t connect_mu; /* one (re)connect at a time */
    int fd;
    int alive;
    int has_threads;
    uint64_t epoch;   /* bumped per connection, so transfers never cross connections */
    double last_used; /* kvt_connect or a send_begin on it last */
    pthread_t sender, reader;
    pthread_cond_t q_cv;
    tx_item *q;
    size_t q_head, q_len, q_cap; /* items q[q_head .. q_head+q_len) */
    tx_transfer *txs;
    char dead_reason[200];
} tcp_peer;

struct tx_transfer {
    kvt_send base;
    tcp_peer *peer;
    kvt_region *src;
    uint64_t id, epoch;
    kvt_state state;
    XXH3_state_t *hash; /* sender thread only */
    uint64_t bytes;     /* sender thread only */
    int in_flight;      /* its frames in the batch being sent */
    char reason[384];   /* fits "connection to the receiver HOST:PORT lost: DEAD_REASON" */
    tx_transfer *next;
};

struct tcp_transport {
    kvt_transport base; /* base.cv also: a writer finished a chunk, a batch went out */
    int io_timeout_ms;
    int max_conns;
    int peer_idle_ms;
    char host[128];
    int port;
    uint64_t instance;
    int listen_fd;
    pthread_t listener;
    int stopping;
    in_conn *conns;
};

static const kvt_ops tcp_ops;

/* ---------------------------------------------------------------- helpers */

static void encode_frame(unsigned char *out, const frame *f)
{
    uint32_t u32[2] = {htole32(f->magic), htole32(f->type)};
    uint64_t u64[4] = {htole64(f->id), htole64(f->word[0]), htole64(f->word[1]), htole64(f->word[2])};
    memcpy(out, u32, 8);
    memcpy(out + 8, u64, 32);
}

static void decode_frame(const unsigned char *in, frame *f)
{
    uint32_t u32[2];
    uint64_t u64[4];
    memcpy(u32, in, 8);
    memcpy(u64, in + 8, 32);
    f->magic = le32toh(u32[0]);
    f->type = le32toh(u32[1]);
    f->id = le64toh(u64[0]);
    for (int i = 0; i < 3; i++)
        f->word[i] = le64toh(u64[i + 1]);
}

/* Sends every byte of iov (blocking socket; SO_SNDTIMEO bounds a stalled peer). */
static int send_all(int fd, struct iovec *iov, int n, char *why, size_t why_len)
{
    while (n > 0) {
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = n};
        ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                snprintf(why, why_len, "send made no progress within the io timeout");
            else
                snprintf(why, why_len, "send failed: %s", strerror(errno));
            return -1;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= w;
        }
    }
    return 0;
}

/* Reads exactly len bytes; -1 with a reason on EOF or error. */
static int recv_all(int fd, void *buf, size_t len, char *why, size_t why_len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t r = recv(fd, p, len, 0);
        if (r == 0) {
            snprintf(why, why_len, "peer closed the connection");
            return -1;
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            snprintf(why, why_len, "recv failed: %s", strerror(errno));
            return -1;
        }
        p += r;
        len -= r;
    }
    return 0;
}

static int send_frame(int fd, const frame *f, const char *text, size_t text_len, char *why, size_t why_len)
{
    unsigned char hdr[FRAME_BYTES];
    encode_frame(hdr, f);
    struct iovec iov[2] = {{hdr, FRAME_BYTES}, {(void *)text, text_len}};
    return send_all(fd, iov, text_len ? 2 : 1, why, why_len);
}

static void tune_socket(int fd, int io_timeout_ms)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    int idle = 10, intvl = 5, cnt = 3; /* a vanished host shows up within ~25 s */
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    struct timeval tv = {io_timeout_ms / 1000, (io_timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* ---------------------------------------------------------------- receiving */

static tcp_rx *find_rx(tcp_transport *t, uint64_t id)
{
    return (tcp_rx *)kvt_rx_find(&t->base, id);
}

static int send_verdict(in_conn *c, uint64_t id, int ok, const char *reason)
{
    char why[128];
    size_t n = reason ? strlen(reason) : 0;
    frame f = {.magic = FRAME_MAGIC, .type = F_VERDICT, .id = id, .verdict = {.ok = (uint64_t)ok, .reason_len = n}};
    return send_frame(c->fd, &f, reason, n, why, sizeof why);
}

/* An incoming connection's staging buffer: frame headers and small runs are read in bulk
 * (one recv for many frames) and the bulk of a large run goes straight into the region.
 * Unread bytes are buf[pos, pos + len). */
typedef struct rxbuf {
    char *buf;
    size_t pos, len;
} rxbuf;

/* 1 when a transfer begun on c is streaming: some of its bytes came and it has not
 * ended, so its sender owes more frames soon. A transfer begun but still without bytes
 * does not count: a prefill worker begins the transfer when the prompt is queued and
 * sends nothing until its prefill starts, which may take many io timeouts on a busy
 * worker (the decode worker's lease, renewed by the prefill worker, bounds that wait). */
static int conn_busy(tcp_transport *t, const in_conn *c)
{
    int busy = 0;
    pthread_mutex_lock(&t->base.mu);
    for (kvt_rx *x = t->base.rxs; x && !busy; x = x->next)
        busy = x->conn == c && x->state == KVT_PENDING && x->bytes > 0;
    pthread_mutex_unlock(&t->base.mu);
    return busy;
}

/* Waits until c has bytes to read. A cached connection may idle between transfers (and
 * before a begun transfer's first bytes) as long as it likes (senders reuse it);
 * anywhere else (before the hello, inside a frame, or while a transfer on it streams)
 * io_timeout_ms without a byte ends it, so a stalled peer does not hold its reader thread. */
static int wait_readable(in_conn *c, int may_idle, char *why, size_t why_len)
{
    tcp_transport *t = c->t;
    for (;;) {
        struct pollfd pfd = {c->fd, POLLIN, 0};
        int n = poll(&pfd, 1, t->io_timeout_ms);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR) {
            snprintf(why, why_len, "poll failed: %s", strerror(errno));
            return -1;
        }
        if (n == 0 && !(may_idle && !conn_busy(t, c))) {
            snprintf(why, why_len, "no data from the sender for %d ms %s", t->io_timeout_ms,
                     !c->greeted ? "(no hello)" : "mid-transfer");
            return -1;
        }
    }
}

/* Receives at least one more byte into the staging buffer (which must not be full). */
static int rd_more(in_conn *c, rxbuf *r, char *why, size_t why_len)
{
    if (r->pos > 0) {
        memmove(r->buf, r->buf + r->pos, r->len);
        r->pos = 0;
    }
    for (;;) {
        if (wait_readable(c, c->greeted && r->len == 0, why, why_len) < 0)
            return -1;
        ssize_t n = recv(c->fd, r->buf + r->len, STAGE_BYTES - r->len, 0);
        if (n > 0) {
            r->len += (size_t)n;
            return 0;
        }
        if (n == 0) {
            snprintf(why, why_len, "peer closed the connection");
            return -1;
        }
        if (errno != EINTR) {
            snprintf(why, why_len, "recv failed: %s", strerror(errno));
            return -1;
        }
    }
}

/* Takes exactly n (<= STAGE_BYTES) bytes from the connection. */
static int rd_exact(in_conn *c, rxbuf *r, void *dst, size_t n, char *why, size_t why_len)
{
    while (r->len < n)
        if (rd_more(c, r, why, why_len) < 0)
            return -1;
    memcpy(dst, r->buf + r->pos, n);
    r->pos += n;
    r->len -= n;
    return 0;
}

/* Receives one WRITE's payload: into the region while the transfer accepts it, dropped
 * otherwise. Each piece is written with the transfer marked "writing", so kvt_forget()
 * can wait for it. Returns -1 only when the connection itself failed. */
static int rx_payload(tcp_transport *t, in_conn *c, rxbuf *rb, uint64_t id, uint64_t off, uint64_t len, char *why,
                      size_t why_len)
{
    while (len > 0) {
        /* Wait for data before marking the transfer "writing": a sender that stalls
         * mid-run must not make kvt_forget() wait with it. */
        if (rb->len == 0 && wait_readable(c, 0, why, why_len) < 0)
            return -1;
        pthread_mutex_lock(&t->base.mu);
        tcp_rx *x = find_rx(t, id);
        int accept = x && x->base.conn == c && x->base.state == KVT_PENDING;
        if (accept)
            x->writing = 1;
        pthread_mutex_unlock(&t->base.mu);

        size_t n = 0;
        int failed = 0;
        char *dst = accept ? x->base.region->base + off : NULL;
        if (rb->len > 0) { /* already staged */
            n = rb->len < len ? rb->len : (size_t)len;
            if (accept)
                memcpy(dst, rb->buf + rb->pos, n);
            rb->pos += n;
            rb->len -= n;
        } else if (accept) { /* straight into the region */
            size_t want = len < RECV_CHUNK ? (size_t)len : RECV_CHUNK;
            ssize_t r = recv(c->fd, dst, want, MSG_DONTWAIT);
            if (r > 0)
                n = (size_t)r;
            else if (r == 0)
                failed = snprintf(why, why_len, "peer closed the connection mid-run");
            else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                failed = snprintf(why, why_len, "recv failed: %s", strerror(errno));
        } else if (rd_more(c, rb, why, why_len) < 0) { /* to be dropped next round */
            return -1;
        }
        if (accept) {
            if (n > 0)
                XXH3_64bits_update(x->hash, dst, n);
            pthread_mutex_lock(&t->base.mu);
            x->writing = 0;
            x->base.bytes += n;
            pthread_cond_broadcast(&t->base.cv);
            pthread_mutex_unlock(&t->base.mu);
        }
        if (failed)
            return -1;
        off += n;
        len -= n;
    }
    return 0;
}

static void in_conn_serve(in_conn *c, char *why, size_t why_len)
{
    tcp_transport *t = c->t;
    unsigned char hdr[FRAME_BYTES];
    char text[MAX_REASON + 1];
    char verdict[300];
    rxbuf rb = {malloc(STAGE_BYTES), 0, 0};
    frame f;
    if (!rb.buf) {
        snprintf(why, why_len, "out of memory");
        return;
    }

    /* A peer that connects and says nothing would hold this thread forever: the hello
     * must come within io_timeout_ms (wait_readable). */
    if (rd_exact(c, &rb, hdr, FRAME_BYTES, why, why_len) < 0)
        goto out;
    decode_frame(hdr, &f);
    if (f.magic != FRAME_MAGIC || f.type != F_HELLO || f.hello.version != PROTO_VERSION) {
        snprintf(why, why_len, "not a kvtransfer peer (bad hello)");
        goto out;
    }
    if (f.hello.instance != t->instance) {
        snprintf(why, why_len, "stale descriptor: it names instance %016" PRIx64 ", this receiver is %016" PRIx64,
                 f.hello.instance, t->instance);
        /* Say why, then let the sender hang up first, so that it reads the reason
         * instead of tripping over a reset connection. */
        if (send_verdict(c, 0, 0, why) == 0) {
            shutdown(c->fd, SHUT_WR);
            struct timeval tv = {2, 0};
            setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            while (recv(c->fd, rb.buf, STAGE_BYTES, 0) > 0)
                ;
        }
        goto out;
    }
    c->greeted = 1;

    uint64_t last_nack = 0;
    for (;;) {
        if (rd_exact(c, &rb, hdr, FRAME_BYTES, why, why_len) < 0)
            goto out;
        decode_frame(hdr, &f);
        if (f.magic != FRAME_MAGIC) {
            snprintf(why, why_len, "protocol error: bad frame magic");
            goto out;
        }
        int nack = 0, ack = 0;
        verdict[0] = '\0';
        switch (f.type) {
        case F_BEGIN: {
            pthread_mutex_lock(&t->base.mu);
            kvt_secret secret;
            memcpy(secret.bytes, f.begin.secret, sizeof secret.bytes);
            int refused;
            tcp_rx *x = (tcp_rx *)kvt_rx_begin(&t->base, f.id, f.begin.region_id, c, c->addr, &secret, &refused,
                                               verdict, sizeof verdict);
            nack = !x;
            if (x && !(x->hash = XXH3_createState())) {
                snprintf(verdict, sizeof verdict, "out of memory");
                kvt_rx_end(&t->base, &x->base, KVT_FAILED, verdict);
                nack = 1;
            } else if (x) {
                XXH3_64bits_reset(x->hash);
            }
            pthread_mutex_unlock(&t->base.mu);
            if (refused) { /* whoever sent it may not write here at all: tell it and hang up */
                send_verdict(c, f.id, 0, verdict);
                snprintf(why, why_len, "%s", verdict);
                goto out;
            }
            break;
        }
        case F_WRITE: {
            uint64_t off = f.write.dst_off, len = f.write.len;
            pthread_mutex_lock(&t->base.mu);
            tcp_rx *x = find_rx(t, f.id);
            if (x && x->base.conn == c && x->base.state == KVT_PENDING) {
                if (kvt_rx_run_ok(&x->base, off, len, verdict, sizeof verdict) < 0) {
                    kvt_rx_end(&t->base, &x->base, KVT_FAILED, verdict);
                    nack = 1;
                }
            } else if (!x && f.id != last_nack) {
                snprintf(verdict, sizeof verdict,
                         "transfer %" PRIu64 " is not expected here "
                         "(forgotten by the receiver)",
                         f.id);
                nack = 1;
            }
            /* A length beyond any region cannot be skipped sensibly: the stream is broken. */
            uint64_t largest = kvt_largest_region(&t->base);
            pthread_mutex_unlock(&t->base.mu);
            if (len > largest && len > (1ull << 32)) {
                snprintf(why, why_len, "protocol error: run of %" PRIu64 " bytes", len);
                goto out;
            }
            if (nack) {
                if (send_verdict(c, f.id, 0, verdict) < 0) {
                    snprintf(why, why_len, "could not send a verdict to the sender");
                    goto out;
                }
                last_nack = f.id;
                nack = 0;
            }
            if (rx_payload(t, c, &rb, f.id, off, len, why, why_len) < 0)
                goto out;
            break;
        }
        case F_FINISH: {
            pthread_mutex_lock(&t->base.mu);
            tcp_rx *x = find_rx(t, f.id);
            if (!x) {
                snprintf(verdict, sizeof verdict,
                         "transfer %" PRIu64 " is not expected here "
                         "(never opened, or forgotten by the receiver)",
                         f.id);
                nack = 1;
            } else if (x->base.conn != c) {
                snprintf(verdict, sizeof verdict,
                         "transfer %" PRIu64 " was not begun on this "
                         "connection",
                         f.id);
                nack = 1;
            } else if (x->base.state == KVT_PENDING) {
                if (kvt_rx_verify(&x->base, f.finish.bytes, f.finish.checksum, XXH3_64bits_digest(x->hash), verdict,
                                  sizeof verdict) < 0) {
                    kvt_rx_end(&t->base, &x->base, KVT_FAILED, verdict);
                    nack = 1;
                } else {
                    ack = 1; /* committed only once the sender has been told, below */
                }
            } else if (x->base.state == KVT_OK) {
                ack = 1;
            }
            /* KVT_FAILED was already reported to the sender when it failed. */
            pthread_mutex_unlock(&t->base.mu);
            break;
        }
        case F_ABORT: {
            uint64_t n = f.abort.reason_len;
            if (n > MAX_REASON) {
                snprintf(why, why_len, "protocol error: abort reason of %" PRIu64 " bytes", n);
                goto out;
            }
            if (rd_exact(c, &rb, text, n, why, why_len) < 0)
                goto out;
            text[n] = '\0';
            pthread_mutex_lock(&t->base.mu);
            tcp_rx *x = find_rx(t, f.id);
            if (x && (x->base.conn == c || !x->base.conn)) { /* its BEGIN may have been dropped */
                snprintf(verdict, sizeof verdict, "aborted by sender: %.200s", text);
                kvt_rx_end(&t->base, &x->base, KVT_FAILED, verdict);
            }
            pthread_mutex_unlock(&t->base.mu);
            break;
        }
        default: snprintf(why, why_len, "protocol error: frame type %u", f.type); goto out;
        }
        if ((ack || nack) && send_verdict(c, f.id, ack, nack ? verdict : NULL) < 0) {
            snprintf(why, why_len, "could not send a verdict to the sender");
            goto out;
        }
        if (ack) {
            /* The receiver may use the blocks (and shut down) only after the sender has its
             * verdict on the wire, or a successful transfer would look failed to prefill. */
            pthread_mutex_lock(&t->base.mu);
            tcp_rx *x = find_rx(t, f.id);
            if (x && x->base.conn == c)
                kvt_rx_end(&t->base, &x->base, KVT_OK, "");
            pthread_mutex_unlock(&t->base.mu);
        }
    }
out:
    free(rb.buf);
}

static void *in_conn_main(void *arg)
{
    in_conn *c = arg;
    tcp_transport *t = c->t;
    char why[200] = "connection ended";
    in_conn_serve(c, why, sizeof why);
    shutdown(c->fd, SHUT_RDWR); /* the peer learns now; the descriptor closes when joined */

    char reason[256];
    snprintf(reason, sizeof reason, "connection from the sender lost: %s", why);
    pthread_mutex_lock(&t->base.mu);
    kvt_rx_fail_conn(&t->base, c, reason);
    c->done = 1;
    pthread_mutex_unlock(&t->base.mu);
    return NULL;
}

/* Joins and frees finished incoming connections. With all = 1 (kvt_destroy) it first
 * shuts every connection down. Called without t->base.mu. */
static void reap_conns(tcp_transport *t, int all)
{
    pthread_mutex_lock(&t->base.mu);
    in_conn **pp = &t->conns;
    in_conn *dead = NULL;
    while (*pp) {
        in_conn *c = *pp;
        if (all && !c->done)
            shutdown(c->fd, SHUT_RDWR);
        if (c->done || all) {
            *pp = c->next;
            c->next = dead;
            dead = c;
        } else {
            pp = &c->next;
        }
    }
    pthread_mutex_unlock(&t->base.mu);
    while (dead) {
        in_conn *c = dead;
        dead = c->next;
        pthread_join(c->thread, NULL);
        close(c->fd);
        free(c);
    }
}

static void *listener_main(void *arg)
{
    tcp_transport *t = arg;
    for (;;) {
        struct sockaddr_storage from;
        socklen_t from_len = sizeof from;
        int fd = accept4(t->listen_fd, (struct sockaddr *)&from, &from_len, SOCK_CLOEXEC);
        pthread_mutex_lock(&t->base.mu);
        int stopping = t->stopping;
        pthread_mutex_unlock(&t->base.mu);
        if (stopping) {
            if (fd >= 0)
                close(fd);
            return NULL;
        }
        if (fd < 0) {
            if (errno == EBADF || errno == EINVAL || errno == ENOTSOCK)
                return NULL; /* the socket itself is gone */
            if (errno != EINTR && errno != ECONNABORTED)
                usleep(10000); /* out of descriptors or memory: let some go */
            continue;
        }
        reap_conns(t, 0);
        pthread_mutex_lock(&t->base.mu);
        int live = 0;
        for (in_conn *c = t->conns; c; c = c->next)
            live++;
        pthread_mutex_unlock(&t->base.mu);
        if (live >= t->max_conns) { /* a thread each: bounded */
            close(fd);
            continue;
        }
        tune_socket(fd, t->io_timeout_ms);
        in_conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->t = t;
        c->fd = fd;
        if (kvt_numeric_addr((struct sockaddr *)&from, from_len, c->addr, sizeof c->addr) < 0)
            c->addr[0] = '\0'; /* matches no named peer */
        pthread_mutex_lock(&t->base.mu);
        if (pthread_create(&c->thread, NULL, in_conn_main, c) != 0) {
            pthread_mutex_unlock(&t->base.mu);
            close(fd);
            free(c);
            continue;
        }
        c->next = t->conns;
        t->conns = c;
        pthread_mutex_unlock(&t->base.mu);
    }
}

/* The reader may be copying a chunk of x right now (it looked x up before kvt_forget
 * unlinked it): wait for that chunk; it finds x no more after it. */
static void tcp_rx_forget(kvt_transport *base, kvt_rx *xb)
{
    tcp_rx *x = (tcp_rx *)xb;
    while (x->writing)
        pthread_cond_wait(&base->cv, &base->mu);
}

static void tcp_rx_free(kvt_rx *xb)
{
    XXH3_freeState(((tcp_rx *)xb)->hash);
}

/* TCP needs no handshake beyond its own connection: any hello is a mix-up of transports. */
static int tcp_accept(kvt_transport *base, const void *hello, size_t len, void *reply, size_t cap, size_t *reply_len,
                      eng_error *err)
{
    (void)base;
    (void)hello;
    (void)reply;
    (void)cap;
    *reply_len = 0;
    return eng_fail(err, "kvtransfer: the tcp transport takes no hello (got %zu bytes)", len);
}

static int tcp_peer_reply(kvt_peer *p, const void *reply, size_t len, eng_error *err)
{
    (void)p;
    (void)reply;
    return eng_fail(err, "kvtransfer: the tcp transport takes no hello reply (got %zu bytes)", len);
}

/* ---------------------------------------------------------------- sending */

/* Marks the connection dead and fails its transfers. Caller holds t->base.mu. */
static void peer_fail_locked(tcp_peer *p, const char *why)
{
    if (!p->alive)
        return;
    tcp_transport *t = p->t;
    p->alive = 0;
    snprintf(p->dead_reason, sizeof p->dead_reason, "%s", why);
    shutdown(p->fd, SHUT_RDWR); /* wakes the reader and a blocked sender */
    for (tx_transfer *s = p->txs; s; s = s->next) {
        if (s->epoch == p->epoch && s->state == KVT_PENDING) {
            s->state = KVT_FAILED;
            snprintf(s->reason, sizeof s->reason, "connection to the receiver %s:%d lost: %s", p->host, p->port, why);
        }
    }
    pthread_cond_broadcast(&p->q_cv);
    pthread_cond_broadcast(&t->base.cv);
}

static int q_push(tcp_peer *p, const tx_item *it)
{
    if (p->q_head + p->q_len == p->q_cap) {
        if (p->q_head > 0) {
            memmove(p->q, p->q + p->q_head, p->q_len * sizeof *p->q);
            p->q_head = 0;
        }
        if (p->q_len == p->q_cap) {
            size_t cap = p->q_cap ? p->q_cap * 2 : 64;
            tx_item *q = realloc(p->q, cap * sizeof *q);
            if (!q)
                return -1;
            p->q = q;
            p->q_cap = cap;
        }
    }
    p->q[p->q_head + p->q_len++] = *it;
    pthread_cond_signal(&p->q_cv);
    return 0;
}

/* Drops the queued items of s (or all with s NULL), keeping the others in order. */
static void q_drop(tcp_peer *p, tx_transfer *s)
{
    size_t w = p->q_head;
    for (size_t i = p->q_head; i < p->q_head + p->q_len; i++) {
        tx_item *it = &p->q[i];
        if (s == NULL || it->s == s)
            free(it->reason);
        else
            p->q[w++] = *it;
    }
    p->q_len = w - p->q_head;
}

/* The sender thread takes up to BATCH_ITEMS queued frames at a time and sends them in
 * windows of about WINDOW_BYTES of payload, one sendmsg per window: many small runs cost
 * one system call, and a large run is hashed a window at a time just before it is sent,
 * so the kernel's copy finds the bytes still in cache. */
#define BATCH_ITEMS 128
#define BATCH_BYTES (8u << 20)
#define WINDOW_BYTES (1u << 20)
#define WINDOW_IOVS 256
#define VERDICT_GRACE_MS 1000 /* after a failed send, how long the reader may take to read a verdict */

typedef struct batch {
    tx_item items[BATCH_ITEMS];
    unsigned char hdr[BATCH_ITEMS][FRAME_BYTES];
    unsigned char flipped[BATCH_ITEMS];
    struct iovec iov[WINDOW_IOVS];
    int n_items, n_iov;
    size_t window; /* payload bytes in iov */
} batch;

static int flush_window(tcp_peer *p, batch *b, char *why, size_t why_len)
{
    int rc = b->n_iov ? send_all(p->fd, b->iov, b->n_iov, why, why_len) : 0;
    b->n_iov = 0;
    b->window = 0;
    return rc;
}

/* Appends piece [off, off + n) of WRITE item i: hashed now (the sender thread alone
 * touches a transfer's hash, in queue order), sent with the window. */
static void add_piece(batch *b, int i, size_t off, size_t n)
{
    tx_item *it = &b->items[i];
    const char *src = it->src + off;
    XXH3_64bits_update(it->s->hash, src, n);
    size_t mid = it->len / 2;
    if (it->corrupt && mid >= off && mid < off + n) {
        /* Test builds only: the run's middle byte goes out flipped, after hashing. */
        b->flipped[i] = (unsigned char)it->src[mid] ^ 0x5a;
        b->iov[b->n_iov++] = (struct iovec){(void *)src, mid - off};
        b->iov[b->n_iov++] = (struct iovec){&b->flipped[i], 1};
        b->iov[b->n_iov++] = (struct iovec){(void *)(it->src + mid + 1), off + n - mid - 1};
    } else {
        b->iov[b->n_iov++] = (struct iovec){(void *)src, n};
    }
    b->window += n;
}

/* Sends the frames of the batch in order. Without t->base.mu. */
static int send_batch(tcp_peer *p, batch *b, char *why, size_t why_len)
{
    b->n_iov = 0;
    b->window = 0;
    for (int i = 0; i < b->n_items; i++) {
        tx_item *it = &b->items[i];
        if (b->n_iov + 5 > WINDOW_IOVS && flush_window(p, b, why, why_len) < 0)
            return -1;
        frame f = {.magic = FRAME_MAGIC, .type = (uint32_t)it->type, .id = it->id};
        if (it->type == F_BEGIN) {
            f.begin.region_id = it->region_id;
            memcpy(f.begin.secret, it->secret.bytes, sizeof f.begin.secret);
        } else if (it->type == F_WRITE) {
            f.write.dst_off = it->dst_off;
            f.write.len = it->len;
            it->s->bytes += it->len;
        } else if (it->type == F_FINISH) { /* every earlier piece is hashed by now */
            f.finish.bytes = it->s->bytes;
            f.finish.checksum = XXH3_64bits_digest(it->s->hash);
        } else if (it->type == F_ABORT) {
            f.abort.reason_len = strlen(it->reason);
        }
        encode_frame(b->hdr[i], &f);
        b->iov[b->n_iov++] = (struct iovec){b->hdr[i], FRAME_BYTES};
        if (it->type == F_ABORT)
            b->iov[b->n_iov++] = (struct iovec){it->reason, f.abort.reason_len};
        if (it->type != F_WRITE)
            continue;
        for (size_t off = 0; off < it->len;) {
            size_t n = it->len - off;
            if (n > WINDOW_BYTES - b->window)
                n = WINDOW_BYTES - b->window;
            add_piece(b, i, off, n);
            off += n;
            if ((b->window >= WINDOW_BYTES || b->n_iov + 5 > WINDOW_IOVS) && flush_window(p, b, why, why_len) < 0)
                return -1;
        }
    }
    return flush_window(p, b, why, why_len);
}

static void *sender_main(void *arg)
{
    tcp_peer *p = arg;
    tcp_transport *t = p->t;
    char why[200];
    batch *b = malloc(sizeof *b);
    pthread_mutex_lock(&t->base.mu);
    if (!b)
        peer_fail_locked(p, "out of memory for the send batch");
    for (;;) {
        while (p->alive && p->q_len == 0) {
            /* A connection nobody used for peer_idle_ms closes, so a receiver gone
             * quiet (or gone) holds no threads or descriptors here; the next
             * kvt_connect dials again. */
            struct timespec dl;
            eng_deadline_after_ms(&dl, t->peer_idle_ms);
            if (pthread_cond_timedwait(&p->q_cv, &t->base.mu, &dl) == ETIMEDOUT && p->q_len == 0 && !p->txs &&
                eng_now_s() - p->last_used >= t->peer_idle_ms / 1000.0)
                peer_fail_locked(p, "closed after being idle");
        }
        if (!p->alive)
            break;
        b->n_items = 0;
        size_t bytes = 0;
        while (p->q_len > 0 && b->n_items < BATCH_ITEMS && bytes < BATCH_BYTES) {
            tx_item it = p->q[p->q_head++];
            p->q_len--;
            if (it.s && it.s->state != KVT_PENDING)
                continue; /* its fate is sealed: save the bandwidth */
            if (it.s)
                it.s->in_flight++;
            bytes += it.type == F_WRITE ? it.len : 0;
            b->items[b->n_items++] = it;
        }
        pthread_mutex_unlock(&t->base.mu);
        int rc = send_batch(p, b, why, sizeof why);
        pthread_mutex_lock(&t->base.mu);
        for (int i = 0; i < b->n_items; i++) {
            if (b->items[i].s)
                b->items[i].s->in_flight--;
            free(b->items[i].reason);
        }
        pthread_cond_broadcast(&t->base.cv);
        if (rc < 0) {
            /* A receiver that refuses a transfer sends its verdict and hangs up, so a send
             * can fail (EPIPE) while the verdict still waits in our receive buffer: give the
             * reader a moment to read it, so the transfer fails with the receiver's reason
             * rather than "broken pipe". A reader blocked on a silent peer is woken by
             * peer_fail_locked's shutdown after the wait. */
            struct timespec dl;
            eng_deadline_after_ms(&dl, VERDICT_GRACE_MS);
            while (p->alive && kvt_wait_until(&t->base, &dl, VERDICT_GRACE_MS))
                ;
            peer_fail_locked(p, why);
            break;
        }
    }
    q_drop(p, NULL);
    pthread_mutex_unlock(&t->base.mu);
    free(b);
    return NULL;
}

static void *reader_main(void *arg)
{
    tcp_peer *p = arg;
    tcp_transport *t = p->t;
    char why[200], text[MAX_REASON + 1];
    unsigned char hdr[FRAME_BYTES];
    for (;;) {
        frame f;
        if (recv_all(p->fd, hdr, FRAME_BYTES, why, sizeof why) < 0)
            break;
        decode_frame(hdr, &f);
        if (f.magic != FRAME_MAGIC || f.type != F_VERDICT || f.verdict.reason_len > MAX_REASON) {
            snprintf(why, sizeof why, "protocol error from the receiver");
            break;
        }
        if (recv_all(p->fd, text, f.verdict.reason_len, why, sizeof why) < 0)
            break;
        text[f.verdict.reason_len] = '\0';
        if (f.id == 0) { /* about the whole connection */
            snprintf(why, sizeof why, "receiver refused the connection: %.150s", text);
            break;
        }
        pthread_mutex_lock(&t->base.mu);
        for (tx_transfer *s = p->txs; s; s = s->next) {
            if (s->id == f.id && s->epoch == p->epoch && s->state == KVT_PENDING) {
                s->state = f.verdict.ok == 1 ? KVT_OK : KVT_FAILED;
                if (s->state == KVT_FAILED)
                    snprintf(s->reason, sizeof s->reason, "receiver rejected the transfer: %.200s", text);
                pthread_cond_broadcast(&t->base.cv);
                break;
            }
        }
        pthread_mutex_unlock(&t->base.mu);
    }
    pthread_mutex_lock(&t->base.mu);
    peer_fail_locked(p, why);
    pthread_mutex_unlock(&t->base.mu);
    return NULL;
}

/* "kvt1 tcp HOST PORT INSTANCE REGION SIZE" */
static int tcp_peer_init(kvt_peer *pb, const void *desc, size_t len, eng_error *err)
{
    tcp_peer *p = (tcp_peer *)pb;
    char buf[KVT_DESCRIPTOR_MAX + 1];
    memcpy(buf, desc, len); /* len <= KVT_DESCRIPTOR_MAX: kvt_connect checked */
    buf[len] = '\0';
    char host[128];
    unsigned long long inst, region, size;
    int port, used = 0;
    if (sscanf(buf, "kvt1 tcp %127s %d %llx %llu %llu%n", host, &port, &inst, &region, &size, &used) != 5 ||
        (size_t)used != len || port <= 0 || port > 65535)
        return eng_fail(err, "kvtransfer: malformed tcp descriptor \"%.100s\"", buf);
    p->t = (tcp_transport *)pb->t;
    snprintf(p->host, sizeof p->host, "%s", host);
    p->port = port;
    p->instance = inst;
    p->region_id = region;
    p->region_size = size;
    p->fd = -1;
    pthread_mutex_init(&p->connect_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->q_cv, &ca);
    pthread_condattr_destroy(&ca);
    return 0;
}

/* Connects with a timeout and says hello. Returns the socket or -1. */
static int dial(tcp_transport *t, tcp_peer *p, eng_error *err)
{
    struct addrinfo *res = NULL;
    eng_error aerr;
    if (eng_addr_resolve(p->host, p->port, 0, &res, &aerr) < 0)
        return eng_fail(err, "kvtransfer: %s", aerr.msg);
    int fd = -1;
    char why[160] = "no address";
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            snprintf(why, sizeof why, "socket: %s", strerror(errno));
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            snprintf(why, sizeof why, "%s", strerror(errno));
            close(fd);
            fd = -1;
            continue;
        }
        struct pollfd pfd = {fd, POLLOUT, 0};
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        int pr;
        do
            pr = poll(&pfd, 1, t->io_timeout_ms);
        while (pr < 0 && errno == EINTR);
        if (pr == 0)
            snprintf(why, sizeof why, "no answer within %d ms", t->io_timeout_ms);
        else if (pr < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr)
            snprintf(why, sizeof why, "%s", strerror(soerr ? soerr : errno));
        if (pr <= 0 || soerr) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return eng_fail(err, "kvtransfer: cannot connect to %s:%d: %s", p->host, p->port, why);
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    tune_socket(fd, t->io_timeout_ms);
    frame hello = {.magic = FRAME_MAGIC, .type = F_HELLO, .hello = {.instance = p->instance, .version = PROTO_VERSION}};
    if (send_frame(fd, &hello, NULL, 0, why, sizeof why) < 0) {
        close(fd);
        return eng_fail(err, "kvtransfer: hello to %s:%d: %s", p->host, p->port, why);
    }
    return fd;
}

static int tcp_connect(kvt_peer *pb, eng_error *err)
{
    tcp_peer *p = (tcp_peer *)pb;
    tcp_transport *t = p->t;
    int rc = 0;
    pthread_mutex_lock(&p->connect_mu);
    pthread_mutex_lock(&t->base.mu);
    int alive = p->alive, stopping = t->stopping;
    p->last_used = eng_now_s();
    pthread_mutex_unlock(&t->base.mu);
    if (stopping) {
        rc = eng_fail(err, "kvtransfer: transport is shutting down");
    } else if (!alive) {
        if (p->has_threads) { /* the broken connection's threads are exiting */
            pthread_join(p->sender, NULL);
            pthread_join(p->reader, NULL);
            close(p->fd);
            p->fd = -1;
            p->has_threads = 0;
        }
        int fd = dial(t, p, err);
        if (fd < 0) {
            rc = -1;
        } else {
            pthread_mutex_lock(&t->base.mu);
            p->fd = fd;
            p->epoch++;
            p->alive = 1;
            p->last_used = eng_now_s();
            p->dead_reason[0] = '\0';
            if (pthread_create(&p->sender, NULL, sender_main, p) != 0) {
                p->alive = 0;
                rc = eng_fail(err, "kvtransfer: cannot start a sender thread");
            } else if (pthread_create(&p->reader, NULL, reader_main, p) != 0) {
                peer_fail_locked(p, "cannot start a reader thread");
                pthread_mutex_unlock(&t->base.mu);
                pthread_join(p->sender, NULL);
                pthread_mutex_lock(&t->base.mu);
                rc = eng_fail(err, "kvtransfer: cannot start a reader thread");
            } else {
                p->has_threads = 1;
            }
            pthread_mutex_unlock(&t->base.mu);
            if (rc < 0) {
                close(fd);
                p->fd = -1;
            }
        }
    }
    pthread_mutex_unlock(&p->connect_mu);
    return rc;
}

static size_t tcp_peer_hello(kvt_peer *p, void *buf, size_t cap)
{
    (void)p;
    (void)buf;
    (void)cap;
    return 0;
}

static int tcp_send_begin(kvt_peer *pb, kvt_region *src, uint64_t id, const kvt_secret *secret, kvt_send **out,
                          eng_error *err)
{
    tcp_peer *p = (tcp_peer *)pb;
    tcp_transport *t = p->t;
    tx_transfer *s = calloc(1, sizeof *s);
    if (!s || !(s->hash = XXH3_createState())) {
        free(s);
        return eng_fail(err, "kvtransfer: out of memory");
    }
    XXH3_64bits_reset(s->hash);
    s->base.t = pb->t;
    s->peer = p;
    s->src = src;
    s->id = id;
    s->state = KVT_PENDING;
    pthread_mutex_lock(&t->base.mu);
    int ok = p->alive;
    p->last_used = eng_now_s();
    tx_item it = {.type = F_BEGIN, .s = s, .id = id, .region_id = p->region_id};
    if (secret)
        it.secret = *secret;
    if (ok && q_push(p, &it) < 0)
        ok = -1;
    if (ok == 1) {
        s->epoch = p->epoch;
        s->src->users++;
        s->next = p->txs;
        p->txs = s;
    }
    char reason[200];
    snprintf(reason, sizeof reason, "%s", p->dead_reason);
    pthread_mutex_unlock(&t->base.mu);
    if (ok != 1) {
        XXH3_freeState(s->hash);
        free(s);
        if (ok < 0)
            return eng_fail(err, "kvtransfer: out of memory");
        return eng_fail(err, "kvtransfer: no connection to %s:%d (%s); connect again", p->host, p->port,
                        reason[0] ? reason : "never connected");
    }
    *out = &s->base;
    return 0;
}

static int tcp_send_write(kvt_send *sb, uint64_t src_off, uint64_t dst_off, uint64_t len, eng_error *err)
{
    tx_transfer *s = (tx_transfer *)sb;
    tcp_peer *p = s->peer;
    tcp_transport *t = p->t;
    size_t size = s->src->len;
    if (src_off > size || len > size - src_off)
        return eng_fail(err,
                        "kvtransfer: source run [%" PRIu64 ", +%" PRIu64 ") lies outside "
                        "the %zu-byte local region",
                        src_off, len, size);
    if (len == 0)
        return 0;
    tx_item it = {.type = F_WRITE, .s = s, .id = s->id, .dst_off = dst_off, .len = len, .src = s->src->base + src_off};
    it.corrupt = sb->corrupt_next;
    sb->corrupt_next = 0;
    int rc = 0;
    pthread_mutex_lock(&t->base.mu);
    if (s->state != KVT_PENDING)
        rc = eng_fail(err, "kvtransfer: transfer %" PRIu64 " failed: %s", s->id, s->reason);
    else if (q_push(p, &it) < 0)
        rc = eng_fail(err, "kvtransfer: out of memory");
    pthread_mutex_unlock(&t->base.mu);
    return rc;
}

/* Detaches s from its peer once the sender thread no longer touches it. Caller holds t->base.mu. */
static void tx_release_locked(tx_transfer *s)
{
    tcp_peer *p = s->peer;
    tcp_transport *t = p->t;
    q_drop(p, s);
    while (s->in_flight > 0)
        pthread_cond_wait(&t->base.cv, &t->base.mu);
    tx_transfer **pp = &p->txs;
    while (*pp != s)
        pp = &(*pp)->next;
    *pp = s->next;
    s->src->users--;
}

static int tcp_send_finish(kvt_send *sb, int timeout_ms, uint64_t *bytes, eng_error *err)
{
    tx_transfer *s = (tx_transfer *)sb;
    tcp_peer *p = s->peer;
    tcp_transport *t = p->t;
    struct timespec dl;
    eng_deadline_after_ms(&dl, timeout_ms);
    pthread_mutex_lock(&t->base.mu);
    if (s->state == KVT_PENDING) {
        tx_item it = {.type = F_FINISH, .s = s, .id = s->id};
        if (q_push(p, &it) < 0) {
            s->state = KVT_FAILED;
            snprintf(s->reason, sizeof s->reason, "out of memory");
        }
    }
    while (s->state == KVT_PENDING) {
        int timed_out = timeout_ms == 0 || !kvt_wait_until(&t->base, &dl, timeout_ms);
        if (timed_out && s->state == KVT_PENDING) {
            s->state = KVT_FAILED;
            snprintf(s->reason, sizeof s->reason, "no verdict from the receiver within %d ms", timeout_ms);
        }
    }
    tx_release_locked(s);
    int ok = s->state == KVT_OK;
    *bytes = s->bytes;
    if (!ok) {
        eng_fail(err, "kvtransfer: transfer %" PRIu64 " to %s:%d failed: %s", s->id, p->host, p->port, s->reason);
    }
    pthread_mutex_unlock(&t->base.mu);
    XXH3_freeState(s->hash);
    free(s);
    return ok ? 0 : -1;
}

static void tcp_send_abort(kvt_send *sb, const char *reason)
{
    tx_transfer *s = (tx_transfer *)sb;
    tcp_peer *p = s->peer;
    tcp_transport *t = p->t;
    pthread_mutex_lock(&t->base.mu);
    tx_release_locked(s);
    if (p->alive && p->epoch == s->epoch) {
        tx_item it = {.type = F_ABORT, .id = s->id, .reason = strndup(reason, MAX_REASON)};
        if (it.reason && q_push(p, &it) < 0)
            free(it.reason);
    }
    pthread_mutex_unlock(&t->base.mu);
    XXH3_freeState(s->hash);
    free(s);
}

/* ---------------------------------------------------------------- descriptor, life */

static int tcp_descriptor(kvt_transport *base, const kvt_region *rb, void *buf, size_t cap, size_t *len, eng_error *err)
{
    tcp_transport *t = (tcp_transport *)base;
    char d[KVT_DESCRIPTOR_MAX + 1];
    int n = snprintf(d, sizeof d, "kvt1 tcp %s %d %016" PRIx64 " %" PRIu64 " %zu", t->host, t->port, t->instance,
                     rb->id, rb->len);
    if (n < 0 || (size_t)n > KVT_DESCRIPTOR_MAX || (size_t)n > cap)
        return eng_fail(err, "kvtransfer: descriptor needs %d bytes, buffer has %zu", n, cap);
    memcpy(buf, d, (size_t)n);
    *len = (size_t)n;
    return 0;
}

/* Idle-closed (or broken) and unused for peer_idle_ms: nobody holds it (kvt_connect's
 * contract) and nothing refers to it. */
static int tcp_peer_expired(kvt_peer *pb, double now)
{
    tcp_peer *p = (tcp_peer *)pb;
    double idle = p->t->peer_idle_ms / 1000.0;
    if (p->alive || p->txs || p->q_len || now - p->last_used < idle || now - pb->handed_out < idle)
        return 0;
    if (pthread_mutex_trylock(&p->connect_mu) != 0)
        return 0; /* a (re)connect is under way */
    pthread_mutex_unlock(&p->connect_mu);
    return 1;
}

/* Closes p's connection if it is still open, then waits for its threads (they end once
 * the socket is shut down) and frees what it holds. */
static void tcp_peer_free(kvt_peer *pb)
{
    tcp_peer *p = (tcp_peer *)pb;
    tcp_transport *t = p->t;
    pthread_mutex_lock(&p->connect_mu);
    pthread_mutex_lock(&t->base.mu);
    peer_fail_locked(p, "transport destroyed");
    pthread_mutex_unlock(&t->base.mu);
    if (p->has_threads) {
        pthread_join(p->sender, NULL);
        pthread_join(p->reader, NULL);
    }
    if (p->fd >= 0)
        close(p->fd);
    pthread_mutex_unlock(&p->connect_mu);
    q_drop(p, NULL);
    free(p->q);
    pthread_cond_destroy(&p->q_cv);
    pthread_mutex_destroy(&p->connect_mu);
}

static void tcp_destroy(kvt_transport *base)
{
    tcp_transport *t = (tcp_transport *)base;
    pthread_mutex_lock(&t->base.mu);
    t->stopping = 1;
    pthread_mutex_unlock(&t->base.mu);
    shutdown(t->listen_fd, SHUT_RDWR); /* wakes accept() */
    pthread_join(t->listener, NULL);
    close(t->listen_fd);
    reap_conns(t, 1);

    for (kvt_peer *pb = t->base.peers, *next; pb; pb = next) {
        next = pb->next;
        tcp_peer_free(pb);
        free(pb);
    }
    kvt_transport_fini(&t->base);
    free(t);
}

int kvt_tcp_create(const kvt_tcp_options *opt, kvt_transport **out, eng_error *err)
{
    kvt_tcp_options o = opt ? *opt : (kvt_tcp_options){0};
    const char *bind_host = o.bind_host ? o.bind_host : "127.0.0.1";
    const char *adv = o.advertise_host ? o.advertise_host : bind_host;
    if (strcmp(adv, "0.0.0.0") == 0 || strcmp(adv, "::") == 0)
        return eng_fail(err,
                        "kvtransfer: binding to %s needs an advertise_host that peers can "
                        "reach",
                        bind_host);
    if (strlen(adv) >= 128 || strchr(adv, ' '))
        return eng_fail(err, "kvtransfer: bad advertise host \"%.60s\"", adv);
    if (o.port < 0 || o.port > 65535)
        return eng_fail(err, "kvtransfer: bad port %d", o.port);

    struct addrinfo *res = NULL;
    eng_error aerr;
    if (eng_addr_resolve(bind_host, o.port, 1, &res, &aerr) < 0)
        return eng_fail(err, "kvtransfer: %s", aerr.msg);
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        int e = errno;
        freeaddrinfo(res);
        if (fd >= 0)
            close(fd);
        return eng_fail(err, "kvtransfer: cannot listen on %s:%d: %s", bind_host, o.port, strerror(e));
    }
    freeaddrinfo(res);
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    int bound_port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                                    : ((struct sockaddr_in *)&sa)->sin_port);

    tcp_transport *t = calloc(1, sizeof *t);
    if (!t) {
        close(fd);
        return eng_fail(err, "kvtransfer: out of memory");
    }
    kvt_transport_init(&t->base, &tcp_ops);
    t->io_timeout_ms = o.io_timeout_ms > 0 ? o.io_timeout_ms : 10000;
    t->max_conns = o.max_conns > 0 ? o.max_conns : 256;
    t->peer_idle_ms = o.peer_idle_ms > 0 ? o.peer_idle_ms : 60000;
    snprintf(t->host, sizeof t->host, "%s", adv);
    t->port = bound_port;
    t->listen_fd = fd;
    /* The instance tells a restarted receiver on the same port from the old one. */
    if (getrandom(&t->instance, sizeof t->instance, 0) != sizeof t->instance)
        t->instance = ((uint64_t)getpid() << 32) ^ (uint64_t)(eng_now_s() * 1e9);
    if (pthread_create(&t->listener, NULL, listener_main, t) != 0) {
        close(fd);
        kvt_transport_fini(&t->base);
        free(t);
        return eng_fail(err, "kvtransfer: cannot start the listener thread");
    }
    *out = &t->base;
    return 0;
}

static const kvt_ops tcp_ops = {
    .name = "tcp",
    .region_size = sizeof(kvt_region),
    .rx_size = sizeof(tcp_rx),
    .peer_size = sizeof(tcp_peer),
    .destroy = tcp_destroy,
    .descriptor = tcp_descriptor,
    .rx_forget = tcp_rx_forget,
    .rx_free = tcp_rx_free,
    .accept = tcp_accept,
    .peer_init = tcp_peer_init,
    .connect = tcp_connect,
    .peer_hello = tcp_peer_hello,
    .peer_reply = tcp_peer_reply,
    .peer_expired = tcp_peer_expired,
    .peer_free = tcp_peer_free,
    .send_begin = tcp_send_begin,
    .send_write = tcp_send_write,
    .send_finish = tcp_send_finish,
    .send_abort = tcp_send_abort,
};

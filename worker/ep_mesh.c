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
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/addr.h"
#include "common/log.h"
#include "ep.h"

#define EP_MAGIC 0x31504554u    /* "TEP1" */
#define EP_MAX_MSG (1ull << 34) /* a message's payload: 16 GiB (rows x hidden x 4) */
#define EP_HANDSHAKE_MS 2000

typedef struct ep_hdr {
    uint32_t magic, kind, epoch, layer;
    uint64_t step, len;
} ep_hdr;

typedef struct ep_hello {
    uint32_t magic, size, rank, formations;
    uint64_t group; /* FNV-1a of the group name */
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
} ep_peer;

struct wrk_ep {
    wrk_ep_options opt;
    char group[128];
    uint64_t group_hash;
    int lo, hi; /* owned experts */
    int *owner; /* [n_experts] the rank that runs each expert */
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
    wrk_ep_metrics met;
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
                      .group = ep->group_hash};
}

static int check_hello(wrk_ep *ep, const ep_hello *h, char *why, size_t cap)
{
    if (h->magic != EP_MAGIC || h->group != ep->group_hash || h->size != (uint32_t)ep->opt.size ||
        h->rank >= (uint32_t)ep->opt.size || h->rank == (uint32_t)ep->opt.rank) {
        snprintf(why, cap, "handshake from another group, size or rank (size %u, rank %u)", h->size, h->rank);
        return -1;
    }
    return 0;
}

/* Exchanges hellos on a new connection; returns the peer's rank or -1. */
static int handshake(wrk_ep *ep, int fd, char *why, size_t cap)
{
    ep_hello mine = my_hello(ep), theirs;
    struct iovec iov = {&mine, sizeof mine};
    double deadline = now_s() + EP_HANDSHAKE_MS / 1000.0;
    if (write_all(fd, &iov, 1, deadline, why, cap) < 0 ||
        read_all(fd, &theirs, sizeof theirs, deadline, why, cap) < 0 || check_hello(ep, &theirs, why, cap) < 0)
        return -1;
    ep->peers[theirs.rank].formations = theirs.formations;
    return (int)theirs.rank;
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

static void form_complete(wrk_ep *ep)
{
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
    ep_log(ep, ENG_LOG_INFO, "group complete (epoch %u): experts %d..%d here", ep->epoch, ep->lo, ep->hi - 1);
    notify(ep);
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
            r = recv(p->fd, p->rdata + off, p->rh.len - off, MSG_DONTWAIT);
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
            if (!(p->rdata = malloc(p->rh.len ? p->rh.len : 1))) {
                snprintf(why, cap, "out of memory for a message of %llu bytes", (unsigned long long)p->rh.len);
                return -1;
            }
        }
        if (p->rgot < sizeof p->rh || p->rgot - sizeof p->rh < p->rh.len)
            continue;
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
        met_inc(ep->met.bytes_received, (double)(sizeof m->h + m->h.len));
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
                    ep_log(ep, ENG_LOG_WARN, "refused a connection: %s",
                           r < 0 ? hwhy : "a lower rank must be dialled, not accept");
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

static int open_listener(wrk_ep *ep, eng_error *err)
{
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
    wrk_ep_range(opt->n_experts, opt->size, opt->rank, &ep->lo, &ep->hi);
    ep->owner = malloc((size_t)opt->n_experts * sizeof *ep->owner);
    ep->sent_rows = calloc((size_t)opt->size, sizeof *ep->sent_rows);
    if (!ep->owner || !ep->sent_rows) {
        free(ep->owner);
        free(ep->sent_rows);
        free(ep);
        return eng_fail(err, "out of memory");
    }
    for (int r = 0; r < opt->size; r++) {
        int lo, hi;
        wrk_ep_range(opt->n_experts, opt->size, r, &lo, &hi);
        for (int e = lo; e < hi; e++)
            ep->owner[e] = r;
    }
    ep->listen_fd = ep->wake[0] = ep->wake[1] = -1;
    for (int i = 0; i < WRK_EP_MAX_SIZE; i++)
        ep->peers[i].fd = -1;
    pthread_mutex_init(&ep->mu, NULL);
    pthread_cond_init(&ep->cv, NULL);
    snprintf(ep->why, sizeof ep->why, "the group is forming");
    if (parse_peers(ep, opt->peers, err) < 0 || open_listener(ep, err) < 0)
        goto fail;
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
    pthread_mutex_destroy(&ep->mu);
    pthread_cond_destroy(&ep->cv);
    free(ep->owner);
    free(ep->sent_rows);
    free(ep);
}

/* ------------------------------------------------------------------ queries */

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

void wrk_ep_owned(const wrk_ep *ep, int *lo, int *hi)
{
    *lo = ep->lo;
    *hi = ep->hi;
}

int wrk_ep_owner(const wrk_ep *ep, int expert)
{
    return ep->owner[expert];
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
    pthread_mutex_lock(&ep->mu);
    if (!same_group_locked(ep)) {
        broken_error(ep, err);
        pthread_mutex_unlock(&ep->mu);
        return -1;
    }
    h.epoch = ep->epoch;
    h.step = ep->step;
    int fd = ep->peers[peer].fd;
    ep->users++;
    pthread_mutex_unlock(&ep->mu);
    char why[300] = "";
    int rc = write_all(fd, iov, n_parts + 1, now_s() + ep->opt.deadline_ms / 1000.0, why, sizeof why);
    pthread_mutex_lock(&ep->mu);
    ep->users--;
    if (rc == 0)
        met_inc(ep->met.bytes_sent, (double)(sizeof h + h.len));
    else {
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

int wrk_ep_recv(wrk_ep *ep, int peer, int kind, int layer, void **data, size_t *len, eng_error *err)
{
    *data = NULL;
    *len = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long ns = ts.tv_nsec + (long)(ep->opt.deadline_ms % 1000) * 1000000L;
    ts.tv_sec += ep->opt.deadline_ms / 1000 + ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
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
            *data = m->data;
            *len = m->h.len;
            free(m);
            rc = 0;
        }
    }
    pthread_mutex_unlock(&ep->mu);
    return rc;
}

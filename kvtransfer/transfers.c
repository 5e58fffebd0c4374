/* transfers.c: the bookkeeping every transport shares.
 *
 * Registered regions, incoming transfers from kvt_expect to kvt_forget (binding to the
 * sender's connection, run checks, the verdict, waiting), the notify hook and the
 * counters. The transports (tcp.c, rdma.c) only move bytes: they call the kvt_rx_*
 * helpers from their threads with t->mu held, and ops->rx_forget fences their writes. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport.h"

/* ---------------------------------------------------------------- waiting */

int kvt_wait_until(kvt_transport *t, const struct timespec *deadline, int ms)
{
    if (ms < 0)
        return pthread_cond_wait(&t->cv, &t->mu), 1;
    return pthread_cond_timedwait(&t->cv, &t->mu, deadline) != ETIMEDOUT;
}

/* ---------------------------------------------------------------- life */

void kvt_transport_init(kvt_transport *t, const kvt_ops *ops)
{
    t->ops = ops;
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    t->next_region_id = 1;
    /* Transfer ids differ across restarts too, so a sender still holding an id from a
     * receiver's previous life cannot hit a new transfer. */
    uint64_t r;
    if (getrandom(&r, sizeof r, 0) != sizeof r)
        r = ((uint64_t)getpid() << 32) ^ (uint64_t)(eng_now_s() * 1e9);
    t->next_transfer_id = (r >> 16) | 1;
}

static void rx_free(kvt_transport *t, kvt_rx *x)
{
    if (t->ops->rx_free)
        t->ops->rx_free(x);
    free(x->spans);
    free(x);
}

static void region_free(kvt_transport *t, kvt_region *r)
{
    if (t->ops->region_drop)
        t->ops->region_drop(t, r);
    free(r);
}

void kvt_transport_fini(kvt_transport *t)
{
    for (kvt_rx *x = t->rxs, *next; x; x = next) {
        next = x->next;
        rx_free(t, x);
    }
    for (kvt_region *r = t->regions, *next; r; r = next) {
        next = r->next;
        region_free(t, r);
    }
    t->rxs = NULL;
    t->regions = NULL;
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
}

/* ---------------------------------------------------------------- regions */

int kvt_register(kvt_transport *t, void *base, size_t len, kvt_region **out, eng_error *err)
{
    if (!base || len == 0)
        return eng_fail(err, "kvtransfer: cannot register an empty memory region");
    kvt_region *r = calloc(1, t->ops->region_size);
    if (!r)
        return eng_fail(err, "kvtransfer: out of memory");
    r->t = t;
    r->base = base;
    r->len = len;
    if (t->ops->region_add && t->ops->region_add(t, r, err) < 0) {
        free(r);
        return -1;
    }
    pthread_mutex_lock(&t->mu);
    r->id = t->next_region_id++;
    r->next = t->regions;
    t->regions = r;
    pthread_mutex_unlock(&t->mu);
    *out = r;
    return 0;
}

int kvt_deregister(kvt_transport *t, kvt_region *r, eng_error *err)
{
    if (!r)
        return 0;
    if (r->t != t)
        return eng_fail(err, "kvtransfer: region belongs to another transport");
    pthread_mutex_lock(&t->mu);
    kvt_region **pp = &t->regions;
    while (*pp && *pp != r)
        pp = &(*pp)->next;
    int found = *pp != NULL, users = r->users;
    if (found && users == 0)
        *pp = r->next;
    pthread_mutex_unlock(&t->mu);
    if (!found)
        return eng_fail(err, "kvtransfer: region is not registered");
    if (users > 0)
        return eng_fail(err, "kvtransfer: region still used by %d transfer(s)", users);
    region_free(t, r);
    return 0;
}

size_t kvt_largest_region(kvt_transport *t)
{
    size_t largest = 0;
    for (const kvt_region *r = t->regions; r; r = r->next)
        if (r->len > largest)
            largest = r->len;
    return largest;
}

/* ---------------------------------------------------------------- expecting */

/* guard: NULL, or the secret and peers of kvt_expect_guarded (copied into the transfer). */
static int expect(kvt_transport *t, kvt_region *r, kvt_span *spans, int n_spans, uint64_t expected_bytes,
                  const kvt_rx *guard, uint64_t *id, eng_error *err)
{
    kvt_rx *x = calloc(1, t->ops->rx_size);
    if (!x) {
        free(spans);
        return eng_fail(err, "kvtransfer: out of memory");
    }
    if (guard) {
        x->guarded = 1;
        x->secret = guard->secret;
        memcpy(x->peers, guard->peers, sizeof x->peers);
        x->n_peers = guard->n_peers;
    }
    x->region = r;
    x->spans = spans;
    x->n_spans = n_spans;
    x->expected = expected_bytes;
    x->state = KVT_PENDING;
    pthread_mutex_lock(&t->mu);
    x->id = t->next_transfer_id++;
    r->users++;
    x->next = t->rxs;
    t->rxs = x;
    *id = x->id;
    pthread_mutex_unlock(&t->mu);
    return 0;
}

int kvt_expect(kvt_transport *t, kvt_region *r, uint64_t expected_bytes, uint64_t *id, eng_error *err)
{
    if (!r || r->t != t)
        return eng_fail(err, "kvtransfer: expect into a region of another transport");
    if (expected_bytes > r->len)
        return eng_fail(err, "kvtransfer: expecting %llu bytes but the region holds only %zu",
                        (unsigned long long)expected_bytes, r->len);
    return expect(t, r, NULL, 0, expected_bytes, NULL, id, err);
}

static int span_cmp(const void *a, const void *b)
{
    const kvt_span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

static int expect_spans(kvt_transport *t, kvt_region *r, const kvt_span *spans, int n, uint64_t expected_bytes,
                        const kvt_rx *guard, uint64_t *id, eng_error *err)
{
    if (!r || r->t != t)
        return eng_fail(err, "kvtransfer: expect into a region of another transport");
    if (n <= 0 || !spans)
        return eng_fail(err, "kvtransfer: expect with no spans (use kvt_expect for any)");
    if (expected_bytes > r->len)
        return eng_fail(err, "kvtransfer: expecting %llu bytes but the region holds only %zu",
                        (unsigned long long)expected_bytes, r->len);
    kvt_span *s = malloc(sizeof *s * (size_t)n);
    if (!s)
        return eng_fail(err, "kvtransfer: out of memory");
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (spans[i].off > r->len || spans[i].len > r->len - spans[i].off) {
            free(s);
            return eng_fail(err,
                            "kvtransfer: span [%llu, +%llu) lies outside the %zu-byte "
                            "region",
                            (unsigned long long)spans[i].off, (unsigned long long)spans[i].len, r->len);
        }
        if (spans[i].len)
            s[m++] = spans[i];
    }
    qsort(s, (size_t)m, sizeof *s, span_cmp);
    int k = 0;
    for (int i = 0; i < m; i++) {
        if (k > 0 && s[i].off <= s[k - 1].off + s[k - 1].len) { /* touching or overlapping */
            uint64_t end = s[i].off + s[i].len;
            if (end > s[k - 1].off + s[k - 1].len)
                s[k - 1].len = end - s[k - 1].off;
        } else {
            s[k++] = s[i];
        }
    }
    if (k == 0) {
        free(s);
        return eng_fail(err, "kvtransfer: expect with only empty spans");
    }
    return expect(t, r, s, k, expected_bytes, guard, id, err);
}

int kvt_expect_spans(kvt_transport *t, kvt_region *r, const kvt_span *spans, int n, uint64_t expected_bytes,
                     uint64_t *id, eng_error *err)
{
    return expect_spans(t, r, spans, n, expected_bytes, NULL, id, err);
}

/* Writes host's numeric addresses (IPv4-mapped IPv6 ones as IPv4, as accept reports them
 * on a dual-stack socket) into g->peers. */
static int resolve_peers(const char *host, kvt_rx *g, eng_error *err)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0)
        return eng_fail(err, "kvtransfer: cannot resolve the transfer's peer %.100s: %s", host, gai_strerror(rc));
    for (struct addrinfo *a = res; a && g->n_peers < (int)(sizeof g->peers / sizeof g->peers[0]); a = a->ai_next) {
        char num[64];
        if (kvt_numeric_addr(a->ai_addr, a->ai_addrlen, num, sizeof num) < 0)
            continue;
        int dup = 0;
        for (int i = 0; i < g->n_peers; i++)
            dup |= strcmp(g->peers[i], num) == 0;
        if (!dup)
            snprintf(g->peers[g->n_peers++], sizeof g->peers[0], "%s", num);
    }
    freeaddrinfo(res);
    if (g->n_peers == 0)
        return eng_fail(err, "kvtransfer: the transfer's peer %.100s has no usable address", host);
    return 0;
}

int kvt_expect_guarded(kvt_transport *t, kvt_region *r, const kvt_span *spans, int n, uint64_t expected_bytes,
                       const char *peer_host, uint64_t *id, kvt_secret *secret, eng_error *err)
{
    kvt_rx g = {0};
    if (peer_host && resolve_peers(peer_host, &g, err) < 0)
        return -1;
    if (getrandom(g.secret.bytes, sizeof g.secret.bytes, 0) != (ssize_t)sizeof g.secret.bytes)
        return eng_fail(err, "kvtransfer: no randomness for the transfer secret: %s", strerror(errno));
    if (expect_spans(t, r, spans, n, expected_bytes, &g, id, err) < 0)
        return -1;
    *secret = g.secret;
    return 0;
}

int kvt_numeric_addr(const struct sockaddr *sa, socklen_t len, char *out, size_t cap)
{
    struct sockaddr_in v4;
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)sa;
    if (sa->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
        v4 = (struct sockaddr_in){.sin_family = AF_INET};
        memcpy(&v4.sin_addr, &v6->sin6_addr.s6_addr[12], 4);
        sa = (const struct sockaddr *)&v4;
        len = sizeof v4;
    }
    return getnameinfo(sa, len, out, (socklen_t)cap, NULL, 0, NI_NUMERICHOST) == 0 ? 0 : -1;
}

/* Equal secrets, in time that does not depend on where they differ. */
static int secret_equal(const kvt_secret *a, const kvt_secret *b)
{
    volatile uint8_t diff = 0;
    for (size_t i = 0; i < sizeof a->bytes; i++)
        diff |= a->bytes[i] ^ b->bytes[i];
    return diff == 0;
}

/* kvt_expect_guarded's checks on a BEGIN for x; -1 with the reason (counted). */
static int begin_guard(kvt_transport *t, const kvt_rx *x, const char *conn_addr, const kvt_secret *secret, char *why,
                       size_t cap)
{
    static const kvt_secret none;
    if (!secret_equal(&x->secret, secret ? secret : &none)) {
        t->stats.refused_secret++;
        snprintf(why, cap, "transfer %" PRIu64 " refused: wrong transfer secret", x->id);
        return -1;
    }
    /* A transport that knows no source address (RDMA: the queue pair's peer was named
     * over the control plane) is judged by the secret alone. */
    int named = x->n_peers == 0 || !conn_addr;
    for (int i = 0; i < x->n_peers && conn_addr; i++)
        named |= strcmp(x->peers[i], conn_addr) == 0;
    if (!named) {
        t->stats.refused_peer++;
        snprintf(why, cap, "transfer %" PRIu64 " refused: the connection from %.64s is not the transfer's peer", x->id,
                 conn_addr ? conn_addr : "?");
        return -1;
    }
    return 0;
}

int kvt_spans_find(const kvt_span *spans, int n, uint64_t off, uint64_t len)
{
    int lo = 0, hi = n - 1, at = -1;
    while (lo <= hi) { /* the last span starting at or before off */
        int mid = lo + (hi - lo) / 2;
        if (spans[mid].off <= off) {
            at = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return at >= 0 && off - spans[at].off <= spans[at].len && len <= spans[at].len - (off - spans[at].off) ? at : -1;
}

/* ---------------------------------------------------------------- what transports call */

kvt_rx *kvt_rx_find(kvt_transport *t, uint64_t id)
{
    for (kvt_rx *x = t->rxs; x; x = x->next)
        if (x->id == id)
            return x;
    return NULL;
}

void kvt_rx_end(kvt_transport *t, kvt_rx *x, kvt_state st, const char *reason)
{
    if (x->state != KVT_PENDING)
        return;
    x->state = st;
    if (st == KVT_OK) {
        t->stats.recvs_ok++;
        t->stats.bytes_received += x->bytes;
        t->stats.recv_seconds += eng_now_s() - x->t_start;
    } else {
        t->stats.recvs_failed++;
        snprintf(x->reason, sizeof x->reason, "%s", reason);
    }
    if (t->notify)
        t->notify(t->notify_user, x->id, st);
    pthread_cond_broadcast(&t->cv);
}

kvt_rx *kvt_rx_begin(kvt_transport *t, uint64_t id, uint64_t region_id, void *conn, const char *conn_addr,
                     const kvt_secret *secret, int *refused, char *why, size_t cap)
{
    kvt_rx *x = kvt_rx_find(t, id);
    *refused = 0;
    if (!x) {
        t->stats.refused_unknown++;
        snprintf(why, cap,
                 "transfer %" PRIu64 " is not expected here (never opened, or "
                 "forgotten by the receiver)",
                 id);
        return NULL;
    }
    if (x->guarded && begin_guard(t, x, conn_addr, secret, why, cap) < 0) {
        *refused = 1;
        return NULL;
    }
    if (x->conn) {
        snprintf(why, cap, "transfer %" PRIu64 " was already begun", id);
        return NULL;
    }
    if (x->state != KVT_PENDING) {
        snprintf(why, cap, "transfer %" PRIu64 " already failed: %.200s", id, x->reason);
        return NULL;
    }
    if (x->region->id != region_id) {
        snprintf(why, cap,
                 "transfer %" PRIu64 " targets region %" PRIu64 ", the sender named "
                 "region %" PRIu64,
                 id, x->region->id, region_id);
        kvt_rx_end(t, x, KVT_FAILED, why);
        return NULL;
    }
    x->conn = conn;
    x->t_start = eng_now_s();
    return x;
}

int kvt_rx_run_ok(const kvt_rx *x, uint64_t off, uint64_t len, char *why, size_t cap)
{
    size_t size = x->region->len;
    if (off > size || len > size - off) {
        snprintf(why, cap, "run [%" PRIu64 ", +%" PRIu64 ") lies outside the %zu-byte region", off, len, size);
        return -1;
    }
    if (x->spans && kvt_spans_find(x->spans, x->n_spans, off, len) < 0) {
        snprintf(why, cap, "run [%" PRIu64 ", +%" PRIu64 ") lies outside the transfer's blocks", off, len);
        return -1;
    }
    return 0;
}

int kvt_rx_verify(const kvt_rx *x, uint64_t sent_bytes, uint64_t sent_sum, uint64_t got_sum, char *why, size_t cap)
{
    if (sent_bytes != x->bytes)
        snprintf(why, cap, "sender sent %" PRIu64 " bytes, %" PRIu64 " arrived", sent_bytes, x->bytes);
    else if (x->expected && x->bytes != x->expected)
        snprintf(why, cap, "%" PRIu64 " bytes arrived, the receiver expected %" PRIu64, x->bytes, x->expected);
    else if (got_sum != sent_sum)
        snprintf(why, cap, "checksum mismatch (XXH3 sender %016" PRIx64 ", receiver %016" PRIx64 ")", sent_sum,
                 got_sum);
    else
        return 0;
    return -1;
}

int kvt_rx_fail_conn(kvt_transport *t, const void *conn, const char *reason)
{
    int n = 0;
    for (kvt_rx *x = t->rxs; x; x = x->next) {
        if (x->conn == conn) {
            kvt_rx_end(t, x, KVT_FAILED, reason);
            x->conn = NULL;
            n++;
        }
    }
    return n;
}

/* ---------------------------------------------------------------- the receiving API */

kvt_state kvt_wait(kvt_transport *t, uint64_t id, int timeout_ms, eng_error *err)
{
    struct timespec dl;
    eng_deadline_after_ms(&dl, timeout_ms);
    pthread_mutex_lock(&t->mu);
    for (;;) {
        kvt_rx *x = kvt_rx_find(t, id);
        if (!x) {
            pthread_mutex_unlock(&t->mu);
            eng_fail(err, "kvtransfer: transfer %" PRIu64 " is unknown or forgotten", id);
            return KVT_FAILED;
        }
        if (x->state != KVT_PENDING) {
            kvt_state st = x->state;
            if (st == KVT_FAILED)
                eng_fail(err, "kvtransfer: transfer %" PRIu64 " failed: %s", id, x->reason);
            pthread_mutex_unlock(&t->mu);
            return st;
        }
        if (timeout_ms == 0 || !kvt_wait_until(t, &dl, timeout_ms)) {
            uint64_t got = x->bytes;
            pthread_mutex_unlock(&t->mu);
            eng_fail(err, "kvtransfer: transfer %" PRIu64 " still pending after %d ms (%" PRIu64 " bytes arrived)", id,
                     timeout_ms, got);
            return KVT_PENDING;
        }
    }
}

void kvt_forget(kvt_transport *t, uint64_t id)
{
    pthread_mutex_lock(&t->mu);
    kvt_rx **pp = &t->rxs;
    while (*pp && (*pp)->id != id)
        pp = &(*pp)->next;
    kvt_rx *x = *pp;
    if (!x) {
        pthread_mutex_unlock(&t->mu);
        return;
    }
    kvt_rx_end(t, x, KVT_FAILED, "forgotten by the receiver");
    *pp = x->next; /* from now on no transport thread finds it, so none starts a new write */
    if (t->ops->rx_forget)
        t->ops->rx_forget(t, x); /* the write in progress, if any */
    x->region->users--;
    pthread_mutex_unlock(&t->mu);
    rx_free(t, x);
}

void kvt_set_notify(kvt_transport *t, kvt_notify_fn fn, void *user)
{
    pthread_mutex_lock(&t->mu);
    t->notify = fn;
    t->notify_user = user;
    pthread_mutex_unlock(&t->mu);
}

/* ---------------------------------------------------------------- counters */

void kvt_count_send(kvt_transport *t, int ok, uint64_t bytes, double seconds)
{
    pthread_mutex_lock(&t->mu);
    if (ok) {
        t->stats.sends_ok++;
        t->stats.bytes_sent += bytes;
        t->stats.send_seconds += seconds;
    } else {
        t->stats.sends_failed++;
    }
    pthread_mutex_unlock(&t->mu);
}

void kvt_get_stats(kvt_transport *t, kvt_stats *out)
{
    pthread_mutex_lock(&t->mu);
    *out = t->stats;
    out->peers = 0;
    for (const kvt_peer *p = t->peers; p; p = p->next)
        out->peers++;
    pthread_mutex_unlock(&t->mu);
}

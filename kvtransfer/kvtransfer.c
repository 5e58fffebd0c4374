/* kvtransfer.c: the transport-independent entry points.
 *
 * Picking a transport, and the calls that move bytes: each checks its arguments once and
 * forwards to the transport's ops table, so that the TCP and RDMA transports share one
 * API and one set of caller-side rules; outgoing transfers are counted here. The
 * bookkeeping (regions, incoming transfers, counters) is in transfers.c. The descriptor
 * prefix parsing lives here because a worker must learn which transport a descriptor is
 * for before it has picked a transport. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport.h"

void kvt_destroy(kvt_transport *t)
{
    if (t)
        t->ops->destroy(t);
}

const char *kvt_name(const kvt_transport *t)
{
    return t->ops->name;
}

const char *kvt_choice(const kvt_transport *t)
{
    return t->choice[0] ? t->choice : t->ops->name;
}

int kvt_open(const char *which, const kvt_open_options *opt, kvt_transport **out, eng_error *err)
{
    kvt_open_options o = opt ? *opt : (kvt_open_options){.rdma.gid_index = -1};
    char dev[64] = "", why[200] = "";
    *out = NULL;
    if (!which)
        which = "auto";
    if (strcmp(which, "tcp") == 0) {
        if (kvt_tcp_create(&o.tcp, out, err) < 0)
            return -1;
        snprintf((*out)->choice, sizeof(*out)->choice, "tcp (asked for)");
        return 0;
    }
    if (strcmp(which, "rdma") == 0) {
        if (!kvt_rdma_probe(dev, sizeof dev, why, sizeof why))
            return eng_fail(err, "kvtransfer: %s; use --kv-transport tcp or auto", why);
        return kvt_rdma_create(&o.rdma, out, err);
    }
    if (strcmp(which, "auto") != 0)
        return eng_fail(err, "kvtransfer: unknown transport \"%.40s\" (auto, rdma or tcp)", which);
    if (kvt_rdma_probe(dev, sizeof dev, why, sizeof why)) {
        eng_error e;
        if (kvt_rdma_create(&o.rdma, out, &e) == 0)
            return 0;
        snprintf(why, sizeof why, "%.190s", e.msg); /* a device that cannot be used: say why */
    }
    if (kvt_tcp_create(&o.tcp, out, err) < 0)
        return -1;
    snprintf((*out)->choice, sizeof(*out)->choice, "tcp (auto: %.140s)", why);
    return 0;
}

int kvt_descriptor_transport(const void *desc, size_t len, char *name, size_t cap, eng_error *err)
{
    const char *s = desc;
    size_t plen = strlen(KVT_DESC_PREFIX);
    if (!desc || len <= plen || memcmp(s, KVT_DESC_PREFIX, plen) != 0)
        return eng_fail(err, "kvtransfer: not an endpoint descriptor (no \"kvt1\" prefix)");
    size_t n = 0;
    while (plen + n < len && s[plen + n] != ' ' && s[plen + n] != '\0')
        n++;
    if (n == 0 || n + 1 > cap)
        return eng_fail(err, "kvtransfer: descriptor names no transport or a too long one");
    memcpy(name, s + plen, n);
    name[n] = '\0';
    return 0;
}

int kvt_descriptor(kvt_transport *t, const kvt_region *r, void *buf, size_t cap, size_t *len, eng_error *err)
{
    if (!r || r->t != t)
        return eng_fail(err, "kvtransfer: descriptor asked for a region of another transport");
    return t->ops->descriptor(t, r, buf, cap, len, err);
}

int kvt_accept_hello(kvt_transport *t, const void *hello, size_t len, void *reply, size_t cap, size_t *reply_len,
                     eng_error *err)
{
    *reply_len = 0;
    if (len == 0)
        return 0;
    if (len > KVT_HELLO_MAX)
        return eng_fail(err, "kvtransfer: hello of %zu bytes is too long", len);
    return t->ops->accept(t, hello, len, reply, cap, reply_len, err);
}

int kvt_accept(kvt_transport *t, const void *hello, size_t len, eng_error *err)
{
    char reply[KVT_HELLO_MAX];
    size_t n;
    if (kvt_accept_hello(t, hello, len, reply, sizeof reply, &n, err) < 0)
        return -1;
    if (n > 0)
        return eng_fail(err,
                        "kvtransfer: the %s transport answers its hello; relay the reply "
                        "with kvt_accept_hello and kvt_peer_reply",
                        t->ops->name);
    return 0;
}

int kvt_connect(kvt_transport *t, const void *desc, size_t len, kvt_peer **out, eng_error *err)
{
    char name[32];
    if (kvt_descriptor_transport(desc, len, name, sizeof name, err) < 0)
        return -1;
    if (strcmp(name, t->ops->name) != 0)
        return eng_fail(err, "kvtransfer: descriptor is for transport \"%s\", this one is \"%s\"", name, t->ops->name);
    if (len > KVT_DESCRIPTOR_MAX)
        return eng_fail(err, "kvtransfer: descriptor of %zu bytes is too long", len);
    pthread_mutex_lock(&t->mu);
    /* Entries of receivers no longer used (a decode worker restarted under a new
     * descriptor, or gone) go here, so the cache holds only what is in use. */
    kvt_peer *expired = NULL;
    double now = eng_now_s();
    for (kvt_peer **pp = &t->peers; *pp && t->ops->peer_expired;) {
        kvt_peer *q = *pp;
        if (t->ops->peer_expired(q, now)) {
            *pp = q->next;
            q->next = expired;
            expired = q;
        } else {
            pp = &q->next;
        }
    }
    kvt_peer *p = t->peers;
    while (p && !(p->desc_len == len && memcmp(p->desc, desc, len) == 0))
        p = p->next;
    if (!p) {
        if (!(p = calloc(1, t->ops->peer_size))) {
            pthread_mutex_unlock(&t->mu);
            return eng_fail(err, "kvtransfer: out of memory");
        }
        p->t = t;
        if (t->ops->peer_init(p, desc, len, err) < 0) {
            pthread_mutex_unlock(&t->mu);
            free(p);
            return -1;
        }
        memcpy(p->desc, desc, len);
        p->desc_len = len;
        p->next = t->peers;
        t->peers = p;
    }
    p->handed_out = now;
    pthread_mutex_unlock(&t->mu);
    for (kvt_peer *q = expired, *next; q; q = next) {
        next = q->next;
        t->ops->peer_free(q);
        free(q);
    }
    if (t->ops->connect(p, err) < 0)
        return -1;
    *out = p;
    return 0;
}

size_t kvt_peer_hello(kvt_peer *p, void *buf, size_t cap)
{
    return p->t->ops->peer_hello(p, buf, cap);
}

int kvt_peer_reply(kvt_peer *p, const void *reply, size_t len, eng_error *err)
{
    if (len == 0)
        return 0;
    if (len > KVT_HELLO_MAX)
        return eng_fail(err, "kvtransfer: hello reply of %zu bytes is too long", len);
    return p->t->ops->peer_reply(p, reply, len, err);
}

int kvt_send_begin(kvt_peer *p, kvt_region *src, uint64_t id, const kvt_secret *secret, kvt_send **out, eng_error *err)
{
    if (!src || src->t != p->t)
        return eng_fail(err, "kvtransfer: send source is not a region of this transport");
    double t_start = eng_now_s();
    if (p->t->ops->send_begin(p, src, id, secret, out, err) < 0) {
        kvt_count_send(p->t, 0, 0, 0);
        return -1;
    }
    (*out)->t_start = t_start;
    return 0;
}

int kvt_send_write(kvt_send *s, uint64_t src_off, uint64_t dst_off, uint64_t len, eng_error *err)
{
    return s->t->ops->send_write(s, src_off, dst_off, len, err);
}

int kvt_send_finish(kvt_send *s, int timeout_ms, eng_error *err)
{
    kvt_transport *t = s->t;
    double t_start = s->t_start;
    uint64_t bytes = 0;
    int rc = t->ops->send_finish(s, timeout_ms, &bytes, err);
    kvt_count_send(t, rc == 0, bytes, eng_now_s() - t_start);
    return rc;
}

void kvt_send_abort(kvt_send *s, const char *reason)
{
    if (!s)
        return;
    kvt_transport *t = s->t;
    t->ops->send_abort(s, reason ? reason : "aborted by sender");
    kvt_count_send(t, 0, 0, 0);
}

void kvt_test_corrupt_next_write(kvt_send *s)
{
    s->corrupt_next = 1;
}

/* kvtransfer.c: the transport-independent entry points.
 *
 * Each public call checks its arguments once and forwards to the transport's ops table,
 * so that the TCP and (later) RDMA transports share one API and one set of caller-side
 * rules. The descriptor prefix parsing lives here because a worker must learn which
 * transport a descriptor is for before it has picked a transport. */
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
        snprintf((*out)->choice, sizeof (*out)->choice, "tcp (asked for)");
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
    snprintf((*out)->choice, sizeof (*out)->choice, "tcp (auto: %.140s)", why);
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

int kvt_register(kvt_transport *t, void *base, size_t len, kvt_region **out, eng_error *err)
{
    if (!base || len == 0)
        return eng_fail(err, "kvtransfer: cannot register an empty memory region");
    return t->ops->reg(t, base, len, out, err);
}

int kvt_deregister(kvt_transport *t, kvt_region *r, eng_error *err)
{
    if (!r)
        return 0;
    if (r->t != t)
        return eng_fail(err, "kvtransfer: region belongs to another transport");
    return t->ops->dereg(t, r, err);
}

int kvt_descriptor(kvt_transport *t, const kvt_region *r, void *buf, size_t cap, size_t *len,
                   eng_error *err)
{
    if (!r || r->t != t)
        return eng_fail(err, "kvtransfer: descriptor asked for a region of another transport");
    return t->ops->descriptor(t, r, buf, cap, len, err);
}

int kvt_expect(kvt_transport *t, kvt_region *r, uint64_t expected_bytes, uint64_t *id,
               eng_error *err)
{
    if (!r || r->t != t)
        return eng_fail(err, "kvtransfer: expect into a region of another transport");
    if (expected_bytes > r->len)
        return eng_fail(err, "kvtransfer: expecting %llu bytes but the region holds only %zu",
                        (unsigned long long)expected_bytes, r->len);
    return t->ops->expect(t, r, NULL, 0, expected_bytes, id, err);
}

static int span_cmp(const void *a, const void *b)
{
    const kvt_span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

int kvt_expect_spans(kvt_transport *t, kvt_region *r, const kvt_span *spans, int n,
                     uint64_t expected_bytes, uint64_t *id, eng_error *err)
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
            return eng_fail(err, "kvtransfer: span [%llu, +%llu) lies outside the %zu-byte "
                            "region", (unsigned long long)spans[i].off,
                            (unsigned long long)spans[i].len, r->len);
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
    return t->ops->expect(t, r, s, k, expected_bytes, id, err);
}

int kvt_spans_cover(const kvt_span *spans, int n, uint64_t off, uint64_t len)
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
    return at >= 0 && off - spans[at].off <= spans[at].len &&
           len <= spans[at].len - (off - spans[at].off);
}

kvt_state kvt_wait(kvt_transport *t, uint64_t id, int timeout_ms, eng_error *err)
{
    return t->ops->wait(t, id, timeout_ms, err);
}

void kvt_forget(kvt_transport *t, uint64_t id)
{
    t->ops->forget(t, id);
}

void kvt_set_notify(kvt_transport *t, kvt_notify_fn fn, void *user)
{
    t->ops->set_notify(t, fn, user);
}

int kvt_accept_hello(kvt_transport *t, const void *hello, size_t len, void *reply, size_t cap,
                     size_t *reply_len, eng_error *err)
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
        return eng_fail(err, "kvtransfer: the %s transport answers its hello; relay the reply "
                        "with kvt_accept_hello and kvt_peer_reply", t->ops->name);
    return 0;
}

int kvt_connect(kvt_transport *t, const void *desc, size_t len, kvt_peer **out, eng_error *err)
{
    char name[32];
    if (kvt_descriptor_transport(desc, len, name, sizeof name, err) < 0)
        return -1;
    if (strcmp(name, t->ops->name) != 0)
        return eng_fail(err, "kvtransfer: descriptor is for transport \"%s\", this one is \"%s\"",
                        name, t->ops->name);
    return t->ops->connect(t, desc, len, out, err);
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

int kvt_send_begin(kvt_peer *p, kvt_region *src, uint64_t id, kvt_send **out, eng_error *err)
{
    if (!src || src->t != p->t)
        return eng_fail(err, "kvtransfer: send source is not a region of this transport");
    return p->t->ops->send_begin(p, src, id, out, err);
}

int kvt_send_write(kvt_send *s, uint64_t src_off, uint64_t dst_off, uint64_t len, eng_error *err)
{
    return s->t->ops->send_write(s, src_off, dst_off, len, err);
}

int kvt_send_finish(kvt_send *s, int timeout_ms, eng_error *err)
{
    return s->t->ops->send_finish(s, timeout_ms, err);
}

void kvt_send_abort(kvt_send *s, const char *reason)
{
    if (s)
        s->t->ops->send_abort(s, reason ? reason : "aborted by sender");
}

void kvt_get_stats(kvt_transport *t, kvt_stats *out)
{
    t->ops->get_stats(t, out);
}

#ifdef KVT_TEST_HOOKS
void kvt_test_corrupt_next_write(kvt_send *s)
{
    s->corrupt_next = 1;
}
#endif

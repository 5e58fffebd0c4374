/* ep_rdma.c: the EP exchange's payloads over RDMA (ep_rdma.h), through kvtransfer's RDMA
 * transport, so that the verbs code (queue pairs, one-sided writes, checksums, dead-peer
 * detection) lives once, in kvtransfer/rdma.c.
 *
 * Each rank registers a receive region with EP_RDMA_SLOTS slots per peer and a send
 * region of one slot (the engine sends one message at a time). A slot is one expected
 * kvtransfer transfer (kvt_expect_spans: writes may land only in that slot); its id is
 * the peer's credit to write one message there. A message goes: copy into the send
 * region, kvt_send_begin / write / finish (finish returns once the receiver verified
 * every byte), then its header over the mesh's TCP connection names the transfer; the
 * receiver copies the payload out, forgets the transfer and issues a new one for the
 * slot, which goes back to the sender as a credit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ep_rdma.h"

struct ep_rdma {
    kvt_transport *t;
    int size, rank;
    size_t slot;
    char *recv_mem, *send_mem;
    kvt_region *recv, *send;
    char desc[KVT_DESCRIPTOR_MAX];
    size_t desc_len;
    kvt_peer *peer[WRK_EP_MAX_SIZE];
    uint64_t issued[WRK_EP_MAX_SIZE][EP_RDMA_SLOTS]; /* transfer ids each peer may write; 0 none */
};

static void *page_alloc(size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *p = aligned_alloc(page, (len + page - 1) / page * page);
    if (p)
        memset(p, 0, len);
    return p;
}

int ep_rdma_open(const ep_rdma_options *opt, ep_rdma **out, char *choice, size_t cap, eng_error *err)
{
    *out = NULL;
    const char *which = opt->which ? opt->which : "auto";
    if (!strcmp(which, "tcp")) {
        snprintf(choice, cap, "tcp");
        return 0;
    }
    if (strcmp(which, "auto") && strcmp(which, "rdma"))
        return eng_fail(err, "--ep-transport must be auto, tcp or rdma, not %s", which);
    kvt_rdma_options ro = {.device = opt->device, .gid_index = -1, .io_timeout_ms = opt->timeout_ms};
    kvt_transport *t = NULL;
    eng_error e;
    if (kvt_rdma_create(&ro, &t, &e) < 0) {
        if (!strcmp(which, "rdma"))
            return eng_fail(err, "EP exchange: %s; use --ep-transport tcp or auto", e.msg);
        snprintf(choice, cap, "tcp (auto: %s)", e.msg);
        return 0;
    }
    ep_rdma *r = calloc(1, sizeof *r);
    if (!r) {
        kvt_destroy(t);
        return eng_fail(err, "out of memory");
    }
    r->t = t;
    r->size = opt->size;
    r->rank = opt->rank;
    r->slot = EP_RDMA_SLOT_BYTES;
    size_t recv_len = (size_t)opt->size * EP_RDMA_SLOTS * r->slot;
    r->recv_mem = page_alloc(recv_len);
    r->send_mem = page_alloc(r->slot);
    if (!r->recv_mem || !r->send_mem) {
        eng_fail(err, "out of memory for the EP exchange's RDMA buffers");
        goto fail;
    }
    if (kvt_register(t, r->recv_mem, recv_len, &r->recv, err) < 0 ||
        kvt_register(t, r->send_mem, r->slot, &r->send, err) < 0 ||
        kvt_descriptor(t, r->recv, r->desc, sizeof r->desc, &r->desc_len, err) < 0)
        goto fail;
    snprintf(choice, cap, "%s", kvt_choice(t));
    *out = r;
    return 0;
fail:
    ep_rdma_close(r);
    return -1;
}

void ep_rdma_reset(ep_rdma *r)
{
    for (int p = 0; p < r->size; p++)
        for (int s = 0; s < EP_RDMA_SLOTS; s++)
            if (r->issued[p][s]) {
                kvt_forget(r->t, r->issued[p][s]);
                r->issued[p][s] = 0;
            }
}

void ep_rdma_close(ep_rdma *r)
{
    if (!r)
        return;
    ep_rdma_reset(r);
    eng_error e;
    if (r->recv)
        kvt_deregister(r->t, r->recv, &e);
    if (r->send)
        kvt_deregister(r->t, r->send, &e);
    kvt_destroy(r->t);
    free(r->recv_mem);
    free(r->send_mem);
    free(r);
}

size_t ep_rdma_slot_bytes(const ep_rdma *r)
{
    return r->slot;
}

void ep_rdma_stats(ep_rdma *r, uint64_t *sent, uint64_t *received)
{
    kvt_stats st;
    kvt_get_stats(r->t, &st);
    *sent = st.bytes_sent;
    *received = st.bytes_received;
}

int ep_rdma_issue(ep_rdma *r, int peer, int slot, uint64_t *id, eng_error *err)
{
    if (r->issued[peer][slot])
        kvt_forget(r->t, r->issued[peer][slot]);
    r->issued[peer][slot] = 0;
    kvt_span span = {.off = ((size_t)peer * EP_RDMA_SLOTS + (size_t)slot) * r->slot, .len = r->slot};
    if (kvt_expect_spans(r->t, r->recv, &span, 1, 0, id, err) < 0)
        return -1;
    r->issued[peer][slot] = *id;
    return 0;
}

/* An offer: u64 ids[EP_RDMA_SLOTS], then the descriptor of our receive region. */
int ep_rdma_offer(ep_rdma *r, int peer, void *buf, size_t cap, size_t *len, eng_error *err)
{
    uint64_t ids[EP_RDMA_SLOTS];
    if (cap < sizeof ids + r->desc_len)
        return eng_fail(err, "EP RDMA offer buffer too small");
    for (int s = 0; s < EP_RDMA_SLOTS; s++)
        if (ep_rdma_issue(r, peer, s, &ids[s], err) < 0)
            return -1;
    memcpy(buf, ids, sizeof ids);
    memcpy((char *)buf + sizeof ids, r->desc, r->desc_len);
    *len = sizeof ids + r->desc_len;
    return 0;
}

int ep_rdma_take_offer(ep_rdma *r, int peer, const void *offer, size_t len, uint64_t ids[EP_RDMA_SLOTS], void *hello,
                       size_t cap, size_t *hello_len, eng_error *err)
{
    if (len <= EP_RDMA_SLOTS * sizeof(uint64_t) || len > EP_RDMA_SLOTS * sizeof(uint64_t) + KVT_DESCRIPTOR_MAX)
        return eng_fail(err, "rank %d sent a malformed RDMA offer (%zu bytes)", peer, len);
    memcpy(ids, offer, EP_RDMA_SLOTS * sizeof(uint64_t));
    const char *desc = (const char *)offer + EP_RDMA_SLOTS * sizeof(uint64_t);
    if (kvt_connect(r->t, desc, len - EP_RDMA_SLOTS * sizeof(uint64_t), &r->peer[peer], err) < 0)
        return -1;
    *hello_len = kvt_peer_hello(r->peer[peer], hello, cap);
    return 0;
}

int ep_rdma_accept(ep_rdma *r, const void *hello, size_t len, void *reply, size_t cap, size_t *reply_len,
                   eng_error *err)
{
    return kvt_accept_hello(r->t, hello, len, reply, cap, reply_len, err);
}

int ep_rdma_take_reply(ep_rdma *r, int peer, const void *reply, size_t len, eng_error *err)
{
    return kvt_peer_reply(r->peer[peer], reply, len, err);
}

int ep_rdma_write(ep_rdma *r, int peer, uint64_t id, int slot, const void *const *parts, const size_t *lens,
                  int n_parts, int timeout_ms, eng_error *err)
{
    size_t total = 0;
    for (int i = 0; i < n_parts; i++) {
        memcpy(r->send_mem + total, parts[i], lens[i]);
        total += lens[i];
    }
    kvt_send *s;
    uint64_t dst = ((uint64_t)r->rank * EP_RDMA_SLOTS + (uint64_t)slot) * r->slot;
    if (kvt_send_begin(r->peer[peer], r->send, id, NULL, &s, err) < 0)
        return -1;
    if (kvt_send_write(s, 0, dst, total, err) < 0) {
        kvt_send_abort(s, err->msg);
        return -1;
    }
    return kvt_send_finish(s, timeout_ms, err);
}

int ep_rdma_read(ep_rdma *r, int peer, uint64_t id, size_t len, int timeout_ms, void **data, int *slot, eng_error *err)
{
    *data = NULL;
    int s = 0;
    while (s < EP_RDMA_SLOTS && r->issued[peer][s] != id)
        s++;
    if (!id || s == EP_RDMA_SLOTS || len > r->slot)
        return eng_fail(err, "rank %d named RDMA transfer %llu (%zu bytes) that it may not use", peer,
                        (unsigned long long)id, len);
    kvt_state st = kvt_wait(r->t, id, timeout_ms, err);
    if (st == KVT_PENDING)
        return eng_fail(err, "rank %d: RDMA transfer %llu did not complete in time", peer, (unsigned long long)id);
    if (st != KVT_OK)
        return -1;
    if (!(*data = malloc(len ? len : 1)))
        return eng_fail(err, "out of memory");
    memcpy(*data, r->recv_mem + ((size_t)peer * EP_RDMA_SLOTS + (size_t)s) * r->slot, len);
    kvt_forget(r->t, id);
    r->issued[peer][s] = 0;
    *slot = s;
    return 0;
}

/* ep_rdma.h: the EP exchange's payloads over RDMA (ep_rdma.c), internal to the mesh.
 *
 * The mesh (ep_mesh.c) keeps its TCP connections for the handshake, the message headers
 * and the credits; with an RDMA device the payloads of DISPATCH and COMBINE messages go by
 * RDMA WRITE into a slot the receiver has set aside for the sender. A payload larger than a
 * slot, or an empty one, travels inline on the TCP connection as without RDMA.
 *
 * Forming a group (mesh thread, no engine call using the mesh): each rank sends every peer
 * an offer (ep_rdma_offer: its receive region's descriptor and one credit per slot), the
 * peer answers with its queue pair's hello (ep_rdma_take_offer), which the rank accepts
 * (ep_rdma_accept) and replies to (ep_rdma_take_reply). A broken group forgets every
 * credit it issued (ep_rdma_reset); the next formation issues new ones. */
#ifndef WRK_EP_RDMA_H
#define WRK_EP_RDMA_H

#include <stddef.h>
#include <stdint.h>

#include "ep.h"
#include "kvtransfer.h"

#define EP_RDMA_SLOTS 2                      /* per peer: one can land while the previous is read */
#define EP_RDMA_SLOT_BYTES ((size_t)4 << 20) /* the largest payload that goes by RDMA */

typedef struct ep_rdma ep_rdma;

typedef struct ep_rdma_options {
    const char *which;  /* "auto" (RDMA when a device works, else TCP), "tcp", "rdma"; NULL = auto */
    const char *device; /* verbs device; NULL = the first with an active port */
    int size, rank;
    int timeout_ms; /* the transport's io timeout */
} ep_rdma_options;

/* *out NULL: the exchange stays on TCP (which "tcp", or "auto" without a device). choice
 * gets one line for the log: "rdma (rxe0 port 1, gid 1)", "tcp (auto: ...)". */
int ep_rdma_open(const ep_rdma_options *opt, ep_rdma **out, char *choice, size_t cap, eng_error *err);
void ep_rdma_close(ep_rdma *r); /* NULL is fine */
void ep_rdma_reset(ep_rdma *r);
size_t ep_rdma_slot_bytes(const ep_rdma *r);
/* Payload bytes that went over RDMA, verified by the receiver. */
void ep_rdma_stats(ep_rdma *r, uint64_t *sent, uint64_t *received);

int ep_rdma_offer(ep_rdma *r, int peer, void *buf, size_t cap, size_t *len, eng_error *err);
int ep_rdma_take_offer(ep_rdma *r, int peer, const void *offer, size_t len, uint64_t ids[EP_RDMA_SLOTS], void *hello,
                       size_t cap, size_t *hello_len, eng_error *err);
int ep_rdma_accept(ep_rdma *r, const void *hello, size_t len, void *reply, size_t cap, size_t *reply_len,
                   eng_error *err);
int ep_rdma_take_reply(ep_rdma *r, int peer, const void *reply, size_t len, eng_error *err);

/* A new credit for slot of peer (the old one, if any, is forgotten). */
int ep_rdma_issue(ep_rdma *r, int peer, int slot, uint64_t *id, eng_error *err);
/* Writes the parts (at most a slot in all) into peer's slot under credit id; returns once
 * the peer verified them. */
int ep_rdma_write(ep_rdma *r, int peer, uint64_t id, int slot, const void *const *parts, const size_t *lens,
                  int n_parts, int timeout_ms, eng_error *err);
/* The len bytes peer wrote under credit id (waiting up to timeout_ms for the transfer to
 * be verified), malloc'd into *data; the credit is used up and *slot is free again. */
int ep_rdma_read(ep_rdma *r, int peer, uint64_t id, size_t len, int timeout_ms, void **data, int *slot, eng_error *err);

#endif

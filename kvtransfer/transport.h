/* transport.h: what a transport implements (internal to kvtransfer/).
 *
 * kvtransfer.h's calls dispatch through the ops table found in every handle, so each
 * transport (tcp.c, rdma.c) is one file with its own ops and a create function, and callers keep
 * using the same kvt_* calls. Each implementation embeds the base structs below as the
 * first member of its own structs.
 *
 * What the interface promises and the RDMA transport keeps (rdma.c's header says how):
 *  - descriptor: "kvt1 rdma ..." with what a writer needs (GID, rkey, base address, size);
 *  - connect/hello/accept_hello/peer_reply: the RC queue pairs' QPN, PSN, GID and MTU go
 *    one way in the hello and the other way in the reply, over the control plane;
 *  - finish: the notice carries the byte count, the XXH3-64 of the payload in write order,
 *    and whatever the receiver needs to recompute it (with one-sided writes: the runs);
 *  - forget: once it returns, no byte of that transfer may land. One-sided writes cannot be
 *    refused per run, so rdma.c fences them: writes start only after the receiver bound the
 *    transfer to one queue pair (BEGIN/GO), and forgetting a bound transfer that FINISH or
 *    ABORT has not closed destroys that queue pair (failing its other transfers);
 *  - a peer gone or a queue pair in error fails every transfer in flight on it. */
#ifndef KVT_TRANSPORT_H
#define KVT_TRANSPORT_H

#include "kvtransfer.h"

typedef struct kvt_ops {
    const char *name;
    void (*destroy)(kvt_transport *t);
    int (*reg)(kvt_transport *t, void *base, size_t len, kvt_region **out, eng_error *err);
    int (*dereg)(kvt_transport *t, kvt_region *r, eng_error *err);
    int (*descriptor)(kvt_transport *t, const kvt_region *r, void *buf, size_t cap, size_t *len,
                      eng_error *err);
    /* spans: sorted, merged, inside the region, owned by the callee from now (NULL: any) */
    int (*expect)(kvt_transport *t, kvt_region *r, kvt_span *spans, int n_spans,
                  uint64_t expected_bytes, uint64_t *id, eng_error *err);
    kvt_state (*wait)(kvt_transport *t, uint64_t id, int timeout_ms, eng_error *err);
    void (*forget)(kvt_transport *t, uint64_t id);
    void (*set_notify)(kvt_transport *t, kvt_notify_fn fn, void *user);
    int (*accept)(kvt_transport *t, const void *hello, size_t len, void *reply, size_t cap,
                  size_t *reply_len, eng_error *err);
    int (*connect)(kvt_transport *t, const void *desc, size_t len, kvt_peer **out, eng_error *err);
    size_t (*peer_hello)(kvt_peer *p, void *buf, size_t cap);
    int (*peer_reply)(kvt_peer *p, const void *reply, size_t len, eng_error *err);
    int (*send_begin)(kvt_peer *p, kvt_region *src, uint64_t id, kvt_send **out, eng_error *err);
    int (*send_write)(kvt_send *s, uint64_t src_off, uint64_t dst_off, uint64_t len,
                      eng_error *err);
    int (*send_finish)(kvt_send *s, int timeout_ms, eng_error *err);
    void (*send_abort)(kvt_send *s, const char *reason);
    void (*get_stats)(kvt_transport *t, kvt_stats *out);
} kvt_ops;

struct kvt_transport {
    const kvt_ops *ops;
    char choice[160]; /* kvt_choice(): set by kvt_open or the create function */
};

struct kvt_region {
    kvt_transport *t;
    char *base;
    size_t len;
};

struct kvt_peer {
    kvt_transport *t;
};

struct kvt_send {
    kvt_transport *t;
    int corrupt_next; /* set only by kvt_test_corrupt_next_write (test builds) */
};

/* 1 when [off, off + len) lies inside one of the n sorted, merged spans. */
int kvt_spans_cover(const kvt_span *spans, int n, uint64_t off, uint64_t len);

/* Every descriptor starts with "kvt1 <transport> ", so any transport can tell whose it is. */
#define KVT_DESC_PREFIX "kvt1 "

#endif

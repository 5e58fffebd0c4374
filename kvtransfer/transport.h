/* transport.h: what a transport implements, and the bookkeeping they share (internal to
 * kvtransfer/).
 *
 * kvtransfer.h's calls dispatch through the ops table found in every handle, so each
 * transport (tcp.c, rdma.c) is one file with its own ops and a create function, and callers keep
 * using the same kvt_* calls. Each implementation embeds the base structs below as the
 * first member of its own structs.
 *
 * Everything that is not moving bytes lives once: registered regions, incoming transfers
 * (expect, begin, run checks, verdict, wait, forget), the notify hook and the counters in
 * transfers.c; the cache of peers (one per descriptor) in kvtransfer.c. A transport calls the kvt_rx_* helpers below
 * from its own threads, always with t->mu held, and moves the bytes.
 *
 * What the interface promises and the RDMA transport keeps (rdma.c's header says how):
 *  - descriptor: "kvt1 rdma ..." with what a writer needs to reach the region (GID, base
 *    address, size); no remote key: each transfer's keys travel in its SPANS messages;
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

#include <pthread.h>
#include <sys/socket.h>
#include <time.h>

#include "common/clock.h"
#include "kvtransfer.h"

typedef struct kvt_rx kvt_rx;

typedef struct kvt_ops {
    const char *name;
    size_t region_size; /* the transport's struct that embeds kvt_region (first member) */
    size_t rx_size;     /* the transport's struct that embeds kvt_rx (first member) */
    size_t peer_size;   /* the transport's struct that embeds kvt_peer (first member) */
    void (*destroy)(kvt_transport *t);
    /* Optional: makes r's memory reachable for the transport (RDMA: registers it with the
     * device) and undoes that; called without t->mu. */
    int (*region_add)(kvt_transport *t, kvt_region *r, eng_error *err);
    void (*region_drop)(kvt_transport *t, kvt_region *r);
    int (*descriptor)(kvt_transport *t, const kvt_region *r, void *buf, size_t cap, size_t *len, eng_error *err);
    /* Optional, with t->mu held, x already failed and unlinked: returns once the transport
     * writes no byte of x any more (a reader finishing its chunk, a queue pair destroyed). */
    void (*rx_forget)(kvt_transport *t, kvt_rx *x);
    void (*rx_free)(kvt_rx *x); /* optional: frees what the transport hung on x */
    int (*accept)(kvt_transport *t, const void *hello, size_t len, void *reply, size_t cap, size_t *reply_len,
                  eng_error *err);
    /* A new peer for descriptor desc (already checked to be this transport's): reads the
     * descriptor into p, connects nothing yet. */
    int (*peer_init)(kvt_peer *p, const void *desc, size_t len, eng_error *err);
    /* Makes p's connection live: nothing when it is, a new one when there is none or it
     * broke. */
    int (*connect)(kvt_peer *p, eng_error *err);
    size_t (*peer_hello)(kvt_peer *p, void *buf, size_t cap);
    int (*peer_reply)(kvt_peer *p, const void *reply, size_t len, eng_error *err);
    /* Optional, with t->mu held: 1 when p may be freed now (its connection closed for
     * idling, nothing queued or open on it, no connect under way, and neither used nor
     * handed out by kvt_connect for the idle time); kvt_connect then unlinks it and calls
     * peer_free without t->mu. Without it, peers live until destroy. */
    int (*peer_expired)(kvt_peer *p, double now);
    void (*peer_free)(kvt_peer *p); /* what the transport hung on p, not p itself */
    /* secret: NULL sends zeros */
    int (*send_begin)(kvt_peer *p, kvt_region *src, uint64_t id, const kvt_secret *secret, kvt_send **out,
                      eng_error *err);
    int (*send_write)(kvt_send *s, uint64_t src_off, uint64_t dst_off, uint64_t len, eng_error *err);
    /* Frees s; *bytes: the payload bytes it sent. */
    int (*send_finish)(kvt_send *s, int timeout_ms, uint64_t *bytes, eng_error *err);
    void (*send_abort)(kvt_send *s, const char *reason);
} kvt_ops;

struct kvt_transport {
    const kvt_ops *ops;
    char choice[160]; /* kvt_choice(): set by kvt_open or the create function */
    /* The one state mutex: guards what follows and every table of the transport; never
     * held across a blocking send or recv. cv: any transfer changed state, or whatever
     * else the transport's threads wait for. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t next_region_id, next_transfer_id;
    kvt_region *regions;
    kvt_rx *rxs;
    kvt_peer *peers; /* one per descriptor, cached until destroy (which frees them) */
    kvt_notify_fn notify;
    void *notify_user;
    kvt_stats stats;
};

struct kvt_region {
    kvt_transport *t;
    char *base;
    size_t len;
    uint64_t id; /* named in descriptors */
    int users;   /* transfers (either direction) that use it; guarded by t->mu */
    kvt_region *next;
};

/* An incoming transfer, from kvt_expect to kvt_forget. Guarded by t->mu. */
struct kvt_rx {
    uint64_t id;
    kvt_region *region;
    uint64_t expected; /* 0: any count */
    kvt_span *spans;   /* where it may write (sorted, merged); NULL: anywhere in the region */
    int n_spans;
    int guarded; /* kvt_expect_guarded: BEGIN must carry secret (and come from peers) */
    kvt_secret secret;
    char peers[4][64]; /* numeric addresses of the named peer host; n_peers 0: any */
    int n_peers;
    kvt_state state;
    char reason[300];
    void *conn;     /* the transport's connection it was begun on; NULL before and after */
    uint64_t bytes; /* payload bytes that arrived (the transport counts them) */
    double t_start; /* begun */
    kvt_rx *next;
};

struct kvt_peer {
    kvt_transport *t;
    char desc[KVT_DESCRIPTOR_MAX]; /* the descriptor it was made for: the cache's key */
    size_t desc_len;
    double handed_out; /* kvt_connect last returned it (eng_now_s) */
    kvt_peer *next;
};

struct kvt_send {
    kvt_transport *t;
    double t_start;   /* kvt_send_begin called */
    int corrupt_next; /* set only by kvt_test_corrupt_next_write */
};

/* For tests only (they reach this header through tandem_kvtransfer_internal): the next run
 * the TCP transport sends for s has one byte flipped on the wire after it was checksummed,
 * so the receiver must reject the transfer. */
void kvt_test_corrupt_next_write(kvt_send *s);

/* ---- life (a create function calls init before anything else uses t, destroy calls fini
 * after its threads are gone; fini frees the regions and transfers left) */
void kvt_transport_init(kvt_transport *t, const kvt_ops *ops);
void kvt_transport_fini(kvt_transport *t);

/* ---- receiving, all with t->mu held */
kvt_rx *kvt_rx_find(kvt_transport *t, uint64_t id);
/* The sender's BEGIN for id on conn (from numeric address conn_addr, NULL when the
 * transport cannot tell), naming region region_id and carrying secret: binds the transfer
 * to conn and returns it, or returns NULL with the refusal for the sender in why. *refused
 * is set to 1 when the refusal is one of kvt_expect_guarded's (counted in the stats): the
 * transport must then close the connection. */
kvt_rx *kvt_rx_begin(kvt_transport *t, uint64_t id, uint64_t region_id, void *conn, const char *conn_addr,
                     const kvt_secret *secret, int *refused, char *why, size_t cap);
/* 0 when a run [off, off + len) may land for x; -1 with the reason in why. */
int kvt_rx_run_ok(const kvt_rx *x, uint64_t off, uint64_t len, char *why, size_t cap);
/* The verdict on a finished transfer whose x->bytes arrived hashing to got_sum: 0 when they
 * match what the sender reports and what the receiver expected; -1 with the reason. */
int kvt_rx_verify(const kvt_rx *x, uint64_t sent_bytes, uint64_t sent_sum, uint64_t got_sum, char *why, size_t cap);
/* Ends a pending transfer (KVT_OK or KVT_FAILED with reason): counts it, notifies, wakes
 * waiters. Does nothing to one that already ended. */
void kvt_rx_end(kvt_transport *t, kvt_rx *x, kvt_state st, const char *reason);
/* Connection conn is gone: fails its pending transfers with reason and unbinds all of
 * them. Returns how many were bound. */
int kvt_rx_fail_conn(kvt_transport *t, const void *conn, const char *reason);
/* The numeric address of sa (an IPv4-mapped IPv6 one as IPv4); -1 when it has none. */
int kvt_numeric_addr(const struct sockaddr *sa, socklen_t len, char *out, size_t cap);
/* The largest registered region's size. */
size_t kvt_largest_region(kvt_transport *t);

/* Counts an outgoing transfer that ended (ok: the receiver verified its bytes). Without
 * t->mu. */
void kvt_count_send(kvt_transport *t, int ok, uint64_t bytes, double seconds);

/* The index of the one of the n sorted, merged spans that [off, off + len) lies inside;
 * -1 when none holds all of it. */
int kvt_spans_find(const kvt_span *spans, int n, uint64_t off, uint64_t len);

/* Waits on t->cv (t->mu held) until woken or the deadline (eng_deadline_after_ms) passed;
 * ms < 0: no deadline. 0 when it passed. */
int kvt_wait_until(kvt_transport *t, const struct timespec *deadline, int ms);

/* Every descriptor starts with "kvt1 <transport> ", so any transport can tell whose it is. */
#define KVT_DESC_PREFIX "kvt1 "

#endif

/* kvtransfer.h: moving KV-cache bytes from one process's memory into another's.
 *
 * The transport interface that the workers code against, implemented by TCP (tcp.c) and
 * RDMA (rdma.c: libibverbs RC queue pairs and one-sided writes, built when libibverbs is
 * installed); kvt_open picks one. kvtransfer knows memory regions and byte runs, never
 * requests or models.
 *
 * Receiver (decode worker):
 *   kvt_register(t, pool_base, pool_bytes, &region)      once, the whole KV pool
 *   kvt_descriptor(t, region, buf, ...)                 opaque bytes for the KvTarget
 *   kvt_expect_spans(t, region, spans, n, bytes, &id)   per request, BEFORE handing out the
 *                                                       target; writes may land only in the
 *                                                       request's blocks (kvt_expect: anywhere)
 *   kvt_wait(t, id, timeout_ms, err)                    (or kvt_set_notify) -> KVT_OK / KVT_FAILED
 *   kvt_forget(t, id)                                   always, when done with the id; after it
 *                                                       returns no byte of that transfer is written
 * Sender (prefill worker):
 *   kvt_register(t, pool_base, pool_bytes, &region)      once, its own KV pool (source)
 *   kvt_connect(t, descriptor, len, &peer)              cached per receiver, reused
 *   kvt_peer_hello(peer, ...)                           if it returns bytes, deliver them to the
 *                                                       receiver's kvt_accept_hello() over the
 *                                                       control plane and hand its reply to
 *                                                       kvt_peer_reply(), all before the first
 *                                                       write (TCP: no hello; RDMA: the two
 *                                                       queue pairs' parameters, both ways)
 *   kvt_send_begin(peer, region, id, &send)
 *   kvt_send_write(send, src_off, dst_off, len) ...     per contiguous run, as each layer is done;
 *                                                       queued, returns at once (compute overlaps)
 *   kvt_send_finish(send, timeout_ms)                   completion notice (byte count + XXH3-64 of
 *                                                       all bytes in write order); returns 0 only
 *                                                       once the receiver verified them
 *   or kvt_send_abort(send, reason)                     the receiver's transfer fails
 *
 * Memory rules: the source bytes of a write must stay unchanged until finish/abort returns.
 * The receiver writes only into its registered region (every run is bounds-checked; a bad
 * run fails the transfer) and only while the transfer is expected and not forgotten.
 *
 * Failure rules: a peer that disconnects fails every transfer in flight on that connection
 * on both sides; a sender blocked by a peer that stopped reading gives up after the
 * transport's io timeout; kvt_wait and kvt_send_finish take a timeout as the last resort.
 *
 * Thread safety: every call may come from any thread; one kvt_send is used by one thread
 * at a time. All functions that can fail return 0 / -1 with one line in err. */
#ifndef KVT_KVTRANSFER_H
#define KVT_KVTRANSFER_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef struct kvt_transport kvt_transport;
typedef struct kvt_region kvt_region; /* a registered memory region */
typedef struct kvt_peer kvt_peer;     /* sender's cached connection to one receiver */
typedef struct kvt_send kvt_send;     /* one outgoing transfer */

/* Longest descriptor any transport produces (fits in a KvTarget's bytes field). */
#define KVT_DESCRIPTOR_MAX 256
/* Longest hello any transport produces. */
#define KVT_HELLO_MAX 256

/* ---------------------------------------------------------------- transports */

typedef struct kvt_tcp_options {
    const char *bind_host;      /* listening address; NULL = "127.0.0.1" */
    int port;                   /* 0 = chosen by the OS */
    const char *advertise_host; /* put in descriptors; NULL = bind_host ("0.0.0.0" is refused) */
    int io_timeout_ms;          /* connect, a send that makes no progress, and an accepted
                                 * connection silent before its hello, inside a frame or while
                                 * a transfer on it streams (some bytes came, not ended); between
                                 * transfers, and after a BEGIN until its first byte, it may
                                 * idle; 0 = 10000 */
    int max_conns;              /* incoming connections at once; beyond, a new one is closed; 0 = 256 */
    int peer_idle_ms;           /* a cached outgoing connection unused this long is closed (its
                                 * threads end; kvt_connect dials again); 0 = 60000 */
} kvt_tcp_options;

/* Starts a TCP transport: it listens at once (receiving) and connects on demand (sending). */
int kvt_tcp_create(const kvt_tcp_options *opt, kvt_transport **out, eng_error *err);

typedef struct kvt_rdma_options {
    const char *device; /* verbs device name ("rxe0", "mlx5_0"); NULL = first with an active port */
    int port;           /* 0 = the device's first active port */
    int gid_index;      /* -1 = auto: an IPv4-mapped (RoCE v2) GID if any, else index 0 */
    int io_timeout_ms;  /* a handshake step or a request that makes no progress; 0 = 10000 */
} kvt_rdma_options;

/* Starts an RDMA transport (libibverbs, reliable-connected queue pairs, one-sided writes).
 * Fails when the build has no RDMA support or no usable device is found. */
int kvt_rdma_create(const kvt_rdma_options *opt, kvt_transport **out, eng_error *err);

/* 1 when this build has RDMA support and a verbs device with an active port exists (its
 * name written to name); 0 otherwise with the reason in why. Never fails harder than that. */
int kvt_rdma_probe(char *name, size_t name_cap, char *why, size_t why_cap);

typedef struct kvt_open_options {
    kvt_tcp_options tcp;
    kvt_rdma_options rdma; /* zeroed = defaults (gid_index 0 means index 0; use -1 for auto) */
} kvt_open_options;

/* Opens the transport named by which: "rdma" (fails clearly without a device or without
 * RDMA support in the build), "tcp", or "auto" (RDMA when a device exists, else TCP).
 * kvt_choice() then says which and why, for logs and status pages. */
int kvt_open(const char *which, const kvt_open_options *opt, kvt_transport **out, eng_error *err);
/* One line: "rdma (rxe0 port 1, gid 1)", "tcp (auto: no RDMA device found)", ... */
const char *kvt_choice(const kvt_transport *t);

/* Stops the threads, closes every connection (in-flight transfers fail), frees everything.
 * Regions must have been deregistered and sends finished or aborted first. */
void kvt_destroy(kvt_transport *t);
const char *kvt_name(const kvt_transport *t); /* "tcp", "rdma" */

/* The transport a descriptor is for ("tcp", ...), written into name (NUL-terminated).
 * Returns -1 when the bytes are no descriptor. */
int kvt_descriptor_transport(const void *desc, size_t len, char *name, size_t cap, eng_error *err);

/* ---------------------------------------------------------------- regions */

int kvt_register(kvt_transport *t, void *base, size_t len, kvt_region **out, eng_error *err);
/* Fails (and keeps the region) while any transfer still uses it: forget/finish them first. */
int kvt_deregister(kvt_transport *t, kvt_region *r, eng_error *err);
/* The endpoint descriptor for peers to write into region r: opaque bytes, at most
 * KVT_DESCRIPTOR_MAX, printable for TCP (handy in logs). */
int kvt_descriptor(kvt_transport *t, const kvt_region *r, void *buf, size_t cap, size_t *len, eng_error *err);

/* ---------------------------------------------------------------- receiving */

typedef enum kvt_state {
    KVT_PENDING = 0, /* still running (or nothing arrived yet) */
    KVT_OK = 1,      /* all bytes arrived and the checksum matched: the blocks may be used */
    KVT_FAILED = 2,  /* never use the blocks; the reason is in err */
} kvt_state;

/* Opens a transfer into region r and returns its id (unique for the transport's life;
 * put it in the KvTarget). expected_bytes > 0 makes the transfer fail unless exactly that
 * many bytes arrived (guards against a sender that skipped runs); 0 accepts any count. */
int kvt_expect(kvt_transport *t, kvt_region *r, uint64_t expected_bytes, uint64_t *id, eng_error *err);
/* A per-transfer secret (kvt_expect_guarded). */
#define KVT_SECRET_BYTES 16
typedef struct kvt_secret {
    uint8_t bytes[KVT_SECRET_BYTES];
} kvt_secret;

/* A byte range of a region. */
typedef struct kvt_span {
    uint64_t off, len;
} kvt_span;

/* kvt_expect, and the transfer may write only inside these spans of r (any order; they are
 * sorted and merged here): a run outside them fails the transfer like a run outside the
 * region, so a sender with wrong block ids cannot overwrite another request's blocks.
 * Pass, for instance, each layer's runs of the request's blocks. */
int kvt_expect_spans(kvt_transport *t, kvt_region *r, const kvt_span *spans, int n, uint64_t expected_bytes,
                     uint64_t *id, eng_error *err);
/* kvt_expect_spans for a transfer that only one sender may begin: the receiver makes a
 * random secret (returned in *secret, for the KvTarget) and refuses a BEGIN for this id
 * that does not carry it (compared in constant time), or, when peer_host is not NULL,
 * that arrives on a connection whose source address is not one of peer_host's
 * (resolved here; TCP only: RDMA connections are checked by the secret alone). A refused
 * BEGIN writes nothing, closes its connection and is counted in kvt_stats. */
int kvt_expect_guarded(kvt_transport *t, kvt_region *r, const kvt_span *spans, int n, uint64_t expected_bytes,
                       const char *peer_host, uint64_t *id, kvt_secret *secret, eng_error *err);
/* Waits up to timeout_ms (0: just look; -1: no limit) for the transfer to end.
 * KVT_PENDING after the timeout, KVT_FAILED with the reason in err (also for ids that are
 * unknown or forgotten). */
kvt_state kvt_wait(kvt_transport *t, uint64_t id, int timeout_ms, eng_error *err);
/* Drops the transfer: if it still runs it fails, later data for it is discarded, and when
 * this returns the transport no longer writes any of its bytes, so its blocks may be freed
 * and reused. Call it for every id from kvt_expect. Unknown ids are ignored. */
void kvt_forget(kvt_transport *t, uint64_t id);

/* Called on a transport thread when a transfer ends (KVT_OK or KVT_FAILED), for waking a
 * scheduler; it must not block or call back into the transport. NULL turns it off. */
typedef void (*kvt_notify_fn)(void *user, uint64_t id, kvt_state state);
void kvt_set_notify(kvt_transport *t, kvt_notify_fn fn, void *user);

/* Receiver side of kvt_peer_hello: takes the sender's hello and writes the reply (at most
 * KVT_HELLO_MAX bytes, *reply_len 0 when there is none) that the sender must pass to
 * kvt_peer_reply(). A zero-length hello is accepted and does nothing. A connection-oriented
 * transport (RDMA RC queue pairs) needs both directions, so relay the reply too. */
int kvt_accept_hello(kvt_transport *t, const void *hello, size_t len, void *reply, size_t cap, size_t *reply_len,
                     eng_error *err);
/* kvt_accept_hello for callers that relay no reply: fails if the transport has one. */
int kvt_accept(kvt_transport *t, const void *hello, size_t len, eng_error *err);

/* ---------------------------------------------------------------- sending */

/* The cached connection to the receiver named by desc, (re)connecting when there is none or
 * it broke or was closed for idling (kvt_tcp_options.peer_idle_ms). Use the peer for
 * kvt_send_begin right after this call. TCP: an entry whose connection was closed for
 * idling, with no transfer open, that kvt_connect has not returned for peer_idle_ms, is
 * freed by a later kvt_connect (so the cache does not grow with every receiver ever
 * sent to); call kvt_connect again rather than keeping the pointer. RDMA: entries live
 * until kvt_destroy. */
int kvt_connect(kvt_transport *t, const void *desc, size_t len, kvt_peer **out, eng_error *err);
/* Bytes the receiver must pass to kvt_accept_hello before this peer's first write; 0 when
 * none are needed (always for TCP, and once the peer is connected). */
size_t kvt_peer_hello(kvt_peer *p, void *buf, size_t cap);
/* The receiver's reply to this peer's hello (a zero-length reply does nothing). */
int kvt_peer_reply(kvt_peer *p, const void *reply, size_t len, eng_error *err);

/* Starts transfer id (from the receiver's kvt_expect) reading from the local region src.
 * secret: the one kvt_expect_guarded made for id (it travels in the BEGIN); NULL for a
 * transfer opened without one. */
int kvt_send_begin(kvt_peer *p, kvt_region *src, uint64_t id, const kvt_secret *secret, kvt_send **out, eng_error *err);
/* Queues one run: len bytes at src_off in the local region to dst_off in the receiver's.
 * Returns at once; -1 when the run lies outside the source region or the transfer already
 * failed (peer gone, receiver rejected it): then abort it. */
int kvt_send_write(kvt_send *s, uint64_t src_off, uint64_t dst_off, uint64_t len, eng_error *err);
/* Sends the completion notice and waits (up to timeout_ms, -1 = no limit) for the
 * receiver's verdict. 0 only when the receiver verified every byte (it sends the verdict
 * first and then turns the transfer KVT_OK, so a receiver never acts on a transfer that
 * its sender could still see fail). Frees s either way. */
int kvt_send_finish(kvt_send *s, int timeout_ms, eng_error *err);
/* Gives up: queued runs are dropped, the receiver's transfer fails with reason. Frees s. */
void kvt_send_abort(kvt_send *s, const char *reason);

/* ---------------------------------------------------------------- counters */

typedef struct kvt_stats {
    uint64_t bytes_sent;     /* payload bytes of transfers the receiver verified */
    uint64_t bytes_received; /* payload bytes of transfers verified here */
    double send_seconds;     /* summed begin -> verified, over verified outgoing transfers */
    double recv_seconds;     /* summed first byte -> verified, over verified incoming ones */
    uint64_t sends_ok, sends_failed;
    uint64_t recvs_ok, recvs_failed;
    /* BEGINs refused (kvt_expect_guarded): for no transfer expected here, with a wrong
     * secret, from a host that is not the transfer's peer */
    uint64_t refused_unknown, refused_secret, refused_peer;
    uint64_t peers; /* sender peer entries cached now (one per receiver descriptor) */
} kvt_stats;

void kvt_get_stats(kvt_transport *t, kvt_stats *out);

#endif

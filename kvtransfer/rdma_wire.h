/* rdma_wire.h: the device-free parts of the RDMA transport (internal to kvtransfer/).
 *
 * Everything the two ends of an RDMA connection exchange, as plain bytes, so that it can be
 * unit-tested on machines without a verbs device: the endpoint descriptor (printable, it
 * travels in the KvTarget), the hello/reply pair that carries the RC queue pairs'
 * parameters over the control plane, the small messages sent over the queue pair itself,
 * and the coalescing of consecutive runs into one RDMA WRITE. All integers little-endian. */
#ifndef KVT_RDMA_WIRE_H
#define KVT_RDMA_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* What a writer needs to reach a registered region. It holds no remote key: the region
 * itself is registered without remote access, and each transfer's keys travel in its
 * SPANS messages (see RM_SPANS). */
typedef struct rdma_desc {
    uint64_t instance;  /* the receiving transport (random per process) */
    uint64_t region_id; /* its region */
    uint8_t gid[16];
    uint16_t lid;
    uint64_t addr, size; /* remote base address and length of the region */
} rdma_desc;

int rdma_desc_encode(const rdma_desc *d, char *buf, size_t cap, size_t *len, eng_error *err);
int rdma_desc_decode(const void *buf, size_t len, rdma_desc *d, eng_error *err);

/* One side of a queue pair: sent in the hello (sender -> receiver) and in the reply. */
enum { RDMA_HELLO = 1, RDMA_REPLY = 2 };
#define RDMA_HELLO_BYTES 72

typedef struct rdma_hello {
    int kind;          /* RDMA_HELLO or RDMA_REPLY */
    uint64_t to, from; /* transport instances: addressee and author */
    uint64_t token;    /* the sender's connection, echoed in the reply */
    uint8_t gid[16];
    uint32_t qpn, psn; /* psn: 24 bits */
    uint16_t lid;
    uint8_t mtu; /* enum ibv_mtu value */
} rdma_hello;

size_t rdma_hello_encode(const rdma_hello *h, void *buf, size_t cap); /* 0 if cap too small */
int rdma_hello_decode(const void *buf, size_t len, rdma_hello *h, eng_error *err);

/* Messages over the queue pair (SEND/RECV into fixed-size slots). The bulk data never
 * travels in them: it goes by RDMA WRITE straight into the receiver's region. */
enum {
    RM_BEGIN = 1, /* s->r  id, region_id, secret: bind the transfer to this queue pair, answer GO */
    RM_SPANS,     /* r->s  id, items = (off, len, rkey): the spans the transfer may write, each
                   * with the remote key of its own registration (before GO) */
    RM_GO,        /* r->s  id, n_spans sent before it */
    RM_RUNS,      /* s->r  id, pairs = (dst_off, len) runs in write order */
    RM_FINISH,    /* s->r  id, bytes, checksum (XXH3-64), n_runs sent */
    RM_ABORT,     /* s->r  id, text = reason */
    RM_VERDICT,   /* r->s  id, ok (1 ok, 0 failed), text = reason */
    RM_PING,      /* either way, is_reply 0 asks and 1 answers: the pair still works */
};
#define RDMA_MSG_BYTES 4096
#define RDMA_MSG_HEADER 48
#define RDMA_MSG_MAX_PAIRS ((RDMA_MSG_BYTES - RDMA_MSG_HEADER) / 16) /* RUNS items */
#define RDMA_MSG_MAX_SPANS ((RDMA_MSG_BYTES - RDMA_MSG_HEADER) / 24) /* SPANS items */

typedef struct rdma_msg {
    uint32_t type, n; /* n: pairs, or text bytes */
    uint64_t id;
    union { /* the three words after id on the wire, named by message type */
        uint64_t word[3];
        struct {
            uint64_t region_id;
            unsigned char secret[16]; /* KVT_SECRET_BYTES: the two last words, as bytes */
        } begin;
        struct {
            uint64_t n_spans;
        } go;
        struct {
            uint64_t bytes, checksum, n_runs;
        } finish;
        struct {
            uint64_t ok;
        } verdict;
        struct {
            uint64_t is_reply;
        } ping;
    };
} rdma_msg;

/* 64-bit words per item of a message of this type: 2 for RUNS, 3 for SPANS, 0 for the
 * others (they carry text or nothing). */
int rdma_msg_item_words(uint32_t type);
/* Writes the header and n items (words: n * rdma_msg_item_words) or n text bytes into buf
 * (RDMA_MSG_BYTES), clipping n to what fits; returns the message length. */
size_t rdma_msg_encode(const rdma_msg *m, const uint64_t *words, const char *text, void *buf);
/* Reads a received message; *payload points at its items or text inside buf. */
int rdma_msg_decode(const void *buf, size_t len, rdma_msg *m, const unsigned char **payload, eng_error *err);
/* Word `which` of item i of a decoded message of type `type`. */
uint64_t rdma_msg_word(const unsigned char *payload, uint32_t type, size_t i, int which);

/* Coalescing: a run that continues the pending one on both sides (and keeps it under
 * max_len) extends it; otherwise the pending run is returned in *flush (return 1) and the
 * new run becomes pending. */
typedef struct rdma_run {
    uint64_t src, dst, len;
} rdma_run;

int rdma_run_add(rdma_run *pending, int *has_pending, uint64_t src, uint64_t dst, uint64_t len, uint64_t max_len,
                 rdma_run *flush);

/* 1 when the GID is an IPv4-mapped IPv6 address (RoCE v2 over IPv4). */
int rdma_gid_is_ipv4(const uint8_t gid[16]);

#endif

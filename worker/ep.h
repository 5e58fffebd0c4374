/* ep.h: expert parallelism, one rank of an EP group (docs/architecture.md).
 *
 * An EP group is `size` worker processes (ranks) of one pool. Each is a whole worker
 * for its own requests and holds only a contiguous range of the experts; at every
 * MoE layer of every step the ranks exchange rows so that each token reaches the
 * owners of its experts and their outputs come back (ep_moe.c).
 *
 * ep_mesh.c keeps the group's connections: one TCP connection per pair of ranks
 * (rank r dials every lower rank and accepts the higher ones), checked by a
 * handshake (group name, size, rank, transport). With an RDMA device the messages'
 * payloads go by RDMA WRITE (ep_rdma.h) and only headers and credits use the TCP
 * connections. A mesh thread reads every incoming message
 * into a queue per peer, so a send never waits for the peer's reader. Messages carry
 * (epoch, step, layer); every receive has a deadline. Any failure (a peer gone, a
 * deadline passed, a message out of order) breaks the group: every connection is
 * shut, the engine's exchange fails at once, and the mesh thread forms the group
 * again, with a new epoch, as soon as every rank is reachable. Ranks must share one
 * byte order (the same binary on the same architecture). */
#ifndef WRK_EP_H
#define WRK_EP_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "metrics.h"
#include "model/model.h"

#define WRK_EP_MAX_SIZE 64 /* ranks in a group */

typedef struct wrk_ep wrk_ep;

/* Which rank holds which experts, for every MoE layer alike (ep_placement.c). */
typedef struct wrk_ep_placement {
    int n_experts, size;
    uint8_t *held; /* [size][n_experts]: 1 when the rank holds the expert */
} wrk_ep_placement;

/* From a --expert-placement file (JSON, ep_placement.c's header), or contiguous ranges
 * when path is NULL. */
int wrk_ep_placement_load(const char *path, int n_experts, int size, wrk_ep_placement *p, eng_error *err);
void wrk_ep_placement_free(wrk_ep_placement *p);

typedef struct wrk_ep_options {
    const char *group; /* name, the same on every rank */
    int size, rank;
    const char *peers;                 /* "host:port,host:port,...": rank i's exchange address is the i-th */
    int deadline_ms;                   /* every receive; 0 = 10000 */
    int listen_fd;                     /* > 2: an inherited socket listening on this rank's address; else bound here */
    const char *secret_file;           /* the group's shared secret, proven in every handshake; NULL = none */
    int n_experts;                     /* the model's */
    const wrk_ep_placement *placement; /* who holds which experts; NULL = contiguous ranges */
    const char *transport;             /* payloads: "auto" (RDMA when a device works), "tcp", "rdma"; NULL = auto */
    const char *rdma_device;           /* verbs device; NULL = the first with an active port */
    void (*notify)(void *ctx);         /* mesh thread: a message arrived or the group changed */
    void *notify_ctx;
} wrk_ep_options;

/* The exchange's metrics (worker.c registers the families); NULL handles are ignored. */
typedef struct wrk_ep_metrics {
    met_family *dispatched;                  /* counter [role, worker, layer, rank]: token rows sent to each rank */
    met_metric *bytes_sent, *bytes_received; /* counters: over the TCP connections */
    met_metric *bytes_sent_rdma, *bytes_received_rdma; /* counters: payloads that went by RDMA */
    met_metric *exchange_seconds;                      /* histogram: a MoE layer's exchange, expert compute excluded */
    met_metric *balance;                               /* gauge: mean / max rows dispatched per rank (1 = even) */
    const char *role, *worker;
} wrk_ep_metrics;

int wrk_ep_start(const wrk_ep_options *opt, wrk_ep **out, eng_error *err);
void wrk_ep_set_metrics(wrk_ep *ep, const wrk_ep_metrics *m);
/* Leaves the group for good (the peers see us go; a step waiting on it fails now);
 * stop after the engine no longer uses ep. */
void wrk_ep_leave(wrk_ep *ep);
void wrk_ep_stop(wrk_ep *ep); /* leaves, then frees; NULL is fine */

/* How payloads travel, for the log: "rdma (rxe0 port 1, gid 1)", "tcp (auto: ...)". */
const char *wrk_ep_transport(const wrk_ep *ep);
/* 1 when connected to every other rank; why gets the last break reason otherwise. */
int wrk_ep_ready(wrk_ep *ep, char *why, size_t cap);
/* A peer has started a step that we have not joined yet. */
int wrk_ep_pending(wrk_ep *ep);
int wrk_ep_holds(const wrk_ep *ep, int expert); /* 1 when this rank holds (and runs) the expert */
int wrk_ep_experts_held(const wrk_ep *ep);
/* The rank that runs `token`'s pick of expert: this rank when it holds the expert, else
 * one of its holders chosen by the token's index (any replica gives the same bits). */
int wrk_ep_pick(const wrk_ep *ep, int expert, int token);
int wrk_ep_rank(const wrk_ep *ep);
int wrk_ep_size(const wrk_ep *ep);
uint32_t wrk_ep_epoch(wrk_ep *ep);
/* ep_moe.c: rows this rank dispatched to `rank` (counted for the balance gauge). */
void wrk_ep_count_dispatch(wrk_ep *ep, int layer, const uint32_t *rows_per_rank);
void wrk_ep_observe_exchange(wrk_ep *ep, double seconds);

/* Contiguous ranges: rank r of size owns [lo, hi) of n experts. */
void wrk_ep_range(int n_experts, int size, int rank, int *lo, int *hi);

/* ---- the engine thread's side (one step at a time) ---- */

/* Starts a step; -1 (err set) when the group is not complete. */
int wrk_ep_step_begin(wrk_ep *ep, eng_error *err);
void wrk_ep_step_end(wrk_ep *ep);

enum { WRK_EP_DISPATCH = 1, WRK_EP_COMBINE = 2 };

/* Sends one message of this step to peer; parts are concatenated. */
int wrk_ep_send(wrk_ep *ep, int peer, int kind, int layer, const void *const *parts, const size_t *lens, int n_parts,
                eng_error *err);
/* The next message from peer, which must be (kind, this step, layer); *data is
 * malloc'd (free it). Waits up to the deadline. */
int wrk_ep_recv(wrk_ep *ep, int peer, int kind, int layer, void **data, size_t *len, eng_error *err);
/* Any failure seen by the engine (e.g. a bad message): breaks the group. */
void wrk_ep_fail(wrk_ep *ep, const char *why);

/* ---- ep_moe.c ---- */

/* eng_moe_fn for eng_model_set_moe (ctx = the wrk_ep). */
int wrk_ep_moe(void *ctx, eng_model *m, int layer, const float *x, int n_tokens, float *out, eng_error *err);
/* A step without tokens of our own: every MoE layer's exchange with zero rows. */
int wrk_ep_idle_step(wrk_ep *ep, eng_model *m, eng_error *err);

#endif

/* ep.h: expert parallelism, one rank of an EP group (docs/architecture.md).
 *
 * An EP group is `size` worker processes (ranks) of one pool. Each is a whole worker
 * for its own requests and holds only a contiguous range of the experts; at every
 * MoE layer of every step the ranks exchange rows so that each token reaches the
 * owners of its experts and their outputs come back (ep_moe.c).
 *
 * ep_mesh.c keeps the group's connections: one TCP connection per pair of ranks
 * (rank r dials every lower rank and accepts the higher ones), checked by a
 * handshake (group name, size, rank). A mesh thread reads every incoming message
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

typedef struct wrk_ep_options {
    const char *group; /* name, the same on every rank */
    int size, rank;
    const char *peers;         /* "host:port,host:port,...": rank i's exchange address is the i-th */
    int deadline_ms;           /* every receive; 0 = 10000 */
    int n_experts;             /* the model's; rank r owns a contiguous range of them */
    void (*notify)(void *ctx); /* mesh thread: a message arrived or the group changed */
    void *notify_ctx;
} wrk_ep_options;

/* The exchange's metrics (worker.c registers the families); NULL handles are ignored. */
typedef struct wrk_ep_metrics {
    met_family *dispatched;                  /* counter [role, worker, layer, rank]: token rows sent to each rank */
    met_metric *bytes_sent, *bytes_received; /* counters */
    met_metric *exchange_seconds;            /* histogram: a MoE layer's exchange, expert compute excluded */
    met_metric *balance;                     /* gauge: mean / max rows dispatched per rank (1 = even) */
    const char *role, *worker;
} wrk_ep_metrics;

int wrk_ep_start(const wrk_ep_options *opt, wrk_ep **out, eng_error *err);
void wrk_ep_set_metrics(wrk_ep *ep, const wrk_ep_metrics *m);
/* Leaves the group for good (the peers see us go; a step waiting on it fails now);
 * stop after the engine no longer uses ep. */
void wrk_ep_leave(wrk_ep *ep);
void wrk_ep_stop(wrk_ep *ep); /* leaves, then frees; NULL is fine */

/* 1 when connected to every other rank; why gets the last break reason otherwise. */
int wrk_ep_ready(wrk_ep *ep, char *why, size_t cap);
/* A peer has started a step that we have not joined yet. */
int wrk_ep_pending(wrk_ep *ep);
void wrk_ep_owned(const wrk_ep *ep, int *lo, int *hi); /* this rank's experts [lo, hi) */
int wrk_ep_owner(const wrk_ep *ep, int expert);        /* the rank that runs it */
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

/* router.h: the coordinator's token backend over gRPC workers.
 *
 * Implements coord_backend (backend.h). For each request it picks a pair of
 * workers from the registry (the least-loaded healthy decode worker, the
 * prefill worker with the same KV layout and the least work left once its
 * cached part of the prompt is counted off, prefix_index.h) and drives tandem.proto's
 * flow: Decode.Generate -> KvTarget -> Prefill.Run(target) -> Decode.KvReady(first
 * token) -> the first token, then the rest of the stream. In colocated mode
 * (forced, or when only role-BOTH workers are up) one worker runs Generate with
 * colocated = true.
 *
 * Failures: a worker that cannot be reached is taken out of rotation and the
 * request is run again on another pair with a fresh reservation. When tokens had
 * already been delivered the stream migrates (resume, not replay): the new pair
 * prefills prompt + delivered tokens and decoding goes on at the next step with the
 * same seed, so the client's stream continues as if nothing happened. The same
 * happens when a draining decode worker hands its streams back at its deadline, or
 * when an operator moves them (coord_router_migrate_from). A stream moves at most
 * migration_limit times and only while prompt + generated fits
 * migration_max_tokens; beyond, or with no worker left, the request ends with
 * COORD_FINISH_ERROR and a message saying why. A worker that is merely full
 * (RESOURCE_EXHAUSTED) is waited for. Every call carries a deadline.
 *
 * One thread per request runs the flow; cancel() cancels its gRPC stream, which
 * makes the decode worker free the request's blocks. */
#ifndef COORD_ROUTER_H
#define COORD_ROUTER_H

#include "backend.h"
#include "registry.h"

typedef struct coord_router_config {
    coord_registry *registry; /* must outlive the router */
    int colocated;            /* 1: always Generate(colocated) on role-BOTH workers */
    const met_tandem *met;    /* may be NULL */
    int max_failures;         /* worker failures tolerated per request; 0 = 3 */
    int wait_ms;              /* how long a request waits for a worker with room; 0 = 30000 */
    int failover_wait_ms;     /* after a worker failed, how long to wait for any route; 0 = 5000 */
    int first_event_ms;       /* Generate's KvTarget (or colocated first token); 0 = 10000 */
    int prefill_ms;           /* Prefill.Run deadline; 0 = 120000 */
    int kv_ready_ms;          /* Decode.KvReady deadline; 0 = 10000 */
    int token_gap_ms;         /* silence on a stream taken as a dead worker; 0 = 60000 */
    int stream_ms;            /* whole Generate stream deadline; 0 = 600000 */
    int max_requests;         /* requests in flight, waiting included; beyond: 429; 0 = 1024 */
    int max_waiting;          /* requests waiting for a worker with room; beyond: 429; 0 = 512 */
    int migration_limit;      /* moves of one stream to another decode worker; beyond: error; 0 = 3 */
    int migration_max_tokens; /* prompt + generated tokens a move may prefill; beyond: error; 0 = 32768 */
    /* KV-aware prefill pick: a prompt token a worker holds cached counts as this many
     * queued tokens less on it (1: cached and queued work weigh the same; 0: load only,
     * the prefix caches ignored). The coordinator's --router-overlap-weight, default 1. */
    double overlap_weight;
    int ttft_slo_ms; /* > 0: refuse at once what is predicted to miss it (admission.h); 0: off */
} coord_router_config;

typedef struct coord_router coord_router;

int coord_router_new(const coord_router_config *cfg, coord_router **out, eng_error *err);
/* Cancels every request in flight, waits for them to end, frees the router. The
 * HTTP server must be stopped first (it releases its calls). NULL is fine. */
void coord_router_free(coord_router *r);
coord_backend coord_router_backend(coord_router *r);
/* Admin.Cancel: cancels the request with this id. 1 when found. */
int coord_router_cancel_id(coord_router *r, const char *request_id);
/* Requests in flight (for logs and tests). */
int coord_router_active(coord_router *r);
/* Moves every stream now decoding on worker_id to other decode workers (cordon with
 * migrate): their Generate calls are cancelled and each resumes elsewhere as after a
 * failure, counted with reason "cordon". Returns the number of streams moved. */
int coord_router_migrate_from(coord_router *r, const char *worker_id);

/* One request in flight, as Admin.Requests shows it. */
typedef struct coord_request_view {
    char id[96];
    char decode[128], prefill[128]; /* its current pair; "" while waiting (prefill: colocated too) */
    int n_prompt, n_gen, max_tokens;
    int failovers;  /* runs on another pair after a worker failed */
    int migrations; /* moves of its stream to another decode worker (resumed after the tokens sent) */
    double age_s, ttft_s, since_token_s; /* the last two < 0 before the first token */
} coord_request_view;

/* A malloc'd copy of every request in flight (*n of them, newest first); free() it.
 * Returns -1 when memory runs out. */
int coord_router_requests(coord_router *r, coord_request_view **out, int *n);

/* ------------------------------------------------------------------ the choice, pure */

typedef struct coord_route {
    int decode;  /* index into the views: the Generate worker */
    int prefill; /* index of the Prefill.Run worker; -1 when colocated */
    int colocated;
} coord_route;

/* Picks a route among views[0..n) for a prompt of n_prompt tokens needing
 * cap_tokens of KV on the decode side. The prefill partner is the one with the least
 * expected work: queued prompt tokens minus its prefill_credit (the cached part of this
 * prompt, weighted), then the fewest queued requests. Workers whose id is in exclude are skipped.
 * Returns 0 with *out filled; -1 when no pair fits, with why saying what is
 * missing (no healthy worker of a role, KV layouts that differ, pools too small).
 * *full (may be NULL) is set to 1 when pairs exist but none has free KV blocks
 * for the request now (waiting may help). */
int coord_route_pick(const coord_worker_view *views, int n, int force_colocated, int n_prompt, int cap_tokens,
                     const char *const *exclude, int n_exclude, coord_route *out, int *full, char *why, size_t cap);

#endif

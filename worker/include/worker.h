/* worker.h: one Tandem worker process (prefill, decode, or both) as a library.
 *
 * wrk_start() loads the model, creates the paged KV pool and the KV transport,
 * serves the Prefill and Decode gRPC services and /metrics, and registers with the
 * coordinator (retrying until it answers, heartbeating after). One engine thread owns
 * the model's forward pass and runs every step: chunked prefill of queued prompts under
 * a token budget, mixed with one decode token per running sequence (continuous
 * batching). RPC handler threads talk to it through one mutex + condition variable.
 * wrk_stop() stops accepting calls, fails the ones in flight explicitly and frees all.
 * wrk_drain() is the gentle way out (SIGTERM): no new requests, the coordinator told at
 * once, requests in flight finish; the caller waits for wrk_in_flight() to reach 0.
 *
 * The metrics server (when on) starts first and also answers the health probes:
 * /livez always, /startupz once the model is loaded and the services run, /readyz
 * while started, registered with the coordinator (when there is one) and not draining.
 *
 * Events are logged through common/log.h, one line each, with the request id. */
#ifndef WRK_WORKER_H
#define WRK_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

typedef enum wrk_role {
    WRK_ROLE_PREFILL = 1, /* same numbers as tandem.proto's Role */
    WRK_ROLE_DECODE = 2,
    WRK_ROLE_BOTH = 3,
} wrk_role;

const char *wrk_role_name(wrk_role r); /* "prefill", "decode", "both" */
int wrk_role_parse(const char *s, wrk_role *out);

typedef struct wrk_options {
    wrk_role role;
    const char *model_dir;
    const char *coordinator;  /* host:port of the Registry; NULL or "" = run unregistered */
    const char *host;         /* bind and advertise address; NULL = "127.0.0.1" */
    int port;                 /* gRPC; 0 = any */
    int metrics_port;         /* /metrics; 0 = any, -1 = none */
    int threads;              /* compute threads; 0 = one per CPU */
    int kv_blocks;            /* 0 = what fits the memory budget (wrk_default_kv_blocks) */
    int block_size;           /* tokens per KV block; 0 = 16 */
    const char *kv_dtype;     /* how K/V are stored: "bf16", "f16", "f32"; NULL = ENG_KV_DTYPE_DEFAULT */
    const char *matmul_dtype; /* what matmuls with bf16 weights multiply: "f32" or "bf16"; NULL = "f32" */
    int mmap_weights;         /* map the checkpoint's files instead of reading them (eng_model_options) */
    int max_batch_tokens;     /* tokens per forward step; 0 = 2048 */
    int max_running;          /* sequences decoding at once (and reservations); 0 = 64 */
    const char *kv_transport; /* "auto", "tcp", "rdma"; NULL = auto */
    const char *rdma_device;  /* verbs device ("mlx5_0"); NULL = the first with an active port */
    const char *id;           /* worker id; NULL = "<role>-<host>:<port>" */
    int lease_ms;             /* KV reservation lease; 0 = 30000 */
    int kv_max_conns;         /* incoming TCP KV connections at once; 0 = 256 */
    int kv_io_timeout_ms;     /* TCP KV: connect, a stalled send, a peer silent before its hello or
                               * mid-transfer; 0 = 10000 */
    /* Expert parallelism: ep_size > 1 makes this worker rank ep_rank of EP group
     * `group`, holding only its share of the experts (worker/ep.h). */
    int ep_size, ep_rank;
    const char *group;
    const char *ep_peers;         /* every rank's exchange address, "host:port,...", by rank */
    int ep_deadline_ms;           /* every exchange receive; 0 = 10000 */
    const char *ep_transport;     /* exchange payloads: "auto", "tcp", "rdma"; NULL = auto */
    int ep_listen_fd;             /* > 2: an inherited socket listening on this rank's exchange address */
    const char *ep_secret_file;   /* the EP group's shared secret; NULL = none */
    const char *expert_placement; /* JSON: each rank's experts (ep_placement.c); NULL = contiguous ranges */
    /* wrk_drain: decode streams still running this long after it are ended with
     * Error.migrate, so that the coordinator resumes them on other workers; 0 = at once. */
    double drain_timeout_s;
    int no_prefix_cache; /* a prefill worker keeps no KV blocks after its requests (worker/prefix_cache.h) */
} wrk_options;

typedef struct wrk_worker wrk_worker;

int wrk_start(const wrk_options *opt, wrk_worker **out, eng_error *err);
/* Stops serving, fails every in-flight request explicitly (UNAVAILABLE), frees all.
 * NULL is fine. */
void wrk_stop(wrk_worker *w);
/* Starts draining: new Prefill.Run / Decode.Generate calls are refused as UNAVAILABLE
 * (retryable, so the coordinator routes them elsewhere), the next heartbeat, sent at
 * once, tells the coordinator (which takes the worker out of rotation), /readyz
 * answers 503. Requests already admitted go on to their end, or to the drain timeout
 * (wrk_options.drain_timeout_s), when the streams left are handed back for migration.
 * Idempotent. */
void wrk_drain(wrk_worker *w);
/* Requests not finished yet: queued, prefilling or pushing KV, reserved, decoding. */
int wrk_in_flight(wrk_worker *w);
int wrk_rpc_port(const wrk_worker *w);
int wrk_metrics_port(const wrk_worker *w); /* -1 without a metrics server */
const char *wrk_id(const wrk_worker *w);
/* KV blocks in use right now (reservations, prefills in flight, running sequences). */
int wrk_kv_blocks_used(wrk_worker *w);

#endif

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
 * The scheduler's pure pieces (block runs, chunk plans, limits) are exported below so
 * the unit tests can check them without a model or a network. Nothing here prints:
 * events go to the caller's log function, one line each, with the request id. */
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

typedef void (*wrk_log_fn)(void *ctx, const char *line);

typedef struct wrk_options {
    wrk_role role;
    const char *model_dir;
    const char *coordinator; /* host:port of the Registry; NULL or "" = run unregistered */
    const char *host;        /* bind and advertise address; NULL = "127.0.0.1" */
    int port;                /* gRPC; 0 = any */
    int metrics_port;        /* /metrics; 0 = any, -1 = none */
    int threads;             /* compute threads; 0 = one per CPU */
    int kv_blocks;           /* 0 = what fits the memory budget (wrk_default_kv_blocks) */
    int block_size;          /* tokens per KV block; 0 = 16 */
    int max_batch_tokens;    /* tokens per forward step; 0 = 2048 */
    int max_running;         /* sequences decoding at once (and reservations); 0 = 64 */
    const char *kv_transport;/* "auto", "tcp", "rdma"; NULL = auto */
    const char *rdma_device; /* verbs device ("mlx5_0"); NULL = the first with an active port */
    const char *id;          /* worker id; NULL = "<role>-<host>:<port>" */
    int lease_ms;            /* KV reservation lease; 0 = 30000 */
    wrk_log_fn log;          /* NULL = silent */
    void *log_ctx;
} wrk_options;

typedef struct wrk_worker wrk_worker;

int wrk_start(const wrk_options *opt, wrk_worker **out, eng_error *err);
/* Stops serving, fails every in-flight request explicitly (UNAVAILABLE), frees all.
 * NULL is fine. */
void wrk_stop(wrk_worker *w);
/* Starts draining: new Prefill.Run / Decode.Generate calls are refused as UNAVAILABLE
 * (retryable, so the coordinator routes them elsewhere), the next heartbeat, sent at
 * once, tells the coordinator (which takes the worker out of rotation), /readyz
 * answers 503. Requests already admitted go on to their end. Idempotent. */
void wrk_drain(wrk_worker *w);
/* Requests not finished yet: queued, prefilling or pushing KV, reserved, decoding. */
int wrk_in_flight(wrk_worker *w);
int wrk_rpc_port(const wrk_worker *w);
int wrk_metrics_port(const wrk_worker *w); /* -1 without a metrics server */
const char *wrk_id(const wrk_worker *w);
/* KV blocks in use right now (reservations, prefills in flight, running sequences). */
int wrk_kv_blocks_used(wrk_worker *w);

/* ------------------------------------------------------------------ scheduler pieces */

/* A run of n blocks consecutive in both the source and destination block ids. */
typedef struct wrk_run {
    int32_t src, dst;
    int n;
} wrk_run;

/* Splits the block pairs (src[i] -> dst[i], i < n) into maximal runs consecutive on
 * both sides, written to out[] (room for n). Returns the number of runs. */
int wrk_block_runs(const int32_t *src, const int32_t *dst, int n, wrk_run *out);

/* Blocks of a prompt of n_prompt tokens whose every token is in the cache once n_done
 * tokens are: whole blocks, plus the partial last block when the prompt is complete. */
int wrk_blocks_complete(int n_done, int n_prompt, int block_size);

/* Chunked prefill: given each waiting prompt's remaining tokens (in queue order) and the
 * step's token budget, writes each one's chunk for this step (0 = not this step) and
 * returns the tokens planned. First come, first served; a prompt longer than the budget
 * takes what is left and continues next step. */
int wrk_plan_chunks(const int *remaining, int n, int budget, int *chunk);

/* Tokens a request's sequence may hold: prompt + max_tokens, capped by the context. */
int wrk_cap_tokens(int n_prompt, int max_tokens, int max_context);

/* 0 (more to come), 1 (stop token), 2 (length: max_tokens or context reached) for the
 * token just generated, n_generated counting it; tandem.proto's FinishReason numbers. */
int wrk_finish_reason(int32_t token, const int32_t *stop_ids, int n_stop, int n_prompt, int n_generated,
                      int cap_tokens);

/* Decode admission (KV grows on demand): a new sequence takes blocks for its prompt
 * plus the next token (admit_blocks), and is admitted only while the pool keeps one
 * free block per sequence already admitted (`watermark`), so that each of them can
 * grow a step without preempting anyone. WRK_ADMIT_OK, WRK_ADMIT_WAIT (the pool is
 * busy: retry later) or WRK_ADMIT_NEVER (the prompt and one token exceed the whole pool). */
enum { WRK_ADMIT_OK, WRK_ADMIT_WAIT, WRK_ADMIT_NEVER };
int wrk_admit_blocks(int n_prompt, int block_size);
int wrk_admit(int pool_blocks, int free_blocks, int need, int watermark);

/* Default pool size: blocks (block_bytes each, all layers) that fit in budget_bytes, at
 * most enough for max_running full contexts, at least 64. */
int wrk_default_kv_blocks(size_t block_bytes, size_t budget_bytes, int max_running, int max_context,
                          int block_size);

#endif

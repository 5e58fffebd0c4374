/* metrics.h: Prometheus metrics for every Tandem process (coordinator and workers).
 *
 * A registry holds metric families (counter, gauge, histogram), each declared by a
 * met_spec (name, type, help, labels, buckets); every Tandem metric is declared once,
 * in metrics.c's table, and met_tandem_register() registers them all from it. A
 * family's children are looked up by label values, named at the call site, and live
 * until the registry is freed (or met_remove). Every update is thread-safe: any
 * thread may bump a counter or observe a latency while another renders /metrics.
 * met_render() writes the Prometheus text exposition format 0.0.4, which
 * `promtool check metrics` accepts.
 *
 * Usage, one line per update:
 *     met_tandem m;  met_tandem_register(reg, &m, &err);
 *     met_observe(met_get(m.family[MET_TTFT], (met_labels){.role = "decode", .worker = "w1"}),
 *                 0.042);
 * The handle met_get() returns is stable, so hot paths look it up once. */
#ifndef MET_METRICS_H
#define MET_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/error.h"

#define MET_MAX_BUCKETS 64

typedef enum met_type { MET_COUNTER, MET_GAUGE, MET_HISTOGRAM } met_type;

/* The labels a Tandem metric can carry, written in this order. */
typedef enum met_label {
    MET_ROLE,      /* "coordinator", "prefill", "decode" or "both" */
    MET_WORKER,    /* the worker id ("" on the coordinator for its own view) */
    MET_OUTCOME,   /* success, cancelled, error, rejected */
    MET_TRANSPORT, /* tcp, rdma */
    MET_REASON,    /* why the router ran or moved a request again */
    MET_LAYER,     /* a model layer's index (expert parallelism) */
    MET_RANK,      /* a rank of an EP group */
    MET_DIRECTION, /* sent, received */
    MET_STATE,     /* a worker's lifecycle state (ready, cordoned, ...) */
    MET_N_LABELS
} met_label;
#define MET_L(label) (1u << (label)) /* a label in met_spec.labels */

/* A child's label values by name: a family takes those it declares (NULL reads as "") and
 * refuses a value for one it does not declare. */
typedef struct met_labels {
    const char *role, *worker, *outcome, *transport, *reason, *layer, *rank, *direction, *state;
} met_labels;

/* One family's declaration. */
typedef struct met_spec {
    met_type type;
    const char *name; /* [a-zA-Z_:][a-zA-Z0-9_:]* */
    const char *help; /* UTF-8 */
    unsigned labels;  /* MET_L(MET_ROLE) | MET_L(MET_WORKER) ... */
    /* Histograms: strictly increasing finite upper bounds (+Inf is implicit); NULL or
     * n_buckets 0 means met_default_buckets. */
    const double *buckets;
    int n_buckets;
} met_spec;

typedef struct met_registry met_registry;
typedef struct met_family met_family; /* one metric name, its help, type and label names */
typedef struct met_metric met_metric; /* one child: a family plus one set of label values */

met_registry *met_registry_new(void); /* NULL when memory runs out */
void met_registry_free(met_registry *r);

/* Registers the family spec declares (the registry keeps no pointer into spec). Returns
 * NULL with a message in err on invalid input or a name registered before. */
met_family *met_family_new(met_registry *r, const met_spec *spec, eng_error *err);

/* The child for these label values (any UTF-8), created on first use. Returns NULL when
 * memory runs out, a value is not valid UTF-8, or a value is given for a label the family
 * does not declare. */
met_metric *met_get(met_family *f, met_labels labels);
/* Drops a child (e.g. a worker that left); handles to it become invalid. */
void met_remove(met_family *f, met_labels labels);

/* Updates; a NULL handle is ignored so that a failed met_get never crashes. */
void met_inc(met_metric *m, double v);     /* counter (v >= 0; negatives ignored) or gauge */
void met_set(met_metric *m, double v);     /* gauge */
void met_observe(met_metric *m, double v); /* histogram */

/* Reads back (for tests and for code that derives one metric from another). */
double met_value(met_metric *m);                /* counter/gauge value; histogram sum */
uint64_t met_hist_count(met_metric *m);         /* histogram observations */
uint64_t met_hist_bucket(met_metric *m, int i); /* cumulative count of bucket i (n_buckets: +Inf) */

/* Called at the start of every met_render, before any family is written, so that
 * gauges computed from other state (a worker registry, a KV pool) are fresh. At
 * most 16 per registry; returns -1 when full. */
typedef void (*met_collect_fn)(void *ctx, met_registry *r);
int met_on_collect(met_registry *r, met_collect_fn fn, void *ctx);

/* Appends the text exposition format of every family (in registration order,
 * children in creation order) to out. Returns 0, or -1 when memory runs out. */
int met_render(met_registry *r, eng_buf *out);
#define MET_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Prometheus client defaults, in seconds: .005 .01 .025 .05 .1 .25 .5 1 2.5 5 10. */
extern const double met_default_buckets[];
extern const int met_n_default_buckets;

/* The metrics every Tandem process exports (names from ARCHITECTURE.md
 * "Observability", listed in docs/operations.md), declared in metrics.c's table with
 * their labels. Each process registers all of them and updates those it owns. */
typedef enum met_id {
    MET_REQUESTS_TOTAL,      /* counter tandem_requests_total [role, worker, outcome] */
    MET_TTFT,                /* histogram tandem_time_to_first_token_seconds [role, worker] */
    MET_ITL,                 /* histogram tandem_inter_token_latency_seconds [role, worker] */
    MET_E2E,                 /* histogram tandem_e2e_request_latency_seconds [role, worker] */
    MET_PROMPT_TOKENS,       /* counter tandem_prompt_tokens_total [role, worker] */
    MET_GENERATION_TOKENS,   /* counter tandem_generation_tokens_total [role, worker] */
    MET_REQUESTS_RUNNING,    /* gauge tandem_num_requests_running [role, worker] */
    MET_REQUESTS_WAITING,    /* gauge tandem_num_requests_waiting [role, worker] */
    MET_KV_USAGE_PERC,       /* gauge tandem_kv_cache_usage_perc [role, worker], 0..1 */
    MET_KV_BLOCKS_USED,      /* gauge tandem_kv_blocks_used [role, worker] */
    MET_KV_BLOCKS_CAPACITY,  /* gauge tandem_kv_blocks_capacity [role, worker] */
    MET_KV_TRANSFER_BYTES,   /* counter tandem_kv_transfer_bytes_total [role, worker, transport] */
    MET_KV_TRANSFER_SECONDS, /* histogram tandem_kv_transfer_seconds [role, worker, transport] */
    MET_BATCH_SIZE,          /* histogram tandem_batch_size [role, worker] */
    MET_BATCH_TOKENS,        /* histogram tandem_batch_tokens [role, worker] */
    MET_PREEMPTIONS,         /* counter tandem_num_preemptions_total [role, worker] (workers) */
    MET_ROUTER_RETRIES,      /* counter tandem_router_retries_total [reason] (coordinator) */
    MET_WEIGHT_RESIDENT,     /* gauge tandem_weight_resident_bytes [role, worker] (workers) */
    MET_WEIGHT_NEEDED,       /* gauge tandem_weight_needed_bytes [role, worker] (workers) */
    MET_EP_DISPATCHED,       /* counter tandem_ep_dispatched_tokens_total [role, worker, layer, rank] (EP ranks) */
    MET_EP_BALANCE,          /* gauge tandem_ep_balancedness [role, worker] (EP ranks) */
    MET_EP_BYTES,     /* counter tandem_ep_exchange_bytes_total [role, worker, direction, transport] (EP ranks) */
    MET_EP_SECONDS,   /* histogram tandem_ep_exchange_seconds [role, worker] (EP ranks) */
    MET_WORKER_STATE, /* gauge tandem_worker_state [role, worker, state] 0/1 (coordinator) */
    MET_MIGRATIONS,   /* counter tandem_request_migrations_total [reason] (coordinator) */
    MET_RESUME_GAP,   /* histogram tandem_request_resume_gap_seconds [] (coordinator) */
    /* prefill workers with a prefix cache, [role, worker]; in this order (worker.c) */
    MET_PREFIX_QUERIES,      /* counter tandem_prefix_cache_queries_total (prompt tokens looked up) */
    MET_PREFIX_HITS,         /* counter tandem_prefix_cache_hits_total (prompt tokens found cached) */
    MET_PREFIX_QUERY_BLOCKS, /* counter tandem_prefix_cache_query_blocks_total */
    MET_PREFIX_HIT_BLOCKS,   /* counter tandem_prefix_cache_hit_blocks_total */
    MET_PREFIX_EVICTIONS,    /* counter tandem_prefix_cache_evictions_total (blocks) */
    MET_PREFIX_BLOCKS,       /* gauge tandem_prefix_cache_blocks */
    MET_PREFIX_HIT_RATE,     /* gauge tandem_prefix_cache_hit_rate, 0..1 */
    MET_REQUESTS_REJECTED,   /* counter tandem_requests_rejected_total [reason] (coordinator) */
    MET_KV_REFUSED,          /* counter tandem_kv_refused_frames_total [role, worker, reason] (workers) */
    MET_N_TANDEM
} met_id;

typedef struct met_tandem {
    met_family *family[MET_N_TANDEM];
} met_tandem;

int met_tandem_register(met_registry *r, met_tandem *out, eng_error *err);

/* Kubernetes-style health probes, answered by met_server and by the coordinator's
 * HTTP server: GET /livez (the process runs), /startupz (it finished starting:
 * model loaded), /readyz (it should get traffic now: started, not draining, and
 * whatever else the process needs, e.g. a route to workers). A passing probe
 * answers 200 "ok", a failing one 503 with the reason. */
typedef enum met_probe { MET_PROBE_LIVEZ, MET_PROBE_STARTUPZ, MET_PROBE_READYZ } met_probe;
/* 1 when probe p passes; else 0 with the reason in why. Called from HTTP threads. */
typedef int (*met_probe_fn)(void *ctx, met_probe p, char *why, size_t cap);
/* The probe a URL path names ("/livez", "/startupz", "/readyz"), or -1. */
int met_probe_from_path(const char *path);
/* Runs the probe; writes the text/plain body ("ok\n" or "not ready: WHY\n") into
 * body and returns the HTTP status (200 or 503). */
int met_probe_answer(met_probe_fn fn, void *ctx, met_probe p, char *body, size_t cap);

/* A minimal HTTP server (libmicrohttpd, its own thread) answering GET /metrics
 * with met_render(r) and, when probe is not NULL, the health probes above; for
 * workers, which serve nothing else over HTTP. port 0 picks a free port;
 * met_server_port() tells which. */
typedef struct met_server met_server;
int met_server_start(met_registry *r, const char *host, int port, met_probe_fn probe, void *probe_ctx, met_server **out,
                     eng_error *err);
int met_server_port(const met_server *s);
void met_server_stop(met_server *s);

#endif

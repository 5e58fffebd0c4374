/* worker_internal.h: the worker's shared state, between its three files:
 *   worker.c   lifecycle (start/stop), registration and heartbeats, metrics, logging
 *   service.c  the gRPC handlers (Prefill.Run, Decode.Generate/KvReady/KvHello/KvRenew)
 *   engine.c   the engine thread: step planning, eng_forward, sampling, KV push
 *   control.c  the Worker service: Drain, SetRole, SetLogLevel, Config (tandemctl)
 *
 * Locking: one mutex (w->mu) guards the request list, every request's state fields,
 * the counters, and the KV pool's allocator (eng_kv_alloc/free via eng_seq_reserve/
 * release). eng_forward runs without it: it only reads and writes the cache memory of
 * blocks that belong to the sequences in the step, which nobody else touches while
 * they are in the step. rpc_call_finish and rpc_call_on_cancel are never called with
 * w->mu held (a cancel callback takes w->mu, and those calls wait for callbacks). */
#ifndef WRK_WORKER_INTERNAL_H
#define WRK_WORKER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "common/addr.h"
#include "common/clock.h"
#include "common/log.h"
#include "ep.h"
#include "kvtransfer.h"
#include "metrics.h"
#include "model/model.h"
#include "plan.h"
#include "prefix_cache.h"
#include "rpc.h"
#include "sampling/sampler.h"
#include "tandem.pb-c.h"
#include "worker.h"

/* A request's life, per kind (a table, so the engine loop reads like one):
 *   PREFILL    QUEUED -> PREFILLING -> DONE (first token sampled, KV pushed; the Run
 *              handler then waits for the receiver's verdict and frees the blocks)
 *   DECODE     RESERVED -> READY (KvReady, transfer verified) -> RUNNING -> DONE
 *   COLOCATED  QUEUED -> PREFILLING -> RUNNING -> DONE
 * A RUNNING sequence holds KV blocks for the tokens it has plus the next one; the
 * engine grows it a block at a time. When the pool runs dry the most recently
 * admitted running sequence is preempted (RUNNING -> PREEMPTED, blocks freed, prompt
 * and generated ids kept), later re-admitted (PREEMPTED -> RECOMPUTING: its prompt
 * and generated tokens run again as a chunked prefill) and goes on (-> RUNNING) from
 * the same step, so its tokens are those it would have produced uninterrupted. */
typedef enum wrk_kind { REQ_PREFILL, REQ_DECODE, REQ_COLOCATED } wrk_kind;
typedef enum wrk_state {
    ST_QUEUED,
    ST_PREFILLING,
    ST_RESERVED,
    ST_READY,
    ST_RUNNING,
    ST_PREEMPTED,
    ST_RECOMPUTING,
    ST_DONE
} wrk_state;

typedef struct wrk_req {
    struct wrk_req *next; /* in w->reqs while not DONE */
    struct wrk_worker *w;
    int refs;   /* the list's, the handler's, the step's; freed at 0 */
    int arming; /* its handler is still setting it up: the engine leaves it alone */
    wrk_kind kind;
    wrk_state state;
    char id[128];

    int32_t *prompt; /* the prompt, then the n_resumed generated tokens: the prefill's input */
    int n_prompt;
    int n_resumed; /* a migrated request: tokens generated before it came here (also in gen) */
    eng_sampling samp;
    int max_tokens, top_logprobs;
    int32_t *stop_ids;
    int n_stop;
    int cap_tokens; /* tokens the sequence may hold (wrk_cap_tokens) */

    eng_seq seq;     /* KV blocks, taken and given back under w->mu */
    int n_prefilled; /* prompt tokens in the cache (PREFILL, COLOCATED) */
    int32_t *gen;    /* generated tokens, room for cap_tokens - n_prompt */
    int n_gen;
    float *logits;    /* vocab floats for the step that samples */
    int in_step;      /* planned into the step running now */
    int chunk;        /* prompt tokens in this step */
    int n_recomputed; /* RECOMPUTING: history tokens (prompt, then generated) back in the cache */
    int preemptions;  /* times this request gave its blocks back */

    /* Ending: set by anyone (cancel callback, lease, error, finish); acted on by the
     * engine thread, which ends the request once it is out of any step. */
    int cancelled;
    int end_code; /* rpc_code to finish with once `ending` */
    int ending;
    int retryable;
    int migrate; /* the stream is handed back to be resumed elsewhere (drain deadline) */
    char end_msg[800];

    /* DECODE / COLOCATED: the Generate stream. */
    rpc_call *call;
    uint64_t transfer_id;
    int have_transfer;
    double lease_deadline; /* RESERVED: ends then unless KvRenew or KvReady come first */
    double t_arrival, t_last_token;

    /* PREFILL: the push into the decode worker's blocks. */
    kvt_send *send;
    int32_t *dst_blocks;
    int n_dst;
    uint64_t dst_pool_blocks;
    int n_sent_blocks; /* blocks already pushed for every layer */
    int send_failed;
    char send_err[800];
    int done; /* the engine is finished with it; the Run handler takes over */
    pthread_cond_t done_cv;
    eng_sample_result first;
    double t_enqueued, t_started, t_computed;
} wrk_req;

typedef struct wrk_chan {
    struct wrk_chan *next;
    char address[256];
    rpc_channel *ch;
} wrk_chan;

struct wrk_worker {
    wrk_options opt;
    char id[512];
    char host[128];
    char model_name[256];
    char rpc_address[300];
    char metrics_address[300];
    const char *role_name; /* at start: the metrics' role label (wrk_role_now is the role now) */
    atomic_int role;       /* wrk_role; changed by Worker.SetRole once drained */

    eng_model *model;
    const eng_config *cfg;
    wrk_ep *ep;  /* NULL unless an EP rank */
    int experts; /* experts this worker runs */
    eng_gen_config gen;
    eng_kv_layout layout;
    eng_kv_pool *pool;
    wrk_prefix *prefix;           /* prefill role, unless --no-prefix-cache: blocks kept after requests */
    wrk_prefix_stats prefix_seen; /* what the metrics counted so far */
    size_t unit_bytes;
    int max_context;

    kvt_transport *kvt;
    kvt_region *region;
    uint8_t descriptor[KVT_DESCRIPTOR_MAX];
    size_t descriptor_len;

    rpc_server *server;
    int rpc_port;

    met_registry *metrics;
    met_tandem met;
    met_server *met_server;
    met_metric *m_running, *m_waiting, *m_used, *m_total, *m_usage, *m_batch, *m_batch_tokens;
    met_metric *m_prompt_tokens, *m_gen_tokens, *m_ok, *m_cancelled, *m_error, *m_rejected;
    met_metric *m_kv_bytes, *m_kv_seconds, *m_ttft, *m_itl, *m_e2e;
    met_metric *m_preemptions;
    met_metric *m_pc_queries, *m_pc_hits, *m_pc_query_blocks, *m_pc_hit_blocks, *m_pc_evictions;
    met_metric *m_pc_blocks, *m_pc_hit_rate;
    met_metric *m_weight_resident;
    uint64_t kv_bytes_seen;
    met_metric *m_kv_refused[3]; /* reasons: unknown_transfer, bad_secret, wrong_peer */
    uint64_t kv_refused_seen[3];

    pthread_mutex_t mu;
    pthread_cond_t cv; /* wakes the engine thread */
    wrk_req *reqs;
    int stopping;
    int draining;              /* wrk_drain: admit nothing new, let the rest finish */
    double drain_deadline;     /* then the streams left are handed back for migration */
    int next_role;             /* Worker.SetRole: the role to take once drained; 0 none */
    int open_runs;             /* Prefill.Run handlers past admission (they outlive their request's DONE) */
    atomic_int started;        /* model loaded, services running: /startupz passes */
    atomic_int registered;     /* the coordinator accepted our registration */
    int n_reserved_or_running; /* DECODE/COLOCATED requests holding decode slots */
    uint64_t steps, batched_seqs;
    uint64_t preemptions;             /* sequences that gave their blocks back to let others grow */
    double rate_tokens, rate_seconds; /* decaying sums over forward steps: the measured speed */
    uint32_t max_batch, last_batch;

    pthread_t engine_thread;
    int engine_started;

    /* Registration. */
    pthread_t registry_thread;
    int registry_started;
    pthread_mutex_t reg_mu;
    pthread_cond_t reg_cv;
    int reg_stop;
    int reg_now; /* send a heartbeat without waiting out the interval (draining) */
    rpc_channel *coord;

    /* Incoming transfers that failed (kvt notify, called under the transport's own
     * lock, so it only takes fail_mu): the engine ends their reservations at once
     * instead of letting them wait for the lease. */
    pthread_mutex_t fail_mu;
    uint64_t *failed_ids;
    int n_failed, cap_failed;

    /* Channels to decode workers (KvHello), by address. */
    pthread_mutex_t chan_mu;
    wrk_chan *chans;
};

/* Tokens a request's prefill computes: its prompt, then any generated before a migration. */
static inline int wrk_input_tokens(const wrk_req *r)
{
    return r->n_prompt + r->n_resumed;
}

/* worker.c */
/* One log line (common/log.h) from this worker: the component is "ROLE ID". */
void wrk_log(wrk_worker *w, eng_log_level level, const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
rpc_channel *wrk_channel(wrk_worker *w, const char *address, rpc_status *st);

/* service.c */
int wrk_service_register(wrk_worker *w, rpc_status *st);

/* control.c */
int wrk_control_register(wrk_worker *w, rpc_status *st);
wrk_role wrk_role_now(wrk_worker *w);
/* Registration thread: after Worker.SetRole, once drained with nothing in flight,
 * takes the new role and stops draining. 1 when it did (register again now). */
int wrk_take_new_role(wrk_worker *w);

/* engine.c */
void *wrk_engine_main(void *arg);
wrk_req *wrk_req_new(wrk_worker *w, wrk_kind kind, const char *id);
void wrk_req_unref(wrk_worker *w, wrk_req *r); /* takes w->mu itself */
void wrk_req_unref_locked(wrk_worker *w, wrk_req *r);
void wrk_req_link(wrk_worker *w, wrk_req *r); /* under w->mu: into w->reqs, +1 ref */
/* Under w->mu: a PREFILL request's blocks for its whole input, its cached prefix (when
 * the worker has a prefix cache) already counted in n_prefilled; -1: not now. */
int wrk_prompt_blocks_take(wrk_worker *w, wrk_req *r);
/* Under w->mu: gives them back (computed full blocks stay cached). */
void wrk_prompt_blocks_give(wrk_worker *w, wrk_req *r);
/* Under w->mu: free KV blocks, counting cached blocks nobody uses (evictable). */
int wrk_free_blocks(const wrk_worker *w);
/* Under w->mu: asks the engine thread to end r with code and message. */
void wrk_req_end_locked(wrk_worker *w, wrk_req *r, int code, int retryable, const char *msg);
/* Fills a Token message from a sample result (top points into storage). */
void wrk_token_msg(const eng_sample_result *r, int index, int finish, Tandem__Token *tok,
                   Tandem__TokenLogprob *top_store, Tandem__TokenLogprob **top_ptrs);

#endif

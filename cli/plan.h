/* plan.h: the capacity planner behind `tandemctl plan` (cli/plan_*.c).
 *
 * A profile (`tandem profile`) gives what a forward step and a KV transfer cost on
 * one machine; a workload file gives arrivals and request lengths; the simulator
 * (plan_sim.c) replays a trace of that workload through a discrete-event model of
 * the real scheduler (the router's picks, decode admission, continuous batching,
 * chunked prefill under the step token budget, the KV push's unhidden last layer)
 * for one cluster shape, and reports each request's TTFT and TPOT. No I/O but the
 * two loaders, no global state, so the unit tests check each part. */
#ifndef PLAN_H
#define PLAN_H

#include <stdint.h>

#include "common/error.h"

/* The whole file at path as a NUL-terminated string (at most 64 MiB); NULL on failure. */
char *plan_read_text(const char *path, eng_error *err);

/* ---------------------------------------------------------------- step cost */

/* Seconds of one forward step, linear in what the step computes:
 *   t = c[0] + c[1] * tokens + c[2] * attention + c[3] * logits
 * tokens: rows through the layers; attention: sum over those rows of the positions
 * they attend to (context + own position + 1); logits: rows through the LM head. */
enum { PLAN_COST_TERMS = 4, PLAN_MAX_KNOTS = 32 };

/* What the linear cost misses at the measured shapes (measured - fitted seconds),
 * interpolated linearly between them and held beyond the first and last: a step is
 * not linear in its rows (a matmul reads its weights once per tile of rows, so 64
 * rows cost less than 8 x 8; the decode steps of the bench model cost 2.3-5 ms more
 * a row from 1 to 8 sequences and 1.8 from 32 to 64), and one line through decode,
 * prefill and mixed steps missed the decode batches of the cluster by 10-40%. */
typedef struct plan_knots {
    int n;
    double at[PLAN_MAX_KNOTS], residual[PLAN_MAX_KNOTS];
} plan_knots;

typedef struct plan_cost {
    double c[PLAN_COST_TERMS];
    plan_knots decode;  /* by decode batch size: the mean over the contexts measured */
    plan_knots prefill; /* by the step's longest prompt chunk: one prompt from position 0 */
} plan_cost;

/* One step shape: `items` sequences adding `per_item` tokens each after `context`
 * cached ones, `logits` rows of logits in all; and `chunk` more rows of one prompt
 * from position 0, without logits (a mixed step: a decode batch and a prompt's chunk). */
typedef struct plan_shape {
    double items, per_item, context, logits, chunk;
} plan_shape;

void plan_shape_terms(const plan_shape *s, double x[PLAN_COST_TERMS]);
double plan_cost_seconds(const plan_cost *c, const double x[PLAN_COST_TERMS]);

/* A step's seconds: the linear cost of its terms x, plus the knots' corrections for
 * its decode_items sequences of one token and its longest prompt chunk. The prompt
 * knots go by the chunk, not by the step's prompt rows: what the line misses of a
 * long prompt is its own attention (a single prompt of 2048 took 235 ms more than the
 * line), and a step of 4-7 prompts in 2048 rows took what the line gives (1087-1351
 * ms against 1242), where the 2048-row knot had charged it 1480. */
double plan_step_seconds(const plan_cost *c, const double x[PLAN_COST_TERMS], int decode_items, int longest_chunk);

/* Fits the cost to n measured steps (median seconds in t[]), minimising the squared
 * relative error with every coefficient >= 0 (exact, over the 16 subsets of terms),
 * then sets the knots from what that leaves at the decode steps (by batch) and the
 * single prompts (by length). Returns the median relative error of
 * plan_step_seconds over the steps, or -1 when n < 1. */
double plan_fit_cost(const plan_shape *s, const double *t, int n, plan_cost *out);

/* ---------------------------------------------------------------- profile */

enum { PLAN_MAX_CO_RUNNERS = 64 };

typedef struct plan_profile {
    char model[128];
    int threads, layers, block_size, max_context;
    double kv_bytes_per_token;
    plan_cost cost;
    double fit_error;                        /* median relative error of plan_step_seconds over the profile's steps */
    double xfer_latency_s, xfer_bytes_per_s; /* a KV push: latency + bytes / rate (the profile's TCP points) */
    /* measured contention (`tandem profile --co-runners K`): a step beside k other busy
     * workers takes slowdown[k] times as long (median over the profile's steps), for
     * k = 1..co_runners; 0 co_runners: not measured */
    int co_runners;
    double slowdown[PLAN_MAX_CO_RUNNERS + 1];
} plan_profile;

/* Reads a `tandem profile` JSON text (plan_profile_load: from a file) and fits it. */
int plan_profile_parse(const char *json, plan_profile *out, eng_error *err);
int plan_profile_load(const char *path, plan_profile *out, eng_error *err);

/* ---------------------------------------------------------------- workload */

/* A length distribution: fixed, uniform integers in [lo, hi], lognormal (median,
 * sigma) rounded and clamped to [lo, hi], or uniform over an explicit list. */
typedef enum { PLAN_FIXED, PLAN_UNIFORM, PLAN_LOGNORMAL, PLAN_LIST } plan_dist_kind;
typedef struct plan_dist {
    plan_dist_kind kind;
    int lo, hi;            /* FIXED: lo; UNIFORM and LOGNORMAL: the bounds */
    double median, sigma;  /* LOGNORMAL */
    int *values, n_values; /* LIST */
} plan_dist;

/* Arrivals: gamma-distributed gaps with mean 1 / rate and shape `shape` (1 = Poisson,
 * below 1 burstier, above 1 more regular). */
typedef struct plan_workload {
    char name[64];
    double rate, shape;
    plan_dist prompt, output;
    int requests; /* a run's length when none is asked for */
} plan_workload;

/* Limits of a workload file: what the cluster accepts and what a trace can hold. */
enum { PLAN_MAX_LEN = 1 << 20, PLAN_MAX_LIST = 100000, PLAN_MAX_REQUESTS = 1000000 };

int plan_workload_parse(const char *json, plan_workload *out, eng_error *err);
int plan_workload_load(const char *path, plan_workload *out, eng_error *err);
void plan_workload_free(plan_workload *w);

/* mulberry32, the generator bench/workload.mjs uses too: the same seed gives the
 * load generator and the planner the same trace. */
typedef struct plan_rng {
    uint32_t a;
} plan_rng;
double plan_rng_next(plan_rng *r); /* uniform in [0, 1) */

typedef struct plan_request {
    double arrival; /* seconds from the start */
    int prompt, output;
} plan_request;

/* n requests of workload w at `rate` per second (w->rate when 0), from seed. For a
 * given seed the draws do not depend on the rate: the arrivals just scale by 1/rate. */
void plan_trace(const plan_workload *w, double rate, uint32_t seed, plan_request *out, int n);

/* ---------------------------------------------------------------- simulation */

typedef struct plan_cluster {
    int n_prefill, n_decode, n_both; /* colocated: n_both only; disaggregated: the others */
    int max_batch_tokens;            /* the workers' --max-batch-tokens */
    int max_running;                 /* the workers' --max-running */
    int kv_blocks;                   /* decode KV pool per worker, in blocks */
    double cores;                    /* CPUs the workers share; steps slow down beyond them */
    /* CPU seconds that the other processes on those CPUs (the coordinator, the clients,
     * the workers' RPC and KV threads) spend per token streamed to a client; 0 when
     * they run elsewhere. Modelled as one more runnable thread while that work is
     * outstanding (see plan_sim.c). */
    double serving_cpu_per_token;
    /* Seconds a worker's engine thread spends after a step handing each token it
     * produced to the token's stream (wrk emit_token: the message, the gRPC send);
     * `tandem profile` times the forward pass and sampling only. Added to every step,
     * per token it streams. */
    double stream_cpu_per_token;
    /* Every step's profiled cost is multiplied by this (1: as profiled): the host's
     * speed while a cluster served against its speed while profiling, as `tandemctl
     * plan-check` measures it, to ask what the model predicts at the speed a run
     * actually had (a diagnosis after the fact, not a prediction). */
    double step_scale;
} plan_cluster;

typedef struct plan_outcome {
    double ttft, tpot; /* seconds; tpot 0 for one output token */
    double end;        /* the last token's time */
} plan_outcome;

/* Runs the trace (sorted by arrival) through the cluster; out[i] is request i's.
 * step_stretch (may be NULL): how much longer the steps took than as profiled alone,
 * all steps' time over their profiled time (contention, the serving path's share of
 * the cores); `tandemctl plan-check` measures the same ratio on a real cluster. */
int plan_simulate(const plan_profile *p, const plan_cluster *c, const plan_request *reqs, int n, plan_outcome *out,
                  double *step_stretch, eng_error *err);

typedef struct plan_summary {
    double attainment; /* share of requests meeting both SLOs */
    double ttft_p50, ttft_p99, tpot_p50, tpot_p99;
    double step_stretch; /* plan_simulate's (plan_summarize sets it to 0) */
} plan_summary;

/* Percentiles are nearest-rank, as bench/loadgen.mjs reports them. */
void plan_summarize(const plan_outcome *o, int n, double ttft_slo, double tpot_slo, plan_summary *out);

/* ---------------------------------------------------------------- logged steps */

/* One step of a worker's debug log (worker/engine.c, "step: ..."): what the step
 * computed, as plan_step_seconds takes it, and what it took, forward and sampling
 * (the profile's steps) without the streaming after them (--stream-cpu's part). */
typedef struct plan_logged_step {
    char worker[64];
    double x[PLAN_COST_TERMS];
    int decode_items, longest_chunk;
    double seconds;
    int streamed_tokens;   /* handed to their streams after the step ... */
    double stream_seconds; /* ... in this long (not in seconds) */
} plan_logged_step;

/* 1: line is a step line, parsed into out; 0: any other line (or an older worker's
 * step line, which lacks the knots' keys). */
int plan_parse_step_line(const char *line, plan_logged_step *out);

/* `tandemctl plan` (plan_cmd.c): argv[0] is "plan". Returns the exit status. */
int plan_command(int argc, char **argv);

/* `tandemctl plan-check` (plan_check_cmd.c): argv[0] is "plan-check". */
int plan_check_command(int argc, char **argv);

#endif

/* plan_cmd.c: `tandemctl plan`, which cluster shape serves a workload best within
 * its latency targets.
 *
 * For N workers the candidates are colocated (N workers with role both) and every
 * split P prefill + (N - P) decode. Each is simulated (plan_sim.c) on the same trace
 * of the workload (same seed: the same requests, arrivals scaled by the rate); its
 * goodput is the highest arrival rate at which at least --attainment of the requests
 * meet both SLOs, found by doubling and then bisecting the rate. With --rate the
 * candidates are instead simulated at the rates given, which is what
 * bench/goodput.sh puts next to its measurements. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_args.h"
#include "plan.h"

enum { MAX_WORKERS = 64, MAX_RATES = 32 };

typedef struct plan_args {
    const char *profile, *workload, *rates, *output;
    float ttft_slo, tpot_slo, attainment, cores, serving_cpu, stream_cpu, step_scale;
    int workers, requests, seed, max_batch_tokens, max_running, kv_blocks, json, ttft_given, tpot_given;
} plan_args;

#define A plan_args
static const cli_opt OPTS[] = {
    CLI_STR_OPT(A, profile, "--profile", "FILE", NULL, "a profile written by `tandem profile --out FILE`",
                CLI_REQUIRED),
    CLI_STR_OPT(A, workload, "--workload", "FILE", NULL, "a workload file (docs/benchmarks.md)", CLI_REQUIRED),
    CLI_FLOAT_GIVEN(A, ttft_slo, ttft_given, "--ttft-slo", "MS", 0, 1e9, "time to first token target, ms",
                    CLI_REQUIRED | CLI_LO_OPEN),
    CLI_FLOAT_GIVEN(A, tpot_slo, tpot_given, "--tpot-slo", "MS", 0, 1e9, "time per output token target, ms",
                    CLI_REQUIRED | CLI_LO_OPEN),
    CLI_INT_OPT(A, workers, "--workers", "N", 2, MAX_WORKERS, "2",
                "workers to split (each with the profile's threads)"),
    CLI_FLOAT_OPT(A, attainment, "--attainment", "F", 0, 1, "0.9",
                  "share of requests that must meet both SLOs for a rate to count"),
    CLI_INT_OPT(A, requests, "--requests", "N", 0, PLAN_MAX_REQUESTS, "0",
                "requests per simulated run; 0: the workload's \"requests\""),
    CLI_INT_OPT(A, seed, "--seed", "S", 0, 2147483647, "1", "the trace's seed (bench/loadgen.mjs --seed)"),
    CLI_STR_OPT(A, rates, "--rate", "R[,R...]", NULL,
                "simulate at these arrival rates (req/s) instead of searching for the goodput", 0),
    CLI_INT_OPT(A, max_batch_tokens, "--max-batch-tokens", "N", 1, 1 << 24, "2048", "the workers' --max-batch-tokens"),
    CLI_INT_OPT(A, max_running, "--max-running", "N", 1, 1 << 20, "64", "the workers' --max-running"),
    CLI_INT_OPT(A, kv_blocks, "--kv-blocks", "N", 0, 1 << 30, "0",
                "KV blocks per worker; 0: max-running full contexts (the\nworkers' default when memory allows)"),
    CLI_FLOAT_OPT(A, cores, "--cores", "C", 0, 1e6, "0",
                  "CPUs all workers share (for a profile without --co-runners\nfigures, and for --serving-cpu); 0: "
                  "workers x the profile's\nthreads"),
    CLI_FLOAT_OPT(A, serving_cpu, "--serving-cpu", "MS", 0, 1000, "0",
                  "CPU ms per streamed token that other processes on the\nworkers' cores spend (the coordinator, "
                  "the clients, RPC\nand KV threads; bench/goodput.mjs measures it); 0: they\nrun elsewhere"),
    CLI_FLOAT_OPT(A, stream_cpu, "--stream-cpu", "MS", 0, 1000, "0",
                  "ms a worker's engine thread spends handing each token to\nits stream, between steps (a debug-level "
                  "worker log\nshows it; bench/goodput.mjs measures it); each step\nlasts that much longer per token "
                  "it streams"),
    CLI_FLOAT_OPT(A, step_scale, "--step-scale", "F", 0.1, 10, "1",
                  "every step takes F times the profile's cost: to see what\nthe model gives at the speed a cluster "
                  "really ran (its\n`tandemctl plan-check` ratio over the plan's step_stretch),\nafter the fact"),
    CLI_CHOICE_OPT(A, output, "-o", "table|json", "table", "output format", 0),
    CLI_FLAG_OPT(A, json, "--json", "the same as -o json"),
};
#undef A

static const cli_command CMD = {
    .name = "tandemctl plan",
    .usage = "--profile FILE --workload FILE --ttft-slo MS --tpot-slo MS --workers N [options]",
    .about = "  Simulates colocated serving and every prefill:decode split of N workers on the\n"
             "  workload and prints each one's goodput (the highest request rate at which enough\n"
             "  requests meet both SLOs), its TTFT and TPOT there, and the recommendation.\n"
             "  Needs no cluster: a profile from `tandem profile` and a workload file.",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
};

typedef struct candidate {
    plan_cluster c;
    char name[48];
    double goodput;
    int unbounded;   /* every request met the SLOs at the highest rate tried (1e6 req/s) */
    plan_summary at; /* at the goodput (or at the rate asked for) */
} candidate;

typedef struct planner {
    const plan_profile *p;
    const plan_workload *w;
    double ttft_slo, tpot_slo, goal;
    int n;
    uint32_t seed;
    plan_request *trace;
    plan_outcome *out;
} planner;

static int at_rate(planner *pl, const plan_cluster *c, double rate, plan_summary *s, eng_error *err)
{
    plan_trace(pl->w, rate, pl->seed, pl->trace, pl->n);
    double stretch;
    if (plan_simulate(pl->p, c, pl->trace, pl->n, pl->out, &stretch, err) < 0)
        return -1;
    plan_summarize(pl->out, pl->n, pl->ttft_slo, pl->tpot_slo, s);
    s->step_stretch = stretch;
    return 0;
}

/* The highest rate meeting the goal: double from the workload's rate while it holds,
 * halve while it does not, then bisect (to 0.5%) between the last rate that held and
 * the first that did not. 0 when even a nearly idle cluster misses the goal. */
static int goodput(planner *pl, candidate *cand, eng_error *err)
{
    plan_summary s;
    double lo = 0, hi = pl->w->rate, floor_rate = pl->w->rate / 1024;
    for (;;) {
        if (at_rate(pl, &cand->c, hi, &s, err) < 0)
            return -1;
        if (s.attainment < pl->goal)
            break;
        lo = hi;
        if ((hi *= 2) > 1e6) {
            cand->unbounded = 1; /* a short trace can be served even arriving all at once */
            break;
        }
    }
    while (lo == 0 && hi > floor_rate) {
        hi /= 2;
        if (at_rate(pl, &cand->c, hi, &s, err) < 0)
            return -1;
        if (s.attainment >= pl->goal) {
            lo = hi;
            hi *= 2;
        }
    }
    while (lo > 0 && hi - lo > 0.005 * lo) {
        double mid = (lo + hi) / 2;
        if (at_rate(pl, &cand->c, mid, &s, err) < 0)
            return -1;
        *(s.attainment >= pl->goal ? &lo : &hi) = mid;
    }
    cand->goodput = lo;
    if (lo > 0 && at_rate(pl, &cand->c, lo, &cand->at, err) < 0)
        return -1;
    return 0;
}

static int parse_rates(const char *s, double *r, int cap)
{
    int n = 0;
    while (*s) {
        char *end;
        double v = strtod(s, &end);
        if (end == s || !(v > 0) || v > 1e6 || n == cap || (*end && *end != ','))
            return -1;
        r[n++] = v;
        s = *end ? end + 1 : end;
    }
    return n;
}

static cJSON *summary_json(const plan_summary *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "attainment", s->attainment);
    cJSON_AddNumberToObject(o, "ttft_p50_ms", 1e3 * s->ttft_p50);
    cJSON_AddNumberToObject(o, "ttft_p99_ms", 1e3 * s->ttft_p99);
    cJSON_AddNumberToObject(o, "tpot_p50_ms", 1e3 * s->tpot_p50);
    cJSON_AddNumberToObject(o, "tpot_p99_ms", 1e3 * s->tpot_p99);
    cJSON_AddNumberToObject(o, "step_stretch", s->step_stretch);
    return o;
}

static void print_summary_row(const char *name, double rate, const plan_summary *s)
{
    printf("%-22s %9.3f %10.1f%% %11.0f %11.0f %11.1f %11.1f\n", name, rate, 100 * s->attainment, 1e3 * s->ttft_p50,
           1e3 * s->ttft_p99, 1e3 * s->tpot_p50, 1e3 * s->tpot_p99);
}

int plan_command(int argc, char **argv)
{
    plan_args a = {0};
    int rc = cli_parse(&CMD, argc, argv, &a);
    if (rc != CLI_RUN)
        return rc ? 1 : 0;
    double rates[MAX_RATES];
    int n_rates = a.rates ? parse_rates(a.rates, rates, MAX_RATES) : 0;
    if (n_rates < 0)
        return cli_usage_error(&CMD, "--rate wants up to %d comma-separated rates in (0, 1e6] req/s", MAX_RATES), 1;
    int json = a.json || !strcmp(a.output, "json");

    eng_error err = {{0}};
    plan_profile prof;
    plan_workload wl = {0};
    candidate cands[MAX_WORKERS];
    planner pl = {.p = &prof,
                  .w = &wl,
                  .ttft_slo = a.ttft_slo / 1e3,
                  .tpot_slo = a.tpot_slo / 1e3,
                  .goal = a.attainment,
                  .seed = (uint32_t)a.seed};
    int status = 1, n_cands = 0;
    cJSON *doc = NULL;
    if (plan_profile_load(a.profile, &prof, &err) < 0 || plan_workload_load(a.workload, &wl, &err) < 0)
        goto fail;
    pl.n = a.requests ? a.requests : wl.requests;
    pl.trace = malloc((size_t)pl.n * sizeof *pl.trace);
    pl.out = malloc((size_t)pl.n * sizeof *pl.out);
    if (!pl.trace || !pl.out) {
        eng_fail(&err, "out of memory for %d requests", pl.n);
        goto fail;
    }
    plan_cluster base = {
        .max_batch_tokens = a.max_batch_tokens,
        .max_running = a.max_running,
        .kv_blocks = a.kv_blocks ? a.kv_blocks
                                 : (int)fmin((double)a.max_running *
                                                 ((prof.max_context + prof.block_size - 1) / prof.block_size),
                                             1 << 30),
        .cores = a.cores > 0 ? a.cores : (double)a.workers * prof.threads,
        .serving_cpu_per_token = a.serving_cpu / 1e3,
        .stream_cpu_per_token = a.stream_cpu / 1e3,
        .step_scale = a.step_scale,
    };
    for (int p = 0; p < a.workers; p++) {
        candidate *c = &cands[n_cands++];
        memset(c, 0, sizeof *c);
        c->c = base;
        if (p == 0) {
            c->c.n_both = a.workers;
            snprintf(c->name, sizeof c->name, "colocated x%d", a.workers);
        } else {
            c->c.n_prefill = p;
            c->c.n_decode = a.workers - p;
            snprintf(c->name, sizeof c->name, "%d prefill + %d decode", p, a.workers - p);
        }
    }

    doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "profile", prof.model);
    cJSON_AddStringToObject(doc, "workload", wl.name);
    cJSON_AddNumberToObject(doc, "requests", pl.n);
    cJSON_AddNumberToObject(doc, "seed", a.seed);
    cJSON_AddNumberToObject(doc, "cost_fit_error", prof.fit_error);
    cJSON_AddItemToObject(doc, "slowdown", cJSON_CreateDoubleArray(prof.slowdown + 1, prof.co_runners));
    cJSON_AddNumberToObject(doc, "serving_cpu_ms_per_token", a.serving_cpu);
    cJSON_AddNumberToObject(doc, "stream_cpu_ms_per_token", a.stream_cpu);
    cJSON_AddNumberToObject(doc, "step_scale", a.step_scale);
    cJSON_AddNumberToObject(doc, "cores", base.cores);
    cJSON *arr = cJSON_AddArrayToObject(doc, "candidates");
    if (!json) {
        printf("workload %s: %d requests (seed %d), arrivals gamma shape %g; profile %s, %d thread(s) per worker\n",
               wl.name, pl.n, a.seed, wl.shape, prof.model, prof.threads);
        printf("cost model: step = %.3g s + %.3g s/token + %.3g s/attended position + %.3g s/logits row, "
               "corrected at %d decode batches and %d prompt lengths (median error %.1f%%); KV push %.3g ms + %.3g "
               "GB/s\n",
               prof.cost.c[0], prof.cost.c[1], prof.cost.c[2], prof.cost.c[3], prof.cost.decode.n, prof.cost.prefill.n,
               100 * prof.fit_error, 1e3 * prof.xfer_latency_s, prof.xfer_bytes_per_s / 1e9);
        printf("SLOs: TTFT <= %g ms, TPOT <= %g ms for %g%% of requests; %d workers", a.ttft_slo, a.tpot_slo,
               100 * a.attainment, a.workers);
        if (prof.co_runners) {
            printf(", steps slowed by the measured contention:");
            for (int k = 1; k <= prof.co_runners; k++)
                printf(" %.2fx beside %d", prof.slowdown[k], k);
            printf("\n");
        } else
            printf(" on %g cores (ideal sharing; no measured contention in the profile)\n", base.cores);
        if (a.serving_cpu > 0)
            printf("serving path: %g ms of CPU per streamed token on the workers' %g cores\n", a.serving_cpu,
                   base.cores);
        if (a.stream_cpu > 0)
            printf("streaming: %g ms of the engine thread per token, after each step\n", a.stream_cpu);
        if (a.step_scale != 1)
            printf("every step at %g times the profile's cost (--step-scale)\n", a.step_scale);
        printf("\n");
        printf("%-22s %9s %11s %11s %11s %11s %11s\n", "candidate", n_rates ? "rate" : "goodput", "attainment",
               "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99");
    }
    int best = 0;
    for (int k = 0; k < n_cands; k++) {
        candidate *c = &cands[k];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, o);
        cJSON_AddStringToObject(o, "name", c->name);
        cJSON_AddNumberToObject(o, "prefill", c->c.n_prefill);
        cJSON_AddNumberToObject(o, "decode", c->c.n_decode);
        cJSON_AddNumberToObject(o, "colocated", c->c.n_both);
        if (n_rates) {
            cJSON *at = cJSON_AddArrayToObject(o, "at");
            for (int r = 0; r < n_rates; r++) {
                plan_summary s;
                if (at_rate(&pl, &c->c, rates[r], &s, &err) < 0)
                    goto fail;
                cJSON *so = summary_json(&s);
                cJSON_AddNumberToObject(so, "rate", rates[r]);
                cJSON_AddItemToArray(at, so);
                if (!json)
                    print_summary_row(r ? "" : c->name, rates[r], &s);
            }
            continue;
        }
        if (goodput(&pl, c, &err) < 0)
            goto fail;
        cJSON_AddNumberToObject(o, "goodput", c->goodput);
        cJSON_AddBoolToObject(o, "unbounded", c->unbounded);
        cJSON_AddItemToObject(o, "at_goodput", summary_json(&c->at));
        if (!json) {
            if (c->unbounded)
                printf("%-22s   unbounded: all %d requests meet the SLOs even arriving at once\n", c->name, pl.n);
            else if (c->goodput > 0)
                print_summary_row(c->name, c->goodput, &c->at);
            else
                printf("%-22s %9.3f   (misses the SLOs even when idle)\n", c->name, 0.0);
        }
        if (c->goodput > cands[best].goodput * 1.005) /* a tie goes to the simpler, colocated */
            best = k;
    }
    if (!n_rates) {
        const candidate *b = &cands[best], *col = &cands[0];
        cJSON_AddStringToObject(doc, "recommendation", b->goodput > 0 ? b->name : "none");
        if (json)
            ;
        else if (b->goodput <= 0)
            printf("\nrecommendation: none; no candidate meets the SLOs, even nearly idle\n");
        else if (best == 0)
            printf("\nrecommendation: %s (%.3f req/s); no prefill:decode split beats colocated serving here\n", b->name,
                   b->goodput);
        else if (col->goodput > 0)
            printf("\nrecommendation: %s (%.3f req/s, %.2fx colocated's %.3f req/s)\n", b->name, b->goodput,
                   b->goodput / col->goodput, col->goodput);
        else
            printf("\nrecommendation: %s (%.3f req/s; colocated misses the SLOs)\n", b->name, b->goodput);
    }
    if (json) {
        char *s = cJSON_Print(doc);
        if (s)
            puts(s);
        free(s);
    }
    status = 0;
    goto done;
fail:
    fprintf(stderr, "tandemctl plan: %s\n", err.msg);
done:
    cJSON_Delete(doc);
    free(pl.trace);
    free(pl.out);
    plan_workload_free(&wl);
    return status;
}

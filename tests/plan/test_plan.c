/* test_plan.c: the capacity planner's parts (cli/plan_*.c) against cases whose answer
 * is known in closed form: the simulator's queue against M/D/1 and D/D/1, batching,
 * the KV push, processor sharing, measured contention, the serving path's CPU and
 * admission against hand-computed timelines, the
 * cost fit against the coefficients that made its points, the trace's arrival gaps
 * against the gamma distribution's moments, and bad workload files. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "plan.h"

static plan_profile profile(double c0, double c1, double c2, double c3)
{
    plan_profile p = {.threads = 1, .layers = 4, .block_size = 16, .max_context = 1 << 20};
    p.cost = (plan_cost){.c = {c0, c1, c2, c3}};
    p.kv_bytes_per_token = 1000;
    p.xfer_latency_s = 0.002;
    p.xfer_bytes_per_s = 1e6;
    return p;
}

static plan_cluster colocated(int n)
{
    return (plan_cluster){.n_both = n,
                          .max_batch_tokens = 2048,
                          .max_running = 1 << 20,
                          .kv_blocks = 1 << 30,
                          .cores = n,
                          .step_scale = 1};
}

/* one prefill and one decode worker on two cores */
static plan_cluster split(void)
{
    return (plan_cluster){.n_prefill = 1,
                          .n_decode = 1,
                          .max_batch_tokens = 2048,
                          .max_running = 64,
                          .kv_blocks = 1 << 20,
                          .cores = 2,
                          .step_scale = 1};
}

static plan_workload poisson(double rate, double shape, int prompt, int output)
{
    plan_workload w = {.rate = rate, .shape = shape};
    w.prompt = (plan_dist){.kind = PLAN_FIXED, .lo = prompt};
    w.output = (plan_dist){.kind = PLAN_FIXED, .lo = output};
    return w;
}

static double mean_ttft(const plan_profile *p, const plan_cluster *c, const plan_workload *w, int n, uint32_t seed)
{
    plan_request *r = malloc((size_t)n * sizeof *r);
    plan_outcome *o = malloc((size_t)n * sizeof *o);
    eng_error err;
    plan_trace(w, 0, seed, r, n);
    double sum = -1;
    if (plan_simulate(p, c, r, n, o, NULL, &err) == 0) {
        sum = 0;
        for (int i = 0; i < n; i++)
            sum += o[i].ttft;
    }
    free(r);
    free(o);
    return sum / n;
}

/* One worker, Poisson arrivals, every prompt one full step of fixed cost D, one output
 * token: an M/D/1 queue, whose mean wait is rho D / (2 (1 - rho)) (Pollaczek-Khinchine). */
static void test_md1(void)
{
    const double D = 0.1;
    plan_profile p = profile(D, 0, 0, 0);
    plan_cluster c = colocated(1);
    for (double rho = 0.3; rho < 0.9; rho += 0.25) {
        plan_workload w = poisson(rho / D, 1, 2048, 1); /* 2048 = the step budget: one prompt per step */
        double want = D + rho * D / (2 * (1 - rho));
        double got = mean_ttft(&p, &c, &w, 200000, 7);
        CHECK(fabs(got / want - 1) < 0.03, "rho %.2f: mean TTFT %.5f s, M/D/1 says %.5f s", rho, got, want);
    }
    /* D/D/1 below capacity: nobody waits */
    plan_workload w = poisson(0.9 / D, 1000, 2048, 1);
    double got = mean_ttft(&p, &c, &w, 20000, 3);
    CHECK(fabs(got - D) < 0.02 * D, "D/D/1: mean TTFT %.5f s, want %.5f s", got, D);
}

/* Two requests at once on one colocated worker: one step prefills both (cost c0 + 2 c3),
 * then every step decodes both (the same cost), so TTFT and TPOT are that step. */
static void test_batching(void)
{
    plan_profile p = profile(0.01, 0, 0, 0.001);
    plan_cluster c = colocated(1);
    plan_request r[2] = {{0, 100, 5}, {0, 100, 5}};
    plan_outcome o[2];
    eng_error err;
    REQUIRE(plan_simulate(&p, &c, r, 2, o, NULL, &err) == 0, "%s", err.msg);
    for (int i = 0; i < 2; i++) {
        CHECK(fabs(o[i].ttft - 0.012) < 1e-9, "ttft %.6f", o[i].ttft);
        CHECK(fabs(o[i].tpot - 0.012) < 1e-9, "tpot %.6f", o[i].tpot);
    }
    /* a prompt over the budget takes two steps (chunked prefill), logits on the last only */
    c.max_batch_tokens = 60;
    plan_request one = {0, 100, 1};
    REQUIRE(plan_simulate(&p, &c, &one, 1, o, NULL, &err) == 0, "%s", err.msg);
    CHECK(fabs(o[0].ttft - (0.01 + 0.011)) < 1e-9, "chunked ttft %.6f", o[0].ttft);
    /* the attention term: a step of 100 prompt tokens attends to 1 + 2 + ... + 100 positions */
    plan_profile pa = profile(0, 0, 1e-6, 0);
    c.max_batch_tokens = 2048;
    REQUIRE(plan_simulate(&pa, &c, &one, 1, o, NULL, &err) == 0, "%s", err.msg);
    CHECK(fabs(o[0].ttft - 5050e-6) < 1e-12, "attention ttft %.9f", o[0].ttft);
}

/* Disaggregated: the prefill step, then the last layer's push (latency + bytes / rate),
 * then decode steps on the decode worker. */
static void test_disaggregated(void)
{
    plan_profile p = profile(0.01, 0, 0, 0.001);
    plan_cluster c = split();
    plan_request r = {0, 400, 3};
    plan_outcome o;
    eng_error err;
    REQUIRE(plan_simulate(&p, &c, &r, 1, &o, NULL, &err) == 0, "%s", err.msg);
    double push = 0.002 + 400.0 * 1000 / 4 / 1e6; /* one layer of 400 tokens' KV */
    CHECK(fabs(o.ttft - (0.011 + push)) < 1e-9, "ttft %.6f want %.6f", o.ttft, 0.011 + push);
    CHECK(fabs(o.tpot - 0.011) < 1e-9, "tpot %.6f", o.tpot);
    /* a cluster shape that is neither */
    plan_cluster bad = c;
    bad.n_decode = 0;
    CHECK(plan_simulate(&p, &bad, &r, 1, &o, NULL, &err) < 0 && strstr(err.msg, "prefill and decode"));
    /* a host at half the profile's speed: every step twice as long, the push as it was */
    plan_cluster slow = c;
    slow.step_scale = 2;
    double stretch;
    REQUIRE(plan_simulate(&p, &slow, &r, 1, &o, &stretch, &err) == 0, "%s", err.msg);
    CHECK(fabs(o.ttft - (0.022 + push)) < 1e-9 && fabs(o.tpot - 0.022) < 1e-9, "scaled: ttft %.6f tpot %.6f", o.ttft,
          o.tpot);
    CHECK(fabs(stretch - 2) < 1e-9, "a scaled run's stretch %.6f", stretch);
    slow.step_scale = 0;
    CHECK(plan_simulate(&p, &slow, &r, 1, &o, NULL, &err) < 0 && strstr(err.msg, "step_scale"));
}

/* Two colocated workers on one core: the router spreads two requests (fewest streams),
 * both steps run at once at half speed. */
static void test_sharing_and_admission(void)
{
    plan_profile p = profile(0.1, 0, 0, 0);
    plan_cluster c = colocated(2);
    c.cores = 1;
    plan_request r[2] = {{0, 10, 1}, {0, 10, 1}};
    plan_outcome o[2];
    eng_error err;
    REQUIRE(plan_simulate(&p, &c, r, 2, o, NULL, &err) == 0, "%s", err.msg);
    CHECK(fabs(o[0].ttft - 0.2) < 1e-9 && fabs(o[1].ttft - 0.2) < 1e-9, "%.6f %.6f", o[0].ttft, o[1].ttft);
    /* max_running 1 on one worker: the second request waits at the router for the first */
    c = colocated(1);
    c.max_running = 1;
    plan_request q[2] = {{0, 10, 3}, {0, 10, 3}};
    REQUIRE(plan_simulate(&p, &c, q, 2, o, NULL, &err) == 0, "%s", err.msg);
    CHECK(fabs(o[0].ttft - 0.1) < 1e-9 && fabs(o[1].ttft - 0.4) < 1e-9, "%.6f %.6f", o[0].ttft, o[1].ttft);
    /* a pool too small for the prompt: never admitted, the request fails */
    c.kv_blocks = 1;
    plan_request big = {0, 100, 1};
    REQUIRE(plan_simulate(&p, &c, &big, 1, o, NULL, &err) == 0, "%s", err.msg);
    CHECK(isinf(o[0].ttft));
    plan_summary s;
    plan_summarize(o, 1, 1, 1, &s);
    CHECK(s.attainment == 0);
}

/* Measured contention replaces processor sharing: two colocated workers with a 1.5x
 * slowdown beside one co-runner take 1.5 steps each; a third worker (beyond what was
 * measured) scales the last slowdown by processor sharing, 1.5 x 3 / 2. A worker alone
 * runs at full speed whatever the profile measured. */
static void test_measured_contention(void)
{
    plan_profile p = profile(0.1, 0, 0, 0);
    p.co_runners = 1;
    p.slowdown[0] = 1;
    p.slowdown[1] = 1.5;
    plan_cluster c = colocated(2);
    c.cores = 1; /* ignored: the measured slowdown applies */
    plan_request r[3] = {{0, 10, 1}, {0, 10, 1}, {0, 10, 1}};
    plan_outcome o[3];
    eng_error err;
    double stretch;
    REQUIRE(plan_simulate(&p, &c, r, 2, o, &stretch, &err) == 0, "%s", err.msg);
    CHECK(fabs(o[0].ttft - 0.15) < 1e-9 && fabs(o[1].ttft - 0.15) < 1e-9, "%.6f %.6f", o[0].ttft, o[1].ttft);
    CHECK(fabs(stretch - 1.5) < 1e-9, "side by side the steps took %.6f x their profiled time", stretch);
    c = colocated(3);
    REQUIRE(plan_simulate(&p, &c, r, 3, o, NULL, &err) == 0, "%s", err.msg);
    CHECK(fabs(o[2].ttft - 0.225) < 1e-9, "three at once: %.6f", o[2].ttft);
    REQUIRE(plan_simulate(&p, &c, r, 1, o, &stretch, &err) == 0, "%s", err.msg);
    CHECK(fabs(o[0].ttft - 0.1) < 1e-9, "alone: %.6f", o[0].ttft);
    CHECK(fabs(stretch - 1) < 1e-9, "alone the steps took %.6f x their profiled time", stretch);
}

/* The serving path's CPU: each token a client receives queues serving_cpu_per_token
 * of work for one more runnable thread. One worker on one core, steps of 0.1 s, 50 ms
 * per token: after each token the next step shares the core half and half until the
 * 50 ms are done (0.1 s), then runs alone: 0.15 s a step. With a second core the
 * serving thread has a core of its own and nothing slows down. */
static void test_serving_cpu(void)
{
    plan_profile p = profile(0.1, 0, 0, 0);
    plan_cluster c = colocated(1);
    c.cores = 1;
    c.serving_cpu_per_token = 0.05;
    plan_request r = {0, 10, 3};
    plan_outcome o;
    eng_error err;
    double stretch;
    REQUIRE(plan_simulate(&p, &c, &r, 1, &o, &stretch, &err) == 0, "%s", err.msg);
    CHECK(fabs(o.ttft - 0.1) < 1e-9 && fabs(o.tpot - 0.15) < 1e-9, "one core: ttft %.6f tpot %.6f", o.ttft, o.tpot);
    CHECK(fabs(stretch - 0.4 / 0.3) < 1e-9, "steps of 0.1, 0.15, 0.15 s: %.6f x", stretch);
    c.cores = 2;
    REQUIRE(plan_simulate(&p, &c, &r, 1, &o, NULL, &err) == 0, "%s", err.msg);
    CHECK(fabs(o.ttft - 0.1) < 1e-9 && fabs(o.tpot - 0.1) < 1e-9, "two cores: ttft %.6f tpot %.6f", o.ttft, o.tpot);
    c.serving_cpu_per_token = -1;
    CHECK(plan_simulate(&p, &c, &r, 1, &o, NULL, &err) < 0 && strstr(err.msg, "serving_cpu_per_token"));
}

/* The engine thread's streaming lengthens each step by its tokens: colocated, the
 * prompt's step streams the first token; disaggregated, the prefill worker streams
 * nothing and the decode worker every token. */
static void test_stream_cpu(void)
{
    plan_profile p = profile(0.1, 0, 0, 0);
    plan_cluster c = colocated(1);
    c.stream_cpu_per_token = 0.02;
    plan_request r[2] = {{0, 10, 3}, {0, 10, 3}};
    plan_outcome o[2];
    eng_error err;
    REQUIRE(plan_simulate(&p, &c, r, 1, o, NULL, &err) == 0, "%s", err.msg);
    CHECK(fabs(o[0].ttft - 0.12) < 1e-9 && fabs(o[0].tpot - 0.12) < 1e-9, "ttft %.6f tpot %.6f", o[0].ttft, o[0].tpot);
    /* two sequences in each step: two tokens streamed after it */
    REQUIRE(plan_simulate(&p, &c, r, 2, o, NULL, &err) == 0, "%s", err.msg);
    CHECK(fabs(o[1].ttft - 0.14) < 1e-9 && fabs(o[1].tpot - 0.14) < 1e-9, "ttft %.6f tpot %.6f", o[1].ttft, o[1].tpot);
    plan_cluster d = split();
    d.stream_cpu_per_token = 0.02;
    REQUIRE(plan_simulate(&p, &d, r, 1, o, NULL, &err) == 0, "%s", err.msg);
    CHECK(o[0].ttft > 0.1 && o[0].ttft < 0.11 && fabs(o[0].tpot - 0.12) < 1e-9, "split: ttft %.6f tpot %.6f", o[0].ttft,
          o[0].tpot);
    c.stream_cpu_per_token = 2;
    CHECK(plan_simulate(&p, &c, r, 1, o, NULL, &err) < 0 && strstr(err.msg, "stream_cpu_per_token"));
}

static void test_fit(void)
{
    plan_cost truth = {.c = {0.02, 0.0005, 2e-6, 0.004}}, got;
    plan_shape s[16];
    double t[16], x[PLAN_COST_TERMS];
    int n = 0;
    for (int L = 16; L <= 2048; L *= 4)
        s[n++] = (plan_shape){1, L, 0, 1, 0};
    for (int b = 1; b <= 16; b *= 4)
        for (int ctx = 16; ctx <= 1024; ctx *= 8)
            s[n++] = (plan_shape){b, 1, ctx, b, 0};
    for (int i = 0; i < n; i++) {
        plan_shape_terms(&s[i], x);
        t[i] = plan_cost_seconds(&truth, x);
    }
    CHECK(plan_fit_cost(s, t, n, &got) < 1e-9);
    for (int k = 0; k < PLAN_COST_TERMS; k++)
        CHECK(fabs(got.c[k] / truth.c[k] - 1) < 1e-6, "c[%d] %g want %g", k, got.c[k], truth.c[k]);
    /* a negative slope in the data is clamped: no coefficient below 0 */
    for (int i = 0; i < n; i++)
        t[i] = 0.1 - 1e-6 * s[i].per_item * s[i].items;
    CHECK(plan_fit_cost(s, t, n, &got) >= 0);
    for (int k = 0; k < PLAN_COST_TERMS; k++)
        CHECK(got.c[k] >= 0);
}

/* A step cost that is not linear in the batch (decode: 10 ms + 8 ms * sqrt(B), the
 * shape of matmuls whose weights are read once per tile of rows): the knots give back
 * every measured point, interpolate between them, and hold the last one's residual. */
static void test_knots(void)
{
    plan_shape s[16];
    double t[16], x[PLAN_COST_TERMS];
    int n = 0;
    for (int L = 16; L <= 2048; L *= 4) {
        s[n] = (plan_shape){1, L, 0, 1, 0};
        t[n++] = 0.01 + 0.0005 * L;
    }
    for (int b = 1; b <= 64; b *= 2) {
        s[n] = (plan_shape){b, 1, 16, b, 0};
        t[n++] = 0.01 + 0.008 * sqrt(b);
    }
    plan_cost c;
    CHECK(plan_fit_cost(s, t, n, &c) < 1e-9, "the knots reproduce the measured steps");
    CHECK(c.decode.n == 7 && c.prefill.n == 4, "%d decode and %d prefill knots", c.decode.n, c.prefill.n);
    for (int i = 0; i < n; i++) {
        plan_shape_terms(&s[i], x);
        int decode = s[i].per_item == 1 && s[i].logits == s[i].items;
        double got = plan_step_seconds(&c, x, decode ? (int)s[i].items : 0, decode ? 0 : (int)s[i].per_item);
        CHECK(fabs(got / t[i] - 1) < 1e-9, "step %d: %g s, measured %g", i, got, t[i]);
    }
    /* between two batches measured: between their times */
    plan_shape_terms(&(plan_shape){12, 1, 16, 12, 0}, x);
    double mid = plan_step_seconds(&c, x, 12, 0);
    CHECK(mid > 0.01 + 0.008 * sqrt(8) && mid < 0.01 + 0.008 * sqrt(16), "batch 12: %g s", mid);
    /* beyond the last: the linear cost's slope from there on */
    double x64[PLAN_COST_TERMS], x128[PLAN_COST_TERMS];
    plan_shape_terms(&(plan_shape){64, 1, 16, 64, 0}, x64);
    plan_shape_terms(&(plan_shape){128, 1, 16, 128, 0}, x128);
    double d = plan_step_seconds(&c, x128, 128, 0) - plan_step_seconds(&c, x64, 64, 0);
    CHECK(fabs(d - (plan_cost_seconds(&c, x128) - plan_cost_seconds(&c, x64))) < 1e-12, "extrapolated by %g s", d);
    /* a step of 4 prompts of 256 takes the knot of a prompt of 256, not of its 1024 rows */
    double x1[PLAN_COST_TERMS], x4[PLAN_COST_TERMS];
    plan_shape_terms(&(plan_shape){1, 256, 0, 1, 0}, x1);
    plan_shape_terms(&(plan_shape){4, 256, 0, 4, 0}, x4);
    double knot = plan_step_seconds(&c, x1, 0, 256) - plan_cost_seconds(&c, x1);
    d = plan_step_seconds(&c, x4, 0, 256) - plan_cost_seconds(&c, x4);
    CHECK(fabs(d - knot) < 1e-12, "4 prompts of 256: %g s over the line, one: %g", d, knot);
}

/* Gamma gaps: mean 1 / rate and squared coefficient of variation 1 / shape. */
/* A worker's debug step line (worker/engine.c's format) read back as the cost terms;
 * other lines, and an older worker's step line without the knots' keys, are not steps. */
static void test_step_line(void)
{
    plan_logged_step s;
    const char *line = "2026-12-07T16:20:01.123Z DEBUG decode decode-1: step: 9 sequences, 264 tokens, 40000 "
                       "positions attended, 8 decoding, longest prompt chunk 256, 8 logits; forward 120.50 ms, then "
                       "sampling and streaming 3.50 ms; streamed 8 tokens in 2.000 ms\n";
    CHECK(plan_parse_step_line(line, &s) == 1, "a step line not read");
    CHECK(!strcmp(s.worker, "decode-1"), "worker '%s'", s.worker);
    CHECK(s.x[0] == 1 && s.x[1] == 264 && s.x[2] == 40000 && s.x[3] == 8, "terms %g %g %g %g", s.x[0], s.x[1], s.x[2],
          s.x[3]);
    CHECK(s.decode_items == 8 && s.longest_chunk == 256, "knots' keys %d %d", s.decode_items, s.longest_chunk);
    CHECK(fabs(s.seconds - 0.122) < 1e-12, "seconds %.6f (forward and sampling, not streaming)", s.seconds);
    CHECK(s.streamed_tokens == 8 && fabs(s.stream_seconds - 0.002) < 1e-12, "streamed %d tokens in %.6f s",
          s.streamed_tokens, s.stream_seconds);
    CHECK(!plan_parse_step_line("2026-12-07T16:20:01.123Z DEBUG decode decode-1: step: 1 sequences, 1 tokens, 17 "
                                "positions attended; forward 8.00 ms, then sampling and streaming 0.50 ms; streamed "
                                "1 tokens in 0.200 ms",
                                &s),
          "an older step line read");
    CHECK(!plan_parse_step_line("INFO worker w: serving on 127.0.0.1:1234", &s), "a non-step line read");
    CHECK(!plan_parse_step_line("DEBUG x w: step: 2 sequences, 1 tokens, 1 positions attended, 0 decoding, longest "
                                "prompt chunk 1, 0 logits; forward 1 ms, then sampling and streaming 1 ms; streamed 0 "
                                "tokens in 0 ms",
                                &s),
          "a step of fewer tokens than sequences read");
}

static void test_trace(void)
{
    enum { N = 200000 };
    plan_request *r = malloc(N * sizeof *r);
    REQUIRE(r);
    for (double shape = 0.25; shape <= 4; shape *= 4) {
        plan_workload w = poisson(2, shape, 10, 10);
        plan_trace(&w, 0, 11, r, N);
        double m = r[N - 1].arrival / (N - 1), v = 0;
        for (int i = 1; i < N; i++)
            v += pow(r[i].arrival - r[i - 1].arrival - m, 2);
        double cv2 = v / (N - 1) / (m * m);
        CHECK(fabs(m * 2 - 1) < 0.02, "shape %g: mean gap %.4f", shape, m);
        CHECK(fabs(cv2 * shape - 1) < 0.05, "shape %g: cv^2 %.4f", shape, cv2);
        /* the rate only scales the arrivals */
        plan_request q[3];
        plan_trace(&w, 4, 11, q, 3);
        CHECK(fabs(q[2].arrival * 2 - r[2].arrival) < 1e-12);
    }
    free(r);
    /* lengths stay in their bounds; a list draws only its values */
    plan_workload w;
    eng_error err;
    REQUIRE(plan_workload_parse("{\"name\":\"t\",\"arrival\":{\"rate\":1,\"shape\":1},"
                                "\"prompt_tokens\":{\"dist\":\"lognormal\",\"median\":100,\"sigma\":1,\"min\":20,"
                                "\"max\":300},\"output_tokens\":{\"dist\":\"list\",\"values\":[3,7]},\"requests\":5}",
                                &w, &err) == 0,
            "%s", err.msg);
    plan_request q[1000];
    plan_trace(&w, 0, 5, q, 1000);
    int bad = 0, lo = 0, hi = 0;
    for (int i = 0; i < 1000; i++) {
        bad += q[i].prompt < 20 || q[i].prompt > 300 || (q[i].output != 3 && q[i].output != 7);
        lo += q[i].prompt == 20;
        hi += q[i].prompt == 300;
    }
    CHECK(bad == 0 && lo > 0 && hi > 0, "bad %d, at min %d, at max %d", bad, lo, hi);
    plan_workload_free(&w);
    /* the first draws of seed 42, and a trace, as bench/workload.mjs makes them */
    plan_rng g = {42};
    CHECK(fabs(plan_rng_next(&g) - 0.6011037519201636) < 1e-15);
    REQUIRE(plan_workload_parse("{\"name\":\"t\",\"arrival\":{\"rate\":1.5,\"shape\":0.5},"
                                "\"prompt_tokens\":{\"dist\":\"lognormal\",\"median\":100,\"sigma\":1,\"min\":20,"
                                "\"max\":300},\"output_tokens\":{\"dist\":\"uniform\",\"min\":3,\"max\":70},"
                                "\"requests\":5}",
                                &w, &err) == 0,
            "%s", err.msg);
    static const plan_request js[4] = {
        {0, 148, 12}, {0.62905014303580842, 300, 45}, {0.63030106386220541, 90, 46}, {0.64045918788016065, 217, 15}};
    plan_trace(&w, 0, 9, q, 4);
    for (int i = 0; i < 4; i++)
        CHECK(fabs(q[i].arrival - js[i].arrival) < 1e-12 && q[i].prompt == js[i].prompt && q[i].output == js[i].output,
              "request %d: %.17g %d %d", i, q[i].arrival, q[i].prompt, q[i].output);
    plan_workload_free(&w);
}

static void test_bad_files(void)
{
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"[", "not JSON"},
        {"{\"arrival\":{\"rate\":1,\"shape\":1}}", "\"name\""},
        {"{\"name\":\"x\",\"arrival\":{\"rate\":0,\"shape\":1}}", "arrival.rate"},
        {"{\"name\":\"x\",\"arrival\":{\"rate\":1,\"shape\":1},\"prompt_tokens\":{\"dist\":\"zipf\"}}", "zipf"},
        {"{\"name\":\"x\",\"arrival\":{\"rate\":1,\"shape\":1},\"prompt_tokens\":{\"dist\":\"uniform\",\"min\":9,"
         "\"max\":3}}",
         "prompt_tokens.max"},
        {"{\"name\":\"x\",\"arrival\":{\"rate\":1,\"shape\":1},\"prompt_tokens\":{\"dist\":\"fixed\",\"value\":5},"
         "\"output_tokens\":{\"dist\":\"list\",\"values\":[1,0]}}",
         "values[1]"},
        {"{\"name\":\"x\",\"arrival\":{\"rate\":1,\"shape\":1},\"prompt_tokens\":{\"dist\":\"fixed\",\"value\":5},"
         "\"output_tokens\":{\"dist\":\"fixed\",\"value\":5},\"requests\":0}",
         "requests"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        plan_workload w;
        eng_error err = {{0}};
        CHECK(plan_workload_parse(cases[i].json, &w, &err) < 0 && strstr(err.msg, cases[i].want), "case %zu: %s", i,
              err.msg);
    }
    plan_profile p;
    eng_error err = {{0}};
    CHECK(plan_profile_parse("{\"format\":\"other\"}", &p, &err) < 0 && strstr(err.msg, "tandem-profile-1"));
    CHECK(plan_profile_load("/nonexistent/profile.json", &p, &err) < 0 && strstr(err.msg, "cannot open"));
    /* contention entries must count co-runners 1, 2, ... */
    static const char good[] =
        "{\"format\":\"tandem-profile-1\",\"threads\":1,\"layers\":2,\"kv_block_size\":16,\"max_context\":64,"
        "\"kv_bytes_per_token\":64,\"steps\":[{\"items\":1,\"tokens_per_item\":1,\"context\":0,\"logits\":1,"
        "\"median_s\":0.01},{\"items\":1,\"tokens_per_item\":64,\"context\":0,\"logits\":1,\"median_s\":0.05}],"
        "\"kv_transfer\":[{\"points\":[{\"bytes\":1000,\"median_s\":0.001},{\"bytes\":100000,\"median_s\":0.01}]}],"
        "\"contention\":[{\"co_runners\":1,\"slowdown\":{\"median\":1.4}},{\"co_runners\":%d,\"slowdown\":{"
        "\"median\":2.1}}]}";
    char text[sizeof good + 8];
    snprintf(text, sizeof text, good, 2);
    REQUIRE(plan_profile_parse(text, &p, &err) == 0, "%s", err.msg);
    CHECK(p.co_runners == 2 && p.slowdown[1] == 1.4 && p.slowdown[2] == 2.1, "%d %g %g", p.co_runners, p.slowdown[1],
          p.slowdown[2]);
    snprintf(text, sizeof text, good, 3);
    CHECK(plan_profile_parse(text, &p, &err) < 0 && strstr(err.msg, "want 2"), "%s", err.msg);
}

int main(void)
{
    test_md1();
    test_batching();
    test_disaggregated();
    test_sharing_and_admission();
    test_measured_contention();
    test_serving_cpu();
    test_fit();
    test_knots();
    test_stream_cpu();
    test_trace();
    test_step_line();
    test_bad_files();
    return check_summary();
}

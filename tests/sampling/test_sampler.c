/* test_sampler.c: the sampler against hand-made distributions whose answers are known.
 *
 * Each filter on a small distribution, the vLLM v1 order (min-p before top-p), penalties
 * with their exact arithmetic, determinism in (seed, step), a chi-square check of the
 * sampled frequencies, raw logprobs, a full-size vocabulary, and every rejected input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sampling/sampler.h"
#include "check.h"

#define VOCAB_SMALL 8

/* Fills logits with log(p) (and -inf past n) so the distribution is exactly p. */
static void set_probs(float *logits, int vocab, const double *p, int n)
{
    for (int i = 0; i < vocab; i++)
        logits[i] = i < n ? (float)log(p[i]) : -INFINITY;
}

/* Samples `draws` times with seeds 1..draws at step 0 and counts the ids. */
static void histogram(const eng_sampling *base, const double *p, int n, int draws, int *counts)
{
    memset(counts, 0, VOCAB_SMALL * sizeof *counts);
    for (int d = 0; d < draws; d++) {
        float logits[VOCAB_SMALL];
        set_probs(logits, VOCAB_SMALL, p, n);
        eng_sampling s = *base;
        s.seed = (uint64_t)d + 1;
        eng_sample_result r;
        if (eng_sample(&s, logits, VOCAB_SMALL, NULL, 0, NULL, 0, 0, &r) != 0) {
            CHECK(!"eng_sample failed");
            return;
        }
        CHECK(r.id >= 0 && r.id < VOCAB_SMALL);
        counts[r.id]++;
    }
}

/* Pearson chi-square of counts against expected probabilities q (zero q must get zero). */
static double chi_square(const int *counts, const double *q, int n, int draws)
{
    double x2 = 0.0;
    for (int i = 0; i < n; i++) {
        if (q[i] == 0.0) {
            CHECK(counts[i] == 0);
            continue;
        }
        double e = q[i] * draws;
        x2 += (counts[i] - e) * (counts[i] - e) / e;
    }
    return x2;
}

static void test_greedy(void)
{
    eng_sampling s;
    eng_sampling_defaults(&s);
    CHECK(s.temperature == 0.0f && s.top_k == 0 && s.top_p == 1.0f && s.repetition_penalty == 1.0f);
    float logits[5] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f};
    eng_sample_result r;
    CHECK(eng_sample(&s, logits, 5, NULL, 0, NULL, 0, 0, &r) == 0);
    CHECK(r.id == 1); /* tie between 1 and 3 goes to the lowest id */
    /* Tiny temperatures are greedy too (vLLM's epsilon), whatever the seed. */
    s.temperature = 1e-6f;
    for (uint64_t seed = 0; seed < 20; seed++) {
        float l2[5] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f};
        s.seed = seed;
        CHECK(eng_sample(&s, l2, 5, NULL, 0, NULL, 0, 0, &r) == 0 && r.id == 1);
    }
}

static void test_logprobs(void)
{
    eng_sampling s;
    eng_sampling_defaults(&s);
    float logits[6] = {1.0f, 3.0f, 3.0f, -2.0f, 0.0f, 2.5f};
    float raw[6];
    memcpy(raw, logits, sizeof raw);
    eng_sample_result r;
    CHECK(eng_sample(&s, logits, 6, NULL, 0, NULL, 0, 6, &r) == 0);
    CHECK(r.n_top == 6);
    double lse = 0.0;
    for (int i = 0; i < 6; i++)
        lse += exp(raw[i]);
    lse = log(lse);
    int order[6] = {1, 2, 5, 0, 4, 3}; /* best first, ties by id */
    double total = 0.0;
    for (int j = 0; j < 6; j++) {
        CHECK(r.top[j].id == order[j]);
        CHECK(fabs(r.top[j].logprob - (raw[order[j]] - lse)) < 1e-6);
        total += exp(r.top[j].logprob);
    }
    CHECK(fabs(total - 1.0) < 1e-6);
    CHECK(r.id == 1 && r.logprob == r.top[0].logprob);

    /* Fewer alternatives than the vocabulary: the first ones of the same list. */
    float l2[6] = {1.0f, 3.0f, 3.0f, -2.0f, 0.0f, 2.5f};
    eng_sample_result r2;
    CHECK(eng_sample(&s, l2, 6, NULL, 0, NULL, 0, 2, &r2) == 0);
    CHECK(r2.n_top == 2 && r2.top[0].id == 1 && r2.top[1].id == 2);
    /* n_top larger than the vocabulary is clamped to it. */
    float l3[3] = {0.0f, 1.0f, 2.0f};
    CHECK(eng_sample(&s, l3, 3, NULL, 0, NULL, 0, 20, &r2) == 0 && r2.n_top == 3);

    /* A penalty changes the pick, but its logprob stays the raw model's. */
    float l4[3] = {2.0f, 1.5f, 0.0f};
    const int32_t prompt[1] = {0};
    s.repetition_penalty = 2.0f; /* 2.0 -> 1.0 < 1.5 */
    CHECK(eng_sample(&s, l4, 3, prompt, 1, NULL, 0, 0, &r) == 0);
    double lse4 = log(exp(2.0) + exp(1.5) + exp(0.0));
    CHECK(r.id == 1 && fabs(r.logprob - (1.5 - lse4)) < 1e-6);
    /* Masked (-inf) tokens get -inf logprobs and are never picked. */
    float l5[3] = {-INFINITY, 0.0f, -INFINITY};
    eng_sampling_defaults(&s);
    s.temperature = 1.0f;
    CHECK(eng_sample(&s, l5, 3, NULL, 0, NULL, 0, 3, &r) == 0);
    CHECK(r.id == 1 && r.logprob == 0.0f && r.top[1].id == 0 && isinf(r.top[1].logprob));
}

static void test_penalties(void)
{
    eng_sampling s;
    eng_sampling_defaults(&s);
    eng_sample_result r;
    /* Repetition: prompt and generated tokens, once each however often they occur;
     * positive logits divided, negative ones multiplied. */
    float l[6] = {2.0f, -1.0f, 3.0f, 0.5f, 1.0f, 0.0f};
    const int32_t prompt[4] = {0, 1, 0, 5};
    const int32_t gen[3] = {2, 2, 3};
    s.repetition_penalty = 2.0f;
    CHECK(eng_sample(&s, l, 6, prompt, 4, gen, 3, 0, &r) == 0);
    CHECK(l[0] == 1.0f && l[1] == -2.0f && l[2] == 1.5f && l[3] == 0.25f && l[4] == 1.0f && l[5] == 0.0f);
    CHECK(r.id == 2);

    /* Frequency (x count) and presence (once) count generated tokens only. */
    float m[5] = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    eng_sampling_defaults(&s);
    s.frequency_penalty = 0.5f;
    s.presence_penalty = 0.25f;
    const int32_t gen2[4] = {1, 1, 1, 3};
    const int32_t prompt2[2] = {0, 2};
    CHECK(eng_sample(&s, m, 5, prompt2, 2, gen2, 4, 0, &r) == 0);
    CHECK(m[0] == 1.0f && m[1] == 1.0f - 1.5f - 0.25f && m[2] == 1.0f && m[3] == 1.0f - 0.5f - 0.25f && m[4] == 1.0f);
    CHECK(r.id == 0);

    /* All three: repetition first, then frequency and presence (vLLM's order). */
    float q[3] = {4.0f, 1.0f, 1.0f};
    eng_sampling_defaults(&s);
    s.repetition_penalty = 2.0f;
    s.frequency_penalty = 1.0f;
    s.presence_penalty = 0.5f;
    const int32_t gen3[2] = {0, 0};
    CHECK(eng_sample(&s, q, 3, NULL, 0, gen3, 2, 0, &r) == 0);
    CHECK(q[0] == 4.0f / 2.0f - 2.0f - 0.5f); /* -0.5 */
    CHECK(r.id == 1);
    /* Negative penalties reward repetition. */
    float w[3] = {1.0f, 1.2f, 0.0f};
    eng_sampling_defaults(&s);
    s.presence_penalty = -0.5f;
    const int32_t gen4[1] = {0};
    CHECK(eng_sample(&s, w, 3, NULL, 0, gen4, 1, 0, &r) == 0 && r.id == 0);
}

static void test_filters(void)
{
    eng_sampling s;
    int counts[VOCAB_SMALL];
    const int draws = 4000;
    const double p[5] = {0.4, 0.3, 0.15, 0.1, 0.05};

    /* top-k = 2: only the two best, in proportion 4:3. */
    eng_sampling_defaults(&s);
    s.temperature = 1.0f;
    s.top_k = 2;
    histogram(&s, p, 5, draws, counts);
    const double qk[5] = {4.0 / 7, 3.0 / 7, 0, 0, 0};
    CHECK(chi_square(counts, qk, 5, draws) < 13.8); /* 1 dof, p = 0.0002 */

    /* top-p = 0.75: mass above token 2 is 0.7 < 0.75, above token 3 is 0.85: keep 0..2. */
    eng_sampling_defaults(&s);
    s.temperature = 1.0f;
    s.top_p = 0.75f;
    histogram(&s, p, 5, draws, counts);
    const double qp[5] = {0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85, 0, 0};
    CHECK(chi_square(counts, qp, 5, draws) < 17.0);
    /* top-p tiny: only the best token. */
    s.top_p = 0.01f;
    histogram(&s, p, 5, 200, counts);
    CHECK(counts[0] == 200);

    /* min-p = 0.3: p >= 0.12 stays: 0..2. */
    eng_sampling_defaults(&s);
    s.temperature = 1.0f;
    s.min_p = 0.3f;
    histogram(&s, p, 5, draws, counts);
    CHECK(chi_square(counts, qp, 5, draws) < 17.0);

    /* Order: min-p runs before top-p (vLLM v1). min-p 0.3 keeps 0..2 renormalised
     * (.47, .35, .18); top-p 0.8 then drops token 2 (mass above it .82 >= .8). Were top-p
     * first it would keep 0..2 (mass above token 2 only .7). */
    eng_sampling_defaults(&s);
    s.temperature = 1.0f;
    s.min_p = 0.3f;
    s.top_p = 0.8f;
    histogram(&s, p, 5, draws, counts);
    CHECK(counts[2] == 0 && counts[3] == 0 && counts[4] == 0 && counts[0] > 0 && counts[1] > 0);

    /* top-k keeps every token tied with the k-th logit. */
    const double tie[4] = {0.4, 0.2, 0.2, 0.2};
    eng_sampling_defaults(&s);
    s.temperature = 1.0f;
    s.top_k = 2;
    histogram(&s, tie, 4, draws, counts);
    CHECK(counts[1] > 0 && counts[2] > 0 && counts[3] > 0);
    /* ... however many there are: top-k 1 over five equal logits keeps all five. */
    const double flat[5] = {0.2, 0.2, 0.2, 0.2, 0.2};
    s.top_k = 1;
    histogram(&s, flat, 5, draws, counts);
    CHECK(chi_square(counts, flat, 5, draws) < 18.5);

    /* Temperature 0.5 squares the probabilities (then renormalises). */
    eng_sampling_defaults(&s);
    s.temperature = 0.5f;
    histogram(&s, p, 5, draws, counts);
    double sq = 0.0, qt[5];
    for (int i = 0; i < 5; i++)
        sq += p[i] * p[i];
    for (int i = 0; i < 5; i++)
        qt[i] = p[i] * p[i] / sq;
    CHECK(chi_square(counts, qt, 5, draws) < 18.5); /* 4 dof, p = 0.001 */

    /* Plain temperature 1 over many seeds: the distribution itself. */
    eng_sampling_defaults(&s);
    s.temperature = 1.0f;
    histogram(&s, p, 5, 20000, counts);
    CHECK(chi_square(counts, p, 5, 20000) < 18.5);
    /* top_k = -1 and 0 are "off", top_k above the vocabulary keeps everything. */
    s.top_k = -1;
    histogram(&s, p, 5, draws, counts);
    CHECK(chi_square(counts, p, 5, draws) < 18.5);
    s.top_k = 100;
    histogram(&s, p, 5, draws, counts);
    CHECK(chi_square(counts, p, 5, draws) < 18.5);
}

static void test_determinism(void)
{
    /* Same (seed, step): same token; the step is n_generated, not a call counter. */
    eng_sampling s;
    eng_sampling_defaults(&s);
    s.temperature = 1.0f;
    s.seed = 1234;
    const double p[5] = {0.2, 0.2, 0.2, 0.2, 0.2};
    int32_t gen[64] = {0};
    int32_t first[64];
    for (int step = 0; step < 64; step++) {
        float l[5];
        set_probs(l, 5, p, 5);
        eng_sample_result r;
        CHECK(eng_sample(&s, l, 5, NULL, 0, gen, step, 0, &r) == 0);
        first[step] = r.id;
    }
    int distinct = 0, seen[5] = {0};
    for (int step = 63; step >= 0; step--) { /* other order, same answers */
        float l[5];
        set_probs(l, 5, p, 5);
        eng_sample_result r;
        CHECK(eng_sample(&s, l, 5, NULL, 0, gen, step, 0, &r) == 0);
        CHECK(r.id == first[step]);
        if (!seen[r.id]++)
            distinct++;
    }
    CHECK(distinct == 5);
    /* The uniforms: in [0, 1), different across seeds and steps, stable values. */
    CHECK(eng_sample_uniform(1, 0) != eng_sample_uniform(2, 0));
    CHECK(eng_sample_uniform(1, 0) != eng_sample_uniform(1, 1));
    CHECK(eng_sample_uniform(1, 0) == eng_sample_uniform(1, 0));
    double mean = 0.0;
    for (uint64_t i = 0; i < 10000; i++) {
        double u = eng_sample_uniform(42, i);
        CHECK(u >= 0.0 && u < 1.0);
        mean += u;
    }
    CHECK(fabs(mean / 10000 - 0.5) < 0.01);
}

/* A Qwen3-sized vocabulary: results agree with a brute-force reference, and it is fast. */
static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

static void test_full_vocab(void)
{
    enum { V = 151936 }; /* vocab_size in Qwen3's config.json */
    float *base = malloc(V * sizeof *base), *l = malloc(V * sizeof *l), *sorted = malloc(V * sizeof *l);
    uint64_t x = 99;
    for (int i = 0; i < V; i++) { /* logits with a realistic spread */
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        base[i] = (float)((double)(x >> 11) * 0x1.0p-53 * 12.0 - 6.0);
    }
    base[777] = 9.0f;
    base[4242] = 8.5f;
    memcpy(sorted, base, V * sizeof *l);
    qsort(sorted, V, sizeof *sorted, cmp_desc);
    eng_sampling s;
    eng_sampling_defaults(&s);
    eng_sample_result r;
    memcpy(l, base, V * sizeof *l);
    CHECK(eng_sample(&s, l, V, NULL, 0, NULL, 0, 20, &r) == 0);
    CHECK(r.id == 777 && r.top[0].id == 777 && r.top[1].id == 4242 && r.n_top == 20);
    for (int j = 0; j < 20; j++)
        CHECK(j == 0 || r.top[j].logprob <= r.top[j - 1].logprob);

    /* top-k 40: the pick's logit is at least the 40th largest. */
    s.temperature = 0.8f;
    s.top_k = 40;
    clock_t t0 = clock();
    for (int i = 0; i < 10; i++) {
        memcpy(l, base, V * sizeof *l);
        s.seed = (uint64_t)i;
        CHECK(eng_sample(&s, l, V, NULL, 0, NULL, 0, 5, &r) == 0);
        CHECK(base[r.id] >= sorted[39]);
    }
    /* top-p 0.9 at temperature 1: the pick lies inside the brute-force nucleus. */
    s.temperature = 1.0f;
    s.top_k = 0;
    s.top_p = 0.9f;
    double tot = 0.0;
    for (int i = 0; i < V; i++)
        tot += exp((double)sorted[i] - sorted[0]);
    double above = 0.0;
    int nucleus = 0;
    while (above < 0.9 * tot)
        above += exp((double)sorted[nucleus++] - sorted[0]);
    for (int i = 0; i < 10; i++) {
        memcpy(l, base, V * sizeof *l);
        s.seed = (uint64_t)i;
        CHECK(eng_sample(&s, l, V, NULL, 0, NULL, 0, 0, &r) == 0);
        CHECK(base[r.id] >= sorted[nucleus - 1]);
    }
    double ms = (double)(clock() - t0) * 1000.0 / CLOCKS_PER_SEC / 20;
    printf("full vocabulary (%d): %.2f ms per sample (top-k 40 / top-p 0.9), nucleus %d tokens\n", V, ms, nucleus);
    free(base);
    free(l);
    free(sorted);
}

static void test_bad_parameters(void)
{
    eng_error err;
    eng_sampling s;
    float l[3] = {0.0f, 1.0f, 2.0f};
    eng_sample_result r;
    eng_sampling bad[12];
    const char *names[12];
    int n = 0;
#define ADD(name, stmt)            \
    do {                           \
        eng_sampling_defaults(&s); \
        stmt;                      \
        bad[n] = s;                \
        names[n++] = name;         \
    } while (0)
    ADD("temperature", s.temperature = -0.1f);
    ADD("temperature", s.temperature = NAN);
    ADD("temperature", s.temperature = INFINITY);
    ADD("top_k", s.top_k = -2);
    ADD("top_p", s.top_p = 0.0f);
    ADD("top_p", s.top_p = 1.01f);
    ADD("min_p", s.min_p = -0.1f);
    ADD("min_p", s.min_p = 1.5f);
    ADD("presence_penalty", s.presence_penalty = 2.5f);
    ADD("frequency_penalty", s.frequency_penalty = -3.0f);
    ADD("repetition_penalty", s.repetition_penalty = 0.0f);
    ADD("repetition_penalty", s.repetition_penalty = -1.0f);
#undef ADD
    for (int i = 0; i < n; i++) {
        err.msg[0] = 0;
        CHECK(eng_sampling_check(&bad[i], &err) == -1);
        CHECK(strstr(err.msg, names[i]) != NULL);
        CHECK(eng_sample(&bad[i], l, 3, NULL, 0, NULL, 0, 0, &r) == -1);
    }
    eng_sampling_defaults(&s);
    CHECK(eng_sampling_check(&s, &err) == 0);
    s.top_k = -1;
    s.top_p = 1.0f;
    s.min_p = 1.0f;
    s.presence_penalty = -2.0f;
    CHECK(eng_sampling_check(&s, &err) == 0);
    CHECK(eng_sampling_check(NULL, &err) == -1);

    /* Bad calls: sizes, counts, pointers, NaN / +inf logits, all masked, ids out of range. */
    eng_sampling_defaults(&s);
    CHECK(eng_sample(&s, l, 0, NULL, 0, NULL, 0, 0, &r) == -1);
    CHECK(eng_sample(&s, NULL, 3, NULL, 0, NULL, 0, 0, &r) == -1);
    CHECK(eng_sample(&s, l, 3, NULL, 0, NULL, 0, ENG_MAX_TOP_LOGPROBS + 1, &r) == -1);
    CHECK(eng_sample(&s, l, 3, NULL, 0, NULL, 0, -1, &r) == -1);
    CHECK(eng_sample(&s, l, 3, NULL, 2, NULL, 0, 0, &r) == -1);
    CHECK(eng_sample(&s, l, 3, NULL, 0, NULL, 0, 0, NULL) == -1);
    float nan_l[3] = {0.0f, NAN, 1.0f};
    CHECK(eng_sample(&s, nan_l, 3, NULL, 0, NULL, 0, 0, &r) == -1);
    float inf_l[3] = {0.0f, INFINITY, 1.0f};
    CHECK(eng_sample(&s, inf_l, 3, NULL, 0, NULL, 0, 0, &r) == -1);
    float masked[3] = {-INFINITY, -INFINITY, -INFINITY};
    CHECK(eng_sample(&s, masked, 3, NULL, 0, NULL, 0, 0, &r) == -1);
    s.repetition_penalty = 1.5f;
    const int32_t oob[2] = {1, 3};
    CHECK(eng_sample(&s, l, 3, oob, 2, NULL, 0, 0, &r) == -1);
    const int32_t neg[1] = {-1};
    CHECK(eng_sample(&s, l, 3, NULL, 0, neg, 1, 0, &r) == -1);
}

int main(void)
{
    test_greedy();
    test_logprobs();
    test_penalties();
    test_filters();
    test_determinism();
    test_full_vocab();
    test_bad_parameters();
    return check_summary();
}

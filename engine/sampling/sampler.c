/* sampler.c: logits -> next token, the way vLLM (v1) does it, but reproducible.
 *
 * Pipeline, in vLLM v1's order (vllm/v1/sample/sampler.py; v0 ran min-p last, v1 runs it
 * as an argmax-invariant logits processor right after temperature):
 *   1. logprobs and top alternatives from log_softmax of the RAW logits (vLLM's default
 *      logprobs_mode "raw_logprobs"), before anything below touches them;
 *   2. penalties: repetition (prompt + generated; divide positive logits, multiply the
 *      others), then frequency (x count in generated), then presence (generated);
 *   3. temperature < 1e-5 (vLLM's epsilon) is greedy: argmax, ties to the lowest id;
 *   4. temperature; 5. min-p (p >= min_p * p_max); 6. top-k (keeps every token tied with
 *      the k-th logit, as vLLM's mask does); 7. top-p (a token stays while the mass of the
 *      tokens ranked strictly above it is < top_p; ranking is logit desc, id asc);
 *   8. one uniform u from (seed, step) and an inverse CDF over the kept tokens in id
 *      order. Nothing depends on other requests or on a global generator, so batching,
 *      splitting or moving a request between workers never changes its tokens.
 *
 * Cost is a few linear passes over the vocabulary. A small top-k (<= 1024) first
 * selects its tokens with a heap, and the rest works on those; top-p sorts only the
 * tokens needed to reach top_p (gathered by decreasing probability thresholds). */
#include "sampling/sampler.h"

#include "kernels/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GREEDY_EPS 1e-5f

void eng_sampling_defaults(eng_sampling *s)
{
    memset(s, 0, sizeof *s);
    s->temperature = 0.0f;
    s->top_k = 0;
    s->top_p = 1.0f;
    s->min_p = 0.0f;
    s->presence_penalty = 0.0f;
    s->frequency_penalty = 0.0f;
    s->repetition_penalty = 1.0f;
    s->seed = 0;
}

void eng_sampling_from_gen_config(const eng_gen_config *gen, eng_sampling *s)
{
    eng_sampling_defaults(s);
    s->repetition_penalty = gen->repetition_penalty > 0 ? gen->repetition_penalty : 1;
    if (gen->do_sample) {
        s->temperature = gen->temperature;
        s->top_k = gen->top_k;
        s->top_p = gen->top_p > 0 ? gen->top_p : 1;
        s->min_p = gen->min_p;
        s->presence_penalty = gen->presence_penalty;
        s->frequency_penalty = gen->frequency_penalty;
    }
}

int eng_sampling_check(const eng_sampling *s, eng_error *err)
{
    if (!s)
        return eng_fail(err, "sampling parameters missing");
    if (!(s->temperature >= 0.0f) || isinf(s->temperature))
        return eng_fail(err, "temperature must be a finite number >= 0, got %g", (double)s->temperature);
    if (s->top_k < -1)
        return eng_fail(err, "top_k must be -1 or 0 (off) or >= 1, got %d", s->top_k);
    if (!(s->top_p > 0.0f && s->top_p <= 1.0f))
        return eng_fail(err, "top_p must be in (0, 1], got %g", (double)s->top_p);
    if (!(s->min_p >= 0.0f && s->min_p <= 1.0f))
        return eng_fail(err, "min_p must be in [0, 1], got %g", (double)s->min_p);
    if (!(s->presence_penalty >= -2.0f && s->presence_penalty <= 2.0f))
        return eng_fail(err, "presence_penalty must be in [-2, 2], got %g", (double)s->presence_penalty);
    if (!(s->frequency_penalty >= -2.0f && s->frequency_penalty <= 2.0f))
        return eng_fail(err, "frequency_penalty must be in [-2, 2], got %g", (double)s->frequency_penalty);
    if (!(s->repetition_penalty > 0.0f) || isinf(s->repetition_penalty))
        return eng_fail(err, "repetition_penalty must be a finite number > 0, got %g", (double)s->repetition_penalty);
    return 0;
}

/* splitmix64's finaliser: a bijective mix with full avalanche. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

double eng_sample_uniform(uint64_t seed, uint64_t step)
{
    /* Two rounds so that neighbouring seeds and neighbouring steps decorrelate. */
    uint64_t h = mix64(seed ^ mix64(step ^ 0xD1B54A32D192ED03ull));
    return (double)(h >> 11) * 0x1.0p-53; /* [0, 1) */
}

/* Ranking used for ties everywhere: higher value first, then lower id. */
static int ranks_before(float va, int32_t ia, float vb, int32_t ib)
{
    return va > vb || (va == vb && ia < ib);
}

/* Keeps the n best (value, id) of the raw logits in top[0..n), best first. */
static void top_n_raw(const float *logits, int vocab, int n, eng_token_logprob *top)
{
    int have = 0;
    if (n == 0)
        return;
    for (int32_t i = 0; i < vocab; i++) {
        float v = logits[i];
        if (have == n && !ranks_before(v, i, top[n - 1].logprob, top[n - 1].id))
            continue;
        int j = have < n ? have++ : n - 1;
        while (j > 0 && ranks_before(v, i, top[j - 1].logprob, top[j - 1].id)) {
            top[j] = top[j - 1];
            j--;
        }
        top[j].id = i;
        top[j].logprob = v;
    }
}

/* A token touched by a penalty, with its logit before the penalty. */
struct touched {
    int32_t id;
    float raw;
};

/* Applies the three penalties in place, recording the raw logit of every touched token
 * in *saved (so the sampled token's logprob can still come from the raw logits). */
static int apply_penalties(const eng_sampling *s, float *logits, int vocab, const int32_t *prompt, int n_prompt,
                           const int32_t *generated, int n_generated, struct touched **saved, int *n_saved)
{
    *saved = NULL;
    *n_saved = 0;
    int rep = s->repetition_penalty != 1.0f;
    int freq = s->frequency_penalty != 0.0f || s->presence_penalty != 0.0f;
    if (!rep && !freq)
        return 0;
    int n_all = (rep ? n_prompt : 0) + n_generated;
    if (n_all == 0)
        return 0;
    /* counts[id]: generated occurrences in the low 31 bits; bit 31 marks "seen". calloc
     * of a large block maps zero pages lazily, so only touched pages cost anything. */
    uint32_t *counts = calloc((size_t)vocab, sizeof *counts);
    struct touched *t = malloc((size_t)n_all * sizeof *t);
    if (!counts || !t) {
        free(counts);
        free(t);
        return -1;
    }
    int nt = 0;
    for (int pass = rep ? 0 : 1; pass < 2; pass++) {
        const int32_t *ids = pass == 0 ? prompt : generated;
        int n = pass == 0 ? n_prompt : n_generated;
        for (int i = 0; i < n; i++) {
            int32_t id = ids[i];
            if (id < 0 || id >= vocab) {
                free(counts);
                free(t);
                return -1;
            }
            if (!(counts[id] & 0x80000000u)) {
                counts[id] |= 0x80000000u;
                t[nt].id = id;
                t[nt].raw = logits[id];
                nt++;
            }
            if (pass == 1)
                counts[id]++;
        }
    }
    for (int i = 0; i < nt; i++) {
        int32_t id = t[i].id;
        float v = logits[id];
        if (rep)
            v = v > 0.0f ? v / s->repetition_penalty : v * s->repetition_penalty;
        uint32_t c = counts[id] & 0x7FFFFFFFu;
        if (c > 0) {
            v -= s->frequency_penalty * (float)c;
            v -= s->presence_penalty;
        }
        logits[id] = v;
    }
    free(counts);
    *saved = t;
    *n_saved = nt;
    return 0;
}

/* The k-th largest of vals[0..n) (1-based k <= n); reorders vals. Quickselect with a
 * median-of-three pivot; deterministic. */
static float kth_largest(float *vals, int n, int k)
{
    int lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        float a = vals[lo], b = vals[mid], c = vals[hi];
        float pivot = (a > b) ? ((b > c) ? b : (a > c ? c : a)) : ((a > c) ? a : (b > c ? c : b));
        int i = lo, j = hi;
        while (i <= j) {
            while (vals[i] > pivot)
                i++;
            while (vals[j] < pivot)
                j--;
            if (i <= j) {
                float tmp = vals[i];
                vals[i] = vals[j];
                vals[j] = tmp;
                i++;
                j--;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            return vals[want];
    }
    return vals[want];
}

#define SMALL_TOP_K 1024

/* The k-th largest finite logits[i] * inv_t, with a size-k min-heap: one compare per
 * token once the heap is full. -inf when fewer than k tokens are finite. */
static float kth_largest_z(const float *logits, int vocab, float inv_t, int k)
{
    float heap[SMALL_TOP_K];
    int n = 0;
    for (int i = 0; i < vocab; i++) {
        if (logits[i] == -INFINITY)
            continue;
        float z = logits[i] * inv_t;
        if (n < k) { /* sift up */
            int j = n++;
            while (j > 0 && heap[(j - 1) / 2] > z) {
                heap[j] = heap[(j - 1) / 2];
                j = (j - 1) / 2;
            }
            heap[j] = z;
        } else if (z > heap[0]) { /* replace the minimum, sift down */
            int j = 0;
            for (;;) {
                int l = 2 * j + 1, r = l + 1, m = j;
                float v = z;
                if (l < n && heap[l] < v)
                    m = l, v = heap[l];
                if (r < n && heap[r] < v)
                    m = r;
                if (m == j)
                    break;
                heap[j] = heap[m];
                j = m;
            }
            heap[j] = z;
        }
    }
    return n < k ? -INFINITY : heap[0];
}

struct cand {
    int32_t id;
    float z;  /* logit after penalties and temperature */
    double w; /* exp(z - zmax) */
};

static int cmp_cand_rank(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    if (ranks_before(x->z, x->id, y->z, y->id))
        return -1;
    if (ranks_before(y->z, y->id, x->z, x->id))
        return 1;
    return 0;
}

/* Top-p over cands[0..n) (id order): finds the last kept rank and marks the others by
 * setting w = 0. total is the sum of w. */
static int apply_top_p(struct cand *c, int n, double total, float top_p)
{
    double need = (double)top_p * total;
    /* Gather the tokens above a probability threshold; if they hold at least top_p of
     * the mass, the nucleus lies inside them, so only they need sorting. */
    struct cand *g = malloc((size_t)n * sizeof *g);
    if (!g)
        return -1;
    int ng = 0;
    for (double thr = 1e-2;; thr *= 1e-3) {
        double mass = 0.0;
        ng = 0;
        int last = thr < 1e-30;
        for (int i = 0; i < n; i++)
            if (c[i].w > 0.0 && (last || c[i].w >= thr)) {
                g[ng++] = c[i];
                mass += c[i].w;
            }
        if (mass >= need || last)
            break;
    }
    qsort(g, (size_t)ng, sizeof *g, cmp_cand_rank);
    /* Keep g[j] while the mass ranked strictly above it is < need. */
    double above = 0.0;
    int cut = ng - 1;
    for (int j = 0; j < ng; j++) {
        if (above >= need && j > 0) {
            cut = j - 1;
            break;
        }
        above += g[j].w;
    }
    float zc = g[cut].z;
    int32_t ic = g[cut].id;
    free(g);
    for (int i = 0; i < n; i++)
        if (c[i].w > 0.0 && ranks_before(zc, ic, c[i].z, c[i].id))
            c[i].w = 0.0;
    return 0;
}

/* The filtered distribution on penalised logits: temperature, min-p, top-k, top-p.
 * On success *cands (caller frees) holds the n finite tokens in id order, w = 0 for the
 * removed ones, and *total the sum of w. */
static int filter(const eng_sampling *s, const float *logits, int vocab, struct cand **cands, int *n_cands,
                  double *total_out)
{
    float inv_t = 1.0f / s->temperature;
    /* With a small top-k only the tokens at or above the k-th largest logit can survive
     * (min-p and top-k keep upper sets of the ranking, so their order does not matter
     * for membership), and only those become candidates. */
    float floor_z = -INFINITY;
    size_t cap = (size_t)vocab;
    if (s->top_k > 0 && s->top_k <= SMALL_TOP_K && s->top_k < vocab) {
        floor_z = kth_largest_z(logits, vocab, inv_t, s->top_k);
        cap = (size_t)s->top_k * 2;
    }
    struct cand *c = malloc(cap * sizeof *c);
    if (!c)
        return -1;
    float zmax = -INFINITY;
    int n = 0;
    for (int32_t i = 0; i < vocab; i++) {
        if (logits[i] == -INFINITY)
            continue; /* masked: never sampled */
        float z = logits[i] * inv_t;
        if (z < floor_z)
            continue;
        if ((size_t)n == cap) { /* ties with the k-th logit */
            struct cand *more = realloc(c, 2 * cap * sizeof *c);
            if (!more) {
                free(c);
                return -1;
            }
            c = more;
            cap *= 2;
        }
        c[n].id = i;
        c[n].z = z;
        n++;
        if (z > zmax)
            zmax = z;
    }
    if (n == 0 || !isfinite(zmax)) {
        free(c);
        return -1;
    }
    /* min-p: p_i >= min_p * p_max  <=>  exp(z_i - zmax) >= min_p. */
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        double w = expf(c[i].z - zmax);
        if (s->min_p > 0.0f && w < (double)s->min_p)
            w = 0.0;
        c[i].w = w;
        total += w;
    }
    if (s->top_k > 0) {
        int kept = 0;
        for (int i = 0; i < n; i++)
            kept += c[i].w > 0.0;
        if (s->top_k < kept) {
            float *vals = malloc((size_t)kept * sizeof *vals);
            if (!vals) {
                free(c);
                return -1;
            }
            int m = 0;
            for (int i = 0; i < n; i++)
                if (c[i].w > 0.0)
                    vals[m++] = c[i].z;
            float kth = kth_largest(vals, m, s->top_k);
            free(vals);
            total = 0.0;
            for (int i = 0; i < n; i++) {
                if (c[i].z < kth)
                    c[i].w = 0.0;
                total += c[i].w;
            }
        }
    }
    if (s->top_p < 1.0f) {
        if (apply_top_p(c, n, total, s->top_p) < 0) {
            free(c);
            return -1;
        }
        total = 0.0;
        for (int i = 0; i < n; i++)
            total += c[i].w;
    }
    *cands = c;
    *n_cands = n;
    *total_out = total;
    return 0;
}

/* Random sampling: the filtered distribution, then an inverse CDF in id order. */
static int sample_random(const eng_sampling *s, const float *logits, int vocab, uint64_t step, int32_t *out_id)
{
    struct cand *c;
    int n;
    double total;
    if (filter(s, logits, vocab, &c, &n, &total) < 0)
        return -1;
    double target = eng_sample_uniform(s->seed, step) * total;
    double acc = 0.0;
    int32_t pick = -1;
    for (int i = 0; i < n; i++) {
        if (c[i].w <= 0.0)
            continue;
        pick = c[i].id; /* the last kept token also absorbs rounding at the top end */
        acc += c[i].w;
        if (target < acc)
            break;
    }
    free(c);
    *out_id = pick;
    return pick < 0 ? -1 : 0;
}

int32_t eng_argmax(const float *logits, int vocab)
{
    float best = -INFINITY;
    int32_t id = -1;
    for (int32_t i = 0; i < vocab; i++)
        if (logits[i] > best) {
            best = logits[i];
            id = i;
        }
    return id;
}

/* 1 when the parameters or logits cannot be sampled from; else *rmax = the raw max. */
static int bad_call(const eng_sampling *s, const float *logits, int vocab, const int32_t *prompt, int n_prompt,
                    const int32_t *generated, int n_generated, float *rmax_out)
{
    if (eng_sampling_check(s, NULL) < 0 || !logits || vocab <= 0 || n_prompt < 0 || n_generated < 0 ||
        (n_prompt > 0 && !prompt) || (n_generated > 0 && !generated))
        return 1;
    float rmax = -INFINITY;
    for (int i = 0; i < vocab; i++) {
        float v = logits[i];
        if (isnan(v) || v == INFINITY)
            return 1;
        if (v > rmax)
            rmax = v;
    }
    *rmax_out = rmax;
    return rmax == -INFINITY; /* every token masked: nothing can be sampled */
}

int eng_sample_probs(const eng_sampling *s, float *logits, int vocab, const int32_t *prompt, int n_prompt,
                     const int32_t *generated, int n_generated, float *probs)
{
    float rmax;
    if (!probs || bad_call(s, logits, vocab, prompt, n_prompt, generated, n_generated, &rmax))
        return -1;
    struct touched *saved;
    int n_saved;
    if (apply_penalties(s, logits, vocab, prompt, n_prompt, generated, n_generated, &saved, &n_saved) < 0)
        return -1;
    free(saved);
    memset(probs, 0, (size_t)vocab * sizeof *probs);
    if (s->temperature < GREEDY_EPS) {
        int32_t id = eng_argmax(logits, vocab);
        if (id < 0)
            return -1;
        probs[id] = 1.0f;
        return 0;
    }
    struct cand *c;
    int n;
    double total;
    if (filter(s, logits, vocab, &c, &n, &total) < 0)
        return -1;
    for (int i = 0; i < n; i++)
        probs[c[i].id] = (float)(c[i].w / total);
    free(c);
    return 0;
}

int eng_sample(const eng_sampling *s, float *logits, int vocab, const int32_t *prompt, int n_prompt,
               const int32_t *generated, int n_generated, int n_top_logprobs, eng_sample_result *out)
{
    float rmax;
    if (!out || n_top_logprobs < 0 || n_top_logprobs > ENG_MAX_TOP_LOGPROBS ||
        bad_call(s, logits, vocab, prompt, n_prompt, generated, n_generated, &rmax))
        return -1;

    /* 1. Raw log_softmax statistics and the top alternatives (the sum vectorised: a
     * scalar expf over Qwen3's 151,936 logits took 0.75 ms of every token, 0.22 ms now). */
    double lse = (double)rmax + log(eng_sum_exp(logits, vocab, rmax));
    int n_top = n_top_logprobs < vocab ? n_top_logprobs : vocab;
    memset(out, 0, sizeof *out);
    top_n_raw(logits, vocab, n_top, out->top);
    for (int j = 0; j < n_top; j++)
        out->top[j].logprob = (float)((double)out->top[j].logprob - lse);
    out->n_top = n_top;

    /* 2. Penalties. */
    struct touched *saved;
    int n_saved;
    if (apply_penalties(s, logits, vocab, prompt, n_prompt, generated, n_generated, &saved, &n_saved) < 0)
        return -1;

    /* 3-8. Greedy or random. */
    int32_t id = -1;
    int rc = 0;
    if (s->temperature < GREEDY_EPS) {
        id = eng_argmax(logits, vocab);
        rc = id < 0 ? -1 : 0;
    } else {
        rc = sample_random(s, logits, vocab, (uint64_t)n_generated, &id);
    }
    if (rc == 0) {
        float raw = logits[id];
        for (int i = 0; i < n_saved; i++)
            if (saved[i].id == id) {
                raw = saved[i].raw;
                break;
            }
        out->id = id;
        out->logprob = (float)((double)raw - lse);
    }
    free(saved);
    return rc;
}

/* test_forward.c: the forward pass gives a sequence the same numbers however it is
 * run: one-shot or chunked prefill, alone or batched with other sequences (decode
 * tokens and prefill chunks mixed), with any block size or thread count. And the
 * MoE shares of two disjoint expert sets add up to the full layer. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ckpt.h"
#include "model/model.h"
#include "sampling/sampler.h"

static eng_error err;

/* Largest |a - b| relative to the largest |a|. */
static double max_seen;
/* Allowed relative difference: the MoE shares of two expert sets are added in
 * another order than the whole layer sums them. Chunking, batching and threads
 * change no bit at all (test_chunk_invariance.c checks that bitwise). */
static double tol = 1e-6;
static double rel_diff(const float *a, const float *b, int n)
{
    double d = 0, mx = 1e-30;
    for (int i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (e > d)
            d = e;
        if (fabs(a[i]) > mx)
            mx = fabs(a[i]);
    }
    if (d / mx > max_seen)
        max_seen = d / mx;
    return d / mx;
}

static int layers_done;
static void count_layers(void *ctx, int layer)
{
    (void)ctx;
    (void)layer;
    layers_done++;
}

#define PROMPT 37
#define DECODE 4

/* Runs prompt in the given chunk sizes then DECODE greedy steps; writes the logits
 * after the prompt and after each step into out[(1 + DECODE) * V]. */
static int run_chunked(eng_model *m, int block_size, const int32_t *prompt, const int *chunks, float *out)
{
    const eng_config *c = eng_model_config(m);
    int V = c->vocab_size;
    eng_kv_layout l = eng_model_kv_layout(m, block_size, ENG_DT_F32);
    eng_kv_pool *kv = NULL;
    if (eng_kv_pool_create(&l, 64, &kv, &err) < 0)
        return -1;
    eng_seq seq = {0};
    int done = 0, rc = 0;
    for (int i = 0; done < PROMPT && rc == 0; i++) {
        int n = chunks[i] < PROMPT - done ? chunks[i] : PROMPT - done;
        eng_batch_item it = {
            .seq = &seq, .tokens = prompt + done, .n_tokens = n, .logits = done + n == PROMPT ? out : NULL};
        rc = eng_seq_reserve(kv, &seq, done + n, &err) || eng_forward(m, kv, &it, 1, NULL, NULL, &err);
        done += n;
    }
    for (int s = 0; s < DECODE && rc == 0; s++) {
        int32_t tok = eng_argmax(out + (size_t)s * V, V);
        eng_batch_item it = {.seq = &seq, .tokens = &tok, .n_tokens = 1, .logits = out + (size_t)(s + 1) * V};
        rc = eng_seq_reserve(kv, &seq, seq.n_past + 1, &err) || eng_forward(m, kv, &it, 1, NULL, NULL, &err);
    }
    eng_seq_release(kv, &seq);
    CHECK(eng_kv_pool_free_blocks(kv) == 64, "blocks returned");
    eng_kv_pool_destroy(kv);
    return rc ? -1 : 0;
}

static void test_model(const char *name, const ckpt_spec *spec)
{
    const char *dir = ckpt_tmpdir(name);
    CHECK(ckpt_write(dir, spec) == 0, "%s: write", name);
    eng_model *m = NULL, *m1 = NULL;
    eng_model_options opt = {.n_threads = 2}, opt1 = {.n_threads = 1};
    CHECK(eng_model_load(dir, &opt, &m, &err) == 0, "%s: load: %s", name, err.msg);
    CHECK(eng_model_load(dir, &opt1, &m1, &err) == 0, "%s: load: %s", name, err.msg);
    if (!m || !m1)
        return;
    const eng_config *c = eng_model_config(m);
    int V = c->vocab_size;
    size_t run = (size_t)(1 + DECODE) * V;
    int32_t prompts[3][PROMPT];
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < PROMPT; i++)
            prompts[p][i] = (int32_t)((i * 31 + p * 97 + 5) % V);

    /* one-shot vs chunked, block sizes, thread counts */
    float *ref = malloc(run * sizeof(float)), *got = malloc(run * sizeof(float));
    int one[] = {PROMPT}, ch1[] = {7, 16, 1, 16}, ch2[] = {1, 1, 1, 5, 3, 40};
    CHECK(run_chunked(m, 16, prompts[0], one, ref) == 0, "%s: one-shot: %s", name, err.msg);
    for (size_t i = 0; i < run; i++)
        CHECK(isfinite(ref[i]), "%s: logit %zu not finite", name, i);
    CHECK(run_chunked(m, 16, prompts[0], ch1, got) == 0, "%s: chunked: %s", name, err.msg);
    CHECK(rel_diff(ref, got, (int)run) <= tol, "%s: chunked prefill differs by %g", name, rel_diff(ref, got, (int)run));
    CHECK(run_chunked(m, 4, prompts[0], ch2, got) == 0, "%s: chunked bs4: %s", name, err.msg);
    CHECK(rel_diff(ref, got, (int)run) <= tol, "%s: block size 4 differs by %g", name, rel_diff(ref, got, (int)run));
    CHECK(run_chunked(m1, 16, prompts[0], one, got) == 0, "%s: 1 thread: %s", name, err.msg);
    CHECK(rel_diff(ref, got, (int)run) <= tol, "%s: 1 thread differs by %g", name, rel_diff(ref, got, (int)run));

    /* batched: three sequences, prompts prefilled together in uneven chunks and
     * mixed with decode steps, against each one run alone */
    float *alone = malloc(3 * run * sizeof(float)), *batched = malloc(3 * run * sizeof(float));
    for (int p = 0; p < 3; p++)
        CHECK(run_chunked(m, 16, prompts[p], one, alone + p * run) == 0, "%s: alone %d", name, p);
    eng_kv_layout l = eng_model_kv_layout(m, 16, ENG_DT_F32);
    eng_kv_pool *kv = NULL;
    CHECK(eng_kv_pool_create(&l, 64, &kv, &err) == 0, "pool: %s", err.msg);
    eng_seq seq[3] = {{0}};
    int fed[3] = {0}, steps[3] = {0};
    int32_t next[3];
    /* Sequence p starts late by p*9 tokens, so at some steps one decodes while
     * another is still in prefill. */
    for (int round = 0; round < 40; round++) {
        eng_batch_item items[3];
        int n = 0, who[3];
        for (int p = 0; p < 3; p++) {
            if (round * 10 < p * 9 || steps[p] > DECODE)
                continue;
            eng_batch_item *it = &items[n];
            if (fed[p] < PROMPT) {
                int k = PROMPT - fed[p] < 10 ? PROMPT - fed[p] : 10;
                it->tokens = prompts[p] + fed[p];
                it->n_tokens = k;
                it->logits = fed[p] + k == PROMPT ? batched + p * run : NULL;
                fed[p] += k;
            } else {
                next[p] = eng_argmax(batched + p * run + (size_t)(steps[p] - 1) * V, V);
                it->tokens = &next[p];
                it->n_tokens = 1;
                it->logits = batched + p * run + (size_t)steps[p] * V;
            }
            it->seq = &seq[p];
            CHECK(eng_seq_reserve(kv, &seq[p], seq[p].n_past + it->n_tokens, &err) == 0, "reserve: %s", err.msg);
            who[n++] = p;
        }
        if (!n)
            break;
        layers_done = 0;
        CHECK(eng_forward(m, kv, items, n, count_layers, NULL, &err) == 0, "%s: batch: %s", name, err.msg);
        CHECK(layers_done == c->num_hidden_layers, "on_layer called %d times", layers_done);
        for (int i = 0; i < n; i++)
            if (items[i].logits)
                steps[who[i]]++;
    }
    for (int p = 0; p < 3; p++) {
        CHECK(steps[p] == DECODE + 1, "%s: sequence %d ran %d steps", name, p, steps[p]);
        double d = rel_diff(alone + p * run, batched + p * run, (int)run);
        CHECK(d <= tol, "%s: sequence %d batched differs by %g", name, p, d);
        eng_seq_release(kv, &seq[p]);
    }

    /* bad batches */
    int32_t bad_tok = V;
    eng_batch_item bad = {.seq = &seq[0], .tokens = &bad_tok, .n_tokens = 1};
    CHECK(eng_seq_reserve(kv, &seq[0], 1, &err) == 0, "reserve");
    CHECK(eng_forward(m, kv, &bad, 1, NULL, NULL, &err) == -1 && strstr(err.msg, "outside the vocabulary"),
          "bad token: %s", err.msg);
    int32_t tok = 1;
    bad.tokens = &tok;
    bad.n_tokens = 1;
    seq[0].n_past = 16;
    CHECK(eng_forward(m, kv, &bad, 1, NULL, NULL, &err) == -1 && strstr(err.msg, "eng_seq_reserve"), "no blocks: %s",
          err.msg);
    seq[0].n_past = 0;
    eng_seq_release(kv, &seq[0]);
    eng_kv_pool_destroy(kv);
    eng_kv_layout other = eng_model_kv_layout(m, 16, ENG_DT_F32);
    other.head_dim *= 2;
    CHECK(eng_kv_pool_create(&other, 4, &kv, &err) == 0, "pool");
    CHECK(eng_seq_reserve(kv, &seq[0], 1, &err) == 0, "reserve");
    CHECK(eng_forward(m, kv, &bad, 1, NULL, NULL, &err) == -1 && strstr(err.msg, "does not fit"), "layout mismatch: %s",
          err.msg);
    eng_seq_release(kv, &seq[0]);
    eng_kv_pool_destroy(kv);

    /* MoE: shares of disjoint expert sets add up to the whole layer */
    if (c->is_moe) {
        int H = c->hidden_size, T = 5, E = c->num_experts;
        float *x = malloc((size_t)T * H * sizeof(float));
        float *full = calloc((size_t)T * H, sizeof(float)), *a = calloc((size_t)T * H, sizeof(float));
        float *b = calloc((size_t)T * H, sizeof(float));
        for (int i = 0; i < T * H; i++)
            x[i] = sinf(0.37f * i) * 1.5f;
        uint8_t *ma = malloc(E), *mb = malloc(E);
        for (int e = 0; e < E; e++) {
            ma[e] = (e % 3) == 0;
            mb[e] = !ma[e];
        }
        for (int layer = 0; layer < c->num_hidden_layers; layer++) {
            memset(full, 0, (size_t)T * H * sizeof(float));
            memset(a, 0, (size_t)T * H * sizeof(float));
            memset(b, 0, (size_t)T * H * sizeof(float));
            CHECK(eng_moe_layer(m, layer, x, T, NULL, full, &err) == 0, "moe full: %s", err.msg);
            CHECK(eng_moe_layer(m, layer, x, T, ma, a, &err) == 0, "moe a: %s", err.msg);
            CHECK(eng_moe_layer(m, layer, x, T, mb, b, &err) == 0, "moe b: %s", err.msg);
            double nz_a = 0, nz_b = 0;
            for (int i = 0; i < T * H; i++) {
                nz_a += fabs(a[i]);
                nz_b += fabs(b[i]);
                a[i] += b[i];
            }
            CHECK(nz_a > 0 && nz_b > 0, "both shares contribute (layer %d)", layer);
            CHECK(rel_diff(full, a, T * H) <= tol, "layer %d: shares differ from the whole by %g", layer,
                  rel_diff(full, a, T * H));
            /* one token alone gets the same as inside the batch */
            float one_out[4096] = {0};
            CHECK(eng_moe_layer(m, layer, x + 3 * H, 1, NULL, one_out, &err) == 0, "moe one");
            CHECK(rel_diff(full + 3 * H, one_out, H) <= tol, "layer %d: token alone differs", layer);
        }
        CHECK(eng_moe_layer(m, c->num_hidden_layers, x, T, NULL, full, &err) == -1, "bad layer index");
        free(x), free(full), free(a), free(b), free(ma), free(mb);
    }
    free(ref), free(got), free(alone), free(batched);
    eng_model_free(m);
    eng_model_free(m1);
    ckpt_remove(dir);
}

int main(void)
{
    ckpt_spec s;
    eng_kernels_init();
    if (strcmp(eng_kernels_isa(), "portable"))
        tol = 1e-5;
    ckpt_defaults(&s, 0);
    test_model("dense", &s);
    ckpt_defaults(&s, 0);
    s.tied = 0;
    s.kv_heads = 4; /* GQA ratio 1 */
    s.dtype = "F16";
    test_model("dense-untied", &s);
    ckpt_defaults(&s, 1);
    s.kv_heads = 1; /* GQA ratio 4 */
    s.extra_config = "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0, "
                     "\"original_max_position_embeddings\": 16}";
    test_model("moe", &s);
    printf("largest relative difference seen: %g (kernels: %s)\n", max_seen, eng_kernels_isa());
    return check_summary();
}

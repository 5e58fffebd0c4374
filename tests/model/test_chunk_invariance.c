/* test_chunk_invariance.c: a sequence's K/V cache entries and logits are bitwise
 * the same however its prompt is run: in one chunk, in chunks of other sizes,
 * token by token, batched with another sequence's tokens, or with another thread
 * count; for every kernel variant this CPU runs. The prompt is longer than one span
 * of the attention (forward.c), so a token's spans are merged both ways: as tasks of
 * their own (a step of one or two tokens) and inside a token's task.
 *
 * This is what migration and prefix caching rely on: K/V computed for a position
 * in a prefill chunk of one size must equal what a decode step, or a chunk of
 * another size, would have written there. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ckpt.h"
#include "kernels/kernels_impl.h"
#include "model/model.h"
#include "sampling/sampler.h"

#define PROMPT 264 /* past a span of the attention (ATT_SPAN, 256 positions) */
#define DECODE 3
#define N_POS (PROMPT + DECODE) /* positions written: the prompt and the decode steps */
#define BLOCK 16

static eng_error err;

/* One run's results: logits after the prompt and after each decode step, and
 * every (layer, K/V, kv head, position) row of the cache, in that order. */
typedef struct run_out {
    float *logits;
    unsigned char *kv;
} run_out;

static size_t kv_row_bytes(const eng_kv_layout *l)
{
    return (size_t)l->head_dim * eng_dtype_size(l->dtype);
}

static size_t kv_bytes(const eng_kv_layout *l)
{
    return (size_t)l->n_layers * 2 * l->n_kv_heads * N_POS * kv_row_bytes(l);
}

static void copy_kv(eng_kv_pool *kv, const eng_seq *seq, unsigned char *out)
{
    const eng_kv_layout *l = eng_kv_pool_layout(kv);
    size_t row = kv_row_bytes(l), k_bytes = (size_t)l->n_kv_heads * l->block_size * row;
    for (int layer = 0; layer < l->n_layers; layer++)
        for (int is_v = 0; is_v < 2; is_v++)
            for (int h = 0; h < l->n_kv_heads; h++)
                for (int p = 0; p < N_POS; p++) {
                    const unsigned char *unit = eng_kv_unit(kv, layer, seq->blocks[p / l->block_size]);
                    memcpy(out, unit + is_v * k_bytes + ((size_t)h * l->block_size + p % l->block_size) * row, row);
                    out += row;
                }
}

/* Runs the prompt in chunks (sizes repeat from the list; 0 ends it) then DECODE
 * greedy steps. With other != NULL, every step also carries a chunk of a second
 * sequence's prompt, so the sequence shares each matmul with other rows. */
static int run(eng_model *m, eng_dtype kv_dt, const int32_t *prompt, const int *chunks, const int32_t *other,
               run_out *out)
{
    int V = eng_model_config(m)->vocab_size;
    eng_kv_layout l = eng_model_kv_layout(m, BLOCK, kv_dt);
    eng_kv_pool *kv = NULL;
    /* the other sequence takes up to 5 tokens a step */
    if (eng_kv_pool_create(&l, 6 * ((N_POS + BLOCK - 1) / BLOCK) + 2, &kv, &err) < 0)
        return -1;
    eng_seq seq = {0}, oseq = {0};
    int done = 0, ofed = 0, step = 0, rc = 0;
    int32_t tok;
    for (int c = 0; rc == 0 && step <= DECODE; c++) {
        eng_batch_item items[2] = {{0}};
        items[0].seq = &seq;
        if (done < PROMPT) {
            int n = chunks[c] ? chunks[c] : 1;
            n = n < PROMPT - done ? n : PROMPT - done;
            items[0].tokens = prompt + done;
            items[0].n_tokens = n;
            items[0].logits = done + n == PROMPT ? out->logits : NULL;
            done += n;
            if (!chunks[c + 1])
                c = -1; /* repeat the list */
        } else {
            tok = eng_argmax(out->logits + (size_t)(step - 1) * V, V);
            items[0].tokens = &tok;
            items[0].n_tokens = 1;
            items[0].logits = out->logits + (size_t)step * V;
        }
        int n_items = 1;
        if (other) { /* 5 tokens of the other prompt, wrapping around (positions keep growing) */
            items[1].seq = &oseq;
            items[1].tokens = other + ofed % PROMPT;
            items[1].n_tokens = PROMPT - ofed % PROMPT < 5 ? PROMPT - ofed % PROMPT : 5;
            ofed += items[1].n_tokens;
            n_items = 2;
            rc = eng_seq_reserve(kv, &oseq, oseq.n_past + items[1].n_tokens, &err);
        }
        rc = rc || eng_seq_reserve(kv, &seq, seq.n_past + items[0].n_tokens, &err) ||
             eng_forward(m, kv, items, n_items, NULL, NULL, &err);
        if (items[0].logits)
            step++;
    }
    if (rc == 0)
        copy_kv(kv, &seq, out->kv);
    eng_seq_release(kv, &seq);
    eng_seq_release(kv, &oseq);
    eng_kv_pool_destroy(kv);
    return rc ? -1 : 0;
}

/* Every run of one model and KV dtype against its first. */
static void test_model_kv(eng_model *m2, eng_model *m1, const char *name, eng_dtype kv_dt)
{
    int V = eng_model_config(m2)->vocab_size;
    eng_kv_layout l = eng_model_kv_layout(m2, BLOCK, kv_dt);
    size_t n_logits = (size_t)(1 + DECODE) * V;
    int32_t prompt[PROMPT], other[PROMPT];
    for (int i = 0; i < PROMPT; i++) {
        prompt[i] = (int32_t)((i * 37 + 11) % V);
        other[i] = (int32_t)((i * 53 + 3) % V);
    }
    static const int one[] = {PROMPT, 0}, uneven[] = {7, 16, 1, 5, 0}, threes[] = {3, 0}, singles[] = {1, 0};
    static const struct {
        const char *what;
        const int *chunks;
        int other, one_thread;
    } runs[] = {
        {"one chunk", one, 0, 0},
        {"chunks 7,16,1,5", uneven, 0, 0},
        {"chunks of 3", threes, 0, 0},
        {"token by token", singles, 0, 0},
        {"one chunk batched with another sequence", one, 1, 0},
        {"token by token batched with another sequence", singles, 1, 0},
        {"chunks 7,16,1,5 on 1 thread", uneven, 0, 1},
    };
    run_out ref = {malloc(n_logits * sizeof(float)), malloc(kv_bytes(&l))};
    run_out got = {malloc(n_logits * sizeof(float)), malloc(kv_bytes(&l))};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        run_out *o = r == 0 ? &ref : &got;
        eng_model *m = runs[r].one_thread ? m1 : m2;
        int rc = run(m, kv_dt, prompt, runs[r].chunks, runs[r].other ? other : NULL, o);
        CHECK(rc == 0, "%s %s kv %s: %s: %s", eng_kernels_isa(), name, eng_dtype_name(kv_dt), runs[r].what, err.msg);
        if (rc != 0 || r == 0)
            continue;
        CHECK(memcmp(ref.kv, got.kv, kv_bytes(&l)) == 0, "%s %s kv %s: %s: K/V cache differs from one chunk",
              eng_kernels_isa(), name, eng_dtype_name(kv_dt), runs[r].what);
        CHECK(memcmp(ref.logits, got.logits, n_logits * sizeof(float)) == 0,
              "%s %s kv %s: %s: logits differ from one chunk", eng_kernels_isa(), name, eng_dtype_name(kv_dt),
              runs[r].what);
    }
    free(ref.logits), free(ref.kv), free(got.logits), free(got.kv);
}

/* ... for each KV dtype. */
static void test_model(const char *name, const ckpt_spec *spec)
{
    const char *dir = ckpt_tmpdir(name);
    CHECK(ckpt_write(dir, spec) == 0, "%s: write", name);
    eng_model *m2 = NULL, *m1 = NULL;
    eng_model_options opt2 = {.n_threads = 2}, opt1 = {.n_threads = 1};
    CHECK(eng_model_load(dir, &opt2, &m2, &err) == 0, "%s: load: %s", name, err.msg);
    CHECK(eng_model_load(dir, &opt1, &m1, &err) == 0, "%s: load: %s", name, err.msg);
    if (m1 && m2) {
        static const eng_dtype kv_dts[] = {ENG_DT_BF16, ENG_DT_F16, ENG_DT_F32};
        for (size_t d = 0; d < sizeof kv_dts / sizeof kv_dts[0]; d++)
            test_model_kv(m2, m1, name, kv_dts[d]);
    }
    eng_model_free(m1);
    eng_model_free(m2);
    ckpt_remove(dir);
}

int main(void)
{
    static const char *const variants[] = {"portable", "avx2", "avx512"};
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        if (!eng_kernels_variant(variants[v]))
            continue;
        setenv("TANDEM_ISA", variants[v], 1);
        CHECK(strcmp(eng_kernels_init(), variants[v]) == 0, "TANDEM_ISA=%s not selected", variants[v]);
        ckpt_spec s;
        ckpt_defaults(&s, 0);
        test_model("dense", &s);
        ckpt_defaults(&s, 0);
        s.tied = 0;
        s.dtype = "F16";
        s.hidden = 72; /* not a multiple of the vector widths */
        test_model("dense-f16", &s);
        ckpt_defaults(&s, 1);
        s.dtype = "F32";
        test_model("moe-f32", &s);
        printf("%s: checked K/V (bf16, f16, f32) and logits across chunkings, batching and threads\n", variants[v]);
    }
    return check_summary();
}

/* cmd_bench.c: `tandem bench`, the engine's speed on S concurrent sequences
 * (one by default).
 *
 * Prefill of P tokens per sequence (in the same 512-token chunks as `tandem
 * generate`, one sequence after another), then D greedy decode steps in which all
 * S sequences go through one eng_forward batch, as continuous batching runs them;
 * both phases timed separately, after one untimed warm-up token that brings the
 * mapped weights into memory. Reports tokens/s for both phases (decode: all
 * sequences' tokens together) and the peak resident set against what it should
 * be: the weights plus the KV cache. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli_args.h"
#include "cli_model.h"
#include "commands.h"
#include "common/clock.h"
#include "model/model.h"
#include "sampling/sampler.h"

#define PREFILL_CHUNK 512
#define KV_BLOCK 16

typedef struct bench_args {
    const char *model, *kv_dtype, *matmul_dtype;
    int prompt_tokens, decode_tokens, sequences, threads, json, mmap;
} bench_args;

#define B bench_args
static const cli_opt OPTS[] = {
    CLI_STR_OPT(B, model, "--model", "DIR", NULL, "Hugging Face checkpoint folder", CLI_REQUIRED),
    CLI_INT_OPT(B, prompt_tokens, "--prompt-tokens", "P", 1, 1 << 20, "512", "prompt length to prefill"),
    CLI_INT_OPT(B, decode_tokens, "--decode-tokens", "D", 1, 1 << 20, "64", "decode steps after it"),
    CLI_INT_OPT(B, sequences, "--sequences", "S", 1, 256, "1", "sequences decoded together in each step"),
    CLI_INT_OPT(B, threads, "--threads", "N", 1, 4096, NULL, "compute threads; default: one per CPU"),
    CLI_KV_DTYPE_OPT(B, kv_dtype),
    CLI_MATMUL_DTYPE_OPT(B, matmul_dtype),
    CLI_MMAP_OPT(B, mmap),
    CLI_FLAG_OPT(B, json, "--json", "one JSON object: prefill_tok_s, decode_tok_s, peak_rss_bytes, ..."),
};
#undef B

static const cli_command CMD = {
    .name = "tandem bench",
    .usage = "--model DIR [--prompt-tokens P] [--decode-tokens D] [--sequences S] [--threads N] "
             "[--kv-dtype bf16|f16|f32] [--matmul-dtype f32|bf16] [--mmap] [--json]",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
};

int cmd_bench(int argc, char **argv)
{
    bench_args a = {0};
    int exit_status = cli_parse(&CMD, argc, argv, &a);
    if (exit_status != CLI_RUN)
        return exit_status;
    const char *model = a.model;
    int P = a.prompt_tokens, D = a.decode_tokens, S = a.sequences, threads = a.threads, json = a.json;

    eng_error err = {{0}};
    eng_model *m = NULL;
    eng_kv_pool *kv = NULL;
    eng_seq *seqs = NULL;
    eng_batch_item *items = NULL;
    int32_t *prompt = NULL, *next = NULL;
    float *logits = NULL;
    int status = 1;
    double t0 = eng_now_s();
    eng_model_options opt = {
        .n_threads = threads, .matmul_dtype = cli_matmul_dtype(a.matmul_dtype), .mmap_weights = a.mmap};
    if (eng_model_load(model, &opt, &m, &err) < 0)
        goto fail;
    const eng_config *c = eng_model_config(m);
    int V = c->vocab_size;
    eng_kv_layout layout = eng_model_kv_layout(m, KV_BLOCK, cli_kv_dtype(a.kv_dtype));
    int n_blocks = (P + D + KV_BLOCK - 1) / KV_BLOCK;
    seqs = calloc((size_t)S, sizeof *seqs);
    items = calloc((size_t)S, sizeof *items);
    prompt = malloc((size_t)P * sizeof *prompt);
    next = malloc((size_t)S * sizeof *next);
    logits = malloc((size_t)S * (size_t)V * sizeof *logits);
    if (!seqs || !items || !prompt || !next || !logits) {
        eng_fail(&err, "out of memory");
        goto fail;
    }
    /* Ordinary (non-special) ids spread over the vocabulary. */
    int ordinary = V < 151643 ? V : 151643;
    for (int i = 0; i < P; i++)
        prompt[i] = (int32_t)(((long long)i * 7919 + 13) % ordinary);
    if (eng_kv_pool_create(&layout, n_blocks * S, &kv, &err) < 0)
        goto fail;
    double load_s = eng_now_s() - t0;

    /* warm-up: one token touches every weight page once */
    eng_batch_item warm = {.seq = &seqs[0], .tokens = prompt, .n_tokens = 1, .logits = logits};
    if (eng_seq_reserve(kv, &seqs[0], 1, &err) < 0 || eng_forward(m, kv, &warm, 1, NULL, NULL, &err) < 0)
        goto fail;
    eng_seq_release(kv, &seqs[0]);

    for (int q = 0; q < S; q++)
        if (eng_seq_reserve(kv, &seqs[q], P + D, &err) < 0)
            goto fail;
    double t1 = eng_now_s();
    for (int q = 0; q < S; q++) {
        /* each sequence's prompt starts with its own token, so that no two decode alike */
        int32_t first = prompt[0];
        prompt[0] = (int32_t)((first + q) % ordinary);
        for (int done = 0; done < P;) {
            int n = P - done < PREFILL_CHUNK ? P - done : PREFILL_CHUNK;
            eng_batch_item it = {.seq = &seqs[q],
                                 .tokens = prompt + done,
                                 .n_tokens = n,
                                 .logits = done + n == P ? logits + (size_t)q * V : NULL};
            if (eng_forward(m, kv, &it, 1, NULL, NULL, &err) < 0)
                goto fail;
            done += n;
        }
        prompt[0] = first;
    }
    double t2 = eng_now_s();
    for (int s = 0; s < D; s++) {
        for (int q = 0; q < S; q++) {
            next[q] = eng_argmax(logits + (size_t)q * V, V);
            items[q] = (eng_batch_item){
                .seq = &seqs[q], .tokens = &next[q], .n_tokens = 1, .logits = logits + (size_t)q * V};
        }
        if (eng_forward(m, kv, items, S, NULL, NULL, &err) < 0)
            goto fail;
    }
    double t3 = eng_now_s();

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss = (double)ru.ru_maxrss * 1024.0;
    double wbytes = (double)eng_model_weight_bytes(m), kvbytes = (double)eng_kv_pool_bytes(kv);
    double prefill_tok_s = (double)P * S / (t2 - t1), decode_tok_s = (double)D * S / (t3 - t2);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "prefill_tok_s", prefill_tok_s);
        cJSON_AddNumberToObject(o, "decode_tok_s", decode_tok_s);
        cJSON_AddNumberToObject(o, "prompt_tokens", P);
        cJSON_AddNumberToObject(o, "decode_tokens", D);
        cJSON_AddNumberToObject(o, "sequences", S);
        cJSON_AddNumberToObject(o, "prefill_s", t2 - t1);
        cJSON_AddNumberToObject(o, "decode_s", t3 - t2);
        cJSON_AddNumberToObject(o, "load_s", load_s);
        cJSON_AddNumberToObject(o, "threads", eng_model_threads(m));
        cJSON_AddStringToObject(o, "kernels", eng_kernels_isa());
        cJSON_AddNumberToObject(o, "weight_bytes", wbytes);
        cJSON_AddStringToObject(o, "kv_dtype", eng_dtype_name(layout.dtype));
        cJSON_AddStringToObject(o, "matmul_dtype", eng_dtype_name(layout.matmul_dtype));
        cJSON_AddNumberToObject(o, "kv_bytes", kvbytes);
        cJSON_AddNumberToObject(o, "peak_rss_bytes", rss);
        cJSON_AddNumberToObject(o, "rss_over_weights_kv", rss / (wbytes + kvbytes));
        char *s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (s)
            puts(s);
        free(s);
    } else {
        printf("model %s: %d threads, kernels %s\n", model, eng_model_threads(m), eng_kernels_isa());
        printf("prefill %d x %d tokens: %.2f s, %.1f tok/s\n", S, P, t2 - t1, prefill_tok_s);
        printf("decode  %d x %d tokens: %.2f s, %.1f tok/s\n", S, D, t3 - t2, decode_tok_s);
        printf("peak RSS %.1f MiB = %.3f x (weights %.1f MiB + KV %.1f MiB)\n", rss / 1048576, rss / (wbytes + kvbytes),
               wbytes / 1048576, kvbytes / 1048576);
    }
    status = 0;
    goto done;
fail:
    fprintf(stderr, "tandem bench: %s\n", err.msg);
done:
    if (kv && seqs)
        for (int q = 0; q < S; q++)
            eng_seq_release(kv, &seqs[q]);
    eng_kv_pool_destroy(kv);
    free(seqs);
    free(items);
    free(next);
    free(prompt);
    free(logits);
    eng_model_free(m);
    return status;
}

/* cmd_bench.c: `tandem bench`, the engine's speed on S concurrent sequences
 * (one by default).
 *
 * Prefill of P tokens per sequence (in the same 512-token chunks as `tandem
 * generate`, one sequence after another), then D greedy decode steps in which all
 * S sequences go through one eng_forward batch, as continuous batching runs them;
 * both phases timed separately, after one untimed warm-up token that brings the
 * mapped weights into memory. Reports tokens/s for both phases (decode: all
 * sequences' tokens together) and the peak resident set against what it should
 * be: the weights plus the KV cache.
 *
 * --roofline follows every decode step with a pass that only reads as many bytes as
 * the step had to (every weight, and each sequence's K and V so far), on as many
 * threads (cli_read_pass.h), and reports the step's speed as a fraction of the
 * pass's: the share of the memory roofline decode reaches. This VM's bandwidth
 * drifts by tens of percent within minutes, so a bandwidth read before or after a
 * whole run can be far from what the run had; a pass next to each step sees the
 * same moment. The median over the steps is the figure. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli_args.h"
#include "cli_model.h"
#include "cli_read_pass.h"
#include "commands.h"
#include "common/clock.h"
#include "model/model.h"
#include "sampling/sampler.h"

#define PREFILL_CHUNK 512
#define KV_BLOCK 16

typedef struct bench_args {
    const char *model, *kv_dtype, *matmul_dtype;
    int prompt_tokens, decode_tokens, sequences, threads, json, mmap, roofline;
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
    CLI_FLAG_OPT(B, roofline, "--roofline",
                 "after each decode step, a pass reading the step's bytes: decode as a share of the memory roofline "
                 "(the peak RSS then includes the pass's buffer)"),
    CLI_FLAG_OPT(B, json, "--json", "one JSON object: prefill_tok_s, decode_tok_s, peak_rss_bytes, ..."),
};
#undef B

static const cli_command CMD = {
    .name = "tandem bench",
    .usage = "--model DIR [--prompt-tokens P] [--decode-tokens D] [--sequences S] [--threads N] "
             "[--kv-dtype bf16|f16|f32] [--matmul-dtype f32|bf16] [--mmap] [--roofline] [--json]",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-th quartile (1, 2: the median, 3) of v[0..n), nearest rank; sorts v. */
static double quartile(double *v, int n, int q)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[(size_t)(n - 1) * (size_t)q / 4];
}

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
    /* --roofline: a pool as large as the model's, the buffer its passes read, and
     * per step the pass's time over the step's and the pass's bandwidth */
    eng_pool *read_pool = NULL;
    uint64_t *read_buf = NULL, checksum = 0;
    size_t kv_token_bytes = 0;
    double *step_share = NULL, *pass_gb_s = NULL;
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
    double wbytes = (double)eng_model_weight_bytes(m);

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
    if (a.roofline) {
        kv_token_bytes = eng_kv_unit_bytes(&layout) / KV_BLOCK * (size_t)layout.n_layers;
        double most = wbytes + (double)kv_token_bytes * S * (P + D);
        read_pool = eng_pool_create(eng_model_threads(m));
        read_buf = most < 1e15 ? read_pass_buffer((size_t)most) : NULL;
        step_share = malloc((size_t)D * sizeof *step_share);
        pass_gb_s = malloc((size_t)D * sizeof *pass_gb_s);
        if (!read_pool || !read_buf || !step_share || !pass_gb_s) {
            eng_fail(&err, "out of memory for the --roofline read pass (%.0f MiB)", most / 1048576);
            goto fail;
        }
    }
    double decode_s = 0;
    for (int s = 0; s < D; s++) {
        double step_t0 = eng_now_s();
        for (int q = 0; q < S; q++) {
            next[q] = eng_argmax(logits + (size_t)q * V, V);
            items[q] = (eng_batch_item){
                .seq = &seqs[q], .tokens = &next[q], .n_tokens = 1, .logits = logits + (size_t)q * V};
        }
        if (eng_forward(m, kv, items, S, NULL, NULL, &err) < 0)
            goto fail;
        double step = eng_now_s() - step_t0;
        decode_s += step;
        if (a.roofline) { /* the bytes this step read: every weight, every sequence's K and V so far */
            size_t bytes = (size_t)wbytes + kv_token_bytes * (size_t)S * (size_t)(P + s + 1);
            double pass = read_pass_s(read_pool, read_buf, bytes, &checksum);
            step_share[s] = pass / step;
            pass_gb_s[s] = (double)bytes / pass / 1e9;
        }
    }

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss = (double)ru.ru_maxrss * 1024.0;
    double kvbytes = (double)eng_kv_pool_bytes(kv);
    double prefill_tok_s = (double)P * S / (t2 - t1), decode_tok_s = (double)D * S / decode_s;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "prefill_tok_s", prefill_tok_s);
        cJSON_AddNumberToObject(o, "decode_tok_s", decode_tok_s);
        cJSON_AddNumberToObject(o, "prompt_tokens", P);
        cJSON_AddNumberToObject(o, "decode_tokens", D);
        cJSON_AddNumberToObject(o, "sequences", S);
        cJSON_AddNumberToObject(o, "prefill_s", t2 - t1);
        cJSON_AddNumberToObject(o, "decode_s", decode_s);
        cJSON_AddNumberToObject(o, "load_s", load_s);
        cJSON_AddNumberToObject(o, "threads", eng_model_threads(m));
        cJSON_AddStringToObject(o, "kernels", eng_kernels_isa());
        cJSON_AddNumberToObject(o, "weight_bytes", wbytes);
        cJSON_AddStringToObject(o, "kv_dtype", eng_dtype_name(layout.dtype));
        cJSON_AddStringToObject(o, "matmul_dtype", eng_dtype_name(layout.matmul_dtype));
        cJSON_AddNumberToObject(o, "kv_bytes", kvbytes);
        cJSON_AddNumberToObject(o, "peak_rss_bytes", rss);
        cJSON_AddNumberToObject(o, "rss_over_weights_kv", rss / (wbytes + kvbytes));
        if (a.roofline) {
            cJSON_AddNumberToObject(o, "roofline_share", quartile(step_share, D, 2));
            cJSON_AddNumberToObject(o, "roofline_share_q1", quartile(step_share, D, 1));
            cJSON_AddNumberToObject(o, "roofline_share_q3", quartile(step_share, D, 3));
            cJSON_AddNumberToObject(o, "roofline_read_gb_s", quartile(pass_gb_s, D, 2));
        }
        char *s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (s)
            puts(s);
        free(s);
    } else {
        printf("model %s: %d threads, kernels %s\n", model, eng_model_threads(m), eng_kernels_isa());
        printf("prefill %d x %d tokens: %.2f s, %.1f tok/s\n", S, P, t2 - t1, prefill_tok_s);
        printf("decode  %d x %d tokens: %.2f s, %.1f tok/s\n", S, D, decode_s, decode_tok_s);
        if (a.roofline)
            printf("decode at %.3f of the memory roofline (median of %d steps, quartiles %.3f-%.3f; read passes "
                   "%.1f GB/s)\n",
                   quartile(step_share, D, 2), D, quartile(step_share, D, 1), quartile(step_share, D, 3),
                   quartile(pass_gb_s, D, 2));
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
    free(step_share);
    free(pass_gb_s);
    free(read_buf);
    eng_pool_destroy(read_pool);
    eng_model_free(m);
    return status;
}

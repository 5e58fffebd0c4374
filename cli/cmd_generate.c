/* cmd_generate.c: `tandem generate`, one prompt through the engine in this process.
 *
 * Loads the model, tokenizer and generation_config.json, turns the prompt into ids
 * (build_prompt: the one place that will apply the chat template), prefills it in
 * chunks through the paged KV cache, then decodes one token at a time until an
 * eos id or --max-tokens. Text streams to stdout as it is generated; with --json one
 * object with ids, text, logprobs and timing is printed at the end instead. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "common/buf.h"
#include "model/model.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

#define PREFILL_CHUNK 512 /* tokens per prefill step: bounds activation memory */
#define KV_BLOCK 16

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tandem generate --model DIR (--prompt TEXT | --prompt-file F) [options]\n"
            "  --model DIR        Hugging Face checkpoint folder (config.json, safetensors, tokenizer.json)\n"
            "  --prompt TEXT      the prompt\n"
            "  --prompt-file F    read the prompt from F ('-' for standard input)\n"
            "  --raw              feed the prompt as is (special tokens such as <|im_start|> recognised)\n"
            "                     instead of as one user message through the chat template\n"
            "  --max-tokens N     stop after N generated tokens (default 256)\n"
            "  --temperature T    0 = greedy; giving any sampling option replaces\n"
            "  --top-k K          generation_config.json's defaults (unset ones are off,\n"
            "  --top-p P          temperature 1)\n"
            "  --min-p M\n"
            "  --seed S           seed of the sampler (default: from the clock)\n"
            "  --top-logprobs K   alternatives per token in --json's logprobs (0-%d, default 0)\n"
            "  --threads N        compute threads (default: one per CPU)\n"
            "  --json             print one JSON object: prompt_tokens, tokens, text, finish_reason,\n"
            "                     logprobs, timing\n",
            ENG_MAX_TOP_LOGPROBS);
}

typedef struct gen_args {
    const char *model, *prompt, *prompt_file;
    int raw, json, max_tokens, top_logprobs, threads;
    int have_temperature, have_top_k, have_top_p, have_min_p, have_seed;
    float temperature, top_p, min_p;
    int top_k;
    unsigned long long seed;
} gen_args;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int parse_int(const char *opt, const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "tandem generate: %s wants an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_float(const char *opt, const char *s, float lo, float hi, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "tandem generate: %s wants a number in [%g, %g], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, gen_args *a)
{
    memset(a, 0, sizeof *a);
    a->max_tokens = 256;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(o, "--raw")) {
            a->raw = 1;
            continue;
        }
        if (!strcmp(o, "--json")) {
            a->json = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tandem generate: %s needs a value (see --help)\n", o);
            return -1;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(o, "--model"))
            a->model = v;
        else if (!strcmp(o, "--prompt"))
            a->prompt = v;
        else if (!strcmp(o, "--prompt-file"))
            a->prompt_file = v;
        else if (!strcmp(o, "--max-tokens"))
            rc = parse_int(o, v, 1, 1 << 20, &a->max_tokens);
        else if (!strcmp(o, "--temperature"))
            rc = parse_float(o, v, 0, 100, &a->temperature), a->have_temperature = 1;
        else if (!strcmp(o, "--top-k"))
            rc = parse_int(o, v, -1, 1 << 30, &a->top_k), a->have_top_k = 1;
        else if (!strcmp(o, "--top-p"))
            rc = parse_float(o, v, 1e-9f, 1, &a->top_p), a->have_top_p = 1;
        else if (!strcmp(o, "--min-p"))
            rc = parse_float(o, v, 0, 1, &a->min_p), a->have_min_p = 1;
        else if (!strcmp(o, "--top-logprobs"))
            rc = parse_int(o, v, 0, ENG_MAX_TOP_LOGPROBS, &a->top_logprobs);
        else if (!strcmp(o, "--threads"))
            rc = parse_int(o, v, 1, 4096, &a->threads);
        else if (!strcmp(o, "--seed")) {
            char *end;
            errno = 0;
            a->seed = strtoull(v, &end, 10);
            a->have_seed = 1;
            if (errno || end == v || *end || v[0] == '-') {
                fprintf(stderr, "tandem generate: --seed wants a non-negative integer, got '%s'\n", v);
                rc = -1;
            }
        } else {
            fprintf(stderr, "tandem generate: unknown option '%s' (see --help)\n", o);
            return -1;
        }
        if (rc < 0)
            return -1;
    }
    if (!a->model) {
        fprintf(stderr, "tandem generate: --model DIR is required (see --help)\n");
        return -1;
    }
    if (!a->prompt == !a->prompt_file) {
        fprintf(stderr, "tandem generate: give exactly one of --prompt and --prompt-file\n");
        return -1;
    }
    return 0;
}

static char *read_file(const char *path, size_t *len, eng_error *err)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        eng_fail(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    eng_buf b = {0};
    char chunk[65536];
    size_t n;
    int oom = 0;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        oom |= eng_buf_append(&b, chunk, n) < 0;
    int bad = ferror(f);
    if (f != stdin)
        fclose(f);
    if (bad || oom) {
        eng_buf_free(&b);
        eng_fail(err, "%s: %s", path, bad ? "read error" : "out of memory");
        return NULL;
    }
    *len = b.len;
    if (!b.data)
        return calloc(1, 1);
    return eng_buf_take(&b);
}

/* The user's text as prompt ids. With raw, the text as is (special tokens written
 * in it recognised); otherwise one user message through the chat template. */
static int build_prompt(const eng_tokenizer *tok, const char *text, size_t len, int raw, int32_t **ids, int *n_ids,
                        eng_error *err)
{
    if (!raw)
        return eng_fail(err, "the chat template is not available yet: pass --raw to feed the prompt as is");
    if (eng_tokenize(tok, text, len, 1, ids, n_ids, err) < 0)
        return -1;
    if (*n_ids == 0) {
        free(*ids);
        *ids = NULL;
        return eng_fail(err, "the prompt is empty: give at least one token of text");
    }
    return 0;
}

/* The sampler's settings: generation_config.json's unless the user gave any. */
static void choose_sampling(const gen_args *a, const eng_gen_config *g, eng_sampling *s)
{
    eng_sampling_defaults(s);
    if (a->have_temperature || a->have_top_k || a->have_top_p || a->have_min_p) {
        s->temperature = a->have_temperature ? a->temperature : 1.0f;
        if (a->have_top_k)
            s->top_k = a->top_k;
        if (a->have_top_p)
            s->top_p = a->top_p;
        if (a->have_min_p)
            s->min_p = a->min_p;
    } else if (g->do_sample) {
        s->temperature = g->temperature;
        s->top_k = g->top_k;
        s->top_p = g->top_p;
        s->min_p = g->min_p;
        s->repetition_penalty = g->repetition_penalty;
        s->presence_penalty = g->presence_penalty;
        s->frequency_penalty = g->frequency_penalty;
    } else {
        s->repetition_penalty = g->repetition_penalty;
    }
    s->seed = a->have_seed ? a->seed : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
}

typedef struct gen_out {
    int32_t *tokens;
    eng_sample_result *results;
    int n;
    const char *finish_reason;
    double prefill_s, decode_s;
} gen_out;

/* Prefill then decode; streams text to stdout unless quiet. */
static int generate(eng_model *m, const eng_tokenizer *tok, const eng_gen_config *g, const eng_sampling *samp,
                    const int32_t *prompt, int n_prompt, int max_tokens, int top_logprobs, int stream, gen_out *o,
                    eng_error *err)
{
    const eng_config *c = eng_model_config(m);
    int V = c->vocab_size, rc = -1;
    eng_kv_layout layout = eng_model_kv_layout(m, KV_BLOCK);
    eng_kv_pool *kv = NULL;
    eng_seq seq = {0};
    eng_buf text = {0};
    eng_detok detok = {0};
    float *logits = malloc((size_t)V * sizeof(float));
    o->tokens = malloc((size_t)max_tokens * sizeof *o->tokens);
    o->results = malloc((size_t)max_tokens * sizeof *o->results);
    if (!logits || !o->tokens || !o->results) {
        eng_fail(err, "out of memory");
        goto done;
    }
    long long total = (long long)n_prompt + max_tokens;
    if (eng_kv_pool_create(&layout, (int)((total + KV_BLOCK - 1) / KV_BLOCK), &kv, err) < 0 ||
        eng_seq_reserve(kv, &seq, (int)total, err) < 0)
        goto done;

    double t0 = now_s();
    for (int done = 0; done < n_prompt;) {
        int n = n_prompt - done < PREFILL_CHUNK ? n_prompt - done : PREFILL_CHUNK;
        eng_batch_item it = {.seq = &seq, .tokens = prompt + done, .n_tokens = n,
                             .logits = done + n == n_prompt ? logits : NULL};
        if (eng_forward(m, kv, &it, 1, NULL, NULL, err) < 0)
            goto done;
        done += n;
    }
    double t1 = now_s();
    o->prefill_s = t1 - t0;
    o->finish_reason = "length";
    for (;;) {
        eng_sample_result *r = &o->results[o->n];
        if (eng_sample(samp, logits, V, prompt, n_prompt, o->tokens, o->n, top_logprobs, r) < 0) {
            eng_fail(err, "sampler rejected its parameters");
            goto done;
        }
        o->tokens[o->n++] = r->id;
        if (eng_gen_config_is_eos(g, r->id)) {
            o->finish_reason = "stop";
            break;
        }
        if (stream) {
            eng_buf_clear(&text);
            eng_detok_push(tok, &detok, r->id, 0, &text);
            if (text.len) {
                fwrite(text.data, 1, text.len, stdout);
                fflush(stdout);
            }
        }
        if (o->n == max_tokens)
            break;
        eng_batch_item it = {.seq = &seq, .tokens = &r->id, .n_tokens = 1, .logits = logits};
        if (eng_forward(m, kv, &it, 1, NULL, NULL, err) < 0)
            goto done;
    }
    o->decode_s = now_s() - t1;
    if (stream) {
        eng_buf_clear(&text);
        eng_detok_flush(&detok, &text);
        eng_buf_puts(&text, "\n");
        fwrite(text.data, 1, text.len, stdout);
        fflush(stdout);
    }
    rc = 0;
done:
    if (kv)
        eng_seq_release(kv, &seq);
    eng_kv_pool_destroy(kv);
    eng_buf_free(&text);
    free(logits);
    return rc;
}

static cJSON *id_array(const int32_t *ids, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

static int print_json(const eng_tokenizer *tok, const eng_gen_config *g, const int32_t *prompt, int n_prompt,
                      const gen_out *o, double load_s)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "prompt_tokens", id_array(prompt, n_prompt));
    cJSON_AddItemToObject(root, "tokens", id_array(o->tokens, o->n));
    /* The text leaves out the stop token, as a chat client sees it. */
    int n_text = o->n - (o->n && eng_gen_config_is_eos(g, o->tokens[o->n - 1]));
    eng_buf text = {0};
    eng_detokenize(tok, o->tokens, n_text, 0, &text);
    cJSON_AddStringToObject(root, "text", text.data ? text.data : "");
    eng_buf_free(&text);
    cJSON_AddStringToObject(root, "finish_reason", o->finish_reason);
    cJSON *lps = cJSON_AddArrayToObject(root, "logprobs");
    for (int i = 0; i < o->n; i++) {
        const eng_sample_result *r = &o->results[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "id", r->id);
        cJSON_AddNumberToObject(e, "logprob", r->logprob);
        cJSON *top = cJSON_AddArrayToObject(e, "top");
        for (int k = 0; k < r->n_top; k++) {
            cJSON *pair = cJSON_CreateArray();
            cJSON_AddItemToArray(pair, cJSON_CreateNumber(r->top[k].id));
            cJSON_AddItemToArray(pair, cJSON_CreateNumber(r->top[k].logprob));
            cJSON_AddItemToArray(top, pair);
        }
        cJSON_AddItemToArray(lps, e);
    }
    cJSON *t = cJSON_AddObjectToObject(root, "timing");
    cJSON_AddNumberToObject(t, "load_s", load_s);
    cJSON_AddNumberToObject(t, "prefill_s", o->prefill_s);
    cJSON_AddNumberToObject(t, "decode_s", o->decode_s);
    cJSON_AddNumberToObject(t, "prefill_tok_s", o->prefill_s > 0 ? n_prompt / o->prefill_s : 0);
    cJSON_AddNumberToObject(t, "decode_tok_s", o->decode_s > 0 && o->n > 1 ? (o->n - 1) / o->decode_s : 0);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!s)
        return -1;
    puts(s);
    free(s);
    return 0;
}

int cmd_generate(int argc, char **argv)
{
    gen_args a;
    if (parse_args(argc, argv, &a) < 0)
        return 2;
    eng_error err = {{0}};
    eng_model *m = NULL;
    eng_tokenizer *tok = NULL;
    char *text = NULL;
    int32_t *prompt = NULL;
    int n_prompt = 0, status = 1;
    gen_out o = {0};
    eng_gen_config g;
    eng_sampling samp;

    double t0 = now_s();
    size_t len = 0;
    if (a.prompt) {
        len = strlen(a.prompt);
        text = strdup(a.prompt);
    } else {
        text = read_file(a.prompt_file, &len, &err);
    }
    if (!text)
        goto fail;
    eng_model_options opt = {.n_threads = a.threads};
    if (eng_model_load(a.model, &opt, &m, &err) < 0 || eng_gen_config_load(a.model, eng_model_config(m), &g, &err) < 0 ||
        eng_tokenizer_load(a.model, &tok, &err) < 0 || build_prompt(tok, text, len, a.raw, &prompt, &n_prompt, &err) < 0)
        goto fail;
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] >= eng_model_config(m)->vocab_size) {
            eng_fail(&err, "prompt token %d is outside the model's vocabulary (%d)", prompt[i],
                     eng_model_config(m)->vocab_size);
            goto fail;
        }
    choose_sampling(&a, &g, &samp);
    if (eng_sampling_check(&samp, &err) < 0)
        goto fail;
    double load_s = now_s() - t0;
    if (generate(m, tok, &g, &samp, prompt, n_prompt, a.max_tokens, a.top_logprobs, !a.json, &o, &err) < 0)
        goto fail;
    if (a.json) {
        if (print_json(tok, &g, prompt, n_prompt, &o, load_s) < 0) {
            eng_fail(&err, "out of memory printing the result");
            goto fail;
        }
    } else {
        fprintf(stderr, "[%d prompt tokens, %.1f tok/s; %d generated, %.1f tok/s; finish: %s]\n", n_prompt,
                o.prefill_s > 0 ? n_prompt / o.prefill_s : 0, o.n,
                o.decode_s > 0 && o.n > 1 ? (o.n - 1) / o.decode_s : 0, o.finish_reason);
    }
    status = 0;
    goto done;
fail:
    fprintf(stderr, "tandem generate: %s\n", err.msg);
done:
    free(o.tokens);
    free(o.results);
    free(prompt);
    free(text);
    eng_model_free(m);
    eng_tokenizer_free(tok);
    return status;
}

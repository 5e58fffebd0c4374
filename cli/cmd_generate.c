/* cmd_generate.c: `tandem generate`, one prompt through the engine in this process.
 *
 * Loads the model, tokenizer and generation_config.json, turns the prompt into ids
 * (build_prompt: one user message through the model's chat template, or with --raw
 * the text as is), then runs the shared generation loop (cli_generate.h: chunked
 * prefill through the paged KV cache, one token at a time until an eos id or
 * --max-tokens). Text streams to stdout as it is generated; with --json one object
 * with ids, text, the parsed reasoning_content / content / tool_calls, logprobs and
 * timing is printed at the end instead. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/parser.h"
#include "cli_generate.h"
#include "cli_model.h"
#include "commands.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/file.h"
#include "model/model.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

typedef struct gen_args {
    const char *model, *kv_dtype, *matmul_dtype, *prompt, *prompt_file;
    int raw, no_think, json, max_tokens, top_logprobs, threads, mmap;
    cli_sampling_opts sampling;
} gen_args;

#define G gen_args
static const cli_opt OPTS[] = {
    CLI_STR_OPT(G, model, "--model", "DIR", NULL,
                "Hugging Face checkpoint folder (config.json, safetensors, tokenizer.json)", CLI_REQUIRED),
    CLI_STR_OPT(G, prompt, "--prompt", "TEXT", NULL, "the prompt", 0),
    CLI_STR_OPT(G, prompt_file, "--prompt-file", "F", NULL, "read the prompt from F ('-' for standard input)", 0),
    CLI_FLAG_OPT(G, raw, "--raw",
                 "feed the prompt as is (special tokens such as <|im_start|> recognised)\n"
                 "instead of as one user message through the chat template"),
    CLI_FLAG_OPT(G, no_think, "--no-think", "render the template with enable_thinking=false (no reasoning)"),
    CLI_INT_OPT(G, max_tokens, "--max-tokens", "N", 1, 1 << 20, "256", "stop after N generated tokens"),
    CLI_SAMPLING_OPTS(G, sampling),
    CLI_INT_OPT(G, top_logprobs, "--top-logprobs", "K", 0, ENG_MAX_TOP_LOGPROBS, "0",
                "alternatives per token in --json's logprobs"),
    CLI_INT_OPT(G, threads, "--threads", "N", 1, 4096, NULL, "compute threads; default: one per CPU"),
    CLI_KV_DTYPE_OPT(G, kv_dtype),
    CLI_MATMUL_DTYPE_OPT(G, matmul_dtype),
    CLI_MMAP_OPT(G, mmap),
    CLI_FLAG_OPT(G, json, "--json",
                 "print one JSON object: prompt_tokens, tokens, text, reasoning_content,\n"
                 "content, tool_calls (not with --raw), finish_reason, logprobs, timing"),
};
#undef G

static const cli_command CMD = {
    .name = "tandem generate",
    .usage = "--model DIR (--prompt TEXT | --prompt-file F) [options]",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
    .exactly_one = {"--prompt", "--prompt-file"},
};

/* The user's text as prompt ids. With raw, the text as is (special tokens written
 * in it recognised); otherwise one user message through the model's chat template
 * (add_generation_prompt on; enable_thinking=false with --no-think), as a chat
 * client would send it. *rendered gets the text the ids encode (NULL with raw). */
static int build_prompt(const cli_session *s, const char *text, size_t len, const gen_args *a, char **rendered,
                        int32_t **ids, int *n_ids, eng_error *err)
{
    *rendered = NULL;
    if (!a->raw) {
        if (memchr(text, 0, len))
            return eng_fail(err, "the prompt contains a NUL byte");
        cJSON *req = cJSON_CreateObject();
        cJSON *msgs = cJSON_AddArrayToObject(req, "messages");
        cJSON *user = cJSON_CreateObject();
        cJSON_AddItemToArray(msgs, user);
        cJSON_AddStringToObject(user, "role", "user");
        cJSON_AddStringToObject(user, "content", text);
        cJSON_AddBoolToObject(req, "add_generation_prompt", 1);
        if (a->no_think)
            cJSON_AddBoolToObject(cJSON_AddObjectToObject(req, "chat_template_kwargs"), "enable_thinking", 0);
        int rc = cJSON_GetObjectItem(user, "content") ? cli_render_prompt(s, req, rendered, ids, n_ids, err)
                                                      : eng_fail(err, "out of memory");
        cJSON_Delete(req);
        return rc;
    }
    if (eng_tokenize(s->tok, text, len, 1, ids, n_ids, err) < 0)
        return -1;
    if (*n_ids == 0) {
        free(*ids);
        *ids = NULL;
        return eng_fail(err, "the prompt is empty: give at least one token of text");
    }
    return 0;
}

static int stream_text(void *ctx, const char *text, size_t len)
{
    (void)ctx;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static cJSON *id_array(const int32_t *ids, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

/* With the chat template, the text parsed as a chat client gets it: reasoning_content
 * (when the prompt left the model thinking), content and tool_calls, null where empty. */
static int print_json(const cli_session *s, const int32_t *prompt, int n_prompt, const cli_gen_out *o, double load_s,
                      int parse, unsigned parse_flags)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "prompt_tokens", id_array(prompt, n_prompt));
    cJSON_AddItemToObject(root, "tokens", id_array(o->tokens, o->n));
    /* The text leaves out the stop token, as a chat client sees it. */
    int n_text = o->n - (o->n && eng_gen_config_is_eos(&s->gen, o->tokens[o->n - 1]));
    eng_buf text = {0};
    eng_detokenize(s->tok, o->tokens, n_text, 0, &text);
    cJSON_AddStringToObject(root, "text", text.data ? text.data : "");
    if (parse) {
        eng_parse_delta d;
        eng_parse_delta_init(&d);
        eng_error perr;
        cJSON *fields = NULL;
        if (eng_parse_text(text.data ? text.data : "", text.len, parse_flags, NULL, &d, &perr) == 0)
            fields = eng_parse_delta_to_json(&d);
        eng_parse_delta_free(&d);
        if (!fields) {
            eng_buf_free(&text);
            cJSON_Delete(root);
            return -1;
        }
        const char *names[] = {"reasoning_content", "content", "tool_calls"};
        for (int i = 0; i < 3; i++) {
            cJSON *f = cJSON_DetachItemFromObjectCaseSensitive(fields, names[i]);
            cJSON_AddItemToObject(root, names[i], f ? f : cJSON_CreateNull());
        }
        cJSON_Delete(fields);
    }
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
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!out)
        return -1;
    puts(out);
    free(out);
    return 0;
}

int cmd_generate(int argc, char **argv)
{
    gen_args a = {0};
    int exit_status = cli_parse(&CMD, argc, argv, &a);
    if (exit_status != CLI_RUN)
        return exit_status;
    eng_error err = {{0}};
    cli_session s = {0};
    char *text = NULL, *rendered = NULL;
    int32_t *prompt = NULL;
    int n_prompt = 0, status = 1;
    cli_gen_out o = {0};
    eng_sampling samp;

    double t0 = eng_now_s();
    size_t len = 0;
    if (a.prompt) {
        len = strlen(a.prompt);
        text = strdup(a.prompt);
    } else {
        text = eng_read_file(a.prompt_file, &len, &err);
    }
    if (!text)
        goto fail;
    if (cli_session_open(&s, a.model,
                         &(eng_model_options){.n_threads = a.threads,
                                              .matmul_dtype = cli_matmul_dtype(a.matmul_dtype),
                                              .mmap_weights = a.mmap},
                         cli_kv_dtype(a.kv_dtype), !a.raw, &err) < 0 ||
        build_prompt(&s, text, len, &a, &rendered, &prompt, &n_prompt, &err) < 0)
        goto fail;
    cli_choose_sampling(&a.sampling, &s.gen, &samp);
    if (eng_sampling_check(&samp, &err) < 0)
        goto fail;
    double load_s = eng_now_s() - t0;
    if (cli_session_generate(&s, &samp, prompt, n_prompt, a.max_tokens, a.top_logprobs, a.json ? NULL : stream_text,
                             NULL, &o, &err) < 0)
        goto fail;
    if (a.json) {
        if (print_json(&s, prompt, n_prompt, &o, load_s, !a.raw, a.raw ? 0 : cli_parse_flags(&s, rendered)) < 0) {
            eng_fail(&err, "out of memory printing the result");
            goto fail;
        }
    } else {
        fputs("\n", stdout);
        fflush(stdout);
        fprintf(stderr, "[%d prompt tokens, %.1f tok/s; %d generated, %.1f tok/s; finish: %s]\n", n_prompt,
                o.prefill_s > 0 ? n_prompt / o.prefill_s : 0, o.n,
                o.decode_s > 0 && o.n > 1 ? (o.n - 1) / o.decode_s : 0, o.finish_reason);
    }
    status = 0;
    goto done;
fail:
    fprintf(stderr, "tandem generate: %s\n", err.msg);
done:
    cli_gen_out_free(&o);
    free(prompt);
    free(rendered);
    free(text);
    cli_session_close(&s);
    return status;
}

/* cli_generate.c: the generation loop of `tandem generate` and `tandem chat` (see cli_generate.h).
 *
 * One sequence, one KV pool sized to what the calls so far needed (grown, and the
 * cache dropped, when a longer conversation comes), prefill in chunks that bound the
 * activation memory, then one token per step. Between calls the cache is kept and
 * rewound to the longest prefix the new prompt shares with it: a chat turn whose
 * prompt extends the last one prefills only its new tokens, and a prompt that differs
 * (Qwen3's template drops the reasoning of earlier turns) re-prefills from where it
 * differs. Rewinding is just lowering seq.n_past: positions past it are rewritten
 * before attention reads them. */
#include "cli_generate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/parser.h"
#include "common/clock.h"
#include "model/config.h"

#define PREFILL_CHUNK 512 /* tokens per prefill step: bounds activation memory */
#define KV_BLOCK 16
#define KV_MIN_TOKENS 1024 /* the smallest pool: a few chat turns before the first growth */

void cli_choose_sampling(const cli_sampling_opts *a, const eng_gen_config *g, eng_sampling *s)
{
    eng_sampling_from_gen_config(g, s);
    if (a->have_temperature)
        s->temperature = a->temperature;
    if (a->have_top_k)
        s->top_k = a->top_k;
    if (a->have_top_p)
        s->top_p = a->top_p;
    if (a->have_min_p)
        s->min_p = a->min_p;
    s->seed = a->have_seed ? a->seed : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
}

int cli_session_open(cli_session *s, const char *model_dir, const eng_model_options *mo, eng_dtype kv_dtype,
                     int want_template, eng_error *err)
{
    memset(s, 0, sizeof *s);
    s->kv_dtype = kv_dtype;
    if (eng_model_load(model_dir, mo, &s->model, err) < 0 ||
        eng_gen_config_load(model_dir, eng_model_config(s->model), &s->gen, err) < 0 ||
        eng_tokenizer_load(model_dir, &s->tok, err) < 0 ||
        (want_template && eng_chat_template_load(model_dir, &s->tmpl, err) < 0)) {
        cli_session_close(s);
        return -1;
    }
    const eng_config *c = eng_model_config(s->model);
    s->context = c->max_position_embeddings > 0 ? c->max_position_embeddings : 1 << 30;
    s->logits = malloc((size_t)c->vocab_size * sizeof(float));
    if (!s->logits) {
        cli_session_close(s);
        return eng_fail(err, "out of memory");
    }
    return 0;
}

static void drop_cache(cli_session *s)
{
    if (s->kv)
        eng_seq_release(s->kv, &s->seq);
    eng_kv_pool_destroy(s->kv);
    s->kv = NULL;
    s->kv_tokens = 0;
}

void cli_session_close(cli_session *s)
{
    drop_cache(s);
    free(s->seq.blocks);
    free(s->cached);
    free(s->logits);
    eng_chat_template_free(s->tmpl);
    eng_tokenizer_free(s->tok);
    eng_model_free(s->model);
    memset(s, 0, sizeof *s);
}

int cli_render_prompt(const cli_session *s, const cJSON *request, char **text, int32_t **ids, int *n_ids,
                      eng_error *err)
{
    *text = NULL;
    *ids = NULL;
    *n_ids = 0;
    if (!s->tmpl)
        return eng_fail(err, "no chat template loaded");
    if (eng_chat_template_render(s->tmpl, request, text, err) < 0)
        return -1;
    if (eng_tokenize(s->tok, *text, strlen(*text), 1, ids, n_ids, err) < 0) {
        free(*text);
        *text = NULL;
        return -1;
    }
    if (*n_ids == 0) {
        free(*text);
        free(*ids);
        *text = NULL;
        *ids = NULL;
        return eng_fail(err, "the chat template rendered an empty prompt");
    }
    return 0;
}

unsigned cli_parse_flags(const cli_session *s, const char *prompt)
{
    unsigned flags = ENG_PARSE_TOOLS;
    if (eng_token_id(s->tok, "<think>") >= 0)
        flags |= ENG_PARSE_REASONING | (eng_prompt_opens_think(prompt) ? ENG_PARSE_THINK_OPEN : 0);
    return flags;
}

void cli_gen_out_free(cli_gen_out *o)
{
    free(o->tokens);
    free(o->results);
    memset(o, 0, sizeof *o);
}

/* Room in the pool for `need` tokens; a new, larger pool loses the cache. */
static int ensure_pool(cli_session *s, int need, eng_error *err)
{
    if (need <= s->kv_tokens)
        return 0;
    drop_cache(s);
    long long want = (long long)s->kv_tokens * 2;
    if (want < need)
        want = need;
    if (want < KV_MIN_TOKENS)
        want = KV_MIN_TOKENS;
    if (want > s->context)
        want = s->context > need ? s->context : need;
    int blocks = (int)((want + KV_BLOCK - 1) / KV_BLOCK);
    eng_kv_layout layout = eng_model_kv_layout(s->model, KV_BLOCK, s->kv_dtype);
    if (eng_kv_pool_create(&layout, blocks, &s->kv, err) < 0)
        return -1;
    s->kv_tokens = blocks * KV_BLOCK;
    memset(&s->seq, 0, sizeof s->seq);
    return 0;
}

/* Runs tokens through the model at the end of the cache and records them as cached. */
static int forward(cli_session *s, const int32_t *tokens, int n, float *logits, eng_error *err)
{
    eng_batch_item it = {.seq = &s->seq, .tokens = tokens, .n_tokens = n, .logits = logits};
    if (eng_forward(s->model, s->kv, &it, 1, NULL, NULL, err) < 0)
        return -1;
    memcpy(s->cached + s->seq.n_past - n, tokens, (size_t)n * sizeof *tokens);
    return 0;
}

int cli_session_generate(cli_session *s, const eng_sampling *samp, const int32_t *prompt, int n_prompt, int max_tokens,
                         int top_logprobs, cli_text_fn on_text, void *ctx, cli_gen_out *o, eng_error *err)
{
    memset(o, 0, sizeof *o);
    int V = eng_model_config(s->model)->vocab_size;
    if (n_prompt < 1)
        return eng_fail(err, "the prompt is empty: give at least one token of text");
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= V)
            return eng_fail(err, "prompt token %d is outside the model's vocabulary (%d)", prompt[i], V);
    if (n_prompt >= s->context)
        return eng_fail(err, "the prompt (%d tokens) does not fit the model's context (%d)", n_prompt, s->context);
    if (max_tokens > s->context - n_prompt)
        max_tokens = s->context - n_prompt;
    int need = n_prompt + max_tokens;
    if (need > s->cap_cached) {
        int32_t *c = realloc(s->cached, (size_t)need * sizeof *c);
        if (!c)
            return eng_fail(err, "out of memory");
        s->cached = c;
        s->cap_cached = need;
    }
    o->tokens = malloc((size_t)max_tokens * sizeof *o->tokens);
    o->results = malloc((size_t)max_tokens * sizeof *o->results);
    if (!o->tokens || !o->results) {
        cli_gen_out_free(o);
        return eng_fail(err, "out of memory");
    }
    if (ensure_pool(s, need, err) < 0)
        goto fail;

    /* Keep the shared prefix, but at least the last prompt token must run to give logits. */
    int keep = 0;
    while (keep < s->seq.n_past && keep < n_prompt - 1 && s->cached[keep] == prompt[keep])
        keep++;
    s->seq.n_past = keep;
    o->n_reused = keep;
    if (eng_seq_reserve(s->kv, &s->seq, need, err) < 0)
        goto fail;

    double t0 = eng_now_s();
    for (int done = keep; done < n_prompt;) {
        int n = n_prompt - done < PREFILL_CHUNK ? n_prompt - done : PREFILL_CHUNK;
        if (forward(s, prompt + done, n, done + n == n_prompt ? s->logits : NULL, err) < 0)
            goto fail;
        done += n;
    }
    double t1 = eng_now_s();
    o->prefill_s = t1 - t0;
    o->finish_reason = "length";
    eng_detok detok = {0};
    eng_buf text = {0};
    for (;;) {
        eng_sample_result *r = &o->results[o->n];
        if (eng_sample(samp, s->logits, V, prompt, n_prompt, o->tokens, o->n, top_logprobs, r) < 0) {
            eng_buf_free(&text);
            eng_fail(err, "sampler rejected its parameters");
            goto fail;
        }
        o->tokens[o->n++] = r->id;
        if (eng_gen_config_is_eos(&s->gen, r->id)) {
            o->finish_reason = "stop";
            break;
        }
        if (on_text) {
            eng_buf_clear(&text);
            eng_detok_push(s->tok, &detok, r->id, 0, &text);
            if (text.len && on_text(ctx, text.data, text.len)) {
                o->finish_reason = "cancelled";
                break;
            }
        }
        if (o->n == max_tokens)
            break;
        if (forward(s, &r->id, 1, s->logits, err) < 0) {
            eng_buf_free(&text);
            goto fail;
        }
    }
    o->decode_s = eng_now_s() - t1;
    if (on_text) {
        eng_buf_clear(&text);
        eng_detok_flush(&detok, &text);
        if (text.len)
            (void)on_text(ctx, text.data, text.len); /* the end anyway */
    }
    eng_buf_free(&text);
    return 0;
fail:
    /* What the cache holds is no longer known to match s->cached: start afresh next time. */
    drop_cache(s);
    cli_gen_out_free(o);
    return -1;
}

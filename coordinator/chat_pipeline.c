/* chat_pipeline.c: requests in text, tokens to the backend, text back (see chat_pipeline.h).
 *
 * Per request, the sampled tokens flow through four stages, each owning one job:
 *   detokenizer (eng_detok: whole UTF-8 characters only)
 *   -> stop strings (coord_stop: cut before a stop, hold back possible starts)
 *   -> reasoning/tool parser (eng_parser, chat only)
 *   -> one coord_delta per token to the HTTP sink.
 * Stop strings apply to the raw generated text before parsing, as in vLLM, so a
 * stop string inside the reasoning ends the response too. EOS tokens end the
 * output without adding text; they count as completion tokens (as in vLLM).
 * Tool-call blocks become tool_calls only when the request offered tools (see
 * parse_flags). A response that made tool calls and then stopped finishes with
 * "tool_calls", as OpenAI reports it.
 *
 * Call life cycle: the pipeline call holds the backend call; the HTTP layer's
 * release() is the last event, so the backend call is released there too. */
#include "chat_pipeline.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "chat/parser.h"
#include "openai.h"

struct coord_pipeline {
    coord_pipeline_config cfg;
    int32_t *eos;
};

struct coord_call {
    coord_pipeline *p;
    const coord_request *req;
    coord_sink sink;
    coord_backend_call *bcall;
    int n_prompt;
    int n_completion;
    int eos_seen;
    int stop_hit;
    int n_tool_calls;
    eng_detok detok;
    coord_stop stop;
    eng_parser *parser; /* chat only */
    eng_buf piece;      /* detokenized text of this token */
    eng_buf released;   /* text past the stop-string matcher */
    eng_parse_delta parsed;
};

int coord_pipeline_new(const coord_pipeline_config *cfg, coord_pipeline **out, eng_error *err)
{
    *out = NULL;
    if (!cfg->tok)
        return eng_fail(err, "pipeline: no tokenizer");
    if (!cfg->backend.submit || !cfg->backend.cancel || !cfg->backend.release)
        return eng_fail(err, "pipeline: the backend must provide submit, cancel and release");
    if (cfg->context_len < 2)
        return eng_fail(err, "pipeline: context length %d is too small", cfg->context_len);
    coord_pipeline *p = calloc(1, sizeof *p);
    if (!p)
        return eng_fail(err, "pipeline: out of memory");
    p->cfg = *cfg;
    if (cfg->n_eos > 0) {
        p->eos = malloc(sizeof(int32_t) * (size_t)cfg->n_eos);
        if (!p->eos) {
            free(p);
            return eng_fail(err, "pipeline: out of memory");
        }
        memcpy(p->eos, cfg->eos_ids, sizeof(int32_t) * (size_t)cfg->n_eos);
        p->cfg.eos_ids = p->eos;
    }
    *out = p;
    return 0;
}

void coord_pipeline_free(coord_pipeline *p)
{
    if (!p)
        return;
    free(p->eos);
    free(p);
}

static int is_eos(const coord_pipeline *p, int32_t id)
{
    for (int i = 0; i < p->cfg.n_eos; i++)
        if (p->cfg.eos_ids[i] == id)
            return 1;
    return 0;
}

/* What the output parser looks for: reasoning when the model has a think block (the
 * prompt may already have opened it), and tool calls only when the request offered
 * tools, as vLLM does: otherwise <tool_call> text stays in the content for agents that
 * parse it themselves (Qwen-Agent's default protocol writes the tools into the system
 * message and reads the calls from the content). */
static unsigned parse_flags(const coord_pipeline *p, const coord_request *req, const char *prompt)
{
    unsigned flags = 0;
    if (p->cfg.reasoning)
        flags |= ENG_PARSE_REASONING | (eng_prompt_opens_think(prompt) ? ENG_PARSE_THINK_OPEN : 0);
    if (req->tools && !req->tool_choice_none)
        flags |= ENG_PARSE_TOOLS;
    return flags;
}

/* The chat prompt: the template over messages, tools (unless tool_choice is
 * "none") and chat_template_kwargs; add_generation_prompt defaults to true. */
static int render_chat(const coord_pipeline *p, const coord_request *req, char **prompt, coord_error *err)
{
    if (!p->cfg.tmpl)
        return coord_fail(err, 400, "invalid_request_error", "messages", NULL,
                          "this model has no chat template; use /v1/completions");
    cJSON *view = cJSON_CreateObject();
    if (!view)
        return coord_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    /* References, not copies: the body stays owned by the request. */
    cJSON_AddItemReferenceToObject(view, "messages", (cJSON *)req->messages);
    if (req->tools && !req->tool_choice_none)
        cJSON_AddItemReferenceToObject(view, "tools", (cJSON *)req->tools);
    if (req->chat_template_kwargs)
        cJSON_AddItemReferenceToObject(view, "chat_template_kwargs", (cJSON *)req->chat_template_kwargs);
    const cJSON *agp = cJSON_GetObjectItemCaseSensitive(req->body, "add_generation_prompt");
    if (cJSON_IsBool(agp))
        cJSON_AddItemReferenceToObject(view, "add_generation_prompt", (cJSON *)agp);
    eng_error e;
    int rc = eng_chat_template_render(p->cfg.tmpl, view, prompt, &e);
    cJSON_Delete(view);
    if (rc)
        return coord_fail(err, 400, "invalid_request_error", "messages", NULL, "%s", e.msg);
    return 0;
}

static void call_free(coord_call *c)
{
    coord_stop_free(&c->stop);
    eng_parser_free(c->parser);
    eng_buf_free(&c->piece);
    eng_buf_free(&c->released);
    eng_parse_delta_free(&c->parsed);
    free(c);
}

/* Sends whatever the stages produced for this step as one delta. */
static void emit(coord_call *c, const char *text, size_t len, const coord_logprob *lp, int n_tokens, int final)
{
    eng_parse_delta_clear(&c->parsed);
    const char *content = text;
    size_t content_len = len;
    cJSON *calls = NULL;
    if (c->parser) {
        eng_error e;
        if (len)
            eng_parser_feed(c->parser, text, len, &c->parsed, &e);
        if (final)
            eng_parser_finish(c->parser, &c->parsed, &e);
        content = c->parsed.content.data;
        content_len = c->parsed.content.len;
        if (c->parsed.n_calls > 0) {
            calls = cJSON_CreateArray();
            for (int i = 0; calls && i < c->parsed.n_calls; i++)
                cJSON_AddItemToArray(calls, eng_tool_call_to_json(&c->parsed.calls[i], 1));
            c->n_tool_calls += c->parsed.n_calls;
        }
    }
    coord_delta d = {
        .content = content,
        .content_len = content_len,
        .reasoning = c->parsed.reasoning.data,
        .reasoning_len = c->parsed.reasoning.len,
        .tool_calls = calls,
        .logprobs = lp,
        .n_logprobs = lp ? 1 : 0,
        .n_tokens = n_tokens,
    };
    if (n_tokens || d.content_len || d.reasoning_len || calls)
        c->sink.on_delta(c->sink.ctx, &d);
    cJSON_Delete(calls);
}

static void fill_logprob(const coord_call *c, const eng_sample_result *t, coord_logprob *lp)
{
    const eng_tokenizer *tok = c->p->cfg.tok;
    memset(lp, 0, sizeof *lp);
    lp->token = eng_token_bytes(tok, t->id, &lp->len);
    if (!lp->token) {
        lp->token = "";
        lp->len = 0;
    }
    lp->logprob = t->logprob;
    int n = t->n_top < c->req->top_logprobs ? t->n_top : c->req->top_logprobs;
    for (int i = 0; i < n; i++) {
        lp->top[i].token = eng_token_bytes(tok, t->top[i].id, &lp->top[i].len);
        if (!lp->top[i].token) {
            lp->top[i].token = "";
            lp->top[i].len = 0;
        }
        lp->top[i].logprob = t->top[i].logprob;
    }
    lp->n_top = n;
}

static int on_token(void *ctx, const eng_sample_result *t)
{
    coord_call *c = ctx;
    if (c->stop_hit || c->eos_seen)
        return 1; /* already over; a late token in flight */
    c->n_completion++;
    coord_logprob lp;
    if (c->req->logprobs)
        fill_logprob(c, t, &lp);
    eng_buf_clear(&c->piece);
    eng_buf_clear(&c->released);
    if (is_eos(c->p, t->id)) {
        c->eos_seen = 1;
    } else {
        eng_detok_push(c->p->cfg.tok, &c->detok, t->id, 1, &c->piece);
        if (coord_stop_push(&c->stop, c->piece.data ? c->piece.data : "", c->piece.len, &c->released) == 1)
            c->stop_hit = 1;
    }
    emit(c, c->released.data, c->released.len, c->req->logprobs ? &lp : NULL, 1, 0);
    return c->stop_hit || c->eos_seen;
}

static void on_done(void *ctx, coord_finish finish, const coord_error *err)
{
    coord_call *c = ctx;
    /* Release what the detokenizer and the stop matcher still hold. */
    eng_buf_clear(&c->piece);
    eng_buf_clear(&c->released);
    if (!c->stop_hit && finish != COORD_FINISH_ERROR) {
        eng_detok_flush(&c->detok, &c->piece);
        if (coord_stop_push(&c->stop, c->piece.data ? c->piece.data : "", c->piece.len, &c->released) == 1)
            c->stop_hit = 1;
        else
            coord_stop_finish(&c->stop, &c->released);
    }
    if (finish != COORD_FINISH_ERROR)
        emit(c, c->released.data, c->released.len, NULL, 0, 1);

    if (c->stop_hit || c->eos_seen)
        finish = COORD_FINISH_STOP; /* our own stop request ends the backend call as cancelled */
    if (finish == COORD_FINISH_STOP && c->n_tool_calls > 0)
        finish = COORD_FINISH_TOOL_CALLS;
    coord_usage usage = {c->n_prompt, c->n_completion};
    c->sink.on_done(c->sink.ctx, finish, &usage, finish == COORD_FINISH_ERROR ? err : NULL);
}

static int prompt_tokens(const coord_pipeline *p, const coord_request *req, int32_t **ids, int *n, char **text_out,
                         coord_error *err)
{
    eng_error e;
    if (req->api == COORD_API_COMPLETIONS && req->prompt_ids) {
        int vocab = eng_tokenizer_vocab_size(p->cfg.tok);
        for (int i = 0; i < req->n_prompt_ids; i++)
            if (req->prompt_ids[i] >= vocab)
                return coord_fail(err, 400, "invalid_request_error", "prompt", NULL,
                                  "prompt[%d] = %d is not a token id (the vocabulary has %d)", i,
                                  (int)req->prompt_ids[i], vocab);
        *ids = malloc(sizeof(int32_t) * (size_t)req->n_prompt_ids);
        if (!*ids)
            return coord_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        memcpy(*ids, req->prompt_ids, sizeof(int32_t) * (size_t)req->n_prompt_ids);
        *n = req->n_prompt_ids;
        return 0;
    }
    char *text = NULL;
    if (req->api == COORD_API_CHAT) {
        if (render_chat(p, req, &text, err))
            return -1;
    } else if (!(text = strdup(req->prompt_text ? req->prompt_text : ""))) {
        return coord_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    }
    /* Special tokens written in the text are recognised, as Hugging Face does. */
    if (eng_tokenize(p->cfg.tok, text, strlen(text), 1, ids, n, &e)) {
        free(text);
        return coord_fail(err, 400, "invalid_request_error", req->api == COORD_API_CHAT ? "messages" : "prompt", NULL,
                          "%s", e.msg);
    }
    *text_out = text;
    return 0;
}

static int pipeline_submit(void *self, const coord_request *req, const coord_sink *sink, coord_call **out,
                           coord_error *err)
{
    coord_pipeline *p = self;
    *out = NULL;
    int32_t *ids = NULL;
    int n = 0;
    char *prompt = NULL;
    if (prompt_tokens(p, req, &ids, &n, &prompt, err))
        return -1;
    const char *param = req->api == COORD_API_CHAT ? "messages" : "prompt";
    if (n == 0) {
        free(ids);
        free(prompt);
        return coord_fail(err, 400, "invalid_request_error", param, NULL, "the prompt is empty");
    }
    int ctx = p->cfg.context_len;
    if (n >= ctx || (req->max_tokens > 0 && req->max_tokens > ctx - n)) { /* no int overflow: n < ctx */
        free(ids);
        free(prompt);
        if (n >= ctx)
            return coord_fail(err, 400, "invalid_request_error", param, "context_length_exceeded",
                              "This model's maximum context length is %d tokens. However, your prompt has %d "
                              "tokens, leaving no room for the answer.",
                              ctx, n);
        return coord_fail(err, 400, "invalid_request_error", "max_tokens", "context_length_exceeded",
                          "This model's maximum context length is %d tokens. However, you requested %lld tokens "
                          "(%d in the prompt, %d for the completion).",
                          ctx, (long long)n + req->max_tokens, n, req->max_tokens);
    }

    coord_call *c = calloc(1, sizeof *c);
    if (!c) {
        free(ids);
        free(prompt);
        return coord_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    }
    c->p = p;
    c->req = req;
    c->sink = *sink;
    c->n_prompt = n;
    coord_stop_init(&c->stop, (const char *const *)req->stop, req->n_stop);
    eng_parse_delta_init(&c->parsed);
    if (req->api == COORD_API_CHAT) {
        eng_error e;
        c->parser = eng_parser_new(parse_flags(p, req, prompt), req->id, &e);
        if (!c->parser) {
            free(ids);
            free(prompt);
            call_free(c);
            return coord_fail(err, 500, "server_error", NULL, NULL, "%s", e.msg);
        }
    }
    free(prompt);

    if (req->max_tokens == 0) {
        /* Nothing to generate: answer at once, as OpenAI does for max_tokens 0. */
        free(ids);
        *out = c;
        coord_usage usage = {n, 0};
        c->sink.on_done(c->sink.ctx, COORD_FINISH_LENGTH, &usage, NULL);
        return 0;
    }

    coord_gen_request g = {
        .request_id = req->id,
        .prompt = ids,
        .n_prompt = n,
        .sampling = req->sampling,
        .max_tokens = req->max_tokens > 0 ? req->max_tokens : ctx - n,
        .stop_ids = p->cfg.eos_ids,
        .n_stop_ids = p->cfg.n_eos,
        .n_top_logprobs = req->logprobs ? req->top_logprobs : 0,
    };
    if (!req->has_seed && getrandom(&g.sampling.seed, sizeof g.sampling.seed, 0) != (ssize_t)sizeof g.sampling.seed)
        g.sampling.seed = (uint64_t)(uintptr_t)c ^ 0x9E3779B97F4A7C15ull;
    coord_token_sink ts = {.ctx = c, .on_token = on_token, .on_done = on_done};
    *out = c; /* callbacks may come before submit returns */
    int rc = p->cfg.backend.submit(p->cfg.backend.self, &g, &ts, &c->bcall, err);
    free(ids);
    if (rc) {
        *out = NULL;
        call_free(c);
        return -1;
    }
    return 0;
}

static void pipeline_cancel(void *self, coord_call *c)
{
    coord_pipeline *p = self;
    if (c && c->bcall)
        p->cfg.backend.cancel(p->cfg.backend.self, c->bcall);
}

static void pipeline_release(void *self, coord_call *c)
{
    coord_pipeline *p = self;
    if (!c)
        return;
    if (c->bcall)
        p->cfg.backend.release(p->cfg.backend.self, c->bcall);
    call_free(c);
}

static int pipeline_ready(void *self)
{
    coord_pipeline *p = self;
    return !p->cfg.backend.ready || p->cfg.backend.ready(p->cfg.backend.self);
}

coord_frontend coord_pipeline_frontend(coord_pipeline *p)
{
    coord_frontend f = {
        .self = p,
        .submit = pipeline_submit,
        .cancel = pipeline_cancel,
        .release = pipeline_release,
        .ready = pipeline_ready,
    };
    return f;
}

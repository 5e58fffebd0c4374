/* frontend.h: the text-level interface the HTTP layer talks to.
 *
 * http.c parses and validates an OpenAI request (openai.h) into a coord_request
 * and hands it to a coord_frontend; the frontend answers with text deltas
 * (content, reasoning_content, tool calls, logprobs) and one final event. The
 * product's frontend is the chat pipeline (chat_pipeline.h: template, tokenizer,
 * stop strings, reasoning/tool parsers over a token-level coord_backend); tests can
 * plug in their own. The call life cycle is the one described in backend.h:
 * submit, on_delta*, on_done once, cancel any time before release, release once
 * after on_done. The request stays valid until release(). */
#ifndef COORD_FRONTEND_H
#define COORD_FRONTEND_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "backend.h"
#include "sampling/sampler.h"

#define COORD_MAX_STOP 4

typedef enum coord_api { COORD_API_CHAT, COORD_API_COMPLETIONS } coord_api;

/* A validated request (openai.h fills it; coord_request_free releases it). */
typedef struct coord_request {
    coord_api api;
    char id[48];     /* "chatcmpl-<hex>" or "cmpl-<hex>" */
    int64_t created; /* unix seconds */
    char *model;
    cJSON *body; /* the parsed body; the cJSON pointers below point into it */
    /* chat */
    const cJSON *messages;             /* array, non-empty */
    const cJSON *tools;                /* array or NULL */
    int tool_choice_none;              /* tool_choice "none": tools are not offered */
    const cJSON *chat_template_kwargs; /* object or NULL */
    /* completions: exactly one of prompt_text / prompt_ids */
    char *prompt_text;
    int32_t *prompt_ids;
    int n_prompt_ids;
    /* generation */
    eng_sampling sampling; /* defaults from generation_config, overridden by the body */
    int has_seed;          /* 0: the frontend picks one */
    int max_tokens;        /* -1: up to the end of the context */
    char *stop[COORD_MAX_STOP];
    int n_stop;
    int logprobs;     /* return logprobs */
    int top_logprobs; /* alternatives per token, 0..20 */
    int stream;
    int include_usage; /* stream_options.include_usage */
} coord_request;

/* One generated token's logprobs, as text. token/len are the token's raw bytes. */
typedef struct coord_top_logprob {
    const char *token;
    size_t len;
    float logprob;
} coord_top_logprob;

typedef struct coord_logprob {
    const char *token;
    size_t len;
    float logprob;
    int n_top;
    coord_top_logprob top[ENG_MAX_TOP_LOGPROBS];
} coord_logprob;

/* A piece of output. Any field may be empty; n_tokens counts the generated tokens
 * this delta accounts for (for inter-token latency). */
typedef struct coord_delta {
    const char *content;
    size_t content_len;
    const char *reasoning;
    size_t reasoning_len;
    const cJSON *tool_calls; /* NULL or an array of complete OpenAI tool_call objects
                                {index, id, type, function{name, arguments}}; index
                                counts the response's calls from 0 */
    const coord_logprob *logprobs;
    int n_logprobs;
    int n_tokens;
} coord_delta;

typedef struct coord_usage {
    int prompt_tokens;
    int completion_tokens;
} coord_usage;

typedef struct coord_sink {
    void *ctx;
    void (*on_delta)(void *ctx, const coord_delta *d);
    /* finish: STOP, LENGTH, TOOL_CALLS, CANCELLED or ERROR (then err is set). */
    void (*on_done)(void *ctx, coord_finish finish, const coord_usage *usage, const coord_error *err);
} coord_sink;

typedef struct coord_call coord_call;

typedef struct coord_frontend {
    void *self;
    int (*submit)(void *self, const coord_request *req, const coord_sink *sink, coord_call **out, coord_error *err);
    void (*cancel)(void *self, coord_call *call);
    void (*release)(void *self, coord_call *call);
    int (*ready)(void *self); /* 1: can serve now (GET /health) */
} coord_frontend;

#endif

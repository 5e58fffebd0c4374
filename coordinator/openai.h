/* openai.h: the OpenAI API's wire format, without any networking.
 *
 * Parses and validates request bodies of /v1/chat/completions and
 * /v1/completions into a coord_request (every rule in one place, each failure
 * a coord_error naming the parameter, as OpenAI and vLLM answer), and formats
 * responses, streaming chunks, model lists and error bodies. Also holds the stop
 * string matcher, since "cut before the stop string, hold back what might start
 * one" is part of the API's contract. */
#ifndef COORD_OPENAI_H
#define COORD_OPENAI_H

#include <stddef.h>

#include "common/buf.h"
#include "frontend.h"

typedef struct coord_api_config {
    const char *const *models; /* served model names (>= 1) */
    int n_models;
    eng_sampling defaults; /* from generation_config.json: used for unset parameters */
    /* request limits (docs/security.md); 0: the default below */
    size_t max_stop_bytes;
    int max_messages, max_tools;
} coord_api_config;

#define COORD_DEFAULT_MAX_STOP_BYTES 256
#define COORD_DEFAULT_MAX_MESSAGES 4096
#define COORD_DEFAULT_MAX_TOOLS 128

/* body/len is the raw request body (not necessarily NUL-terminated). Invalid UTF-8,
 * malformed JSON, wrong types and out-of-range values -> 400; unknown model -> 404.
 * On success req owns its memory (coord_request_free); on failure req is empty. */
int coord_parse_request(coord_api api, const char *body, size_t len, const coord_api_config *cfg, coord_request *req,
                        coord_error *err);
void coord_request_free(coord_request *req);

/* 1 when s[0..len) is valid UTF-8 (no overlongs, no surrogates). */
int coord_utf8_valid(const char *s, size_t len);

/* All formatters return a malloc'd NUL-terminated JSON string (compact), or NULL
 * when memory runs out. */
char *coord_format_error(const coord_error *e); /* {"error": {...}} */
char *coord_format_models(const coord_api_config *cfg, int64_t created);
/* One model object (GET /v1/models/{id}); NULL when id is not served. */
char *coord_format_model(const coord_api_config *cfg, const char *id, int64_t created);

/* Non-streaming: feed every delta to an accumulator, then format the response. */
typedef struct coord_accum {
    eng_buf content;
    eng_buf reasoning;
    cJSON *tool_calls;  /* array or NULL */
    cJSON *logprobs;    /* chat: content array; completions: {tokens, token_logprobs, ...} */
    size_t text_offset; /* completions: bytes of the tokens so far */
} coord_accum;

void coord_accum_init(coord_accum *a);
int coord_accum_add(coord_accum *a, const coord_request *req, const coord_delta *d);
void coord_accum_free(coord_accum *a);
char *coord_format_response(const coord_request *req, const coord_accum *a, coord_finish finish,
                            const coord_usage *usage);

/* Streaming: the JSON of one chunk (http.c wraps it as "data: ...\n\n").
 *   role chunk (chat only, first): delta {role: "assistant", content: ""}
 *   delta chunk: the delta's content/reasoning_content/tool_calls/logprobs
 *   finish chunk: empty delta and finish_reason
 *   usage chunk: choices [] and usage (stream_options.include_usage)
 * With include_usage every other chunk carries "usage": null, as OpenAI does.
 * text_offset (completions logprobs) is advanced by each token's bytes.
 * Each returns NULL for a delta with nothing to send, or when memory runs out. */
char *coord_format_role_chunk(const coord_request *req);
char *coord_format_delta_chunk(const coord_request *req, const coord_delta *d, size_t *text_offset);
char *coord_format_finish_chunk(const coord_request *req, coord_finish finish);
char *coord_format_usage_chunk(const coord_request *req, const coord_usage *usage);

/* Stop strings over a stream of text pieces. push() appends to out the text that
 * can no longer be part of a stop string and returns 1 once a stop string has
 * matched (out then ends just before it and further pushes add nothing), 0
 * otherwise, -1 when memory runs out. finish() releases what was held back. */
typedef struct coord_stop {
    const char *const *stops;
    int n_stops;
    eng_buf held;
    int matched;
} coord_stop;

void coord_stop_init(coord_stop *s, const char *const *stops, int n_stops);
int coord_stop_push(coord_stop *s, const char *text, size_t len, eng_buf *out);
int coord_stop_finish(coord_stop *s, eng_buf *out);
void coord_stop_free(coord_stop *s);

#endif

/* chat_pipeline.h: the coordinator's text layer between HTTP and the token backend.
 *
 * Implements coord_frontend (frontend.h) over a coord_backend (backend.h): renders
 * the model's chat template, tokenizes, checks the prompt against the context,
 * fills generation defaults, submits token ids, and turns the sampled tokens
 * back into text: streaming detokenization (never splitting a UTF-8 character),
 * stop strings (cut before the stop, held back while it might be starting),
 * reasoning_content / tool_calls (engine/chat/parser.h) and logprobs. */
#ifndef COORD_CHAT_PIPELINE_H
#define COORD_CHAT_PIPELINE_H

#include "chat/template.h"
#include "common/error.h"
#include "frontend.h"
#include "model/config.h"
#include "tokenizer/tokenizer.h"

typedef struct coord_pipeline_config {
    const eng_tokenizer *tok;      /* must outlive the pipeline */
    const eng_chat_template *tmpl; /* NULL: chat requests are refused with a 400 */
    coord_backend backend;
    int context_len;        /* max_position_embeddings */
    const int32_t *eos_ids; /* stop token ids (generation_config eos_token_id) */
    int n_eos;
    /* 1 when the model may write <think>...</think> reasoning (Qwen3 hybrid and
     * thinking models): a think block it opens, or the prompt opened, becomes
     * reasoning_content; output without one is content. */
    int reasoning;
} coord_pipeline_config;

typedef struct coord_pipeline coord_pipeline;

int coord_pipeline_new(const coord_pipeline_config *cfg, coord_pipeline **out, eng_error *err);
void coord_pipeline_free(coord_pipeline *p); /* after every call was released */
coord_frontend coord_pipeline_frontend(coord_pipeline *p);

#endif

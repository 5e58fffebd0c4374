/* backend.h: the token-level interface between the coordinator's front end and
 * whatever generates tokens (the router over gRPC workers, or an in-process engine).
 *
 * The front end (chat pipeline) has already rendered the template and tokenized;
 * a backend only sees prompt ids and sampling parameters and streams back sampled
 * tokens. Keeping this boundary small lets the router be written, replaced or
 * tested without touching HTTP, JSON or chat code.
 *
 * Life of a call:
 *   submit() -> 0: the backend owns the work; callbacks may start at once, on any
 *                  backend thread, but never two at the same time for one call.
 *   on_token() zero or more times, in order;
 *   on_done() exactly once, last (also after cancel(); then finish is CANCELLED
 *             unless the call had already finished).
 *   cancel() any time before release(); never blocks on callbacks; idempotent.
 *   release() exactly once, after on_done has been called (it may be called from
 *             inside on_done); the backend frees the call after both.
 * submit() -> -1: nothing was started, no callback will come, err says why
 * (503 when no worker can take it, 400 for a request the workers reject). */
#ifndef COORD_BACKEND_H
#define COORD_BACKEND_H

#include <stdint.h>

#include "sampling/sampler.h"

/* An error as the client will see it: HTTP status plus OpenAI's error object. */
typedef struct coord_error {
    int status;     /* 400, 404, 405, 413, 500, 503 */
    char type[48];  /* "invalid_request_error", "not_found_error", "server_error", ... */
    char param[64]; /* the offending parameter, "" for none (JSON null) */
    char code[64];  /* e.g. "model_not_found", "" for none (JSON null) */
    char message[512];
} coord_error;

/* Fills e (if not NULL) and returns -1. param/code may be NULL. */
int coord_fail(coord_error *e, int status, const char *type, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

typedef enum coord_finish {
    COORD_FINISH_STOP,       /* a stop token id (EOS) or a stop string */
    COORD_FINISH_LENGTH,     /* max_tokens or the context ran out */
    COORD_FINISH_TOOL_CALLS, /* stopped and the output held tool calls (front end only) */
    COORD_FINISH_CANCELLED,  /* cancel() or a sink asking to stop */
    COORD_FINISH_ERROR,      /* err says what */
} coord_finish;

/* OpenAI's finish_reason string; NULL for CANCELLED and ERROR. */
const char *coord_finish_name(coord_finish f);

typedef struct coord_gen_request {
    const char *request_id; /* for logs across processes */
    const int32_t *prompt;  /* valid during submit() only: copy it */
    int n_prompt;
    eng_sampling sampling;
    int max_tokens;          /* >= 1: tokens to generate at most */
    const int32_t *stop_ids; /* generation ends after one of these (EOS); it is delivered */
    int n_stop_ids;
    int n_top_logprobs; /* alternatives per token, 0..ENG_MAX_TOP_LOGPROBS */
} coord_gen_request;

typedef struct coord_token_sink {
    void *ctx;
    /* One sampled token with its logprob (always) and n_top alternatives. Return
     * 0 to go on, nonzero to stop the call (it then ends as if cancelled; the
     * caller knows why, e.g. a stop string matched). */
    int (*on_token)(void *ctx, const eng_sample_result *tok);
    /* err is set only for COORD_FINISH_ERROR. */
    void (*on_done)(void *ctx, coord_finish finish, const coord_error *err);
} coord_token_sink;

typedef struct coord_backend_call coord_backend_call;

typedef struct coord_backend {
    void *self;
    int (*submit)(void *self, const coord_gen_request *req, const coord_token_sink *sink, coord_backend_call **out,
                  coord_error *err);
    void (*cancel)(void *self, coord_backend_call *call);
    void (*release)(void *self, coord_backend_call *call);
    /* 1 when at least one worker can take requests now (GET /health). */
    int (*ready)(void *self);
} coord_backend;

#endif

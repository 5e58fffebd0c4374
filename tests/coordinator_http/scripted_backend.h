/* scripted_backend.h: a coord_backend (backend.h) for tests of the chat pipeline.
 *
 * Each call replays a list of token ids given by the test, one token at a time on a
 * thread of its own: every token has a logprob and the requested number of
 * alternatives; the call finishes "stop" once it sent the stop id, "length" at
 * max_tokens or the end of the list, "cancelled" on cancel or when the sink refuses a
 * token, and with an error after fail_after tokens. Test code only: never part of the
 * product. */
#ifndef TEST_SCRIPTED_BACKEND_H
#define TEST_SCRIPTED_BACKEND_H

#include <stdatomic.h>
#include <stdint.h>

#include "backend.h"

typedef struct scripted_replay {
    int32_t stop_id;    /* finish "stop" once this id is sent */
    float logprob0;     /* token i has logprob logprob0 - logprob_step * i, */
    float logprob_step; /* alternative k (k > 0) id 100 + k and that minus k */
    int fail_after;     /* > 0: an error ("worker lost") after this many tokens */
    int delay_us;       /* between tokens */
    atomic_int *n_sent; /* NULL, or counts the tokens handed to the sink */
} scripted_replay;

/* Starts a call replaying ids[0..n_ids) (malloc'd; the call takes them over, also on
 * failure) for req's max_tokens and top logprobs. 0, or -1 with err set. */
int scripted_backend_play(const scripted_replay *how, const coord_gen_request *req, const coord_token_sink *sink,
                          int32_t *ids, int n_ids, coord_backend_call **out, coord_error *err);

/* coord_backend's cancel and release for calls started by scripted_backend_play. */
void scripted_backend_cancel(void *self, coord_backend_call *call);
void scripted_backend_release(void *self, coord_backend_call *call);

#endif

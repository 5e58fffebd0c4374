/* scripted_frontend.h: a coord_frontend for tests of the HTTP layer.
 *
 * It produces deterministic words ("w0 w1 ...") on a thread per call, so that
 * only the HTTP layer is under test. The last message's content (chat) or the
 * prompt (completions) steers it:
 *   "reject"  -> submit fails with 503
 *   "fail"    -> one word, then an error event
 *   "forever" -> a word every 20 ms until cancelled
 *   "tool"    -> reasoning, then a tool call, finish tool_calls
 * otherwise max_tokens words (default 5), 1 ms apart, finish "length", each with
 * a logprob of -0.5 and one alternative. Test code only: never part of the product. */
#ifndef TEST_SCRIPTED_FRONTEND_H
#define TEST_SCRIPTED_FRONTEND_H

#include <stdatomic.h>

#include "frontend.h"

coord_frontend scripted_frontend(void);

extern atomic_int n_cancelled;  /* calls that saw a cancel */
extern atomic_int n_live_calls; /* calls not yet freed (submitted, not released or still running) */
extern atomic_int n_submitted;
extern atomic_int ready_flag; /* what ready() answers */

#endif

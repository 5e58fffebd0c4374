/* request_check.h: the checks every Decode.Generate and Prefill.Run request passes
 * before the worker takes it (service.c), as pure functions of the message, the model's
 * limits and the worker's KV layout, so that the fuzzer (fuzz/fuzz_rpc_messages.c) runs the very same
 * checks on arbitrary messages. */
#ifndef WRK_REQUEST_CHECK_H
#define WRK_REQUEST_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "model/kvcache.h"
#include "sampling/sampler.h"
#include "tandem.pb-c.h"

/* The prompt, the tokens a migrated request already generated and the sampling
 * parameters against a context of max_context tokens and a vocabulary of vocab_size.
 * Returns RPC_OK with the sampling in *s, or an rpc_code with the reason in msg. */
int wrk_check_request(int max_context, int vocab_size, const int32_t *prompt, size_t n_prompt, const int32_t *generated,
                      size_t n_generated, const Tandem__SamplingParams *sp, eng_sampling *s, char *msg, size_t cap);

/* A Prefill.Run's KV target against this prefill worker (its KV layout, its transport's
 * name) and a prompt of n_prompt tokens: the layout must match, there must be one block
 * per block_size tokens, each inside the target's pool, and the descriptor must be of
 * this worker's transport. Returns RPC_OK or an rpc_code with the reason in msg. */
int wrk_check_target(const eng_kv_layout *mine, const char *transport, const Tandem__KvTarget *t, int n_prompt,
                     char *msg, size_t cap);

#endif

/* request_check.c: see request_check.h. */
#include <stdio.h>

#include "request_check.h"
#include "rpc.h"

static int check_tokens(int vocab_size, const char *what, const int32_t *ids, size_t n, char *msg, size_t cap)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab_size)
            return snprintf(msg, cap, "%s token %d at %zu is outside the vocabulary (%d)", what, ids[i], i, vocab_size),
                   RPC_INVALID_ARGUMENT;
    return RPC_OK;
}

int wrk_check_request(int max_context, int vocab_size, const int32_t *prompt, size_t n_prompt, const int32_t *generated,
                      size_t n_generated, const Tandem__SamplingParams *sp, eng_sampling *s, char *msg, size_t cap)
{
    int code;
    if (n_prompt == 0)
        return snprintf(msg, cap, "the prompt is empty"), RPC_INVALID_ARGUMENT;
    if (n_prompt >= (size_t)max_context || n_generated >= (size_t)max_context - n_prompt)
        return snprintf(msg, cap, "the prompt has %zu tokens and %zu were generated; the context holds %d", n_prompt,
                        n_generated, max_context),
               RPC_INVALID_ARGUMENT;
    if ((code = check_tokens(vocab_size, "prompt", prompt, n_prompt, msg, cap)) != RPC_OK ||
        (code = check_tokens(vocab_size, "generated", generated, n_generated, msg, cap)) != RPC_OK)
        return code;
    if (!sp)
        return snprintf(msg, cap, "no sampling parameters"), RPC_INVALID_ARGUMENT;
    *s = (eng_sampling){.temperature = sp->temperature,
                        .top_k = sp->top_k,
                        .top_p = sp->top_p,
                        .min_p = sp->min_p,
                        .presence_penalty = sp->presence_penalty,
                        .frequency_penalty = sp->frequency_penalty,
                        .repetition_penalty = sp->repetition_penalty,
                        .seed = sp->seed};
    eng_error err;
    if (eng_sampling_check(s, &err) < 0)
        return snprintf(msg, cap, "%s", err.msg), RPC_INVALID_ARGUMENT;
    if (sp->max_tokens == 0)
        return snprintf(msg, cap, "max_tokens must be at least 1"), RPC_INVALID_ARGUMENT;
    if (sp->top_logprobs > ENG_MAX_TOP_LOGPROBS)
        return snprintf(msg, cap, "top_logprobs %u is above %d", sp->top_logprobs, ENG_MAX_TOP_LOGPROBS),
               RPC_INVALID_ARGUMENT;
    if (n_generated >= sp->max_tokens)
        return snprintf(msg, cap, "%zu tokens were generated already; max_tokens is %u", n_generated, sp->max_tokens),
               RPC_INVALID_ARGUMENT;
    return RPC_OK;
}

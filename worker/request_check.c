/* request_check.c: see request_check.h. */
#include <stdio.h>
#include <string.h>

#include "kv_layout_msg.h"
#include "kvtransfer.h"
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

int wrk_check_target(const eng_kv_layout *mine, const char *transport, const Tandem__KvTarget *t, int n_prompt,
                     char *msg, size_t cap)
{
    if (!t)
        return snprintf(msg, cap, "no KV target"), RPC_INVALID_ARGUMENT;
    eng_kv_layout theirs = kv_layout_from_msg(t->layout);
    if (!eng_kv_layout_equal(&theirs, mine)) {
        char a[96], b[96];
        eng_kv_layout_str(&theirs, a, sizeof a);
        eng_kv_layout_str(mine, b, sizeof b);
        return snprintf(msg, cap, "KV layout mismatch: target %s, this prefill worker %s", a, b), RPC_INVALID_ARGUMENT;
    }
    int need = (n_prompt + mine->block_size - 1) / mine->block_size;
    if (t->n_block_ids != (size_t)need)
        return snprintf(msg, cap, "the target has %zu blocks; a prompt of %d tokens needs %d", t->n_block_ids, n_prompt,
                        need),
               RPC_INVALID_ARGUMENT;
    if (t->pool_blocks == 0)
        return snprintf(msg, cap, "the target does not say its pool size (pool_blocks)"), RPC_INVALID_ARGUMENT;
    for (size_t i = 0; i < t->n_block_ids; i++)
        if (t->block_ids[i] < 0 || (uint32_t)t->block_ids[i] >= t->pool_blocks)
            return snprintf(msg, cap, "target block %d is outside its pool of %u", t->block_ids[i], t->pool_blocks),
                   RPC_INVALID_ARGUMENT;
    char name[32];
    eng_error err;
    if (kvt_descriptor_transport(t->descriptor.data, t->descriptor.len, name, sizeof name, &err) < 0)
        return snprintf(msg, cap, "bad KV descriptor: %s", err.msg), RPC_INVALID_ARGUMENT;
    if (strcmp(name, transport))
        return snprintf(msg, cap, "the target speaks %s; this prefill worker %s", name, transport),
               RPC_INVALID_ARGUMENT;
    if (t->transfer_secret.len != KVT_SECRET_BYTES)
        return snprintf(msg, cap, "the target's transfer secret has %zu bytes, not %d", t->transfer_secret.len,
                        KVT_SECRET_BYTES),
               RPC_INVALID_ARGUMENT;
    return RPC_OK;
}

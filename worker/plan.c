/* plan.c: the worker scheduler's pure decisions, kept apart from threads and sockets
 * so that the unit tests pin them down: which KV blocks are finished and may be
 * pushed, how they coalesce into transfer runs, how a step's token budget is split
 * between waiting prompts, when a sequence stops, whether a sequence is admitted, and
 * how big the pool is. */
#include <string.h>

#include "plan.h"
#include "worker.h"

const char *wrk_role_name(wrk_role r)
{
    switch (r) {
    case WRK_ROLE_PREFILL: return "prefill";
    case WRK_ROLE_DECODE: return "decode";
    case WRK_ROLE_BOTH: return "both";
    }
    return "unknown";
}

int wrk_role_parse(const char *s, wrk_role *out)
{
    if (!strcmp(s, "prefill"))
        *out = WRK_ROLE_PREFILL;
    else if (!strcmp(s, "decode"))
        *out = WRK_ROLE_DECODE;
    else if (!strcmp(s, "both"))
        *out = WRK_ROLE_BOTH;
    else
        return -1;
    return 0;
}

int wrk_block_runs(const int32_t *src, const int32_t *dst, int n, wrk_run *out)
{
    int runs = 0;
    for (int i = 0; i < n; i++) {
        wrk_run *r = runs ? &out[runs - 1] : NULL;
        if (r && src[i] == r->src + r->n && dst[i] == r->dst + r->n) {
            r->n++;
            continue;
        }
        out[runs++] = (wrk_run){.src = src[i], .dst = dst[i], .n = 1};
    }
    return runs;
}

int wrk_blocks_complete(int n_done, int n_prompt, int block_size)
{
    if (n_done >= n_prompt)
        return (n_prompt + block_size - 1) / block_size;
    return n_done / block_size;
}

int wrk_plan_chunks(const int *remaining, int n, int budget, int *chunk)
{
    int planned = 0;
    for (int i = 0; i < n; i++) {
        int left = budget - planned;
        chunk[i] = remaining[i] < left ? remaining[i] : left;
        if (chunk[i] < 0)
            chunk[i] = 0;
        planned += chunk[i];
    }
    return planned;
}

int wrk_cap_tokens(int n_prompt, int max_tokens, int max_context)
{
    long long cap = (long long)n_prompt + max_tokens;
    return cap < max_context ? (int)cap : max_context;
}

int wrk_finish_reason(int32_t token, const int32_t *stop_ids, int n_stop, int n_prompt, int n_generated, int cap_tokens)
{
    for (int i = 0; i < n_stop; i++)
        if (stop_ids[i] == token)
            return 1;
    return n_prompt + n_generated >= cap_tokens ? 2 : 0;
}

int wrk_admit_blocks(int n_prompt, int block_size)
{
    return (n_prompt + 1 + block_size - 1) / block_size;
}

int wrk_admit(int pool_blocks, int free_blocks, int need, int watermark)
{
    if (need > pool_blocks)
        return WRK_ADMIT_NEVER;
    return free_blocks - need >= watermark ? WRK_ADMIT_OK : WRK_ADMIT_WAIT;
}

int wrk_default_kv_blocks(size_t block_bytes, size_t budget_bytes, int max_running, int max_context, int block_size)
{
    size_t fit = block_bytes ? budget_bytes / block_bytes : 0;
    size_t most = (size_t)max_running * (size_t)((max_context + block_size - 1) / block_size);
    size_t n = fit < most ? fit : most;
    if (n < 64)
        n = 64;
    if (n > (size_t)1 << 30)
        n = (size_t)1 << 30;
    return (int)n;
}

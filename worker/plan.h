/* plan.h: the scheduler's pure decisions (plan.c), inside the worker.
 *
 * Block runs, chunk plans, admission and limits: no model, no network, no state, so the
 * unit tests (tests/worker/test_worker_plan.c) check them directly. */
#ifndef WRK_PLAN_H
#define WRK_PLAN_H

#include <stddef.h>
#include <stdint.h>

/* A run of n blocks consecutive in both the source and destination block ids. */
typedef struct wrk_run {
    int32_t src, dst;
    int n;
} wrk_run;

/* Splits the block pairs (src[i] -> dst[i], i < n) into maximal runs consecutive on
 * both sides, written to out[] (room for n). Returns the number of runs. */
int wrk_block_runs(const int32_t *src, const int32_t *dst, int n, wrk_run *out);

/* Blocks of a prompt of n_prompt tokens whose every token is in the cache once n_done
 * tokens are: whole blocks, plus the partial last block when the prompt is complete. */
int wrk_blocks_complete(int n_done, int n_prompt, int block_size);

/* Chunked prefill: given each waiting prompt's remaining tokens (in queue order) and the
 * step's token budget, writes each one's chunk for this step (0 = not this step) and
 * returns the tokens planned. First come, first served; a prompt longer than the budget
 * takes what is left and continues next step. */
int wrk_plan_chunks(const int *remaining, int n, int budget, int *chunk);

/* Tokens a request's sequence may hold: prompt + max_tokens, capped by the context. */
int wrk_cap_tokens(int n_prompt, int max_tokens, int max_context);

/* 0 (more to come), 1 (stop token), 2 (length: max_tokens or context reached) for the
 * token just generated, n_generated counting it; tandem.proto's FinishReason numbers. */
int wrk_finish_reason(int32_t token, const int32_t *stop_ids, int n_stop, int n_prompt, int n_generated,
                      int cap_tokens);

/* Decode admission (KV grows on demand): a new sequence takes blocks for its prompt
 * plus the next token (admit_blocks), and is admitted only while the pool keeps one
 * free block per sequence already admitted (`watermark`), so that each of them can
 * grow a step without preempting anyone. WRK_ADMIT_OK, WRK_ADMIT_WAIT (the pool is
 * busy: retry later) or WRK_ADMIT_NEVER (the prompt and one token exceed the whole pool). */
enum { WRK_ADMIT_OK, WRK_ADMIT_WAIT, WRK_ADMIT_NEVER };
int wrk_admit_blocks(int n_prompt, int block_size);
int wrk_admit(int pool_blocks, int free_blocks, int need, int watermark);

/* Default pool size: blocks (block_bytes each, all layers) that fit in budget_bytes, at
 * most enough for max_running full contexts, at least 64. */
int wrk_default_kv_blocks(size_t block_bytes, size_t budget_bytes, int max_running, int max_context, int block_size);

#endif

/* threadpool.h: a fixed set of worker threads that run one parallel loop at a time.
 *
 * eng_pool_run(pool, fn, ctx, n_tasks) calls fn(ctx, task) exactly once for every
 * task in [0, n_tasks) across the pool's threads (the caller's thread takes part)
 * and returns when all are done. Threads take tasks as they become free, so which
 * thread runs a task depends on timing; what a task computes must therefore
 * depend only on its index (keep scratch per task, not per thread). The split of
 * work into tasks is the caller's and never changes with timing, so neither does
 * any floating-point sum.
 * A loop started from inside a task of the same pool, or while another thread's
 * loop occupies it, runs all its tasks on the calling thread instead. */
#ifndef ENG_THREADPOOL_H
#define ENG_THREADPOOL_H

typedef struct eng_pool eng_pool;

typedef void (*eng_pool_fn)(void *ctx, int task);

eng_pool *eng_pool_create(int n_threads); /* n_threads includes the caller; NULL on failure */
void eng_pool_destroy(eng_pool *pool);
int eng_pool_threads(const eng_pool *pool); /* 1 for a NULL pool */
void eng_pool_run(eng_pool *pool, eng_pool_fn fn, void *ctx, int n_tasks);

#endif

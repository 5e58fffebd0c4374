/* threadpool.c: fixed worker threads for the engine's parallel loops.
 *
 * A forward pass issues hundreds of short loops per token, so waking a thread must
 * cost microseconds, not a scheduler round trip: workers spin on a generation
 * counter for a while after each loop and only then sleep on a condition variable.
 * Threads (the caller included) take the next task from a shared counter, so on a
 * machine shared with other work a thread that lost its core does not hold the
 * others up. Which thread runs a task never changes a result: the caller decides
 * how the work is cut into tasks, and each task computes its own outputs alone.
 * A loop started from inside a task, or while another thread's loop is running,
 * runs inline on its caller. */
#include "kernels/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* A pause costs about 65 cycles on Zen 4: a worker polls ~0.1 ms for the next
 * loop before sleeping, and the caller polls ~20 us for stragglers before it
 * starts yielding (on a shared machine a worker may have lost its core, and
 * spinning longer only steals time from whoever has it). */
#define SPIN_ITERS 4000
#define WAIT_SPIN_ITERS 1000

struct eng_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t lock;
    pthread_cond_t wake;

    /* The current loop, published by bumping `generation` (release). */
    eng_pool_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next_task; /* the next task to hand out */
    atomic_uint generation;
    atomic_int n_done;     /* workers finished with the current generation */
    atomic_int n_sleeping; /* workers blocked (or about to block) on `wake` */
    atomic_int stop;
    /* Held by the thread whose loop the workers are running. */
    pthread_mutex_t run_lock;
};

/* The pool whose task this thread is running, if any: a task that starts a loop
 * on the same pool runs it inline instead of deadlocking. */
static _Thread_local const eng_pool *tls_running;

static void run_share(eng_pool *p)
{
    const eng_pool *outer = tls_running;
    tls_running = p;
    for (;;) {
        int t = atomic_fetch_add_explicit(&p->next_task, 1, memory_order_relaxed);
        if (t >= p->n_tasks)
            break;
        p->fn(p->ctx, t);
    }
    tls_running = outer;
}

static void run_inline(eng_pool_fn fn, void *ctx, int n_tasks)
{
    for (int t = 0; t < n_tasks; t++)
        fn(ctx, t);
}

static void *worker_main(void *arg)
{
    eng_pool *p = arg;
    unsigned seen = 0;
    for (;;) {
        unsigned gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen) {
            if (++spins < SPIN_ITERS) {
                cpu_relax();
                continue;
            }
            /* Dekker-style handshake with eng_pool_run: either it sees our
             * n_sleeping increment and broadcasts, or we see its new generation. */
            pthread_mutex_lock(&p->lock);
            atomic_fetch_add(&p->n_sleeping, 1);
            while (atomic_load(&p->generation) == seen)
                pthread_cond_wait(&p->wake, &p->lock);
            atomic_fetch_sub(&p->n_sleeping, 1);
            pthread_mutex_unlock(&p->lock);
            spins = 0;
        }
        seen = gen;
        if (atomic_load_explicit(&p->stop, memory_order_acquire))
            return NULL;
        run_share(p);
        atomic_fetch_add_explicit(&p->n_done, 1, memory_order_release);
    }
}

static void publish(eng_pool *p)
{
    atomic_fetch_add(&p->generation, 1);
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->lock);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
    }
}

eng_pool *eng_pool_create(int n_threads)
{
    if (n_threads < 1)
        return NULL;
    eng_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n_threads = n_threads;
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->wake, NULL) != 0) {
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
    }
    if (pthread_mutex_init(&p->run_lock, NULL) != 0) {
        pthread_cond_destroy(&p->wake);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
    }
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
        eng_pool_destroy(p);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0) {
            p->n_threads = i; /* only threads 1..i-1 exist; destroy joins those */
            eng_pool_destroy(p);
            return NULL;
        }
        pthread_setname_np(p->threads[i], "tandem-compute"); /* as the engine thread is named (worker.c) */
    }
    return p;
}

void eng_pool_destroy(eng_pool *pool)
{
    if (!pool)
        return;
    if (pool->threads) {
        atomic_store(&pool->stop, 1);
        publish(pool);
        for (int i = 1; i < pool->n_threads; i++)
            pthread_join(pool->threads[i], NULL);
        free(pool->threads);
    }
    pthread_mutex_destroy(&pool->run_lock);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}

int eng_pool_threads(const eng_pool *pool)
{
    return pool ? pool->n_threads : 1;
}

void eng_pool_run(eng_pool *pool, eng_pool_fn fn, void *ctx, int n_tasks)
{
    if (n_tasks <= 0)
        return;
    /* Inline when there is nothing to share, when called from inside one of this
     * pool's tasks, or when another thread's loop holds the workers. Every task
     * still runs exactly once, and tasks are independent, so results are the same. */
    if (!pool || pool->n_threads == 1 || n_tasks == 1 || tls_running == pool ||
        pthread_mutex_trylock(&pool->run_lock) != 0) {
        run_inline(fn, ctx, n_tasks);
        return;
    }
    pool->fn = fn;
    pool->ctx = ctx;
    pool->n_tasks = n_tasks;
    atomic_store_explicit(&pool->next_task, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->n_done, 0, memory_order_relaxed);
    publish(pool);
    run_share(pool);
    /* Wait for the workers; yield after a while so a busy machine (more threads
     * than free cores) still lets them run. */
    int spins = 0;
    while (atomic_load_explicit(&pool->n_done, memory_order_acquire) < pool->n_threads - 1) {
        if (++spins < WAIT_SPIN_ITERS)
            cpu_relax();
        else
            sched_yield();
    }
    pthread_mutex_unlock(&pool->run_lock);
}

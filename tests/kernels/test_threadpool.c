/* test_threadpool.c: eng_pool runs every task exactly once, on the pool's own
 * threads, across many back-to-back loops, across the spin-then-sleep transition
 * of its workers, from inside its own tasks and from several outside threads. */
#include "kernels/threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* A broken kernel fails element after element: stop after 20. */
#define CHECK_MAX_FAILURES 20
#include "check.h"

#define MAX_TASKS 64

typedef struct ctx {
    atomic_int count[MAX_TASKS];
    pthread_t thread[MAX_TASKS];
} ctx;

static void record(void *p, int task)
{
    ctx *c = p;
    atomic_fetch_add(&c->count[task], 1);
    c->thread[task] = pthread_self();
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = ms * 1000000L};
    nanosleep(&ts, NULL);
}

static void check_run(eng_pool *pool, int n_tasks, int round)
{
    ctx c;
    for (int t = 0; t < MAX_TASKS; t++)
        atomic_init(&c.count[t], 0);
    eng_pool_run(pool, record, &c, n_tasks);
    int n = eng_pool_threads(pool);
    pthread_t seen[8];
    int n_seen = 0;
    for (int t = 0; t < n_tasks; t++) {
        CHECK(atomic_load(&c.count[t]) == 1, "round %d: task %d of %d ran %d times", round, t, n_tasks,
              atomic_load(&c.count[t]));
        int known = 0;
        for (int k = 0; k < n_seen; k++)
            known |= pthread_equal(seen[k], c.thread[t]);
        if (!known && n_seen < 8)
            seen[n_seen++] = c.thread[t];
    }
    CHECK(n_seen <= n, "round %d: tasks ran on %d threads, the pool has %d", round, n_seen, n);
    if (!pool || n == 1)
        for (int t = 0; t < n_tasks; t++)
            CHECK(pthread_equal(c.thread[t], pthread_self()), "round %d: a 1-thread loop left the caller", round);
    for (int t = n_tasks; t < MAX_TASKS; t++)
        CHECK(atomic_load(&c.count[t]) == 0, "task %d beyond n_tasks ran", t);
}

/* A task that starts a loop on its own pool: it must run inline, not deadlock. */
typedef struct nested {
    eng_pool *pool;
    atomic_int inner[8][5];
} nested;

static void inner_task(void *p, int task)
{
    atomic_fetch_add((atomic_int *)p + task, 1);
}

static void outer_task(void *p, int task)
{
    nested *n = p;
    eng_pool_run(n->pool, inner_task, n->inner[task], 5);
}

/* Two outside threads sharing one pool: one gets the workers, the other runs
 * inline; both must complete every task. */
typedef struct sharer {
    eng_pool *pool;
    int ok;
} sharer;

static void *share_main(void *arg)
{
    sharer *s = arg;
    s->ok = 1;
    for (int round = 0; round < 300; round++) {
        ctx c;
        for (int t = 0; t < MAX_TASKS; t++)
            atomic_init(&c.count[t], 0);
        eng_pool_run(s->pool, record, &c, 17);
        for (int t = 0; t < 17; t++)
            if (atomic_load(&c.count[t]) != 1)
                s->ok = 0;
    }
    return NULL;
}

static void test_nested_and_shared(void)
{
    eng_pool *pool = eng_pool_create(3);
    nested n = {.pool = pool};
    for (int i = 0; i < 8; i++)
        for (int k = 0; k < 5; k++)
            atomic_init(&n.inner[i][k], 0);
    eng_pool_run(pool, outer_task, &n, 8);
    for (int i = 0; i < 8; i++)
        for (int k = 0; k < 5; k++)
            CHECK(atomic_load(&n.inner[i][k]) == 1, "nested loop %d task %d ran %d times", i, k,
                  atomic_load(&n.inner[i][k]));
    sharer s[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        s[i].pool = pool;
        pthread_create(&th[i], NULL, share_main, &s[i]);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CHECK(s[i].ok, "shared pool: thread %d lost or repeated a task", i);
    }
    eng_pool_destroy(pool);
}

int main(void)
{
    test_nested_and_shared();
    CHECK(eng_pool_create(0) == NULL, "a pool of 0 threads must fail");
    CHECK(eng_pool_create(-3) == NULL, "a pool of -3 threads must fail");
    CHECK(eng_pool_threads(NULL) == 1, "NULL pool has one thread");
    check_run(NULL, 5, -1);
    eng_pool_destroy(NULL);

    for (int n = 1; n <= 4; n++) {
        eng_pool *pool = eng_pool_create(n);
        CHECK(pool != NULL, "create %d", n);
        CHECK(eng_pool_threads(pool) == n, "threads %d", n);
        for (int round = 0; round < 1000; round++)
            check_run(pool, 1 + round % MAX_TASKS, round);
        check_run(pool, 0, -2);
        /* Let the workers fall asleep, then wake them again. */
        for (int round = 0; round < 4; round++) {
            sleep_ms(30);
            check_run(pool, 2 * n + 1, round);
        }
        eng_pool_destroy(pool);
    }
    /* A pool destroyed straight after creation (workers possibly not started). */
    for (int i = 0; i < 20; i++)
        eng_pool_destroy(eng_pool_create(3));
    return check_summary();
}

/* scripted_backend.c: see scripted_backend.h. */
#include "scripted_backend.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct coord_backend_call {
    pthread_mutex_t mu;
    int refs; /* the replay thread and the pipeline */
    atomic_int cancel;
    coord_token_sink sink;
    scripted_replay how;
    int32_t *ids;
    int n_ids;
    int max_tokens;
    int n_top;
};

static void unref(coord_backend_call *c)
{
    pthread_mutex_lock(&c->mu);
    int left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (!left) {
        free(c->ids);
        pthread_mutex_destroy(&c->mu);
        free(c);
    }
}

static void *replay(void *arg)
{
    coord_backend_call *c = arg;
    coord_finish finish = COORD_FINISH_LENGTH;
    for (int i = 0; i < c->n_ids && i < c->max_tokens; i++) {
        if (atomic_load(&c->cancel)) {
            finish = COORD_FINISH_CANCELLED;
            break;
        }
        if (c->how.fail_after && i == c->how.fail_after) {
            coord_error e;
            coord_fail(&e, 500, "server_error", NULL, NULL, "worker lost");
            c->sink.on_done(c->sink.ctx, COORD_FINISH_ERROR, &e);
            unref(c);
            return NULL;
        }
        float lp = c->how.logprob0 - c->how.logprob_step * (float)i;
        eng_sample_result r = {.id = c->ids[i], .logprob = lp, .n_top = c->n_top};
        for (int k = 0; k < c->n_top; k++) {
            r.top[k].id = k == 0 ? c->ids[i] : 100 + k;
            r.top[k].logprob = lp - (float)k;
        }
        if (c->how.n_sent)
            atomic_fetch_add(c->how.n_sent, 1);
        if (c->sink.on_token(c->sink.ctx, &r)) {
            finish = COORD_FINISH_CANCELLED;
            break;
        }
        if (c->ids[i] == c->how.stop_id) {
            finish = COORD_FINISH_STOP;
            break;
        }
        if (c->how.delay_us)
            usleep((useconds_t)c->how.delay_us);
    }
    c->sink.on_done(c->sink.ctx, finish, NULL);
    unref(c);
    return NULL;
}

int scripted_backend_play(const scripted_replay *how, const coord_gen_request *req, const coord_token_sink *sink,
                          int32_t *ids, int n_ids, coord_backend_call **out, coord_error *err)
{
    coord_backend_call *c = calloc(1, sizeof *c);
    if (!c) {
        free(ids);
        return coord_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    }
    pthread_mutex_init(&c->mu, NULL);
    c->refs = 2;
    c->sink = *sink;
    c->how = *how;
    c->ids = ids;
    c->n_ids = n_ids;
    c->max_tokens = req->max_tokens;
    c->n_top = req->n_top_logprobs;
    pthread_t th;
    if (pthread_create(&th, NULL, replay, c)) {
        c->refs = 1;
        unref(c);
        return coord_fail(err, 500, "server_error", NULL, NULL, "cannot start a replay thread");
    }
    pthread_detach(th);
    *out = c;
    return 0;
}

void scripted_backend_cancel(void *self, coord_backend_call *c)
{
    (void)self;
    atomic_store(&c->cancel, 1);
}

void scripted_backend_release(void *self, coord_backend_call *c)
{
    (void)self;
    unref(c);
}

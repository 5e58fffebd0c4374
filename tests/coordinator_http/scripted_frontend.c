/* scripted_frontend.c: see scripted_frontend.h. */
#include "scripted_frontend.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct coord_call {
    pthread_mutex_t mu;
    int refs; /* the worker thread + the caller until release */
    atomic_int cancel;
    coord_sink sink;
    char mode[16];
    int n_words;
};

atomic_int n_cancelled, n_live_calls, n_submitted;
atomic_int ready_flag = 1;

static void call_unref(struct coord_call *c)
{
    pthread_mutex_lock(&c->mu);
    int left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left == 0) {
        pthread_mutex_destroy(&c->mu);
        free(c);
        atomic_fetch_sub(&n_live_calls, 1);
    }
}

static void *worker(void *arg)
{
    struct coord_call *c = arg;
    coord_usage usage = {3, 0};
    coord_finish finish = COORD_FINISH_LENGTH;
    if (strcmp(c->mode, "tool") == 0) {
        coord_delta r = {.reasoning = "let me think", .reasoning_len = 12, .n_tokens = 3};
        c->sink.on_delta(c->sink.ctx, &r);
        cJSON *calls = cJSON_Parse(
            "[{\"index\":0,\"id\":\"call_0\",\"type\":\"function\","
            "\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}]");
        coord_delta t = {.tool_calls = calls, .n_tokens = 10};
        c->sink.on_delta(c->sink.ctx, &t);
        cJSON_Delete(calls);
        usage.completion_tokens = 13;
        c->sink.on_done(c->sink.ctx, COORD_FINISH_TOOL_CALLS, &usage, NULL);
        call_unref(c);
        return NULL;
    }
    int forever = strcmp(c->mode, "forever") == 0;
    int n = strcmp(c->mode, "fail") == 0 ? 1 : c->n_words;
    for (int i = 0; forever || i < n; i++) {
        if (atomic_load(&c->cancel)) {
            finish = COORD_FINISH_CANCELLED;
            atomic_fetch_add(&n_cancelled, 1);
            break;
        }
        char word[32];
        int len = snprintf(word, sizeof word, "%sw%d", i ? " " : "", i);
        coord_top_logprob top = {word, (size_t)len, -0.5f};
        coord_logprob lp = {word, (size_t)len, -0.5f, 1, {top}};
        coord_delta d = {.content = word, .content_len = (size_t)len, .logprobs = &lp, .n_logprobs = 1, .n_tokens = 1};
        c->sink.on_delta(c->sink.ctx, &d);
        usage.completion_tokens++;
        usleep(forever ? 20000 : 1000);
    }
    if (strcmp(c->mode, "fail") == 0 && finish != COORD_FINISH_CANCELLED) {
        coord_error e;
        coord_fail(&e, 500, "server_error", NULL, NULL, "decode worker w1 died");
        c->sink.on_done(c->sink.ctx, COORD_FINISH_ERROR, &usage, &e);
    } else {
        c->sink.on_done(c->sink.ctx, finish, &usage, NULL);
    }
    call_unref(c);
    return NULL;
}

static int fe_submit(void *self, const coord_request *req, const coord_sink *sink, coord_call **out, coord_error *err)
{
    (void)self;
    const char *text = req->prompt_text ? req->prompt_text : "";
    if (req->api == COORD_API_CHAT) {
        const cJSON *last = cJSON_GetArrayItem(req->messages, cJSON_GetArraySize(req->messages) - 1);
        const cJSON *content = cJSON_GetObjectItem(last, "content");
        text = cJSON_IsString(content) ? content->valuestring : "";
    }
    if (strcmp(text, "reject") == 0)
        return coord_fail(err, 503, "server_error", NULL, "no_workers", "no decode worker is available");
    struct coord_call *c = calloc(1, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    c->refs = 2;
    c->sink = *sink;
    snprintf(c->mode, sizeof c->mode, "%s", text);
    c->n_words = req->max_tokens >= 0 ? req->max_tokens : 5;
    atomic_fetch_add(&n_live_calls, 1);
    atomic_fetch_add(&n_submitted, 1);
    pthread_t th;
    pthread_create(&th, NULL, worker, c);
    pthread_detach(th);
    *out = c;
    return 0;
}

static void fe_cancel(void *self, coord_call *c)
{
    (void)self;
    atomic_store(&c->cancel, 1);
}

static void fe_release(void *self, coord_call *c)
{
    (void)self;
    call_unref(c);
}

static int fe_ready(void *self)
{
    (void)self;
    return atomic_load(&ready_flag);
}

coord_frontend scripted_frontend(void)
{
    coord_frontend f = {.submit = fe_submit, .cancel = fe_cancel, .release = fe_release, .ready = fe_ready};
    return f;
}

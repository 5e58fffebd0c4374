/* server.c: serving registered methods over gRPC core.
 *
 * One completion queue, polled by RPC_CQ_THREADS threads that never run user code
 * longer than a cancel callback: each completion tag names its own done() function.
 * Handlers run on a pool that grows on demand (up to RPC_POOL_MAX threads, or
 * rpc_server_set_max_handlers), so a
 * handler that blocks for the length of a stream does not hold up other calls.
 *
 * A call's life: a request slot completes with a new call and its request message;
 * the slot is re-armed; the call starts RECV_CLOSE_ON_SERVER (which completes when the
 * client cancels, disappears or the call ends) and goes to the pool. Sends are queued
 * and go out one batch at a time (gRPC allows one SEND_MESSAGE in flight); the status
 * follows the last queued message. The call is freed when both the close and the
 * status batches have completed and no cancel callback is running.
 *
 * Locking: the server mutex guards the pool and the live counts, each call's mutex
 * its own state; a call's mutex is never held while taking the server's, except in
 * call_free after the call's mutex was released. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>

#include "rpc_internal.h"

#define RPC_CQ_THREADS 2
#define RPC_POOL_MAX 512
#define RPC_SLOTS_PER_METHOD 4

typedef struct method {
    char *name;
    int streaming;
    rpc_unary_fn unary;
    rpc_stream_fn stream;
    void *user;
    void *handle; /* from grpc_server_register_method */
    struct method *next;
} method;

/* One outstanding request for a new call of one method (or of any unknown method). */
typedef struct slot {
    rpc_tag tag;
    rpc_server *srv;
    method *m; /* NULL: catches calls to unregistered methods */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details;
} slot;

typedef struct pending_msg {
    grpc_byte_buffer *bb;
    struct pending_msg *next;
} pending_msg;

struct rpc_call {
    rpc_server *srv;
    method *m;
    grpc_call *call;
    char *peer; /* gpr_malloc'd */
    char method_name[128];
    gpr_timespec deadline; /* the client's */
    rpc_bytes req;
    struct rpc_call *job_next; /* pool queue link */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    rpc_tag close_tag, send_tag, status_tag;
    int close_cancelled; /* written by gRPC when close completes */
    int closed;          /* RECV_CLOSE_ON_SERVER completed */
    int cancelled;       /* ... and said the call failed: client gone, deadline, stop */
    int broken;          /* a send failed */
    int md_sent;
    int send_inflight;
    grpc_byte_buffer *send_bb;
    pending_msg *q_head, *q_tail;
    int q_len;
    int user_done; /* rpc_call_finish was called */
    int finish_code;
    grpc_slice finish_details;
    int status_started, status_done;
    int freed;
    void (*cb)(void *);
    void *cb_arg;
    int in_cb; /* cancel callbacks running (nested only on cb_thread) */
    pthread_t cb_thread;
};

struct rpc_server {
    grpc_server *gs;
    grpc_completion_queue *cq;
    int port;
    int started;
    method *methods;
    pthread_t cq_threads[RPC_CQ_THREADS];
    int n_cq_threads;
    rpc_tag shutdown_tag;

    pthread_mutex_t mu;
    pthread_cond_t cv;      /* live counts and shutdown changed */
    pthread_cond_t pool_cv; /* work arrived or the pool stops */
    int stopping, shutdown_done;
    int live_slots, live_calls;
    rpc_call *jobs_head, *jobs_tail;
    int n_jobs, n_idle, n_threads, pool_stop;
    int max_threads; /* rpc_server_set_max_handlers; RPC_POOL_MAX by default */
    pthread_t *threads;
    int threads_cap;
};

/* ------------------------------------------------------------------ calls */

static void call_free(rpc_call *c)
{
    rpc_server *srv = c->srv;
    grpc_call_unref(c->call);
    if (c->peer)
        gpr_free(c->peer);
    rpc_bytes_free(&c->req);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
    pthread_mutex_lock(&srv->mu);
    srv->live_calls--;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

/* Returns 1 exactly once, when nothing can touch the call any more. */
static int should_free_locked(rpc_call *c)
{
    if (c->freed || !c->closed || !c->status_done || c->in_cb)
        return 0;
    c->freed = 1;
    return 1;
}

static void drop_queue_locked(rpc_call *c)
{
    while (c->q_head) {
        pending_msg *p = c->q_head;
        c->q_head = p->next;
        grpc_byte_buffer_destroy(p->bb);
        free(p);
    }
    c->q_tail = NULL;
    c->q_len = 0;
}

/* Starts the next batch the call's state asks for: a queued message, else the status
 * once the owner has finished. At most one of them is in flight. */
static void pump_locked(rpc_call *c)
{
    if (c->send_inflight || c->status_started)
        return;
    if (c->cancelled || c->broken)
        drop_queue_locked(c);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    int n = 0;
    if (!c->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[n].data.send_initial_metadata.count = 0;
        n++;
    }
    if (c->q_head) {
        pending_msg *p = c->q_head;
        c->q_head = p->next;
        if (!c->q_head)
            c->q_tail = NULL;
        c->q_len--;
        c->send_bb = p->bb;
        free(p);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->send_bb;
        n++;
        c->send_inflight = 1;
        if (grpc_call_start_batch(c->call, ops, (size_t)n, &c->send_tag, NULL) == GRPC_CALL_OK) {
            c->md_sent = 1;
        } else {
            grpc_byte_buffer_destroy(c->send_bb);
            c->send_bb = NULL;
            c->send_inflight = 0;
            c->broken = 1;
            drop_queue_locked(c);
            pthread_cond_broadcast(&c->cv);
            pump_locked(c);
        }
        pthread_cond_broadcast(&c->cv); /* room in the queue */
        return;
    }
    if (!c->user_done)
        return;
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.trailing_metadata_count = 0;
    ops[n].data.send_status_from_server.status = (grpc_status_code)c->finish_code;
    ops[n].data.send_status_from_server.status_details = &c->finish_details;
    n++;
    c->md_sent = 1;
    c->status_started = 1;
    if (grpc_call_start_batch(c->call, ops, (size_t)n, &c->status_tag, NULL) != GRPC_CALL_OK) {
        /* Nothing will complete: make sure the close op does, so the call can go. */
        grpc_call_cancel(c->call, NULL);
        grpc_slice_unref(c->finish_details);
        c->status_done = 1;
    }
}

static void send_done(rpc_tag *t, int ok)
{
    rpc_call *c = RPC_CONTAINER(t, rpc_call, send_tag);
    pthread_mutex_lock(&c->mu);
    grpc_byte_buffer_destroy(c->send_bb);
    c->send_bb = NULL;
    c->send_inflight = 0;
    if (!ok)
        c->broken = 1;
    pthread_cond_broadcast(&c->cv);
    pump_locked(c);
    int f = should_free_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (f)
        call_free(c);
}

static void status_done(rpc_tag *t, int ok)
{
    (void)ok; /* a failed status send means the client is gone; nothing to do */
    rpc_call *c = RPC_CONTAINER(t, rpc_call, status_tag);
    pthread_mutex_lock(&c->mu);
    grpc_slice_unref(c->finish_details);
    c->status_done = 1;
    int f = should_free_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (f)
        call_free(c);
}

/* Runs fn with the call unlocked and in_cb set, so that rpc_call_finish from another
 * thread waits for it and the call is not freed under it. Called and returns locked. */
static void run_cancel_cb_locked(rpc_call *c)
{
    void (*fn)(void *) = c->cb;
    void *arg = c->cb_arg;
    c->cb = NULL;
    c->in_cb++;
    c->cb_thread = pthread_self();
    pthread_mutex_unlock(&c->mu);
    fn(arg);
    pthread_mutex_lock(&c->mu);
    c->in_cb--;
    pthread_cond_broadcast(&c->cv);
}

/* Waits until no cancel callback runs on another thread (one on this thread, which
 * is calling us from inside it, cannot be waited for). */
static void wait_other_cb_locked(rpc_call *c)
{
    while (c->in_cb && !pthread_equal(c->cb_thread, pthread_self()))
        pthread_cond_wait(&c->cv, &c->mu);
}

static void close_done(rpc_tag *t, int ok)
{
    rpc_call *c = RPC_CONTAINER(t, rpc_call, close_tag);
    pthread_mutex_lock(&c->mu);
    c->closed = 1;
    if (!ok || c->close_cancelled)
        c->cancelled = 1;
    pthread_cond_broadcast(&c->cv);
    if (c->cancelled && c->cb && !c->user_done)
        run_cancel_cb_locked(c);
    pump_locked(c);
    int f = should_free_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (f)
        call_free(c);
}

int rpc_call_send(rpc_call *c, const void *data, size_t len, int timeout_ms)
{
    pthread_mutex_lock(&c->mu);
    struct timespec until;
    if (timeout_ms > 0) {
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    while (!c->user_done && !c->cancelled && !c->broken && c->q_len >= RPC_SEND_QUEUE_MAX) {
        if (timeout_ms == 0)
            break;
        if (timeout_ms < 0) {
            pthread_cond_wait(&c->cv, &c->mu);
        } else if (pthread_cond_timedwait(&c->cv, &c->mu, &until) == ETIMEDOUT) {
            break;
        }
    }
    if (c->user_done || c->cancelled || c->broken || c->q_len >= RPC_SEND_QUEUE_MAX) {
        pthread_mutex_unlock(&c->mu);
        return -1;
    }
    pending_msg *p = malloc(sizeof *p);
    grpc_byte_buffer *bb = p ? rpc_bb_from(data, len) : NULL;
    if (!bb) {
        free(p);
        pthread_mutex_unlock(&c->mu);
        return -1;
    }
    p->bb = bb;
    p->next = NULL;
    if (c->q_tail)
        c->q_tail->next = p;
    else
        c->q_head = p;
    c->q_tail = p;
    c->q_len++;
    pump_locked(c);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

void rpc_call_finish(rpc_call *c, int code, const char *msg)
{
    pthread_mutex_lock(&c->mu);
    wait_other_cb_locked(c);
    if (c->user_done) { /* a second finish: a caller bug, but harmless to ignore */
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->user_done = 1;
    c->cb = NULL;
    c->finish_code = code;
    c->finish_details = grpc_slice_from_copied_string(msg ? msg : "");
    pthread_cond_broadcast(&c->cv);
    pump_locked(c);
    int f = should_free_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (f)
        call_free(c);
}

int rpc_call_cancelled(rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    int r = c->cancelled || c->broken;
    pthread_mutex_unlock(&c->mu);
    return r;
}

int rpc_call_wait_cancel(rpc_call *c, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    if (timeout_ms > 0) {
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&c->mu);
    while (!c->cancelled && !c->broken && timeout_ms != 0) {
        if (timeout_ms < 0)
            pthread_cond_wait(&c->cv, &c->mu);
        else if (pthread_cond_timedwait(&c->cv, &c->mu, &until) == ETIMEDOUT)
            break;
    }
    int r = c->cancelled || c->broken;
    pthread_mutex_unlock(&c->mu);
    return r;
}

void rpc_call_on_cancel(rpc_call *c, void (*fn)(void *arg), void *arg)
{
    pthread_mutex_lock(&c->mu);
    wait_other_cb_locked(c);
    if (c->user_done) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->cb = fn;
    c->cb_arg = arg;
    if (c->cancelled && fn)
        run_cancel_cb_locked(c);
    int f = should_free_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (f)
        call_free(c);
}

const char *rpc_call_method(const rpc_call *c)
{
    return c->method_name;
}
const char *rpc_call_peer(const rpc_call *c)
{
    return c->peer ? c->peer : "unknown";
}

/* ------------------------------------------------------------------ handler pool */

static void run_handler(rpc_call *c)
{
    method *m = c->m;
    rpc_bytes req = c->req; /* ours: the owner may finish and free the call meanwhile */
    c->req = (rpc_bytes){0};
    /* A call that waited in the queue past its deadline (or whose client left) has
     * nobody to answer: running it would only spend a thread on dead work. */
    if (rpc_call_cancelled(c) || gpr_time_cmp(gpr_now(c->deadline.clock_type), c->deadline) > 0) {
        rpc_bytes_free(&req);
        rpc_call_finish(c, RPC_DEADLINE_EXCEEDED, "the deadline passed while the call waited for a handler thread");
        return;
    }
    if (m->streaming) {
        m->stream(m->user, c, &req);
        rpc_bytes_free(&req);
        return;
    }
    rpc_bytes resp = {0};
    rpc_status st = {RPC_OK, ""};
    m->unary(m->user, c, &req, &resp, &st);
    rpc_bytes_free(&req);
    if (st.code == RPC_OK && rpc_call_send(c, resp.data, resp.len, -1) < 0 && !rpc_call_cancelled(c))
        rpc_status_set(&st, RPC_RESOURCE_EXHAUSTED, "out of memory queueing the response");
    rpc_bytes_free(&resp);
    rpc_call_finish(c, st.code, st.msg);
}

static void *pool_thread(void *arg)
{
    rpc_server *srv = arg;
    pthread_mutex_lock(&srv->mu);
    for (;;) {
        while (!srv->jobs_head && !srv->pool_stop) {
            srv->n_idle++;
            pthread_cond_wait(&srv->pool_cv, &srv->mu);
            srv->n_idle--;
        }
        if (!srv->jobs_head)
            break;
        rpc_call *c = srv->jobs_head;
        srv->jobs_head = c->job_next;
        if (!srv->jobs_head)
            srv->jobs_tail = NULL;
        srv->n_jobs--;
        pthread_mutex_unlock(&srv->mu);
        run_handler(c);
        pthread_mutex_lock(&srv->mu);
    }
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

/* Queues the call's handler; adds a thread when every existing one is busy. */
static void pool_submit(rpc_server *srv, rpc_call *c)
{
    pthread_mutex_lock(&srv->mu);
    c->job_next = NULL;
    if (srv->jobs_tail)
        srv->jobs_tail->job_next = c;
    else
        srv->jobs_head = c;
    srv->jobs_tail = c;
    srv->n_jobs++;
    if (srv->n_jobs > srv->n_idle && srv->n_threads < srv->max_threads) {
        if (srv->n_threads == srv->threads_cap) {
            int cap = srv->threads_cap ? srv->threads_cap * 2 : 16;
            pthread_t *t = realloc(srv->threads, (size_t)cap * sizeof *t);
            if (t) {
                srv->threads = t;
                srv->threads_cap = cap;
            }
        }
        if (srv->n_threads < srv->threads_cap &&
            pthread_create(&srv->threads[srv->n_threads], NULL, pool_thread, srv) == 0)
            srv->n_threads++;
    }
    int stranded = srv->n_threads == 0; /* could not start a single thread */
    if (stranded) {
        srv->jobs_head = srv->jobs_tail = NULL;
        srv->n_jobs = 0;
    }
    pthread_cond_signal(&srv->pool_cv);
    pthread_mutex_unlock(&srv->mu);
    if (stranded) {
        rpc_bytes_free(&c->req);
        rpc_call_finish(c, RPC_RESOURCE_EXHAUSTED, "server cannot start a handler thread");
    }
}

/* ------------------------------------------------------------------ accepting calls */

static void slot_done(rpc_tag *t, int ok);

static int slot_arm(slot *sl)
{
    rpc_server *srv = sl->srv;
    grpc_metadata_array_init(&sl->md);
    sl->call = NULL;
    sl->payload = NULL;
    grpc_call_error e;
    if (sl->m) {
        e = grpc_server_request_registered_call(srv->gs, sl->m->handle, &sl->call, &sl->deadline, &sl->md, &sl->payload,
                                                srv->cq, srv->cq, &sl->tag);
    } else {
        grpc_call_details_init(&sl->details);
        e = grpc_server_request_call(srv->gs, &sl->call, &sl->details, &sl->md, srv->cq, srv->cq, &sl->tag);
    }
    if (e != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&sl->md);
        if (!sl->m)
            grpc_call_details_destroy(&sl->details);
        return -1;
    }
    return 0;
}

static int slot_new(rpc_server *srv, method *m)
{
    slot *sl = calloc(1, sizeof *sl);
    if (!sl)
        return -1;
    sl->tag.done = slot_done;
    sl->srv = srv;
    sl->m = m;
    pthread_mutex_lock(&srv->mu);
    srv->live_slots++;
    pthread_mutex_unlock(&srv->mu);
    if (slot_arm(sl) < 0) {
        pthread_mutex_lock(&srv->mu);
        srv->live_slots--;
        pthread_mutex_unlock(&srv->mu);
        free(sl);
        return -1;
    }
    return 0;
}

static void call_begin(rpc_call *c, grpc_byte_buffer *payload)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    if (grpc_call_start_batch(c->call, &op, 1, &c->close_tag, NULL) != GRPC_CALL_OK) {
        c->closed = 1; /* no close will come; the status alone ends the call */
        c->cancelled = 1;
    }
    if (!c->m) {
        char msg[200];
        snprintf(msg, sizeof msg, "unknown method %s", c->method_name);
        rpc_call_finish(c, RPC_UNIMPLEMENTED, msg);
        return;
    }
    if (!payload) {
        rpc_call_finish(c, RPC_INVALID_ARGUMENT, "the call carried no request message");
        return;
    }
    int rc = rpc_bb_to_bytes(payload, &c->req);
    grpc_byte_buffer_destroy(payload);
    if (rc < 0) {
        rpc_call_finish(c, RPC_RESOURCE_EXHAUSTED, "out of memory reading the request");
        return;
    }
    pool_submit(c->srv, c);
}

static void slot_done(rpc_tag *t, int ok)
{
    slot *sl = RPC_CONTAINER(t, slot, tag);
    rpc_server *srv = sl->srv;
    grpc_call *call = sl->call;
    grpc_byte_buffer *payload = sl->payload;
    rpc_call *c = NULL;
    if (ok && call) {
        c = calloc(1, sizeof *c);
        if (c) {
            c->srv = srv;
            c->m = sl->m;
            c->call = call;
            c->peer = grpc_call_get_peer(call);
            c->deadline = sl->deadline;
            c->close_tag.done = close_done;
            c->send_tag.done = send_done;
            c->status_tag.done = status_done;
            pthread_mutex_init(&c->mu, NULL);
            pthread_cond_init(&c->cv, NULL);
            if (sl->m) {
                snprintf(c->method_name, sizeof c->method_name, "%s", sl->m->name);
            } else {
                size_t n = GRPC_SLICE_LENGTH(sl->details.method);
                if (n >= sizeof c->method_name)
                    n = sizeof c->method_name - 1;
                memcpy(c->method_name, GRPC_SLICE_START_PTR(sl->details.method), n);
                c->method_name[n] = '\0';
            }
        } else {
            grpc_call_cancel_with_status(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "server out of memory", NULL);
            grpc_call_unref(call);
            if (payload)
                grpc_byte_buffer_destroy(payload);
        }
    }
    grpc_metadata_array_destroy(&sl->md);
    if (!sl->m)
        grpc_call_details_destroy(&sl->details);

    pthread_mutex_lock(&srv->mu);
    if (c)
        srv->live_calls++;
    int rearm = ok && !srv->stopping;
    pthread_mutex_unlock(&srv->mu);
    if (!rearm || slot_arm(sl) < 0) {
        pthread_mutex_lock(&srv->mu);
        srv->live_slots--;
        pthread_cond_broadcast(&srv->cv);
        pthread_mutex_unlock(&srv->mu);
        free(sl);
    }
    if (c)
        call_begin(c, payload);
}

static void shutdown_done(rpc_tag *t, int ok)
{
    (void)ok;
    rpc_server *srv = RPC_CONTAINER(t, rpc_server, shutdown_tag);
    pthread_mutex_lock(&srv->mu);
    srv->shutdown_done = 1;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

static void *cq_thread(void *arg)
{
    rpc_server *srv = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        rpc_tag *t = ev.tag;
        t->done(t, ev.success);
    }
    return NULL;
}

/* ------------------------------------------------------------------ server lifecycle */

int rpc_server_create(const char *bind, int *port, rpc_server **out, rpc_status *st)
{
    *out = NULL;
    if (!bind || !*bind)
        return rpc_status_set(st, RPC_INVALID_ARGUMENT, "empty listen address");
    rpc_server *s = calloc(1, sizeof *s);
    if (!s)
        return rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    grpc_init();
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_cond_init(&s->pool_cv, NULL);
    s->shutdown_tag.done = shutdown_done;
    s->max_threads = RPC_POOL_MAX;

    /* No SO_REUSEPORT: a second server on a busy port must fail, not share it. Pings
     * from clients' keepalive (rpc_channel_create) are allowed every 10 s, and the
     * server pings its clients too, so an open stream to a host that vanished without
     * closing its connection is cancelled within 30 s. */
    grpc_arg args[8];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER, args[0].key = GRPC_ARG_ALLOW_REUSEPORT, args[0].value.integer = 0;
    args[1].type = GRPC_ARG_INTEGER, args[1].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
    args[1].value.integer = RPC_MAX_MESSAGE;
    args[2].type = GRPC_ARG_INTEGER, args[2].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
    args[2].value.integer = RPC_MAX_MESSAGE;
    args[3].type = GRPC_ARG_INTEGER, args[3].key = GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
    args[3].value.integer = 10000;
    args[4].type = GRPC_ARG_INTEGER, args[4].key = GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, args[4].value.integer = 1;
    args[5].type = GRPC_ARG_INTEGER, args[5].key = GRPC_ARG_KEEPALIVE_TIME_MS, args[5].value.integer = 20000;
    args[6].type = GRPC_ARG_INTEGER, args[6].key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS, args[6].value.integer = 10000;
    args[7].type = GRPC_ARG_INTEGER, args[7].key = GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, args[7].value.integer = 0;
    grpc_channel_args ca = {8, args};
    s->gs = grpc_server_create(&ca, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->gs, s->cq, NULL);

    grpc_server_credentials *creds = rpc_server_credentials();
    s->port = grpc_server_add_http2_port(s->gs, bind, creds);
    grpc_server_credentials_release(creds);
    if (s->port <= 0) {
        rpc_status_set(st, RPC_UNAVAILABLE, "cannot listen on %s (address in use or invalid)", bind);
        rpc_server_stop(s);
        return -1;
    }
    if (port)
        *port = s->port;
    *out = s;
    return rpc_status_set(st, RPC_OK, "listening on port %d", s->port);
}

static int add_method(rpc_server *s, const char *name, int streaming, rpc_unary_fn u, rpc_stream_fn f, void *user,
                      rpc_status *st)
{
    if (s->started)
        return rpc_status_set(st, RPC_FAILED_PRECONDITION, "server already started: cannot add %s", name);
    if (!name || name[0] != '/' || strlen(name) >= sizeof(((rpc_call *)0)->method_name))
        return rpc_status_set(st, RPC_INVALID_ARGUMENT, "method name must be \"/package.Service/Method\", got \"%s\"",
                              name ? name : "(null)");
    for (method *m = s->methods; m; m = m->next)
        if (strcmp(m->name, name) == 0)
            return rpc_status_set(st, RPC_ALREADY_EXISTS, "method %s registered twice", name);
    method *m = calloc(1, sizeof *m);
    if (!m || !(m->name = strdup(name))) {
        free(m);
        return rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    m->streaming = streaming;
    m->unary = u;
    m->stream = f;
    m->user = user;
    m->handle = grpc_server_register_method(s->gs, m->name, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    if (!m->handle) {
        free(m->name);
        free(m);
        return rpc_status_set(st, RPC_INTERNAL, "gRPC refused to register %s", name);
    }
    m->next = s->methods;
    s->methods = m;
    return rpc_status_set(st, RPC_OK, "%s", "");
}

int rpc_server_add_unary(rpc_server *s, const char *method, rpc_unary_fn fn, void *user, rpc_status *st)
{
    return add_method(s, method, 0, fn, NULL, user, st);
}

int rpc_server_add_stream(rpc_server *s, const char *method, rpc_stream_fn fn, void *user, rpc_status *st)
{
    return add_method(s, method, 1, NULL, fn, user, st);
}

void rpc_server_set_max_handlers(rpc_server *s, int n)
{
    s->max_threads = n > 0 ? n : RPC_POOL_MAX;
}

int rpc_server_start(rpc_server *s, rpc_status *st)
{
    if (s->started)
        return rpc_status_set(st, RPC_FAILED_PRECONDITION, "server already started");
    grpc_server_start(s->gs);
    s->started = 1;
    for (int i = 0; i < RPC_CQ_THREADS; i++) {
        if (pthread_create(&s->cq_threads[i], NULL, cq_thread, s) != 0)
            break;
        s->n_cq_threads++;
    }
    if (s->n_cq_threads == 0)
        return rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "cannot start polling threads");
    int armed = 0;
    for (method *m = s->methods; m; m = m->next)
        for (int i = 0; i < RPC_SLOTS_PER_METHOD; i++)
            armed += slot_new(s, m) == 0;
    if (slot_new(s, NULL) < 0 || (s->methods && armed == 0))
        return rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "cannot request incoming calls");
    return rpc_status_set(st, RPC_OK, "%s", "");
}

int rpc_server_port(const rpc_server *s)
{
    return s->port;
}

void rpc_server_stop(rpc_server *s)
{
    if (!s)
        return;
    /* gRPC insists that a server with a listener is shut down before it is destroyed,
     * and shutdown needs a started server. */
    if (!s->started)
        rpc_server_start(s, NULL);

    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_mutex_unlock(&s->mu);
    grpc_server_shutdown_and_notify(s->gs, s->cq, &s->shutdown_tag);
    grpc_server_cancel_all_calls(s->gs);

    pthread_mutex_lock(&s->mu);
    if (s->n_cq_threads > 0) {
        while (!s->shutdown_done || s->live_slots > 0 || s->live_calls > 0)
            pthread_cond_wait(&s->cv, &s->mu);
    }
    s->pool_stop = 1;
    pthread_cond_broadcast(&s->pool_cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_threads; i++)
        pthread_join(s->threads[i], NULL);

    grpc_server_destroy(s->gs);
    grpc_completion_queue_shutdown(s->cq);
    if (s->n_cq_threads > 0) {
        for (int i = 0; i < s->n_cq_threads; i++)
            pthread_join(s->cq_threads[i], NULL);
    } else {
        cq_thread(s); /* no polling thread could start: run the remaining tags here */
    }
    grpc_completion_queue_destroy(s->cq);

    while (s->methods) {
        method *m = s->methods;
        s->methods = m->next;
        free(m->name);
        free(m);
    }
    free(s->threads);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_cond_destroy(&s->pool_cv);
    free(s);
    grpc_shutdown();
}

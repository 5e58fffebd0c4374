/* control.c: the Worker service (tandem.proto), what an operator asks of a running
 * worker through the coordinator's Admin service (tandemctl):
 *
 *   Drain        what SIGTERM does, but the process stays up, drained; the streams still
 *                running at the deadline (--drain-timeout, or the request's) move elsewhere
 *   SetRole      drains, then takes the new role in place and registers again with it
 *   SetLogLevel  the process's log level, from now on
 *   Config       the effective settings: options after their defaults, and what the
 *                worker made of them (model, KV layout and pool, transport in use)
 *
 * The role change itself happens on the registration thread (wrk_take_new_role),
 * between two heartbeats, once nothing is in flight: the next message the
 * coordinator gets is the registration in the new role. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker_internal.h"

wrk_role wrk_role_now(wrk_worker *w)
{
    return (wrk_role)atomic_load(&w->role);
}

/* Under w->mu: what wrk_in_flight counts. */
static int in_flight_locked(const wrk_worker *w)
{
    int n = w->open_runs;
    for (const wrk_req *r = w->reqs; r; r = r->next)
        n += r->kind != REQ_PREFILL; /* a prefill is counted by its Run handler */
    return n;
}

int wrk_in_flight(wrk_worker *w)
{
    pthread_mutex_lock(&w->mu);
    int n = in_flight_locked(w);
    pthread_mutex_unlock(&w->mu);
    return n;
}

int wrk_take_new_role(wrk_worker *w)
{
    pthread_mutex_lock(&w->mu);
    wrk_role from = wrk_role_now(w), to = (wrk_role)w->next_role;
    int now = to && w->draining && !w->stopping && in_flight_locked(w) == 0;
    if (now) {
        atomic_store(&w->role, (int)to);
        w->next_role = 0;
        w->draining = 0;
        w->drain_deadline = 0;
    }
    pthread_mutex_unlock(&w->mu);
    if (now)
        wrk_log(w, ENG_LOG_INFO, NULL, "drained; role %s -> %s, registering again", wrk_role_name(from),
                wrk_role_name(to));
    return now;
}

/* Drain; the request's deadline (when not 0) replaces the --drain-timeout one. */
static void drain_until(wrk_worker *w, const Tandem__WorkerRequest *q)
{
    wrk_drain(w);
    if (!q->deadline_ms)
        return;
    pthread_mutex_lock(&w->mu);
    w->drain_deadline = eng_now_s() + q->deadline_ms / 1000.0;
    pthread_cond_signal(&w->cv); /* the engine minds the deadline */
    pthread_mutex_unlock(&w->mu);
    wrk_log(w, ENG_LOG_INFO, NULL, "drain deadline in %.1f s: streams still running then go on elsewhere",
            q->deadline_ms / 1000.0);
}

static void reply_state(int state, rpc_bytes *resp, rpc_status *st)
{
    Tandem__WorkerReply rep = TANDEM__WORKER_REPLY__INIT;
    rep.state = (Tandem__WorkerState)state;
    if (rpc_pack(&rep.base, resp) < 0)
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
}

static void on_drain(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)call;
    Tandem__WorkerRequest *q = rpc_unpack(&tandem__worker_request__descriptor, req->data, req->len, st);
    if (!q)
        return;
    drain_until(user, q);
    reply_state(TANDEM__WORKER_STATE__WORKER_DRAINING, resp, st);
    rpc_msg_free(q);
}

static void on_set_role(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)call;
    wrk_worker *w = user;
    Tandem__WorkerRequest *q = rpc_unpack(&tandem__worker_request__descriptor, req->data, req->len, st);
    if (!q)
        return;
    wrk_role to = (wrk_role)q->role;
    if (to != WRK_ROLE_PREFILL && to != WRK_ROLE_DECODE && to != WRK_ROLE_BOTH) {
        rpc_status_set(st, RPC_INVALID_ARGUMENT, "the role must be prefill, decode or both");
    } else if (w->ep) {
        rpc_status_set(st, RPC_FAILED_PRECONDITION, "an EP rank takes its group's role");
    } else {
        pthread_mutex_lock(&w->mu);
        w->next_role = (int)to;
        pthread_mutex_unlock(&w->mu);
        wrk_log(w, ENG_LOG_INFO, NULL, "asked to become %s: draining first", wrk_role_name(to));
        drain_until(w, q);
        reply_state(TANDEM__WORKER_STATE__WORKER_DRAINING, resp, st);
    }
    rpc_msg_free(q);
}

static void on_set_log_level(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)call;
    wrk_worker *w = user;
    Tandem__WorkerRequest *q = rpc_unpack(&tandem__worker_request__descriptor, req->data, req->len, st);
    if (!q)
        return;
    eng_log_level level;
    if (!q->log_level || eng_log_level_parse(q->log_level, &level) < 0) {
        rpc_status_set(st, RPC_INVALID_ARGUMENT, "the log level must be error, warn, info or debug");
    } else {
        /* said at warn, so that it shows whichever way the level goes */
        wrk_log(w, ENG_LOG_WARN, NULL, "log level %s (Admin.SetLogLevel)", q->log_level);
        eng_log_set_level(level);
        reply_state(TANDEM__WORKER_STATE__WORKER_UNKNOWN, resp, st);
    }
    rpc_msg_free(q);
}

/* ------------------------------------------------------------------ Config */

enum { MAX_SETTINGS = 32 };

typedef struct settings {
    Tandem__Setting s[MAX_SETTINGS], *sp[MAX_SETTINGS];
    char val[MAX_SETTINGS][320];
    int n;
} settings;

static void add(settings *ss, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add(settings *ss, const char *key, const char *fmt, ...)
{
    if (ss->n == MAX_SETTINGS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ss->val[ss->n], sizeof ss->val[0], fmt, ap);
    va_end(ap);
    tandem__setting__init(&ss->s[ss->n]);
    ss->s[ss->n].key = (char *)key;
    ss->s[ss->n].value = ss->val[ss->n];
    ss->sp[ss->n] = &ss->s[ss->n];
    ss->n++;
}

static void on_config(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)call, (void)req;
    wrk_worker *w = user;
    const wrk_options *o = &w->opt;
    settings *ss = calloc(1, sizeof *ss);
    if (!ss) {
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    char lay[96];
    eng_kv_layout_str(&w->layout, lay, sizeof lay);
    add(ss, "id", "%s", w->id);
    add(ss, "role", "%s", wrk_role_name(wrk_role_now(w)));
    add(ss, "model", "%s", w->model_name);
    add(ss, "model_dir", "%s", o->model_dir);
    add(ss, "rpc_address", "%s", w->rpc_address);
    add(ss, "metrics_address", "%s", w->metrics_address[0] ? w->metrics_address : "off");
    add(ss, "coordinator", "%s", o->coordinator && *o->coordinator ? o->coordinator : "none");
    add(ss, "kv_layout", "%s", lay);
    add(ss, "kv_blocks", "%d%s", eng_kv_pool_blocks(w->pool), o->kv_blocks ? "" : " (default)");
    add(ss, "block_size", "%d", o->block_size);
    add(ss, "kv_transport", "%s", kvt_choice(w->kvt));
    add(ss, "max_running", "%d", o->max_running);
    add(ss, "max_batch_tokens", "%d", o->max_batch_tokens);
    add(ss, "max_context", "%d", w->max_context);
    add(ss, "threads", "%d%s", eng_model_threads(w->model), o->threads ? "" : " (default: one per CPU)");
    add(ss, "lease_ms", "%d", o->lease_ms);
    if (w->ep) {
        add(ss, "ep_group", "%s", o->group ? o->group : "");
        add(ss, "ep_size", "%d", o->ep_size);
        add(ss, "ep_rank", "%d", o->ep_rank);
        add(ss, "experts", "%d", w->experts);
    }
    add(ss, "log_level", "%s", eng_log_level_name(eng_log_get_level()));
    add(ss, "log_format", "%s", eng_log_get_format() == ENG_LOG_JSON ? "json" : "text");
    Tandem__ConfigReply rep = TANDEM__CONFIG_REPLY__INIT;
    rep.id = w->id;
    rep.n_settings = (size_t)ss->n;
    rep.settings = ss->sp;
    if (rpc_pack(&rep.base, resp) < 0)
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    free(ss);
}

int wrk_control_register(wrk_worker *w, rpc_status *st)
{
    if (rpc_server_add_unary(w->server, RPC_WORKER_DRAIN, on_drain, w, st) < 0 ||
        rpc_server_add_unary(w->server, RPC_WORKER_SET_ROLE, on_set_role, w, st) < 0 ||
        rpc_server_add_unary(w->server, RPC_WORKER_SET_LOG_LEVEL, on_set_log_level, w, st) < 0 ||
        rpc_server_add_unary(w->server, RPC_WORKER_CONFIG, on_config, w, st) < 0)
        return -1;
    return 0;
}

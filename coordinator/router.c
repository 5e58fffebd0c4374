/* router.c: requests to worker pairs over gRPC (see router.h).
 *
 * Each request gets a thread that runs attempts until one finishes. An attempt is
 * one pass of tandem.proto's flow on one route; its outcome says what the next
 * step is: done, cancelled, run again elsewhere (a worker failed), wait (workers
 * full), or fail (the workers refuse the request itself). Tokens are delivered
 * through deliver(), in order, each once. An attempt after tokens were delivered
 * is a migration: it sends them along (GenerateRequest.generated), so the new pair
 * prefills prompt + generated and decoding resumes at the next step.
 *
 * Locking: the router's mutex guards the list of calls and each call's current
 * stream pointer and cancel flag, so cancel() (HTTP thread, Admin.Cancel) can
 * cancel the stream the request thread is reading. Sink callbacks run only on the
 * request's thread, never under a lock. */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/addr.h"
#include "common/log.h"
#include "router.h"
#include "admission.h"

#define MAX_EXCLUDE 16

typedef struct chan {
    char address[128];
    rpc_channel *ch;
    struct chan *next;
} chan;

struct coord_backend_call {
    coord_router *r;
    char id[96];
    int32_t *prompt;
    int n_prompt;
    int32_t *stop_ids;
    int n_stop;
    eng_sampling samp;
    int max_tokens, n_top;
    coord_token_sink sink;
    /* delivered tokens: what a migration resumes after */
    int32_t *gen;
    int n_gen;
    double t_last_token; /* when the last one was delivered */
    int resuming;        /* migrated, its next token not delivered yet: a resume gap to observe */
    /* guarded by r->mu (the request's thread, the only writer, reads them without) */
    int migrations; /* times the stream moved to another decode worker */
    rpc_stream *stream;
    char decode_id[128]; /* the decode worker of the current attempt */
    int cordon_migrate;  /* coord_router_migrate_from: move the stream off decode_id */
    int cancelled;
    int refs;
    int waiting; /* counted in the queue depth */
    struct coord_backend_call *prev, *next;
    /* what Admin.Requests shows, guarded by r->mu */
    char at_decode[128], at_prefill[128];
    int shown_gen, shown_failovers;
    double t_submit, t_first, t_last;
    /* the thread's own */
    char exclude[MAX_EXCLUDE][128];
    int n_exclude;
    coord_error err;
    int attempt;
    char admitted_on[128];             /* admission counts its prompt on this prefill worker (count_admitted) */
    double t_admitted, predicted_ttft; /* admission's prediction, to learn its error from */
};

struct coord_router {
    coord_router_config cfg;
    pthread_mutex_t mu;
    /* Held from a call's registry snapshot until its pick is noted in the registry:
     * a burst of calls must see each other's picks, or all take the same idle pair. */
    pthread_mutex_t pick_mu;
    pthread_cond_t cv;
    coord_backend_call *calls;
    int n_calls, n_waiting, stopping;
    atomic_ulong seq;
    chan *chans;
    met_metric *m_waiting;
    /* admission: how much later first tokens come than predicted (decaying mean) and
     * how much that miss varies (decaying mean deviation): learn_ttft */
    double ttft_bias, ttft_dev;
    uint64_t ttft_samples;
};

/* One channel per worker address, kept for the router's life: gRPC reconnects a
 * channel by itself when a worker restarts on the same address. */
static rpc_channel *channel(coord_router *r, const char *address, rpc_status *st)
{
    pthread_mutex_lock(&r->mu);
    chan *c = r->chans;
    while (c && strcmp(c->address, address))
        c = c->next;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c) {
            rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
        } else if (rpc_channel_create(address, &c->ch, st) < 0) {
            free(c);
            c = NULL;
        } else {
            snprintf(c->address, sizeof c->address, "%s", address);
            c->next = r->chans;
            r->chans = c;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return c ? c->ch : NULL;
}

/* ------------------------------------------------------------------ route choice */

static int excluded(const char *id, const char *const *ex, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(ex[i], id))
            return 1;
    return 0;
}

static long free_blocks(const coord_worker_view *v)
{
    return (long)v->kv_total - (long)v->kv_used - (long)v->sent_blocks;
}

static long decode_load(const coord_worker_view *v)
{
    return (long)v->running + (long)v->queued + (long)v->sent_streams;
}

static int blocks_for(const coord_worker_view *v, int tokens)
{
    int bs = v->layout.block_size > 0 ? v->layout.block_size : 1;
    return (tokens + bs - 1) / bs;
}

/* Whether a worker can ever hold the request: its context fits the prompt and its
 * whole KV pool the request's tokens; counts why not, for the error message. */
static int can_hold(const coord_worker_view *v, int n_prompt, int cap_tokens, int *ctx_short, int *too_small)
{
    if (v->max_context && (uint32_t)n_prompt >= v->max_context) {
        ++*ctx_short;
        return 0;
    }
    if ((long)v->kv_total < blocks_for(v, cap_tokens)) {
        ++*too_small;
        return 0;
    }
    return 1;
}

/* 1 when a is a better decode choice than b for a request of cap_tokens tokens:
 * room for it first, then fewer streams, then more free blocks. */
static int better_decode(const coord_worker_view *a, const coord_worker_view *b, int cap_tokens)
{
    int fa = free_blocks(a) >= blocks_for(a, cap_tokens), fb = free_blocks(b) >= blocks_for(b, cap_tokens);
    if (fa != fb)
        return fa > fb;
    if (decode_load(a) != decode_load(b))
        return decode_load(a) < decode_load(b);
    return free_blocks(a) > free_blocks(b);
}

/* Expected prefill work on v for this prompt, in tokens (up to a constant: the prompt's
 * own length, the same for every candidate). */
static double prefill_load(const coord_worker_view *v)
{
    return (double)(v->queued_prompt_tokens + v->sent_prompt_tokens) - v->prefill_credit;
}

int coord_route_pick(const coord_worker_view *v, int n, int force_colocated, int n_prompt, int cap_tokens,
                     const char *const *exclude, int n_exclude, coord_route *out, int *full, char *why, size_t cap)
{
    if (full)
        *full = 0;
    why[0] = 0;
    int n_pre = 0, n_dec = 0;
    for (int i = 0; i < n; i++) {
        if (!v[i].healthy || excluded(v[i].id, exclude, n_exclude))
            continue;
        n_pre += v[i].role == TANDEM__ROLE__ROLE_PREFILL;
        n_dec += v[i].role == TANDEM__ROLE__ROLE_DECODE;
    }
    int colocated = force_colocated || (n_pre == 0 && n_dec == 0);
    if (colocated) {
        int best = -1, too_small = 0, ctx_short = 0;
        for (int i = 0; i < n; i++) {
            if (!v[i].healthy || v[i].role != TANDEM__ROLE__ROLE_BOTH || excluded(v[i].id, exclude, n_exclude))
                continue;
            if (!can_hold(&v[i], n_prompt, cap_tokens, &ctx_short, &too_small))
                continue;
            if (best < 0 || better_decode(&v[i], &v[best], cap_tokens))
                best = i;
        }
        if (best < 0) {
            if (ctx_short)
                snprintf(why, cap, "the prompt of %d tokens does not fit the workers' context", n_prompt);
            else if (too_small)
                snprintf(why, cap, "no worker's KV pool can hold %d tokens", cap_tokens);
            else
                snprintf(why, cap, "no healthy worker with role both%s", force_colocated ? " (colocated mode)" : "");
            return -1;
        }
        if (full && free_blocks(&v[best]) < blocks_for(&v[best], cap_tokens))
            *full = 1;
        *out = (coord_route){.decode = best, .prefill = -1, .colocated = 1};
        return 0;
    }

    /* Disaggregated: decode side DECODE or BOTH, prefill side PREFILL or BOTH. */
    int best_d = -1, best_p = -1, any_dec = 0, any_pre = 0, too_small = 0, ctx_short = 0;
    for (int i = 0; i < n; i++) {
        if (!v[i].healthy || excluded(v[i].id, exclude, n_exclude))
            continue;
        if (v[i].role == TANDEM__ROLE__ROLE_PREFILL || v[i].role == TANDEM__ROLE__ROLE_BOTH)
            any_pre++;
        if (v[i].role != TANDEM__ROLE__ROLE_DECODE && v[i].role != TANDEM__ROLE__ROLE_BOTH)
            continue;
        any_dec++;
        if (!can_hold(&v[i], n_prompt, cap_tokens, &ctx_short, &too_small))
            continue;
        /* the best prefill partner for this decode worker: same layout, least queued */
        int p = -1;
        for (int j = 0; j < n; j++) {
            if (j == i || !v[j].healthy || excluded(v[j].id, exclude, n_exclude) ||
                (v[j].role != TANDEM__ROLE__ROLE_PREFILL && v[j].role != TANDEM__ROLE__ROLE_BOTH) ||
                !eng_kv_layout_equal(&v[j].layout, &v[i].layout) || strcmp(v[j].transport, v[i].transport))
                continue;
            if (v[j].max_context && (uint32_t)n_prompt >= v[j].max_context)
                continue;
            if (p < 0 || prefill_load(&v[j]) < prefill_load(&v[p]) ||
                (prefill_load(&v[j]) == prefill_load(&v[p]) && v[j].queued < v[p].queued))
                p = j;
        }
        if (p < 0)
            continue;
        if (best_d < 0 || better_decode(&v[i], &v[best_d], cap_tokens))
            best_d = i, best_p = p;
    }
    if (best_d < 0) {
        if (!any_dec)
            snprintf(why, cap, "no healthy decode worker");
        else if (!any_pre)
            snprintf(why, cap, "no healthy prefill worker");
        else if (ctx_short)
            snprintf(why, cap, "the prompt of %d tokens does not fit the workers' context", n_prompt);
        else if (too_small)
            snprintf(why, cap, "no decode worker's KV pool can hold %d tokens", cap_tokens);
        else {
            /* name the layouts on both sides so the operator sees the mismatch */
            char dl[256] = "", pl[256] = "", s[64];
            for (int i = 0; i < n; i++) {
                if (!v[i].healthy || excluded(v[i].id, exclude, n_exclude))
                    continue;
                eng_kv_layout_str(&v[i].layout, s, sizeof s);
                char *dst = v[i].role == TANDEM__ROLE__ROLE_PREFILL ? pl : dl;
                size_t len = strlen(dst);
                snprintf(dst + len, sizeof dl - len, "%s%s %s/%s", len ? ", " : "", v[i].id, s, v[i].transport);
            }
            snprintf(why, cap,
                     "no prefill worker shares a decode worker's KV layout and transport (decode: %s; prefill: %s)", dl,
                     pl);
        }
        return -1;
    }
    if (full && free_blocks(&v[best_d]) < blocks_for(&v[best_d], cap_tokens))
        *full = 1;
    *out = (coord_route){.decode = best_d, .prefill = best_p, .colocated = 0};
    return 0;
}

/* ------------------------------------------------------------------ calls */

static void call_unref_locked(coord_router *r, coord_backend_call *c)
{
    if (--c->refs > 0)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        r->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    r->n_calls--;
    pthread_cond_broadcast(&r->cv);
    free(c->prompt);
    free(c->stop_ids);
    free(c->gen);
    free(c);
}

static void set_waiting(coord_backend_call *c, int waiting)
{
    coord_router *r = c->r;
    pthread_mutex_lock(&r->mu);
    if (c->waiting != waiting) {
        c->waiting = waiting;
        r->n_waiting += waiting ? 1 : -1;
        met_set(r->m_waiting, r->n_waiting);
    }
    pthread_mutex_unlock(&r->mu);
}

/* The pair an attempt runs on, for Admin.Requests. */
static void show_route(coord_backend_call *c, const char *decode, const char *prefill, int failovers)
{
    pthread_mutex_lock(&c->r->mu);
    snprintf(c->at_decode, sizeof c->at_decode, "%s", decode);
    snprintf(c->at_prefill, sizeof c->at_prefill, "%s", prefill);
    c->shown_failovers = failovers;
    pthread_mutex_unlock(&c->r->mu);
}

/* A token delivered, for Admin.Requests. */
static void show_token(coord_backend_call *c)
{
    double now = eng_now_s();
    pthread_mutex_lock(&c->r->mu);
    c->shown_gen = c->n_gen;
    if (!c->t_first)
        c->t_first = now;
    c->t_last = now;
    pthread_mutex_unlock(&c->r->mu);
}

static int is_cancelled(coord_backend_call *c)
{
    pthread_mutex_lock(&c->r->mu);
    int v = c->cancelled;
    pthread_mutex_unlock(&c->r->mu);
    return v;
}

/* Publishes (or clears) the stream cancel() should cancel and its decode worker.
 * Returns 0 when the call was cancelled meanwhile (the stream is then cancelled here). */
static int set_stream(coord_backend_call *c, rpc_stream *s, const char *decode_id)
{
    pthread_mutex_lock(&c->r->mu);
    c->stream = s;
    snprintf(c->decode_id, sizeof c->decode_id, "%s", decode_id ? decode_id : "");
    if (s)
        c->cordon_migrate = 0; /* a new attempt: an earlier request to move is spent */
    int cancelled = c->cancelled;
    if (s && cancelled)
        rpc_stream_cancel(s);
    pthread_mutex_unlock(&c->r->mu);
    return !cancelled;
}

static void note_retry(coord_router *r, const char *reason)
{
    if (r->cfg.met)
        met_inc(met_get(r->cfg.met->family[MET_ROUTER_RETRIES], (met_labels){.reason = reason}), 1);
}

/* With --ttft-slo-ms: an admitted prompt counts on one prefill worker until its
 * Prefill.Run is answered (or the request ends): first the predicted one, then the one
 * that computes it (to), then none (NULL). */
static void count_admitted(coord_backend_call *c, const char *to)
{
    coord_registry *reg = c->r->cfg.registry;
    if (c->admitted_on[0] && (!to || strcmp(to, c->admitted_on))) {
        coord_registry_note_admitted(reg, c->admitted_on, -c->n_prompt);
        c->admitted_on[0] = 0;
    }
    if (to && c->r->cfg.ttft_slo_ms > 0 && !c->admitted_on[0]) {
        coord_registry_note_admitted(reg, to, c->n_prompt);
        snprintf(c->admitted_on, sizeof c->admitted_on, "%s", to);
    }
}

/* How long a failed prefill waits for its decode stream's verdict (attempt). */
#define DECODE_VERDICT_GRACE_MS 500

/* Admission's predictions leave out what is not prefill compute (the decode worker's
 * reservation, the transfer, the hops) and what comes after admission (a later prompt
 * that shares the step of an earlier one delays its first token). What they missed by
 * is learned as TCP learns a round-trip time (Jacobson's SRTT and RTTVAR, RFC 6298):
 * a decaying mean and a decaying mean deviation; the next predictions add the mean and
 * TTFT_DEV_MARGIN deviations, so the objective holds at the tail of what clients see,
 * not only on average. */
#define TTFT_DEV_MARGIN 2.0

static void learn_ttft(coord_backend_call *c, double now)
{
    if (c->predicted_ttft <= 0 || c->migrations)
        return;
    coord_router *r = c->r;
    pthread_mutex_lock(&r->mu);
    double miss = (now - c->t_admitted) - c->predicted_ttft;
    if (r->ttft_samples++) {
        r->ttft_dev = 0.75 * r->ttft_dev + 0.25 * fabs(miss - r->ttft_bias);
        r->ttft_bias = 0.875 * r->ttft_bias + 0.125 * miss;
    } else {
        r->ttft_bias = miss;
        r->ttft_dev = fabs(miss) / 2;
    }
    pthread_mutex_unlock(&r->mu);
}

/* What admission adds to a prediction: the learned miss and its spread, never less than 0. */
static double ttft_margin(coord_router *r)
{
    pthread_mutex_lock(&r->mu);
    double m = r->ttft_bias + TTFT_DEV_MARGIN * r->ttft_dev;
    pthread_mutex_unlock(&r->mu);
    return m > 0 ? m : 0;
}

typedef enum outcome {
    OUT_DONE,      /* finished; c->finish set */
    OUT_CANCELLED, /* cancel() or the sink stopped */
    OUT_RETRY,     /* a worker failed: run again elsewhere */
    OUT_WAIT,      /* workers full: try again soon */
    OUT_FAIL,      /* the request itself was refused or replay diverged: c->err */
} outcome;

typedef struct attempt_state {
    coord_finish finish;
    char blame[128]; /* worker to exclude on OUT_RETRY ("" none) */
    char why[512];
    int handed_back; /* the decode worker ended the stream for migration (its drain deadline) */
} attempt_state;

/* Hands one streamed token, the next one due, to the sink (and observes the resume
 * gap when it is the first after a migration). Returns OUT_DONE with as->finish set when it was the last
 * token, -1 (as int) to go on, or OUT_CANCELLED / OUT_FAIL. */
static int deliver(coord_backend_call *c, const Tandem__Token *t, attempt_state *as)
{
    if (!t)
        return coord_fail(&c->err, 502, "server_error", NULL, NULL, "a worker sent an empty token event"), OUT_FAIL;
    int idx = (int)t->index;
    if (idx != c->n_gen) {
        coord_fail(&c->err, 502, "server_error", NULL, NULL, "a worker sent token %d where token %d was due", idx,
                   c->n_gen);
        return OUT_FAIL;
    }
    if (c->n_gen >= c->max_tokens + 1)
        return coord_fail(&c->err, 502, "server_error", NULL, NULL, "a worker sent more tokens than asked"), OUT_FAIL;
    eng_sample_result s = {.id = t->id, .logprob = t->logprob};
    s.n_top = (int)(t->n_top < ENG_MAX_TOP_LOGPROBS ? t->n_top : ENG_MAX_TOP_LOGPROBS);
    for (int k = 0; k < s.n_top; k++) {
        s.top[k].id = t->top[k]->id;
        s.top[k].logprob = t->top[k]->logprob;
    }
    c->gen[c->n_gen++] = t->id;
    show_token(c);
    double now = eng_now_s();
    if (c->resuming) {
        c->resuming = 0;
        if (c->r->cfg.met)
            met_observe(met_get(c->r->cfg.met->family[MET_RESUME_GAP], (met_labels){0}), now - c->t_last_token);
        eng_log(ENG_LOG_INFO, "router", c->id, "resumed at token %d after a gap of %.1f ms", idx,
                (now - c->t_last_token) * 1e3);
    }
    c->t_last_token = now;
    if (c->n_gen == 1) {
        set_waiting(c, 0); /* out of the queue once its first token is out */
        learn_ttft(c, now);
    }
    if (c->sink.on_token(c->sink.ctx, &s))
        return OUT_CANCELLED;
    if (t->finish_reason == TANDEM__FINISH_REASON__FINISH_STOP) {
        as->finish = COORD_FINISH_STOP;
        return OUT_DONE;
    }
    if (t->finish_reason == TANDEM__FINISH_REASON__FINISH_LENGTH) {
        as->finish = COORD_FINISH_LENGTH;
        return OUT_DONE;
    }
    return -1;
}

/* An error the worker reported on the stream or as a call status. */
static outcome classify(coord_backend_call *c, int code, int retryable, const char *msg, const char *worker,
                        attempt_state *as)
{
    if (code == RPC_CANCELLED && is_cancelled(c))
        return OUT_CANCELLED;
    if (code == RPC_RESOURCE_EXHAUSTED && retryable) {
        snprintf(as->why, sizeof as->why, "%s is full: %s", worker, msg);
        return OUT_WAIT;
    }
    if (code == RPC_INVALID_ARGUMENT || code == RPC_OUT_OF_RANGE) {
        coord_fail(&c->err, 400, "invalid_request_error", NULL, NULL, "%s", msg);
        return OUT_FAIL;
    }
    if (code == RPC_RESOURCE_EXHAUSTED) {
        coord_fail(&c->err, 400, "invalid_request_error", NULL, NULL, "%s", msg);
        return OUT_FAIL;
    }
    snprintf(as->blame, sizeof as->blame, "%s", worker);
    snprintf(as->why, sizeof as->why, "%s: %s (%s)", worker, msg, rpc_code_name(code));
    return OUT_RETRY;
}

static void fill_sampling(const coord_backend_call *c, Tandem__SamplingParams *sp)
{
    tandem__sampling_params__init(sp);
    sp->temperature = c->samp.temperature;
    sp->top_k = c->samp.top_k;
    sp->top_p = c->samp.top_p;
    sp->min_p = c->samp.min_p;
    sp->presence_penalty = c->samp.presence_penalty;
    sp->frequency_penalty = c->samp.frequency_penalty;
    sp->repetition_penalty = c->samp.repetition_penalty;
    sp->seed = c->samp.seed;
    sp->max_tokens = (uint32_t)c->max_tokens;
    sp->n_stop_token_ids = (size_t)c->n_stop;
    sp->stop_token_ids = c->stop_ids;
    sp->top_logprobs = (uint32_t)c->n_top;
}

/* Reads token events until the last one. */
static outcome stream_tokens(coord_backend_call *c, rpc_stream *s, const coord_worker_view *d, attempt_state *as)
{
    coord_router *r = c->r;
    for (;;) {
        Tandem__GenerateEvent *ev = NULL;
        rpc_status st;
        rpc_next nx = rpc_stream_next_msg(s, r->cfg.token_gap_ms, &tandem__generate_event__descriptor, (void **)&ev,
                                          &st);
        if (nx == RPC_NEXT_TIMEOUT) {
            snprintf(as->blame, sizeof as->blame, "%s", d->id);
            snprintf(as->why, sizeof as->why, "%s sent nothing for %d ms", d->id, r->cfg.token_gap_ms);
            return OUT_RETRY;
        }
        if (nx == RPC_NEXT_END) {
            if (st.code == RPC_OK) {
                coord_fail(&c->err, 502, "server_error", NULL, NULL, "%s ended the stream without a last token", d->id);
                return OUT_FAIL;
            }
            outcome o = classify(c, st.code, 0, st.msg, d->id, as);
            if (o == OUT_RETRY && (st.code == RPC_UNAVAILABLE || st.code == RPC_DEADLINE_EXCEEDED))
                coord_registry_mark_failed(r->cfg.registry, d->id, st.msg);
            return o;
        }
        int o = -1;
        if (ev->event_case == TANDEM__GENERATE_EVENT__EVENT_TOKEN)
            o = deliver(c, ev->token, as);
        else if (ev->event_case == TANDEM__GENERATE_EVENT__EVENT_ERROR) {
            o = classify(c, ev->error->code, ev->error->retryable, ev->error->message, d->id, as);
            as->handed_back = o == OUT_RETRY && ev->error->migrate;
        } else {
            coord_fail(&c->err, 502, "server_error", NULL, NULL, "%s sent an unexpected event mid-stream", d->id);
            o = OUT_FAIL;
        }
        rpc_msg_free(ev);
        if (o >= 0)
            return (outcome)o;
    }
}

static outcome attempt(coord_backend_call *c, const coord_worker_view *d, const coord_worker_view *p, attempt_state *as)
{
    coord_router *r = c->r;
    rpc_status st;
    char rid[128];
    if (c->attempt == 0)
        snprintf(rid, sizeof rid, "%s", c->id);
    else
        snprintf(rid, sizeof rid, "%s.%d", c->id, c->attempt);
    rpc_channel *dch = channel(r, d->rpc_address, &st);
    rpc_channel *pch = p ? channel(r, p->rpc_address, &st) : NULL;
    if (!dch || (p && !pch)) {
        coord_fail(&c->err, 500, "server_error", NULL, NULL, "gRPC channel: %s", st.msg);
        return OUT_FAIL;
    }
    Tandem__SamplingParams sp;
    fill_sampling(c, &sp);
    Tandem__GenerateRequest g = TANDEM__GENERATE_REQUEST__INIT;
    g.request_id = rid;
    g.n_prompt = (size_t)c->n_prompt;
    g.prompt = c->prompt;
    g.n_generated = (size_t)c->n_gen;
    g.generated = c->gen;
    g.sampling = &sp;
    g.colocated = p == NULL;
    char prefill_host[ENG_HOST_MAX] = "";
    eng_error aerr;
    if (p && eng_addr_split(p->rpc_address, prefill_host, &(int){0}, &aerr) < 0) {
        coord_fail(&c->err, 500, "server_error", NULL, NULL, "prefill worker %s: %s", p->id, aerr.msg);
        return OUT_FAIL;
    }
    g.prefill_host = prefill_host;
    rpc_stream *s = NULL;
    if (rpc_stream_open_msg(dch, RPC_DECODE_GENERATE, &g.base, r->cfg.stream_ms, &s, &st) < 0) {
        snprintf(as->blame, sizeof as->blame, "%s", d->id);
        snprintf(as->why, sizeof as->why, "%s: %s", d->id, st.msg);
        return OUT_RETRY;
    }
    if (!set_stream(c, s, d->id)) {
        rpc_stream_close(s);
        return OUT_CANCELLED;
    }
    outcome o;
    if (!p) {
        o = stream_tokens(c, s, d, as);
        goto end;
    }

    /* 1. the decode worker's reservation */
    Tandem__GenerateEvent *ev = NULL;
    rpc_next nx = rpc_stream_next_msg(s, r->cfg.first_event_ms, &tandem__generate_event__descriptor, (void **)&ev, &st);
    if (nx == RPC_NEXT_TIMEOUT) {
        snprintf(as->blame, sizeof as->blame, "%s", d->id);
        snprintf(as->why, sizeof as->why, "%s sent no KV target within %d ms", d->id, r->cfg.first_event_ms);
        o = OUT_RETRY;
        goto end;
    }
    if (nx == RPC_NEXT_END) {
        o = st.code == RPC_OK ? OUT_RETRY : classify(c, st.code, 0, st.msg, d->id, as);
        if (st.code == RPC_OK)
            snprintf(as->why, sizeof as->why, "%s ended the stream before its KV target", d->id);
        if (o == OUT_RETRY && st.code == RPC_UNAVAILABLE)
            coord_registry_mark_failed(r->cfg.registry, d->id, st.msg);
        goto end;
    }
    if (ev->event_case != TANDEM__GENERATE_EVENT__EVENT_KV_TARGET) {
        if (ev->event_case == TANDEM__GENERATE_EVENT__EVENT_ERROR)
            o = classify(c, ev->error->code, ev->error->retryable, ev->error->message, d->id, as);
        else {
            coord_fail(&c->err, 502, "server_error", NULL, NULL, "%s streamed a token before its KV target", d->id);
            o = OUT_FAIL;
        }
        rpc_msg_free(ev);
        goto end;
    }

    /* 2. the prefill, pushing KV into that reservation */
    Tandem__PrefillRequest pr = TANDEM__PREFILL_REQUEST__INIT;
    pr.request_id = rid;
    pr.n_prompt = (size_t)c->n_prompt;
    pr.prompt = c->prompt;
    pr.n_generated = (size_t)c->n_gen;
    pr.generated = c->gen;
    pr.sampling = &sp;
    pr.target = ev->kv_target;
    count_admitted(c, p->id);
    Tandem__PrefillResult *res = NULL;
    int prc = rpc_unary_msg(pch, RPC_PREFILL_RUN, &pr.base, &tandem__prefill_result__descriptor, r->cfg.prefill_ms,
                            (void **)&res, &st);
    count_admitted(c, NULL);
    uint64_t transfer_id = ev->kv_target->transfer_id;
    rpc_msg_free(ev);
    if (prc < 0) {
        if (is_cancelled(c)) {
            o = OUT_CANCELLED;
            goto end;
        }
        /* Whose fault? If the decode stream ends with an error, the decode worker's: a
         * decode worker that died makes the prefill's KV push fail, often before gRPC has
         * seen its stream end, so wait a little for that (a busy machine delays it by
         * hundreds of ms; blaming the prefill worker would take a healthy one out). */
        Tandem__GenerateEvent *late = NULL;
        rpc_status dst;
        rpc_next dn = rpc_stream_next_msg(s, DECODE_VERDICT_GRACE_MS, &tandem__generate_event__descriptor,
                                          (void **)&late, &dst);
        rpc_msg_free(late);
        if (dn == RPC_NEXT_END && dst.code != RPC_OK) {
            o = classify(c, dst.code, 1, dst.msg, d->id, as);
            if (o == OUT_RETRY && dst.code == RPC_UNAVAILABLE)
                coord_registry_mark_failed(r->cfg.registry, d->id, dst.msg);
        } else {
            o = classify(c, st.code, 0, st.msg, p->id, as);
            if (o == OUT_RETRY && (st.code == RPC_UNAVAILABLE || st.code == RPC_DEADLINE_EXCEEDED))
                coord_registry_mark_failed(r->cfg.registry, p->id, st.msg);
        }
        goto end;
    }
    /* again now the blocks are in p's cache: a heartbeat sent during the prefill did not
     * list them, and its arrival forgot the expectation recorded at the pick */
    coord_registry_expect_prefix(r->cfg.registry, p->id, c->prompt, c->n_prompt);
    if (r->cfg.met && res->timings) {
        met_labels l = {.role = "coordinator", .worker = p->id, .transport = d->transport};
        met_inc(met_get(r->cfg.met->family[MET_KV_TRANSFER_BYTES], l), (double)res->timings->kv_bytes);
        met_observe(met_get(r->cfg.met->family[MET_KV_TRANSFER_SECONDS], l), res->timings->transfer_us / 1e6);
    }

    /* 3. the decode worker takes over from the first token */
    Tandem__KvReadyRequest kr = TANDEM__KV_READY_REQUEST__INIT;
    kr.request_id = rid;
    kr.transfer_id = transfer_id;
    kr.first_token = res->first_token;
    kr.prompt_tokens = res->prompt_tokens;
    Tandem__KvReadyReply *krep = NULL;
    if (rpc_unary_msg(dch, RPC_DECODE_KV_READY, &kr.base, &tandem__kv_ready_reply__descriptor, r->cfg.kv_ready_ms,
                      (void **)&krep, &st) < 0) {
        rpc_msg_free(res);
        o = is_cancelled(c) ? OUT_CANCELLED : classify(c, st.code, 0, st.msg, d->id, as);
        if (o == OUT_RETRY && st.code == RPC_UNAVAILABLE)
            coord_registry_mark_failed(r->cfg.registry, d->id, st.msg);
        goto end;
    }
    if (!krep->ok) {
        snprintf(as->why, sizeof as->why, "%s refused KvReady: %s", d->id, krep->reason);
        rpc_msg_free(krep);
        rpc_msg_free(res);
        o = is_cancelled(c) ? OUT_CANCELLED : OUT_RETRY;
        goto end;
    }
    rpc_msg_free(krep);
    int dl = deliver(c, res->first_token, as);
    rpc_msg_free(res);
    if (dl >= 0) {
        o = (outcome)dl;
        goto end;
    }
    o = stream_tokens(c, s, d, as);
end:
    set_stream(c, NULL, NULL);
    rpc_stream_close(s);
    return o;
}

/* The attempt streamed tokens, then its decode worker failed or gave the stream back:
 * the next attempt resumes after them on another pair, within the request's limits.
 * Returns 0, or -1 with c->err set when the stream may not move again. */
static int migrate(coord_backend_call *c, const char *from, const attempt_state *as)
{
    coord_router *r = c->r;
    const char *reason = as->handed_back ? "drain" : "failure";
    int input = c->n_prompt + c->n_gen;
    if (c->migrations >= r->cfg.migration_limit)
        return coord_fail(&c->err, 502, "server_error", NULL, NULL,
                          "decode worker %s lost the stream after %d tokens (%s) and it already moved %d time%s, "
                          "the --migration-limit; the response is incomplete",
                          from, c->n_gen, as->why, c->migrations, c->migrations == 1 ? "" : "s");
    if (input > r->cfg.migration_max_tokens)
        return coord_fail(&c->err, 502, "server_error", NULL, NULL,
                          "decode worker %s lost the stream after %d tokens (%s); with its prompt that is %d tokens, "
                          "more than --migration-max-tokens %d, so it is not migrated; the response is incomplete",
                          from, c->n_gen, as->why, input, r->cfg.migration_max_tokens);
    pthread_mutex_lock(&r->mu);
    if (c->cordon_migrate)
        reason = "cordon";
    c->cordon_migrate = 0;
    c->migrations++;
    pthread_mutex_unlock(&r->mu);
    c->resuming = 1;
    if (r->cfg.met)
        met_inc(met_get(r->cfg.met->family[MET_MIGRATIONS], (met_labels){.reason = reason}), 1);
    eng_log(ENG_LOG_WARN, "router", c->id,
            "attempt %d failed (%s); migrating (%s, %d of at most %d): prefilling the prompt and the %d tokens sent "
            "(%d) on another pair, decoding on from token %d",
            c->attempt, as->why, reason, c->migrations, r->cfg.migration_limit, c->n_gen, input, c->n_gen);
    return 0;
}

static void finish(coord_backend_call *c, coord_finish f, const coord_error *err)
{
    count_admitted(c, NULL);
    set_waiting(c, 0);
    c->sink.on_done(c->sink.ctx, f, f == COORD_FINISH_ERROR ? err : NULL);
}

static void *call_main(void *arg)
{
    coord_backend_call *c = arg;
    coord_router *r = c->r;
    int failures = 0, failovers = 0; /* failovers: failures in all, for Admin.Requests */
    double wait_until = eng_now_s() + r->cfg.wait_ms / 1000.0;
    char last_why[512] = "";
    for (;;) {
        if (is_cancelled(c)) {
            finish(c, COORD_FINISH_CANCELLED, NULL);
            break;
        }
        coord_worker_view *v = NULL;
        int n = 0;
        pthread_mutex_lock(&r->pick_mu);
        if (coord_registry_snapshot(r->cfg.registry, &v, &n) < 0) {
            pthread_mutex_unlock(&r->pick_mu);
            coord_fail(&c->err, 500, "server_error", NULL, NULL, "out of memory");
            finish(c, COORD_FINISH_ERROR, &c->err);
            break;
        }
        const char *ex[MAX_EXCLUDE];
        for (int i = 0; i < c->n_exclude; i++)
            ex[i] = c->exclude[i];
        coord_route rt;
        char why[768];
        int full = 0;
        int input = c->n_prompt + c->n_gen; /* a migrated stream's prefill: prompt + generated */
        int cap_tokens = input + 1;         /* decode admission: input + next token (KV grows on demand) */
        /* KV-aware: what each prefill worker holds of the prompt (a migrated stream's
         * input continues it, so the prompt's blocks are the ones to look for) */
        coord_registry_match_prefix(r->cfg.registry, c->prompt, c->n_prompt, v, n);
        for (int i = 0; i < n; i++)
            v[i].prefill_credit = r->cfg.overlap_weight * v[i].cached_tokens;
        if (coord_route_pick(v, n, r->cfg.colocated, input, cap_tokens, ex, c->n_exclude, &rt, &full, why, sizeof why) <
            0) {
            pthread_mutex_unlock(&r->pick_mu);
            free(v);
            /* Workers may come back (restart) or excluded ones may be the only ones:
             * wait a little, then give up with the reason. */
            if (eng_now_s() < wait_until) {
                usleep(50 * 1000);
                if (c->n_exclude && failures < r->cfg.max_failures)
                    c->n_exclude = 0; /* give the excluded a second chance */
                continue;
            }
            coord_fail(&c->err, 503, "server_error", NULL, NULL, "no worker can take the request: %s%s%s", why,
                       last_why[0] ? "; last failure: " : "", last_why);
            eng_log(ENG_LOG_ERROR, "router", c->id, "failed: %s", c->err.message);
            finish(c, COORD_FINISH_ERROR, &c->err);
            break;
        }
        coord_worker_view d = v[rt.decode], p;
        if (!rt.colocated)
            p = v[rt.prefill];
        free(v);
        /* A decode worker reserves the prompt (+ generated) and the next token; the rest
         * grows on demand. Noted now, before any RPC, so the next pick sees this one. */
        coord_registry_note_sent(r->cfg.registry, d.id, 1, blocks_for(&d, cap_tokens), 0);
        if (!rt.colocated) {
            coord_registry_note_sent(r->cfg.registry, p.id, 0, 0, (uint64_t)input);
            coord_registry_expect_prefix(r->cfg.registry, p.id, c->prompt, c->n_prompt);
        }
        pthread_mutex_unlock(&r->pick_mu);
        show_route(c, d.id, rt.colocated ? "" : p.id, failovers);
        attempt_state as = {.finish = COORD_FINISH_STOP};
        int delivered = c->n_gen;
        outcome o = attempt(c, &d, rt.colocated ? NULL : &p, &as);
        c->attempt++;
        if (o == OUT_DONE) {
            if (failures || c->migrations)
                eng_log(ENG_LOG_INFO, "router", c->id, "completed on %s%s%s after %d failover(s), %d migration(s)",
                        d.id, rt.colocated ? "" : " + ", rt.colocated ? "" : p.id, failures, c->migrations);
            finish(c, as.finish, NULL);
            break;
        }
        if (o == OUT_CANCELLED) {
            finish(c, COORD_FINISH_CANCELLED, NULL);
            break;
        }
        if (o == OUT_FAIL) {
            eng_log(ENG_LOG_ERROR, "router", c->id, "failed: %s", c->err.message);
            finish(c, COORD_FINISH_ERROR, &c->err);
            break;
        }
        if (o == OUT_WAIT) {
            note_retry(r, "full");
            if (eng_now_s() >= wait_until) {
                coord_fail(&c->err, 503, "server_error", NULL, NULL,
                           "no worker had room for the request within %d ms: %s", r->cfg.wait_ms, as.why);
                eng_log(ENG_LOG_ERROR, "router", c->id, "failed: %s", c->err.message);
                finish(c, COORD_FINISH_ERROR, &c->err);
                break;
            }
            usleep(20 * 1000);
            continue;
        }
        /* OUT_RETRY */
        snprintf(last_why, sizeof last_why, "%s", as.why);
        if (c->n_gen > delivered) {
            /* the stream was going: it moves, and failures start over */
            if (migrate(c, d.id, &as) < 0) {
                eng_log(ENG_LOG_ERROR, "router", c->id, "failed: %s", c->err.message);
                finish(c, COORD_FINISH_ERROR, &c->err);
                break;
            }
            failures = 0;
        } else {
            failures++;
            failovers++;
            note_retry(r, "failover");
            if (failures > r->cfg.max_failures) {
                coord_fail(&c->err, c->n_gen ? 502 : 503, "server_error", NULL, NULL,
                           "the request failed on %d workers; last: %s", failures, as.why);
                eng_log(ENG_LOG_ERROR, "router", c->id, "failed: %s", c->err.message);
                finish(c, COORD_FINISH_ERROR, &c->err);
                break;
            }
            eng_log(ENG_LOG_WARN, "router", c->id, "attempt %d failed (%s); %s", c->attempt, as.why,
                    c->n_gen ? "resuming elsewhere after the tokens already sent" : "retrying elsewhere");
        }
        if (as.blame[0] && c->n_exclude < MAX_EXCLUDE)
            snprintf(c->exclude[c->n_exclude++], sizeof c->exclude[0], "%s", as.blame);
        wait_until = eng_now_s() + r->cfg.failover_wait_ms / 1000.0;
    }
    pthread_mutex_lock(&r->mu);
    call_unref_locked(r, c);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ------------------------------------------------------------------ coord_backend */

static void note_rejected(coord_router *r, const char *reason)
{
    if (r->cfg.met)
        met_inc(met_get(r->cfg.met->family[MET_REQUESTS_REJECTED], (met_labels){.reason = reason}), 1);
}

/* --ttft-slo-ms: refuses (503, at once) a request whose best predicted TTFT misses the
 * objective; an admitted one is counted on its predicted prefill worker right away
 * (admission.h). */
static int admit(coord_router *r, const coord_gen_request *req, coord_worker_view *v, int n, char *on, size_t cap,
                 double *predicted, coord_error *err)
{
    coord_registry_match_prefix(r->cfg.registry, req->prompt, req->n_prompt, v, n);
    double ttft = 0;
    int best = coord_admission_best(v, n, req->n_prompt, &ttft);
    if (best < 0)
        return 0; /* nothing measured yet */
    *predicted = ttft;
    ttft += ttft_margin(r);
    if (ttft * 1000.0 > r->cfg.ttft_slo_ms) {
        note_rejected(r, "ttft_slo");
        return coord_fail(err, 503, "server_error", NULL, "ttft_slo_exceeded",
                          "the predicted time to first token, %.0f ms, exceeds the objective of %d ms "
                          "(prefill workers busy); retry later",
                          ttft * 1000.0, r->cfg.ttft_slo_ms);
    }
    coord_registry_note_admitted(r->cfg.registry, v[best].id, req->n_prompt);
    snprintf(on, cap, "%s", v[best].id);
    return 0;
}

static int be_submit(void *self, const coord_gen_request *req, const coord_token_sink *sink, coord_backend_call **out,
                     coord_error *err)
{
    coord_router *r = self;
    if (req->n_prompt < 1)
        return coord_fail(err, 400, "invalid_request_error", "prompt", NULL, "the prompt is empty");
    if (req->max_tokens < 1)
        return coord_fail(err, 400, "invalid_request_error", "max_tokens", NULL, "max_tokens must be at least 1");
    if (req->n_top_logprobs < 0 || req->n_top_logprobs > ENG_MAX_TOP_LOGPROBS)
        return coord_fail(err, 400, "invalid_request_error", "top_logprobs", NULL, "top_logprobs must be 0..%d",
                          ENG_MAX_TOP_LOGPROBS);
    /* Refuse at once when no route exists at all (the client gets a 503 now). */
    coord_worker_view *v = NULL;
    int n = 0;
    if (coord_registry_snapshot(r->cfg.registry, &v, &n) < 0)
        return coord_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    coord_route rt;
    char why[768];
    int rc = coord_route_pick(v, n, r->cfg.colocated, req->n_prompt, req->n_prompt + 1, NULL, 0, &rt, NULL, why,
                              sizeof why);
    uint32_t max_context = rc < 0 ? 0 : v[rt.decode].max_context;
    char admitted_on[128] = "";
    double predicted = 0;
    if (rc == 0 && r->cfg.ttft_slo_ms > 0 &&
        admit(r, req, v, n, admitted_on, sizeof admitted_on, &predicted, err) < 0) {
        free(v);
        return -1;
    }
    free(v);
    if (rc < 0)
        return coord_fail(err, 503, "server_error", NULL, NULL, "no worker can take the request: %s", why);
    /* The token buffer below is sized from max_tokens: never beyond what a worker holds. */
    if (max_context && (int64_t)req->n_prompt + req->max_tokens > (int64_t)max_context)
        return coord_fail(err, 400, "invalid_request_error", "max_tokens", "context_length_exceeded",
                          "%d prompt tokens + max_tokens %d exceed the decode worker's context of %u tokens",
                          req->n_prompt, req->max_tokens, max_context);

    coord_backend_call *c = calloc(1, sizeof *c);
    if (!c)
        return coord_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    c->r = r;
    if (req->request_id && *req->request_id)
        snprintf(c->id, sizeof c->id, "%s", req->request_id);
    else
        snprintf(c->id, sizeof c->id, "req-%lu", (unsigned long)atomic_fetch_add(&r->seq, 1));
    c->n_prompt = req->n_prompt;
    snprintf(c->admitted_on, sizeof c->admitted_on, "%s", admitted_on);
    c->predicted_ttft = predicted;
    c->t_admitted = eng_now_s();
    c->n_stop = req->n_stop_ids;
    c->samp = req->sampling;
    c->max_tokens = req->max_tokens;
    c->n_top = req->n_top_logprobs;
    c->sink = *sink;
    c->prompt = malloc((size_t)req->n_prompt * sizeof *c->prompt);
    c->stop_ids = malloc((size_t)(req->n_stop_ids + 1) * sizeof *c->stop_ids);
    c->gen = malloc(((size_t)req->max_tokens + 2) * sizeof *c->gen); /* max_tokens may be INT_MAX */
    if (!c->prompt || !c->stop_ids || !c->gen) {
        free(c->prompt), free(c->stop_ids), free(c->gen), free(c);
        return coord_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    }
    memcpy(c->prompt, req->prompt, (size_t)req->n_prompt * sizeof *c->prompt);
    if (req->n_stop_ids)
        memcpy(c->stop_ids, req->stop_ids, (size_t)req->n_stop_ids * sizeof *c->stop_ids);
    c->refs = 2; /* the request thread and the caller's release() */

    pthread_mutex_lock(&r->mu);
    if (r->stopping) {
        pthread_mutex_unlock(&r->mu);
        free(c->prompt), free(c->stop_ids), free(c->gen), free(c);
        return coord_fail(err, 503, "server_error", NULL, NULL, "the coordinator is shutting down");
    }
    if (r->n_calls >= r->cfg.max_requests || r->n_waiting >= r->cfg.max_waiting) {
        int waiting = r->n_waiting >= r->cfg.max_waiting;
        pthread_mutex_unlock(&r->mu);
        note_rejected(r, waiting ? "max_waiting" : "max_requests");
        free(c->prompt), free(c->stop_ids), free(c->gen), free(c);
        return coord_fail(err, 429, "rate_limit_error", NULL, "too_many_requests",
                          waiting ? "%d requests already wait for a worker (the limit); retry later"
                                  : "%d requests are already in flight (the limit); retry later",
                          waiting ? r->cfg.max_waiting : r->cfg.max_requests);
    }
    c->t_submit = eng_now_s();
    c->next = r->calls;
    if (r->calls)
        r->calls->prev = c;
    r->calls = c;
    r->n_calls++;
    c->waiting = 1;
    r->n_waiting++;
    met_set(r->m_waiting, r->n_waiting);
    pthread_mutex_unlock(&r->mu);

    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 256 * 1024);
    pthread_t th;
    int trc = pthread_create(&th, &at, call_main, c);
    pthread_attr_destroy(&at);
    if (trc != 0) {
        pthread_mutex_lock(&r->mu);
        c->waiting = 0;
        r->n_waiting--;
        met_set(r->m_waiting, r->n_waiting);
        c->refs = 1;
        call_unref_locked(r, c);
        pthread_mutex_unlock(&r->mu);
        return coord_fail(err, 503, "server_error", NULL, NULL, "cannot start a request thread");
    }
    *out = c;
    return 0;
}

static void cancel_locked(coord_backend_call *c)
{
    c->cancelled = 1;
    if (c->stream)
        rpc_stream_cancel(c->stream);
}

static void be_cancel(void *self, coord_backend_call *c)
{
    coord_router *r = self;
    pthread_mutex_lock(&r->mu);
    cancel_locked(c);
    pthread_mutex_unlock(&r->mu);
}

static void be_release(void *self, coord_backend_call *c)
{
    coord_router *r = self;
    pthread_mutex_lock(&r->mu);
    call_unref_locked(r, c);
    pthread_mutex_unlock(&r->mu);
}

static int be_ready(void *self)
{
    coord_router *r = self;
    coord_worker_view *v = NULL;
    int n = 0;
    if (coord_registry_snapshot(r->cfg.registry, &v, &n) < 0)
        return 0;
    coord_route rt;
    char why[512];
    int ok = coord_route_pick(v, n, r->cfg.colocated, 1, 2, NULL, 0, &rt, NULL, why, sizeof why) == 0;
    free(v);
    return ok;
}

coord_backend coord_router_backend(coord_router *r)
{
    return (coord_backend){
        .self = r, .submit = be_submit, .cancel = be_cancel, .release = be_release, .ready = be_ready};
}

int coord_router_cancel_id(coord_router *r, const char *request_id)
{
    int found = 0;
    pthread_mutex_lock(&r->mu);
    for (coord_backend_call *c = r->calls; c; c = c->next)
        if (!strcmp(c->id, request_id)) {
            cancel_locked(c);
            found = 1;
        }
    pthread_mutex_unlock(&r->mu);
    if (found)
        eng_log(ENG_LOG_INFO, "router", request_id, "cancelled by Admin.Cancel");
    return found;
}

int coord_router_migrate_from(coord_router *r, const char *worker_id)
{
    int n = 0;
    pthread_mutex_lock(&r->mu);
    for (coord_backend_call *c = r->calls; c; c = c->next)
        if (c->stream && !c->cancelled && !strcmp(c->decode_id, worker_id)) {
            c->cordon_migrate = 1;
            rpc_stream_cancel(c->stream);
            n++;
        }
    pthread_mutex_unlock(&r->mu);
    if (n)
        eng_log(ENG_LOG_INFO, "router", NULL, "moving %d streams off %s", n, worker_id);
    return n;
}

int coord_router_active(coord_router *r)
{
    pthread_mutex_lock(&r->mu);
    int n = r->n_calls;
    pthread_mutex_unlock(&r->mu);
    return n;
}

int coord_router_requests(coord_router *r, coord_request_view **out, int *n)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&r->mu);
    coord_request_view *v = calloc((size_t)r->n_calls + 1, sizeof *v);
    if (!v) {
        pthread_mutex_unlock(&r->mu);
        return -1;
    }
    double now = eng_now_s();
    int k = 0;
    for (coord_backend_call *c = r->calls; c; c = c->next, k++) {
        coord_request_view *q = &v[k];
        snprintf(q->id, sizeof q->id, "%s", c->id);
        snprintf(q->decode, sizeof q->decode, "%s", c->at_decode);
        snprintf(q->prefill, sizeof q->prefill, "%s", c->at_prefill);
        q->n_prompt = c->n_prompt;
        q->n_gen = c->shown_gen;
        q->max_tokens = c->max_tokens;
        q->failovers = c->shown_failovers;
        q->migrations = c->migrations;
        q->age_s = now - c->t_submit;
        q->ttft_s = c->t_first ? c->t_first - c->t_submit : -1;
        q->since_token_s = c->t_last ? now - c->t_last : -1;
    }
    pthread_mutex_unlock(&r->mu);
    *out = v;
    *n = k;
    return 0;
}

/* ------------------------------------------------------------------ life */

int coord_router_new(const coord_router_config *cfg, coord_router **out, eng_error *err)
{
    *out = NULL;
    if (!cfg->registry)
        return eng_fail(err, "router: no registry");
    coord_router *r = calloc(1, sizeof *r);
    if (!r)
        return eng_fail(err, "out of memory");
    r->cfg = *cfg;
    if (r->cfg.max_failures <= 0)
        r->cfg.max_failures = 3;
    if (r->cfg.wait_ms <= 0)
        r->cfg.wait_ms = 30000;
    if (r->cfg.max_requests <= 0)
        r->cfg.max_requests = 1024;
    if (r->cfg.max_waiting <= 0)
        r->cfg.max_waiting = 512;
    if (r->cfg.failover_wait_ms <= 0)
        r->cfg.failover_wait_ms = 5000;
    if (r->cfg.first_event_ms <= 0)
        r->cfg.first_event_ms = 10000;
    if (r->cfg.prefill_ms <= 0)
        r->cfg.prefill_ms = 120000;
    if (r->cfg.kv_ready_ms <= 0)
        r->cfg.kv_ready_ms = 10000;
    if (r->cfg.token_gap_ms <= 0)
        r->cfg.token_gap_ms = 60000;
    if (r->cfg.stream_ms <= 0)
        r->cfg.stream_ms = 600000;
    if (r->cfg.migration_limit <= 0)
        r->cfg.migration_limit = 3;
    if (r->cfg.migration_max_tokens <= 0)
        r->cfg.migration_max_tokens = 32768;
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->pick_mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    atomic_init(&r->seq, 1);
    if (cfg->met)
        r->m_waiting = met_get(cfg->met->family[MET_REQUESTS_WAITING],
                               (met_labels){.role = "coordinator", .worker = ""});
    *out = r;
    return 0;
}

void coord_router_free(coord_router *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = 1;
    for (coord_backend_call *c = r->calls; c; c = c->next)
        cancel_locked(c);
    while (r->n_calls > 0)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    for (chan *c = r->chans, *next; c; c = next) {
        next = c->next;
        rpc_channel_destroy(c->ch);
        free(c);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->pick_mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

/* engine.c: the engine thread, the only caller of eng_forward.
 *
 * Each turn of its loop (1) ends the requests that must end (finished, cancelled,
 * lease expired, transfer failed, worker stopping), (2) plans a step: one token for
 * every running sequence, then prompt chunks of queued prefills under the remaining
 * token budget (chunked prefill, first come first served), (3) runs that step as one
 * eng_forward, pushing each finished layer's KV blocks of prefill requests to their
 * decode workers from the on_layer callback so the transfer overlaps compute, and
 * (4) samples: the first token of finished prompts, the next token of running
 * sequences, sent on their Generate streams. New requests join between steps and
 * finished ones leave, each at its own position (continuous batching).
 *
 * KV grows on demand: before each step every running sequence gets a block for its
 * next token when it needs one; when the pool has none left the most recently
 * admitted running sequence is preempted (its blocks freed, its token ids kept; vLLM's
 * recompute policy) and, once the pool has room again (oldest first, before any new
 * admission), its prompt and generated tokens are run again as a chunked prefill
 * here, after which it goes on decoding from the same step. Its stream just pauses.
 *
 * Sampling uses each request's own (seed, step = tokens generated so far) and its
 * penalties over prompt + generated, exactly as `tandem generate` does, so the tokens
 * are the same whatever the batch, the chunking or the worker. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "worker_internal.h"

/* ------------------------------------------------------------------ requests */

wrk_req *wrk_req_new(wrk_worker *w, wrk_kind kind, const char *id)
{
    wrk_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->logits = malloc((size_t)w->cfg->vocab_size * sizeof(float));
    if (!r->logits) {
        free(r);
        return NULL;
    }
    r->refs = 1;
    r->w = w;
    r->kind = kind;
    r->state = kind == REQ_DECODE ? ST_RESERVED : ST_QUEUED;
    snprintf(r->id, sizeof r->id, "%s", id && *id ? id : "-");
    pthread_cond_init(&r->done_cv, NULL);
    r->t_arrival = eng_now_s();
    return r;
}

static void req_free(wrk_req *r)
{
    free(r->prompt);
    free(r->stop_ids);
    free(r->gen);
    free(r->logits);
    free(r->dst_blocks);
    free(r->seq.blocks);
    pthread_cond_destroy(&r->done_cv);
    free(r);
}

void wrk_req_unref_locked(wrk_worker *w, wrk_req *r)
{
    (void)w;
    if (r && --r->refs == 0)
        req_free(r);
}

void wrk_req_unref(wrk_worker *w, wrk_req *r)
{
    pthread_mutex_lock(&w->mu);
    wrk_req_unref_locked(w, r);
    pthread_mutex_unlock(&w->mu);
}

void wrk_req_link(wrk_worker *w, wrk_req *r)
{
    wrk_req **p = &w->reqs;
    while (*p)
        p = &(*p)->next;
    r->next = NULL;
    *p = r;
    r->refs++;
    pthread_cond_signal(&w->cv);
}

static void req_unlink(wrk_worker *w, wrk_req *r)
{
    for (wrk_req **p = &w->reqs; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            r->next = NULL;
            return;
        }
}

void wrk_req_end_locked(wrk_worker *w, wrk_req *r, int code, int retryable, const char *msg)
{
    if (r->ending || r->state == ST_DONE)
        return;
    r->ending = 1;
    r->end_code = code;
    r->retryable = retryable;
    if (msg != r->end_msg)
        snprintf(r->end_msg, sizeof r->end_msg, "%.*s", (int)sizeof r->end_msg - 1, msg ? msg : "");
    pthread_cond_signal(&w->cv);
}

void wrk_token_msg(const eng_sample_result *res, int index, int finish, Tandem__Token *tok,
                   Tandem__TokenLogprob *top_store, Tandem__TokenLogprob **top_ptrs)
{
    tandem__token__init(tok);
    tok->id = res->id;
    tok->logprob = res->logprob;
    tok->finish_reason = (Tandem__FinishReason)finish;
    tok->index = (uint32_t)index;
    for (int k = 0; k < res->n_top; k++) {
        tandem__token_logprob__init(&top_store[k]);
        top_store[k].id = res->top[k].id;
        top_store[k].logprob = res->top[k].logprob;
        top_ptrs[k] = &top_store[k];
    }
    tok->n_top = (size_t)res->n_top;
    tok->top = res->n_top ? top_ptrs : NULL;
}

/* ------------------------------------------------------------------ prompt blocks */

int wrk_prompt_blocks_take(wrk_worker *w, wrk_req *r)
{
    if (!w->prefix) {
        eng_error err;
        return eng_seq_reserve(w->pool, &r->seq, wrk_input_tokens(r), &err);
    }
    int cached = wrk_prefix_acquire(w->prefix, r->prompt, wrk_input_tokens(r), &r->seq);
    if (cached < 0)
        return -1;
    /* The cached blocks count as prefilled; the first chunk's push sends them along. */
    r->n_prefilled = cached;
    if (cached)
        wrk_log(w, ENG_LOG_DEBUG, r->id, "prefix cache: %d of %d input tokens cached", cached, wrk_input_tokens(r));
    return 0;
}

void wrk_prompt_blocks_give(wrk_worker *w, wrk_req *r)
{
    if (w->prefix)
        wrk_prefix_release(w->prefix, r->prompt, r->n_prefilled, &r->seq);
    else
        eng_seq_release(w->pool, &r->seq);
}

int wrk_free_blocks(const wrk_worker *w)
{
    return w->prefix ? wrk_prefix_free_blocks(w->prefix) : eng_kv_pool_free_blocks(w->pool);
}

/* ------------------------------------------------------------------ ending */

/* Outside w->mu: the last words of a Generate stream, then its blocks go back. */
static void end_stream(wrk_worker *w, wrk_req *r)
{
    if (r->end_code != RPC_OK && !r->cancelled) {
        Tandem__Error e = TANDEM__ERROR__INIT;
        e.code = r->end_code;
        e.message = r->end_msg;
        e.retryable = r->retryable;
        e.migrate = r->migrate;
        Tandem__GenerateEvent ev = TANDEM__GENERATE_EVENT__INIT;
        ev.event_case = TANDEM__GENERATE_EVENT__EVENT_ERROR;
        ev.error = &e;
        rpc_call_send_msg(r->call, &ev.base, 1000);
    }
    rpc_call_finish(r->call, r->end_code, r->end_code == RPC_OK ? NULL : r->end_msg);
    if (r->have_transfer)
        kvt_forget(w->kvt, r->transfer_id);
    double t = eng_now_s();
    pthread_mutex_lock(&w->mu);
    eng_seq_release(w->pool, &r->seq);
    w->n_reserved_or_running--;
    pthread_mutex_unlock(&w->mu);
    if (r->end_code == RPC_OK) {
        met_inc(w->m_ok, 1);
        met_observe(w->m_e2e, t - r->t_arrival);
    } else if (r->cancelled || r->end_code == RPC_CANCELLED) {
        met_inc(w->m_cancelled, 1);
    } else if (r->end_code == RPC_RESOURCE_EXHAUSTED) {
        met_inc(w->m_rejected, 1);
    } else {
        met_inc(w->m_error, 1);
    }
    wrk_log(w, ENG_LOG_INFO, r->id, "%s after %d tokens (%s%s%s), blocks freed",
            r->end_code == RPC_OK ? "finished" : "ended", r->n_gen, rpc_code_name(r->end_code),
            r->end_msg[0] ? ": " : "", r->end_msg);
    wrk_req_unref(w, r);
}

/* Under w->mu: hands a prefill back to its Run handler, which owns the rest. */
static void end_prefill_locked(wrk_worker *w, wrk_req *r)
{
    r->state = ST_DONE;
    r->done = 1;
    pthread_cond_broadcast(&r->done_cv);
    wrk_req_unref_locked(w, r);
}

/* ------------------------------------------------------------------ one step */

typedef struct wrk_step {
    wrk_worker *w;
    int n;
    wrk_req **reqs;
    eng_batch_item *items;
    int *lo, *hi; /* PREFILL: blocks to push this step, [lo, hi) */
    wrk_run *runs;
    int streamed;          /* tokens handed to their streams after this step's forward */
    double stream_seconds; /* the engine thread's time doing so (not in `tandem profile`'s steps) */
} wrk_step;

/* eng_forward's callback: layer `layer` of every item is in the cache, so push it. */
static void push_layer(void *ctx, int layer)
{
    wrk_step *s = ctx;
    wrk_worker *w = s->w;
    for (int i = 0; i < s->n; i++) {
        wrk_req *r = s->reqs[i];
        if (r->kind != REQ_PREFILL || r->send_failed || s->hi[i] <= s->lo[i])
            continue;
        int nr = wrk_block_runs(r->seq.blocks + s->lo[i], r->dst_blocks + s->lo[i], s->hi[i] - s->lo[i], s->runs);
        for (int k = 0; k < nr; k++) {
            eng_error err;
            uint64_t src = eng_kv_unit_offset(w->pool, layer, s->runs[k].src);
            uint64_t dst = ((uint64_t)layer * r->dst_pool_blocks + (uint64_t)s->runs[k].dst) * w->unit_bytes;
            if (kvt_send_write(r->send, src, dst, (uint64_t)s->runs[k].n * w->unit_bytes, &err) < 0) {
                r->send_failed = 1;
                snprintf(r->send_err, sizeof r->send_err, "KV push failed: %s", err.msg);
                break;
            }
        }
    }
}

static int sample(wrk_worker *w, wrk_req *r, eng_sample_result *res)
{
    return eng_sample(&r->samp, r->logits, w->cfg->vocab_size, r->prompt, r->n_prompt, r->gen, r->n_gen,
                      r->top_logprobs, res);
}

/* Outside w->mu: sample the next token of a DECODE/COLOCATED sequence, stream it.
 * Returns the finish reason (0 more, 1 stop, 2 length) or -1 when it must end. */
static int emit_token(wrk_worker *w, wrk_step *s, wrk_req *r)
{
    eng_sample_result res;
    if (sample(w, r, &res) < 0) {
        snprintf(r->end_msg, sizeof r->end_msg, "the sampler rejected the request's parameters");
        r->end_code = RPC_INVALID_ARGUMENT;
        return -1;
    }
    double t0 = eng_now_s();
    r->gen[r->n_gen++] = res.id;
    int finish = wrk_finish_reason(res.id, r->stop_ids, r->n_stop, r->n_prompt, r->n_gen, r->cap_tokens);
    Tandem__Token tok;
    Tandem__TokenLogprob store[ENG_MAX_TOP_LOGPROBS], *ptrs[ENG_MAX_TOP_LOGPROBS];
    wrk_token_msg(&res, r->n_gen - 1, finish, &tok, store, ptrs);
    Tandem__GenerateEvent ev = TANDEM__GENERATE_EVENT__INIT;
    ev.event_case = TANDEM__GENERATE_EVENT__EVENT_TOKEN;
    ev.token = &tok;
    double t = eng_now_s();
    if (r->n_gen == 1)
        met_observe(w->m_ttft, t - r->t_arrival);
    else if (r->t_last_token > 0)
        met_observe(w->m_itl, t - r->t_last_token);
    r->t_last_token = t;
    met_inc(w->m_gen_tokens, 1);
    int sent = rpc_call_send_msg(r->call, &ev.base, 5000);
    s->streamed++;
    s->stream_seconds += eng_now_s() - t0;
    if (sent < 0) {
        r->end_code = RPC_CANCELLED;
        snprintf(r->end_msg, sizeof r->end_msg, "the Generate stream is gone");
        return -1;
    }
    return finish;
}

static int blocks_for(const wrk_worker *w, int tokens)
{
    return (tokens + w->layout.block_size - 1) / w->layout.block_size;
}

static int decoding(const wrk_req *r)
{
    return !r->arming && !r->ending && (r->state == ST_RUNNING || r->state == ST_READY);
}

/* Tokens whose KV a decoding sequence must hold: the prompt and every generated token
 * but the last, which is the input of its next step. */
static int history(const wrk_req *r)
{
    return r->n_prompt + r->n_gen - 1;
}

/* Under w->mu: r gives its blocks back and waits to be recomputed. */
static void preempt_locked(wrk_worker *w, wrk_req *r)
{
    eng_seq_release(w->pool, &r->seq);
    r->state = ST_PREEMPTED;
    r->n_recomputed = 0;
    r->preemptions++;
    w->preemptions++;
    met_inc(w->m_preemptions, 1);
    wrk_log(w, ENG_LOG_WARN, r->id,
            "preempted after %d tokens (KV pool full; %d of %d blocks free with its own back), "
            "to be recomputed",
            r->n_gen, eng_kv_pool_free_blocks(w->pool), eng_kv_pool_blocks(w->pool));
}

/* Under w->mu: room in the cache for every running sequence's next token. A sequence
 * that cannot grow takes the blocks of the most recently admitted running sequence
 * (itself when it is that one); w->reqs is in admission order, so the newest is last. */
static void grow_running(wrk_worker *w)
{
    for (wrk_req *r = w->reqs; r; r = r->next) {
        if (!decoding(r))
            continue;
        int want = r->seq.n_past + 1;
        if (blocks_for(w, want) > eng_kv_pool_blocks(w->pool)) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "the sequence reached %d tokens: the next needs %d KV blocks, the whole pool has %d",
                     r->seq.n_past, blocks_for(w, want), eng_kv_pool_blocks(w->pool));
            wrk_req_end_locked(w, r, RPC_RESOURCE_EXHAUSTED, 0, msg);
            continue;
        }
        eng_error err;
        while (eng_seq_reserve(w->pool, &r->seq, want, &err) < 0) {
            wrk_req *victim = NULL;
            for (wrk_req *q = r; q; q = q->next)
                if (decoding(q))
                    victim = q;
            preempt_locked(w, victim);
            if (victim == r)
                break;
        }
    }
}

/* Under w->mu: preempted sequences come back, oldest first, when the pool holds all
 * their history plus the next token and still keeps a block for every decoding one. */
static void resume_preempted(wrk_worker *w)
{
    int active = 0;
    for (wrk_req *r = w->reqs; r; r = r->next)
        active += decoding(r) || (!r->ending && r->state == ST_RECOMPUTING);
    for (wrk_req *r = w->reqs; r; r = r->next) {
        if (r->arming || r->ending || r->state != ST_PREEMPTED)
            continue;
        eng_error err;
        int need = blocks_for(w, history(r) + 1);
        if (eng_kv_pool_free_blocks(w->pool) - need < active ||
            eng_seq_reserve(w->pool, &r->seq, history(r) + 1, &err) < 0)
            return; /* first come, first served */
        r->state = ST_RECOMPUTING;
        r->n_recomputed = 0;
        active++;
        wrk_log(w, ENG_LOG_INFO, r->id, "recomputing %d tokens of KV (%d blocks)", history(r), r->seq.n_blocks);
    }
}

/* Under w->mu: pick the requests that end now and plan the next step. Returns the
 * number of ended requests moved to `ended` (refs transferred) and fills s. */
static int plan(wrk_worker *w, wrk_step *s, wrk_req **ended, int cap)
{
    double now = eng_now_s();
    int n_ended = 0;
    char ep_msg[400] = "";
    if (w->ep && !wrk_ep_ready(w->ep, ep_msg + 100, sizeof ep_msg - 100)) {
        char why[300];
        snprintf(why, sizeof why, "%s", ep_msg + 100);
        snprintf(ep_msg, sizeof ep_msg, "EP group %s is not complete (%s)", w->opt.group, why);
    }
    grow_running(w); /* first, so that a sequence it ends leaves in this turn */
    resume_preempted(w);
    for (wrk_req *r = w->reqs, *next; r; r = next) {
        next = r->next;
        if (r->arming)
            continue;
        if (w->stopping)
            wrk_req_end_locked(w, r, RPC_UNAVAILABLE, 0, "the worker is shutting down");
        if (r->cancelled)
            wrk_req_end_locked(w, r, RPC_CANCELLED, 0, "cancelled by the caller");
        if (ep_msg[0]) /* retryable elsewhere while nothing was streamed */
            wrk_req_end_locked(w, r, RPC_UNAVAILABLE, r->n_gen == 0, ep_msg);
        if (r->state == ST_RESERVED && now > r->lease_deadline) {
            char msg[128];
            snprintf(msg, sizeof msg, "KV lease of %d ms expired before KvReady", w->opt.lease_ms);
            wrk_req_end_locked(w, r, RPC_DEADLINE_EXCEEDED, 1, msg);
        }
        if (r->kind == REQ_PREFILL && r->send_failed)
            wrk_req_end_locked(w, r, RPC_UNAVAILABLE, 1, r->send_err);
        if (w->draining && now >= w->drain_deadline && r->kind != REQ_PREFILL && !r->ending) {
            /* a prefill finishes soon; a stream may run long: it goes on elsewhere */
            r->migrate = 1;
            wrk_req_end_locked(w, r, RPC_UNAVAILABLE, r->n_gen == 0,
                               "the worker's drain deadline passed: the stream is handed back to go on elsewhere");
        }
        if (!r->ending || n_ended == cap)
            continue;
        req_unlink(w, r);
        if (r->kind == REQ_PREFILL)
            end_prefill_locked(w, r);
        else {
            r->state = ST_DONE;
            ended[n_ended++] = r;
        }
    }

    s->n = 0;
    int tokens = 0;
    for (wrk_req *r = w->reqs; r; r = r->next) {
        if (r->arming || r->ending)
            continue;
        if (r->state == ST_READY)
            r->state = ST_RUNNING;
        if (r->state != ST_RUNNING)
            continue;
        s->reqs[s->n] = r;
        s->items[s->n] = (eng_batch_item){
            .seq = &r->seq, .tokens = &r->gen[r->n_gen - 1], .n_tokens = 1, .logits = r->logits};
        s->lo[s->n] = s->hi[s->n] = 0;
        r->chunk = 0;
        s->n++;
        tokens++;
    }
    int budget = w->opt.max_batch_tokens - tokens;
    for (wrk_req *r = w->reqs; r && budget > 0; r = r->next) {
        if (!r->arming && !r->ending && r->state == ST_RECOMPUTING) {
            /* the history again, a chunk within the prompt or within the generated ids */
            int in_prompt = r->n_recomputed < r->n_prompt;
            const int32_t *src = in_prompt ? r->prompt + r->n_recomputed : r->gen + (r->n_recomputed - r->n_prompt);
            int remaining = (in_prompt ? r->n_prompt : history(r)) - r->n_recomputed, chunk;
            wrk_plan_chunks(&remaining, 1, budget, &chunk);
            budget -= chunk;
            s->reqs[s->n] = r;
            s->items[s->n] = (eng_batch_item){.seq = &r->seq, .tokens = src, .n_tokens = chunk, .logits = NULL};
            s->lo[s->n] = s->hi[s->n] = 0;
            r->chunk = chunk;
            s->n++;
            tokens += chunk;
            continue;
        }
        int input = wrk_input_tokens(r);
        if (r->arming || (r->state != ST_QUEUED && r->state != ST_PREFILLING) || r->n_prefilled >= input)
            continue; /* (a computed prompt waits here only until it is ended) */
        if (r->state == ST_QUEUED && r->kind == REQ_PREFILL) {
            if (wrk_prompt_blocks_take(w, r) < 0)
                break; /* first come, first served: the rest waits for blocks too */
            r->t_started = now;
        }
        r->state = ST_PREFILLING;
        int remaining = input - r->n_prefilled, chunk;
        wrk_plan_chunks(&remaining, 1, budget, &chunk);
        budget -= chunk;
        int end = r->n_prefilled + chunk;
        s->reqs[s->n] = r;
        s->items[s->n] = (eng_batch_item){.seq = &r->seq,
                                          .tokens = r->prompt + r->n_prefilled,
                                          .n_tokens = chunk,
                                          .logits = end == input ? r->logits : NULL};
        s->lo[s->n] = r->n_sent_blocks;
        s->hi[s->n] = r->kind == REQ_PREFILL ? wrk_blocks_complete(end, input, w->layout.block_size) : 0;
        r->chunk = chunk;
        s->n++;
        tokens += chunk;
    }
    for (int i = 0; i < s->n; i++) {
        s->reqs[i]->in_step = 1;
        s->reqs[i]->refs++; /* a Run handler may free a finished prefill before the step is over */
    }
    if (s->n) {
        w->steps++;
        w->batched_seqs += (uint64_t)s->n;
        w->last_batch = (uint32_t)s->n;
        if ((uint32_t)s->n > w->max_batch)
            w->max_batch = (uint32_t)s->n;
        met_observe(w->m_batch, s->n);
        met_observe(w->m_batch_tokens, tokens);
    }
    return n_ended;
}

/* Outside w->mu: after a successful forward, advance every request of the step. */
static void after_step(wrk_worker *w, wrk_step *s)
{
    double now = eng_now_s();
    for (int i = 0; i < s->n; i++) {
        wrk_req *r = s->reqs[i];
        if (r->state == ST_RUNNING) {
            int f = emit_token(w, s, r);
            pthread_mutex_lock(&w->mu);
            if (f < 0)
                wrk_req_end_locked(w, r, r->end_code, 0, r->end_msg);
            else if (f > 0)
                wrk_req_end_locked(w, r, RPC_OK, 0, NULL);
            pthread_mutex_unlock(&w->mu);
            continue;
        }
        if (r->state == ST_RECOMPUTING) {
            r->n_recomputed += r->chunk;
            if (r->n_recomputed < history(r))
                continue;
            pthread_mutex_lock(&w->mu);
            if (r->state == ST_RECOMPUTING)
                r->state = ST_RUNNING;
            pthread_mutex_unlock(&w->mu);
            wrk_log(w, ENG_LOG_INFO, r->id, "KV recomputed (%d tokens), decoding again from token %d", history(r),
                    r->n_gen);
            continue;
        }
        /* a prompt chunk */
        r->n_prefilled += r->chunk;
        if (r->kind == REQ_PREFILL)
            r->n_sent_blocks = s->hi[i];
        if (r->n_prefilled < wrk_input_tokens(r))
            continue;
        met_inc(w->m_prompt_tokens, wrk_input_tokens(r));
        if (r->kind == REQ_PREFILL) {
            int ok = sample(w, r, &r->first) == 0;
            pthread_mutex_lock(&w->mu);
            r->t_computed = now;
            if (!ok)
                wrk_req_end_locked(w, r, RPC_INVALID_ARGUMENT, 0, "the sampler rejected the request's parameters");
            else if (!r->send_failed && !r->cancelled && !w->stopping) {
                req_unlink(w, r);
                end_prefill_locked(w, r);
            }
            pthread_mutex_unlock(&w->mu);
            continue;
        }
        /* COLOCATED: its first token, then it decodes here */
        int f = emit_token(w, s, r);
        pthread_mutex_lock(&w->mu);
        if (f < 0)
            wrk_req_end_locked(w, r, r->end_code, 0, r->end_msg);
        else if (f > 0)
            wrk_req_end_locked(w, r, RPC_OK, 0, NULL);
        else
            r->state = ST_RUNNING;
        pthread_mutex_unlock(&w->mu);
    }
}

/* Outside w->mu: reservations whose incoming transfer failed end now (retryable:
 * nothing was streamed), rather than at their lease. */
static void drain_failed_transfers(wrk_worker *w)
{
    for (;;) {
        pthread_mutex_lock(&w->fail_mu);
        uint64_t id = 0;
        int have = w->n_failed > 0;
        if (have)
            id = w->failed_ids[--w->n_failed];
        pthread_mutex_unlock(&w->fail_mu);
        if (!have)
            return;
        eng_error err = {{0}};
        kvt_wait(w->kvt, id, 0, &err);
        char msg[700];
        snprintf(msg, sizeof msg, "KV transfer %llu failed: %.600s", (unsigned long long)id, err.msg);
        pthread_mutex_lock(&w->mu);
        for (wrk_req *r = w->reqs; r; r = r->next)
            if (r->kind == REQ_DECODE && r->have_transfer && r->transfer_id == id && r->state == ST_RESERVED) {
                wrk_req_end_locked(w, r, RPC_UNAVAILABLE, 1, msg);
                wrk_log(w, ENG_LOG_ERROR, r->id, "%s", msg);
            }
        pthread_mutex_unlock(&w->mu);
    }
}

/* Outside w->mu: the measured speed (heartbeats carry it; the coordinator predicts TTFT
 * from it) decays by a tenth per step, so it follows the last few dozen steps. */
static void note_speed(wrk_worker *w, int tokens, double seconds)
{
    pthread_mutex_lock(&w->mu);
    w->rate_tokens = 0.9 * w->rate_tokens + tokens;
    w->rate_seconds = 0.9 * w->rate_seconds + seconds;
    pthread_mutex_unlock(&w->mu);
}

/* Outside w->mu: one forward step of the planned requests. An EP rank runs every
 * step of its group, with zero tokens of its own when it has none (every MoE layer
 * still exchanges: the others' tokens may need our experts). */
static void run_step(wrk_worker *w, wrk_step *s)
{
    eng_error err;
    int rc, tokens = 0, decoding = 0, longest_chunk = 0, logits = 0;
    long long positions = 0; /* attended positions: the planner's attention term (cli/plan.h) */
    double t0 = 0, t1 = 0;
    if (w->ep && wrk_ep_step_begin(w->ep, &err) < 0) {
        rc = -1;
    } else if (s->n) {
        int any_push = 0;
        for (int i = 0; i < s->n; i++) {
            const eng_batch_item *it = &s->items[i];
            any_push |= s->reqs[i]->kind == REQ_PREFILL;
            tokens += it->n_tokens;
            /* the planner's knots: decode items of one token, and the longest prompt chunk */
            if (it->n_tokens == 1 && s->reqs[i]->kind != REQ_PREFILL && it->seq->n_past > 0)
                decoding++;
            else if (it->n_tokens > longest_chunk)
                longest_chunk = it->n_tokens;
            logits += it->logits != NULL;
            positions += (long long)it->n_tokens * it->seq->n_past + (long long)it->n_tokens * (it->n_tokens + 1) / 2;
        }
        t0 = eng_now_s();
        rc = eng_forward(w->model, w->pool, s->items, s->n, any_push ? push_layer : NULL, s, &err);
        t1 = eng_now_s();
        note_speed(w, tokens, t1 - t0);
    } else {
        rc = wrk_ep_idle_step(w->ep, w->model, &err);
    }
    if (w->ep)
        wrk_ep_step_end(w->ep);
    if (rc == 0) {
        s->streamed = 0;
        s->stream_seconds = 0;
        after_step(w, s);
        /* a step as `tandem profile` times it (forward and sampling), in the cluster, and
         * what the profile leaves out (streaming): `tandemctl plan-check` sets these
         * lines against the planner's costs (cli/plan_steps.c parses this format) */
        if (s->n)
            wrk_log(w, ENG_LOG_DEBUG, NULL,
                    "step: %d sequences, %d tokens, %lld positions attended, %d decoding, longest prompt chunk %d, "
                    "%d logits; forward %.2f ms, then sampling and streaming %.2f ms; streamed %d tokens in %.3f ms",
                    s->n, tokens, positions, decoding, longest_chunk, logits, 1e3 * (t1 - t0), 1e3 * (eng_now_s() - t1),
                    s->streamed, 1e3 * s->stream_seconds);
        return;
    }
    wrk_log(w, ENG_LOG_ERROR, NULL, "step of %d sequences failed: %s", s->n, err.msg);
    /* the group broke: the requests may go elsewhere while nothing was streamed */
    int ep_down = w->ep && !wrk_ep_ready(w->ep, NULL, 0);
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < s->n; i++)
        wrk_req_end_locked(w, s->reqs[i], ep_down ? RPC_UNAVAILABLE : RPC_INTERNAL, ep_down && s->reqs[i]->n_gen == 0,
                           err.msg);
    pthread_mutex_unlock(&w->mu);
}

static int failed_pending(wrk_worker *w)
{
    pthread_mutex_lock(&w->fail_mu);
    int n = w->n_failed;
    pthread_mutex_unlock(&w->fail_mu);
    return n;
}

static int count_reqs(wrk_worker *w)
{
    int n = 0;
    for (wrk_req *r = w->reqs; r; r = r->next)
        n++;
    return n;
}

static int grow_step(wrk_step *s, wrk_req ***ended, int *cap, int need)
{
    if (need <= *cap)
        return 0;
    int n = need * 2;
    void *a = realloc(s->reqs, n * sizeof *s->reqs), *b = NULL, *c = NULL, *d = NULL, *e = NULL;
    if (a)
        s->reqs = a;
    if (a && (b = realloc(s->items, n * sizeof *s->items)))
        s->items = b;
    if (b && (c = realloc(s->lo, n * sizeof *s->lo)))
        s->lo = c;
    if (c && (d = realloc(s->hi, n * sizeof *s->hi)))
        s->hi = d;
    if (d && (e = realloc(*ended, n * sizeof **ended)))
        *ended = e;
    if (!e)
        return -1;
    *cap = n;
    return 0;
}

/* Blocks per request are bounded by the context, so the run scratch must hold that. */
static int grow_runs(wrk_worker *w, wrk_step *s, int *runs_cap)
{
    int need = (w->max_context + w->layout.block_size - 1) / w->layout.block_size;
    if (need <= *runs_cap)
        return 0;
    void *p = realloc(s->runs, (size_t)need * sizeof *s->runs);
    if (!p)
        return -1;
    s->runs = p;
    *runs_cap = need;
    return 0;
}

static void timed_wait(wrk_worker *w, double until)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double d = until - eng_now_s();
    if (d < 0.001)
        d = 0.001;
    if (d > 1.0)
        d = 1.0;
    long ns = ts.tv_nsec + (long)(d * 1e9);
    ts.tv_sec += ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    pthread_cond_timedwait(&w->cv, &w->mu, &ts);
}

void *wrk_engine_main(void *arg)
{
    wrk_worker *w = arg;
    wrk_step s = {.w = w};
    wrk_req **ended = NULL;
    int cap = 0, runs_cap = 0;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        if (grow_runs(w, &s, &runs_cap) < 0 || grow_step(&s, &ended, &cap, count_reqs(w) + 1) < 0) {
            /* No memory to plan with: requests wait (their leases still run out). */
            wrk_log(w, ENG_LOG_WARN, NULL, "engine: out of memory planning a step; retrying");
            timed_wait(w, eng_now_s() + 0.1);
            continue;
        }
        if (failed_pending(w)) {
            pthread_mutex_unlock(&w->mu);
            drain_failed_transfers(w);
            pthread_mutex_lock(&w->mu);
        }
        int n_ended = plan(w, &s, ended, cap);
        /* EP: a rank without work of its own joins every step another rank starts */
        int join = w->ep && !s.n && wrk_ep_pending(w->ep);
        if (!n_ended && !s.n && !join) {
            if (w->stopping && !w->reqs)
                break;
            double until = eng_now_s() + 1.0;
            for (wrk_req *r = w->reqs; r; r = r->next)
                if (r->state == ST_RESERVED && r->lease_deadline < until)
                    until = r->lease_deadline;
            if (w->draining && w->reqs && w->drain_deadline < until)
                until = w->drain_deadline;
            if (!failed_pending(w))
                timed_wait(w, until);
            continue;
        }
        pthread_mutex_unlock(&w->mu);

        for (int i = 0; i < n_ended; i++)
            end_stream(w, ended[i]);
        if (s.n || join)
            run_step(w, &s);

        pthread_mutex_lock(&w->mu);
        for (int i = 0; i < s.n; i++) {
            s.reqs[i]->in_step = 0;
            wrk_req_unref_locked(w, s.reqs[i]);
        }
        s.n = 0;
    }
    pthread_mutex_unlock(&w->mu);
    free(s.reqs);
    free(s.items);
    free(s.lo);
    free(s.hi);
    free(s.runs);
    free(ended);
    return NULL;
}

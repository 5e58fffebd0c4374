/* service.c: the worker's gRPC handlers, the front door of the request flow
 * (tandem.proto's header): Decode.Generate reserves KV blocks and answers with a
 * KvTarget (or, colocated, queues the whole request here); Prefill.Run queues a
 * prompt whose KV the engine pushes into that target and waits for the receiver's
 * verdict, renewing the reservation's lease (Decode.KvRenew) while the prompt waits and
 * computes; Decode.KvReady checks the transfer and lets the sequence join the batch;
 * Decode.KvHello relays a transport handshake. Every check that can fail before any
 * work is done happens here, so the engine thread only sees well-formed requests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_layout_msg.h"
#include "request_check.h"
#include "worker_internal.h"

static int blocks_for(const wrk_worker *w, int tokens)
{
    return (tokens + w->layout.block_size - 1) / w->layout.block_size;
}

/* The checks (request_check.c), then fills r. Returns an rpc_code. */
static int take_request(wrk_worker *w, wrk_req *r, const int32_t *prompt, size_t n_prompt, const int32_t *generated,
                        size_t n_generated, const Tandem__SamplingParams *sp, char *msg, size_t cap)
{
    eng_sampling s;
    int code = wrk_check_request(w->max_context, w->cfg->vocab_size, prompt, n_prompt, generated, n_generated, sp, &s,
                                 msg, cap);
    if (code != RPC_OK)
        return code;
    r->samp = s;
    r->n_prompt = (int)n_prompt;
    r->n_resumed = (int)n_generated;
    r->max_tokens = sp->max_tokens > (uint32_t)w->max_context ? w->max_context : (int)sp->max_tokens;
    r->top_logprobs = (int)sp->top_logprobs;
    r->cap_tokens = wrk_cap_tokens(r->n_prompt, r->max_tokens, w->max_context);
    /* the prompt buffer holds the whole input of the prefill: prompt, then generated */
    r->prompt = malloc((n_prompt + n_generated) * sizeof *r->prompt);
    r->gen = malloc((size_t)(r->cap_tokens - r->n_prompt + 1) * sizeof *r->gen);
    r->stop_ids = malloc((sp->n_stop_token_ids + 1) * sizeof *r->stop_ids);
    if (!r->prompt || !r->gen || !r->stop_ids)
        return snprintf(msg, cap, "out of memory"), RPC_RESOURCE_EXHAUSTED;
    memcpy(r->prompt, prompt, n_prompt * sizeof *r->prompt);
    if (n_generated) {
        memcpy(r->prompt + n_prompt, generated, n_generated * sizeof *r->prompt);
        memcpy(r->gen, generated, n_generated * sizeof *r->gen);
    }
    r->n_gen = (int)n_generated;
    if (sp->n_stop_token_ids)
        memcpy(r->stop_ids, sp->stop_token_ids, sp->n_stop_token_ids * sizeof *r->stop_ids);
    r->n_stop = (int)sp->n_stop_token_ids;
    return RPC_OK;
}

static void stream_fail(rpc_call *call, int code, int retryable, const char *msg)
{
    Tandem__Error e = TANDEM__ERROR__INIT;
    e.code = code;
    e.message = (char *)msg;
    e.retryable = retryable;
    Tandem__GenerateEvent ev = TANDEM__GENERATE_EVENT__INIT;
    ev.event_case = TANDEM__GENERATE_EVENT__EVENT_ERROR;
    ev.error = &e;
    rpc_call_send_msg(call, &ev.base, 1000);
    rpc_call_finish(call, code, msg);
}

/* The caller went away: the engine frees the blocks and forgets the transfer. */
static void on_stream_cancel(void *arg)
{
    wrk_req *r = arg;
    wrk_worker *w = r->w;
    pthread_mutex_lock(&w->mu);
    r->cancelled = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* ------------------------------------------------------------------ Decode.Generate */

/* Opens the incoming transfer confined to this request's prompt blocks in every
 * layer, so a sender with wrong block ids fails the transfer instead of overwriting
 * another request's KV. */
static int expect_blocks(wrk_worker *w, const int32_t *blocks, int nb, uint64_t expected, const char *peer_host,
                         uint64_t *id, kvt_secret *secret, eng_error *err)
{
    wrk_run *runs = malloc((size_t)nb * sizeof *runs);
    kvt_span *spans = runs ? malloc((size_t)nb * (size_t)w->layout.n_layers * sizeof *spans) : NULL;
    if (!spans) {
        free(runs);
        return eng_fail(err, "out of memory");
    }
    int nr = wrk_block_runs(blocks, blocks, nb, runs), n = 0;
    for (int l = 0; l < w->layout.n_layers; l++)
        for (int k = 0; k < nr; k++)
            spans[n++] = (kvt_span){.off = eng_kv_unit_offset(w->pool, l, runs[k].src),
                                    .len = (uint64_t)runs[k].n * w->unit_bytes};
    int rc = kvt_expect_guarded(w->kvt, w->region, spans, n, expected, peer_host, id, secret, err);
    free(spans);
    free(runs);
    return rc;
}

static void on_generate(void *user, rpc_call *call, const rpc_bytes *bytes)
{
    wrk_worker *w = user;
    rpc_status st;
    char msg[800];
    Tandem__GenerateRequest *g = rpc_unpack(&tandem__generate_request__descriptor, bytes->data, bytes->len, &st);
    if (!g) {
        stream_fail(call, st.code, 0, st.msg);
        return;
    }
    wrk_req *r = NULL;
    int code = RPC_OK, retryable = 0;
    wrk_role role = wrk_role_now(w);
    if (g->colocated && role != WRK_ROLE_BOTH) {
        code = RPC_FAILED_PRECONDITION;
        snprintf(msg, sizeof msg, "colocated requests need a worker with role both; this one is %s",
                 wrk_role_name(role));
    } else if (!g->colocated && role == WRK_ROLE_PREFILL) {
        code = RPC_FAILED_PRECONDITION;
        snprintf(msg, sizeof msg, "this is a prefill worker: it serves Prefill.Run, not Decode.Generate");
    } else if (!(r = wrk_req_new(w, g->colocated ? REQ_COLOCATED : REQ_DECODE, g->request_id))) {
        code = RPC_RESOURCE_EXHAUSTED;
        snprintf(msg, sizeof msg, "out of memory");
    } else {
        code = take_request(w, r, g->prompt, g->n_prompt, g->generated, g->n_generated, g->sampling, msg, sizeof msg);
    }
    if (code == RPC_OK) {
        pthread_mutex_lock(&w->mu);
        /* Only the prompt and the next token now: the engine grows the sequence as it
         * generates (and preempts when the pool runs dry), so max_tokens reserves nothing. */
        int total = eng_kv_pool_blocks(w->pool), free_blocks = eng_kv_pool_free_blocks(w->pool);
        int need = wrk_admit_blocks(wrk_input_tokens(r), w->layout.block_size), preempted = 0;
        for (wrk_req *q = w->reqs; q; q = q->next)
            preempted += q->state == ST_PREEMPTED || q->state == ST_RECOMPUTING;
        int admit = wrk_admit(total, free_blocks, need, w->n_reserved_or_running);
        eng_error err;
        if (w->stopping || w->draining) {
            code = RPC_UNAVAILABLE, retryable = 1;
            snprintf(msg, sizeof msg, "the worker is %s", w->stopping ? "shutting down" : "draining");
        } else if (w->n_reserved_or_running >= w->opt.max_running) {
            code = RPC_RESOURCE_EXHAUSTED, retryable = 1;
            snprintf(msg, sizeof msg, "%d requests already running (max_running)", w->n_reserved_or_running);
        } else if (admit == WRK_ADMIT_NEVER) {
            code = RPC_RESOURCE_EXHAUSTED, retryable = 1; /* another worker's pool may be larger */
            snprintf(msg, sizeof msg,
                     "the prompt of %d tokens and one generated token need %d KV blocks; the whole pool has %d",
                     wrk_input_tokens(r), need, total);
        } else if (preempted) {
            code = RPC_RESOURCE_EXHAUSTED, retryable = 1; /* they go first */
            snprintf(msg, sizeof msg, "%d preempted sequences wait for KV blocks", preempted);
        } else if (admit == WRK_ADMIT_WAIT || eng_seq_reserve(w->pool, &r->seq, wrk_input_tokens(r) + 1, &err) < 0) {
            code = RPC_RESOURCE_EXHAUSTED, retryable = 1;
            snprintf(msg, sizeof msg,
                     "not enough free KV blocks: %d for the prompt + %d kept for the %d admitted sequences, %d free",
                     need, w->n_reserved_or_running, w->n_reserved_or_running, free_blocks);
        } else {
            w->n_reserved_or_running++;
            r->arming = 1;
            r->call = call;
            wrk_req_link(w, r);
        }
        pthread_mutex_unlock(&w->mu);
    }
    if (code != RPC_OK) {
        wrk_log(w, ENG_LOG_WARN, g->request_id, "Generate refused: %s (%s)", msg, rpc_code_name(code));
        if (code == RPC_RESOURCE_EXHAUSTED)
            met_inc(w->m_rejected, 1);
        else
            met_inc(w->m_error, 1);
        stream_fail(call, code, retryable, msg);
        if (r) {
            pthread_mutex_lock(&w->mu);
            eng_seq_release(w->pool, &r->seq);
            wrk_req_unref_locked(w, r);
            pthread_mutex_unlock(&w->mu);
        }
        rpc_msg_free(g);
        return;
    }

    /* Linked but arming: the engine leaves it alone until the target is out. */
    rpc_call_on_cancel(call, on_stream_cancel, r);
    if (!g->colocated) {
        int nb = blocks_for(w, wrk_input_tokens(r));
        uint64_t expected = (uint64_t)w->layout.n_layers * (uint64_t)nb * w->unit_bytes;
        eng_error err;
        kvt_secret secret;
        const char *peer_host = g->prefill_host && g->prefill_host[0] ? g->prefill_host : NULL;
        if (expect_blocks(w, r->seq.blocks, nb, expected, peer_host, &r->transfer_id, &secret, &err) < 0) {
            pthread_mutex_lock(&w->mu);
            wrk_req_end_locked(w, r, RPC_UNAVAILABLE, 1, err.msg);
        } else {
            r->have_transfer = 1;
            r->lease_deadline = eng_now_s() + w->opt.lease_ms / 1000.0;
            Tandem__KvLayout lay;
            kv_layout_to_msg(&w->layout, &lay);
            Tandem__KvTarget t = TANDEM__KV_TARGET__INIT;
            t.request_id = r->id;
            t.decode_worker_id = w->id;
            t.transport = (char *)kvt_name(w->kvt);
            t.descriptor.data = w->descriptor;
            t.descriptor.len = w->descriptor_len;
            t.transfer_id = r->transfer_id;
            t.n_block_ids = (size_t)nb;
            t.block_ids = r->seq.blocks;
            t.layout = &lay;
            t.lease_ms = (uint32_t)w->opt.lease_ms;
            t.rpc_address = w->rpc_address;
            t.pool_blocks = (uint32_t)eng_kv_pool_blocks(w->pool);
            t.transfer_secret.data = secret.bytes;
            t.transfer_secret.len = sizeof secret.bytes;
            Tandem__GenerateEvent ev = TANDEM__GENERATE_EVENT__INIT;
            ev.event_case = TANDEM__GENERATE_EVENT__EVENT_KV_TARGET;
            ev.kv_target = &t;
            rpc_call_send_msg(call, &ev.base, 1000); /* a failure shows as a cancel */
            wrk_log(w, ENG_LOG_INFO, r->id,
                    "reserved %d KV blocks (%d for the prompt of %d tokens%s), transfer %llu, lease %d ms",
                    r->seq.n_blocks, nb, wrk_input_tokens(r), r->n_resumed ? ", resuming a migrated stream" : "",
                    (unsigned long long)r->transfer_id, w->opt.lease_ms);
            pthread_mutex_lock(&w->mu);
        }
    } else {
        wrk_log(w, ENG_LOG_INFO, r->id, "colocated, %d prompt tokens%s, %d KV blocks", wrk_input_tokens(r),
                r->n_resumed ? " (resuming a migrated stream)" : "", r->seq.n_blocks);
        pthread_mutex_lock(&w->mu);
    }
    r->arming = 0;
    pthread_cond_signal(&w->cv);
    wrk_req_unref_locked(w, r);
    pthread_mutex_unlock(&w->mu);
    rpc_msg_free(g);
}

/* ------------------------------------------------------------------ Decode.KvReady */

/* Under w->mu: the DECODE request `id` that waits for its KV through `transfer`, or NULL
 * with the reason (KvReady and KvRenew name a reservation the same way). */
static wrk_req *reserved_req(wrk_worker *w, const char *id, uint64_t transfer, char *reason, size_t cap)
{
    wrk_req *r = w->reqs;
    while (r && !(r->kind == REQ_DECODE && !strcmp(r->id, id)))
        r = r->next;
    if (!r)
        snprintf(reason, cap, "unknown request %s (ended, or never reserved here)", id);
    else if (r->ending || r->state != ST_RESERVED || r->arming)
        snprintf(reason, cap, "request %s is not waiting for its KV", id), r = NULL;
    else if (r->transfer_id != transfer)
        snprintf(reason, cap, "transfer %llu is not request %s's (%llu)", (unsigned long long)transfer, id,
                 (unsigned long long)r->transfer_id),
            r = NULL;
    return r;
}

static void on_kv_ready(void *user, rpc_call *call, const rpc_bytes *bytes, rpc_bytes *resp, rpc_status *st)
{
    (void)call;
    wrk_worker *w = user;
    Tandem__KvReadyRequest *q = rpc_unpack(&tandem__kv_ready_request__descriptor, bytes->data, bytes->len, st);
    if (!q)
        return;
    char reason[900] = "";
    int ok = 0;
    pthread_mutex_lock(&w->mu);
    wrk_req *r = reserved_req(w, q->request_id, q->transfer_id, reason, sizeof reason);
    if (r && (!q->first_token || q->first_token->id < 0 || q->first_token->id >= w->cfg->vocab_size ||
              q->first_token->index != (uint32_t)r->n_resumed))
        snprintf(reason, sizeof reason, "no valid first token (index %d expected)", r->n_resumed), r = NULL;
    else if (r && q->prompt_tokens != (uint32_t)wrk_input_tokens(r))
        snprintf(reason, sizeof reason, "prompt_tokens %u, but the request has %d", q->prompt_tokens,
                 wrk_input_tokens(r)),
            r = NULL;
    if (r)
        r->refs++;
    pthread_mutex_unlock(&w->mu);

    if (r) {
        eng_error err;
        /* The sender saw the verdict; the receiver turns OK right after sending it. */
        kvt_state ks = kvt_wait(w->kvt, r->transfer_id, 5000, &err);
        pthread_mutex_lock(&w->mu);
        if (ks != KVT_OK) {
            snprintf(reason, sizeof reason, "KV transfer %llu not verified: %s", (unsigned long long)r->transfer_id,
                     ks == KVT_PENDING ? "still pending after 5 s" : err.msg);
            wrk_req_end_locked(w, r, RPC_DATA_LOSS, 0, reason);
        } else if (r->ending || r->state != ST_RESERVED) {
            snprintf(reason, sizeof reason, "request %s ended while its transfer was checked", r->id);
        } else {
            r->gen[r->n_gen++] = q->first_token->id;
            r->seq.n_past = wrk_input_tokens(r);
            r->t_last_token = eng_now_s();
            ok = 1;
            int f = wrk_finish_reason(q->first_token->id, r->stop_ids, r->n_stop, r->n_prompt, r->n_gen, r->cap_tokens);
            if (f || q->first_token->finish_reason != TANDEM__FINISH_REASON__FINISH_NONE)
                wrk_req_end_locked(w, r, RPC_OK, 0, NULL); /* the first token was the last */
            else
                r->state = ST_READY;
            pthread_cond_signal(&w->cv);
        }
        wrk_req_unref_locked(w, r);
        pthread_mutex_unlock(&w->mu);
    }
    wrk_log(w, ENG_LOG_DEBUG, q->request_id, "KvReady transfer %llu: %s%s", (unsigned long long)q->transfer_id,
            ok ? "verified, joining the batch" : "refused: ", reason);
    Tandem__KvReadyReply rep = TANDEM__KV_READY_REPLY__INIT;
    rep.ok = ok;
    rep.reason = reason;
    if (rpc_pack(&rep.base, resp) < 0)
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    rpc_msg_free(q);
}

/* ------------------------------------------------------------------ Decode.KvRenew */

/* The prefill worker still holds the request: the lease starts again from now. */
static void on_kv_renew(void *user, rpc_call *call, const rpc_bytes *bytes, rpc_bytes *resp, rpc_status *st)
{
    (void)call;
    wrk_worker *w = user;
    Tandem__KvRenewRequest *q = rpc_unpack(&tandem__kv_renew_request__descriptor, bytes->data, bytes->len, st);
    if (!q)
        return;
    char reason[900] = "";
    pthread_mutex_lock(&w->mu);
    wrk_req *r = reserved_req(w, q->request_id, q->transfer_id, reason, sizeof reason);
    if (r)
        r->lease_deadline = eng_now_s() + w->opt.lease_ms / 1000.0;
    pthread_mutex_unlock(&w->mu);
    wrk_log(w, ENG_LOG_DEBUG, q->request_id, "KvRenew transfer %llu: %s%s", (unsigned long long)q->transfer_id,
            r ? "lease renewed" : "refused: ", reason);
    Tandem__KvRenewReply rep = TANDEM__KV_RENEW_REPLY__INIT;
    rep.ok = r != NULL;
    rep.reason = reason;
    if (rpc_pack(&rep.base, resp) < 0)
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    rpc_msg_free(q);
}

/* ------------------------------------------------------------------ Decode.KvHello */

static void on_kv_hello(void *user, rpc_call *call, const rpc_bytes *bytes, rpc_bytes *resp, rpc_status *st)
{
    (void)call;
    wrk_worker *w = user;
    Tandem__KvHelloRequest *q = rpc_unpack(&tandem__kv_hello_request__descriptor, bytes->data, bytes->len, st);
    if (!q)
        return;
    eng_error err;
    Tandem__KvHelloReply rep = TANDEM__KV_HELLO_REPLY__INIT;
    uint8_t reply[KVT_HELLO_MAX];
    size_t reply_len = 0;
    rep.ok = kvt_accept_hello(w->kvt, q->hello.data, q->hello.len, reply, sizeof reply, &reply_len, &err) == 0;
    rep.reason = rep.ok ? "" : err.msg;
    rep.reply.data = reply;
    rep.reply.len = rep.ok ? reply_len : 0;
    wrk_log(w, ENG_LOG_DEBUG, q->request_id, "KvHello of %zu bytes: %s", q->hello.len, rep.ok ? "accepted" : err.msg);
    if (rpc_pack(&rep.base, resp) < 0)
        rpc_status_set(st, RPC_RESOURCE_EXHAUSTED, "out of memory");
    rpc_msg_free(q);
}

/* ------------------------------------------------------------------ Prefill.Run */

/* The target must be ours to write: same layout, a block for every prompt block. */
/* Delivers the peer's handshake to the decode worker when its transport needs one. */
static int relay_hello(wrk_worker *w, kvt_peer *peer, const Tandem__KvTarget *t, const char *id, char *msg, size_t cap)
{
    uint8_t hello[KVT_HELLO_MAX];
    size_t n = kvt_peer_hello(peer, hello, sizeof hello);
    if (n == 0)
        return RPC_OK;
    rpc_status st;
    rpc_channel *ch = wrk_channel(w, t->rpc_address, &st);
    if (!ch)
        return snprintf(msg, cap, "decode worker %s: %s", t->rpc_address, st.msg), RPC_UNAVAILABLE;
    Tandem__KvHelloRequest q = TANDEM__KV_HELLO_REQUEST__INIT;
    q.request_id = (char *)id;
    q.hello.data = hello;
    q.hello.len = n;
    Tandem__KvHelloReply *rep = NULL;
    if (rpc_unary_msg(ch, RPC_DECODE_KV_HELLO, &q.base, &tandem__kv_hello_reply__descriptor, 5000, (void **)&rep, &st) <
        0)
        return snprintf(msg, cap, "KvHello to %s: %s", t->rpc_address, st.msg), RPC_UNAVAILABLE;
    int ok = rep->ok;
    eng_error err;
    if (!ok)
        snprintf(msg, cap, "KvHello refused by %s: %s", t->rpc_address, rep->reason);
    else if (kvt_peer_reply(peer, rep->reply.data, rep->reply.len, &err) < 0)
        ok = 0, snprintf(msg, cap, "KvHello reply from %s: %s", t->rpc_address, err.msg);
    rpc_msg_free(rep);
    return ok ? RPC_OK : RPC_UNAVAILABLE;
}

/* Seconds between Decode.KvRenew calls for a lease of lease_ms: a third of it, so that
 * one late or lost renewal does not end it; at least the Run handler's 50 ms tick. */
static double renew_interval_s(uint32_t lease_ms)
{
    return lease_ms > 150 ? lease_ms / 3000.0 : 0.05;
}

/* Decode.KvRenew for the target's reservation. 1: renewed, or the decode worker did not
 * answer (it may only be busy; the push fails anyway if it is gone); 0: refused (the
 * reservation is gone), with the reason in why. */
static int renew_lease(wrk_worker *w, const Tandem__KvTarget *t, const char *id, char *why, size_t cap)
{
    rpc_status st;
    rpc_channel *ch = wrk_channel(w, t->rpc_address, &st);
    Tandem__KvRenewRequest q = TANDEM__KV_RENEW_REQUEST__INIT;
    q.request_id = t->request_id;
    q.transfer_id = t->transfer_id;
    Tandem__KvRenewReply *rep = NULL;
    int timeout_ms = t->lease_ms / 2 > 100 ? (int)(t->lease_ms / 2) : 100;
    if (!ch || rpc_unary_msg(ch, RPC_DECODE_KV_RENEW, &q.base, &tandem__kv_renew_reply__descriptor, timeout_ms,
                             (void **)&rep, &st) < 0) {
        wrk_log(w, ENG_LOG_WARN, id, "KvRenew to %s: %s", t->rpc_address, st.msg);
        return 1;
    }
    int ok = rep->ok;
    if (!ok)
        snprintf(why, cap, "decode worker %s dropped the reservation: %s", t->decode_worker_id, rep->reason);
    rpc_msg_free(rep);
    return ok;
}

static void on_prefill(void *user, rpc_call *call, const rpc_bytes *bytes, rpc_bytes *resp, rpc_status *st)
{
    wrk_worker *w = user;
    Tandem__PrefillRequest *q = rpc_unpack(&tandem__prefill_request__descriptor, bytes->data, bytes->len, st);
    if (!q)
        return;
    char msg[900] = "";
    int code = RPC_OK, counted = 0;
    wrk_req *r = NULL;
    kvt_peer *peer = NULL;
    kvt_send *send = NULL;
    eng_error err;
    if (wrk_role_now(w) == WRK_ROLE_DECODE) {
        code = RPC_FAILED_PRECONDITION;
        snprintf(msg, sizeof msg, "this is a decode worker: it does not serve Prefill.Run");
    } else if (!(r = wrk_req_new(w, REQ_PREFILL, q->request_id))) {
        code = RPC_RESOURCE_EXHAUSTED;
        snprintf(msg, sizeof msg, "out of memory");
    } else if ((code = take_request(w, r, q->prompt, q->n_prompt, q->generated, q->n_generated, q->sampling, msg,
                                    sizeof msg)) == RPC_OK &&
               (code = wrk_check_target(&w->layout, kvt_name(w->kvt), q->target, wrk_input_tokens(r), msg,
                                        sizeof msg)) == RPC_OK) {
        if (blocks_for(w, wrk_input_tokens(r)) > eng_kv_pool_blocks(w->pool)) {
            code = RPC_RESOURCE_EXHAUSTED;
            snprintf(msg, sizeof msg, "the prompt needs %d KV blocks; the pool has %d",
                     blocks_for(w, wrk_input_tokens(r)), eng_kv_pool_blocks(w->pool));
        } else if (kvt_connect(w->kvt, q->target->descriptor.data, q->target->descriptor.len, &peer, &err) < 0) {
            code = RPC_UNAVAILABLE;
            snprintf(msg, sizeof msg, "cannot reach decode worker %s's KV endpoint: %s", q->target->decode_worker_id,
                     err.msg);
        } else if ((code = relay_hello(w, peer, q->target, r->id, msg, sizeof msg)) == RPC_OK &&
                   kvt_send_begin(peer, w->region, q->target->transfer_id,
                                  (const kvt_secret *)q->target->transfer_secret.data, &send, &err) < 0) {
            code = RPC_UNAVAILABLE;
            snprintf(msg, sizeof msg, "KV transfer to %s: %s", q->target->decode_worker_id, err.msg);
        }
    }
    if (code == RPC_OK) {
        r->dst_blocks = malloc(q->target->n_block_ids * sizeof *r->dst_blocks);
        if (!r->dst_blocks) {
            code = RPC_RESOURCE_EXHAUSTED;
            snprintf(msg, sizeof msg, "out of memory");
        } else {
            memcpy(r->dst_blocks, q->target->block_ids, q->target->n_block_ids * sizeof *r->dst_blocks);
            r->n_dst = (int)q->target->n_block_ids;
            r->dst_pool_blocks = q->target->pool_blocks;
            r->send = send;
            r->t_enqueued = eng_now_s();
        }
    }
    if (code == RPC_OK) {
        pthread_mutex_lock(&w->mu);
        if (w->stopping || w->draining) {
            code = RPC_UNAVAILABLE;
            snprintf(msg, sizeof msg, "the worker is %s", w->stopping ? "shutting down" : "draining");
        } else {
            wrk_req_link(w, r);
            w->open_runs++;
            counted = 1;
            /* Wait for the engine; notice the caller leaving (it cannot call us back);
             * keep the decode worker's reservation while the prompt queues or computes. */
            double renew_every = renew_interval_s(q->target->lease_ms), next_renew = eng_now_s() + renew_every;
            while (!r->done) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 50 * 1000000L;
                if (ts.tv_nsec >= 1000000000L)
                    ts.tv_sec++, ts.tv_nsec -= 1000000000L;
                pthread_cond_timedwait(&r->done_cv, &w->mu, &ts);
                if (!r->done && !r->cancelled && rpc_call_cancelled(call)) {
                    r->cancelled = 1;
                    pthread_cond_signal(&w->cv);
                }
                if (!r->done && !r->ending && eng_now_s() >= next_renew) {
                    pthread_mutex_unlock(&w->mu);
                    char why[900];
                    int kept = renew_lease(w, q->target, r->id, why, sizeof why);
                    pthread_mutex_lock(&w->mu);
                    next_renew = eng_now_s() + renew_every;
                    if (!kept && !r->ending) /* nobody waits for this KV any more */
                        wrk_req_end_locked(w, r, RPC_ABORTED, 1, why);
                }
            }
            if (r->ending) {
                code = r->end_code;
                snprintf(msg, sizeof msg, "%s", r->end_msg);
            }
        }
        pthread_mutex_unlock(&w->mu);
        wrk_log(w, ENG_LOG_DEBUG, r->id, "prefill of %d tokens %s", wrk_input_tokens(r),
                code == RPC_OK ? "computed, waiting for the receiver's verdict" : msg);
    }

    /* The engine is done with the request: finish or abort the push, free our blocks. */
    uint64_t kv_bytes = (uint64_t)w->layout.n_layers * (uint64_t)(r ? blocks_for(w, wrk_input_tokens(r)) : 0) *
                        w->unit_bytes;
    if (send) {
        if (code == RPC_OK && kvt_send_finish(send, 30000, &err) < 0) {
            code = RPC_UNAVAILABLE;
            snprintf(msg, sizeof msg, "KV transfer to %s failed: %s", q->target->decode_worker_id, err.msg);
        } else if (code != RPC_OK) {
            kvt_send_abort(send, msg);
        }
    }
    double t_end = eng_now_s();
    if (r) {
        pthread_mutex_lock(&w->mu);
        wrk_prompt_blocks_give(w, r);
        pthread_mutex_unlock(&w->mu);
    }
    if (code == RPC_OK) {
        Tandem__Token tok;
        Tandem__TokenLogprob store[ENG_MAX_TOP_LOGPROBS], *ptrs[ENG_MAX_TOP_LOGPROBS];
        int f = wrk_finish_reason(r->first.id, r->stop_ids, r->n_stop, r->n_prompt, r->n_resumed + 1, r->cap_tokens);
        wrk_token_msg(&r->first, r->n_resumed, f, &tok, store, ptrs);
        Tandem__PrefillTimings tm = TANDEM__PREFILL_TIMINGS__INIT;
        tm.queue_us = (uint64_t)((r->t_started - r->t_enqueued) * 1e6);
        tm.compute_us = (uint64_t)((r->t_computed - r->t_started) * 1e6);
        tm.transfer_us = (uint64_t)((t_end - r->t_started) * 1e6);
        tm.kv_bytes = kv_bytes;
        Tandem__PrefillResult res = TANDEM__PREFILL_RESULT__INIT;
        res.first_token = &tok;
        res.prompt_tokens = (uint32_t)wrk_input_tokens(r);
        res.timings = &tm;
        if (rpc_pack(&res.base, resp) < 0)
            code = RPC_RESOURCE_EXHAUSTED, snprintf(msg, sizeof msg, "out of memory");
        met_inc(w->m_kv_bytes, (double)kv_bytes);
        met_observe(w->m_kv_seconds, t_end - r->t_started);
        met_observe(w->m_ttft, t_end - r->t_arrival);
        met_observe(w->m_e2e, t_end - r->t_arrival);
        wrk_log(w, ENG_LOG_INFO, r->id,
                "first token %d, %llu KV bytes pushed to %s in %.1f ms (queue %.1f, compute %.1f)", r->first.id,
                (unsigned long long)kv_bytes, q->target->decode_worker_id, tm.transfer_us / 1e3, tm.queue_us / 1e3,
                tm.compute_us / 1e3);
    }
    if (code == RPC_OK)
        met_inc(w->m_ok, 1);
    else if (code == RPC_CANCELLED)
        met_inc(w->m_cancelled, 1);
    else if (code == RPC_RESOURCE_EXHAUSTED)
        met_inc(w->m_rejected, 1);
    else
        met_inc(w->m_error, 1);
    if (code != RPC_OK) {
        wrk_log(w, ENG_LOG_ERROR, q->request_id, "Prefill.Run failed: %s (%s)", msg, rpc_code_name(code));
        rpc_status_set(st, code, "%s", msg);
    }
    if (r) {
        pthread_mutex_lock(&w->mu);
        w->open_runs -= counted;
        wrk_req_unref_locked(w, r);
        pthread_mutex_unlock(&w->mu);
    }
    rpc_msg_free(q);
}

int wrk_service_register(wrk_worker *w, rpc_status *st)
{
    if (rpc_server_add_unary(w->server, RPC_PREFILL_RUN, on_prefill, w, st) < 0 ||
        rpc_server_add_stream(w->server, RPC_DECODE_GENERATE, on_generate, w, st) < 0 ||
        rpc_server_add_unary(w->server, RPC_DECODE_KV_READY, on_kv_ready, w, st) < 0 ||
        rpc_server_add_unary(w->server, RPC_DECODE_KV_HELLO, on_kv_hello, w, st) < 0 ||
        rpc_server_add_unary(w->server, RPC_DECODE_KV_RENEW, on_kv_renew, w, st) < 0 || wrk_control_register(w, st) < 0)
        return -1;
    return 0;
}

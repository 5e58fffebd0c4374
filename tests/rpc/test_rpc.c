/* test_rpc.c: the rpc library against a real gRPC server on loopback, carrying the
 * real tandem.proto messages: unary round trips and errors, deadlines, long streams
 * sent from other threads, cancellation seen by the server, a server that stops or is
 * killed mid-stream, 32 concurrent streams, unknown methods, bad bytes, busy ports. */
#include <ctype.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "rpc.h"
#include "tandem.pb-c.h"
#include "check.h"

#define REGISTER RPC_REGISTRY_REGISTER
#define PREFILL RPC_PREFILL_RUN
#define GENERATE RPC_DECODE_GENERATE
#define HOLD "/test.Stream/Hold"
#define GARBAGE "/test.Stream/Garbage"
#define FLOOD "/test.Stream/Flood"
#define RACE "/test.Stream/Race"

/* ------------------------------------------------------------------ handlers */

/* RegisterWorker: accepts a worker with an id, echoing it, and refuses one without. */
static void on_register(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)user;
    REQUIRE(strcmp(rpc_call_method(call), REGISTER) == 0);
    REQUIRE(strstr(rpc_call_peer(call), "127.0.0.1:"));
    Tandem__WorkerInfo *w = rpc_unpack(&tandem__worker_info__descriptor, req->data, req->len, st);
    if (!w)
        return;
    if (!w->worker_id[0]) {
        rpc_status_set(st, RPC_INVALID_ARGUMENT, "worker_id missing");
        rpc_msg_free(w);
        return;
    }
    Tandem__RegisterReply r = TANDEM__REGISTER_REPLY__INIT;
    char reason[128];
    snprintf(reason, sizeof reason, "hello %s on %s with %zu transports", w->worker_id, w->rpc_address,
             w->n_transports);
    r.accepted = 1;
    r.reason = reason;
    r.heartbeat_interval_ms = w->capacity ? w->capacity->kv_blocks_total : 0;
    rpc_pack(&r.base, resp);
    rpc_msg_free(w);
}

/* Prefill.Run stand-in that takes long: waits for cancellation for up to 2 s. */
static atomic_int prefill_saw_cancel;
static void on_slow_prefill(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)user;
    (void)req;
    if (rpc_call_wait_cancel(call, 2000)) {
        atomic_store(&prefill_saw_cancel, 1);
        rpc_status_set(st, RPC_CANCELLED, "abandoned");
        return;
    }
    Tandem__PrefillResult r = TANDEM__PREFILL_RESULT__INIT;
    r.prompt_tokens = 7;
    rpc_pack(&r.base, resp);
}

/* Generate: a KvTarget, then max_tokens tokens prompt[0]+i. colocated = true hands the
 * call to a separate thread to prove that any thread may send and finish. */
typedef struct gen_job {
    rpc_call *call;
    int first, n;
} gen_job;

static void *gen_send(void *arg)
{
    gen_job *j = arg;
    Tandem__GenerateEvent ev = TANDEM__GENERATE_EVENT__INIT;
    Tandem__KvTarget kt = TANDEM__KV_TARGET__INIT;
    int32_t blocks[3] = {4, 9, 2};
    kt.request_id = "req-1";
    kt.transport = "tcp";
    kt.n_block_ids = 3;
    kt.block_ids = blocks;
    ev.event_case = TANDEM__GENERATE_EVENT__EVENT_KV_TARGET;
    ev.kv_target = &kt;
    int ok = rpc_call_send_msg(j->call, &ev.base, -1) == 0;
    for (int i = 0; ok && i < j->n; i++) {
        Tandem__Token tok = TANDEM__TOKEN__INIT;
        tok.id = j->first + i;
        tok.index = (uint32_t)i;
        tok.logprob = -0.5f;
        tok.finish_reason = i == j->n - 1 ? TANDEM__FINISH_REASON__FINISH_LENGTH : TANDEM__FINISH_REASON__FINISH_NONE;
        ev.event_case = TANDEM__GENERATE_EVENT__EVENT_TOKEN;
        ev.token = &tok;
        ok = rpc_call_send_msg(j->call, &ev.base, -1) == 0;
    }
    rpc_call_finish(j->call, ok ? RPC_OK : RPC_CANCELLED, ok ? NULL : "client went away");
    free(j);
    return NULL;
}

static pthread_mutex_t sender_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t senders[64];
static int n_senders;

static void on_generate(void *user, rpc_call *call, const rpc_bytes *req)
{
    (void)user;
    rpc_status st;
    Tandem__GenerateRequest *g = rpc_unpack(&tandem__generate_request__descriptor, req->data, req->len, &st);
    if (!g) {
        rpc_call_finish(call, st.code, st.msg);
        return;
    }
    if (g->n_prompt == 0 || !g->sampling) {
        rpc_msg_free(g);
        rpc_call_finish(call, RPC_INVALID_ARGUMENT, "empty prompt");
        return;
    }
    gen_job *j = malloc(sizeof *j);
    REQUIRE(j);
    j->call = call;
    j->first = g->prompt[0];
    j->n = (int)g->sampling->max_tokens;
    int elsewhere = g->colocated;
    rpc_msg_free(g);
    if (!elsewhere) {
        gen_send(j);
        return;
    }
    pthread_mutex_lock(&sender_mu);
    REQUIRE(n_senders < 64);
    REQUIRE(pthread_create(&senders[n_senders++], NULL, gen_send, j) == 0);
    pthread_mutex_unlock(&sender_mu);
}

static void join_senders(void)
{
    pthread_mutex_lock(&sender_mu);
    for (int i = 0; i < n_senders; i++)
        pthread_join(senders[i], NULL);
    n_senders = 0;
    pthread_mutex_unlock(&sender_mu);
}

/* Hold: sends one message and keeps the call open, owned by nobody, until the client
 * cancels (or the server stops); the cancel callback records when and finishes it. */
static atomic_int hold_cancels;
static _Atomic double hold_cancel_at;
static void hold_cancelled(void *arg)
{
    hold_cancel_at = eng_now_s() * 1e3;
    atomic_fetch_add(&hold_cancels, 1);
    rpc_call_finish((rpc_call *)arg, RPC_CANCELLED, "client went away");
}

static void on_hold(void *user, rpc_call *call, const rpc_bytes *req)
{
    (void)user;
    (void)req;
    rpc_call_send(call, "ready", 5, -1);
    rpc_call_on_cancel(call, hold_cancelled, call);
}

/* Garbage: a message that is not a valid protobuf (field 0 is illegal). */
static void on_garbage(void *user, rpc_call *call, const rpc_bytes *req)
{
    (void)user;
    (void)req;
    static const uint8_t bad[] = {0x00, 0xff, 0xff, 0xff};
    rpc_call_send(call, bad, sizeof bad, -1);
    rpc_call_finish(call, RPC_OK, NULL);
}

/* Flood: sends 1 KiB messages until a send fails, then reports why. With request
 * "block" a full queue waits for room forever (only cancellation stops it), else 200 ms. */
static atomic_int flood_sent, flood_result; /* result: 1 queue stayed full, 2 cancelled */
static void on_flood(void *user, rpc_call *call, const rpc_bytes *req)
{
    (void)user;
    int block = req->len == 5 && memcmp(req->data, "block", 5) == 0;
    char buf[1024];
    memset(buf, 'f', sizeof buf);
    int n = 0;
    while (rpc_call_send(call, buf, sizeof buf, block ? -1 : 200) == 0)
        n++;
    atomic_store(&flood_sent, n);
    int cancelled = rpc_call_cancelled(call);
    atomic_store(&flood_result, cancelled ? 2 : 1);
    rpc_call_finish(call, cancelled ? RPC_CANCELLED : RPC_RESOURCE_EXHAUSTED, "client too slow");
}

/* Race: the cancel callback is slow, and another thread (the owner) registers a second
 * callback and finishes the call meanwhile: both must wait for the first callback,
 * the second runs at once on the owner's thread (the call is cancelled by then). */
static rpc_call *race_call;
static atomic_int race_in_cb, race_cb_done, race_second_saw_done, race_finish_saw_done;
static void race_cb(void *arg)
{
    (void)arg;
    atomic_store(&race_in_cb, 1);
    usleep(100000);
    atomic_store(&race_cb_done, 1);
}

static void race_second_cb(void *arg)
{
    (void)arg;
    atomic_store(&race_second_saw_done, atomic_load(&race_cb_done) ? 1 : -1);
}

static void on_race(void *user, rpc_call *call, const rpc_bytes *req)
{
    (void)user;
    (void)req;
    REQUIRE(rpc_call_wait_cancel(call, 20) == 0 && !rpc_call_cancelled(call));
    race_call = call;
    rpc_call_on_cancel(call, race_cb, NULL);
    REQUIRE(rpc_call_send(call, "ready", 5, -1) == 0);
}

static void *race_owner(void *arg)
{
    (void)arg;
    while (!atomic_load(&race_in_cb))
        usleep(1000);
    rpc_call_on_cancel(race_call, race_second_cb, NULL);
    REQUIRE(rpc_call_cancelled(race_call) && rpc_call_wait_cancel(race_call, -1));
    REQUIRE(rpc_call_send(race_call, "late", 4, 0) == -1);
    rpc_call_finish(race_call, RPC_CANCELLED, NULL);
    atomic_store(&race_finish_saw_done, atomic_load(&race_cb_done) ? 1 : -1);
    return NULL;
}

static rpc_server *start_server(int *port)
{
    rpc_server *s;
    rpc_status st;
    REQUIRE(rpc_server_create("127.0.0.1:0", port, &s, &st) == 0);
    REQUIRE(*port > 0 && rpc_server_port(s) == *port);
    REQUIRE(rpc_server_add_unary(s, REGISTER, on_register, NULL, &st) == 0);
    REQUIRE(rpc_server_add_unary(s, PREFILL, on_slow_prefill, NULL, &st) == 0);
    REQUIRE(rpc_server_add_stream(s, GENERATE, on_generate, NULL, &st) == 0);
    REQUIRE(rpc_server_add_stream(s, HOLD, on_hold, NULL, &st) == 0);
    REQUIRE(rpc_server_add_stream(s, GARBAGE, on_garbage, NULL, &st) == 0);
    REQUIRE(rpc_server_add_stream(s, FLOOD, on_flood, NULL, &st) == 0);
    REQUIRE(rpc_server_add_stream(s, RACE, on_race, NULL, &st) == 0);
    REQUIRE(rpc_server_add_stream(s, HOLD, on_hold, NULL, &st) == -1 && st.code == RPC_ALREADY_EXISTS);
    REQUIRE(rpc_server_add_unary(s, "no-slash", on_register, NULL, &st) == -1 && st.code == RPC_INVALID_ARGUMENT);
    REQUIRE(rpc_server_start(s, &st) == 0);
    REQUIRE(rpc_server_add_unary(s, "/x.Y/Z", on_register, NULL, &st) == -1);
    return s;
}

static rpc_channel *connect_to(int port)
{
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    rpc_channel *ch;
    rpc_status st;
    REQUIRE(rpc_channel_create(target, &ch, &st) == 0);
    return ch;
}

/* ------------------------------------------------------------------ tests */

static void test_unary(rpc_channel *ch)
{
    Tandem__WorkerInfo w = TANDEM__WORKER_INFO__INIT;
    Tandem__Capacity cap = TANDEM__CAPACITY__INIT;
    Tandem__KvLayout lay = TANDEM__KV_LAYOUT__INIT;
    Tandem__TransportEndpoint tcp = TANDEM__TRANSPORT_ENDPOINT__INIT, *eps[1] = {&tcp};
    w.worker_id = "decode-0";
    w.role = TANDEM__ROLE__ROLE_DECODE;
    w.rpc_address = "127.0.0.1:7001";
    cap.kv_blocks_total = 4096;
    w.capacity = &cap;
    lay.block_size = 16;
    w.kv_layout = &lay;
    tcp.transport = "tcp";
    w.n_transports = 1;
    w.transports = eps;
    rpc_status st;
    Tandem__RegisterReply *r;
    REQUIRE(rpc_unary_msg(ch, REGISTER, &w.base, &tandem__register_reply__descriptor, 2000, (void **)&r, &st) == 0);
    REQUIRE(st.code == RPC_OK);
    REQUIRE(r->accepted && r->heartbeat_interval_ms == 4096);
    REQUIRE(strcmp(r->reason, "hello decode-0 on 127.0.0.1:7001 with 1 transports") == 0);
    rpc_msg_free(r);

    /* Latency of a small call on a warm channel. */
    enum { CALLS = 200 };
    double t0 = eng_now_s() * 1e3;
    for (int i = 0; i < CALLS; i++) {
        REQUIRE(rpc_unary_msg(ch, REGISTER, &w.base, &tandem__register_reply__descriptor, 2000, (void **)&r, &st) == 0);
        rpc_msg_free(r);
    }
    double per_call_us = (eng_now_s() * 1e3 - t0) * 1000 / CALLS;

    /* An error status from the handler, with its message. */
    w.worker_id = "";
    REQUIRE(rpc_unary_msg(ch, REGISTER, &w.base, &tandem__register_reply__descriptor, 2000, (void **)&r, &st) == -1);
    REQUIRE(r == NULL && st.code == RPC_INVALID_ARGUMENT && strcmp(st.msg, "worker_id missing") == 0);

    /* Bytes that are no WorkerInfo: the handler's rpc_unpack turns them down. */
    static const uint8_t bad[] = {0x0a, 0x50, 'x'}; /* field 1, length 80, 1 byte present */
    rpc_bytes out;
    REQUIRE(rpc_unary(ch, REGISTER, bad, sizeof bad, 2000, &out, &st) == -1);
    REQUIRE(st.code == RPC_INVALID_ARGUMENT && strstr(st.msg, "tandem.WorkerInfo"));
    REQUIRE(out.data == NULL);

    /* Unknown method. */
    REQUIRE(rpc_unary(ch, "/tandem.Nope/Missing", "", 0, 2000, &out, &st) == -1);
    REQUIRE(st.code == RPC_UNIMPLEMENTED);
    REQUIRE(strstr(st.msg, "/tandem.Nope/Missing"));
    printf("unary: round trip (%.0f us per call), error status, bad bytes, unknown method ok\n", per_call_us);
}

static void test_deadline(rpc_channel *ch)
{
    rpc_status st;
    rpc_bytes out;
    atomic_store(&prefill_saw_cancel, 0);
    double t0 = eng_now_s() * 1e3;
    REQUIRE(rpc_unary(ch, PREFILL, "", 0, 150, &out, &st) == -1);
    double took = eng_now_s() * 1e3 - t0;
    REQUIRE(st.code == RPC_DEADLINE_EXCEEDED);
    REQUIRE(took >= 140 && took < 1000);
    /* The handler, still waiting, learns of it promptly. */
    for (int i = 0; i < 100 && !atomic_load(&prefill_saw_cancel); i++)
        usleep(5000);
    REQUIRE(atomic_load(&prefill_saw_cancel));
    printf("deadline: DEADLINE_EXCEEDED after %.0f ms (150 asked), handler saw it\n", took);
}

/* Reads one Generate stream to the end and checks every event. */
static void read_generate(rpc_channel *ch, int first, int n, int elsewhere)
{
    Tandem__GenerateRequest g = TANDEM__GENERATE_REQUEST__INIT;
    Tandem__SamplingParams sp = TANDEM__SAMPLING_PARAMS__INIT;
    int32_t prompt[2] = {first, 1};
    g.request_id = "r";
    g.n_prompt = 2;
    g.prompt = prompt;
    sp.max_tokens = (uint32_t)n;
    g.sampling = &sp;
    g.colocated = elsewhere;
    rpc_stream *s;
    rpc_status st;
    REQUIRE(rpc_stream_open_msg(ch, GENERATE, &g.base, 30000, &s, &st) == 0);
    Tandem__GenerateEvent *ev;
    REQUIRE(rpc_stream_next_msg(s, 10000, &tandem__generate_event__descriptor, (void **)&ev, &st) == RPC_NEXT_MSG);
    REQUIRE(ev->event_case == TANDEM__GENERATE_EVENT__EVENT_KV_TARGET);
    REQUIRE(ev->kv_target->n_block_ids == 3 && ev->kv_target->block_ids[1] == 9);
    REQUIRE(strcmp(ev->kv_target->transport, "tcp") == 0);
    rpc_msg_free(ev);
    for (int i = 0; i < n; i++) {
        REQUIRE(rpc_stream_next_msg(s, 10000, &tandem__generate_event__descriptor, (void **)&ev, &st) == RPC_NEXT_MSG);
        REQUIRE(ev->event_case == TANDEM__GENERATE_EVENT__EVENT_TOKEN);
        REQUIRE(ev->token->id == first + i && ev->token->index == (uint32_t)i);
        REQUIRE((ev->token->finish_reason == TANDEM__FINISH_REASON__FINISH_LENGTH) == (i == n - 1));
        rpc_msg_free(ev);
    }
    REQUIRE(rpc_stream_next_msg(s, 10000, &tandem__generate_event__descriptor, (void **)&ev, &st) == RPC_NEXT_END);
    REQUIRE(st.code == RPC_OK);
    REQUIRE(rpc_stream_next_msg(s, 0, &tandem__generate_event__descriptor, (void **)&ev, &st) == RPC_NEXT_END);
    rpc_stream_close(s);
}

static void test_stream_many(rpc_channel *ch)
{
    double t0 = eng_now_s() * 1e3;
    read_generate(ch, 100, 5000, 0);
    double t1 = eng_now_s() * 1e3;
    read_generate(ch, 7, 3000, 1);
    printf("stream: 5000 messages from the handler in %.0f ms, 3000 from another thread ok\n", t1 - t0);

    /* A handler's error status ends the stream. */
    Tandem__GenerateRequest g = TANDEM__GENERATE_REQUEST__INIT;
    rpc_stream *s;
    rpc_status st;
    rpc_bytes b;
    REQUIRE(rpc_stream_open_msg(ch, GENERATE, &g.base, 5000, &s, &st) == 0);
    REQUIRE(rpc_stream_next(s, 5000, &b, &st) == RPC_NEXT_END);
    REQUIRE(st.code == RPC_INVALID_ARGUMENT && strcmp(st.msg, "empty prompt") == 0);
    rpc_stream_close(s);

    /* A message that does not parse ends the stream with INTERNAL. */
    void *m;
    REQUIRE(rpc_stream_open(ch, GARBAGE, "", 0, 5000, &s, &st) == 0);
    REQUIRE(rpc_stream_next_msg(s, 5000, &tandem__generate_event__descriptor, &m, &st) == RPC_NEXT_END);
    REQUIRE(st.code == RPC_INTERNAL && m == NULL);
    REQUIRE(rpc_stream_next(s, 0, &b, &st) == RPC_NEXT_END && st.code == RPC_INTERNAL);
    rpc_stream_close(s);

    /* Unknown streaming method. */
    REQUIRE(rpc_stream_open(ch, "/tandem.Nope/Stream", "", 0, 5000, &s, &st) == 0);
    REQUIRE(rpc_stream_next(s, 5000, &b, &st) == RPC_NEXT_END && st.code == RPC_UNIMPLEMENTED);
    rpc_stream_close(s);
    printf("stream: error status, unparsable message, unknown method ok\n");
}

/* A reader that does not keep up: the server's queue fills, sends time out, and the
 * reader still gets every queued message and then the handler's status. */
static void test_backpressure(rpc_channel *ch)
{
    rpc_stream *s;
    rpc_status st;
    rpc_bytes b;
    atomic_store(&flood_result, 0);
    REQUIRE(rpc_stream_open(ch, FLOOD, "", 0, 10000, &s, &st) == 0);
    for (int i = 0; i < 300 && !atomic_load(&flood_result); i++)
        usleep(10000);
    REQUIRE(atomic_load(&flood_result) == 1);
    int sent = atomic_load(&flood_sent), got = 0;
    REQUIRE(sent >= RPC_SEND_QUEUE_MAX);
    rpc_next r;
    while ((r = rpc_stream_next(s, 5000, &b, &st)) == RPC_NEXT_MSG) {
        REQUIRE(b.len == 1024 && b.data[0] == 'f' && b.data[1023] == 'f');
        rpc_bytes_free(&b);
        got++;
    }
    REQUIRE(r == RPC_NEXT_END && st.code == RPC_RESOURCE_EXHAUSTED && strcmp(st.msg, "client too slow") == 0);
    REQUIRE(got == sent);
    rpc_stream_close(s);
    printf("backpressure: queue full after %d messages, all %d delivered, then the status\n", sent, got);
}

typedef struct canceller {
    rpc_stream *s;
    int delay_ms;
    double at;
} canceller;

static void *cancel_later(void *arg)
{
    canceller *c = arg;
    usleep((useconds_t)c->delay_ms * 1000);
    c->at = eng_now_s() * 1e3;
    rpc_stream_cancel(c->s);
    return NULL;
}

static void test_cancel(rpc_channel *ch)
{
    rpc_stream *s;
    rpc_status st;
    rpc_bytes b;
    int before = atomic_load(&hold_cancels);
    REQUIRE(rpc_stream_open(ch, HOLD, "", 0, 0, &s, &st) == 0);
    REQUIRE(rpc_stream_next(s, 5000, &b, &st) == RPC_NEXT_MSG);
    REQUIRE(b.len == 5 && memcmp(b.data, "ready", 5) == 0);
    rpc_bytes_free(&b);
    /* Nothing more comes: the wait times out and the stream goes on. */
    double t0 = eng_now_s() * 1e3;
    REQUIRE(rpc_stream_next(s, 50, &b, &st) == RPC_NEXT_TIMEOUT);
    REQUIRE(eng_now_s() * 1e3 - t0 >= 45);
    REQUIRE(st.code == RPC_DEADLINE_EXCEEDED);

    /* Another thread cancels while this one waits. */
    canceller c = {s, 30, 0};
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, cancel_later, &c) == 0);
    REQUIRE(rpc_stream_next(s, 5000, &b, &st) == RPC_NEXT_END);
    double reader_at = eng_now_s() * 1e3;
    REQUIRE(st.code == RPC_CANCELLED);
    pthread_join(t, NULL);
    for (int i = 0; i < 200 && atomic_load(&hold_cancels) == before; i++)
        usleep(1000);
    REQUIRE(atomic_load(&hold_cancels) == before + 1);
    double server_ms = hold_cancel_at - c.at;
    REQUIRE(server_ms < 100);
    rpc_stream_close(s);

    /* Closing an open stream cancels it too. */
    REQUIRE(rpc_stream_open(ch, HOLD, "", 0, 0, &s, &st) == 0);
    REQUIRE(rpc_stream_next(s, 5000, &b, &st) == RPC_NEXT_MSG);
    rpc_bytes_free(&b);
    rpc_stream_close(s);
    for (int i = 0; i < 200 && atomic_load(&hold_cancels) == before + 1; i++)
        usleep(1000);
    REQUIRE(atomic_load(&hold_cancels) == before + 2);
    printf("cancel: server saw the client's cancel after %.2f ms, reader after %.2f ms\n", server_ms, reader_at - c.at);

    /* A stream's deadline ends it on both sides. */
    REQUIRE(rpc_stream_open(ch, HOLD, "", 0, 120, &s, &st) == 0);
    double t1 = eng_now_s() * 1e3;
    REQUIRE(rpc_stream_next(s, 5000, &b, &st) == RPC_NEXT_MSG);
    rpc_bytes_free(&b);
    REQUIRE(rpc_stream_next(s, 5000, &b, &st) == RPC_NEXT_END);
    double took = eng_now_s() * 1e3 - t1;
    REQUIRE(st.code == RPC_DEADLINE_EXCEEDED && took >= 100 && took < 2000);
    for (int i = 0; i < 200 && atomic_load(&hold_cancels) == before + 2; i++)
        usleep(1000);
    REQUIRE(atomic_load(&hold_cancels) == before + 3);
    rpc_stream_close(s);
    printf("stream deadline: DEADLINE_EXCEEDED after %.0f ms (120 asked), handler saw it\n", took);
}

static void test_cancel_race(rpc_channel *ch)
{
    rpc_stream *s;
    rpc_status st;
    rpc_bytes b;
    REQUIRE(rpc_stream_open(ch, RACE, "", 0, 0, &s, &st) == 0);
    REQUIRE(rpc_stream_next(s, 5000, &b, &st) == RPC_NEXT_MSG);
    rpc_bytes_free(&b);
    pthread_t owner;
    REQUIRE(pthread_create(&owner, NULL, race_owner, NULL) == 0);
    rpc_stream_cancel(s);
    pthread_join(owner, NULL);
    REQUIRE(atomic_load(&race_second_saw_done) == 1);
    REQUIRE(atomic_load(&race_finish_saw_done) == 1);
    REQUIRE(rpc_stream_next(s, 5000, &b, &st) == RPC_NEXT_END && st.code == RPC_CANCELLED);
    rpc_stream_close(s);
    printf("cancel race: a second callback and finish waited for a running callback\n");
}

typedef struct worker_arg {
    rpc_channel *ch;
    int id;
} worker_arg;

static void *stream_worker(void *arg)
{
    worker_arg *w = arg;
    read_generate(w->ch, 1000 * w->id, 300, w->id % 2);
    return NULL;
}

static void *slow_unary(void *arg)
{
    rpc_bytes out;
    rpc_status st;
    REQUIRE(rpc_unary(arg, PREFILL, "", 0, 400, &out, &st) == -1 && st.code == RPC_DEADLINE_EXCEEDED);
    return NULL;
}

static void test_concurrent(rpc_channel *ch)
{
    enum { N = 32 };
    pthread_t t[N], slow;
    worker_arg a[N];
    /* A blocked unary handler must not hold up the others. */
    REQUIRE(pthread_create(&slow, NULL, slow_unary, ch) == 0);
    usleep(50000);
    double t0 = eng_now_s() * 1e3;
    for (int i = 0; i < N; i++) {
        a[i] = (worker_arg){ch, i + 1};
        REQUIRE(pthread_create(&t[i], NULL, stream_worker, &a[i]) == 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    double took = eng_now_s() * 1e3 - t0;
    pthread_join(slow, NULL);
    printf("concurrent: %d streams x 300 messages in %.0f ms (one unary handler blocked meanwhile)\n", N, took);
    join_senders();
}

typedef struct stopper {
    rpc_server *s;
    double done_at;
} stopper;

static void *stop_later(void *arg)
{
    stopper *p = arg;
    usleep(50000);
    rpc_server_stop(p->s);
    p->done_at = eng_now_s() * 1e3;
    return NULL;
}

/* The server stops with a stream open: the reader gets an error, the port goes dead. */
static void test_server_stop(void)
{
    int port;
    rpc_server *srv = start_server(&port);
    rpc_channel *ch = connect_to(port);
    rpc_stream *s;
    rpc_status st;
    rpc_bytes b;
    int before = atomic_load(&hold_cancels);
    REQUIRE(rpc_stream_open(ch, HOLD, "", 0, 0, &s, &st) == 0);
    REQUIRE(rpc_stream_next(s, 5000, &b, &st) == RPC_NEXT_MSG);
    rpc_bytes_free(&b);
    /* And a handler blocked in rpc_call_send on a reader that never reads. */
    rpc_stream *flood;
    atomic_store(&flood_result, 0);
    REQUIRE(rpc_stream_open(ch, FLOOD, "block", 5, 0, &flood, &st) == 0);
    for (int i = 0; i < 100 && atomic_load(&flood_sent) < RPC_SEND_QUEUE_MAX; i++)
        usleep(10000);
    stopper p = {srv, 0};
    pthread_t t;
    double t0 = eng_now_s() * 1e3;
    REQUIRE(pthread_create(&t, NULL, stop_later, &p) == 0);
    REQUIRE(rpc_stream_next(s, 10000, &b, &st) == RPC_NEXT_END);
    double took = eng_now_s() * 1e3 - t0;
    REQUIRE(st.code != RPC_OK);
    pthread_join(t, NULL);
    REQUIRE(atomic_load(&hold_cancels) == before + 1);
    REQUIRE(atomic_load(&flood_result) == 2);
    rpc_stream_close(s);
    rpc_stream_close(flood);
    printf("server stop: open stream ended with %s (\"%s\") after %.0f ms, stop took %.0f ms\n", rpc_code_name(st.code),
           st.msg, took, p.done_at - t0 - 50);

    t0 = eng_now_s() * 1e3;
    REQUIRE(rpc_unary(ch, REGISTER, "", 0, 5000, &b, &st) == -1);
    REQUIRE(st.code == RPC_UNAVAILABLE);
    REQUIRE(rpc_stream_open(ch, HOLD, "", 0, 5000, &s, &st) == 0);
    REQUIRE(rpc_stream_next(s, 5000, &b, &st) == RPC_NEXT_END && st.code == RPC_UNAVAILABLE);
    rpc_stream_close(s);
    printf("server gone: UNAVAILABLE after %.0f ms\n", eng_now_s() * 1e3 - t0);
    rpc_channel_destroy(ch);
}

static void test_bind_errors(void)
{
    int port;
    rpc_server *a, *b;
    rpc_status st;
    REQUIRE(rpc_server_create("127.0.0.1:0", &port, &a, &st) == 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    REQUIRE(rpc_server_create(addr, NULL, &b, &st) == -1 && b == NULL);
    REQUIRE(st.code == RPC_UNAVAILABLE && strstr(st.msg, addr));
    REQUIRE(rpc_server_create("not an address", NULL, &b, &st) == -1);
    rpc_server_stop(a); /* never started */
    rpc_server_stop(NULL);
    rpc_channel *ch;
    REQUIRE(rpc_channel_create("", &ch, &st) == -1 && st.code == RPC_INVALID_ARGUMENT);
    printf("bind: busy port and bad address refused\n");
}

/* ------------------------------------------------------------------ a killed server process */

static int child_pid = -1, child_port;

/* Forked before this process touches gRPC (gRPC does not survive fork). */
static void spawn_child_server(void)
{
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    child_pid = fork();
    REQUIRE(child_pid >= 0);
    if (child_pid == 0) {
        /* Dies with the test: an orphan would hold ctest's output pipe open. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(fds[0]);
        int port;
        rpc_server *s = start_server(&port);
        REQUIRE(write(fds[1], &port, sizeof port) == sizeof port);
        close(fds[1]);
        for (;;)
            pause();
        rpc_server_stop(s);
    }
    close(fds[1]);
    REQUIRE(read(fds[0], &child_port, sizeof child_port) == sizeof child_port);
    close(fds[0]);
}

static void test_killed_server(void)
{
    rpc_channel *ch = connect_to(child_port);
    rpc_stream *s;
    rpc_status st;
    rpc_bytes b;
    REQUIRE(rpc_stream_open(ch, HOLD, "", 0, 0, &s, &st) == 0);
    REQUIRE(rpc_stream_next(s, 5000, &b, &st) == RPC_NEXT_MSG);
    rpc_bytes_free(&b);
    double t0 = eng_now_s() * 1e3;
    kill(child_pid, SIGKILL);
    REQUIRE(rpc_stream_next(s, 10000, &b, &st) == RPC_NEXT_END);
    double took = eng_now_s() * 1e3 - t0;
    REQUIRE(st.code == RPC_UNAVAILABLE || st.code == RPC_CANCELLED || st.code == RPC_INTERNAL);
    rpc_stream_close(s);
    waitpid(child_pid, NULL, 0);
    REQUIRE(rpc_unary(ch, REGISTER, "", 0, 5000, &b, &st) == -1 && st.code == RPC_UNAVAILABLE);
    rpc_channel_destroy(ch);
    printf("killed server: open stream ended with %s (\"%s\") after %.1f ms\n", rpc_code_name(st.code), st.msg, took);
}

/* ------------------------------------------------------------------ a killed client process */

/* The child side (this binary run as "test_rpc hold-client PORT"): opens a Hold stream,
 * reports on stdout once it is open, and waits to be killed. */
static int hold_client_main(int port)
{
    rpc_channel *ch = connect_to(port);
    rpc_stream *s;
    rpc_status st;
    rpc_bytes b;
    REQUIRE(rpc_stream_open(ch, HOLD, "", 0, 0, &s, &st) == 0);
    REQUIRE(rpc_stream_next(s, 5000, &b, &st) == RPC_NEXT_MSG);
    REQUIRE(write(1, "o", 1) == 1);
    for (;;)
        pause();
}

extern char **environ;

static void test_killed_client(int port)
{
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    char *argv[] = {"test_rpc", "hold-client", portstr, NULL};
    pid_t pid;
    /* posix_spawn, not fork: gRPC's threads do not survive a fork in this process. */
    REQUIRE(posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    int before = atomic_load(&hold_cancels);
    char c;
    REQUIRE(read(fds[0], &c, 1) == 1 && c == 'o');
    close(fds[0]);
    double t0 = eng_now_s() * 1e3;
    kill(pid, SIGKILL);
    while (atomic_load(&hold_cancels) == before && eng_now_s() * 1e3 - t0 < 5000)
        usleep(200);
    REQUIRE(atomic_load(&hold_cancels) == before + 1);
    double took = hold_cancel_at - t0;
    REQUIRE(took < 100);
    waitpid(pid, NULL, 0);
    printf("killed client: the server's handler saw it after %.2f ms\n", took);
}

/* The method-name macros of rpc.h name real methods of tandem.proto, and every
 * method of tandem.proto has one. */
static void test_method_names(void)
{
    const ProtobufCServiceDescriptor *services[] = {&tandem__registry__descriptor, &tandem__decode__descriptor,
                                                    &tandem__prefill__descriptor, &tandem__admin__descriptor,
                                                    &tandem__worker__descriptor};
    const char *names[] = {RPC_REGISTRY_REGISTER, RPC_REGISTRY_HEARTBEAT, RPC_DECODE_GENERATE,      RPC_DECODE_KV_READY,
                           RPC_DECODE_KV_HELLO,   RPC_DECODE_KV_RENEW,    RPC_PREFILL_RUN,          RPC_ADMIN_STATUS,
                           RPC_ADMIN_CANCEL,      RPC_ADMIN_CORDON,       RPC_ADMIN_UNCORDON,       RPC_ADMIN_DRAIN,
                           RPC_ADMIN_REQUESTS,    RPC_ADMIN_SET_ROLE,     RPC_ADMIN_SET_LOG_LEVEL,  RPC_ADMIN_CONFIG,
                           RPC_WORKER_DRAIN,      RPC_WORKER_SET_ROLE,    RPC_WORKER_SET_LOG_LEVEL, RPC_WORKER_CONFIG};
    const int n_names = (int)(sizeof names / sizeof names[0]);
    int n_methods = 0;
    for (size_t i = 0; i < sizeof services / sizeof services[0]; i++) {
        for (unsigned j = 0; j < services[i]->n_methods; j++) {
            char full[128];
            snprintf(full, sizeof full, "/%s/%s", services[i]->name, services[i]->methods[j].name);
            int found = 0;
            for (int k = 0; k < n_names; k++)
                found += strcmp(full, names[k]) == 0;
            if (found != 1)
                fprintf(stderr, "method %s has no macro in rpc.h\n", full);
            REQUIRE(found == 1);
            n_methods++;
        }
    }
    REQUIRE(n_methods == n_names);
    printf("method names: %d macros match tandem.proto\n", n_methods);
    /* rpc_worker_state_name follows tandem.proto's WorkerState: WORKER_<NAME>. */
    const ProtobufCEnumDescriptor *ws = &tandem__worker_state__descriptor;
    for (unsigned i = 0; i < ws->n_values; i++) {
        char want[64];
        snprintf(want, sizeof want, "%s", rpc_worker_state_name(ws->values[i].value));
        for (char *c = want; *c; c++)
            *c = (char)toupper((unsigned char)*c);
        REQUIRE(!strcmp(ws->values[i].name + strlen("WORKER_"), want));
    }
    REQUIRE(!strcmp(rpc_worker_state_name(ws->n_values), "unknown"));
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc == 3 && strcmp(argv[1], "hold-client") == 0)
        return hold_client_main(atoi(argv[2]));
    spawn_child_server();
    test_method_names();

    int port;
    rpc_server *srv = start_server(&port);
    rpc_channel *ch = connect_to(port);
    test_unary(ch);
    test_deadline(ch);
    test_stream_many(ch);
    test_cancel(ch);
    test_cancel_race(ch);
    test_backpressure(ch);
    test_concurrent(ch);
    test_killed_client(port);
    join_senders();
    rpc_channel_destroy(ch);
    rpc_server_stop(srv);

    test_server_stop();
    test_bind_errors();
    test_killed_server();
    REQUIRE(strcmp(rpc_code_name(RPC_DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED") == 0);
    REQUIRE(strcmp(rpc_code_name(99), "CODE_99") == 0);
    return check_summary();
}

/* test_worker_cluster.c: real worker processes over real gRPC and TCP.
 *
 * The test plays the coordinator: it serves a small Registry (RegisterWorker,
 * Heartbeat) with the rpc library, starts `tandem worker` processes (prefill, decode
 * and both, on the dense and MoE fixture models), and drives the request flow of
 * tandem.proto itself: Decode.Generate -> KvTarget -> Prefill.Run -> Decode.KvReady ->
 * tokens. Checks:
 *   - tokens (and logprobs) equal `tandem generate --raw --json`, greedy and seeded,
 *     dense and MoE, disaggregated and colocated, one at a time and 12 at once (the
 *     decode worker then runs batches larger than one, per its heartbeat);
 *   - a cancelled stream (before the prefill, and mid-decode) frees its blocks within
 *     a second; an unclaimed reservation is freed when its lease runs out;
 *   - a target with another KV layout is refused naming both layouts;
 *   - KV grows on demand: a request is admitted with blocks for its prompt only, even
 *     when prompt + max_tokens exceeds the pool; a prompt that can never fit the pool
 *     is RESOURCE_EXHAUSTED, retryable, saying so;
 *   - on small pools (decode, and both/colocated) where the concurrent requests' prompt +
 *     max_tokens far exceed the pool but each fits alone, all complete with the tokens
 *     of `tandem generate`, preemptions happen (tandem_num_preemptions_total) and the
 *     pool drains to 0;
 *   - every worker reports 0 KV blocks used when idle, serves /metrics, and exits 0
 *     on SIGTERM, failing an open stream explicitly.
 * usage: test_worker_cluster TANDEM MODELS_DIR   (env: VERBOSE, TANDEM_REFERENCE) */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/addr.h"
#include "common/clock.h"
#include "rpc.h"
#include "tandem.pb-c.h"

static int failures;
#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            failures++;                                                     \
            fprintf(stderr, "%s:%d: FAIL %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fprintf(stderr, "\n");                                          \
        }                                                                   \
    } while (0)
#define REQUIRE(cond, ...)                                                   \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: FATAL %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                    \
            fprintf(stderr, "\n");                                           \
            cleanup();                                                       \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

static const char *tandem, *models, *reference_tandem;
static int verbose;

/* ------------------------------------------------------------------ the registry */

#define MAX_WORKERS 8
typedef struct known_worker {
    char id[64], address[128], metrics[128];
    int role, registrations;
    uint32_t blocks_used, blocks_total, max_batch;
    uint64_t heartbeats;
} known_worker;

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static known_worker workers[MAX_WORKERS];
static int n_workers;

static known_worker *find_worker(const char *id)
{
    for (int i = 0; i < n_workers; i++)
        if (!strcmp(workers[i].id, id))
            return &workers[i];
    return NULL;
}

static void on_register(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)user, (void)call;
    Tandem__WorkerInfo *info = rpc_unpack(&tandem__worker_info__descriptor, req->data, req->len, st);
    if (!info)
        return;
    pthread_mutex_lock(&reg_mu);
    known_worker *k = find_worker(info->worker_id);
    if (!k && n_workers < MAX_WORKERS)
        k = &workers[n_workers++];
    if (k) {
        snprintf(k->id, sizeof k->id, "%s", info->worker_id);
        snprintf(k->address, sizeof k->address, "%s", info->rpc_address);
        snprintf(k->metrics, sizeof k->metrics, "%s", info->metrics_address);
        k->role = info->role;
        k->registrations++;
        k->blocks_total = info->capacity ? info->capacity->kv_blocks_total : 0;
    }
    pthread_mutex_unlock(&reg_mu);
    Tandem__RegisterReply rep = TANDEM__REGISTER_REPLY__INIT;
    rep.accepted = k != NULL;
    rep.reason = k ? "" : "registry full";
    rep.heartbeat_interval_ms = 100;
    rpc_pack(&rep.base, resp);
    rpc_msg_free(info);
}

static void on_heartbeat(void *user, rpc_call *call, const rpc_bytes *req, rpc_bytes *resp, rpc_status *st)
{
    (void)user, (void)call;
    Tandem__WorkerLoad *l = rpc_unpack(&tandem__worker_load__descriptor, req->data, req->len, st);
    if (!l)
        return;
    pthread_mutex_lock(&reg_mu);
    known_worker *k = find_worker(l->worker_id);
    if (k) {
        k->blocks_used = l->kv_blocks_used;
        k->blocks_total = l->kv_blocks_total;
        k->max_batch = l->batch ? l->batch->max_batch : 0;
        k->heartbeats++;
    }
    pthread_mutex_unlock(&reg_mu);
    Tandem__HeartbeatReply rep = TANDEM__HEARTBEAT_REPLY__INIT;
    rep.reregister = k == NULL;
    rep.heartbeat_interval_ms = 100;
    rpc_pack(&rep.base, resp);
    rpc_msg_free(l);
}

/* A fresh heartbeat's view of a worker (waits for one newer than the call). */
static known_worker worker_state(const char *id)
{
    known_worker snap = {0};
    uint64_t seen = 0;
    pthread_mutex_lock(&reg_mu);
    known_worker *k = find_worker(id);
    if (k)
        seen = k->heartbeats;
    pthread_mutex_unlock(&reg_mu);
    for (double t0 = eng_now_s(); eng_now_s() - t0 < 3;) {
        pthread_mutex_lock(&reg_mu);
        k = find_worker(id);
        if (k && k->heartbeats >= seen + 2)
            snap = *k;
        pthread_mutex_unlock(&reg_mu);
        if (snap.id[0])
            break;
        usleep(20000);
    }
    return snap;
}

/* Waits up to timeout_s for the worker's heartbeat to report 0 KV blocks used. */
static double wait_blocks_free(const char *id, double timeout_s)
{
    double t0 = eng_now_s();
    while (eng_now_s() - t0 < timeout_s) {
        known_worker k = worker_state(id);
        if (k.id[0] && k.blocks_used == 0)
            return eng_now_s() - t0;
    }
    return -1;
}

/* ------------------------------------------------------------------ processes */

typedef struct proc {
    pid_t pid;
    char id[32];
    rpc_channel *ch;
} proc;

static proc procs[MAX_WORKERS];
static int n_procs;
static rpc_server *registry;

static void cleanup(void)
{
    for (int i = 0; i < n_procs; i++)
        if (procs[i].pid > 0) {
            kill(procs[i].pid, SIGKILL);
            waitpid(procs[i].pid, NULL, 0);
            procs[i].pid = 0;
        }
}

static proc *start_worker(const char *id, const char *role, const char *model, int reg_port, const char *extra)
{
    proc *p = &procs[n_procs++];
    snprintf(p->id, sizeof p->id, "%s", id);
    char modeldir[512], coord[64], logpath[600];
    snprintf(modeldir, sizeof modeldir, "%s/%s", models, model);
    snprintf(coord, sizeof coord, "127.0.0.1:%d", reg_port);
    snprintf(logpath, sizeof logpath, "worker-%s.log", id);
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)tandem;
    argv[n++] = "worker";
    argv[n++] = "--role", argv[n++] = (char *)role;
    argv[n++] = "--model", argv[n++] = modeldir;
    argv[n++] = "--coordinator", argv[n++] = coord;
    argv[n++] = "--id", argv[n++] = (char *)id;
    argv[n++] = "--threads", argv[n++] = "1";
    char extra_copy[256];
    snprintf(extra_copy, sizeof extra_copy, "%s", extra ? extra : "");
    for (char *tok = strtok(extra_copy, " "); tok && n < 30; tok = strtok(NULL, " "))
        argv[n++] = tok;
    argv[n] = NULL;
    p->pid = fork();
    REQUIRE(p->pid >= 0, "fork: %s", strerror(errno));
    if (p->pid == 0) {
        FILE *log = freopen(logpath, "w", stderr);
        (void)log;
        if (!freopen("/dev/null", "w", stdout))
            _exit(126);
        execv(tandem, argv);
        _exit(127);
    }
    return p;
}

static void wait_registered(proc *p)
{
    char address[128] = "";
    for (double t0 = eng_now_s(); eng_now_s() - t0 < 60 && !address[0];) {
        pthread_mutex_lock(&reg_mu);
        known_worker *k = find_worker(p->id);
        if (k)
            snprintf(address, sizeof address, "%s", k->address);
        pthread_mutex_unlock(&reg_mu);
        int status;
        REQUIRE(waitpid(p->pid, &status, WNOHANG) == 0, "worker %s exited early (see worker-%s.log)", p->id, p->id);
        if (!address[0])
            usleep(20000);
    }
    REQUIRE(address[0], "worker %s never registered", p->id);
    rpc_status st;
    REQUIRE(rpc_channel_create(address, &p->ch, &st) == 0, "%s", st.msg);
    if (verbose)
        fprintf(stderr, "worker %s registered at %s\n", p->id, address);
}

/* SIGTERM; returns the exit status (or -1 when it had to be killed). */
static int stop_worker(proc *p)
{
    kill(p->pid, SIGTERM);
    for (double t0 = eng_now_s(); eng_now_s() - t0 < 15;) {
        int status;
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
            p->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        usleep(20000);
    }
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
    return -1;
}

/* ------------------------------------------------------------------ the reference */

typedef struct result {
    int32_t prompt[4096];
    int n_prompt;
    int32_t tokens[512];
    float logprobs[512];
    int n;
    int finish; /* 1 stop, 2 length */
    int code;   /* final status of the flow */
    char msg[300];
} result;

typedef struct sampling {
    double temperature, top_p;
    int top_k;
    unsigned long long seed;
    int max_tokens;
} sampling;

static int32_t eos_ids[4];
static int n_eos;

static void load_eos(const char *model)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s/generation_config.json", models, model);
    FILE *f = fopen(path, "r");
    REQUIRE(f, "%s", path);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf), *e = cJSON_GetObjectItem(j, "eos_token_id");
    n_eos = 0;
    if (cJSON_IsArray(e)) {
        cJSON *x;
        cJSON_ArrayForEach(x, e) if (n_eos < 4) eos_ids[n_eos++] = x->valueint;
    } else if (cJSON_IsNumber(e)) {
        eos_ids[n_eos++] = e->valueint;
    }
    cJSON_Delete(j);
}

/* `tandem generate --raw --json` on this prompt text: prompt ids and tokens. */
static void reference(const char *model, const char *text, const sampling *s, result *out)
{
    memset(out, 0, sizeof *out);
    char cmd[16384], num[64];
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s/%s' --raw --json --threads 1 --max-tokens %d --temperature %g",
             reference_tandem, models, model, s->max_tokens, s->temperature);
    if (s->top_p < 1) {
        snprintf(num, sizeof num, " --top-p %g", s->top_p);
        strcat(cmd, num);
    }
    if (s->top_k) {
        snprintf(num, sizeof num, " --top-k %d", s->top_k);
        strcat(cmd, num);
    }
    snprintf(num, sizeof num, " --seed %llu --prompt '", s->seed);
    strcat(cmd, num);
    strcat(cmd, text);
    strcat(cmd, "'");
    FILE *p = popen(cmd, "r");
    REQUIRE(p, "popen");
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    REQUIRE(pclose(p) == 0, "tandem generate failed: %s", cmd);
    cJSON *j = cJSON_Parse(buf);
    REQUIRE(j, "generate's JSON");
    cJSON *x;
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(j, "prompt_tokens")) out->prompt[out->n_prompt++] = x->valueint;
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(j, "logprobs"))
    {
        out->tokens[out->n] = cJSON_GetObjectItem(x, "id")->valueint;
        out->logprobs[out->n++] = (float)cJSON_GetObjectItem(x, "logprob")->valuedouble;
    }
    out->finish = !strcmp(cJSON_GetObjectItem(j, "finish_reason")->valuestring, "stop") ? 1 : 2;
    cJSON_Delete(j);
}

/* ------------------------------------------------------------------ the flow */

static void fill_sampling(Tandem__SamplingParams *sp, const sampling *s)
{
    tandem__sampling_params__init(sp);
    sp->temperature = (float)s->temperature;
    sp->top_p = s->top_p > 0 ? (float)s->top_p : 1;
    sp->top_k = s->top_k;
    sp->repetition_penalty = 1;
    sp->seed = s->seed;
    sp->max_tokens = (uint32_t)s->max_tokens;
    sp->stop_token_ids = eos_ids;
    sp->n_stop_token_ids = (size_t)n_eos;
    sp->top_logprobs = 2;
}

static void add_token(result *r, const Tandem__Token *t)
{
    if (r->n < 512) {
        CHECK(t->index == (uint32_t)r->n, "token index %u, expected %d", t->index, r->n);
        r->tokens[r->n] = t->id;
        r->logprobs[r->n++] = t->logprob;
    }
    if (t->finish_reason)
        r->finish = t->finish_reason;
}

/* Reads a Generate stream to its end, collecting tokens. */
static void read_tokens(rpc_stream *s, result *out)
{
    for (;;) {
        Tandem__GenerateEvent *ev = NULL;
        rpc_status st;
        rpc_next nx = rpc_stream_next_msg(s, 30000, &tandem__generate_event__descriptor, (void **)&ev, &st);
        if (nx == RPC_NEXT_END) {
            out->code = st.code;
            snprintf(out->msg, sizeof out->msg, "%s", st.msg);
            return;
        }
        if (nx == RPC_NEXT_TIMEOUT) {
            out->code = RPC_DEADLINE_EXCEEDED;
            snprintf(out->msg, sizeof out->msg, "no event in 30 s");
            return;
        }
        if (ev->event_case == TANDEM__GENERATE_EVENT__EVENT_TOKEN)
            add_token(out, ev->token);
        else if (ev->event_case == TANDEM__GENERATE_EVENT__EVENT_ERROR)
            snprintf(out->msg, sizeof out->msg, "error event: %s", ev->error->message);
        rpc_msg_free(ev);
    }
}

/* Decode.Generate on d, Prefill.Run on p, KvReady on d, tokens from d. */
static void run_disagg(proc *d, proc *p, const char *rid, const int32_t *prompt, int n_prompt, const sampling *s,
                       result *out)
{
    out->n = 0;
    out->finish = 0;
    out->code = -1;
    out->msg[0] = 0;
    Tandem__SamplingParams sp;
    fill_sampling(&sp, s);
    Tandem__GenerateRequest g = TANDEM__GENERATE_REQUEST__INIT;
    g.request_id = (char *)rid;
    g.prompt = (int32_t *)prompt;
    g.n_prompt = (size_t)n_prompt;
    g.sampling = &sp;
    rpc_stream *stream = NULL;
    rpc_status st;
    REQUIRE(rpc_stream_open_msg(d->ch, RPC_DECODE_GENERATE, &g.base, 120000, &stream, &st) == 0, "%s", st.msg);
    Tandem__GenerateEvent *ev = NULL;
    rpc_next nx = rpc_stream_next_msg(stream, 30000, &tandem__generate_event__descriptor, (void **)&ev, &st);
    if (nx != RPC_NEXT_MSG || ev->event_case != TANDEM__GENERATE_EVENT__EVENT_KV_TARGET) {
        out->code = nx == RPC_NEXT_END ? st.code : RPC_UNKNOWN;
        snprintf(out->msg, sizeof out->msg, "no KvTarget first: %s", nx == RPC_NEXT_END ? st.msg : "other event");
        rpc_msg_free(ev);
        rpc_stream_close(stream);
        return;
    }
    Tandem__PrefillRequest pr = TANDEM__PREFILL_REQUEST__INIT;
    pr.request_id = (char *)rid;
    pr.prompt = (int32_t *)prompt;
    pr.n_prompt = (size_t)n_prompt;
    pr.sampling = &sp;
    pr.target = ev->kv_target;
    Tandem__PrefillResult *res = NULL;
    if (rpc_unary_msg(p->ch, RPC_PREFILL_RUN, &pr.base, &tandem__prefill_result__descriptor, 60000, (void **)&res,
                      &st) < 0) {
        out->code = st.code;
        snprintf(out->msg, sizeof out->msg, "Prefill.Run: %s", st.msg);
        rpc_msg_free(ev);
        rpc_stream_close(stream);
        return;
    }
    CHECK(res->prompt_tokens == (uint32_t)n_prompt, "prompt_tokens %u", res->prompt_tokens);
    CHECK(res->timings && res->timings->kv_bytes > 0, "timings carry the KV bytes");
    add_token(out, res->first_token);
    Tandem__KvReadyRequest kr = TANDEM__KV_READY_REQUEST__INIT;
    kr.request_id = (char *)rid;
    kr.transfer_id = ev->kv_target->transfer_id;
    kr.first_token = res->first_token;
    kr.prompt_tokens = (uint32_t)n_prompt;
    Tandem__KvReadyReply *kv = NULL;
    int rc = rpc_unary_msg(d->ch, RPC_DECODE_KV_READY, &kr.base, &tandem__kv_ready_reply__descriptor, 10000,
                           (void **)&kv, &st);
    CHECK(rc == 0 && kv->ok, "KvReady: %s", rc ? st.msg : kv->reason);
    rpc_msg_free(kv);
    rpc_msg_free(res);
    rpc_msg_free(ev);
    read_tokens(stream, out);
    rpc_stream_close(stream);
}

static void run_colocated(proc *b, const char *rid, const int32_t *prompt, int n_prompt, const sampling *s, result *out)
{
    out->n = 0;
    out->finish = 0;
    Tandem__SamplingParams sp;
    fill_sampling(&sp, s);
    Tandem__GenerateRequest g = TANDEM__GENERATE_REQUEST__INIT;
    g.request_id = (char *)rid;
    g.prompt = (int32_t *)prompt;
    g.n_prompt = (size_t)n_prompt;
    g.sampling = &sp;
    g.colocated = 1;
    rpc_stream *stream = NULL;
    rpc_status st;
    REQUIRE(rpc_stream_open_msg(b->ch, RPC_DECODE_GENERATE, &g.base, 120000, &stream, &st) == 0, "%s", st.msg);
    read_tokens(stream, out);
    rpc_stream_close(stream);
}

static void compare(const char *what, const result *ref, const result *got)
{
    CHECK(got->code == RPC_OK, "%s: status %s: %s", what, rpc_code_name(got->code), got->msg);
    CHECK(got->n == ref->n, "%s: %d tokens, reference %d", what, got->n, ref->n);
    int same = got->n == ref->n;
    for (int i = 0; same && i < ref->n; i++)
        same = got->tokens[i] == ref->tokens[i];
    CHECK(same, "%s: tokens differ from tandem generate", what);
    double worst = 0;
    for (int i = 0; i < ref->n && i < got->n; i++)
        worst = fmax(worst, fabs(got->logprobs[i] - ref->logprobs[i]));
    CHECK(worst < 1e-3, "%s: logprobs differ by %g", what, worst);
    CHECK(got->finish == ref->finish, "%s: finish %d, reference %d", what, got->finish, ref->finish);
    if (verbose)
        fprintf(stderr, "%s: %d tokens, %s, logprob diff %.2g\n", what, got->n, same ? "same" : "DIFFERENT", worst);
}

/* ------------------------------------------------------------------ scenarios */

static const char *TEXTS[] = {
    "The capital of France is",
    "Once upon a time, in a land far away, there lived a",
    "def fibonacci(n):\\n    if n < 2:\\n        return n\\n",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28",
};

typedef struct job {
    proc *d, *p;
    const char *model;
    char rid[32];
    const result *ref;
    sampling s;
    result got;
} job;

static void *job_main(void *arg)
{
    job *j = arg;
    run_disagg(j->d, j->p, j->rid, j->ref->prompt, j->ref->n_prompt, &j->s, &j->got);
    return NULL;
}

/* Equal tokens for greedy and seeded requests, one by one and all at once. */
static void same_tokens(const char *model, proc *d, proc *p, proc *b)
{
    load_eos(model);
    static char long_text[6000], longer_text[20000];
    long_text[0] = longer_text[0] = 0;
    for (int i = 0; i < 40; i++)
        strcat(long_text, "the quick brown fox jumps over the lazy dog and ");
    for (int i = 0; i < 150; i++)
        strcat(longer_text, "a stitch in time saves nine, ");
    const char *texts[] = {TEXTS[0], TEXTS[1], TEXTS[2], TEXTS[3], long_text, longer_text};
    enum { NT = 6, NJ = 2 * NT };
    static result refs[NJ];
    static job jobs[NJ];
    for (int i = 0; i < NJ; i++) {
        sampling s = i < NT ? (sampling){.temperature = 0, .top_p = 1, .seed = 1, .max_tokens = 12 + i}
                            : (sampling){
                                  .temperature = 0.8, .top_p = 0.9, .top_k = 50, .seed = 1000 + i, .max_tokens = 16};
        reference(model, texts[i % NT], &s, &refs[i]);
        jobs[i] = (job){.d = d, .p = p, .model = model, .ref = &refs[i], .s = s};
        snprintf(jobs[i].rid, sizeof jobs[i].rid, "%s-%d", model, i);
    }
    /* one at a time: the first greedy and the first seeded */
    for (int i = 0; i < NJ; i += NT) {
        char what[96];
        run_disagg(d, p, jobs[i].rid, refs[i].prompt, refs[i].n_prompt, &jobs[i].s, &jobs[i].got);
        snprintf(what, sizeof what, "%s disaggregated %s", model, i < NT ? "greedy" : "seeded");
        compare(what, &refs[i], &jobs[i].got);
        if (b) {
            result col;
            run_colocated(b, jobs[i].rid, refs[i].prompt, refs[i].n_prompt, &jobs[i].s, &col);
            snprintf(what, sizeof what, "%s colocated %s", model, i < NT ? "greedy" : "seeded");
            compare(what, &refs[i], &col);
        }
    }
    /* all at once: chunked prefill of several prompts, decode batches > 1 */
    pthread_t th[NJ];
    for (int i = 0; i < NJ; i++) {
        snprintf(jobs[i].rid, sizeof jobs[i].rid, "%s-c%d", model, i);
        pthread_create(&th[i], NULL, job_main, &jobs[i]);
    }
    for (int i = 0; i < NJ; i++) {
        pthread_join(th[i], NULL);
        char what[96];
        snprintf(what, sizeof what, "%s concurrent #%d (%d prompt tokens)", model, i, refs[i].n_prompt);
        compare(what, &refs[i], &jobs[i].got);
    }
    known_worker k = worker_state(d->id);
    CHECK(k.max_batch > 1, "%s: decode worker's largest batch %u", model, k.max_batch);
    if (verbose)
        fprintf(stderr, "%s: decode worker's largest batch %u\n", model, k.max_batch);
    CHECK(wait_blocks_free(d->id, 2) >= 0, "%s: decode blocks back to 0", model);
    CHECK(wait_blocks_free(p->id, 2) >= 0, "%s: prefill blocks back to 0", model);
}

/* Opens Generate and returns the stream once its KvTarget arrived (*target kept). */
static rpc_stream *reserve(proc *d, const char *rid, int n_prompt, int max_tokens, Tandem__GenerateEvent **target,
                           rpc_status *st)
{
    static int32_t prompt[4096];
    for (int i = 0; i < n_prompt; i++)
        prompt[i] = 100 + i;
    sampling s = {.temperature = 0, .top_p = 1, .max_tokens = max_tokens};
    Tandem__SamplingParams sp;
    fill_sampling(&sp, &s);
    Tandem__GenerateRequest g = TANDEM__GENERATE_REQUEST__INIT;
    g.request_id = (char *)rid;
    g.prompt = prompt;
    g.n_prompt = (size_t)n_prompt;
    g.sampling = &sp;
    rpc_stream *stream = NULL;
    REQUIRE(rpc_stream_open_msg(d->ch, RPC_DECODE_GENERATE, &g.base, 120000, &stream, st) == 0, "%s", st->msg);
    *target = NULL;
    rpc_next nx = rpc_stream_next_msg(stream, 10000, &tandem__generate_event__descriptor, (void **)target, st);
    if (nx == RPC_NEXT_MSG && (*target)->event_case == TANDEM__GENERATE_EVENT__EVENT_KV_TARGET)
        return stream;
    if (nx == RPC_NEXT_MSG && (*target)->event_case == TANDEM__GENERATE_EVENT__EVENT_ERROR) {
        st->code = (*target)->error->code;
        snprintf(st->msg, sizeof st->msg, "retryable=%d %s", (*target)->error->retryable, (*target)->error->message);
    }
    rpc_msg_free(*target);
    *target = NULL;
    rpc_stream_close(stream);
    return NULL;
}

static void cancels_and_errors(proc *d, proc *p)
{
    rpc_status st;
    Tandem__GenerateEvent *t = NULL;

    /* cancelled before the prefill: blocks back within a second */
    rpc_stream *s = reserve(d, "cancel-early", 100, 50, &t, &st);
    REQUIRE(s, "reserve: %s", st.msg);
    CHECK(worker_state(d->id).blocks_used > 0, "the reservation holds blocks");
    rpc_stream_cancel(s);
    double took = wait_blocks_free(d->id, 1.5);
    CHECK(took >= 0 && took < 1.0, "cancelled reservation freed in %.2f s", took);
    rpc_msg_free(t);
    rpc_stream_close(s);

    /* another layout: refused, naming both */
    s = reserve(d, "layout", 40, 5, &t, &st);
    REQUIRE(s, "reserve: %s", st.msg);
    t->kv_target->layout->block_size = 32;
    t->kv_target->n_block_ids = 2;
    Tandem__SamplingParams sp;
    sampling smp = {.temperature = 0, .top_p = 1, .max_tokens = 5};
    fill_sampling(&sp, &smp);
    int32_t prompt[40];
    for (int i = 0; i < 40; i++)
        prompt[i] = 100 + i;
    Tandem__PrefillRequest pr = TANDEM__PREFILL_REQUEST__INIT;
    pr.request_id = "layout";
    pr.prompt = prompt;
    pr.n_prompt = 40;
    pr.sampling = &sp;
    pr.target = t->kv_target;
    Tandem__PrefillResult *res = NULL;
    int rc = rpc_unary_msg(p->ch, RPC_PREFILL_RUN, &pr.base, &tandem__prefill_result__descriptor, 10000, (void **)&res,
                           &st);
    CHECK(rc < 0 && st.code == RPC_INVALID_ARGUMENT && strstr(st.msg, "bs32") && strstr(st.msg, "bs16"),
          "layout mismatch refused naming both: %s %s", rpc_code_name(st.code), st.msg);
    rpc_msg_free(res);
    rpc_msg_free(t);
    rpc_stream_close(s);

    /* a target naming blocks that are not the reservation's: the transfer fails on the
     * receiver (nothing written outside the request's blocks), both sides say so */
    s = reserve(d, "wrong-blocks", 40, 5, &t, &st);
    REQUIRE(s, "reserve: %s", st.msg);
    for (size_t i = 0; i < t->kv_target->n_block_ids; i++)
        t->kv_target->block_ids[i] = (int32_t)((t->kv_target->block_ids[i] + 1000) % t->kv_target->pool_blocks);
    pr.request_id = "wrong-blocks";
    pr.target = t->kv_target;
    res = NULL;
    rc = rpc_unary_msg(p->ch, RPC_PREFILL_RUN, &pr.base, &tandem__prefill_result__descriptor, 10000, (void **)&res,
                       &st);
    CHECK(rc < 0 && st.code == RPC_UNAVAILABLE, "push into foreign blocks refused: %s %s", rpc_code_name(st.code),
          st.msg);
    rpc_msg_free(res);
    result wb = {0};
    read_tokens(s, &wb);
    CHECK(wb.code == RPC_UNAVAILABLE, "decode ends the reservation: %s %s", rpc_code_name(wb.code), wb.msg);
    CHECK(wait_blocks_free(d->id, 1) >= 0, "wrong-blocks reservation freed");
    rpc_msg_free(t);
    rpc_stream_close(s);

    /* a target without the reservation's secret: the prefill worker refuses one with none,
     * and the decode worker refuses the transfer of one with a wrong secret (issue 12) */
    s = reserve(d, "wrong-secret", 40, 5, &t, &st);
    REQUIRE(s && t->kv_target->transfer_secret.len == 16, "reserve: %s", s ? "no secret" : st.msg);
    pr.request_id = "wrong-secret";
    pr.target = t->kv_target;
    t->kv_target->transfer_secret.len = 0;
    res = NULL;
    rc = rpc_unary_msg(p->ch, RPC_PREFILL_RUN, &pr.base, &tandem__prefill_result__descriptor, 10000, (void **)&res,
                       &st);
    CHECK(rc < 0 && st.code == RPC_INVALID_ARGUMENT && strstr(st.msg, "secret"), "target without a secret: %s %s",
          rpc_code_name(st.code), st.msg);
    rpc_msg_free(res);
    t->kv_target->transfer_secret.len = 16;
    t->kv_target->transfer_secret.data[0] ^= 1;
    res = NULL;
    rc = rpc_unary_msg(p->ch, RPC_PREFILL_RUN, &pr.base, &tandem__prefill_result__descriptor, 10000, (void **)&res,
                       &st);
    CHECK(rc < 0 && st.code == RPC_UNAVAILABLE && strstr(st.msg, "secret"), "wrong secret refused: %s %s",
          rpc_code_name(st.code), st.msg);
    rpc_msg_free(res);
    rpc_msg_free(t);
    rpc_stream_close(s);
    CHECK(wait_blocks_free(d->id, 1) >= 0, "wrong-secret reservation freed");

    /* prompt + max_tokens beyond the pool: admitted all the same, with the prompt's
     * blocks only (the sequence grows as it generates) */
    s = reserve(d, "grows", 100, 39000, &t, &st);
    CHECK(s && t->kv_target->n_block_ids == 7, "a request larger than the pool is admitted: %s", s ? "" : st.msg);
    if (s) {
        CHECK(worker_state(d->id).blocks_used == 7, "it holds the prompt's 7 blocks, not prompt + max_tokens");
        rpc_msg_free(t);
        rpc_stream_close(s);
    }
    CHECK(wait_blocks_free(d->id, 1.5) >= 0, "the admitted request's blocks freed on cancel");

    /* cancelled mid-decode: freed within a second */
    load_eos("dense");
    n_eos = 0; /* no stop token: it must still be running when cancelled */
    s = reserve(d, "cancel-late", 20, 2000, &t, &st);
    REQUIRE(s, "reserve: %s", st.msg);
    pr.request_id = "cancel-late";
    pr.n_prompt = 20;
    smp.max_tokens = 2000;
    fill_sampling(&sp, &smp);
    pr.target = t->kv_target;
    rc = rpc_unary_msg(p->ch, RPC_PREFILL_RUN, &pr.base, &tandem__prefill_result__descriptor, 10000, (void **)&res,
                       &st);
    REQUIRE(rc == 0, "prefill: %s", st.msg);
    Tandem__KvReadyRequest kr = TANDEM__KV_READY_REQUEST__INIT;
    kr.request_id = "cancel-late";
    kr.transfer_id = t->kv_target->transfer_id;
    kr.first_token = res->first_token;
    kr.prompt_tokens = 20;
    Tandem__KvReadyReply *kv = NULL;
    rc = rpc_unary_msg(d->ch, RPC_DECODE_KV_READY, &kr.base, &tandem__kv_ready_reply__descriptor, 10000, (void **)&kv,
                       &st);
    CHECK(rc == 0 && kv->ok, "KvReady");
    rpc_msg_free(kv);
    rpc_msg_free(res);
    int got = 0;
    for (; got < 5; got++) {
        Tandem__GenerateEvent *ev = NULL;
        if (rpc_stream_next_msg(s, 10000, &tandem__generate_event__descriptor, (void **)&ev, &st) != RPC_NEXT_MSG)
            break;
        rpc_msg_free(ev);
    }
    CHECK(got == 5, "tokens before the cancel: %d", got);
    rpc_stream_cancel(s);
    took = wait_blocks_free(d->id, 1.5);
    CHECK(took >= 0 && took < 1.0, "cancelled stream freed in %.2f s", took);
    rpc_msg_free(t);
    rpc_stream_close(s);

    /* the caller of Prefill.Run gives up mid-prompt: the prefill worker frees its blocks
     * and aborts the push; the decode worker ends the reservation at once (retryable),
     * long before its lease */
    static int32_t long_prompt[4000];
    for (int i = 0; i < 4000; i++)
        long_prompt[i] = 100 + i;
    s = reserve(d, "prefill-cancel", 4000, 5, &t, &st);
    REQUIRE(s, "reserve: %s", st.msg);
    pr.request_id = "prefill-cancel";
    pr.prompt = long_prompt;
    pr.n_prompt = 4000;
    pr.target = t->kv_target;
    double t0 = eng_now_s();
    rc = rpc_unary_msg(p->ch, RPC_PREFILL_RUN, &pr.base, &tandem__prefill_result__descriptor, 30, (void **)&res, &st);
    CHECK(rc < 0 && st.code == RPC_DEADLINE_EXCEEDED, "Prefill.Run past its deadline: %s", rpc_code_name(st.code));
    if (rc == 0)
        rpc_msg_free(res);
    took = wait_blocks_free(p->id, 1.5);
    CHECK(took >= 0, "the abandoned prefill freed its blocks");
    result aborted = {0};
    read_tokens(s, &aborted);
    double waited = eng_now_s() - t0;
    CHECK(aborted.code == RPC_UNAVAILABLE && waited < 3, "decode told of the failed transfer: %s after %.2f s: %s",
          rpc_code_name(aborted.code), waited, aborted.msg);
    CHECK(wait_blocks_free(d->id, 1) >= 0, "the failed transfer's reservation freed");
    rpc_msg_free(t);
    rpc_stream_close(s);
    pr.prompt = prompt;

    /* KvReady for something unknown: refused, not crashed */
    Tandem__Token tok = TANDEM__TOKEN__INIT;
    kr.first_token = &tok;
    kr.request_id = "nobody";
    rc = rpc_unary_msg(d->ch, RPC_DECODE_KV_READY, &kr.base, &tandem__kv_ready_reply__descriptor, 10000, (void **)&kv,
                       &st);
    CHECK(rc == 0 && !kv->ok && strstr(kv->reason, "unknown"), "unknown KvReady refused");
    rpc_msg_free(kv);

    /* never claimed: the lease (6 s here: long enough for a sanitizer build's prefills of
     * the concurrent mix) frees it and ends the stream with an error */
    s = reserve(d, "lease", 30, 10, &t, &st);
    REQUIRE(s, "reserve: %s", st.msg);
    t0 = eng_now_s();
    result r = {0};
    read_tokens(s, &r);
    waited = eng_now_s() - t0;
    CHECK(r.code == RPC_DEADLINE_EXCEEDED && waited > 5.5 && waited < 8, "lease expiry: %s after %.1f s: %s",
          rpc_code_name(r.code), waited, r.msg);
    CHECK(wait_blocks_free(d->id, 1) >= 0, "lease expiry freed the blocks");
    rpc_msg_free(t);
    rpc_stream_close(s);
}

/* /metrics answers with the worker's families. */
/* GET /metrics of a registered worker, into a static buffer. */
static const char *metrics_text(const char *id)
{
    char addr[128] = "";
    pthread_mutex_lock(&reg_mu);
    known_worker *k = find_worker(id);
    if (k)
        snprintf(addr, sizeof addr, "%s", k->metrics);
    pthread_mutex_unlock(&reg_mu);
    char host[ENG_HOST_MAX];
    int port;
    eng_error err;
    struct addrinfo *ai = NULL;
    REQUIRE(eng_addr_split(addr, host, &port, &err) == 0 && eng_addr_resolve(host, port, 0, &ai, &err) == 0,
            "metrics address of %s: %s", id, err.msg);
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    REQUIRE(connect(fd, ai->ai_addr, ai->ai_addrlen) == 0, "connect to /metrics at %s", addr);
    freeaddrinfo(ai);
    const char *req = "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n";
    REQUIRE(write(fd, req, strlen(req)) == (ssize_t)strlen(req), "write");
    static char buf[1 << 20];
    size_t n = 0;
    ssize_t r;
    while ((r = read(fd, buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = 0;
    close(fd);
    return buf;
}

static void check_metrics(const char *id)
{
    const char *buf = metrics_text(id);
    char want[160];
    snprintf(want, sizeof want, "tandem_kv_blocks_used{role=\"decode\",worker=\"%s\"} 0", id);
    CHECK(strstr(buf, want), "metrics of %s: %s", id, want);
    /* The exposition passes promtool when it is installed. */
    char *body = strstr(buf, "\r\n\r\n");
    if (body && system("command -v promtool >/dev/null 2>&1") == 0) {
        FILE *f = popen("promtool check metrics >promtool.out 2>&1", "w");
        REQUIRE(f, "popen promtool");
        fputs(body + 4, f);
        int rc = pclose(f);
        CHECK(rc == 0, "promtool check metrics on %s's /metrics (see promtool.out)", id);
    }
    CHECK(strstr(buf, "tandem_batch_size_bucket") && strstr(buf, "tandem_generation_tokens_total") &&
              strstr(buf, "tandem_kv_transfer_bytes_total") && strstr(buf, "tandem_num_requests_running"),
          "metric families present");
}

/* ------------------------------------------------------------------ KV on demand */

typedef struct pjob {
    proc *d, *p; /* p NULL: colocated on d */
    char rid[32];
    const result *ref;
    sampling s;
    result got;
    int refusals; /* admissions refused (RESOURCE_EXHAUSTED) before it got in */
} pjob;

/* Like the coordinator: a request refused for lack of free blocks is retried. */
static void *pjob_main(void *arg)
{
    pjob *j = arg;
    for (double t0 = eng_now_s(); eng_now_s() - t0 < 60; usleep(50000)) {
        if (j->p)
            run_disagg(j->d, j->p, j->rid, j->ref->prompt, j->ref->n_prompt, &j->s, &j->got);
        else
            run_colocated(j->d, j->rid, j->ref->prompt, j->ref->n_prompt, &j->s, &j->got);
        int refused = j->got.n == 0 && (strstr(j->got.msg, "no KvTarget") || j->got.code == RPC_RESOURCE_EXHAUSTED) &&
                      (strstr(j->got.msg, "KV blocks") || strstr(j->got.msg, "other event"));
        if (!refused)
            return NULL;
        j->refusals++;
    }
    return NULL;
}

static double metric_value(const char *text, const char *name, const char *id)
{
    char want[200];
    snprintf(want, sizeof want, "%s{role=\"", name);
    for (const char *at = strstr(text, want); at; at = strstr(at + 1, want)) {
        const char *eol = strchr(at, '\n'), *wid = strstr(at, "worker=\"");
        if (wid && (!eol || wid < eol) && !strncmp(wid + 8, id, strlen(id)) && wid[8 + strlen(id)] == '"')
            return atof(strchr(wid, '}') + 1);
    }
    return -1;
}

/* Six requests whose prompt + max_tokens add up to about three times the pool of the
 * small workers (12 blocks of 16 tokens), each fitting alone: all finish with the
 * reference tokens, some of them after being preempted and recomputed. */
static void kv_on_demand(proc *dp, proc *sd, proc *sb)
{
    load_eos("dense");
    enum { NJ = 6 };
    static result refs[NJ];
    static pjob jobs[2 * NJ];
    for (int i = 0; i < NJ; i++) {
        sampling s = i % 2 ? (sampling){.temperature = 0.8, .top_p = 0.9, .top_k = 50, .seed = 77 + i, .max_tokens = 56}
                           : (sampling){.temperature = 0, .top_p = 1, .seed = 1, .max_tokens = 56};
        reference("dense", TEXTS[i % 4], &s, &refs[i]);
        jobs[i] = (pjob){.d = sd, .p = dp, .ref = &refs[i], .s = s};
        jobs[NJ + i] = (pjob){.d = sb, .p = NULL, .ref = &refs[i], .s = s};
        snprintf(jobs[i].rid, sizeof jobs[i].rid, "grow-d%d", i);
        snprintf(jobs[NJ + i].rid, sizeof jobs[NJ + i].rid, "grow-b%d", i);
    }
    /* never fits: the prompt alone is more than the whole pool */
    Tandem__GenerateEvent *t = NULL;
    rpc_status st;
    rpc_stream *s = reserve(sd, "never-fits", 200, 5, &t, &st);
    CHECK(!s && st.code == RPC_RESOURCE_EXHAUSTED && strstr(st.msg, "retryable=1") && strstr(st.msg, "whole pool"),
          "a prompt larger than the pool is refused: %s %s", rpc_code_name(st.code), st.msg);
    if (s) {
        rpc_msg_free(t);
        rpc_stream_close(s);
    }
    load_eos("dense");

    pthread_t th[2 * NJ];
    for (int i = 0; i < 2 * NJ; i++)
        pthread_create(&th[i], NULL, pjob_main, &jobs[i]);
    int refusals = 0;
    for (int i = 0; i < 2 * NJ; i++) {
        pthread_join(th[i], NULL);
        char what[96];
        snprintf(what, sizeof what, "small pool %s #%d (%d prompt tokens)", i < NJ ? "disaggregated" : "colocated",
                 i % NJ, refs[i % NJ].n_prompt);
        compare(what, &refs[i % NJ], &jobs[i].got);
        refusals += jobs[i].refusals;
    }
    for (int k = 0; k < 2; k++) {
        proc *w = k ? sb : sd;
        double pre = metric_value(metrics_text(w->id), "tandem_num_preemptions_total", w->id);
        CHECK(pre > 0, "%s: preemptions happened (tandem_num_preemptions_total %g)", w->id, pre);
        CHECK(wait_blocks_free(w->id, 2) >= 0, "%s: small pool back to 0 blocks used", w->id);
        if (verbose)
            fprintf(stderr, "%s: %g preemptions\n", w->id, pre);
    }
    if (verbose)
        fprintf(stderr, "small pools: %d admissions refused and retried\n", refusals);

    /* alone, a sequence that outgrows the whole pool (12 x 16 = 192 tokens) ends with an
     * explicit error once it holds all of it, not a silent truncation */
    n_eos = 0;
    static result big;
    run_disagg(sd, dp, "outgrows", refs[0].prompt, refs[0].n_prompt,
               &(sampling){.temperature = 0, .top_p = 1, .max_tokens = 400}, &big);
    CHECK(big.code == RPC_RESOURCE_EXHAUSTED && strstr(big.msg, "whole pool") && big.n == 192 - refs[0].n_prompt + 1,
          "a sequence outgrowing the pool: %s after %d tokens: %s", rpc_code_name(big.code), big.n, big.msg);
    CHECK(wait_blocks_free(sd->id, 2) >= 0, "%s: blocks freed after the oversized sequence", sd->id);
    load_eos("dense");
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s TANDEM MODELS_DIR\n", argv[0]);
        return 2;
    }
    tandem = argv[1];
    models = argv[2];
    verbose = getenv("VERBOSE") != NULL;
    /* A sanitizer build's `tandem generate` may take minutes to load the tokenizer:
     * TANDEM_REFERENCE names another build's binary for the reference outputs. */
    reference_tandem = getenv("TANDEM_REFERENCE") ? getenv("TANDEM_REFERENCE") : tandem;
    signal(SIGPIPE, SIG_IGN);
    rpc_status st;
    int port = 0;
    REQUIRE(rpc_server_create("127.0.0.1:0", &port, &registry, &st) == 0, "%s", st.msg);
    REQUIRE(rpc_server_add_unary(registry, RPC_REGISTRY_REGISTER, on_register, NULL, &st) == 0, "%s", st.msg);
    REQUIRE(rpc_server_add_unary(registry, RPC_REGISTRY_HEARTBEAT, on_heartbeat, NULL, &st) == 0, "%s", st.msg);
    REQUIRE(rpc_server_start(registry, &st) == 0, "%s", st.msg);

    proc *dp = start_worker("dense-p", "prefill", "dense", port, "--max-batch-tokens 64 --kv-blocks 256");
    proc *dd = start_worker("dense-d", "decode", "dense", port, "--kv-blocks 2048 --lease-ms 6000");
    /* dense-b is stopped with a stream open that nobody reads: a short drain, so that
     * SIGTERM fails it explicitly well within stop_worker's 15 s */
    proc *db = start_worker("dense-b", "both", "dense", port,
                            "--max-batch-tokens 100 --kv-blocks 512 --drain-timeout 1");
    proc *mp = start_worker("moe-p", "prefill", "moe", port, "--max-batch-tokens 128");
    proc *md = start_worker("moe-d", "decode", "moe", port, "--kv-blocks 1024");
    proc *sd = start_worker("small-d", "decode", "dense", port, "--kv-blocks 12 --max-batch-tokens 32");
    proc *sb = start_worker("small-b", "both", "dense", port, "--kv-blocks 12 --max-batch-tokens 32");
    for (int i = 0; i < n_procs; i++)
        wait_registered(&procs[i]);

    /* a coordinator that forgot a worker (restarted): the worker registers again */
    pthread_mutex_lock(&reg_mu);
    known_worker *k = find_worker("dense-p");
    int before = k->registrations;
    k->id[0] = 0; /* heartbeats now get reregister */
    pthread_mutex_unlock(&reg_mu);
    int again = 0;
    for (double t0 = eng_now_s(); eng_now_s() - t0 < 5 && !again; usleep(20000)) {
        pthread_mutex_lock(&reg_mu);
        k = find_worker("dense-p");
        again = k && k->registrations >= 1;
        pthread_mutex_unlock(&reg_mu);
    }
    CHECK(again && before == 1, "a forgotten worker registers again");

    same_tokens("dense", dd, dp, db);
    same_tokens("moe", md, mp, NULL);
    kv_on_demand(dp, sd, sb);
    cancels_and_errors(dd, dp);
    check_metrics(dd->id);

    /* SIGTERM with an open stream: the stream ends with an error, the worker exits 0. */
    load_eos("dense");
    n_eos = 0;
    static result ref;
    reference("dense", TEXTS[0], &(sampling){.temperature = 0, .top_p = 1, .max_tokens = 1}, &ref);
    Tandem__SamplingParams sp;
    fill_sampling(&sp, &(sampling){.temperature = 0, .top_p = 1, .max_tokens = 30000});
    Tandem__GenerateRequest g = TANDEM__GENERATE_REQUEST__INIT;
    g.request_id = "sigterm";
    g.prompt = ref.prompt;
    g.n_prompt = (size_t)ref.n_prompt;
    g.sampling = &sp;
    g.colocated = 1;
    rpc_stream *s = NULL;
    REQUIRE(rpc_stream_open_msg(db->ch, RPC_DECODE_GENERATE, &g.base, 60000, &s, &st) == 0, "%s", st.msg);
    Tandem__GenerateEvent *ev = NULL;
    /* (no max_tokens to speak of: admitted on its prompt's blocks, it streams) */
    rpc_next first = rpc_stream_next_msg(s, 10000, &tandem__generate_event__descriptor, (void **)&ev, &st);
    CHECK(first == RPC_NEXT_MSG && ev->event_case == TANDEM__GENERATE_EVENT__EVENT_TOKEN, "a first token");
    if (first == RPC_NEXT_MSG)
        rpc_msg_free(ev);
    for (int i = 0; i < n_procs; i++) {
        rpc_channel_destroy(procs[i].ch == db->ch ? NULL : procs[i].ch);
        if (procs[i].ch != db->ch)
            procs[i].ch = NULL;
    }
    int code = stop_worker(db);
    static result r;
    r.n = 1; /* the first token was read above */
    read_tokens(s, &r);
    CHECK(r.code != RPC_OK, "the open stream ends with an error on SIGTERM (%s: %s)", rpc_code_name(r.code), r.msg);
    rpc_stream_close(s);
    rpc_channel_destroy(db->ch);
    db->ch = NULL;
    CHECK(code == 0, "worker %s exit status %d on SIGTERM", db->id, code);
    for (int i = 0; i < n_procs; i++)
        if (procs[i].pid > 0) {
            int c = stop_worker(&procs[i]);
            CHECK(c == 0, "worker %s exit status %d on SIGTERM", procs[i].id, c);
        }
    rpc_server_stop(registry);
    cleanup();
    if (failures)
        fprintf(stderr, "%d checks failed (worker logs: worker-*.log in the test's directory)\n", failures);
    else
        fprintf(stderr, "all worker cluster checks passed\n");
    return failures ? 1 : 0;
}

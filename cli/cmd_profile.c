/* cmd_profile.c: `tandem profile`, what one worker costs on this machine, for the
 * capacity planner (`tandemctl plan`).
 *
 * Every figure is a real eng_forward step (with its rows of logits sampled, as the
 * worker does) or a real kvtransfer transfer, timed
 * `--repeats` times (min / median / max kept, so the spread shows). The steps are
 * timed in rounds, each shape once per round: a shared machine's speed moves by
 * 20-25% over minutes, and repeats back to back put a shape's every timing in one
 * moment (profiles minutes apart had one shape 35% apart and its neighbours not),
 * where rounds spread each shape's timings over the whole profile:
 *   - prefill steps: one prompt of L tokens from position 0, a batch of prompts, and a
 *     chunk that starts deep in a prompt (chunked prefill);
 *   - decode steps: B sequences of one token each at context C, for a grid of B
 *     (1, 2, 3, 4, 6, 8, 12, ...: a step's cost is a staircase in B, as the matmuls
 *     take tokens in tiles, and knots at the powers of two alone missed the batches
 *     between them by 5-27%) and C;
 *   - mixed steps, as continuous batching runs them: B decoding sequences and the
 *     first chunk of one more prompt in the same forward pass;
 *   - decode and mixed steps are timed right after an untimed step of the same
 *     shape, as a worker runs them one after the other, the caches holding what the
 *     step before left (timed cold, after other shapes, they took 2-8% longer than in
 *     a cluster);
 *   - KV transfers over loopback with the transport the workers use (TCP; RDMA too
 *     when a verbs device exists): a whole prompt's KV as one run per layer, and one
 *     layer alone (the part of a push that compute does not hide);
 *   - with --co-runners K, the same steps again while k = 1..K other workers (each its
 *     own model, KV pool and compute threads, in threads of this process) run those
 *     steps back to back on the same machine: a cluster's workers share cores, caches
 *     and the memory bus, and the planner reads each k's measured slowdown (median,
 *     min and max over the steps of contended / alone) instead of assuming ideal
 *     processor sharing.
 * Each step is described by what the planner's cost model needs: items, tokens per
 * item, the context already cached per item, and the rows of logits computed. The
 * decode points' KV blocks hold a fixed byte pattern, not a real history: a step's
 * time does not depend on the values. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_args.h"
#include "cli_model.h"
#include "commands.h"
#include "common/clock.h"
#include "kvtransfer.h"
#include "model/model.h"
#include "sampling/sampler.h"

#define KV_BLOCK 16
#define MAX_CO_RUNNERS 16

typedef struct profile_args {
    const char *model, *out, *kv_dtype, *matmul_dtype;
    int threads, json, repeats, max_tokens, max_batch, max_context, co_runners, mmap;
} profile_args;

#define A profile_args
static const cli_opt OPTS[] = {
    CLI_STR_OPT(A, model, "--model", "DIR", NULL, "Hugging Face checkpoint folder", CLI_REQUIRED),
    CLI_INT_OPT(A, threads, "--threads", "N", 1, 4096, NULL,
                "compute threads, as the worker will run with; default: one per CPU"),
    CLI_KV_DTYPE_OPT(A, kv_dtype),
    CLI_MATMUL_DTYPE_OPT(A, matmul_dtype),
    CLI_MMAP_OPT(A, mmap),
    CLI_FLAG_OPT(A, json, "--json", "print the profile (JSON) on stdout instead of the table"),
    CLI_STR_OPT(A, out, "--out", "FILE", NULL, "also write the profile (JSON) to FILE", 0),
    CLI_INT_OPT(A, repeats, "--repeats", "R", 1, 100, "5",
                "timings of each point, in rounds over the points (min,\nmedian, max kept)"),
    CLI_INT_OPT(A, max_tokens, "--max-tokens", "T", 64, 1 << 16, "2048",
                "longest prefill step (the workers' --max-batch-tokens)"),
    CLI_INT_OPT(A, max_batch, "--max-batch", "B", 1, 1024, "64", "largest decode batch (the workers' --max-running)"),
    CLI_INT_OPT(A, max_context, "--max-context", "C", 16, 1 << 16, "1024", "longest decode context"),
    CLI_INT_OPT(A, co_runners, "--co-runners", "K", 0, MAX_CO_RUNNERS, "0",
                "also time the steps beside 1..K other workers running\nsteps on the same machine (K: the cluster's "
                "workers - 1)"),
};
#undef A

static const cli_command CMD = {
    .name = "tandem profile",
    .usage = "--model DIR [--threads N] [--kv-dtype bf16|f16|f32] [--json] [--out FILE] [--repeats R] "
             "[--max-tokens T] [--max-batch B] [--max-context C] [--co-runners K]",
    .about = "Times prefill steps, decode steps and KV transfers of one worker on this machine\n"
             "and writes the profile that `tandemctl plan` reads. Takes a minute or two for a\n"
             "small model; the machine should be otherwise idle for figures worth planning on.",
    .opts = OPTS,
    .n_opts = CLI_COUNT(OPTS),
};

/* min, median, max of n timings (sorted in place) into o */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double add_spread(cJSON *o, double *t, int n, const char *unit)
{
    char key[16];
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    double med = n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
    snprintf(key, sizeof key, "min%s", unit);
    cJSON_AddNumberToObject(o, key, t[0]);
    snprintf(key, sizeof key, "median%s", unit);
    cJSON_AddNumberToObject(o, key, med);
    snprintf(key, sizeof key, "max%s", unit);
    cJSON_AddNumberToObject(o, key, t[n - 1]);
    return med;
}

/* One worker's engine: a model, its KV pool and the buffers of the largest step. */
typedef struct profiler {
    eng_model *m;
    eng_kv_pool *kv;
    eng_seq *seqs;
    int n_seqs;
    int32_t *tokens;
    float *logits;
    eng_batch_item *items;
    int vocab;
    double *times; /* --repeats timings of a KV transfer */
} profiler;

/* A step shape as the profile records it: items alike, and for a mixed step one more
 * item, the first `chunk` tokens of a prompt (from position 0, no logits). */
typedef struct step_shape {
    int items, per_item, context, with_logits, chunk;
} step_shape;

static void release_all(profiler *p)
{
    for (int i = 0; i < p->n_seqs; i++)
        eng_seq_release(p->kv, &p->seqs[i]);
}

static void profiler_close(profiler *p)
{
    if (p->kv) {
        release_all(p);
        eng_kv_pool_destroy(p->kv);
    }
    free(p->seqs);
    free(p->items);
    free(p->tokens);
    free(p->logits);
    free(p->times);
    eng_model_free(p->m);
    memset(p, 0, sizeof *p);
}

/* Loads the model and sizes the pool and buffers for the largest point: B decoding at
 * C, four prompts of T / 4, or a chunk of T / 4 after C. */
static int profiler_open(profiler *p, const profile_args *a, eng_error *err)
{
    int T = a->max_tokens, B = a->max_batch, C = a->max_context;
    memset(p, 0, sizeof *p);
    eng_model_options mo = {
        .n_threads = a->threads, .matmul_dtype = cli_matmul_dtype(a->matmul_dtype), .mmap_weights = a->mmap};
    if (eng_model_load(a->model, &mo, &p->m, err) < 0)
        return -1;
    eng_kv_layout layout = eng_model_kv_layout(p->m, KV_BLOCK, cli_kv_dtype(a->kv_dtype));
    p->vocab = eng_model_config(p->m)->vocab_size;
    p->n_seqs = B + 1 > 4 ? B + 1 : 4; /* B decoding and a mixed step's prompt */
    int pool_blocks = B * ((C + KV_BLOCK) / KV_BLOCK) + (T / 4 + KV_BLOCK - 1) / KV_BLOCK;
    if (pool_blocks < 4 * ((T / 4 + KV_BLOCK - 1) / KV_BLOCK) + 1)
        pool_blocks = 4 * ((T / 4 + KV_BLOCK - 1) / KV_BLOCK) + 1;
    if (pool_blocks < (C + T + KV_BLOCK - 1) / KV_BLOCK)
        pool_blocks = (C + T + KV_BLOCK - 1) / KV_BLOCK;
    size_t n_tok = (size_t)p->n_seqs * (size_t)(T > C ? T : C + 1);
    p->seqs = calloc((size_t)p->n_seqs, sizeof *p->seqs);
    p->items = calloc((size_t)p->n_seqs, sizeof *p->items);
    p->tokens = malloc(n_tok * sizeof *p->tokens);
    p->logits = malloc((size_t)p->n_seqs * (size_t)p->vocab * sizeof *p->logits);
    p->times = malloc((size_t)a->repeats * sizeof *p->times);
    if (!p->seqs || !p->items || !p->tokens || !p->logits || !p->times) {
        profiler_close(p);
        return eng_fail(err, "out of memory");
    }
    int ordinary = p->vocab < 151643 ? p->vocab : 151643; /* no special tokens */
    for (size_t i = 0; i < n_tok; i++)
        p->tokens[i] = (int32_t)((i * 7919 + 13) % (size_t)ordinary);
    if (eng_kv_pool_create(&layout, pool_blocks, &p->kv, err) < 0) {
        profiler_close(p);
        return -1;
    }
    memset(eng_kv_pool_base(p->kv), 0x3c, eng_kv_pool_bytes(p->kv)); /* resident, finite floats */
    return 0;
}

/* Runs one step of shape s (its blocks hold the pool's pattern as history) as the worker's
 * engine thread does: the forward pass, then a token sampled from every row of logits
 * (greedy, bench/loadgen.mjs's sampling; eng_sample's pass over the vocabulary costs a
 * millisecond or more per row, as much as the LM head itself). Seconds, or -1. */
static double run_step(profiler *p, const step_shape *s, eng_error *err)
{
    release_all(p);
    for (int i = 0; i < s->items; i++) {
        if (eng_seq_reserve(p->kv, &p->seqs[i], s->context + s->per_item, err) < 0)
            return -1;
        p->seqs[i].n_past = s->context;
        p->items[i] = (eng_batch_item){.seq = &p->seqs[i],
                                       .tokens = p->tokens + (size_t)i * s->per_item,
                                       .n_tokens = s->per_item,
                                       .logits = s->with_logits ? p->logits + (size_t)i * p->vocab : NULL};
    }
    int n = s->items;
    if (s->chunk) {
        if (eng_seq_reserve(p->kv, &p->seqs[n], s->chunk, err) < 0)
            return -1;
        p->items[n] = (eng_batch_item){
            .seq = &p->seqs[n], .tokens = p->tokens + (size_t)n * s->per_item, .n_tokens = s->chunk};
        n++;
    }
    eng_sampling greedy;
    eng_sampling_defaults(&greedy);
    double t0 = eng_now_s();
    if (eng_forward(p->m, p->kv, p->items, n, NULL, NULL, err) < 0)
        return -1;
    for (int i = 0; i < s->items && s->with_logits; i++) {
        eng_sample_result res;
        if (eng_sample(&greedy, p->items[i].logits, p->vocab, p->items[i].tokens, s->per_item, NULL, 0, 0, &res) < 0)
            return eng_fail(err, "sampling failed");
    }
    return eng_now_s() - t0;
}

/* Appends shape s's point, timed n times (t[], reordered), to arr; returns its median. */
static double add_step(cJSON *arr, const char *phase, const step_shape *s, double *t, int n)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "phase", phase);
    cJSON_AddNumberToObject(o, "items", s->items);
    cJSON_AddNumberToObject(o, "tokens_per_item", s->per_item);
    cJSON_AddNumberToObject(o, "context", s->context);
    cJSON_AddNumberToObject(o, "logits", s->with_logits ? s->items : 0);
    cJSON_AddNumberToObject(o, "prompt_chunk", s->chunk);
    double med = add_spread(o, t, n, "_s");
    cJSON_AddItemToArray(arr, o);
    return med;
}

/* ---------------------------------------------------------------- co-runners */

/* Another worker on the machine: its own engine running the profile's step shapes
 * back to back, from its own starting point, while the profiler lets it (index <
 * *active). */
typedef struct co_runner {
    profiler p;
    const step_shape *shapes;
    int n_shapes, next, index;
    atomic_int *active, *quit;
    atomic_int in_step; /* set before it looks at *active: once it reads 0 after a pause, no step runs */
    atomic_int started; /* steps begun */
    atomic_int failed;
    eng_error err;
    pthread_t thread;
} co_runner;

static void pause_ms(void)
{
    nanosleep(&(struct timespec){0, 1000000}, NULL);
}

static void *co_runner_main(void *arg)
{
    co_runner *c = arg;
    while (!atomic_load(c->quit)) {
        atomic_store(&c->in_step, 1);
        if (c->index >= atomic_load(c->active)) {
            atomic_store(&c->in_step, 0);
            pause_ms();
            continue;
        }
        atomic_fetch_add(&c->started, 1);
        double t = run_step(&c->p, &c->shapes[c->next], &c->err);
        atomic_store(&c->in_step, 0);
        if (t < 0) {
            atomic_store(&c->failed, 1);
            break;
        }
        c->next = (c->next + 1) % c->n_shapes;
    }
    release_all(&c->p);
    return NULL;
}

/* Lets co-runners 0..k-1 run and returns once each is inside a step (or has failed);
 * k = 0: once none is. */
static void set_active(co_runner *cr, int n, atomic_int *active, int k)
{
    int before[MAX_CO_RUNNERS];
    for (int j = 0; j < n; j++)
        before[j] = atomic_load(&cr[j].started);
    atomic_store(active, k);
    for (int j = 0; j < n; j++)
        while (!atomic_load(&cr[j].failed) &&
               (j < k ? atomic_load(&cr[j].started) == before[j] : atomic_load(&cr[j].in_step)))
            pause_ms();
}

/* The decode batch after b: 1, 2, 3, 4, 6, 8, 12, 16, ... (b plus half the largest
 * power of two in it). */
static int next_batch(int b)
{
    int pow2 = 1;
    while (pow2 * 2 <= b)
        pow2 *= 2;
    return b + (pow2 > 1 ? pow2 / 2 : 1);
}

/* Every shape timed alone (into steps) and then beside k = 1..K co-runners (into
 * contention[k - 1].steps), one shape after the other, so that a change in the
 * machine's other load hits both sides of a ratio alike; all of that once per round,
 * a->repeats rounds. Each k's slowdown is the spread over the shapes of median beside
 * k / median alone. */
static int time_steps(profiler *p, const profile_args *a, const step_shape *shapes, const char *const *phases,
                      int n_shapes, cJSON *steps, cJSON *contention, eng_error *err)
{
    int K = a->co_runners, running = 0, rc = -1;
    co_runner *cr = calloc((size_t)(K ? K : 1), sizeof *cr);
    double *ratio = malloc((size_t)n_shapes * (size_t)(K ? K : 1) * sizeof *ratio);
    /* times[((i * (K + 1)) + k) * repeats + r]: shape i beside k co-runners, round r */
    double *times = malloc((size_t)n_shapes * (size_t)(K + 1) * (size_t)a->repeats * sizeof *times);
    atomic_int active = 0, quit = 0;
    cJSON *per_k[MAX_CO_RUNNERS];
    if (!cr || !times || !ratio) {
        eng_fail(err, "out of memory");
        goto done;
    }
    for (int k = 1; k <= K; k++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(contention, o);
        cJSON_AddNumberToObject(o, "co_runners", k);
        per_k[k - 1] = cJSON_AddArrayToObject(o, "steps");
    }
    for (int j = 0; j < K; j++) {
        co_runner *c = &cr[j];
        if (profiler_open(&c->p, a, err) < 0)
            goto done;
        c->shapes = shapes;
        c->n_shapes = n_shapes;
        c->next = j * n_shapes / K;
        c->index = j;
        c->active = &active;
        c->quit = &quit;
        if (pthread_create(&c->thread, NULL, co_runner_main, c) != 0) {
            eng_fail(err, "cannot start a co-runner thread");
            goto done;
        }
        running++;
    }
    set_active(cr, K, &active, K); /* warm-up: each co-runner's first step brings its weights in */
    for (int j = 0; j < K; j++)
        while (atomic_load(&cr[j].started) < 2 && !atomic_load(&cr[j].failed))
            pause_ms();
    for (int r = 0; r < a->repeats; r++)
        for (int i = 0; i < n_shapes; i++) {
            for (int k = 0; k <= K; k++) {
                set_active(cr, K, &active, k);
                if (shapes[i].per_item == 1 && run_step(p, &shapes[i], err) < 0) /* decode, mixed: warm */
                    goto done;
                double t = run_step(p, &shapes[i], err);
                if (t < 0)
                    goto done;
                times[((size_t)i * (size_t)(K + 1) + (size_t)k) * (size_t)a->repeats + (size_t)r] = t;
            }
            release_all(p);
            set_active(cr, K, &active, 0);
            for (int j = 0; j < K; j++)
                if (atomic_load(&cr[j].failed)) {
                    eng_fail(err, "co-runner %d: %s", j + 1, cr[j].err.msg);
                    goto done;
                }
        }
    for (int i = 0; i < n_shapes; i++) {
        double *t = times + (size_t)i * (size_t)(K + 1) * (size_t)a->repeats, alone = 0;
        for (int k = 0; k <= K; k++) {
            double med = add_step(k ? per_k[k - 1] : steps, phases[i], &shapes[i], t + (size_t)k * a->repeats,
                                  a->repeats);
            if (k == 0)
                alone = med;
            else
                ratio[(size_t)(k - 1) * (size_t)n_shapes + (size_t)i] = med / alone;
        }
    }
    for (int k = 1; k <= K; k++)
        add_spread(cJSON_AddObjectToObject(cJSON_GetArrayItem(contention, k - 1), "slowdown"),
                   ratio + (size_t)(k - 1) * (size_t)n_shapes, n_shapes, "");
    rc = 0;
done:
    atomic_store(&quit, 1);
    for (int j = 0; j < running; j++)
        pthread_join(cr[j].thread, NULL);
    for (int j = 0; cr && j < K; j++)
        profiler_close(&cr[j].p);
    free(cr);
    free(times);
    free(ratio);
    return rc;
}

/* KV transfers through one transport kind, both ends in this process over loopback. */
static int time_transfers(const char *which, size_t bytes_per_token, int layers, int max_tokens, int repeats,
                          double *times, cJSON *out, eng_error *err)
{
    static const int TOKENS[] = {16, 256, 2048};
    size_t cap = bytes_per_token * (size_t)max_tokens;
    kvt_open_options oo = {.rdma = {.gid_index = -1}};
    kvt_transport *rt = NULL, *st = NULL;
    kvt_region *rr = NULL, *sr = NULL;
    kvt_peer *peer;
    char *rmem = calloc(1, cap), *smem = malloc(cap);
    int rc = -1;
    if (!rmem || !smem) {
        eng_fail(err, "out of memory for %zu bytes of KV", cap);
        goto done;
    }
    memset(smem, 0x5a, cap);
    char desc[KVT_DESCRIPTOR_MAX], hello[KVT_HELLO_MAX], reply[KVT_HELLO_MAX];
    size_t dlen, hlen, rlen;
    if (kvt_open(which, &oo, &rt, err) < 0 || kvt_open(which, &oo, &st, err) < 0 ||
        kvt_register(rt, rmem, cap, &rr, err) < 0 || kvt_register(st, smem, cap, &sr, err) < 0 ||
        kvt_descriptor(rt, rr, desc, sizeof desc, &dlen, err) < 0 || kvt_connect(st, desc, dlen, &peer, err) < 0)
        goto done;
    if ((hlen = kvt_peer_hello(peer, hello, sizeof hello)) > 0 &&
        (kvt_accept_hello(rt, hello, hlen, reply, sizeof reply, &rlen, err) < 0 ||
         kvt_peer_reply(peer, reply, rlen, err) < 0))
        goto done;
    cJSON *pts = cJSON_AddArrayToObject(out, "points");
    cJSON_AddStringToObject(out, "transport", kvt_name(st));
    for (size_t k = 0; k < sizeof TOKENS / sizeof TOKENS[0]; k++) {
        if (TOKENS[k] > max_tokens)
            continue;
        for (int one_layer = 0; one_layer < 2; one_layer++) {
            int runs = one_layer ? 1 : layers;
            size_t run = bytes_per_token * (size_t)TOKENS[k] / (size_t)layers;
            for (int r = 0; r < repeats; r++) {
                uint64_t id;
                kvt_send *s;
                if (kvt_expect(rt, rr, run * (size_t)runs, &id, err) < 0)
                    goto done;
                double t0 = eng_now_s();
                int ok = kvt_send_begin(peer, sr, id, NULL, &s, err) == 0;
                for (int i = 0; ok && i < runs; i++)
                    if (kvt_send_write(s, (uint64_t)i * run, (uint64_t)i * run, run, err) < 0) {
                        kvt_send_abort(s, err->msg);
                        ok = 0;
                    }
                ok = ok && kvt_send_finish(s, 60000, err) == 0;
                times[r] = eng_now_s() - t0;
                ok = ok && kvt_wait(rt, id, 60000, err) == KVT_OK;
                kvt_forget(rt, id);
                if (!ok)
                    goto done;
            }
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "tokens", TOKENS[k]);
            cJSON_AddNumberToObject(o, "runs", runs);
            cJSON_AddNumberToObject(o, "bytes", (double)run * runs);
            add_spread(o, times, repeats, "_s");
            cJSON_AddItemToArray(pts, o);
        }
    }
    rc = 0;
done:
    if (rr)
        kvt_deregister(rt, rr, NULL);
    if (sr)
        kvt_deregister(st, sr, NULL);
    if (st)
        kvt_destroy(st);
    if (rt)
        kvt_destroy(rt);
    free(rmem);
    free(smem);
    return rc;
}

static void print_table(const cJSON *prof)
{
    const cJSON *steps = cJSON_GetObjectItem(prof, "steps");
    printf("profile of %s: %d threads, kernels %s, %.0f s\n", cJSON_GetObjectItem(prof, "model")->valuestring,
           cJSON_GetObjectItem(prof, "threads")->valueint, cJSON_GetObjectItem(prof, "kernels")->valuestring,
           cJSON_GetObjectItem(prof, "seconds")->valuedouble);
    printf("%-8s %6s %9s %8s %7s %6s %10s %10s %10s\n", "step", "items", "tok/item", "context", "logits", "chunk",
           "min ms", "median ms", "max ms");
    const cJSON *s;
    cJSON_ArrayForEach(s, steps)
    {
        printf("%-8s %6d %9d %8d %7d %6d %10.2f %10.2f %10.2f\n", cJSON_GetObjectItem(s, "phase")->valuestring,
               cJSON_GetObjectItem(s, "items")->valueint, cJSON_GetObjectItem(s, "tokens_per_item")->valueint,
               cJSON_GetObjectItem(s, "context")->valueint, cJSON_GetObjectItem(s, "logits")->valueint,
               cJSON_GetObjectItem(s, "prompt_chunk")->valueint, 1e3 * cJSON_GetObjectItem(s, "min_s")->valuedouble,
               1e3 * cJSON_GetObjectItem(s, "median_s")->valuedouble,
               1e3 * cJSON_GetObjectItem(s, "max_s")->valuedouble);
    }
    const cJSON *x;
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(prof, "contention"))
    {
        const cJSON *sd = cJSON_GetObjectItem(x, "slowdown");
        printf("beside %d co-runner(s): steps %.2fx slower (median; %.2fx to %.2fx over the steps)\n",
               cJSON_GetObjectItem(x, "co_runners")->valueint, cJSON_GetObjectItem(sd, "median")->valuedouble,
               cJSON_GetObjectItem(sd, "min")->valuedouble, cJSON_GetObjectItem(sd, "max")->valuedouble);
    }
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(prof, "kv_transfer"))
    {
        printf("KV transfer over %s:\n", cJSON_GetObjectItem(x, "transport")->valuestring);
        printf("%8s %5s %12s %10s %10s %10s\n", "tokens", "runs", "bytes", "min ms", "median ms", "max ms");
        const cJSON *p;
        cJSON_ArrayForEach(p, cJSON_GetObjectItem(x, "points"))
        {
            printf("%8d %5d %12.0f %10.3f %10.3f %10.3f\n", cJSON_GetObjectItem(p, "tokens")->valueint,
                   cJSON_GetObjectItem(p, "runs")->valueint, cJSON_GetObjectItem(p, "bytes")->valuedouble,
                   1e3 * cJSON_GetObjectItem(p, "min_s")->valuedouble,
                   1e3 * cJSON_GetObjectItem(p, "median_s")->valuedouble,
                   1e3 * cJSON_GetObjectItem(p, "max_s")->valuedouble);
        }
    }
}

static cJSON *load_average(void)
{
    double l[3] = {0};
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf %lf %lf", &l[0], &l[1], &l[2]) != 3)
            l[0] = l[1] = l[2] = 0;
        fclose(f);
    }
    return cJSON_CreateDoubleArray(l, 3);
}

static int write_file(const char *path, const char *text, eng_error *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return eng_fail(err, "%s: cannot write", path);
    int bad = fputs(text, f) < 0 || fputc('\n', f) < 0;
    bad |= fclose(f) != 0;
    return bad ? eng_fail(err, "%s: write failed", path) : 0;
}

int cmd_profile(int argc, char **argv)
{
    profile_args a = {0};
    int rc = cli_parse(&CMD, argc, argv, &a);
    if (rc != CLI_RUN)
        return rc;
    int T = a.max_tokens, B = a.max_batch, C = a.max_context;
    eng_error err = {{0}};
    profiler p = {0};
    cJSON *prof = cJSON_CreateObject();
    char *text = NULL;
    int status = 1, n_shapes = 0;
    enum { MAX_SHAPES = 96 }; /* 7 prompt lengths + 2 + 21 batch sizes x 3 contexts + 4 mixed at most */
    step_shape shapes[MAX_SHAPES];
    const char *phases[MAX_SHAPES];
    double t_start = eng_now_s();
    if (profiler_open(&p, &a, &err) < 0)
        goto fail;
    const eng_config *cfg = eng_model_config(p.m);
    const eng_kv_layout *layout = eng_kv_pool_layout(p.kv);
    size_t bytes_per_token = eng_kv_unit_bytes(layout) / KV_BLOCK * (size_t)layout->n_layers;

    cJSON_AddStringToObject(prof, "format", "tandem-profile-1");
    const char *base = strrchr(a.model, '/');
    cJSON_AddStringToObject(prof, "model", base && base[1] ? base + 1 : a.model);
    cJSON_AddNumberToObject(prof, "threads", eng_model_threads(p.m));
    cJSON_AddStringToObject(prof, "kernels", eng_kernels_isa());
    cJSON_AddNumberToObject(prof, "repeats", a.repeats);
    cJSON_AddNumberToObject(prof, "layers", layout->n_layers);
    cJSON_AddNumberToObject(prof, "kv_block_size", KV_BLOCK);
    cJSON_AddStringToObject(prof, "kv_dtype", eng_dtype_name(layout->dtype));
    cJSON_AddStringToObject(prof, "matmul_dtype", eng_dtype_name(layout->matmul_dtype));
    cJSON_AddNumberToObject(prof, "kv_bytes_per_token", (double)bytes_per_token);
    cJSON_AddNumberToObject(prof, "max_context",
                            cfg->max_position_embeddings > 0 ? cfg->max_position_embeddings : 4096);
    cJSON_AddItemToObject(prof, "load_average_before", load_average());
    {
        time_t now = time(NULL);
        char when[32];
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
        cJSON_AddStringToObject(prof, "created", when);
    }

    /* warm-up: one token brings every weight page in */
    if (run_step(&p, &(step_shape){1, 1, 0, 1, 0}, &err) < 0)
        goto fail;
    release_all(&p);

    for (int L = 16; L <= T; L = L < T && L * 4 > T ? T : L * 4) {
        phases[n_shapes] = "prefill";
        shapes[n_shapes++] = (step_shape){1, L, 0, 1, 0};
    }
    /* a batch of four prompts, and a chunk continuing a long prompt */
    phases[n_shapes] = "prefill";
    shapes[n_shapes++] = (step_shape){4, T / 4, 0, 1, 0};
    phases[n_shapes] = "prefill";
    shapes[n_shapes++] = (step_shape){1, T / 4, C, 0, 0};
    const int contexts[] = {16, C / 4 > 16 ? C / 4 : 16, C};
    for (int b = 1; b <= B; b = b < B && next_batch(b) > B ? B : next_batch(b))
        for (int k = 0; k < 3; k++)
            if (k == 0 || contexts[k] > contexts[k - 1]) {
                phases[n_shapes] = "decode";
                shapes[n_shapes++] = (step_shape){b, 1, contexts[k], 1, 0};
            }
    /* mixed: a decode batch of 8 and of B / 2 at context C / 4, each with a prompt's
     * first chunk of 64 and of T / 8 tokens */
    const int mixed_b[] = {B < 8 ? B : 8, B / 2 > 8 ? B / 2 : 0}, chunks[] = {T / 8 < 64 ? T / 8 : 64, T / 8};
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 2; k++)
            if (mixed_b[i] && (k == 0 || chunks[k] > chunks[0])) {
                phases[n_shapes] = "mixed";
                shapes[n_shapes++] = (step_shape){mixed_b[i], 1, contexts[1], 1, chunks[k]};
            }
    cJSON *steps = cJSON_AddArrayToObject(prof, "steps");
    cJSON *contention = a.co_runners ? cJSON_AddArrayToObject(prof, "contention") : NULL;
    if (time_steps(&p, &a, shapes, phases, n_shapes, steps, contention, &err) < 0)
        goto fail;

    cJSON *xfers = cJSON_AddArrayToObject(prof, "kv_transfer");
    char dev[64], why[256];
    const char *kinds[2] = {"tcp", kvt_rdma_probe(dev, sizeof dev, why, sizeof why) ? "rdma" : NULL};
    for (int k = 0; k < 2 && kinds[k]; k++) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddItemToArray(xfers, x);
        if (time_transfers(kinds[k], bytes_per_token, layout->n_layers, T, a.repeats, p.times, x, &err) < 0)
            goto fail;
    }
    cJSON_AddItemToObject(prof, "load_average_after", load_average());
    cJSON_AddNumberToObject(prof, "seconds", eng_now_s() - t_start);

    text = cJSON_Print(prof);
    if (!text) {
        eng_fail(&err, "out of memory");
        goto fail;
    }
    if (a.out && write_file(a.out, text, &err) < 0)
        goto fail;
    if (a.json)
        puts(text);
    else
        print_table(prof);
    status = 0;
    goto done;
fail:
    fprintf(stderr, "tandem profile: %s\n", err.msg);
done:
    free(text);
    cJSON_Delete(prof);
    profiler_close(&p);
    return status;
}

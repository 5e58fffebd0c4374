/* plan_sim.c: a discrete-event model of a Tandem cluster serving a trace.
 *
 * It follows the rules of the code it models:
 *   - the router (coordinator/router.c, coord_route_pick): a decode (or colocated)
 *     worker with room first, then the fewest streams (running + queued + reserved),
 *     then the most free KV blocks; its prefill partner is the prefill worker with the
 *     fewest queued prompt tokens. A request no worker admits waits at the router and
 *     is tried again, oldest first, whenever a sequence ends;
 *   - decode admission (worker/plan.c, wrk_admit): blocks for the prompt and one token,
 *     admitted while the pool keeps a free block per sequence already admitted and
 *     fewer than --max-running are reserved or running;
 *   - the engine loop (worker/engine.c): each step carries one token of every running
 *     sequence, then chunks of queued prompts first come first served under the rest
 *     of --max-batch-tokens; new sequences join between steps;
 *   - disaggregated: the prefill worker samples the first token when the prompt's last
 *     chunk is computed; the KV push overlaps the layers, so what remains is the last
 *     layer's push (profile latency + bytes / rate); then the sequence joins the decode
 *     worker's batch and the client gets its first token.
 * A step's time comes from the profile's cost model (plan.h: the linear fit and its
 * knots at the measured decode batches and prompt lengths), measured in a worker
 * running alone. While k + 1 workers are inside a step at once, each runs at
 * 1 / slowdown[k] of that speed, the slowdown the profile measured beside k busy
 * co-runners (shared cores, caches and memory bus); beyond the k measured, the last
 * measured slowdown grows as processor sharing would. A profile without contention
 * figures gets ideal processor sharing of `cores` CPUs: min(1, cores / ((k + 1) *
 * threads)).
 * The serving path's own CPU (serving_cpu_per_token: the coordinator turning each
 * token into an SSE event, the client reading it, the RPC and KV threads) is work
 * queued with every token a client receives and done by one more runnable thread on
 * the same `cores` while any is left: with T busy compute threads the steps then run
 * at max(cores, T) / max(cores, T + 1) of their speed and that thread at min(1,
 * cores / (T + 1)). On two cores with both workers in a step, a third runnable
 * thread takes a third of the machine until its work is done.
 * The engine thread's own streaming (stream_cpu_per_token: each token's message and
 * gRPC send after the step, not in the profile's steps) lengthens the step that
 * produced the tokens. step_scale multiplies every step's profiled cost (a host
 * found running at another speed than it profiled).
 * Not modelled: preemption when a decode pool runs out (the default pool holds
 * max_running full contexts), heartbeat lag in the router's view of the load. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

typedef enum { Q_WAIT_ROUTE, Q_PREFILL, Q_XFER, Q_RUNNING, Q_DONE } seq_state;
typedef enum { W_PREFILL, W_DECODE, W_BOTH } worker_role;

typedef struct seq {
    seq_state state;
    int prefilled, generated, chunk, blocks;
    int prefill_w, decode_w; /* workers; prefill_w == decode_w when colocated */
    double t_first, t_last, t_join;
} seq;

typedef struct list {
    int *v, n, cap;
} list;

typedef struct worker {
    worker_role role;
    list queue, running, step; /* prompts waiting or in prefill; decoding; in this step */
    double work_left;          /* seconds of the current step at full speed; < 0 idle */
    int admitted;              /* sequences reserved or running here (decode side) */
    int blocks_used;
    long long queued_tokens; /* prompt tokens still to compute (prefill side) */
} worker;

typedef struct sim {
    const plan_profile *p;
    const plan_cluster *c;
    const plan_request *req;
    seq *s;
    worker *w;
    int n_w;
    list waiting, xfer; /* at the router; KV on the wire */
    double now;
    double serving_left;         /* CPU seconds of serving work queued by tokens sent and not yet done */
    double step_work, step_wall; /* the steps' seconds as profiled alone, and as they ran here */
} sim;

static int push(list *l, int x)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        int *v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = x;
    return 0;
}

static void drop(list *l, int x)
{
    int k = 0;
    for (int i = 0; i < l->n; i++)
        if (l->v[i] != x)
            l->v[k++] = l->v[i];
    l->n = k;
}

static int blocks_for(const sim *m, long long tokens)
{
    return (int)((tokens + m->p->block_size - 1) / m->p->block_size);
}

/* ---------------------------------------------------------------- routing */

static int has_room(const sim *m, const worker *w, int need)
{
    return need <= m->c->kv_blocks && m->c->kv_blocks - w->blocks_used - need >= w->admitted &&
           w->admitted < m->c->max_running;
}

/* coord_route_pick's better_decode: room, then fewer streams, then more free blocks */
static int better(const sim *m, const worker *a, const worker *b, int need)
{
    int ra = has_room(m, a, need), rb = has_room(m, b, need);
    if (ra != rb)
        return ra > rb;
    if (a->admitted != b->admitted)
        return a->admitted < b->admitted;
    return a->blocks_used < b->blocks_used;
}

/* Routes request i now, or returns 0 when no worker admits it yet. */
static int route(sim *m, int i)
{
    int colocated = m->c->n_both > 0, need = blocks_for(m, m->req[i].prompt + 1);
    int d = -1, pw = -1;
    for (int k = 0; k < m->n_w; k++) {
        worker_role want = colocated ? W_BOTH : W_DECODE;
        if (m->w[k].role == want && (d < 0 || better(m, &m->w[k], &m->w[d], need)))
            d = k;
    }
    if (d < 0 || !has_room(m, &m->w[d], need))
        return 0;
    pw = d;
    if (!colocated)
        for (int k = 0, best = -1; k < m->n_w; k++)
            if (m->w[k].role == W_PREFILL &&
                (best < 0 || m->w[k].queued_tokens < m->w[best].queued_tokens ||
                 (m->w[k].queued_tokens == m->w[best].queued_tokens && m->w[k].queue.n < m->w[best].queue.n)))
                best = pw = k;
    seq *s = &m->s[i];
    s->decode_w = d;
    s->prefill_w = pw;
    s->blocks = need;
    s->state = Q_PREFILL;
    m->w[d].admitted++;
    m->w[d].blocks_used += need;
    m->w[pw].queued_tokens += m->req[i].prompt;
    return push(&m->w[pw].queue, i) < 0 ? -1 : 1;
}

static int retry_waiting(sim *m)
{
    int k = 0, rc = 1;
    for (; k < m->waiting.n && rc == 1; k++) /* oldest first; the rest keep waiting */
        if ((rc = route(m, m->waiting.v[k])) < 0)
            return -1;
    if (rc == 0)
        k--;
    if (k > 0) {
        memmove(m->waiting.v, m->waiting.v + k, (size_t)(m->waiting.n - k) * sizeof *m->waiting.v);
        m->waiting.n -= k;
    }
    return 0;
}

/* ---------------------------------------------------------------- steps */

static void add_terms(double *x, double items, double per_item, double context, double logits)
{
    plan_shape sh = {items, per_item, context, logits, 0};
    double t[PLAN_COST_TERMS];
    plan_shape_terms(&sh, t);
    for (int k = 1; k < PLAN_COST_TERMS; k++)
        x[k] += t[k];
}

/* Plans a step on idle worker w (running tokens, then prompt chunks under the budget). */
static void start_step(sim *m, worker *w)
{
    double x[PLAN_COST_TERMS] = {1, 0, 0, 0};
    w->step.n = 0;
    for (int k = 0; k < w->running.n; k++) {
        int i = w->running.v[k];
        add_terms(x, 1, 1, m->req[i].prompt + m->s[i].generated - 1, 1);
        w->step.v[w->step.n++] = i;
    }
    int budget = m->c->max_batch_tokens - w->running.n, streamed = w->running.n, longest_chunk = 0;
    for (int k = 0; k < w->queue.n && budget > 0; k++) {
        int i = w->queue.v[k];
        seq *s = &m->s[i];
        int left = m->req[i].prompt - s->prefilled;
        s->chunk = left < budget ? left : budget;
        budget -= s->chunk;
        longest_chunk = s->chunk > longest_chunk ? s->chunk : longest_chunk;
        int last = s->prefilled + s->chunk == m->req[i].prompt;
        add_terms(x, 1, s->chunk, s->prefilled, last);
        streamed += last && s->prefill_w == s->decode_w; /* colocated: its first token, streamed here */
        w->step.v[w->step.n++] = i;
    }
    if (!w->step.n) {
        w->work_left = -1;
        return;
    }
    double cost = plan_step_seconds(&m->p->cost, x, w->running.n, longest_chunk);
    double streaming = streamed * m->c->stream_cpu_per_token;
    w->work_left = m->c->step_scale * cost + streaming;
    m->step_work += cost + streaming; /* as profiled: the stretch shows the scale */
}

static void finish_seq(sim *m, int i)
{
    seq *s = &m->s[i];
    worker *d = &m->w[s->decode_w];
    s->state = Q_DONE;
    d->admitted--;
    d->blocks_used -= s->blocks;
    drop(&d->running, i);
}

/* Emits a token of sequence i at now (the first when generated is 0). */
static void emit(sim *m, int i)
{
    seq *s = &m->s[i];
    m->serving_left += m->c->serving_cpu_per_token;
    if (s->generated++ == 0)
        s->t_first = m->now;
    s->t_last = m->now;
    int want = blocks_for(m, m->req[i].prompt + s->generated);
    m->w[s->decode_w].blocks_used += want - s->blocks;
    s->blocks = want;
    if (s->generated >= m->req[i].output)
        finish_seq(m, i);
}

static int end_step(sim *m, worker *w)
{
    for (int k = 0; k < w->step.n; k++) {
        int i = w->step.v[k];
        seq *s = &m->s[i];
        if (s->state == Q_RUNNING) {
            emit(m, i);
            continue;
        }
        s->prefilled += s->chunk;
        w->queued_tokens -= s->chunk;
        if (s->prefilled < m->req[i].prompt)
            continue;
        drop(&w->queue, i);
        if (s->prefill_w == s->decode_w) { /* colocated: first token now, decoding from the next step */
            s->state = Q_RUNNING;
            if (push(&w->running, i) < 0)
                return -1;
            emit(m, i);
            continue;
        }
        double layer_bytes = m->p->kv_bytes_per_token * m->req[i].prompt / m->p->layers;
        s->t_join = m->now + m->p->xfer_latency_s + layer_bytes / m->p->xfer_bytes_per_s;
        s->state = Q_XFER;
        if (push(&m->xfer, i) < 0)
            return -1;
    }
    w->step.n = 0;
    w->work_left = -1;
    return 0;
}

static int busy_workers(const sim *m)
{
    int busy = 0;
    for (int k = 0; k < m->n_w; k++)
        busy += m->w[k].work_left >= 0;
    return busy;
}

/* The steps' speed (1: as profiled alone) while `busy` workers are in a step. */
static double speed(const sim *m, int busy)
{
    int K = m->p->co_runners;
    double want = (double)busy * m->p->threads, cores = m->c->cores, sp;
    if (K > 0)
        sp = busy <= K + 1 ? 1 / m->p->slowdown[busy > 0 ? busy - 1 : 0] : (double)(K + 1) / busy / m->p->slowdown[K];
    else
        sp = want > cores ? cores / want : 1;
    if (m->serving_left > 0) /* the serving thread takes its share of the cores */
        sp *= fmax(cores, want) / fmax(cores, want + 1);
    return sp;
}

/* The serving thread's speed (CPU seconds of its work done per second). */
static double serving_speed(const sim *m, int busy)
{
    double want = (double)busy * m->p->threads + 1;
    return want > m->c->cores ? m->c->cores / want : 1;
}

/* ---------------------------------------------------------------- the loop */

static int run(sim *m, int n)
{
    int next = 0;
    for (;;) {
        int busy = busy_workers(m);
        double sp = speed(m, busy), bg = serving_speed(m, busy), t = INFINITY;
        if (next < n)
            t = m->req[next].arrival;
        if (m->serving_left > 0)
            t = fmin(t, m->now + m->serving_left / bg);
        for (int k = 0; k < m->n_w; k++)
            if (m->w[k].work_left >= 0)
                t = fmin(t, m->now + m->w[k].work_left / sp);
        for (int k = 0; k < m->xfer.n; k++)
            t = fmin(t, m->s[m->xfer.v[k]].t_join);
        if (t == INFINITY)
            return 0; /* all done, or stuck at the router (never admitted) */
        double dt = t - m->now;
        m->now = t;
        if (m->serving_left > 0 && (m->serving_left -= dt * bg) <= 1e-12)
            m->serving_left = 0;
        for (int k = 0; k < m->n_w; k++) {
            worker *w = &m->w[k];
            if (w->work_left < 0)
                continue;
            w->work_left -= dt * sp;
            m->step_wall += dt;
            if (w->work_left <= 1e-9 && end_step(m, w) < 0)
                return -1;
        }
        for (int k = 0; k < m->xfer.n; k++) {
            int i = m->xfer.v[k];
            if (m->s[i].t_join > m->now)
                continue;
            drop(&m->xfer, i);
            k--;
            m->s[i].state = Q_RUNNING;
            if (push(&m->w[m->s[i].decode_w].running, i) < 0)
                return -1;
            emit(m, i); /* the client's first token: after KvReady */
        }
        if (retry_waiting(m) < 0)
            return -1;
        for (; next < n && m->req[next].arrival <= m->now; next++) {
            int rc = m->waiting.n ? 0 : route(m, next);
            if (rc < 0 || (rc == 0 && push(&m->waiting, next) < 0))
                return -1;
        }
        for (int k = 0; k < m->n_w; k++)
            if (m->w[k].work_left < 0)
                start_step(m, &m->w[k]);
    }
}

int plan_simulate(const plan_profile *p, const plan_cluster *c, const plan_request *reqs, int n, plan_outcome *out,
                  double *step_stretch, eng_error *err)
{
    int colocated = c->n_both > 0;
    if (colocated ? c->n_prefill || c->n_decode || c->n_both < 1 : c->n_prefill < 1 || c->n_decode < 1)
        return eng_fail(err, "plan: a cluster is colocated (both workers only) or has prefill and decode workers");
    if (c->max_batch_tokens < 1 || c->max_running < 1 || c->kv_blocks < 1 || !(c->cores > 0))
        return eng_fail(err, "plan: max_batch_tokens, max_running, kv_blocks and cores must be positive");
    if (!(c->serving_cpu_per_token >= 0) || c->serving_cpu_per_token > 1)
        return eng_fail(err, "plan: serving_cpu_per_token must be in [0, 1] s");
    if (!(c->stream_cpu_per_token >= 0) || c->stream_cpu_per_token > 1)
        return eng_fail(err, "plan: stream_cpu_per_token must be in [0, 1] s");
    if (!(c->step_scale >= 0.1 && c->step_scale <= 10))
        return eng_fail(err, "plan: step_scale must be in [0.1, 10]");
    sim m = {.p = p, .c = c, .req = reqs, .n_w = c->n_prefill + c->n_decode + c->n_both};
    m.s = calloc((size_t)n, sizeof *m.s);
    m.w = calloc((size_t)m.n_w, sizeof *m.w);
    int rc = -1;
    if (!m.s || !m.w)
        goto done;
    for (int k = 0; k < m.n_w; k++) {
        worker *w = &m.w[k];
        w->role = colocated ? W_BOTH : k < c->n_prefill ? W_PREFILL : W_DECODE;
        w->work_left = -1;
        /* a step holds at most every sequence of the trace */
        if (!(w->step.v = malloc((size_t)(n ? n : 1) * sizeof *w->step.v)))
            goto done;
        w->step.cap = n;
    }
    if (run(&m, n) < 0)
        goto done;
    for (int i = 0; i < n; i++) {
        const seq *s = &m.s[i];
        if (s->state != Q_DONE) { /* never admitted: the request fails */
            out[i] = (plan_outcome){INFINITY, INFINITY, INFINITY};
            continue;
        }
        out[i].ttft = s->t_first - reqs[i].arrival;
        out[i].tpot = reqs[i].output > 1 ? (s->t_last - s->t_first) / (reqs[i].output - 1) : 0;
        out[i].end = s->t_last;
    }
    if (step_stretch)
        *step_stretch = m.step_work > 0 ? m.step_wall / m.step_work : 1;
    rc = 0;
done:
    if (rc < 0)
        eng_fail(err, "plan: out of memory simulating %d requests", n);
    for (int k = 0; m.w && k < m.n_w; k++) {
        free(m.w[k].queue.v);
        free(m.w[k].running.v);
        free(m.w[k].step.v);
    }
    free(m.w);
    free(m.s);
    free(m.waiting.v);
    free(m.xfer.v);
    return rc;
}

/* ---------------------------------------------------------------- summaries */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double nearest_rank(const double *sorted, int n, double q)
{
    int k = (int)ceil(q * n);
    return sorted[k < 1 ? 0 : k > n ? n - 1 : k - 1];
}

void plan_summarize(const plan_outcome *o, int n, double ttft_slo, double tpot_slo, plan_summary *out)
{
    memset(out, 0, sizeof *out);
    double *a = malloc((size_t)(n ? n : 1) * sizeof *a), *b = malloc((size_t)(n ? n : 1) * sizeof *b);
    if (!a || !b || n < 1) {
        free(a);
        free(b);
        return;
    }
    int met = 0;
    for (int i = 0; i < n; i++) {
        a[i] = o[i].ttft;
        b[i] = o[i].tpot;
        met += o[i].ttft <= ttft_slo && o[i].tpot <= tpot_slo;
    }
    qsort(a, (size_t)n, sizeof *a, cmp_double);
    qsort(b, (size_t)n, sizeof *b, cmp_double);
    out->attainment = (double)met / n;
    out->ttft_p50 = nearest_rank(a, n, 0.5);
    out->ttft_p99 = nearest_rank(a, n, 0.99);
    out->tpot_p50 = nearest_rank(b, n, 0.5);
    out->tpot_p99 = nearest_rank(b, n, 0.99);
    free(a);
    free(b);
}

/* metrics.c: the Prometheus registry behind metrics.h.
 *
 * Each family has its own mutex guarding its children and their values, so that
 * updates on different families never contend and a histogram observation (one
 * bucket, sum and count) is atomic with respect to rendering. Children are kept in
 * a list in creation order; families are few and children per family are tens,
 * so lookups are linear scans. The text format follows the exposition format
 * 0.0.4 spec: HELP/TYPE lines, label values escaped (\\ \" \n), histograms as
 * cumulative _bucket{le} series plus _sum and _count. The Tandem metrics are one
 * table (tandem_specs, at the end), registered by met_tandem_register. */
#include "metrics.h"

#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "common/addr.h"

const double met_default_buckets[] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
const int met_n_default_buckets = (int)(sizeof met_default_buckets / sizeof met_default_buckets[0]);

#define MET_MAX_COLLECTORS 16

/* Each label's name, and where met_labels holds its value. */
static const struct {
    const char *name;
    size_t offset;
} label_defs[MET_N_LABELS] = {
    [MET_ROLE] = {"role", offsetof(met_labels, role)},
    [MET_WORKER] = {"worker", offsetof(met_labels, worker)},
    [MET_OUTCOME] = {"outcome", offsetof(met_labels, outcome)},
    [MET_TRANSPORT] = {"transport", offsetof(met_labels, transport)},
    [MET_REASON] = {"reason", offsetof(met_labels, reason)},
    [MET_LAYER] = {"layer", offsetof(met_labels, layer)},
    [MET_RANK] = {"rank", offsetof(met_labels, rank)},
    [MET_DIRECTION] = {"direction", offsetof(met_labels, direction)},
    [MET_STATE] = {"state", offsetof(met_labels, state)},
};

static const char *label_value(const met_labels *l, int label)
{
    return *(const char *const *)((const char *)l + label_defs[label].offset);
}

struct met_metric {
    met_family *family;
    char **values;     /* n_labels strings */
    double value;      /* counter/gauge */
    double sum;        /* histogram */
    uint64_t count;    /* histogram */
    uint64_t *buckets; /* histogram: n_buckets + 1 per-bucket (not cumulative) counts */
    met_metric *next;
};

struct met_family {
    met_type type;
    char *name;
    char *help;
    unsigned label_set; /* MET_L() bits */
    int n_labels;
    int labels[MET_N_LABELS]; /* the declared labels, in met_label order */
    double *bounds;
    int n_buckets;
    pthread_mutex_t mu;
    met_metric *head, *tail;
    met_family *next;
};

struct met_registry {
    pthread_mutex_t mu; /* guards the family list and the collectors */
    met_family *head, *tail;
    struct {
        met_collect_fn fn;
        void *ctx;
    } collectors[MET_MAX_COLLECTORS];
    int n_collectors;
};

met_registry *met_registry_new(void)
{
    met_registry *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    return r;
}

static void metric_free(met_metric *m)
{
    for (int i = 0; i < m->family->n_labels; i++)
        free(m->values[i]);
    free(m->values);
    free(m->buckets);
    free(m);
}

static void family_free(met_family *f)
{
    met_metric *m = f->head;
    while (m) {
        met_metric *next = m->next;
        metric_free(m);
        m = next;
    }
    free(f->name);
    free(f->help);
    free(f->bounds);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void met_registry_free(met_registry *r)
{
    if (!r)
        return;
    met_family *f = r->head;
    while (f) {
        met_family *next = f->next;
        family_free(f);
        f = next;
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static int valid_name(const char *s, int allow_colon)
{
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p; p++) {
        int c = (unsigned char)*p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':') ||
                 (p > s && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

static int valid_utf8(const char *s)
{
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    utf8proc_ssize_t left = (utf8proc_ssize_t)strlen(s);
    while (left > 0) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t n = utf8proc_iterate(p, left, &cp);
        if (n <= 0)
            return 0;
        p += n;
        left -= n;
    }
    return 1;
}

met_family *met_family_new(met_registry *r, const met_spec *spec, eng_error *err)
{
    if (!r || !spec) {
        eng_fail(err, "metrics: no registry or no declaration");
        return NULL;
    }
    const char *name = spec->name, *help = spec->help;
    met_type type = spec->type;
    if (!valid_name(name, 1)) {
        eng_fail(err, "metrics: invalid metric name '%s'", name ? name : "(null)");
        return NULL;
    }
    if (type != MET_COUNTER && type != MET_GAUGE && type != MET_HISTOGRAM) {
        eng_fail(err, "metrics: %s: unknown metric type %d", name, (int)type);
        return NULL;
    }
    if (!help || !valid_utf8(help)) {
        eng_fail(err, "metrics: %s: help text missing or not UTF-8", name);
        return NULL;
    }
    if (spec->labels >> MET_N_LABELS) {
        eng_fail(err, "metrics: %s: unknown label in set 0x%x", name, spec->labels);
        return NULL;
    }
    const double *buckets = spec->buckets;
    int n_buckets = spec->n_buckets;
    if (type == MET_HISTOGRAM) {
        if (!buckets || n_buckets == 0) {
            buckets = met_default_buckets;
            n_buckets = met_n_default_buckets;
        }
        if (n_buckets < 0 || n_buckets > MET_MAX_BUCKETS) {
            eng_fail(err, "metrics: %s: %d buckets (at most %d)", name, n_buckets, MET_MAX_BUCKETS);
            return NULL;
        }
        for (int i = 0; i < n_buckets; i++) {
            if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1]))) {
                eng_fail(err, "metrics: %s: bucket bounds must be finite and strictly increasing", name);
                return NULL;
            }
        }
    } else {
        n_buckets = 0;
    }

    pthread_mutex_lock(&r->mu);
    for (met_family *g = r->head; g; g = g->next) {
        if (strcmp(g->name, name) == 0) {
            pthread_mutex_unlock(&r->mu);
            eng_fail(err, "metrics: '%s' registered twice", name);
            return NULL;
        }
    }
    met_family *f = calloc(1, sizeof *f);
    int ok = f != NULL;
    if (ok) {
        f->type = type;
        f->label_set = spec->labels;
        for (int l = 0; l < MET_N_LABELS; l++)
            if (spec->labels & MET_L(l))
                f->labels[f->n_labels++] = l;
        f->n_buckets = n_buckets;
        f->name = strdup(name);
        f->help = strdup(help);
        ok = f->name && f->help;
        if (ok && n_buckets) {
            f->bounds = malloc(sizeof(double) * (size_t)n_buckets);
            ok = f->bounds != NULL;
            if (ok)
                memcpy(f->bounds, buckets, sizeof(double) * (size_t)n_buckets);
        }
    }
    if (!ok) {
        pthread_mutex_unlock(&r->mu);
        if (f) {
            pthread_mutex_init(&f->mu, NULL);
            family_free(f);
        }
        eng_fail(err, "metrics: out of memory");
        return NULL;
    }
    pthread_mutex_init(&f->mu, NULL);
    if (r->tail)
        r->tail->next = f;
    else
        r->head = f;
    r->tail = f;
    pthread_mutex_unlock(&r->mu);
    return f;
}

static int same_values(const met_metric *m, const met_labels *labels)
{
    const met_family *f = m->family;
    for (int i = 0; i < f->n_labels; i++) {
        const char *v = label_value(labels, f->labels[i]);
        if (strcmp(m->values[i], v ? v : "") != 0)
            return 0;
    }
    return 1;
}

/* 1 when labels give values only for labels f declares, all valid UTF-8. */
static int labels_fit(const met_family *f, const met_labels *labels)
{
    for (int l = 0; l < MET_N_LABELS; l++) {
        const char *v = label_value(labels, l);
        if (v && (!(f->label_set & MET_L(l)) || !valid_utf8(v)))
            return 0;
    }
    return 1;
}

met_metric *met_get(met_family *f, met_labels labels)
{
    if (!f || !labels_fit(f, &labels))
        return NULL;
    pthread_mutex_lock(&f->mu);
    for (met_metric *m = f->head; m; m = m->next) {
        if (same_values(m, &labels)) {
            pthread_mutex_unlock(&f->mu);
            return m;
        }
    }
    met_metric *m = calloc(1, sizeof *m);
    int ok = m != NULL;
    if (ok) {
        m->family = f;
        m->values = calloc((size_t)f->n_labels + 1, sizeof(char *));
        ok = m->values != NULL;
        for (int i = 0; ok && i < f->n_labels; i++) {
            const char *v = label_value(&labels, f->labels[i]);
            ok = (m->values[i] = strdup(v ? v : "")) != NULL;
        }
        if (ok && f->type == MET_HISTOGRAM)
            ok = (m->buckets = calloc((size_t)f->n_buckets + 1, sizeof(uint64_t))) != NULL;
    }
    if (!ok) {
        if (m) {
            if (m->values)
                for (int i = 0; i < f->n_labels; i++)
                    free(m->values[i]);
            free(m->values);
            free(m->buckets);
            free(m);
        }
        pthread_mutex_unlock(&f->mu);
        return NULL;
    }
    if (f->tail)
        f->tail->next = m;
    else
        f->head = m;
    f->tail = m;
    pthread_mutex_unlock(&f->mu);
    return m;
}

void met_remove(met_family *f, met_labels labels)
{
    if (!f || !labels_fit(f, &labels))
        return;
    pthread_mutex_lock(&f->mu);
    met_metric *prev = NULL;
    for (met_metric *m = f->head; m; prev = m, m = m->next) {
        if (same_values(m, &labels)) {
            if (prev)
                prev->next = m->next;
            else
                f->head = m->next;
            if (f->tail == m)
                f->tail = prev;
            metric_free(m);
            break;
        }
    }
    pthread_mutex_unlock(&f->mu);
}

void met_inc(met_metric *m, double v)
{
    if (!m || m->family->type == MET_HISTOGRAM || isnan(v))
        return;
    if (m->family->type == MET_COUNTER && v < 0)
        return;
    pthread_mutex_lock(&m->family->mu);
    m->value += v;
    pthread_mutex_unlock(&m->family->mu);
}

void met_set(met_metric *m, double v)
{
    if (!m || m->family->type != MET_GAUGE)
        return;
    pthread_mutex_lock(&m->family->mu);
    m->value = v;
    pthread_mutex_unlock(&m->family->mu);
}

void met_observe(met_metric *m, double v)
{
    if (!m || m->family->type != MET_HISTOGRAM || isnan(v))
        return;
    met_family *f = m->family;
    int b = 0;
    while (b < f->n_buckets && v > f->bounds[b])
        b++;
    pthread_mutex_lock(&f->mu);
    m->buckets[b]++;
    m->count++;
    m->sum += v;
    pthread_mutex_unlock(&f->mu);
}

double met_value(met_metric *m)
{
    if (!m)
        return 0;
    pthread_mutex_lock(&m->family->mu);
    double v = m->family->type == MET_HISTOGRAM ? m->sum : m->value;
    pthread_mutex_unlock(&m->family->mu);
    return v;
}

uint64_t met_hist_count(met_metric *m)
{
    if (!m || m->family->type != MET_HISTOGRAM)
        return 0;
    pthread_mutex_lock(&m->family->mu);
    uint64_t c = m->count;
    pthread_mutex_unlock(&m->family->mu);
    return c;
}

uint64_t met_hist_bucket(met_metric *m, int i)
{
    if (!m || m->family->type != MET_HISTOGRAM || i < 0 || i > m->family->n_buckets)
        return 0;
    pthread_mutex_lock(&m->family->mu);
    uint64_t c = 0;
    for (int b = 0; b <= i; b++)
        c += m->buckets[b];
    pthread_mutex_unlock(&m->family->mu);
    return c;
}

int met_on_collect(met_registry *r, met_collect_fn fn, void *ctx)
{
    if (!r || !fn)
        return -1;
    pthread_mutex_lock(&r->mu);
    int ok = r->n_collectors < MET_MAX_COLLECTORS;
    if (ok) {
        r->collectors[r->n_collectors].fn = fn;
        r->collectors[r->n_collectors].ctx = ctx;
        r->n_collectors++;
    }
    pthread_mutex_unlock(&r->mu);
    return ok ? 0 : -1;
}

/* The shortest %g form that reads back as the same double, so that 0.005 prints
 * as "0.005" and not "0.0050000000000000001"; Prometheus spells infinities +Inf/-Inf. */
static void fmt_double(char *out, size_t size, double v)
{
    if (isnan(v)) {
        snprintf(out, size, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, size, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == floor(v) && fabs(v) < 1e15) { /* integers as integers: 10, not 1e+01 */
        snprintf(out, size, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, size, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static int put_escaped(eng_buf *out, const char *s, int quote)
{
    for (const char *p = s; *p; p++) {
        int rc;
        if (*p == '\\')
            rc = eng_buf_puts(out, "\\\\");
        else if (*p == '\n')
            rc = eng_buf_puts(out, "\\n");
        else if (*p == '"' && quote)
            rc = eng_buf_puts(out, "\\\"");
        else
            rc = eng_buf_append(out, p, 1);
        if (rc)
            return -1;
    }
    return 0;
}

/* Writes `{a="x",b="y"}` (plus le when given); nothing for no labels. */
static int put_labels(eng_buf *out, const met_family *f, const met_metric *m, const char *le)
{
    if (f->n_labels == 0 && !le)
        return 0;
    int rc = eng_buf_puts(out, "{");
    for (int i = 0; !rc && i < f->n_labels; i++) {
        rc = eng_buf_printf(out, "%s%s=\"", i ? "," : "", label_defs[f->labels[i]].name);
        rc = rc || put_escaped(out, m->values[i], 1) || eng_buf_puts(out, "\"");
    }
    if (!rc && le)
        rc = eng_buf_printf(out, "%sle=\"%s\"", f->n_labels ? "," : "", le);
    return rc || eng_buf_puts(out, "}");
}

static int render_family(met_family *f, eng_buf *out)
{
    static const char *type_names[] = {"counter", "gauge", "histogram"};
    int rc = eng_buf_printf(out, "# HELP %s ", f->name) || put_escaped(out, f->help, 0) ||
             eng_buf_printf(out, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
    char num[64], le[64];
    for (met_metric *m = f->head; !rc && m; m = m->next) {
        if (f->type != MET_HISTOGRAM) {
            fmt_double(num, sizeof num, m->value);
            rc = eng_buf_puts(out, f->name) || put_labels(out, f, m, NULL) || eng_buf_printf(out, " %s\n", num);
            continue;
        }
        uint64_t cum = 0;
        for (int b = 0; !rc && b <= f->n_buckets; b++) {
            cum += m->buckets[b];
            if (b < f->n_buckets)
                fmt_double(le, sizeof le, f->bounds[b]);
            else
                snprintf(le, sizeof le, "+Inf");
            rc = eng_buf_printf(out, "%s_bucket", f->name) || put_labels(out, f, m, le) ||
                 eng_buf_printf(out, " %llu\n", (unsigned long long)cum);
        }
        fmt_double(num, sizeof num, m->sum);
        rc = rc || eng_buf_printf(out, "%s_sum", f->name) || put_labels(out, f, m, NULL) ||
             eng_buf_printf(out, " %s\n", num);
        rc = rc || eng_buf_printf(out, "%s_count", f->name) || put_labels(out, f, m, NULL) ||
             eng_buf_printf(out, " %llu\n", (unsigned long long)m->count);
    }
    return rc ? -1 : 0;
}

int met_render(met_registry *r, eng_buf *out)
{
    if (!r)
        return -1;
    /* Collectors run outside the registry lock: they update gauges, which takes
     * family locks, and may even register children. */
    pthread_mutex_lock(&r->mu);
    int n = r->n_collectors;
    met_collect_fn fns[MET_MAX_COLLECTORS];
    void *ctxs[MET_MAX_COLLECTORS];
    for (int i = 0; i < n; i++) {
        fns[i] = r->collectors[i].fn;
        ctxs[i] = r->collectors[i].ctx;
    }
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < n; i++)
        fns[i](ctxs[i], r);

    /* Families are only ever appended and live as long as the registry, so each
     * can be rendered under its own lock; list links are read under the
     * registry's, since another thread may be appending. */
    pthread_mutex_lock(&r->mu);
    met_family *f = r->head;
    pthread_mutex_unlock(&r->mu);
    while (f) {
        pthread_mutex_lock(&f->mu);
        int rc = render_family(f, out);
        pthread_mutex_unlock(&f->mu);
        if (rc)
            return -1;
        pthread_mutex_lock(&r->mu);
        f = f->next;
        pthread_mutex_unlock(&r->mu);
    }
    return 0;
}

/* ---- the Tandem metrics ---- */

/* Latencies span sub-millisecond decode steps to minute-long requests. */
static const double ttft_b[] = {.001, .005, .01, .02, .04, .06, .08, .1, .25, .5, .75, 1, 2.5, 5, 7.5, 10, 20, 40, 80};
static const double itl_b[] = {.001, .0025, .005, .01, .015, .02, .025, .03, .04, .05, .075,
                               .1,   .15,   .2,   .3,  .4,   .5,  .75,  1,   2.5, 5};
static const double e2e_b[] = {.05, .1, .25, .5, 1, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960};
static const double kvt_b[] = {.0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5};
static const double batch_b[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
static const double tok_b[] = {1, 16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384};
static const double ep_b[] = {1e-5, 3e-5, 1e-4, 3e-4, .001, .003, .01, .03, .1, .3, 1, 3};

#define RW (MET_L(MET_ROLE) | MET_L(MET_WORKER))
#define BUCKETS(b) (b), (int)(sizeof(b) / sizeof((b)[0]))

static const met_spec tandem_specs[MET_N_TANDEM] = {
    [MET_REQUESTS_TOTAL] = {MET_COUNTER, "tandem_requests_total",
                            "Finished requests by outcome (success, cancelled, error, rejected).",
                            RW | MET_L(MET_OUTCOME), NULL, 0},
    [MET_TTFT] = {MET_HISTOGRAM, "tandem_time_to_first_token_seconds",
                  "Time from request arrival to its first generated token.", RW, BUCKETS(ttft_b)},
    [MET_ITL] = {MET_HISTOGRAM, "tandem_inter_token_latency_seconds",
                 "Time between consecutive generated tokens of a request.", RW, BUCKETS(itl_b)},
    [MET_E2E] = {MET_HISTOGRAM, "tandem_e2e_request_latency_seconds", "Time from request arrival to its last token.",
                 RW, BUCKETS(e2e_b)},
    [MET_PROMPT_TOKENS] = {MET_COUNTER, "tandem_prompt_tokens_total", "Prompt tokens processed.", RW, NULL, 0},
    [MET_GENERATION_TOKENS] = {MET_COUNTER, "tandem_generation_tokens_total", "Tokens generated.", RW, NULL, 0},
    [MET_REQUESTS_RUNNING] = {MET_GAUGE, "tandem_num_requests_running", "Requests currently generating.", RW, NULL, 0},
    [MET_REQUESTS_WAITING] = {MET_GAUGE, "tandem_num_requests_waiting",
                              "Requests accepted and waiting to be scheduled.", RW, NULL, 0},
    [MET_KV_USAGE_PERC] = {MET_GAUGE, "tandem_kv_cache_usage_perc", "Fraction of KV-cache blocks in use (0 to 1).", RW,
                           NULL, 0},
    [MET_KV_BLOCKS_USED] = {MET_GAUGE, "tandem_kv_blocks_used", "KV-cache blocks in use.", RW, NULL, 0},
    /* A gauge may not end in _total. */
    [MET_KV_BLOCKS_CAPACITY] = {MET_GAUGE, "tandem_kv_blocks_capacity", "KV-cache blocks in the pool.", RW, NULL, 0},
    [MET_KV_TRANSFER_BYTES] = {MET_COUNTER, "tandem_kv_transfer_bytes_total", "KV-cache bytes moved between workers.",
                               RW | MET_L(MET_TRANSPORT), NULL, 0},
    [MET_KV_TRANSFER_SECONDS] = {MET_HISTOGRAM, "tandem_kv_transfer_seconds",
                                 "Duration of one request's KV-cache transfer.", RW | MET_L(MET_TRANSPORT),
                                 BUCKETS(kvt_b)},
    [MET_BATCH_SIZE] = {MET_HISTOGRAM, "tandem_batch_size", "Sequences in one forward step.", RW, BUCKETS(batch_b)},
    [MET_BATCH_TOKENS] = {MET_HISTOGRAM, "tandem_batch_tokens", "Tokens in one forward step.", RW, BUCKETS(tok_b)},
    [MET_PREEMPTIONS] = {MET_COUNTER, "tandem_num_preemptions_total",
                         "Running sequences preempted (KV blocks freed, recomputed later) because the KV pool "
                         "ran out.",
                         RW, NULL, 0},
    [MET_ROUTER_RETRIES] = {MET_COUNTER, "tandem_router_retries_total",
                            "Attempts of a request run again on other workers (failover: a worker failed before "
                            "the attempt streamed a token) or retried because workers were full",
                            MET_L(MET_REASON), NULL, 0},
    [MET_WEIGHT_RESIDENT] = {MET_GAUGE, "tandem_weight_resident_bytes",
                             "Bytes of the checkpoint's mapping resident in this worker (Rss in /proc/self/smaps).", RW,
                             NULL, 0},
    [MET_WEIGHT_NEEDED] = {MET_GAUGE, "tandem_weight_needed_bytes",
                           "Bytes of the weights this worker uses: every tensor but other EP ranks' experts.", RW, NULL,
                           0},
    [MET_EP_DISPATCHED] = {MET_COUNTER, "tandem_ep_dispatched_tokens_total",
                           "Token rows this EP rank dispatched to each rank's experts, per MoE layer.",
                           RW | MET_L(MET_LAYER) | MET_L(MET_RANK), NULL, 0},
    [MET_EP_BALANCE] = {MET_GAUGE, "tandem_ep_balancedness",
                        "Mean over max of the token rows this EP rank dispatched per rank (1: even).", RW, NULL, 0},
    [MET_EP_BYTES] = {MET_COUNTER, "tandem_ep_exchange_bytes_total",
                      "Bytes of the EP exchange, sent and received, over TCP (headers, credits, inline payloads) and "
                      "RDMA (payloads).",
                      RW | MET_L(MET_DIRECTION) | MET_L(MET_TRANSPORT), NULL, 0},
    [MET_EP_SECONDS] = {MET_HISTOGRAM, "tandem_ep_exchange_seconds",
                        "Time of one MoE layer's EP exchange, this rank's expert compute excluded.", RW, BUCKETS(ep_b)},
    [MET_WORKER_STATE] = {MET_GAUGE, "tandem_worker_state",
                          "1 for a worker's lifecycle state (starting, ready, cordoned, draining, drained, failed), "
                          "0 for the others.",
                          RW | MET_L(MET_STATE), NULL, 0},
    [MET_MIGRATIONS] = {MET_COUNTER, "tandem_request_migrations_total",
                        "Streams moved to another decode worker mid-way and resumed there from the tokens already "
                        "sent (failure: the worker died or failed; drain: its drain deadline passed; cordon: "
                        "cordoned with migrate).",
                        MET_L(MET_REASON), NULL, 0},
    [MET_RESUME_GAP] = {MET_HISTOGRAM, "tandem_request_resume_gap_seconds",
                        "Time a migrated stream went without tokens: from the last token before the move to the "
                        "first after it.",
                        0, BUCKETS(ttft_b)},
    [MET_PREFIX_QUERIES] = {MET_COUNTER, "tandem_prefix_cache_queries_total",
                            "Prompt tokens looked up in the prefix cache (vLLM's prefix_cache_queries).", RW, NULL, 0},
    [MET_PREFIX_HITS] = {MET_COUNTER, "tandem_prefix_cache_hits_total",
                         "Prompt tokens found in the prefix cache, not computed again (vLLM's prefix_cache_hits).", RW,
                         NULL, 0},
    [MET_PREFIX_QUERY_BLOCKS] = {MET_COUNTER, "tandem_prefix_cache_query_blocks_total",
                                 "Full prompt blocks looked up in the prefix cache.", RW, NULL, 0},
    [MET_PREFIX_HIT_BLOCKS] = {MET_COUNTER, "tandem_prefix_cache_hit_blocks_total",
                               "Full prompt blocks found in the prefix cache.", RW, NULL, 0},
    [MET_PREFIX_EVICTIONS] = {MET_COUNTER, "tandem_prefix_cache_evictions_total",
                              "Cached KV blocks given back to the pool (least recently used, none in use).", RW, NULL,
                              0},
    [MET_PREFIX_BLOCKS] = {MET_GAUGE, "tandem_prefix_cache_blocks",
                           "KV blocks held by the prefix cache, in use by requests or not.", RW, NULL, 0},
    [MET_PREFIX_HIT_RATE] = {MET_GAUGE, "tandem_prefix_cache_hit_rate",
                             "Prompt tokens found cached over prompt tokens looked up, since start (0 to 1).", RW, NULL,
                             0},
    [MET_REQUESTS_REJECTED] = {MET_COUNTER, "tandem_requests_rejected_total",
                               "Requests refused at arrival: ttft_slo (predicted to miss --ttft-slo-ms, 503), "
                               "max_requests or max_waiting (a queue at its bound, 429).",
                               MET_L(MET_REASON), NULL, 0},
    [MET_KV_REFUSED] = {MET_COUNTER, "tandem_kv_refused_frames_total",
                        "KV transfer BEGINs this receiver refused (writing nothing): unknown_transfer (none "
                        "expected under that id), bad_secret (not the reservation's secret; the connection is "
                        "closed), wrong_peer (not from the prefill worker named for it; closed).",
                        RW | MET_L(MET_REASON), NULL, 0},
};

int met_tandem_register(met_registry *r, met_tandem *m, eng_error *err)
{
    memset(m, 0, sizeof *m);
    for (int i = 0; i < MET_N_TANDEM; i++)
        if (!(m->family[i] = met_family_new(r, &tandem_specs[i], err)))
            return -1;
    return 0;
}

/* ---- the workers' /metrics server ---- */

int met_probe_from_path(const char *path)
{
    static const char *const paths[] = {
        [MET_PROBE_LIVEZ] = "/livez", [MET_PROBE_STARTUPZ] = "/startupz", [MET_PROBE_READYZ] = "/readyz"};
    for (int i = 0; i < (int)(sizeof paths / sizeof paths[0]); i++)
        if (strcmp(path, paths[i]) == 0)
            return i;
    return -1;
}

int met_probe_answer(met_probe_fn fn, void *ctx, met_probe p, char *body, size_t cap)
{
    char why[400] = "";
    if (fn(ctx, p, why, sizeof why)) {
        snprintf(body, cap, "ok\n");
        return 200;
    }
    snprintf(body, cap, "not %s: %s\n",
             p == MET_PROBE_READYZ     ? "ready"
             : p == MET_PROBE_STARTUPZ ? "started"
                                       : "live",
             why[0] ? why : "no reason given");
    return 503;
}

struct met_server {
    struct MHD_Daemon *daemon;
    met_registry *registry;
    met_probe_fn probe;
    void *probe_ctx;
    int port;
};

static enum MHD_Result serve_metrics(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                     const char *version, const char *upload_data, size_t *upload_data_size,
                                     void **con_cls)
{
    met_server *s = cls;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    int status = MHD_HTTP_OK;
    eng_buf body = {0};
    const char *type = MET_CONTENT_TYPE;
    int probe = s->probe ? met_probe_from_path(url) : -1;
    if (strcmp(url, "/metrics") != 0 && probe < 0) {
        status = MHD_HTTP_NOT_FOUND;
        eng_buf_puts(&body, "not found\n");
        type = "text/plain";
    } else if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        eng_buf_puts(&body, "method not allowed\n");
        type = "text/plain";
    } else if (probe >= 0) {
        char text[512];
        status = met_probe_answer(s->probe, s->probe_ctx, (met_probe)probe, text, sizeof text);
        eng_buf_puts(&body, text);
        type = "text/plain; charset=utf-8";
    } else if (met_render(s->registry, &body)) {
        eng_buf_free(&body);
        return MHD_NO;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(body.len, body.data ? body.data : "",
                                                                MHD_RESPMEM_MUST_COPY);
    eng_buf_free(&body);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, "Allow", "GET");
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

int met_server_start(met_registry *r, const char *host, int port, met_probe_fn probe, void *probe_ctx, met_server **out,
                     eng_error *err)
{
    *out = NULL;
    if (port < 0 || port > 65535)
        return eng_fail(err, "metrics server: port %d out of range", port);
    struct addrinfo *ai = NULL;
    eng_error aerr;
    if (eng_addr_resolve(host, port, 1, &ai, &aerr) < 0)
        return eng_fail(err, "metrics server: %s", aerr.msg);
    met_server *s = calloc(1, sizeof *s);
    if (!s) {
        freeaddrinfo(ai);
        return eng_fail(err, "metrics server: out of memory");
    }
    s->registry = r;
    s->probe = probe;
    s->probe_ctx = probe_ctx;
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, serve_metrics, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                 MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->daemon) {
        free(s);
        return eng_fail(err, "metrics server: cannot listen on %s:%d", host && *host ? host : "0.0.0.0", port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : port;
    *out = s;
    return 0;
}

int met_server_port(const met_server *s)
{
    return s ? s->port : -1;
}

void met_server_stop(met_server *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->daemon);
    free(s);
}

/* plan_profile.c: a `tandem profile` file read into the planner's cost model.
 *
 * The profile holds raw timings (min / median / max of each measured step and
 * transfer); the planner needs a cost for step shapes that were never measured (a
 * decode batch of 7 at context 300 with a 200-token prefill chunk in it), so the
 * medians are fitted with a linear model whose terms follow what a step computes
 * (plan.h), each coefficient kept >= 0 so that more work never costs less. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

enum { PLAN_MAX_FILE = 64 << 20 };

char *plan_read_text(const char *path, eng_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        eng_fail(err, "%s: cannot open", path);
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            if (cap >= PLAN_MAX_FILE) {
                eng_fail(err, "%s: larger than %d MiB", path, PLAN_MAX_FILE >> 20);
                goto fail;
            }
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap);
            if (!nb) {
                eng_fail(err, "%s: out of memory", path);
                goto fail;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        eng_fail(err, "%s: read error", path);
        goto fail;
    }
    fclose(f);
    buf[len] = 0;
    return buf;
fail:
    fclose(f);
    free(buf);
    return NULL;
}

void plan_shape_terms(const plan_shape *s, double x[PLAN_COST_TERMS])
{
    double rows = s->items * s->per_item;
    x[0] = 1;
    x[1] = rows + s->chunk;
    /* row j of an item attends to context + j + 1 positions */
    x[2] = s->items * (s->per_item * s->context + s->per_item * (s->per_item + 1) / 2) + s->chunk * (s->chunk + 1) / 2;
    x[3] = s->logits;
}

double plan_cost_seconds(const plan_cost *c, const double x[PLAN_COST_TERMS])
{
    double t = 0;
    for (int k = 0; k < PLAN_COST_TERMS; k++)
        t += c->c[k] * x[k];
    return t;
}

static double knots_at(const plan_knots *k, double x)
{
    if (k->n == 0 || x <= 0)
        return 0;
    if (x <= k->at[0])
        return k->residual[0];
    for (int i = 1; i < k->n; i++)
        if (x <= k->at[i]) {
            double f = (x - k->at[i - 1]) / (k->at[i] - k->at[i - 1]);
            return k->residual[i - 1] + f * (k->residual[i] - k->residual[i - 1]);
        }
    return k->residual[k->n - 1];
}

double plan_step_seconds(const plan_cost *c, const double x[PLAN_COST_TERMS], int decode_items, int longest_chunk)
{
    double t = plan_cost_seconds(c, x) + knots_at(&c->decode, decode_items) + knots_at(&c->prefill, longest_chunk);
    return t > 1e-6 ? t : 1e-6; /* a correction never makes a step free */
}

/* Adds residual r at x (several at one x are averaged; count[] holds how many); the
 * knots stay sorted by x. */
static void knots_add(plan_knots *k, int *count, double x, double r)
{
    int i = 0;
    while (i < k->n && k->at[i] < x)
        i++;
    if (i < k->n && k->at[i] == x) {
        k->residual[i] += (r - k->residual[i]) / ++count[i];
        return;
    }
    if (k->n == PLAN_MAX_KNOTS)
        return; /* more distinct shapes than knots: the others have the linear cost alone */
    memmove(k->at + i + 1, k->at + i, (size_t)(k->n - i) * sizeof *k->at);
    memmove(k->residual + i + 1, k->residual + i, (size_t)(k->n - i) * sizeof *k->residual);
    memmove(count + i + 1, count + i, (size_t)(k->n - i) * sizeof *count);
    k->at[i] = x;
    k->residual[i] = r;
    count[i] = 1;
    k->n++;
}

/* The decode items and longest prompt chunk of shape s, as plan_step_seconds takes
 * them; a decode step has every item one token with its logits. */
static void knot_keys(const plan_shape *s, int *decode_items, int *longest_chunk)
{
    int decode = s->per_item == 1 && s->logits == s->items;
    *decode_items = decode ? (int)s->items : 0;
    *longest_chunk = (int)(decode ? s->chunk : fmax(s->per_item, s->chunk));
}

/* The knots from the steps the linear cost in c was fitted to: decode steps by batch
 * size, single prompts from position 0 by length; other shapes (mixed, a batch of
 * prompts, a chunk deep in a prompt) inform the fit only. */
static void fit_knots(const plan_shape *s, const double *t, const double *X, int n, plan_cost *c)
{
    int count_d[PLAN_MAX_KNOTS] = {0}, count_p[PLAN_MAX_KNOTS] = {0};
    c->decode.n = c->prefill.n = 0;
    for (int i = 0; i < n; i++) {
        int d, p;
        knot_keys(&s[i], &d, &p);
        double r = t[i] - plan_cost_seconds(c, &X[i * PLAN_COST_TERMS]);
        if (d > 0 && p == 0)
            knots_add(&c->decode, count_d, d, r);
        else if (d == 0 && s[i].items == 1 && s[i].context == 0 && s[i].chunk == 0)
            knots_add(&c->prefill, count_p, p, r);
    }
}

/* Least squares of sum_i ((X[i] . c - t[i]) / t[i])^2 over the columns in `mask`
 * (others 0), by Householder QR of the weighted columns (each scaled to 1: the terms
 * differ by orders of magnitude). Returns the sum of squares, or -1 when the columns
 * are dependent. */
static double rel_lsq(const double *X, const double *t, int n, int k, unsigned mask, double *c)
{
    enum { K = 8 };
    int cols[K], m = 0;
    double scale[K];
    for (int j = 0; j < k; j++) {
        c[j] = 0;
        if (!(mask >> j & 1))
            continue;
        double mx = 0;
        for (int i = 0; i < n; i++)
            mx = fmax(mx, fabs(X[i * k + j] / t[i]));
        if (mx == 0)
            return -1;
        scale[m] = mx;
        cols[m++] = j;
    }
    if (m > n)
        return -1;
    double *a = malloc((size_t)n * (size_t)(m + 1) * sizeof *a); /* row-major n x (m + 1): columns, then b */
    if (!a)
        return -1;
    for (int i = 0; i < n; i++) {
        for (int q = 0; q < m; q++)
            a[i * (m + 1) + q] = X[i * k + cols[q]] / t[i] / scale[q];
        a[i * (m + 1) + m] = 1;
    }
    double ss = -1;
    for (int q = 0; q < m; q++) { /* reflect column q below the diagonal to zero */
        double norm = 0;
        for (int i = q; i < n; i++)
            norm += a[i * (m + 1) + q] * a[i * (m + 1) + q];
        norm = sqrt(norm);
        if (norm < 1e-10)
            goto done;
        double alpha = a[q * (m + 1) + q] > 0 ? -norm : norm;
        a[q * (m + 1) + q] -= alpha; /* v = x - alpha e1, stored in place */
        double vv = 0;
        for (int i = q; i < n; i++)
            vv += a[i * (m + 1) + q] * a[i * (m + 1) + q];
        for (int z = q + 1; z <= m; z++) {
            double d = 0;
            for (int i = q; i < n; i++)
                d += a[i * (m + 1) + q] * a[i * (m + 1) + z];
            for (int i = q; i < n; i++)
                a[i * (m + 1) + z] -= 2 * d / vv * a[i * (m + 1) + q];
        }
        a[q * (m + 1) + q] = alpha; /* R's diagonal */
    }
    for (int q = m - 1; q >= 0; q--) { /* back-substitution in R c = Q^T b */
        double v = a[q * (m + 1) + m];
        for (int z = q + 1; z < m; z++)
            v -= a[q * (m + 1) + z] * c[cols[z]] * scale[z];
        c[cols[q]] = v / a[q * (m + 1) + q] / scale[q];
    }
    ss = 0;
    for (int i = 0; i < n; i++) {
        double y = 0;
        for (int j = 0; j < k; j++)
            y += X[i * k + j] * c[j];
        ss += (y / t[i] - 1) * (y / t[i] - 1);
    }
done:
    free(a);
    return ss;
}

/* The best fit with every coefficient >= 0: a non-negative least-squares optimum is
 * the unconstrained optimum on some subset of the columns, so try them all. */
static int nonneg_rel_fit(const double *X, const double *t, int n, int k, double *best)
{
    double bss = -1, c[8];
    for (unsigned mask = 1; mask < 1u << k; mask++) {
        double ss = rel_lsq(X, t, n, k, mask, c);
        int ok = ss >= 0;
        for (int j = 0; ok && j < k; j++)
            ok = c[j] >= 0;
        if (ok && (bss < 0 || ss < bss)) {
            bss = ss;
            memcpy(best, c, (size_t)k * sizeof *c);
        }
    }
    return bss < 0 ? -1 : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double plan_fit_cost(const plan_shape *s, const double *t, int n, plan_cost *out)
{
    if (n < 1)
        return -1;
    double *X = calloc((size_t)n * PLAN_COST_TERMS, sizeof *X), *e = malloc((size_t)n * sizeof *e);
    double r = -1;
    if (!X || !e)
        goto done;
    for (int i = 0; i < n; i++)
        plan_shape_terms(&s[i], &X[i * PLAN_COST_TERMS]);
    if (nonneg_rel_fit(X, t, n, PLAN_COST_TERMS, out->c) < 0)
        goto done;
    fit_knots(s, t, X, n, out);
    for (int i = 0; i < n; i++) {
        int d, p;
        knot_keys(&s[i], &d, &p);
        e[i] = fabs(plan_step_seconds(out, &X[i * PLAN_COST_TERMS], d, p) / t[i] - 1);
    }
    qsort(e, (size_t)n, sizeof *e, cmp_double);
    r = e[n / 2];
done:
    free(X);
    free(e);
    return r;
}

/* ---------------------------------------------------------------- the file */

static int num(const cJSON *o, const char *key, double lo, double hi, double *v, const char *where, eng_error *err)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble) || x->valuedouble < lo || x->valuedouble > hi)
        return eng_fail(err, "profile: %s \"%s\" must be a number in [%g, %g]", where, key, lo, hi);
    *v = x->valuedouble;
    return 0;
}

static int parse_steps(const cJSON *steps, plan_profile *p, eng_error *err)
{
    int n = cJSON_GetArraySize(steps);
    if (!cJSON_IsArray(steps) || n < 2)
        return eng_fail(err, "profile: \"steps\" must be an array of at least 2 measured steps");
    plan_shape *s = calloc((size_t)n, sizeof *s);
    double *t = calloc((size_t)n, sizeof *t);
    int rc = -1, i = 0;
    if (!s || !t) {
        eng_fail(err, "profile: out of memory");
        goto done;
    }
    const cJSON *x;
    cJSON_ArrayForEach(x, steps)
    {
        if (num(x, "items", 1, 1e6, &s[i].items, "step", err) < 0 ||
            num(x, "tokens_per_item", 1, 1e7, &s[i].per_item, "step", err) < 0 ||
            num(x, "context", 0, 1e7, &s[i].context, "step", err) < 0 ||
            num(x, "logits", 0, 1e6, &s[i].logits, "step", err) < 0 ||
            num(x, "median_s", 1e-9, 1e6, &t[i], "step", err) < 0 ||
            (cJSON_HasObjectItem(x, "prompt_chunk") && num(x, "prompt_chunk", 0, 1e7, &s[i].chunk, "step", err) < 0))
            goto done;
        i++;
    }
    p->fit_error = plan_fit_cost(s, t, n, &p->cost);
    if (p->fit_error < 0) {
        eng_fail(err, "profile: the steps do not determine a cost (too few distinct shapes)");
        goto done;
    }
    rc = 0;
done:
    free(s);
    free(t);
    return rc;
}

/* latency + bytes / rate over the first transport's points */
static int parse_transfer(const cJSON *xfers, plan_profile *p, eng_error *err)
{
    const cJSON *pts = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(xfers, 0), "points");
    int n = cJSON_GetArraySize(pts);
    if (!cJSON_IsArray(pts) || n < 1)
        return eng_fail(err, "profile: \"kv_transfer\"[0].\"points\" must be a non-empty array");
    double *X = malloc((size_t)n * 2 * sizeof *X), *t = malloc((size_t)n * sizeof *t), c[2];
    int rc = -1, i = 0;
    if (!X || !t) {
        eng_fail(err, "profile: out of memory");
        goto done;
    }
    const cJSON *x;
    cJSON_ArrayForEach(x, pts)
    {
        X[2 * i] = 1;
        if (num(x, "bytes", 1, 1e15, &X[2 * i + 1], "transfer", err) < 0 ||
            num(x, "median_s", 1e-9, 1e6, &t[i], "transfer", err) < 0)
            goto done;
        i++;
    }
    if (nonneg_rel_fit(X, t, n, 2, c) < 0 || c[1] <= 0) {
        eng_fail(err, "profile: the KV transfer points do not determine a rate");
        goto done;
    }
    p->xfer_latency_s = c[0];
    p->xfer_bytes_per_s = 1 / c[1];
    rc = 0;
done:
    free(X);
    free(t);
    return rc;
}

/* "contention": [{"co_runners": 1, "slowdown": {"median": ...}}, ...], k = 1, 2, ... in order */
static int parse_contention(const cJSON *arr, plan_profile *p, eng_error *err)
{
    if (!arr)
        return 0;
    int n = cJSON_GetArraySize(arr);
    if (!cJSON_IsArray(arr) || n > PLAN_MAX_CO_RUNNERS)
        return eng_fail(err, "profile: \"contention\" must be an array of at most %d entries", PLAN_MAX_CO_RUNNERS);
    p->slowdown[0] = 1;
    const cJSON *x;
    cJSON_ArrayForEach(x, arr)
    {
        double k = 0, s = 0; /* set by num() on success; gcc -O3 cannot tell */
        if (num(x, "co_runners", 1, PLAN_MAX_CO_RUNNERS, &k, "contention", err) < 0 ||
            num(cJSON_GetObjectItemCaseSensitive(x, "slowdown"), "median", 0.01, 1e6, &s, "contention slowdown", err) <
                0)
            return -1;
        if ((int)k != p->co_runners + 1)
            return eng_fail(err, "profile: \"contention\" entry %d is for %g co-runners; want %d", p->co_runners + 1, k,
                            p->co_runners + 1);
        p->slowdown[++p->co_runners] = s;
    }
    return 0;
}

int plan_profile_parse(const char *json, plan_profile *out, eng_error *err)
{
    memset(out, 0, sizeof *out);
    cJSON *o = cJSON_Parse(json);
    if (!o)
        return eng_fail(err, "profile: not JSON");
    int rc = -1;
    double threads = 0, layers = 0, bs = 0, ctx = 0; /* set by num() before use; gcc -O3 cannot see it */
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(o, "format");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(o, "model");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "tandem-profile-1")) {
        eng_fail(err, "profile: \"format\" must be \"tandem-profile-1\" (a file written by tandem profile)");
        goto done;
    }
    if (num(o, "threads", 1, 4096, &threads, "the", err) < 0 || num(o, "layers", 1, 4096, &layers, "the", err) < 0 ||
        num(o, "kv_block_size", 1, 1 << 16, &bs, "the", err) < 0 ||
        num(o, "max_context", 1, 1 << 24, &ctx, "the", err) < 0 ||
        num(o, "kv_bytes_per_token", 1, 1e12, &out->kv_bytes_per_token, "the", err) < 0 ||
        parse_steps(cJSON_GetObjectItemCaseSensitive(o, "steps"), out, err) < 0 ||
        parse_transfer(cJSON_GetObjectItemCaseSensitive(o, "kv_transfer"), out, err) < 0 ||
        parse_contention(cJSON_GetObjectItemCaseSensitive(o, "contention"), out, err) < 0)
        goto done;
    out->threads = (int)threads;
    out->layers = (int)layers;
    out->block_size = (int)bs;
    out->max_context = (int)ctx;
    snprintf(out->model, sizeof out->model, "%s", cJSON_IsString(model) ? model->valuestring : "?");
    rc = 0;
done:
    cJSON_Delete(o);
    return rc;
}

int plan_profile_load(const char *path, plan_profile *out, eng_error *err)
{
    char *text = plan_read_text(path, err);
    if (!text)
        return -1;
    eng_error e;
    int rc = plan_profile_parse(text, out, &e);
    free(text);
    return rc < 0 ? eng_fail(err, "%s: %s", path, e.msg) : 0;
}
